"""``taxosmooth info``: what a taxonomy file holds and what loading it decided."""

from __future__ import annotations

import argparse

import numpy as np

from taxosmooth.cli._common import add_command, add_progress_option, add_taxonomy_options, load_taxonomy

EPILOG = """
  taxosmooth info animals.csv
  taxosmooth info wordnet_edges.csv --multiple-parents longest --contract-unary
  taxosmooth info animals.txt --classes my_classes.txt
  taxosmooth info animals.csv --list-classes > classes.txt   # the default class order, one per line
  taxosmooth info --format ranks inat_taxa.csv               # a rank table: rows and classes per rank
"""

#: at most this many unary chains, class names and decisions are printed
SHOWN = 10


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "info",
        help="summarise a taxonomy file: classes, nodes, depth, roots, DAG choices, unary chains",
        description="Load a taxonomy file and print what it holds: the number of classes and nodes, the "
                    "depths, the root(s), every decision taken to make it a tree (several parents, several "
                    "roots, pruning, contraction) and the chains of single-child nodes. For a rank table "
                    "(--format ranks): how many rows stop at each rank, and every name qualified because "
                    "several nodes share it.",
        epilog=EPILOG,
    )
    add_taxonomy_options(p)
    p.add_argument("--list-classes", action="store_true", help="print only the classes, one per line, in class order")
    p.add_argument("--all", action="store_true", help="print every decision, unary chain and class, not the first few")
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def unary_chains(tax) -> list[list]:
    """Maximal chains of single-child nodes, each from its top node down to the first node that is not unary."""
    c = tax.compiled
    n_children = np.bincount(c.parent[1:], minlength=c.num_nodes)
    unary = n_children == 1
    parent_unary = np.zeros(c.num_nodes, dtype=bool)
    parent_unary[1:] = unary[c.parent[1:]]
    chains = []
    for top in np.flatnonzero(unary & ~parent_unary):
        chain = [int(top)]
        while unary[chain[-1]]:
            chain.append(chain[-1] + 1)  # the only child comes right after in pre-order
        chains.append([tax.nodes[v] for v in chain])
    return chains


def summary(tax, show_all: bool = False) -> str:
    """The text printed by ``taxosmooth info``."""
    c = tax.compiled
    limit = None if show_all else SHOWN
    lines = [tax.describe() if show_all is False else _describe_all(tax)]
    if tax.has_virtual_root:
        roots = tax.children(tax.root)
        lines.append(f"  roots ({len(roots)}): {_names(roots, limit)}")
    depths, counts = np.unique(c.depth[c.leaf_node], return_counts=True)
    lines.append("  classes by depth: " + ", ".join(f"{d}: {k}" for d, k in zip(depths, counts)))
    if tax.ranks is not None:
        # a rank table: depth d is rank d (d - 1 under a virtual root joining several top-rank values)
        shift = 1 if tax.has_virtual_root else 0
        lines.append("  classes by rank: " + ", ".join(f"{tax.ranks[d - shift]}: {k}" for d, k in zip(depths, counts)))
    n_children = np.bincount(c.parent[1:], minlength=c.num_nodes)
    widest = int(np.argmax(n_children))
    lines.append(f"  largest fan-out: {tax.nodes[widest]!r} with {n_children[widest]} children")
    chains = unary_chains(tax)
    if chains:
        lines.append(f"  unary chains ({len(chains)}; contract them with --contract-unary):")
        shown = chains if limit is None else chains[:limit]
        lines.extend("    " + " -> ".join(map(str, ch)) for ch in shown)
        if len(shown) < len(chains):
            lines.append(f"    ... and {len(chains) - len(shown)} more (--all lists them)")
    else:
        lines.append("  unary chains: none")
    lines.append(f"  classes ({tax.num_classes}, in class order): {_names(tax.classes, limit)}")
    return "\n".join(lines)


def _describe_all(tax) -> str:
    head = tax.describe().split("\n  decisions (")[0]
    if not tax.report:
        return head
    return "\n".join([head, f"  decisions ({len(tax.report)}):", *(f"    - {r}" for r in tax.report)])


def _names(names, limit) -> str:
    shown = names if limit is None else names[:limit]
    text = ", ".join(map(str, shown))
    return text + (f", ... ({len(names) - len(shown)} more)" if len(shown) < len(names) else "")


def run(args: argparse.Namespace) -> int:
    tax = load_taxonomy(args)
    if args.list_classes:
        print("\n".join(map(str, tax.classes)))
        return 0
    print(summary(tax, show_all=args.all))
    return 0
