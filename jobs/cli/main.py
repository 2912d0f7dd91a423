"""The `structome` command line: one group, thin commands."""

from __future__ import annotations

import logging
import sys

import click

from structome.jobs.cli.build import build_command
from structome.jobs.cli.export import export_command
from structome.jobs.cli.migrate import migrate_command
from structome.jobs.cli.plan import plan_command
from structome.jobs.cli.query import get, sql, status
from structome.jobs.cli.serve import serve_command
from structome.jobs.cli.submit import submit_command
from structome.storage.formats import FormatError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        """Every command opens its database through storage.layout: one place turns a format refusal into a message."""
        try:
            return super().invoke(ctx)
        except FormatError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """structome: build and use a private AlphaFold-DB-style structure database."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


for command in (
    build_command,
    sql,
    get,
    status,
    plan_command,
    serve_command,
    export_command,
    migrate_command,
    submit_command,
):
    main.add_command(command)
