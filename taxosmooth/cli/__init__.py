"""The ``taxosmooth`` command line.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)`` (registers its arguments and sets ``func``).
Errors that come from bad input end as one line on stderr per problem and exit
status 2, never a traceback; library messages are translated into the words of
the command line (``multiple_parents='first'`` -> ``--multiple-parents first``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: sub-command modules, in the order ``--help`` lists them
COMMANDS = ("demo", "info", "targets", "costs", "plot", "wordnet", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    from taxosmooth import __version__
    from taxosmooth.cli._common import CLIArgumentParser

    # sub-parsers inherit the class: every usage error is one line on stderr
    parser = CLIArgumentParser(
        prog="taxosmooth",
        description="Hierarchy-aware soft targets and misclassification costs from a taxonomy.",
    )
    parser.add_argument("--version", action="version", version=f"taxosmooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"taxosmooth.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    from taxosmooth.cli._common import CLIError, cli_wording

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader of stdout went away (taxosmooth info ... | head): stop quietly, as other tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except CLIError as exc:
        for message in exc.messages:
            print(f"taxosmooth {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        for line in cli_wording(message).splitlines() or [type(exc).__name__]:
            print(f"taxosmooth {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taxosmooth: interrupted", file=sys.stderr)
        return 130
