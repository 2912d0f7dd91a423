"""Commands that read a database: `sql`, `get`, `status`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import duckdb

from structome.jobs.cli import output
from structome.jobs.cli.options import DB_OPTION
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import DOWNLOAD_KINDS, AmbiguousEntryError, EntryNotFoundError, read_entry_file


@click.command()
@DB_OPTION
@click.option("--format", "fmt", type=click.Choice(output.SQL_FORMATS), default="table", show_default=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option(
    "--allow-writes", is_flag=True, help="Run any statement (COPY ... TO a file, several statements), not one SELECT."
)
@click.argument("query")
def sql(db, fmt, out, allow_writes, query) -> None:
    """Run a read-only SQL QUERY over the catalog (tables: entries, residues, files, failures, builds).

    One SELECT-type statement, as on the server's /api/sql; the catalog is read without holding its file lock, so a
    long query never stops a build from refreshing it."""
    from structome.jobs.serve.sql_sandbox import SqlError, SqlRefused, check_statement  # not for `get`: ~10 ms

    layout, check = DatabaseLayout(db), None if allow_writes else check_statement
    try:
        if fmt == "parquet":  # the one format that needs Arrow's types (and pyarrow)
            table = catalog.query(layout, query, detached=True, check=check)
        else:
            columns, rows = catalog.query_rows(layout, query, detached=True, check=check)
    except SqlRefused as error:
        raise click.ClickException(f"{error} (`structome sql` is read-only; --allow-writes runs it)") from error
    except (SqlError, duckdb.Error, FileNotFoundError) as error:
        raise click.ClickException(str(error).strip()) from error
    if fmt == "parquet":
        output.write_parquet(table, out)
    else:
        output.write_rows(columns, rows, fmt, out)


@click.command()
@DB_OPTION
@click.option(
    "--format",
    "kind",
    type=click.Choice(DOWNLOAD_KINDS),
    default="cif",
    show_default=True,
    help="pdb: the model in PDB format, converted from the stored mmCIF.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    help="File to write, or a folder to write the AFDB-named file into (default: stdout).",
)
@click.argument("identifier", metavar="ID")
def get(db, kind, out, identifier) -> None:
    """Print or save one entry's file. ID is an entryId (SM-P12345-F1) or an accession (P12345)."""
    try:
        stored = read_entry_file(DatabaseLayout(db), identifier, kind)
    except AmbiguousEntryError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    except (EntryNotFoundError, FileNotFoundError, duckdb.Error) as error:
        raise click.ClickException(str(error)) from error
    if out is None:
        sys.stdout.buffer.write(stored.data)
        return
    target = out / stored.file_name if out.is_dir() else out
    if not target.parent.is_dir():
        raise click.ClickException(f"folder {target.parent} does not exist (-o takes a file or an existing folder)")
    target.write_bytes(stored.data)  # a full disk or a name too long: a one-line message (cli.main)
    click.echo(f"wrote {target} ({len(stored.data):,} bytes)", err=True)


@click.command()
@DB_OPTION
def status(db) -> None:
    """Builds, counts, and failures by reason."""
    layout = DatabaseLayout(db)
    try:
        click.echo(output.status_text(layout))
    except (duckdb.Error, FileNotFoundError) as error:
        raise click.ClickException(str(error).strip()) from error
