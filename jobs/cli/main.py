"""The `structome` command line: one group, thin commands, each imported only when it runs (or for --help).

A command's module pulls in what that command needs (torch and Ray for `build`, Starlette for `serve`, DuckDB
for `sql`); importing them all would cost every command a second before it starts.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
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
        """One place turns what the user can fix (a format refusal; a disk that is full, read-only or not
        there) into a one-line message naming the path. Anything else is a bug and keeps its traceback."""
        try:
            return super().invoke(ctx)
        except FormatError as error:
            raise click.ClickException(str(error)) from error
        except OSError as error:
            if error.errno not in FILE_SYSTEM_ERRORS or ctx.meta.get(DEBUG_KEY):
                raise
            raise click.ClickException(file_system_message(error)) from error


DEBUG_KEY = "structome.debug"
# errno -> what the user can do about it; other OSErrors (and every other exception) keep their traceback.
FILE_SYSTEM_ERRORS = {
    errno.ENOSPC: "free space there or choose another place",
    errno.EDQUOT: "free space there or ask for a larger quota",
    errno.EROFS: "the file system is read-only; choose a writable place",
    errno.EACCES: "this account may not write or read there; check the folder's permissions",
    errno.EPERM: "this account may not write or read there; check the folder's permissions",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder is where a file was expected",
    errno.EEXIST: "something is already there",
    errno.ENAMETOOLONG: "the file name is longer than the file system allows; give a shorter name",
}


def file_system_message(error: OSError) -> str:
    """`No space left on device: /data/db/shards/x (free space there ...)`: no errno number, the path named."""
    assert error.errno is not None
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    where = f": {' -> '.join(paths)}" if paths else ""
    return f"{os.strerror(error.errno)}{where} ({FILE_SYSTEM_ERRORS[error.errno]})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import structome

    click.echo(f"structome {structome.__version__}")
    ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show the traceback of file-system errors instead of a one-line message.")
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version, help="Print the version."
)
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """structome: build and use a private AlphaFold-DB-style structure database."""
    ctx.meta[DEBUG_KEY] = debug
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
