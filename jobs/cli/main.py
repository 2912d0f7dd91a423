"""The `structome` command line: one group, thin commands, each imported only when it runs (or for --help).

A command's module pulls in what that command needs (torch and Ray for `build`, Starlette for `serve`, DuckDB
for `sql`); importing them all would cost every command a second before it starts.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from structome.storage.formats import FormatError

# command name -> "module:attribute" of its click command
COMMANDS = {
    "build": "structome.jobs.cli.build:build_command",
    "sql": "structome.jobs.cli.query:sql",
    "get": "structome.jobs.cli.query:get",
    "status": "structome.jobs.cli.query:status",
    "plan": "structome.jobs.cli.plan:plan_command",
    "serve": "structome.jobs.cli.serve:serve_command",
    "export": "structome.jobs.cli.export:export_command",
    "compact": "structome.jobs.cli.compact:compact_command",
    "migrate": "structome.jobs.cli.migrate:migrate_command",
    "submit": "structome.jobs.cli.submit:submit_command",
    "verify": "structome.jobs.cli.verify:verify_command",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command) and command.name == name, COMMANDS[name]
        return command

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
