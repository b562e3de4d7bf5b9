"""Helpers shared by the CLI sub-commands: taxonomy options, matrix files, progress."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import re
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path


class CLIError(Exception):
    """Bad command-line input; printed as one line (one per problem), exit status 2.

    ``CLIError("a", "b")`` reports two problems, each on its own line.
    """

    @property
    def messages(self) -> list[str]:
        return [str(m) for m in self.args] or [""]

    def __str__(self) -> str:
        return "\n".join(self.messages)


#: the library's option names and the flags that set them
FLAGS = {
    "multiple_parents": "--multiple-parents",
    "multiple_roots": "--multiple-roots",
    "root_name": "--root-name",
    "contract_unary": "--contract-unary",
    "node_names": "--node-names",
    "format": "--format",
    "ic": "--ic",
}
_OPTION_VALUE = re.compile(r"\b(" + "|".join(FLAGS) + r")=('[^']*'(?:(?:, | or )'[^']*')*|True|False)")
_ENCODE_ADVICE = re.compile(r"use Taxonomy\.encode\(\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]\) for its target id")
_OPTION_WORD = re.compile(r"\b(multiple_parents|multiple_roots|root_name|contract_unary|node_names)\b")


def cli_wording(message: str) -> str:
    """A library message in the words of the command line: ``multiple_parents='first'`` -> ``--multiple-parents first``.

    The library speaks Python (its errors name keyword arguments); the
    command line translates them here, at its boundary.
    """

    def value(m: re.Match) -> str:
        flag, given = FLAGS[m.group(1)], m.group(2)
        if given in ("True", "False"):
            return flag if given == "True" else f"no {flag}"
        return f"{flag} " + re.sub(r"'([^']*)'", r"\1", given)

    message = _ENCODE_ADVICE.sub(r"give \1 as a label to 'taxosmooth evaluate --coarse-labels'", message)
    return _OPTION_WORD.sub(lambda m: FLAGS[m.group(1)], _OPTION_VALUE.sub(value, message))


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
def taxonomy_file_help() -> str:
    """The help of a taxonomy FILE argument, from the format registry."""
    from taxosmooth.taxonomy.formats import FORMATS

    auto = ", ".join(f"{'/'.join(f.suffixes)} ({f.summary})" for f in FORMATS.values() if f.suffixes)
    named = ", ".join(f"--format {f.name} ({f.summary})" for f in FORMATS.values() if not f.suffixes)
    return f"taxonomy file: {auto}" + (f"; or with {named}" if named else "")


def add_taxonomy_options(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """The FILE argument and the options every taxonomy-reading command shares."""
    from taxosmooth.taxonomy.formats import FORMATS, describe_auto, format_names

    if positional:
        parser.add_argument("file", metavar="FILE", help=taxonomy_file_help())
    group = parser.add_argument_group("taxonomy options")
    group.add_argument(
        "--format", choices=format_names(), default="auto",
        help=f"how to read the taxonomy file: auto (by its extension: {describe_auto()}), or "
             + "; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values()),
    )
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
        help="several roots: join them under a virtual root (named by --root-name), or refuse",
    )
    group.add_argument("--root-name", default="<root>", metavar="NAME",
                       help="the name of the virtual root that joins several roots")
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
    return list(_read_class_lines(path))


def _read_class_lines(path: str) -> dict[str, int]:
    """The class names of a class list file, in order, each with its line number."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such class list file" if not p.exists() else f"{path}: is not a file")
    from taxosmooth.taxonomy._text import physical_lines

    try:
        lines = physical_lines(p.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    seen: dict[str, int]  # name -> line
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
    return seen


def load_taxonomy(args: argparse.Namespace, path: str | None = None, classes: list | None = None):
    """The :class:`~taxosmooth.Taxonomy` named by ``args.file`` (or ``path``) with the shared options."""
    from taxosmooth import Taxonomy

    from taxosmooth.errors import TaxonomyError

    path = args.file if path is None else path
    lines: dict[str, int] = {}
    if classes is None and getattr(args, "classes", None):
        lines = _read_class_lines(args.classes)
        classes = list(lines)
    if not Path(path).exists():
        raise CLIError(f"{path}: no such taxonomy file")
    if not args.root_name.strip():
        raise CLIError("--root-name must not be blank")
    with step(args, f"loading {path}"):
        try:
            return Taxonomy.load(
                path, classes=classes, format=args.format, multiple_parents=args.multiple_parents,
                multiple_roots=args.multiple_roots, root_name=args.root_name, contract_unary=args.contract_unary,
            )
        except TaxonomyError as exc:
            # a class the taxonomy refuses (unknown, internal): name its line in the class list too
            message = str(exc)
            blamed = next((n for n in lines if f"class {n!r} " in message), None)
            if blamed is None:
                raise
            raise CLIError(f"{args.classes}:{lines[blamed]}: {cli_wording(message)}") from None


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
output formats (by the extension of OUT, in any case):
  .npy  a (C, C) numpy array; load with numpy.load(OUT)
  .pt   a dict {"matrix": (C, C) tensor, "classes": [names]}; load with torch.load(OUT)
  .csv  a header row 'class,<name 1>,...,<name C>', then one row per class: its name and its C values
Row t and column t are both the t-th class of the class order: the order of --classes, or by
default the order in which the leaves first appear in FILE. That order is also written next to
OUT, in OUT.classes.txt (targets.npy -> targets.npy.classes.txt): a first line
'# taxosmooth class list of OUT: C classes, sha256 <checksum of OUT>', then one name per line.
Every file is written beside its destination and renamed at the end: a failed or interrupted
command leaves the files that were there before."""

#: the first line of a class list written next to a matrix
_CLASS_LIST_HEADER = re.compile(r"^# taxosmooth class list of (.*): (\d+) classes, sha256 ([0-9a-f]{64})$")


def classes_path(out: str | os.PathLike) -> Path:
    """The class list written next to a matrix file: ``targets.npy`` -> ``targets.npy.classes.txt``.

    One per output file, so that two outputs (``t.npy``, ``t.csv``) never share one.
    """
    return Path(os.fspath(out) + ".classes.txt")


def check_output(path: str, allowed: tuple[str, ...]) -> Path:
    """Check an output path before any work: a known extension (any case) and a writable folder."""
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


def check_not_inputs(outputs, inputs) -> None:
    """Refuse an output that is one of the command's input files: writing it would destroy the input.

    Compared as files (through symbolic links and hard links), so ``./t.csv``
    and ``t.csv`` are the same. ``None`` entries (options not given) and
    inputs that are not files (``--ic intrinsic``) are skipped.
    """
    given = [str(i) for i in inputs if i is not None and os.path.isfile(i)]
    for out in outputs:
        if out is None:
            continue
        real = os.path.realpath(out)
        for name in given:
            if real == os.path.realpath(name) or (os.path.exists(out) and os.path.samefile(out, name)):
                raise CLIError(f"cannot write {out}: it is the input file {name}, which would be overwritten; "
                               "choose another output")


def check_matrix_output(path: str) -> Path:
    """:func:`check_output` for a matrix and the class list beside it."""
    p = check_output(path, MATRIX_FORMATS)
    side = classes_path(p)
    if side.is_dir():
        raise CLIError(f"cannot write the class list {side}: it is a folder")
    if side.exists() and not os.access(side, os.W_OK):
        raise CLIError(f"cannot write the class list {side}: permission denied")
    return p


def check_class_names(classes) -> list[str]:
    """The class names as they will be written, refusing those a class list cannot hold."""
    from taxosmooth.taxonomy._text import LINE_BREAKS

    names = [str(c) for c in classes]
    for n in names:
        if LINE_BREAKS.intersection(n):
            raise CLIError(f"class name {n!r} contains a line break; it cannot be written to a class list")
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            raise CLIError(f"class name {n!r} cannot be encoded as UTF-8; it cannot be written to a class list") from None
    return names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_matrix(path: str | os.PathLike, matrix, classes, files=None) -> list[Path]:
    """Write a ``(C, C)`` tensor in the format of ``path``'s extension (any case), and its class list.

    Both are written beside their destinations and renamed when both are
    complete (``files``: a :class:`~taxosmooth._atomic.PendingFiles` to join,
    renamed by its owner). Returns the two paths.
    """
    from taxosmooth._atomic import PendingFiles

    p = Path(path)
    names = check_class_names(classes)
    suffix = p.suffix.lower()
    if suffix not in MATRIX_FORMATS:  # check_output ran first
        raise CLIError(f"{p}: unknown output extension {p.suffix!r}; use one of {', '.join(MATRIX_FORMATS)}")
    own = files is None
    pending = PendingFiles() if own else files
    try:
        with pending.open(p) as fh:
            _write_matrix_to(fh, suffix, matrix, names)
        tmp = pending.temporary_of(p)
        header = f"# taxosmooth class list of {p.name}: {len(names)} classes, sha256 {_sha256(tmp)}\n"
        with pending.open(classes_path(p)) as fh:
            fh.write((header + "".join(n + "\n" for n in names)).encode("utf-8"))
    except BaseException:
        if own:
            pending.discard()
        raise
    if own:
        pending.commit()
    return [p, classes_path(p)]


def _write_matrix_to(fh, suffix: str, matrix, names: list[str]) -> None:
    if suffix == ".pt":
        import torch

        torch.save({"matrix": matrix.detach().cpu(), "classes": names}, fh)
    elif suffix == ".npy":
        import numpy as np

        # to the file object: np.save(path) would append ".npy" to a name ending in ".NPY"
        np.save(fh, matrix.detach().cpu().numpy(), allow_pickle=False)
    else:
        _write_csv(fh, matrix.detach().cpu().numpy(), names)


def _write_csv(fh, values, names: list[str]) -> None:
    # numpy writes the shortest text that reads back as the same float32 / float64
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["class", *names])
    for name, row in zip(names, values):
        w.writerow([name, *row.astype(str).tolist()])
    text.flush()
    text.detach()


def read_class_list_of(matrix_path: Path) -> list[str] | None:
    """The class list written next to ``matrix_path``, checked against it; ``None`` when there is none.

    A list that does not start with taxosmooth's header, or whose checksum is
    not that of the matrix file (the matrix was replaced after it was written),
    is an error: it is never used silently.
    """
    side = classes_path(matrix_path)
    if not side.is_file():
        return None
    try:
        lines = side.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{side}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    m = _CLASS_LIST_HEADER.match(lines[0])
    if m is None:
        raise CLIError(
            f"{side}:1: not a class list written by taxosmooth for {matrix_path.name} (no '# taxosmooth class list' "
            "header); to use it anyway, pass it with --classes"
        )
    if m.group(3) != _sha256(matrix_path):
        raise CLIError(
            f"{side} was written for another {matrix_path.name}: the checksum on its first line is not that of "
            f"{matrix_path} (the matrix was replaced after the list was written); pass the right list with --classes"
        )
    names = lines[1:-1] if lines[-1] == "" else lines[1:]
    if len(names) != int(m.group(2)):
        raise CLIError(f"{side}: its header announces {m.group(2)} classes, it lists {len(names)}")
    return names


def read_matrix(path: str | os.PathLike, classes_file: str | None = None):
    """Read a matrix written by :func:`write_matrix` (or any square ``.npy`` / ``.pt`` / ``.csv``).

    Returns ``(matrix, classes)``: a float64 numpy array ``(C, C)`` and the
    class names (from ``classes_file``, else the file itself (.pt, .csv), else
    the class list written next to it, ``OUT.classes.txt``; ``None`` when there
    is none). A class list next to the file must be the one written with it.
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
        except (ValueError, OSError, EOFError) as exc:
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
        if matrix.is_complex():
            raise CLIError(f"{path}: the matrix is complex ({matrix.dtype}); a class matrix is real")
        matrix = matrix.detach().to(torch.float64).numpy()
        if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
            raise CLIError(f"{path}: 'classes' must be a list of names")
    elif suffix == ".csv":
        matrix, classes = _read_csv(p)
    else:
        raise CLIError(f"{path}: unknown matrix extension {p.suffix!r}; use one of {', '.join(MATRIX_FORMATS)}")
    if np.asarray(matrix).dtype.kind not in "biuf":
        raise CLIError(f"{path}: the matrix holds {np.asarray(matrix).dtype} values, not real numbers")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise CLIError(f"{path}: the matrix must be square (C, C), got shape {tuple(matrix.shape)}")
    # the first of: --classes, the names stored in the file (.pt, .csv), the checked list beside it
    where: str | os.PathLike
    if classes_file is not None:
        classes, where = read_class_list(classes_file), classes_file
    elif classes is not None:
        where = path
    else:
        classes, where = read_class_list_of(p), classes_path(p)
    if classes is not None and len(classes) != matrix.shape[0]:
        raise CLIError(f"{where}: {len(classes)} class names for a {matrix.shape[0]}x{matrix.shape[0]} matrix")
    return matrix, (None if classes is None else [str(c) for c in classes])


def _read_csv(path: Path):
    """A matrix CSV, one physical line per row (a quote must close on its line, as in taxonomy files)."""
    import numpy as np

    from taxosmooth.errors import TaxonomyFileError
    from taxosmooth.taxonomy._text import physical_lines, split_fields

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        rows = [(k, split_fields(line, ",", f"{path}:{k}")[0]) for k, line in enumerate(physical_lines(text), start=1)
                if line.strip()]
    except TaxonomyFileError as exc:
        raise CLIError(str(exc)) from None
    if not rows:
        raise CLIError(f"{path}: the file is empty")
    first, header = rows[0]
    if not header or header[0].lower() != "class":
        raise CLIError(f"{path}:{first}: expected a header row 'class,<name 1>,...', got {','.join(header)[:60]!r}")
    classes = header[1:]
    values = np.empty((len(rows) - 1, len(classes)), dtype=np.float64)
    for k, (lineno, row) in enumerate(rows[1:]):
        if len(row) != len(classes) + 1:
            raise CLIError(f"{path}:{lineno}: expected {len(classes) + 1} fields (a name and {len(classes)} values), got {len(row)}")
        if k >= len(classes) or row[0] != classes[k]:
            want = repr(classes[k]) if k < len(classes) else "no row (there are more rows than columns)"
            raise CLIError(f"{path}:{lineno}: row {row[0]!r} should be {want}, the class of that column")
        bad = next((x for x in row[1:] if not _is_float(x)), None)
        if bad is not None:
            raise CLIError(f"{path}:{lineno}: {bad!r} is not a number")
        values[k] = [float(x) for x in row[1:]]
    return values, classes


def _is_float(text: str) -> bool:
    """A plain decimal number (or nan / inf), as written: float() would also take '1_0' or Arabic-Indic digits."""
    from taxosmooth.taxonomy._text import is_number_text

    return is_number_text(text.strip())


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
    from taxosmooth.errors import TaxonomyFileError
    from taxosmooth.taxonomy._text import physical_lines, split_fields

    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        head = fh.read(1 << 16)  # the first row is enough
    line = next((x for x in physical_lines(head) if x.strip()), "")
    try:
        first = split_fields(line, ",", str(p))[0]
    except TaxonomyFileError:
        return False
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

    check_matrix_output(args.output)
    check_not_inputs([args.output, classes_path(args.output)], [args.file, args.classes])
    tax = load_taxonomy(args)
    check_class_names(tax.classes)
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
