"""The SQL catalog: DuckDB views over the database's Parquet files.

A local database keeps them in `catalog.duckdb`, with paths relative to the database folder; every
connection sets DuckDB's `file_search_path` to that folder, so the database can be moved or mounted
elsewhere. (With the plain `duckdb` CLI, run it from inside the database folder.) The views list the visible
files explicitly (storage.layout.DatabaseLayout.table_files: the current compacted segments, then the shards
they do not cover), never a glob: superseded files stay on disk for a while after compaction. Whoever changes
what is visible rewrites the views: a build now and then while it commits shards and at its end, compaction
after each switch; all views change in one transaction.

An object-store database has no catalog file (DuckDB files cannot live there): each connection is an
in-memory DuckDB that reads the store through its pyarrow file system, with views over the committed
shards listed at connect time.

Each table always reads an empty, typed `schema/<table>.parquet` too, so its columns exist before the
first shard lands.

Reading a local catalog (connect, connect_snapshot, query_rows) imports no pyarrow (~165 ms with numpy): that is
most of what `structome get` and `structome sql "SELECT 1"` would otherwise spend.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from structome.storage import schema
from structome.storage.atomic import replace_atomically
from structome.storage.integrity import Damage
from structome.storage.layout import DatabaseLayout
from structome.storage.lru import MISS, LruCache
from structome.storage.segments import SEGMENTS_FOLDER, SegmentFile

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

_RAW_SUFFIX = "_all"  # raw views that the public views filter
TABLE_FILES = "table_files"  # the catalog's table of visible files and their parts' key ranges (key_files)
LEFT_OUT = "damaged_files"  # the catalog's table of damaged files whose shards or segments its views leave out
_PROTOCOL = "structome"
_WRITTEN_ONCE = ("shards", "tables", "schema")  # folders whose files are never rewritten under the same name
_OPEN_FILES = 1024  # files written once kept open by an object-store connection
_READ_CACHE_BYTES = 64 << 20  # an object-store connection's reads of files written once, kept for its later queries
_SOURCE = "catalog_file"  # what connect_snapshot attaches catalog.duckdb as, for the moment it copies it
_REFRESHING = threading.RLock()  # a refresh may rebuild an unreadable catalog under it

# Failures: the newest row per (input, record, entry, reason), and none for an entry written by the same or a later
# build (a protein that failed once and succeeded on a re-run is not a failure any more). An entry written before
# the failure does not hide it: a record refused because the database holds its entry id with another prediction
# (conflicts_with_database) carries exactly that id, and the ledger shows every refused record.
_FAILURES_VIEW = f"""
CREATE OR REPLACE {{temporary}} VIEW failures AS
SELECT * EXCLUDE (newest) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY sourceFile, recordNumber, recordId, entryId, reason ORDER BY build DESC) AS newest
    FROM failures{_RAW_SUFFIX}
) AS failure WHERE newest = 1 AND (entryId = '' OR NOT EXISTS (
    SELECT 1 FROM entries WHERE entries.entryId = failure.entryId AND entries.build >= failure.build))
"""
_BY_NAME_ONLY = ("failures",)  # tables whose every file is matched by column name: their schema grew (a small table)


def refresh_catalog(layout: DatabaseLayout) -> None:
    """Write the typed empty table files; for a local database, (re)create the views in catalog.duckdb."""
    layout.create()
    _ensure_schema_files(layout)
    if layout.is_local:
        with _REFRESHING:  # other processes wait on the file lock; threads of this one (which share it) here
            connection = _open(layout, read_only=False)
            try:
                connection.execute("BEGIN TRANSACTION")
                _create_views(connection, layout)
                connection.execute("COMMIT")
            finally:
                connection.close()


def _ensure_schema_files(layout: DatabaseLayout) -> None:
    """The typed empty table files every view reads: written when missing, rewritten when damaged (derived data)."""
    import pyarrow.parquet as pq

    files = {layout.schema_file(table): table for table in schema.TABLE_NAMES}
    for damage in layout.damaged_files(list(files)):
        if damage.problem != "missing":
            logger.warning("%s is damaged (%s): rewriting it (an empty typed table)", damage.file, damage.problem)
        try:
            layout.write_parquet_atomic(schema.TABLES[files[damage.file]].empty_table(), damage.file)
        except OSError as error:
            raise OSError(
                f"{layout.location}/{damage.file} is {damage.problem} and cannot be rewritten: {error}"
            ) from error

    def written_names(relative: str) -> list[str]:
        with layout.fs.open_input_file(layout.path(relative)) as handle:  # not pq.read_schema: it imports pandas
            return pq.ParquetFile(handle).schema_arrow.names

    for (relative, table), names in zip(files.items(), layout.map_files(written_names, list(files)), strict=True):
        table_schema = schema.TABLES[table]  # a table whose schema grew (failures' uniprotAccession)
        if names != table_schema.names:  # names, not types: Parquet keeps timestamp[s] as [ms]
            layout.write_parquet_atomic(table_schema.empty_table(), relative)


def _create_views(
    connection: duckdb.DuckDBPyConnection,
    layout: DatabaseLayout,
    temporary: str = "",
    visible: dict[str, list[SegmentFile]] | None = None,
) -> None:
    if visible is None:
        visible, damage = layout.checked_parts(schema.TABLE_NAMES)
        if not temporary:  # catalog.duckdb says what its views leave out, for every reader that opens it
            _record_left_out(connection, damage)
    for table in schema.TABLE_NAMES:
        name = table + _RAW_SUFFIX if table == "failures" else table
        connection.execute(f"CREATE OR REPLACE {temporary} VIEW {name} AS {_table_sql(layout, table, visible[table])}")
    connection.execute(_FAILURES_VIEW.format(temporary=temporary))
    connection.execute(
        f"CREATE OR REPLACE {temporary} TABLE {TABLE_FILES} "
        "(tableName VARCHAR, file VARCHAR, keyColumn VARCHAR, low VARCHAR, high VARCHAR)"
    )
    _insert(connection, TABLE_FILES, _table_files_rows(layout, visible))


def _insert(connection: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """Rows into a table, 500 a statement (parameters, not executemany: its first call imports pandas)."""
    for start in range(0, len(rows), 500):  # nothing for no rows
        chunk = rows[start : start + 500]
        values = ", ".join([f"({', '.join('?' * len(chunk[0]))})"] * len(chunk))
        connection.execute(f"INSERT INTO {table} VALUES {values}", [v for row in chunk for v in row])


def _record_left_out(connection: duckdb.DuckDBPyConnection, damage: list[Damage]) -> None:
    connection.execute(f"CREATE OR REPLACE TABLE {LEFT_OUT} (file VARCHAR, problem VARCHAR, unit VARCHAR)")
    _insert(connection, LEFT_OUT, [(item.file, item.problem, item.unit) for item in damage])


def _table_sql(layout: DatabaseLayout, table: str, parts: list[SegmentFile]) -> str:
    """The SELECT of one view. Segment parts (under tables/) are written by compaction with exactly the schema's
    columns, like the schema file, and are read as one schema; shards' and loose files (an older build's may
    lack a newer column) are matched by name. union_by_name over every file cost 3.7x on a point lookup at 10M
    entries (each file's schema bound per query)."""
    in_segment = [p.path.startswith(f"{SEGMENTS_FOLDER}/") and table not in _BY_NAME_ONLY for p in parts]
    same = [layout.schema_file(table), *(p.path for p, segment in zip(parts, in_segment, strict=True) if segment)]
    by_name = [p.path for p, segment in zip(parts, in_segment, strict=True) if not segment]
    select = f"SELECT * FROM read_parquet([{sql_listing(layout, same)}])"
    if by_name:
        select += (
            f" UNION ALL BY NAME SELECT * FROM read_parquet([{sql_listing(layout, by_name)}], union_by_name = true)"
        )
    return select


def sql_listing(layout: DatabaseLayout, files: list[str]) -> str:
    """Database files (relative paths) as the items of a read_parquet([...]) list."""
    return ", ".join(f"'{quote(sql_path(layout, f))}'" for f in files)


def _table_files_rows(layout: DatabaseLayout, visible: dict[str, list[SegmentFile]]) -> list[tuple]:
    """One row per (visible file, key column with a known range); a file without ranges: one row of nulls."""
    rows: list[tuple[str, str, str | None, str | None, str | None]] = []
    for table, parts in visible.items():
        for part in parts:
            file = sql_path(layout, part.path)
            rows += [(table, file, column, low, high) for column, (low, high) in part.ranges.items()]
            if not part.ranges:
                rows.append((table, file, None, None, None))
    return rows


def key_files(connection: duckdb.DuckDBPyConnection, table: str, column: str, value: str) -> list[str]:
    """The visible files of `table` that may hold rows whose `column` equals `value` (by their parts' key ranges):
    what a point lookup must read, as SQL paths, in listing order."""
    found = connection.execute(
        f"SELECT DISTINCT file FROM {TABLE_FILES} WHERE tableName = ? AND file NOT IN "
        f"(SELECT file FROM {TABLE_FILES} WHERE tableName = ? AND keyColumn = ? AND NOT (? BETWEEN low AND high))",
        [table, table, column, value],
    ).fetchall()
    return [file for (file,) in found]


def sql_path(layout: DatabaseLayout, relative: str) -> str:
    """How SQL on a `connect_files` connection names a database file: relative to the folder (local), or
    structome://<path in the store> (object stores)."""
    return relative if layout.is_local else f"{_PROTOCOL}://{layout.path(relative)}"


def connect(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the catalog."""
    if not layout.exists():
        raise FileNotFoundError(f"{layout.location} is not a structome database (no catalog)")
    if layout.is_local:
        connection = _open(layout, read_only=True)
        if not _lists_damaged_files(connection, layout):
            return connection
        connection.close()  # damaged since the views were written: list the healthy files now
    return connect_detached(layout)


def _lists_damaged_files(connection: duckdb.DuckDBPyConnection, layout: DatabaseLayout) -> bool:
    """Whether a file the catalog's views read is damaged now (the quick check of storage.integrity); warns about
    what the views already leave out."""
    try:
        left_out = connection.execute(f"SELECT file, problem, unit FROM {LEFT_OUT}").fetchall()
        listed = [file for (file,) in connection.execute(f"SELECT DISTINCT file FROM {TABLE_FILES}").fetchall()]
    except duckdb.CatalogException:  # a catalog written by an older structome: nothing recorded to check
        return False
    if left_out:
        named = "; ".join(f"{unit} ({file}: {problem})" for file, problem, unit in left_out[:5])
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        logger.warning(
            "damaged, left out of every query: %s%s; `structome verify --db %s --repair` quarantines them",
            named,
            more,
            layout.location,
        )
    damaged = layout.damaged_files([*listed, *(layout.schema_file(table) for table in schema.TABLE_NAMES)])
    if damaged:
        logger.info("%s lists files damaged since it was written: reading the healthy files directly", layout.catalog)
    return bool(damaged)


def connect_snapshot(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a copy of catalog.duckdb's views and tables: it attaches the file read-only,
    copies them inside DuckDB and detaches it (~5 ms at any size), so a long query on it never holds the file lock
    a build's refresh needs, and nothing is listed (`connect_detached` lists every shard: 0.85 s at 10M entries).
    Object stores: `connect_detached`."""
    if not layout.is_local or not layout.exists():
        return connect_detached(layout)
    connection = connect_files(layout)
    try:
        _retrying(layout, lambda: connection.execute(f"ATTACH '{quote(layout.catalog)}' AS {_SOURCE} (READ_ONLY)"))
        try:
            views = connection.execute(
                f"SELECT view_name, sql FROM duckdb_views() WHERE database_name = '{_SOURCE}' AND NOT internal "
                "AND schema_name = 'main'"
            ).fetchall()
            tables = connection.execute(
                f"SELECT table_name FROM duckdb_tables() WHERE database_name = '{_SOURCE}' AND schema_name = 'main'"
            ).fetchall()
            for (name,) in tables:
                connection.execute(f"CREATE TABLE memory.main.{name} AS FROM {_SOURCE}.main.{name}")
        finally:
            connection.execute(f"DETACH {_SOURCE}")
        if _lists_damaged_files(connection, layout):
            connection.close()
            return connect_detached(layout)
        for _, sql in sorted(views, key=lambda view: view[0] == "failures"):  # failures reads the others
            connection.execute(sql)
    except BaseException:
        connection.close()
        raise
    return connection


def connect_detached(
    layout: DatabaseLayout, visible: dict[str, list[SegmentFile]] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views, holding no lock on catalog.duckdb: for long-lived
    readers (the server's SQL workers), which must never stop a build from refreshing the catalog. `visible`:
    the files to list (DatabaseLayout.visible_parts of every table), when the caller has just listed them."""
    if not layout.exists():
        raise FileNotFoundError(f"{layout.location} is not a structome database (no catalog)")
    _ensure_schema_files(layout)
    connection = connect_files(layout)
    _create_views(connection, layout, temporary="TEMPORARY", visible=visible)
    return connection


def connect_files(layout: DatabaseLayout) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that reads the database's files by their `sql_path` (no views)."""
    connection = duckdb.connect()
    _configure(connection, layout)
    return connection


def _configure(connection: duckdb.DuckDBPyConnection, layout: DatabaseLayout) -> None:
    """Where relative paths start (or the store's file system), Parquet footers parsed once per process (files
    are never changed once written: compaction and builds write new names), and no progress bar."""
    connection.execute("SET parquet_metadata_cache = true")
    connection.execute("SET enable_progress_bar = false")  # it writes to stdout, into a command's output
    if layout.is_local:
        connection.execute(f"SET file_search_path = '{quote(layout.root)}'")
    else:
        connection.register_filesystem(_duckdb_file_system(layout))


def _open(layout: DatabaseLayout, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection to catalog.duckdb (see _retrying)."""
    connection = _retrying(layout, lambda: duckdb.connect(str(layout.catalog), read_only=read_only))
    _configure(connection, layout)
    return connection


Opened = TypeVar("Opened")


def _retrying(layout: DatabaseLayout, open_catalog: Callable[[], Opened], attempts: int = 50) -> Opened:
    """Open (or attach) catalog.duckdb, retrying for a few seconds while another process briefly holds its file
    lock; an unreadable one (garbage, truncated: nobody holds its lock) is rebuilt, since it holds only derived
    views."""
    rebuilt, waited = False, 0
    while True:
        try:
            return open_catalog()
        except duckdb.IOException as error:
            if not rebuilt and not _locked_by_another_process(layout.catalog):
                _rebuild(layout, error)
                rebuilt = True
                continue
            waited += 1
            if waited == attempts:
                raise
            time.sleep(0.1)


def _locked_by_another_process(path: Path) -> bool:
    """Whether another process holds a DuckDB lock (an fcntl lock) on the file: a writer's exclusive one, or a
    reader's shared one (read_only connections hold it shared, which a shared test lock would not see). Without
    write permission only a writer's lock can be seen."""
    try:
        descriptor, kind = os.open(path, os.O_RDWR), fcntl.LOCK_EX
    except PermissionError:
        descriptor, kind = os.open(path, os.O_RDONLY), fcntl.LOCK_SH
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(descriptor, kind | fcntl.LOCK_NB, 0, 0)
        fcntl.lockf(descriptor, fcntl.LOCK_UN, 0, 0)
        return False
    except OSError:  # EAGAIN/EACCES: a conflicting lock
        return True
    finally:
        os.close(descriptor)


def _rebuild(layout: DatabaseLayout, error: duckdb.Error) -> None:
    """Write a new catalog.duckdb (views over the visible files) beside the unreadable one, then replace it."""
    logger.warning("%s is unreadable (%s): rebuilding it (it holds only views)", layout.catalog, error)

    def write(temporary: Path) -> None:
        connection = duckdb.connect(str(temporary))
        try:
            _configure(connection, layout)
            connection.execute("BEGIN TRANSACTION")
            _create_views(connection, layout)
            connection.execute("COMMIT")
        finally:
            connection.close()

    _ensure_schema_files(layout)
    with _REFRESHING:
        layout.catalog.with_name(layout.catalog.name + ".wal").unlink(missing_ok=True)  # the old file's log, if any
        replace_atomically(layout.catalog, write)


def _duckdb_file_system(layout: DatabaseLayout):
    """The layout's pyarrow file system as an fsspec one, which DuckDB can read through (no httpfs extension
    needed). DuckDB asks for a file's existence, size and modification time three times per query besides
    opening it, each a request to the store: a file's facts are kept for the connection's life where its name
    is never reused (shard attempts, segments and schema files are written once, under new names; build rows
    are not), and so are the Parquet footers (DuckDB's metadata cache, checked by modification time)."""
    from fsspec.implementations.arrow import ArrowFSWrapper  # object stores only: fsspec is slow

    immutable = tuple(f"{layout.base}/{folder}/" for folder in _WRITTEN_ONCE)

    class DuckDBFileSystem(ArrowFSWrapper):
        protocol = _PROTOCOL

        def __init__(self, fs, **kwargs):
            super().__init__(fs, **kwargs)
            self.known: dict[str, dict] = {}  # path -> fsspec info of a file written once

        @classmethod
        def _strip_protocol(cls, path):
            if isinstance(path, list):
                return [cls._strip_protocol(p) for p in path]
            return path.removeprefix(f"{_PROTOCOL}://").rstrip("/")

        def info(self, path, **kwargs):
            path = self._strip_protocol(path)
            if (known := self.known.get(path)) is not None:
                return known
            found = super().info(path, **kwargs)
            if found["type"] == "file" and path.startswith(immutable):
                self.known[path] = found
            return found

        def modified(self, path):  # what DuckDB's file cache checks on every open: one request less
            return self.info(path)["mtime"]

        def _open(self, path, mode="rb", *args, **kwargs):
            if mode != "rb":
                return super()._open(path, mode, *args, **kwargs)
            if not path.startswith(immutable):
                return PositionedReads(self.fs.open_input_file(path))
            # Its bytes never change: the opened file (an open is a request) and its reads are kept.
            opened = self.opened.get(path)
            if opened is MISS:
                opened = self.fs.open_input_file(path)
                self.opened.put(path, opened)
            return PositionedReads(opened, (self.reads, path))

    file_system = DuckDBFileSystem(layout.fs)
    file_system.reads = LruCache(_READ_CACHE_BYTES, len)
    file_system.opened = LruCache(_OPEN_FILES, lambda _: 1)  # an evicted file closes once no reader holds it
    return file_system


class PositionedReads:
    """A read-only file whose position is kept per thread, each read one positioned read (`read_at`).

    DuckDB reads one handle from several threads (a seek, then a read, each a Python call): on a plain file
    object another thread's seek lands between them, or during a read that released the GIL, and a read returns
    bytes of another offset (seen as "ZSTD Decompression failure" on object-store databases)."""

    def __init__(self, file: pa.NativeFile, cache: tuple[LruCache, str] | None = None):
        self._file = file
        self._size = file.size()
        self._positions = threading.local()
        self._cache = cache  # (reads kept by (name, offset, size), this file's name): a file written once

    def _position(self) -> int:
        return getattr(self._positions, "at", 0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position(), os.SEEK_END: self._size}[whence]
        self._positions.at = base + offset
        return self._positions.at

    def tell(self) -> int:
        return self._position()

    def read(self, size: int = -1) -> bytes:
        at = self._position()
        size = self._size - at if size is None or size < 0 else min(size, max(self._size - at, 0))
        data = self._read_at(size, at) if size > 0 else b""
        self._positions.at = at + len(data)
        return data

    def _read_at(self, size: int, at: int) -> bytes:
        if self._cache is None:
            return self._file.read_at(size, at)
        reads, name = self._cache
        data = reads.get((name, at, size))
        if data is MISS:
            data = self._file.read_at(size, at)
            reads.put((name, at, size), data)
        return data

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._file.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if self._cache is None:  # a kept file stays open for the connection's other readers
            self._file.close()

    def __enter__(self) -> PositionedReads:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A check of a statement before it runs, given the connection that will run it (it may parse with it).
StatementCheck = Callable[[str, duckdb.DuckDBPyConnection], None]


def query(
    layout: DatabaseLayout,
    sql: str,
    parameters: list | None = None,
    *,
    detached: bool = False,
    check: StatementCheck | None = None,
) -> pa.Table:
    """The result of `sql` as a table; `detached`: through `connect_snapshot` (no file lock held while it runs).
    `check(sql, connection)` runs first, on the connection that runs `sql` (the CLI's read-only check parses with
    it: DuckDB's default connection would start another database instance, ~15-35 ms)."""
    import pyarrow as pa

    with _result(layout, sql, parameters, detached, check) as relation:
        return relation.to_arrow_table() if relation is not None else pa.table({})


def query_rows(
    layout: DatabaseLayout,
    sql: str,
    parameters: list | None = None,
    *,
    detached: bool = False,
    check: StatementCheck | None = None,
) -> tuple[list[str], list[tuple]]:
    """`query` as column names and rows of Python values, without pyarrow (what the CLI prints)."""
    with _result(layout, sql, parameters, detached, check) as relation:
        return (list(relation.columns), relation.fetchall()) if relation is not None else ([], [])


@contextmanager
def _result(
    layout: DatabaseLayout, sql: str, parameters: list | None, detached: bool, check: StatementCheck | None
) -> Iterator[duckdb.DuckDBPyRelation | None]:
    """The relation of `sql` (None for a statement without a result) on a connection open while it is used."""
    connection = connect_snapshot(layout) if detached else connect(layout)
    try:
        if check is not None:
            check(sql, connection)
        yield connection.sql(sql, params=parameters) if parameters else connection.sql(sql)
    finally:
        connection.close()


def quote(path) -> str:
    """A path or value inside a single-quoted SQL string."""
    return str(path).replace("'", "''")
