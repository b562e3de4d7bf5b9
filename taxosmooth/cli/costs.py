"""``taxosmooth costs``: the misclassification-cost matrix of a taxonomy, written to a file."""

from __future__ import annotations

import argparse

from taxosmooth.cli._common import (
    MATRIX_FORMATS_HELP,
    add_command,
    add_matrix_output_options,
    add_progress_option,
    add_taxonomy_options,
    positive_float,
    save_matrix_command,
)
from taxosmooth.costs import TRANSFORMS
from taxosmooth.distances import DISTANCE_KINDS

EPILOG = """
  taxosmooth costs animals.csv -o costs.npy
  taxosmooth costs animals.csv --transform normalize -o costs.pt
  taxosmooth costs animals.txt --distance path_length --power 2 --classes classes.txt -o costs.csv

cost[t, j] is the cost of predicting class j when the truth is class t:
  cost[t, j] = d(t, j) ** power, divided by its largest value with --transform normalize; 0 on the diagonal.
Use it for expected-cost losses or for conditional risk minimisation at test time. Load it back with
  numpy.load("costs.npy")   or   torch.load("costs.pt")["matrix"]

""" + MATRIX_FORMATS_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "costs",
        help="write the misclassification-cost matrix (C x C) of a taxonomy to .npy, .pt or .csv",
        description="Build the cost of every (true class, predicted class) pair from the tree distances and "
                    "write it, with the class list, to OUT.",
        epilog=EPILOG,
    )
    add_taxonomy_options(p)
    group = p.add_argument_group("costs")
    group.add_argument("--distance", choices=DISTANCE_KINDS, default="lca_height", help="tree distance d")
    group.add_argument("--transform", choices=TRANSFORMS, default="identity",
                       help="'normalize' divides by the largest cost (costs in [0, 1])")
    group.add_argument("--power", type=positive_float, default=1.0, help="cost = d ** power, before the transform")
    add_matrix_output_options(p)
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from taxosmooth.costs import cost_matrix

    def compute(tax, dtype):
        return cost_matrix(tax, distance=args.distance, transform=args.transform, power=args.power, dtype=dtype)

    return save_matrix_command(args, "costs", compute)
