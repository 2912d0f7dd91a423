"""`structome migrate`: bring a database to this structome's layout (see storage.formats)."""

from __future__ import annotations

import click

from structome.jobs.cli.options import DB_OPTION
from structome.storage.layout import DatabaseLayout, DatabaseLockedError


@click.command("migrate")
@DB_OPTION
def migrate_command(db) -> None:
    """Write the database's format marker (structome.json) and run pending layout migrations; idempotent."""
    layout = DatabaseLayout(db)
    if layout.layout_version is None:
        raise click.ClickException(f"{layout.location} is not a structome database: nothing to migrate")
    try:
        with layout.lock():
            done = layout.migrate()
    except DatabaseLockedError as error:
        raise click.ClickException(str(error)) from error
    for line in done:
        click.echo(line, err=True)
    click.echo(f"{layout.location} is at layout {layout.layout_version}", err=True)
