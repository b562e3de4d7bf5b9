"""Quickstart: horse, zebra, whale, shark.

A taxonomy of four classes, the soft targets and costs it gives, a
hierarchy-aware loss in a tiny training loop, and the metrics that say how bad
the mistakes are.

Run::

    python examples/quickstart.py            # 300 training steps
    python examples/quickstart.py --quick    # 20 steps (smoke test)
"""

from __future__ import annotations

import argparse

import torch

import taxosmooth as ts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="taxosmooth in one page: horse, zebra, whale, shark.")
    parser.add_argument("--steps", type=int, default=300, help="training steps per loss")
    parser.add_argument("--beta", type=float, default=4.0, help="inverse temperature of the soft labels")
    parser.add_argument("--alpha", type=float, default=0.5, help="HXE's alpha")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 steps (smoke test)")
    args = parser.parse_args(argv)
    steps = 20 if args.quick else args.steps

    # 1. The taxonomy: the classes are the leaves, in the order they appear (the logit order).
    tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    print(tax.describe(), "\n")
    print("classes (logit order):", tax.classes)
    print("LCA(horse, zebra) =", tax.lca("horse", "zebra"), "  LCA(horse, whale) =", tax.lca("horse", "whale"))

    # 2. Distances, soft targets, costs.
    print("\nlca_height distances (height of the lowest common ancestor):")
    print(ts.class_distances(tax, "lca_height"))
    q = ts.soft_targets(tax, beta=args.beta)
    print(f"\nsoft targets, beta={args.beta} (row t = target distribution of class t):")
    print(q)
    print("\ncost matrix, normalised to [0, 1]:")
    print(ts.cost_matrix(tax, transform="normalize"))

    # 3. Synthetic data whose features follow the tree (taxosmooth.data): each node adds a random vector
    #    along the path to a class, so siblings (horse, zebra) look more alike than cousins (horse, whale).
    means = ts.data.class_means(tax, dim=8, seed=args.seed)
    x_train, y_train = ts.data.make_tree_blobs(tax, 128, means=means, noise=1.5, seed=args.seed + 1)
    x_test, y_test = ts.data.make_tree_blobs(tax, 500, means=means, noise=1.5, seed=args.seed + 2)

    # 4. One tiny training loop per loss; every loss is a drop-in for nn.CrossEntropyLoss.
    losses = {
        "cross entropy": torch.nn.CrossEntropyLoss(),
        f"soft labels (beta={args.beta:g})": ts.HierarchicalSoftLabelLoss(tax, beta=args.beta),
        f"HXE (alpha={args.alpha:g})": ts.HXELoss(tax, alpha=args.alpha),
        "tree-Wasserstein + CE": ts.TreeWassersteinLoss(tax, ce_weight=1.0),
    }
    print(f"\n{'loss':<26}{'top-1 error':>12}{'severity':>10}{'mean hdist@2':>14}{'CRM top-1 err':>15}{'CRM severity':>14}")
    for name, criterion in losses.items():
        torch.manual_seed(args.seed)
        model = torch.nn.Linear(8, tax.num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            loss = criterion(model(x_train), y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()

        # 5. Metrics, and the same model deciding by expected cost (CRM).
        with torch.no_grad():
            logits = model(x_test)
        crm_scores = -ts.conditional_risk(logits, tax, from_logits=True)
        m = ts.metrics
        print(
            f"{name:<26}{float(m.topk_error(logits, y_test)):>12.3f}"
            f"{float(m.mistake_severity(logits, y_test, tax)):>10.3f}"
            f"{float(m.mean_hierarchical_distance_at_k(logits, y_test, tax, k=2)):>14.3f}"
            f"{float(m.topk_error(crm_scores, y_test)):>15.3f}"
            f"{float(m.mistake_severity(crm_scores, y_test, tax)):>14.3f}"
        )
    print("\nseverity: mean lca_height of the wrong top-1 predictions (1 = a sibling, 2 = the other group)")


if __name__ == "__main__":
    main()
