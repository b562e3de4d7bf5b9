"""``taxosmooth evaluate``: every metric of a model's saved scores, and its operating curve."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from taxosmooth.cli._common import (
    CLIError,
    add_command,
    add_progress_option,
    add_taxonomy_options,
    check_not_inputs,
    check_output,
    load_taxonomy,
    positive_int,
    step,
)
from taxosmooth.distances import DISTANCE_KINDS

EPILOG = """
  taxosmooth evaluate scores.npy labels.txt --taxonomy animals.csv --from-logits
  taxosmooth evaluate probs.npy labels.txt --taxonomy animals.csv -k 1 5 --operating-curve curve.png
  taxosmooth evaluate probs.npy labels.txt --taxonomy animals.csv --coarse-labels --json > report.json

SCORES is a (N, C) array: a .npy file, or a .pt file holding a tensor. Its columns are
the classes in the class order of --taxonomy (the order of --classes, or by default the
order in which the leaves first appear in the taxonomy file). Its rows are probabilities
(rows that sum to 1), or logits with --from-logits.

LABELS is a text file with one label per line, the N lines in the order of the rows: a
class name, or with --coarse-labels any node of the taxonomy (a genus, "shoes", ...:
the true class is somewhere under it). Every line counts; an empty line is an error.

Printed: top-k error, mistake severity, mean_hierarchical_distance@k (the mean
distance of the k best) and min_hierarchical_distance@k (the distance of the closest
of them), hierarchical precision / recall / F1, accuracy at every depth, the
expected calibration error, and the areas under the operating curves of the threshold
rule (Valmadre, NeurIPS 2022): correct against depth and information recall, precision
against recall, correct against exact. --operating-curve draws the curve.

A value that is undefined for the set (the mistake severity when there is no mistake,
the accuracy at a depth that no coarse label reaches) prints as nan, and as null with
--json (NaN is not JSON). An empty set (no rows, no labels) is an error.
"""

FIGURE_FORMATS = (".png", ".pdf", ".svg")
SCORE_FORMATS = (".npy", ".pt")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "evaluate",
        help="every metric of saved scores against labels: top-k, severity, hierarchical distances, P/R/F1, "
             "accuracy per depth, ECE, operating curve",
        description="Score a model's saved outputs against their labels with every taxosmooth metric, and "
                    "optionally draw the operating curve of answers at any node.",
        epilog=EPILOG,
    )
    p.add_argument("scores", metavar="SCORES", help="the (N, C) scores: .npy, or .pt holding a tensor")
    p.add_argument("labels", metavar="LABELS", help="text file: one label (node name) per line, N lines")
    p.add_argument("--taxonomy", metavar="FILE", required=True, help="the taxonomy file the classes come from")
    p.add_argument("--from-logits", action="store_true", help="SCORES holds logits (a softmax makes the probabilities)")
    p.add_argument("-k", type=positive_int, nargs="+", metavar="K",
                   help="the k of the top-k error and the hierarchical distances (1 is always included; "
                        "default: 1 and 5, or 1 alone with fewer than 5 classes)")
    p.add_argument("--distance", choices=DISTANCE_KINDS, default="lca_height", help="tree distance of the severities")
    p.add_argument("--coarse-labels", action="store_true", help="labels may be internal nodes (coarse labels)")
    p.add_argument("--bins", type=positive_int, default=15, help="bins of the expected calibration error")
    p.add_argument("--operating-curve", metavar="FIG", help="draw the operating curve (.png, .pdf or .svg)")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON object (an undefined value, NaN, is null)")
    add_taxonomy_options(p, positional=False)
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def read_scores(path: str):
    """The ``(N, C)`` float64 scores of a ``.npy`` or ``.pt`` file, as a tensor."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such scores file" if not p.exists() else f"{path}: is not a file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CLIError(f"{path}: not a numpy array file ({exc})") from None
        if not np.issubdtype(arr.dtype, np.floating):
            raise CLIError(f"{path}: the scores must be floating point numbers, got dtype {arr.dtype}")
        scores = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    elif suffix == ".pt":
        try:
            scores = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CLIError(f"{path}: not a readable torch file ({type(exc).__name__}: {first})") from None
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            what = type(scores).__name__ if not isinstance(scores, torch.Tensor) else f"a {scores.dtype} tensor"
            raise CLIError(f"{path}: expected a floating point tensor, got {what}")
        scores = scores.detach().to(torch.float64)
    else:
        raise CLIError(f"{path}: unknown scores extension {p.suffix!r}; use one of {', '.join(SCORE_FORMATS)}")
    if scores.ndim != 2:
        raise CLIError(f"{path}: the scores must be a (N, C) array, got shape {tuple(scores.shape)}")
    return scores


def read_labels(path: str, tax, coarse: bool):
    """Target ids of the labels file, one per line; errors name the file and line."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such labels file" if not p.exists() else f"{path}: is not a file")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    index = {name: i for i, name in enumerate(map(str, tax.target_names))}
    ids = np.empty(len(lines), dtype=np.int64)
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise CLIError(f"{path}:{lineno}: empty line; every line is the label of one row of the scores")
        i = index.get(name)
        if i is None:
            raise CLIError(f"{path}:{lineno}: {name!r} is not a node of the taxonomy")
        if i >= tax.num_classes and not coarse:
            raise CLIError(f"{path}:{lineno}: {name!r} is an internal node, not a class; pass --coarse-labels "
                           "for labels at internal nodes")
        ids[lineno - 1] = i
    return ids


def _cli_message(exc: Exception) -> str:
    return str(exc).replace("from_logits=True", "--from-logits").replace("coarse_labels=True", "--coarse-labels")


def evaluate(scores, labels, tax, args):
    """The results printed by the command: the report, then the areas of the operating curves."""
    import torch

    from taxosmooth import metrics as M
    from taxosmooth._tensor_checks import as_probabilities

    target = torch.from_numpy(labels)
    try:
        probs = as_probabilities(scores, args.from_logits, tax.num_classes, name=str(args.scores))
    except ValueError as exc:
        raise CLIError(_cli_message(exc)) from None
    if args.k is None:
        ks = [1, 5] if tax.num_classes >= 5 else [1]
    else:
        ks = args.k
        if max(ks) > tax.num_classes:
            raise CLIError(f"-k {max(ks)} is more than the {tax.num_classes} classes")
    with step(args, "computing the metrics"):
        out = M.report(scores, target, tax, k=ks, distance=args.distance, probs=probs, n_bins=args.bins,
                       coarse_labels=args.coarse_labels)
    with step(args, "computing the operating curve"):
        curve = M.operating_curve(probs, target, tax, coarse_labels=args.coarse_labels)
    out |= {f"operating_curve {k}": float(v) for k, v in curve.areas().items()}
    return out, curve


def run(args: argparse.Namespace) -> int:
    figure = check_output(args.operating_curve, FIGURE_FORMATS) if args.operating_curve else None
    check_not_inputs([figure], [args.scores, args.labels, args.taxonomy, args.classes])
    if figure is not None:
        try:
            from taxosmooth import plots

            plots._require_matplotlib()
        except ImportError as exc:
            raise CLIError(str(exc)) from None
    tax = load_taxonomy(args, path=args.taxonomy)
    scores = read_scores(args.scores)
    if scores.shape[1] != tax.num_classes:
        raise CLIError(f"{args.scores}: {scores.shape[1]} columns but {args.taxonomy} has {tax.num_classes} classes "
                       "(the columns must be its classes, in its class order; see --classes)")
    labels = read_labels(args.labels, tax, args.coarse_labels)
    if len(labels) != scores.shape[0]:
        raise CLIError(f"{args.labels} has {len(labels)} labels but {args.scores} has {scores.shape[0]} rows")
    if len(labels) == 0:
        raise CLIError(f"the evaluation set is empty: {args.scores} has no rows and {args.labels} no labels")
    results, curve = evaluate(scores, labels, tax, args)
    if args.json:
        print(to_json(results))
    else:
        width = max(len(k) for k in results)
        print(f"{len(labels)} samples, {tax.num_classes} classes ({Path(args.scores).name})")
        for key, value in results.items():
            print(f"{key.ljust(width)}  {value:.6g}")
    if figure is not None:
        with step(args, f"drawing {figure}"):
            fig = plots.plot_operating_curve({Path(args.scores).stem: curve}, title=f"{Path(args.scores).name}: "
                                             f"operating curve of the threshold rule ({len(labels)} samples)")
            _save_figure(fig, figure)
        print(f"wrote {figure}", file=sys.stderr)
    return 0


def to_json(results: dict[str, float]) -> str:
    """The results as one JSON object; NaN (undefined for this set) becomes ``null``, since NaN is not JSON."""
    import math

    # allow_nan=False: an infinity (no metric has one) would fail here rather than write invalid JSON
    return json.dumps({k: None if math.isnan(v) else v for k, v in results.items()}, indent=1, allow_nan=False)


def _save_figure(fig, path: Path) -> None:
    """Write beside, then rename: an interrupted write leaves the old file as it was (its permissions too)."""
    from taxosmooth._atomic import atomic_write

    with atomic_write(path) as fh:
        fig.savefig(fh, format=path.suffix.lower().lstrip("."))
