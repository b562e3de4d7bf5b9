"""From a list of WordNet synsets to a class taxonomy, similarity matrices and a loss.

Synsets can be given as names (``horse.n.01``), ImageNet ids
(``n02391049``), or plain nouns (first noun sense, reported). The example:

1. builds ``taxonomy_from_wordnet`` (the hypernym closure made a tree; every
   choice it made is in ``tax.report``),
2. computes nltk's ``wup`` and ``path`` similarities for all pairs (the same
   values as nltk's own functions, checked here on a few pairs),
3. turns the tree into soft targets and a loss.

Run::

    python examples/wordnet_synsets.py
    python examples/wordnet_synsets.py --synsets dog.n.01 cat.n.01 car.n.01
    python examples/wordnet_synsets.py --quick

Needs WordNet data (see the WordNet guide).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

import taxosmooth as ts
from taxosmooth.wordnet import distance_matrix, load_wordnet, similarity_matrix, wordnet_source

DEFAULT = [
    "horse.n.01",       # a name
    "n02391049",        # an ImageNet id: zebra.n.01
    "killer_whale.n.01",
    "great_white_shark.n.01",
    "tabby.n.01",
    "golden_retriever.n.01",
    "sports_car.n.01",
    "mountain_bike.n.01",
    "canoe",            # a plain noun: its first noun sense
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="WordNet synsets -> taxonomy, similarity matrices, soft targets.")
    parser.add_argument("--synsets", nargs="+", default=DEFAULT, help="names, ImageNet ids or nouns")
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity; this example is already quick")
    args = parser.parse_args(argv)

    wn = load_wordnet()
    print(wordnet_source().describe())

    # 1. The taxonomy: multiple_parents="longest" (default) keeps each synset's longest hypernym path.
    tax = ts.wordnet.taxonomy_from_wordnet(args.synsets, contract_unary=True)
    print("\n" + tax.describe())
    names = [c.split(".")[0] for c in tax.classes]
    print("\nclasses:", ", ".join(tax.classes))

    # 2. Similarity and distance matrices, equal to nltk's.
    wup = similarity_matrix(args.synsets, "wup")
    path = distance_matrix(args.synsets, "path")
    synsets = [wn.synset(c) for c in tax.classes]  # taxonomy_from_wordnet resolved every input to a synset name
    for i, j in itertools.combinations(range(min(4, len(synsets))), 2):
        assert wup[i, j] == synsets[i].wup_similarity(synsets[j])
        assert path[i, j] == synsets[i].shortest_path_distance(synsets[j], simulate_root=True)
    width = max(len(n) for n in names)
    print("\nWu-Palmer similarity (nltk's wup_similarity):")
    print(" " * (width + 1) + " ".join(f"{n[:6]:>6}" for n in names))
    for n, row in zip(names, wup):
        print(f"{n:>{width}} " + " ".join(f"{v:6.3f}" for v in row))

    # 3. Tree distances of the (contracted) taxonomy, soft targets, and a loss.
    d = ts.class_distances(tax, "lca_height")
    q = ts.soft_targets(tax, beta=args.beta)
    i = 0
    order = np.argsort(d[i], kind="stable")
    print(f"\nfrom {tax.classes[i]}: lca_height and soft target (beta={args.beta:g}) of each class")
    for j in order:
        print(f"  {tax.classes[j]:<26} d={d[i, j]:.0f}  q={float(q[i, j]):.3f}  LCA={tax.lca(tax.classes[i], tax.classes[j])}")
    criterion = ts.HierarchicalSoftLabelLoss(tax, beta=args.beta)
    logits = torch.zeros(1, tax.num_classes)
    print(f"\nloss of uniform logits for class {tax.classes[0]}: {float(criterion(logits, torch.tensor([0]))):.4f}")


if __name__ == "__main__":
    main()
