"""`structome serve`: the HTTP server over one database (the routes are in structome.jobs.serve.app)."""

from __future__ import annotations

import logging

import click

from structome.jobs.cli.options import DB_OPTION
from structome.jobs.serve.sql_sandbox import DEFAULT_SQL_WORKERS, SqlLimits

logger = logging.getLogger(__name__)

_LIMITS = SqlLimits()


@click.command("serve")
@DB_OPTION
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for every interface)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--sql-workers",
    default=DEFAULT_SQL_WORKERS,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Sandboxed processes answering /api/sql and /export (0 turns both off).",
)
@click.option(
    "--sql-timeout",
    default=_LIMITS.timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a query may run.",
)
@click.option(
    "--sql-row-limit",
    default=_LIMITS.row_limit,
    show_default=True,
    type=click.IntRange(1),
    help="Rows a query may return (/export selects at most this many entries).",
)
@click.option(
    "--sql-memory",
    default=f"{_LIMITS.address_space_bytes >> 30}GiB",
    show_default=True,
    help="Address-space bound of each SQL worker process.",
)
@click.option(
    "--viewer-assets",
    "viewer_assets_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Folder with the pinned pdbe-molstar build, for machines without the npm registry.",
)
@click.option(
    "--reload-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between checks for a change of what the database shows (0: serve what is there at start).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Server processes sharing the port (each holds the index and its own SQL workers).",
)
def serve_command(
    db, host, port, sql_workers, sql_timeout, sql_row_limit, sql_memory, viewer_assets_dir, reload_interval, workers
) -> None:
    """Serve a database over HTTP: AFDB-style /api/prediction and /files, /api/sql, /entry pages, /export."""
    from structome.jobs.serve import launch

    settings = {
        "location": db,
        "sql_workers": sql_workers,
        "viewer_assets": viewer_assets_dir,
        "reload_interval_s": reload_interval,
        "sql_limits": {"timeout_s": sql_timeout, "row_limit": sql_row_limit, "address_space_bytes": _bytes(sql_memory)},
    }
    launch.run(settings, host=host, port=port, workers=workers, announce=lambda text: click.echo(text, err=True))


def _bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    number = text.strip().lower().rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text.strip().lower()[len(number) :]
    if unit not in units or not number:
        raise click.BadParameter(f"{text!r}: give bytes, e.g. 4GiB or 512MiB")
    return int(float(number) * units[unit])
