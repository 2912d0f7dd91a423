"""`catalog.duckdb`: views over the database's Parquet files, opened for SQL.

Views use paths relative to the database folder; every connection sets DuckDB's `file_search_path`
to that folder, so the database can be moved or mounted elsewhere. (With the plain `duckdb` CLI, run it
from inside the database folder.) Each table always reads an empty, typed `schema/<table>.parquet`
too, so its columns exist before the first shard lands.
"""

from __future__ import annotations

import logging
import time

import duckdb
import pyarrow as pa

from storage import schema
from storage.layout import DatabaseLayout, write_parquet_atomic

logger = logging.getLogger(__name__)

_RAW_SUFFIX = "_all"  # raw views that the public views filter

# Failures: the newest row per (record, entry, reason), and none for entries that now exist
# (a protein that failed once and succeeded on a re-run is not a failure any more).
_FAILURES_VIEW = f"""
CREATE OR REPLACE VIEW failures AS
SELECT * EXCLUDE (newest) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY sourceFile, recordNumber, recordId, entryId, reason ORDER BY build DESC) AS newest
    FROM failures{_RAW_SUFFIX}
) WHERE newest = 1 AND (entryId = '' OR entryId NOT IN (SELECT entryId FROM entries))
"""


def schema_file(layout: DatabaseLayout, table: str):
    return layout.root / "schema" / f"{table}.parquet"


def refresh_catalog(layout: DatabaseLayout) -> None:
    """(Re)create every view over the Parquet files that exist now."""
    layout.create()
    with _connect_for_writing(layout) as connection:
        for table, table_schema in schema.TABLES.items():
            empty = schema_file(layout, table)
            if not empty.exists():
                write_parquet_atomic(table_schema.empty_table(), empty)
            sources = [str(empty.relative_to(layout.root))] + _matching_globs(layout, table)
            name = table + _RAW_SUFFIX if table == "failures" else table
            listing = ", ".join(f"'{source}'" for source in sources)
            connection.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{listing}], union_by_name = true)"
            )
        connection.execute(_FAILURES_VIEW)


def _matching_globs(layout: DatabaseLayout, table: str) -> list[str]:
    return [pattern for pattern in layout.table_globs(table) if next(layout.root.glob(pattern), None)]


class _connect_for_writing:
    """A read-write connection, closed on exit."""

    def __init__(self, layout: DatabaseLayout):
        self.connection = _open(layout, read_only=False)

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.connection

    def __exit__(self, *exc) -> None:
        self.connection.close()


def connect(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog, resolving the views' relative paths."""
    if not layout.exists():
        raise FileNotFoundError(f"{layout.root} is not a structome database (no catalog.duckdb)")
    return _open(layout, read_only=True)


def _open(layout: DatabaseLayout, *, read_only: bool, attempts: int = 50) -> duckdb.DuckDBPyConnection:
    """Open the catalog, retrying for a few seconds while another process briefly holds its file lock."""
    for attempt in range(attempts):
        try:
            connection = duckdb.connect(str(layout.catalog), read_only=read_only)
            break
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
    connection.execute(f"SET file_search_path = '{_quote(layout.root)}'")
    return connection


def query(layout: DatabaseLayout, sql: str, parameters: list | None = None) -> pa.Table:
    connection = connect(layout)
    try:
        relation = connection.sql(sql, params=parameters) if parameters else connection.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    finally:
        connection.close()


def _quote(path) -> str:
    return str(path).replace("'", "''")
