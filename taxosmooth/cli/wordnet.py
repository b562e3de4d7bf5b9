"""``taxosmooth wordnet``: WordNet similarity / distance matrices and taxonomies from a list of synsets."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from taxosmooth.cli._common import (
    CLIError,
    add_command,
    add_progress_option,
    check_class_names,
    check_matrix_output,
    check_not_inputs,
    check_output,
    classes_path,
    step,
    write_matrix,
)

EPILOG = """
  taxosmooth wordnet classes.txt --measure wup -o wup.npy
  taxosmooth wordnet classes.txt --measure path --distance -o dist.csv --tree tree.csv
  taxosmooth wordnet LOC_synset_mapping.txt --measure lin --ic ic-brown.dat -o lin.pt
  taxosmooth wordnet classes.txt --tree tree.csv --multiple-parents shortest --contract-unary

SYNSETS_FILE holds one synset per line, in the order of the model's classes: a name (horse.n.01),
an ImageNet id (n02374451; a line 'n01440764 tench, Tinca tinca' as in ImageNet's synset mapping
files counts as its id), or a noun (zebra, sea lion: its first sense, reported). Blank lines and
lines starting with '#' are skipped. Every line that names no synset (or the same synset as an
earlier line) is reported with its line number, all of them at once.

The values equal nltk's path_similarity, wup_similarity, lch_similarity, res/jcn/lin_similarity
(nan where nltk returns None). --distance writes the matching distance instead: path length,
1 - wup, log(1 + path length), the Jiang-Conrath distance (res, jcn), 1 - lin.
Matrix files: .npy (numpy.load), .pt (torch.load(OUT)["matrix"]), .csv (a header row, then one
row per synset); the synset names are also written next to OUT, in OUT.classes.txt.
--tree writes the hypernym tree as a parent,child edge list that taxosmooth.Taxonomy.load reads.
Everything is computed and checked first; then all files are written beside their
destinations and renamed at the end, so a failed run leaves the old files as they were.

WordNet data (nothing is downloaded): nltk's own data, else the dictionary folder named by
TAXOSMOOTH_WORDNET_DIR, else /usr/share/wordnet (apt-get install wordnet-base wordnet-sense-index).
"""

_WNID_LINE = re.compile(r"^([nvasr]\d{8})\s")


def read_synsets_file(path: str) -> list[tuple[int, str]]:
    """The synsets of SYNSETS_FILE, one per line (see the epilog): ``(line number, item)`` pairs."""
    from taxosmooth.taxonomy._text import physical_lines

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such synsets file" if not p.exists() else f"{path}: is not a file")
    try:
        lines = physical_lines(p.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    items = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        m = _WNID_LINE.match(text)
        items.append((lineno, m.group(1) if m else text))
    if not items:
        raise CLIError(f"{path}: no synsets found")
    return items


def resolve_lines(path: str, items: list[tuple[int, str]], reader, report: list) -> list:
    """The synset of every line; every bad line is reported (``file:line: ...``), not only the first."""
    from taxosmooth.errors import WordNetLookupError
    from taxosmooth.wordnet.synsets import resolve_synset

    first_line: dict  # synset -> line
    synsets, errors, first_line = [], [], {}
    for lineno, item in items:
        notes: list = []
        try:
            synset = resolve_synset(item, wordnet=reader, report=notes)
        except WordNetLookupError as exc:
            errors.append(f"{path}:{lineno}: {exc}")
            continue
        report.extend(f"{path}:{lineno}: {n}" for n in notes)
        if synset in first_line:
            errors.append(f"{path}:{lineno}: synset {synset.name()} is given twice (lines {first_line[synset]} and "
                          f"{lineno}); each class must appear once")
            continue
        first_line[synset] = lineno
        synsets.append(synset)
    if errors:
        raise CLIError(*errors)
    return synsets


def add_parser(subparsers) -> argparse.ArgumentParser:
    from taxosmooth.taxonomy.formats import describe_auto
    from taxosmooth.wordnet.similarity import MEASURES

    p = add_command(
        subparsers, "wordnet",
        help="WordNet similarity/distance matrix (equal to nltk's) and hypernym tree of a list of synsets",
        description="Compute the similarity (or distance) of every pair of synsets of SYNSETS_FILE with the "
                    "values of nltk's WordNet measures, and/or write their hypernym tree as a taxonomy file.",
        epilog=EPILOG,
    )
    p.add_argument("synsets_file", metavar="SYNSETS_FILE", help="one synset per line (name, ImageNet id or noun)")
    group = p.add_argument_group("matrix")
    group.add_argument("--measure", choices=MEASURES, default="wup", help="nltk's similarity measure")
    group.add_argument("--distance", action="store_true", help="write the distance that goes with the measure")
    group.add_argument("--ic", default="intrinsic", metavar="intrinsic|FILE",
                       help="information content for res/jcn/lin: 'intrinsic' (Seco et al. 2004, from WordNet "
                            "itself) or an nltk IC file such as ic-brown.dat")
    group.add_argument("--no-simulate-root", dest="simulate_root", action="store_false",
                       help="nltk's simulate_root=False: no fake root joining the verb hierarchies (nan instead)")
    group.add_argument("-o", "--output", metavar="OUT", help="matrix file: .npy, .pt or .csv")
    group.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="precision of the values written")
    tree = p.add_argument_group("tree")
    tree.add_argument("--tree", metavar="TREE.csv",
                      help=f"write the hypernym tree, in the taxonomy format of its extension ({describe_auto()})")
    tree.add_argument("--multiple-parents", choices=("longest", "shortest", "first", "error"), default="longest",
                      help="a synset with several hypernyms keeps the one on its longest / shortest path to the "
                           "root, or the first one (hypernyms then instance hypernyms, by name)")
    tree.add_argument("--contract-unary", action="store_true", help="remove the synsets with a single child")
    tree.add_argument("--node-names", choices=("name", "wnid"), default="name", help="name the nodes horse.n.01 or n02374451")
    p.add_argument("--report", action="store_true", help="print every decision (lemma senses, dropped hypernyms) on stderr")
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from taxosmooth._atomic import PendingFiles
    from taxosmooth.wordnet import load_wordnet, wordnet_source
    from taxosmooth.wordnet.similarity import compile_synsets, distance_matrix, similarity_matrix

    if not args.output and not args.tree:
        raise CLIError("nothing to write: give -o OUT for the matrix and/or --tree TREE.csv")
    if args.output:
        check_matrix_output(args.output)
    if args.tree:
        from taxosmooth.taxonomy.formats import auto_suffixes

        check_output(args.tree, tuple(auto_suffixes()))
    outputs = [Path(p).resolve() for p in (args.output, args.output and classes_path(args.output), args.tree) if p]
    if len(set(outputs)) < len(outputs):
        raise CLIError("-o and --tree name the same file")
    check_not_inputs([args.output, args.output and classes_path(args.output), args.tree],
                     [args.synsets_file, args.ic])
    items = read_synsets_file(args.synsets_file)
    with step(args, "loading WordNet"):
        reader = load_wordnet()
    report: list[str] = [wordnet_source().describe()]
    with step(args, f"resolving {len(items)} synsets and their hypernyms"):
        synsets = resolve_lines(args.synsets_file, items, reader, report)
        dag = compile_synsets(synsets, wordnet=reader)
    names = [dag.names[v] for v in dag.inputs]
    # everything is computed and checked before the first file is written
    matrix = tree_text = tax = None
    if args.output:
        n = len(names)
        what = f"{args.measure} {'distance' if args.distance else 'similarity'}"
        fn = distance_matrix if args.distance else similarity_matrix
        try:
            with step(args, f"computing the {n}x{n} {what} matrix"):
                values = fn(dag, args.measure, ic=args.ic, simulate_root=args.simulate_root)
        except MemoryError:
            raise CLIError(f"not enough memory for the {n}x{n} {what} matrix") from None
        matrix = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, args.dtype))
        check_class_names(names)
    if args.tree:
        from taxosmooth.taxonomy.formats import render
        from taxosmooth.wordnet.taxonomy import taxonomy_from_wordnet

        with step(args, "building the hypernym tree"):
            tax = taxonomy_from_wordnet(
                [dag.synsets[v] for v in dag.inputs], multiple_parents=args.multiple_parents,
                contract_unary=args.contract_unary, node_names=args.node_names, wordnet=reader,
            )
            tree_text = render(tax, args.tree)
        report.extend(tax.report)
    with step(args, "writing"), PendingFiles() as files:
        if matrix is not None:
            written = write_matrix(args.output, matrix, names, files=files)
        if tree_text is not None:
            with files.open(args.tree) as fh:
                fh.write(tree_text.encode("utf-8"))
    if matrix is not None:
        missing = int(np.isnan(values).sum())
        note = f"; {missing} pair(s) without a value (nan)" if missing else ""
        print(f"wrote {written[0]} ({n}x{n} {what}, {args.dtype}{note}) and its synset list {written[1]}", file=sys.stderr)
    if tax is not None:
        print(f"wrote {args.tree} (tree of {tax.num_nodes} nodes above {tax.num_classes} synsets, "
              f"{len(tax.report)} decision(s){'' if args.report else '; --report lists them'})", file=sys.stderr)
    for line in report if args.report else report[:1]:
        print(f"  {line}", file=sys.stderr)
    return 0
