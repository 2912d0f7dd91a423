"""The `structome` command line: one click group of thin commands (parse, call, print)."""

from structome.jobs.cli.main import main

__all__ = ["main"]
