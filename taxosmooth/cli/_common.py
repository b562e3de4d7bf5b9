"""Helpers shared by the CLI sub-commands."""

from __future__ import annotations


class CLIError(Exception):
    """Bad command-line input; printed as one line, exit status 2."""
