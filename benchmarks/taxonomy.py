"""Benchmark: all-pairs class distances and building a large Taxonomy from a file.

Run ``python benchmarks/taxonomy.py`` (add ``--markdown`` for a table to paste
into the docs, ``--quick`` for a smaller run). It prints

* all-pairs distances for a 1,000-class tree and a 10,000-class depth-7 tree
  shaped like iNaturalist-2021 (3 kingdoms, 13 phyla, 51 classes, 273 orders,
  1,103 families, 4,884 genera, 10,000 species), next to
  ``networkx.all_pairs_lowest_common_ancestor`` (and networkx's tree-only
  Tarjan variant) on the same tree. networkx is timed on every unordered pair
  when there are at most 600,000 of them; otherwise on a random sample,
  extrapolated to all ``C (C - 1) / 2`` unordered pairs (a set-up cost and a
  per-pair cost fitted from two sample sizes); the output says which. taxosmooth computes all ``C x C`` ordered entries, distances
  included, so the ratio favours networkx;
* building a Taxonomy of ~100,000 nodes from an edge-list CSV file: time and
  peak memory (tracemalloc, in a separate run so that tracing does not slow
  the timed one).

Goals (issue "Foundation"): 1,000 classes < 0.1 s; 10,000 classes < 2 s on
2 cores; 100,000 nodes built in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_cpu, best_of, fmt_bytes, fmt_seconds, peak_memory, table  # noqa: E402

import taxosmooth as ts  # noqa: E402

INAT_RANKS = (3, 13, 51, 273, 1103, 4884)  # kingdom ... genus counts of iNaturalist-2021


def ranked_tree_edges(n_leaves: int, ranks: tuple[int, ...], seed: int = 0) -> list[tuple[str, str]]:
    """Edges of a tree with one level per rank plus a leaf level, every node at its rank's depth.

    Each level's nodes are spread over the previous level at random, every
    parent getting at least one child (so some ranks are unary, as in real
    taxonomies). The leaves are listed in a shuffled order, so the class order
    is not the DFS order.
    """
    rng = np.random.default_rng(seed)
    edges: list[tuple[str, str]] = []
    prev = ["life"]
    counts = list(ranks) + [n_leaves]
    for level, n in enumerate(counts):
        names = [f"r{level}_{i}" for i in range(n)]
        parents = np.concatenate([np.arange(len(prev)), rng.integers(0, len(prev), n - len(prev))])
        rng.shuffle(parents)
        level_edges = [(prev[p], c) for p, c in zip(parents, names)]
        if level == len(counts) - 1:
            rng.shuffle(level_edges)
        edges += level_edges
        prev = names
    return edges


def random_tree_edges(n_nodes: int, seed: int = 0) -> list[tuple[str, str]]:
    """A random recursive tree (node i picks a parent among 0..i-1) with string names."""
    rng = np.random.default_rng(seed)
    parents = (rng.random(n_nodes - 1) * np.arange(1, n_nodes)).astype(np.int64)
    return [(f"n{p}", f"n{i}") for i, p in enumerate(parents, start=1)]


def bench_distances(name: str, edges, nx_pairs: int, repeat: int) -> list[dict]:
    tax = ts.Taxonomy.from_edges(edges)
    C = tax.num_classes
    rows = []
    ours, cpu = {}, {}
    for kind in ts.distances.DISTANCE_KINDS:
        ours[kind] = best_of(lambda: ts.class_distances(tax, kind), repeat=repeat)
        cpu[kind] = best_cpu(lambda: ts.class_distances(tax, kind), repeat=repeat)
    ours_lca = best_of(lambda: ts.lca_matrix(tax), repeat=repeat)
    cpu["lca"] = best_cpu(lambda: ts.lca_matrix(tax), repeat=repeat)

    g = nx.DiGraph(edges)
    rng = np.random.default_rng(1)
    classes = list(tax.classes)
    idx = rng.integers(0, C, size=(nx_pairs, 2))
    pairs = [(classes[i], classes[j]) for i, j in idx if i != j]
    all_pairs = C * (C - 1) / 2

    root = tax.root

    def general(ps):
        return dict(nx.all_pairs_lowest_common_ancestor(g, pairs=ps))

    def tree(ps):
        return dict(nx.tree_all_pairs_lowest_common_ancestor(g, root=root, pairs=ps))

    # networkx pays a fixed set-up cost per call plus a cost per pair: fit both from
    # two sample sizes, then extrapolate to all pairs
    def extrapolate(fn):
        small = pairs[: len(pairs) // 4]
        t_small = best_of(lambda: fn(small), repeat=1)
        t_full = best_of(lambda: fn(pairs), repeat=1)
        per_pair = max(t_full - t_small, 0.0) / (len(pairs) - len(small))
        fixed = max(t_small - per_pair * len(small), 0.0)
        return fixed + per_pair * all_pairs

    if all_pairs <= 600_000:  # small enough to time networkx on every pair
        every = list(itertools.combinations(classes, 2))
        nx_general = best_of(lambda: general(every), repeat=1)
        nx_tree = best_of(lambda: tree(every), repeat=1)
        note = f"networkx: timed on all {all_pairs:,.0f} unordered pairs (LCAs only; taxosmooth fills all C x C entries)"
    else:
        nx_general = extrapolate(general)
        nx_tree = extrapolate(tree)
        note = (f"networkx: timed on {len(pairs) // 4:,} and {len(pairs):,} random pairs, set-up + per-pair cost "
                f"extrapolated to all {all_pairs:,.0f} unordered pairs (LCAs only; taxosmooth fills all C x C entries)")
    got, got_tree = general(pairs[:2000]), tree(pairs[:2000])
    # the answers agree (a benchmark that measures wrong answers measures nothing)
    lca = ts.lca_matrix(tax)
    pos = {c: k for k, c in enumerate(classes)}
    for (a, b), v in list(got.items())[:2000]:
        assert tax.nodes[lca[pos[a], pos[b]]] == v == got_tree.get((a, b), got_tree.get((b, a)))

    for kind, t in ours.items():
        rows.append({
            "tree": name, "classes": f"{C:,}", "what": f"distances({kind!r})", "time": fmt_seconds(t),
            "CPU time": fmt_seconds(cpu[kind]),
            "networkx all_pairs_lca": fmt_seconds(nx_general), "ratio": f"{nx_general / t:,.0f}x",
            "networkx tree_all_pairs_lca": fmt_seconds(nx_tree), "ratio (tree)": f"{nx_tree / t:,.0f}x",
        })
    rows.append({
        "tree": name, "classes": f"{C:,}", "what": "lca_matrix (int32 LCA ids)", "time": fmt_seconds(ours_lca),
        "CPU time": fmt_seconds(cpu["lca"]),
        "networkx all_pairs_lca": fmt_seconds(nx_general), "ratio": f"{nx_general / ours_lca:,.0f}x",
        "networkx tree_all_pairs_lca": fmt_seconds(nx_tree), "ratio (tree)": f"{nx_tree / ours_lca:,.0f}x",
    })
    return rows, note


def bench_build(n_nodes: int, repeat: int) -> dict:
    edges = random_tree_edges(n_nodes)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tree.csv"
        path.write_text("parent,child\n" + "".join(f"{u},{v}\n" for u, v in edges), encoding="utf-8")
        size = path.stat().st_size
        t = best_of(lambda: ts.Taxonomy.load(path), repeat=repeat)
        t_cpu = best_cpu(lambda: ts.Taxonomy.load(path), repeat=repeat)
        tax, peak = peak_memory(lambda: ts.Taxonomy.load(path))
    return {
        "file": f"edge-list CSV, {fmt_bytes(size)}", "nodes": f"{tax.num_nodes:,}", "classes": f"{tax.num_classes:,}",
        "max depth": tax.max_depth, "load time": fmt_seconds(t), "CPU time": fmt_seconds(t_cpu), "peak memory (tracemalloc)": fmt_bytes(peak),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--quick", action="store_true", help="smaller trees and fewer repeats (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    n_big, build_nodes, nx_pairs = (2_000, 10_000, 2_000) if args.quick else (10_000, 100_000, 20_000)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"taxosmooth {ts.__version__}, numpy {np.__version__}, networkx {nx.__version__}, "
          f"{os.cpu_count()} CPUs visible, load average {load:.1f}; best of {repeat}")
    print("time: wall clock; CPU time: this process only (close to the wall time on an idle machine)\n")
    rows, notes = [], []
    for name, edges in (
        ("5 ranks (1,000 leaves)", ranked_tree_edges(1_000, (4, 12, 40, 150))),
        ("iNat-2021 shape, depth 7",
         ranked_tree_edges(n_big, tuple(max(1, r * n_big // 10_000) for r in INAT_RANKS))),
    ):
        r, note = bench_distances(name, edges, nx_pairs, repeat)
        rows += r
        notes.append(f"{name}: {note}")
    print("All-pairs class distances (C x C, float64, class order)")
    print(table(rows, args.markdown))
    for n in notes:
        print(("* " if args.markdown else "  ") + n)
    print()
    print("Building a Taxonomy from a file (Taxonomy.load: parse, validate, compile)")
    print(table([bench_build(build_nodes, repeat)], args.markdown))


if __name__ == "__main__":
    main()
