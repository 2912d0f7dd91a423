"""`structome export`: the entries an SQL query selects, as one tar in AlphaFold DB's bulk layout.

The tar is written as it streams from the database (see storage.export): to stdout with `-o -`, or to a
temporary name beside the output file that is renamed into place only once complete, so a failed export
leaves no file behind.
"""

from __future__ import annotations

import logging
import sys

import click
import duckdb

from structome.jobs.cli.options import DB_OPTION
from structome.jobs.serve.sql_sandbox import SqlError, check_statement
from structome.storage import catalog
from structome.storage.atomic import copy_chunks, write_chunks_atomic
from structome.storage.export import ExportError, UnknownEntriesError, entry_ids_of, export_files, stream_tar
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import FILE_KINDS

logger = logging.getLogger(__name__)


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(kinds) - set(FILE_KINDS))
    if not kinds or unknown:
        raise click.BadParameter(f"give a comma-separated subset of {','.join(FILE_KINDS)}", param_hint="--kinds")
    return kinds


@click.command("export")
@DB_OPTION
@click.option(
    "--sql",
    "query",
    required=True,
    metavar="QUERY",
    help='SQL returning an entryId column, e.g. "SELECT entryId FROM entries WHERE taxId = 83333".',
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The tar file to write, or - for stdout.",
)
@click.option("--kinds", default=",".join(FILE_KINDS), show_default=True, help="Which files of each entry.")
def export_command(db, query, out, kinds) -> None:
    """Write the files of every entry QUERY selects into one tar (AFDB bulk layout, manifest.json first)."""
    layout = DatabaseLayout(db)
    try:
        # a SELECT, as for `structome sql`: COPY ... TO would write files
        entry_ids = entry_ids_of(catalog.query(layout, query, detached=True, check=check_statement))
        if not entry_ids:
            raise click.ClickException("the query returned no rows: nothing to export")
        files = export_files(layout, entry_ids, parse_kinds(kinds))
    except (duckdb.Error, SqlError, FileNotFoundError, ExportError, UnknownEntriesError) as error:
        raise click.ClickException(str(error).strip()) from error
    chunks = stream_tar(layout, files)
    try:
        written = copy_chunks(chunks, sys.stdout.buffer) if out == "-" else write_chunks_atomic(chunks, out)
    except OSError as error:  # a read, a checksum (ArchiveChecksumError) or a write failed
        raise click.ClickException(f"export failed: {error}") from error
    entries = len({f.entry_id for f in files})
    where = "stdout" if out == "-" else out
    click.echo(f"exported {entries:,} entries, {len(files):,} files, {written:,} bytes to {where}", err=True)
