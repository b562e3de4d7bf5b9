"""``taxosmooth plot``: a class matrix as a heatmap in tree order, with the tree beside it."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from taxosmooth._atomic import atomic_write

from taxosmooth.cli._common import (
    CLIError,
    add_command,
    add_progress_option,
    add_taxonomy_options,
    check_not_inputs,
    check_output,
    is_matrix_file,
    load_taxonomy,
    nonnegative_float,
    read_matrix,
    step,
)
from taxosmooth.distances import DISTANCE_KINDS

EPILOG = """
  taxosmooth plot animals.csv -o distances.png
  taxosmooth plot animals.csv --matrix targets --beta 4 -o targets.png
  taxosmooth plot animals.csv --matrix costs --distance path_length -o costs.pdf
  taxosmooth plot targets.npy --taxonomy animals.csv -o targets.png   # a saved matrix, in tree order
  taxosmooth plot targets.npy -o targets.png                          # as saved, without the tree

INPUT is either a taxonomy file (its --matrix is computed) or a matrix saved by
'taxosmooth targets' / 'taxosmooth costs' (.npy, .pt, or a .csv whose header row starts
with 'class'); a saved matrix's classes come from --classes, else from the file itself
(.pt, .csv), else from the class list written next to it (targets.npy.classes.txt), which
must be the one written with that matrix (its checksum is checked). With --taxonomy the
matrix is drawn in tree order with the tree beside it; without, as saved.

The dendrogram puts each internal node at the distance of two classes that meet there
(--distance), so it tells the same story as a heatmap of that distance. Up to 80 classes
are labelled; larger matrices are drawn without labels, with thin lines, and stay legible
at thousands of classes. A matrix is computed for at most 10,000 classes (its C x C values
are held in memory): draw a part of a larger taxonomy with --subtree NODE or --classes.
"""

MATRICES = ("distances", "targets", "costs")
#: dendrogram node heights that match each distance kind
NODE_HEIGHT = {"lca_height": "height", "lca_depth_complement": "depth", "path_length": "weighted_depth"}
FIGURE_FORMATS = (".png", ".pdf", ".svg")
#: the most classes a matrix is computed for: 10,000 classes are 0.75 GiB of float64 values, and drawing copies them
MAX_CLASSES = 10_000


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "plot",
        help="draw distances, soft targets or costs as a heatmap in tree order with a dendrogram",
        description="Draw a class matrix (the distances, soft targets or costs of a taxonomy, or a saved "
                    "matrix) as a heatmap whose rows and columns follow the tree, with the tree drawn as "
                    "a dendrogram on the left and on top.",
        epilog=EPILOG,
    )
    p.add_argument("input", metavar="INPUT", help="a taxonomy file, or a saved matrix (.npy, .pt, .csv)")
    p.add_argument("-o", "--output", metavar="FIG", required=True, help="figure file: .png, .pdf or .svg")
    group = p.add_argument_group("what to draw")
    group.add_argument("--matrix", choices=MATRICES, default="distances", help="the matrix computed from a taxonomy file")
    group.add_argument("--beta", type=nonnegative_float, help="inverse temperature of the soft targets (needed with --matrix targets)")
    group.add_argument("--distance", choices=DISTANCE_KINDS, default="lca_height",
                       help="tree distance of the matrix, and the heights of the dendrogram's nodes")
    group.add_argument("--taxonomy", metavar="FILE", help="with a saved matrix: the taxonomy that orders it and is drawn beside it")
    group.add_argument("--subtree", metavar="NODE",
                       help="with a taxonomy file: draw only the classes under NODE (the tree above NODE is kept)")
    look = p.add_argument_group("appearance")
    look.add_argument("--title", help="figure title (default: says what is drawn)")
    look.add_argument("--labels", choices=("auto", "yes", "no"), default="auto", help="write the class names (auto: up to 80 classes)")
    look.add_argument("--color-scale", choices=("auto", "linear", "log"), default="auto",
                      help="auto: log when the values span more than two decades")
    look.add_argument("--cmap", default="viridis", help="a matplotlib colormap name")
    add_taxonomy_options(p, positional=False)
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def _figure_module():
    try:
        from taxosmooth import plots

        plots._require_matplotlib()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    return plots


def _check_colormap(name: str) -> None:
    from matplotlib import colormaps

    if name not in colormaps:
        raise CLIError(f"unknown colormap {name!r}; e.g. viridis, magma, cividis, Greys")


def run(args: argparse.Namespace) -> int:
    out = check_output(args.output, FIGURE_FORMATS)
    check_not_inputs([out], [args.input, args.taxonomy, args.classes])
    plots = _figure_module()
    _check_colormap(args.cmap)
    if not Path(args.input).exists():
        raise CLIError(f"{args.input}: no such file")
    labels = {"auto": "auto", "yes": True, "no": False}[args.labels]
    if is_matrix_file(args.input):
        if args.subtree is not None:
            raise CLIError("--subtree goes with a taxonomy file as INPUT, not with a saved matrix")
        matrix, classes = read_matrix(args.input, args.classes)
        tax = None
        if args.taxonomy:
            tax = load_taxonomy(args, path=args.taxonomy, classes=classes)
            if classes is None and tax.num_classes != matrix.shape[0]:
                raise CLIError(f"{args.input} is {matrix.shape[0]}x{matrix.shape[0]} but {args.taxonomy} has "
                               f"{tax.num_classes} classes; give the matrix's classes with --classes")
        what = f"{Path(args.input).name} ({matrix.shape[0]} classes)"
        cbar, column = "value", "class"
    else:
        if args.taxonomy:
            raise CLIError("--taxonomy goes with a saved matrix; INPUT is already a taxonomy file")
        if args.matrix == "targets" and args.beta is None:
            raise CLIError("--beta is needed with --matrix targets (e.g. --beta 4)")
        if args.subtree is not None and args.classes:
            raise CLIError("give --subtree or --classes, not both")
        args.file = args.input
        tax = load_taxonomy(args)
        if args.subtree is not None:
            tax = _subtree(tax, args)
        _check_size(tax.num_classes, args)
        classes = None
        with step(args, f"computing the {args.matrix}"):
            matrix, what, cbar, column = _compute(tax, args)
        under = f" under {args.subtree!r}" if args.subtree is not None else ""
        what = f"{what} of {Path(args.input).name} ({tax.num_classes} classes{under})"
    title = args.title if args.title is not None else what
    with step(args, f"drawing {out}"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", plots.LabelWarning)
            fig = plots.plot_matrix(
                matrix, tax, classes, title=title, colorbar_label=cbar, node_height=NODE_HEIGHT[args.distance],
                labels=labels, color_scale=args.color_scale, cmap=args.cmap, column_label=column,
            )
        # written beside and renamed: an interrupted run leaves the old figure
        with atomic_write(out) as fh:
            fig.savefig(fh, format=out.suffix.lower().lstrip("."))
    for w in caught:
        if issubclass(w.category, plots.LabelWarning):
            print(f"taxosmooth plot: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _subtree(tax, args: argparse.Namespace):
    """The taxonomy of the classes under ``--subtree NODE`` (read again, restricted to them)."""
    if args.subtree not in tax:
        raise CLIError(f"--subtree {args.subtree!r} is not a node of {args.input}")
    return load_taxonomy(args, classes=list(tax.leaves_under(args.subtree)))


def _check_size(n: int, args: argparse.Namespace) -> None:
    """Refuse, before computing it, a matrix too large to hold: name its size and how to draw a part."""
    if n <= MAX_CLASSES:
        return
    gib = n * n * 8 / 2**30  # the float64 matrix alone
    under = f" under {args.subtree!r}" if args.subtree is not None else ""
    raise CLIError(
        f"{args.input} has {n:,} classes{under}, and plot draws at most {MAX_CLASSES:,} (the {n}x{n} {args.matrix} matrix alone "
        f"would take {gib:.1f} GiB); draw a part: --subtree NODE (the classes under NODE), or --classes FILE "
        "(one class per line)"
    )


def _compute(tax, args):
    import torch

    if args.matrix == "distances":
        from taxosmooth.distances import class_distances

        return class_distances(tax, args.distance), f"{args.distance} distances", "distance", "class"
    if args.matrix == "targets":
        from taxosmooth.targets import soft_targets

        q = soft_targets(tax, args.beta, distance=args.distance, dtype=torch.float64).numpy()
        return q, f"soft targets (beta={args.beta:g}, {args.distance})", "soft target q_t(i)", "class i"
    from taxosmooth.costs import cost_matrix

    cost = cost_matrix(tax, distance=args.distance, dtype=torch.float64).numpy()
    return cost, f"costs ({args.distance})", "cost", "predicted class"
