"""``taxosmooth targets``: the soft-target matrix of a taxonomy, written to a file."""

from __future__ import annotations

import argparse

from taxosmooth.cli._common import (
    MATRIX_FORMATS_HELP,
    add_command,
    add_matrix_output_options,
    add_progress_option,
    add_taxonomy_options,
    nonnegative_float,
    probability,
    save_matrix_command,
    scale_value,
)
from taxosmooth.distances import DISTANCE_KINDS

EPILOG = """
  taxosmooth targets animals.csv --beta 4 -o targets.npy
  taxosmooth targets animals.csv --beta 10 --distance path_length --classes classes.txt -o targets.pt
  taxosmooth targets animals.txt --beta 4 --mix 0.5 -o targets.csv

Row t of the matrix is the target distribution for true class t:
  q_t(i) = exp(-beta d(t, i) / s) / sum_k exp(-beta d(t, k) / s),  then (1 - mix) onehot(t) + mix q_t
(Bertinetto et al., "Making Better Mistakes", CVPR 2020, "soft labels"). Load it back with
  numpy.load("targets.npy")   or   torch.load("targets.pt")["matrix"]

""" + MATRIX_FORMATS_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "targets",
        help="write the soft-target matrix (C x C) of a taxonomy to .npy, .pt or .csv",
        description="Build the soft targets ('soft labels') of every class from the tree distances and write "
                    "them, with the class list, to OUT. Rows sum to 1.",
        epilog=EPILOG,
    )
    add_taxonomy_options(p)
    group = p.add_argument_group("soft targets")
    group.add_argument("--beta", type=nonnegative_float, required=True,
                       help="inverse temperature >= 0: 0 is uniform, large values tend to the one-hot label")
    group.add_argument("--distance", choices=DISTANCE_KINDS, default="lca_height", help="tree distance d")
    group.add_argument("--scale", type=scale_value, default="max",
                       help="divide the distances by s: 'max' (the largest distance), 'none' (1) or a number > 0")
    group.add_argument("--mix", type=probability, default=None,
                       help="mix with the one-hot label: (1 - mix) onehot + mix q (default: no mixing)")
    add_matrix_output_options(p)
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from taxosmooth.targets import soft_targets

    def compute(tax, dtype):
        return soft_targets(tax, args.beta, distance=args.distance, scale=args.scale, mix=args.mix, dtype=dtype)

    return save_matrix_command(args, "soft targets", compute)
