"""`structome verify`: check every table file and archive member (storage.verify); `--repair` quarantines."""

from __future__ import annotations

import sys

import click

from structome.jobs.cli.options import DB_OPTION
from structome.storage.layout import DatabaseLayout, DatabaseLockedError
from structome.storage.verify import repair, verify


@click.command("verify")
@DB_OPTION
@click.option(
    "--repair",
    "fix",
    is_flag=True,
    help="Quarantine damaged shards and segments (the next build re-folds exactly their entries).",
)
def verify_command(db, fix) -> None:
    """Check every table file (footers, row counts, checksums) and every archive member (recorded offsets and
    SHA-256). Exits 1 and names each damaged file. With --repair, moves what is damaged into quarantine/ (or gives
    a dropped segment's shards back to level 0) and exits 0 when a check afterwards finds nothing left."""
    layout = DatabaseLayout(db)
    if layout.layout_version is None:
        raise click.ClickException(f"{layout.location} is not a structome database: nothing to verify")
    try:
        report = repair(layout) if fix else verify(layout)
    except (DatabaseLockedError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    for damage in report.damage:
        click.echo(f"damaged: {layout.location}/{damage}")
    for line in report.repaired:
        click.echo(f"repaired: {line}")
    summary = f"{report.files_checked} files and {report.members_checked} archive members checked"
    if report.ok:
        click.echo(f"{layout.location}: {summary}, no damage")
        return
    click.echo(f"{layout.location}: {summary}, {len(report.damage)} damaged", err=True)
    if not fix:
        click.echo(f"run `structome verify --db {layout.location} --repair` to quarantine them", err=True)
        sys.exit(1)
    for damage in report.remaining:
        click.echo(f"still damaged: {layout.location}/{damage}")
    if report.remaining:
        sys.exit(1)
    click.echo("repaired; run the same `structome build` again to re-fold the quarantined entries", err=True)
