"""The `structome` command line: one group, thin commands."""

from __future__ import annotations

import logging
import sys

import click

from structome.jobs.cli.build import build_command
from structome.jobs.cli.export import export_command
from structome.jobs.cli.plan import plan_command
from structome.jobs.cli.query import get, sql, status
from structome.jobs.cli.serve import serve_command
from structome.jobs.cli.submit import submit_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """structome: build and use a private AlphaFold-DB-style structure database."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


for command in (build_command, sql, get, status, plan_command, serve_command, export_command, submit_command):
    main.add_command(command)
