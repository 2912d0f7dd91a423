"""`structome compact`: merge committed shards' tables into sorted segments (storage.compaction)."""

from __future__ import annotations

import json

import click

from structome.jobs.cli.options import DB_OPTION, POSITIVE
from structome.storage import formats
from structome.storage.compaction import CompactionPolicy, compact
from structome.storage.layout import DatabaseLayout, DatabaseLockedError

_POLICY = CompactionPolicy()


@click.command("compact")
@DB_OPTION
@click.option("--full", is_flag=True, help="Merge everything into one segment (rewrites the whole database).")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=_POLICY.grace_s,
    show_default=True,
    help="Seconds that superseded files stay on disk for readers that listed them before the switch.",
)
@click.option(
    "--fanout",
    type=click.IntRange(min=2),
    default=_POLICY.fanout,
    show_default=True,
    help="Segments of a tier merged at once.",
)
@click.option("--memory-limit", default=_POLICY.memory_limit, show_default=True, help="DuckDB's, while sorting.")
@click.option(
    "--max-merge", type=POSITIVE, help="Leave tier merges of more entries than this for later (default: none)."
)
def compact_command(db, full, grace, fanout, memory_limit, max_merge) -> None:
    """Compact the database: incremental (only new shards and full tiers are rewritten), atomic, safe to kill.

    Builds compact at their end; run this for a database of an older structome, after a build with
    --no-compact, or with --full. A build may run meanwhile; readers (sql, serve) never see a half state.
    """
    layout = DatabaseLayout(db)
    if layout.layout_version is None:
        raise click.ClickException(f"{layout.location} is not a structome database: nothing to compact")
    policy = CompactionPolicy(
        fanout=fanout, full=full, grace_s=grace, memory_limit=memory_limit, max_merge_entries=max_merge
    )
    try:
        if layout.layout_version < formats.LAYOUT:
            with layout.lock():  # an older database is migrated first (its marker says it may hold segments)
                for line in layout.migrate():
                    click.echo(line, err=True)
        with layout.compaction_lock():
            report = compact(layout, policy)
    except DatabaseLockedError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report.to_json()))
