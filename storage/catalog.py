"""The SQL catalog: DuckDB views over the database's Parquet files.

A local database keeps them in `catalog.duckdb`, with paths relative to the database folder; every
connection sets DuckDB's `file_search_path` to that folder, so the database can be moved or mounted
elsewhere. (With the plain `duckdb` CLI, run it from inside the database folder.) Globs make new shards
visible to queries as soon as they commit.

An object-store database has no catalog file (DuckDB files cannot live there): each connection is an
in-memory DuckDB that reads the store through its pyarrow file system, with views over the committed
shards listed at connect time.

Each table always reads an empty, typed `schema/<table>.parquet` too, so its columns exist before the
first shard lands.
"""

from __future__ import annotations

import logging
import time

import duckdb
import pyarrow as pa

from structome.storage import schema
from structome.storage.layout import DatabaseLayout

logger = logging.getLogger(__name__)

_RAW_SUFFIX = "_all"  # raw views that the public views filter
_PROTOCOL = "structome"  # DuckDB reads object-store databases as structome://<path in the store>

# Failures: the newest row per (record, entry, reason), and none for entries that now exist
# (a protein that failed once and succeeded on a re-run is not a failure any more).
_FAILURES_VIEW = f"""
CREATE OR REPLACE {{temporary}} VIEW failures AS
SELECT * EXCLUDE (newest) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY sourceFile, recordNumber, recordId, entryId, reason ORDER BY build DESC) AS newest
    FROM failures{_RAW_SUFFIX}
) WHERE newest = 1 AND (entryId = '' OR entryId NOT IN (SELECT entryId FROM entries))
"""


def refresh_catalog(layout: DatabaseLayout) -> None:
    """Write the typed empty table files; for a local database, (re)create the views in catalog.duckdb."""
    layout.create()
    for table, table_schema in schema.TABLES.items():
        if not layout.exists(layout.schema_file(table)):
            layout.write_parquet_atomic(table_schema.empty_table(), layout.schema_file(table))
    if layout.is_local:
        connection = _open(layout, read_only=False)
        try:
            _create_views(connection, layout)
        finally:
            connection.close()


def _create_views(connection: duckdb.DuckDBPyConnection, layout: DatabaseLayout, temporary: str = "") -> None:
    for table in schema.TABLES:
        listing = ", ".join(f"'{_quote(source)}'" for source in _sources(layout, table))
        name = table + _RAW_SUFFIX if table == "failures" else table
        connection.execute(
            f"CREATE OR REPLACE {temporary} VIEW {name} AS "
            f"SELECT * FROM read_parquet([{listing}], union_by_name = true)"
        )
    connection.execute(_FAILURES_VIEW.format(temporary=temporary))


def _sources(layout: DatabaseLayout, table: str) -> list[str]:
    """The schema file and the table's data: globs that match something (local), committed files (object store)."""
    if layout.is_local:
        globs = [g for g in layout.table_globs(table) if next(layout.root.glob(g), None)]
        return [layout.schema_file(table), *globs]
    files = [layout.schema_file(table), *layout.table_files(table)]
    return [f"{_PROTOCOL}://{layout.path(f)}" for f in files]


def connect(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog."""
    if not layout.exists():
        raise FileNotFoundError(f"{layout.location} is not a structome database (no catalog)")
    if layout.is_local:
        return _open(layout, read_only=True)
    return connect_detached(layout)


def connect_detached(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views, holding no lock on catalog.duckdb: for long-lived
    readers (the server's SQL workers), which must never stop a build from refreshing the catalog."""
    if not layout.exists():
        raise FileNotFoundError(f"{layout.location} is not a structome database (no catalog)")
    connection = duckdb.connect()
    if layout.is_local:
        connection.execute(f"SET file_search_path = '{_quote(layout.root)}'")
    else:
        connection.register_filesystem(_duckdb_file_system(layout.fs))
    _create_views(connection, layout, temporary="TEMPORARY")
    return connection


def _open(layout: DatabaseLayout, *, read_only: bool, attempts: int = 50) -> duckdb.DuckDBPyConnection:
    """Open catalog.duckdb, retrying for a few seconds while another process briefly holds its file lock."""
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


def _duckdb_file_system(fs):
    """A pyarrow file system as an fsspec one, which DuckDB can read through (no httpfs extension needed)."""
    from fsspec.implementations.arrow import ArrowFSWrapper  # object stores only: fsspec is slow to import

    class DuckDBFileSystem(ArrowFSWrapper):
        protocol = _PROTOCOL

        @classmethod
        def _strip_protocol(cls, path):
            if isinstance(path, list):
                return [cls._strip_protocol(p) for p in path]
            return path.removeprefix(f"{_PROTOCOL}://").rstrip("/")

    return DuckDBFileSystem(fs)


def query(layout: DatabaseLayout, sql: str, parameters: list | None = None) -> pa.Table:
    connection = connect(layout)
    try:
        relation = connection.sql(sql, params=parameters) if parameters else connection.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    finally:
        connection.close()


def _quote(path) -> str:
    return str(path).replace("'", "''")
