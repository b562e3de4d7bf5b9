"""Helpers shared by the CLI sub-commands: taxonomy options, matrix files, progress."""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path


class CLIError(Exception):
    """Bad command-line input; printed as one line, exit status 2."""


class CLIArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of the examples in the epilog; shows the defaults that say something."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def add_command(subparsers, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """Register a sub-command with the shared formatter; ``epilog`` holds its examples."""
    return subparsers.add_parser(
        name, help=help, description=textwrap.fill(description, 79), epilog="examples:\n" + epilog.strip("\n"),
        formatter_class=HelpFormatter,
    )


# ---------------------------------------------------------------- option types
def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def scale_value(text: str):
    """``max``, ``none`` or a number > 0 (the divisor of the distances)."""
    if text.lower() == "max":
        return "max"
    if text.lower() == "none":
        return None
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'max', 'none' or a number > 0, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


# ---------------------------------------------------------------- taxonomy input
TAXONOMY_FILE_HELP = "taxonomy file: .csv/.tsv edge list (parent,child[,weight]), .json, or .txt (one root-to-leaf path per line)"


def add_taxonomy_options(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """The FILE argument and the options every taxonomy-reading command shares."""
    if positional:
        parser.add_argument("file", metavar="FILE", help=TAXONOMY_FILE_HELP)
    group = parser.add_argument_group("taxonomy options")
    group.add_argument(
        "--classes", metavar="CLASSES.txt",
        help="file with one class name per line: the classes to keep, in this order (the rows and columns of "
             "every matrix). Default: every leaf, in the order the leaves first appear in FILE",
    )
    group.add_argument(
        "--multiple-parents", choices=("error", "first", "shortest", "longest"), default="error",
        help="a node with several parents (a DAG): refuse, or keep the first listed parent, or the one on the "
             "shortest / longest path to the root",
    )
    group.add_argument(
        "--multiple-roots", choices=("join", "error"), default="join",
        help="several roots: join them under a virtual root '<root>', or refuse",
    )
    group.add_argument(
        "--contract-unary", action="store_true",
        help="remove internal nodes that have a single child",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action="store_true",
        help="report each step on stderr (on by default when stderr is a terminal)",
    )


def read_class_list(path: str) -> list[str]:
    """Class names from a file, one per line (blank lines and lines starting with '#' skipped)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such class list file" if not p.exists() else f"{path}: is not a file")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    names, seen = [], {}
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in seen:
            raise CLIError(f"{path}:{lineno}: class {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise CLIError(f"{path}: no class names found")
    return names


def load_taxonomy(args: argparse.Namespace, path: str | None = None, classes: list | None = None):
    """The :class:`~taxosmooth.Taxonomy` named by ``args.file`` (or ``path``) with the shared options."""
    from taxosmooth import Taxonomy

    path = args.file if path is None else path
    if classes is None and getattr(args, "classes", None):
        classes = read_class_list(args.classes)
    if not Path(path).exists():
        raise CLIError(f"{path}: no such taxonomy file")
    with step(args, f"loading {path}"):
        return Taxonomy.load(
            path, classes=classes, multiple_parents=args.multiple_parents,
            multiple_roots=args.multiple_roots, contract_unary=args.contract_unary,
        )


# ---------------------------------------------------------------- progress
def progress_enabled(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()


@contextmanager
def step(args: argparse.Namespace, what: str):
    """Print ``what ...`` and then ``done (x s)`` on stderr when progress is on."""
    if not progress_enabled(args):
        yield
        return
    print(f"taxosmooth: {what} ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" done ({time.perf_counter() - start:.2f} s)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- matrix files
MATRIX_FORMATS = (".pt", ".npy", ".csv")

MATRIX_FORMATS_HELP = """\
output formats (by the extension of OUT):
  .npy  a (C, C) numpy array; load with numpy.load(OUT)
  .pt   a dict {"matrix": (C, C) tensor, "classes": [names]}; load with torch.load(OUT)
  .csv  a header row 'class,<name 1>,...,<name C>', then one row per class: its name and its C values
Row t and column t are both the t-th class of the class order: the order of --classes, or by
default the order in which the leaves first appear in FILE. That order is also written,
one name per line, to OUT with the suffix '.classes.txt' (e.g. targets.npy -> targets.classes.txt)."""


def classes_path(out: str | os.PathLike) -> Path:
    """The class list written next to a matrix file: ``targets.npy`` -> ``targets.classes.txt``."""
    return Path(out).with_suffix(".classes.txt")


def check_output(path: str, allowed: tuple[str, ...]) -> Path:
    """Check an output path before any work: a known extension and a writable folder."""
    p = Path(path)
    if p.suffix.lower() not in allowed:
        raise CLIError(f"{path}: unknown output extension {p.suffix!r}; use one of {', '.join(allowed)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise CLIError(f"cannot write {path}: folder {str(folder)!r} does not exist")
    if p.is_dir():
        raise CLIError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CLIError(f"cannot write {path}: permission denied")
    return p


def write_matrix(path: str | os.PathLike, matrix, classes) -> list[Path]:
    """Write a ``(C, C)`` tensor in the format of ``path``'s extension, plus its class list.

    Returns the paths written.
    """
    import torch

    p = Path(path)
    names = [str(c) for c in classes]
    bad = next((n for n in names if "\n" in n or "\r" in n), None)
    if bad is not None:
        raise CLIError(f"class name {bad!r} contains a line break; it cannot be written to a class list")
    suffix = p.suffix.lower()
    if suffix == ".pt":
        torch.save({"matrix": matrix.detach().cpu(), "classes": names}, p)
    elif suffix == ".npy":
        import numpy as np

        np.save(p, matrix.detach().cpu().numpy(), allow_pickle=False)
    elif suffix == ".csv":
        _write_csv(p, matrix.detach().cpu().numpy(), names)
    else:  # check_output ran first
        raise CLIError(f"{p}: unknown output extension {p.suffix!r}; use one of {', '.join(MATRIX_FORMATS)}")
    side = classes_path(p)
    side.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return [p, side]


def _write_csv(path: Path, values, names: list[str]) -> None:
    # numpy writes the shortest text that reads back as the same float32 / float64
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["class", *names])
        for name, row in zip(names, values):
            w.writerow([name, *row.astype(str).tolist()])


def read_matrix(path: str | os.PathLike, classes_file: str | None = None):
    """Read a matrix written by :func:`write_matrix` (or any square ``.npy`` / ``.pt`` / ``.csv``).

    Returns ``(matrix, classes)``: a float64 numpy array ``(C, C)`` and the
    class names (from the file itself, ``classes_file``, or the
    ``.classes.txt`` file next to it; ``None`` when there is none).
    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such matrix file" if not p.exists() else f"{path}: is not a file")
    suffix = p.suffix.lower()
    classes = None
    if suffix == ".npy":
        try:
            matrix = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CLIError(f"{path}: not a numpy array file ({exc})") from None
    elif suffix == ".pt":
        import torch

        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a bad file
            raise CLIError(f"{path}: not a readable torch file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if isinstance(data, dict):
            if "matrix" not in data:
                raise CLIError(f"{path}: a dict without a 'matrix' key (keys: {', '.join(map(str, data))})")
            matrix, classes = data["matrix"], data.get("classes")
        else:
            matrix = data
        if not isinstance(matrix, torch.Tensor):
            raise CLIError(f"{path}: 'matrix' is a {type(matrix).__name__}, not a tensor")
        matrix = matrix.detach().to(torch.float64).numpy()
    elif suffix == ".csv":
        matrix, classes = _read_csv(p)
    else:
        raise CLIError(f"{path}: unknown matrix extension {p.suffix!r}; use one of {', '.join(MATRIX_FORMATS)}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise CLIError(f"{path}: the matrix must be square (C, C), got shape {tuple(matrix.shape)}")
    if classes_file is not None:
        classes = read_class_list(classes_file)
    elif classes is None and classes_path(p).is_file():
        classes = read_class_list(str(classes_path(p)))
    if classes is not None and len(classes) != matrix.shape[0]:
        where = classes_file or (classes_path(p) if suffix == ".npy" else path)
        raise CLIError(f"{where}: {len(classes)} class names for a {matrix.shape[0]}x{matrix.shape[0]} matrix")
    return matrix, (None if classes is None else [str(c) for c in classes])


def _read_csv(path: Path):
    import numpy as np

    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise CLIError(f"{path}: the file is empty")
    header = rows[0]
    if not header or header[0].strip().lower() != "class":
        raise CLIError(f"{path}:1: expected a header row 'class,<name 1>,...', got {','.join(header)[:60]!r}")
    classes = [h.strip() for h in header[1:]]
    values = np.empty((len(rows) - 1, len(classes)), dtype=np.float64)
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(classes) + 1:
            raise CLIError(f"{path}:{lineno}: expected {len(classes) + 1} fields (a name and {len(classes)} values), got {len(row)}")
        if row[0].strip() != classes[lineno - 2]:
            raise CLIError(f"{path}:{lineno}: row {row[0]!r} should be {classes[lineno - 2]!r}, the class of that column")
        try:
            values[lineno - 2] = [float(x) for x in row[1:]]
        except ValueError:
            bad = next(x for x in row[1:] if not _is_float(x))
            raise CLIError(f"{path}:{lineno}: {bad!r} is not a number") from None
    return values, classes


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_matrix_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a matrix rather than a taxonomy.

    ``.npy`` and ``.pt`` are matrices; a ``.csv`` is a matrix when its first
    row starts with the cell ``class`` and has more than two cells that are
    not all numbers (a taxonomy edge list has 2 or 3 cells per row, the third a weight).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".npy", ".pt"):
        return True
    if suffix != ".csv" or not p.is_file():
        return False
    with p.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        first = next((r for r in csv.reader(fh) if r and any(c.strip() for c in r)), [])
    if len(first) < 3 or first[0].strip().lower() != "class":
        return False
    return len(first) > 3 or not _is_float(first[2])


# ---------------------------------------------------------------- matrix commands
DTYPES = ("float32", "float64")


def add_matrix_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="OUT", required=True, help="output file: .npy, .pt or .csv (see below)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="precision of the values written")


def save_matrix_command(args: argparse.Namespace, what: str, compute) -> int:
    """Shared body of ``targets`` and ``costs``: check OUT, load, compute ``compute(tax, dtype)``, write."""
    import torch

    check_output(args.output, MATRIX_FORMATS)
    tax = load_taxonomy(args)
    n = tax.num_classes
    dtype = getattr(torch, args.dtype)
    size_gb = n * n * dtype.itemsize / 1e9
    try:
        with step(args, f"computing the {n}x{n} {what} ({size_gb:.2g} GB)"):
            matrix = compute(tax, dtype)
    except MemoryError:
        raise CLIError(f"not enough memory for the {n}x{n} {what} matrix ({size_gb:.2g} GB); keep fewer classes with --classes") from None
    with step(args, f"writing {args.output}"):
        written = write_matrix(args.output, matrix, tax.classes)
    print(f"wrote {written[0]} ({n}x{n} {what}, {args.dtype}) and its class list {written[1]}", file=sys.stderr)
    return 0
