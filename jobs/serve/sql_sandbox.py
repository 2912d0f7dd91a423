"""A locked-down, read-only SQL runner for `POST /api/sql`, where hostile clients query the catalog.

`check_statement` admits one SELECT-typed statement (`FROM t`, VALUES, WITH, DESCRIBE, SHOW, SUMMARIZE included;
PIVOT, EXPLAIN, COPY, SET, ... refused): a locked DuckDB still lets `COPY ... TO` write in its allowed folder.
`structome sql` applies the same rule. What the endpoint exposes is the catalog's tables and nothing of the
machine: `check_catalog_query` walks the statement's syntax tree and admits reads of those tables (and of the
query's own CTEs), pure table functions (range, unnest, ...) and no function that shows settings (the
database's absolute path is in several); file-reading table functions and replacement scans (`FROM 'x.parquet'`)
are refused. Beneath that rule, DuckDB itself can open only the views' files (`allowed_paths`, external access
off), so no other file of the database folder (catalog.duckdb, archives, manifests) is readable even by a query
the rule missed. Queries run in spawned worker processes (a forked child of a process holding the DuckDB file
fails) that chdir into the database folder (DuckDB checks relative paths, the views' too, against the working
directory), build the catalog's views in memory (holding no lock on catalog.duckdb, so builds can refresh it
while the server runs), disable spilling and lock the configuration, under an address-space limit (DuckDB's
memory_limit misses strings such as `repeat('x', 3e9)`). Error messages name the database folder `<database>`. A worker interrupts its
query at the timeout; the parent replaces a worker that dies or stays silent past a grace period. Replies are
JSON (a subverted worker cannot run code in the server through pickle), capped in rows and bytes: dates and times
ISO strings, Decimal float, NaN/inf None, bytes base64, UUIDs and intervals strings, map keys strings.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import math
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
from dataclasses import dataclass

import duckdb

from structome.storage import catalog, schema
from structome.storage.layout import DatabaseLayout
from structome.storage.segments import SegmentFile

logger = logging.getLogger(__name__)

DEFAULT_SQL_WORKERS = 2  # sandboxed processes answering /api/sql and /export

_GRACE_S = 2.0  # how long past the timeout a worker may take to answer before it is killed
_START_TIMEOUT_S = 60.0  # a worker's start-up (imports, opening the catalog)
_PARSER_LOCK = threading.Lock()

CATALOG_TABLES = schema.TABLE_NAMES  # what the endpoint reads (the failures view, not its raw rows)
PURE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "repeat", "json_each", "json_tree"})
SETTING_FUNCTIONS = frozenset({"current_setting", "write_log"})  # show (or write) the server's own state
_SHOW_TABLES = frozenset({'"tables"', "__show_tables_expanded"})  # SHOW TABLES, SHOW ALL TABLES / DESCRIBE
_QUALIFIERS = frozenset({"", "temp", "main"})  # where the worker's views live
DATABASE_FOLDER = "<database>"  # the database folder's absolute path, as error messages show it


class SqlError(Exception):
    """A failed query; the message is safe to show a client."""

    kind = "error"  # the name a worker sends


class SqlRefused(SqlError):
    """Not a single SELECT, or a forbidden file access (HTTP 400)."""

    kind = "refused"


class SqlTimeout(SqlError):
    """The query ran past the timeout, or every worker stayed busy that long (HTTP 504)."""

    kind = "timeout"


class SqlResourceError(SqlError):
    """The query ran out of memory, its result was too large, or its worker died (HTTP 413/503)."""

    kind = "resource"


_ERRORS = {error.kind: error for error in (SqlError, SqlRefused, SqlTimeout, SqlResourceError)}


@dataclass(frozen=True)
class SqlLimits:
    timeout_s: float = 10.0
    row_limit: int = 10_000
    address_space_bytes: int = 4 << 30  # RLIMIT_AS of each worker process
    duckdb_memory: str = "1GB"
    threads: int = 1
    result_bytes: int = 64 << 20  # the largest result (as JSON) a worker may send back

    def __post_init__(self):
        if self.timeout_s <= 0 or self.row_limit < 1 or self.result_bytes < 1 or self.threads < 1:
            raise ValueError(f"invalid SQL limits: {self}")


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    types: list[str]  # DuckDB type names
    rows: list[list]  # JSON-safe values (see the module docstring)
    truncated: bool  # more than row_limit rows matched; `rows` holds the first row_limit
    elapsed_s: float  # wall time of `run`, queueing included


def check_statement(sql: str, parser: duckdb.DuckDBPyConnection | None = None) -> None:
    """Raise SqlRefused unless `sql` is exactly one SELECT-typed statement (SqlError if it does not parse).

    The parser is DuckDB's default connection (not thread-safe: hence the lock) unless given; a worker passes
    its own, as a second database instance costs memory.
    """
    try:
        if parser is not None:
            statements = parser.extract_statements(sql)
        else:
            with _PARSER_LOCK:
                statements = duckdb.extract_statements(sql)
        kinds = [statement.type for statement in statements]
    except duckdb.Error as error:
        raise SqlError(str(error)) from None
    except ValueError:  # a statement type the Python client does not know, such as UPDATE EXTENSIONS
        raise SqlRefused("only SELECT queries are allowed") from None
    if len(kinds) != 1:
        raise SqlRefused(f"expected exactly one statement, got {len(kinds)}")
    kind = kinds[0]
    if kind != duckdb.StatementType.SELECT:
        raise SqlRefused(f"only SELECT queries are allowed, not {kind.name}")


def check_catalog_query(sql: str, parser: duckdb.DuckDBPyConnection) -> None:
    """Raise SqlRefused unless the SELECT `sql` reads only CATALOG_TABLES (and CTEs of its own), calls only pure
    table functions and no SETTING_FUNCTIONS. Works on DuckDB's own syntax tree (json_serialize_sql), so that
    quoting, comments, subqueries and CTE scopes are read as DuckDB reads them."""
    ((serialized,),) = parser.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()
    tree = json.loads(serialized)
    if tree.get("error"):
        raise SqlRefused(f"this query form is not supported here: {tree.get('error_message')}")
    try:
        for statement in tree["statements"]:
            _check_node(statement["node"], frozenset())
    except RecursionError:
        raise SqlRefused("the query is nested too deeply") from None


def _check_node(node, ctes: frozenset[str]) -> None:
    """Check one syntax-tree node and its children; `ctes` are the CTE names visible at this node."""
    if isinstance(node, list):
        for item in node:
            _check_node(item, ctes)
        return
    if not isinstance(node, dict):
        return
    for cte in (node.get("cte_map") or {}).get("map") or []:  # each CTE sees itself and those before it
        ctes = ctes | {cte["key"].lower()}
        _check_node(cte["value"], ctes)
    kind = node.get("type")
    if kind == "BASE_TABLE":
        _check_table(node, ctes)
    elif kind == "TABLE_FUNCTION":
        name = str((node.get("function") or {}).get("function_name", "")).lower()
        if name not in PURE_TABLE_FUNCTIONS:
            raise SqlRefused(
                f"table function {name}() is not available here: read the database through its tables "
                f"({', '.join(CATALOG_TABLES)}); {', '.join(sorted(PURE_TABLE_FUNCTIONS))} work"
            )
    elif kind == "SHOW_REF" and node.get("query") is None and node.get("table_name") not in _SHOW_TABLES:
        raise SqlRefused("only SHOW TABLES, DESCRIBE and SUMMARIZE of the tables are available here")
    if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in SETTING_FUNCTIONS:
        raise SqlRefused(f"{node['function_name']}() is not available here")
    for key, value in node.items():
        if key != "cte_map":
            _check_node(value, ctes)


def _check_table(node: dict, ctes: frozenset[str]) -> None:
    name = str(node.get("table_name", "")).lower()
    qualified = node.get("schema_name") or node.get("catalog_name")
    if not qualified and name in ctes:
        return
    if {str(node.get("schema_name", "")).lower(), str(node.get("catalog_name", "")).lower()} <= _QUALIFIERS:
        if name in CATALOG_TABLES:
            return
    raise SqlRefused(f"{node.get('table_name')!r} is not a table here: queries read {', '.join(CATALOG_TABLES)}")


def json_safe(value):
    """A DuckDB Python value as something `json.dumps(..., allow_nan=False)` accepts."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (float, decimal.Decimal)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(json_safe(k)): json_safe(v) for k, v in value.items()}
    return str(value)  # UUID, timedelta


# --- the worker process ---------------------------------------------------------------------------------------


def open_locked_catalog(root: str, limits: SqlLimits) -> duckdb.DuckDBPyConnection:
    """A worker's connection (run in the database folder): the catalog's views in memory (no lock on
    catalog.duckdb: builds go on), only the views' files readable, the configuration locked."""
    layout = DatabaseLayout(root)
    visible = layout.visible_parts(schema.TABLE_NAMES)
    connection = catalog.connect_detached(layout, visible)
    _lock_down(connection, _view_files(layout, visible), limits)
    return connection


def _view_files(layout: DatabaseLayout, visible: dict[str, list[SegmentFile]]) -> list[str]:
    """Every file the catalog's views read (storage.catalog lists them the same way: schema file, then parts)."""
    return [layout.schema_file(table) for table in visible] + [
        part.path for parts in visible.values() for part in parts
    ]


def _lock_down(connection: duckdb.DuckDBPyConnection, files: list[str], limits: SqlLimits) -> None:
    for setting, value in [
        ("temp_directory", ""),
        ("allowed_paths", files),
        ("enable_external_access", False),
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("memory_limit", limits.duckdb_memory),
        ("threads", limits.threads),
        ("lock_configuration", True),
    ]:
        connection.execute(f"SET {setting} = $1", [value])


def _answer(connection: duckdb.DuckDBPyConnection, sql: str, limits: SqlLimits) -> dict:
    check_statement(sql, connection)
    check_catalog_query(sql, connection)
    timer = threading.Timer(limits.timeout_s, connection.interrupt)
    timer.start()
    try:
        relation = connection.sql(sql).limit(limits.row_limit + 1)
        rows = relation.fetchall()
    finally:
        timer.cancel()
    return {
        "columns": relation.columns,
        "types": [str(t) for t in relation.types],
        "rows": [json_safe(list(row)) for row in rows[: limits.row_limit]],
        "truncated": len(rows) > limits.row_limit,
    }


def _reply(connection: duckdb.DuckDBPyConnection, sql: str, limits: SqlLimits) -> bytes:
    """The answer to one query as JSON: the result, or {"error": kind, "message": text}."""
    try:
        message = _answer(connection, sql, limits)
    except SqlError as error:
        message = {"error": error.kind, "message": str(error)}
    except duckdb.InterruptException:
        message = {"error": "timeout", "message": f"the query ran past the {limits.timeout_s:g} s limit"}
    except (duckdb.OutOfMemoryException, MemoryError):
        message = {"error": "resource", "message": "the query ran out of memory"}
    except duckdb.PermissionException as error:
        message = {"error": "refused", "message": str(error)}
    except duckdb.Error as error:
        message = {"error": "error", "message": str(error)}
    try:
        data = json.dumps(message, allow_nan=False).encode()
    except MemoryError:  # the rows fitted in memory, their JSON did not
        data = None
    if data is None or len(data) > limits.result_bytes:
        message = {"error": "resource", "message": f"the result is larger than {limits.result_bytes} bytes"}
        data = json.dumps(message).encode()
    return data


def _serve(pipe, root: str, limits: SqlLimits) -> None:
    """Worker main: open the locked-down catalog, then answer queries until killed or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of `structome serve`: the parent stops us
    resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes, limits.address_space_bytes))
    os.chdir(root)
    connection = open_locked_catalog(root, limits)
    pipe.send_bytes(b"{}")  # ready
    try:
        while True:  # a query comes as b"Q" + its text (b"" would be an empty query)
            pipe.send_bytes(_reply(connection, pipe.recv_bytes()[1:].decode(), limits))
    except EOFError:  # the parent is gone
        connection.close()


# --- the parent -----------------------------------------------------------------------------------------------


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context, root: str, limits: SqlLimits, generation: int = 0):
        self.generation = generation  # the sandbox's generation when it started (its views' snapshot)
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, root, limits), daemon=True, name="structome-sql")
        self.process.start()
        child.close()
        self.ready = False

    def receive(self, timeout: float, max_bytes: int) -> dict | None:
        """The worker's next message; None past the timeout; EOFError/OSError if it died or sent too much."""
        if not self.pipe.poll(timeout):
            return None
        return json.loads(self.pipe.recv_bytes(max_bytes))

    def wait_ready(self) -> None:
        if not self.ready:
            if self.receive(_START_TIMEOUT_S, 1024) is None:
                raise TimeoutError("SQL worker did not start")
            self.ready = True

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.pipe.close()


class SqlSandbox:
    """A pool of worker processes answering read-only queries over one local database; `run` is thread-safe."""

    def __init__(self, layout: DatabaseLayout, limits: SqlLimits = SqlLimits(), workers: int = 2):
        if not layout.is_local:
            raise ValueError(f"SQL endpoint needs a local database, not {layout.location}")
        if not layout.exists():
            raise FileNotFoundError(f"{layout.location} is not a structome database (no catalog)")
        self.limits = limits
        self._root = str(layout.root)
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0  # bumped by renew(): workers of an older one are replaced
        started = time.perf_counter()
        for _ in range(workers):
            self._idle.put(_Worker(self._context, self._root, limits))
        try:
            for worker in list(self._idle.queue):
                worker.wait_ready()
        except (TimeoutError, EOFError, OSError) as error:
            self.close()
            raise RuntimeError(f"SQL workers failed to start for {layout.location}") from error
        logger.info("%d SQL workers ready in %.2f s", workers, time.perf_counter() - started)

    @property
    def pids(self) -> list[int]:
        """The process ids of the idle workers."""
        return [worker.process.pid for worker in list(self._idle.queue)]

    def run(self, sql: str) -> SqlResult:
        started = time.perf_counter()  # the worker checks the statement: parsing hostile text costs time
        try:
            request = b"Q" + sql.encode()
        except UnicodeEncodeError:  # lone surrogates
            raise SqlError("the query is not valid Unicode text") from None
        if self._closed:
            raise SqlError("the SQL sandbox is closed")
        try:
            worker = self._idle.get(timeout=self.limits.timeout_s + _GRACE_S)
        except queue.Empty:
            raise SqlTimeout("all SQL workers are busy; try again later") from None
        if not worker.process.is_alive():
            worker = self._replace(worker)
        message: dict | None = None
        failure: SqlError | None = None
        try:
            worker.wait_ready()
            worker.pipe.send_bytes(request)
            message = worker.receive(self.limits.timeout_s + _GRACE_S, self.limits.result_bytes + 4096)
            if message is None:
                failure = SqlTimeout(f"the query ran past the {self.limits.timeout_s:g} s limit")
        except (EOFError, OSError, TimeoutError) as error:  # died (out of memory?), or sent too much
            logger.warning("SQL worker pid %s failed: %r", worker.process.pid, error)
            failure = SqlResourceError("the SQL worker failed (out of memory?)")
        finally:
            if message is None:  # no answer, or one still coming: the worker cannot be reused
                worker = self._replace(worker)
            self._release(worker)
        if failure is not None or message is None:
            raise failure or SqlResourceError("the SQL worker sent no answer")
        if "error" in message:
            raise _ERRORS[message["error"]](message["message"].replace(self._root, DATABASE_FOLDER))
        return SqlResult(**message, elapsed_s=time.perf_counter() - started)

    def renew(self) -> None:
        """What the database shows has changed (a build committed, a compaction switched): each worker's views are
        a snapshot, so every worker is replaced, idle ones now and busy ones when their query returns."""
        with self._lock:
            self._generation += 1
            idle = []
            while not self._idle.empty():
                idle.append(self._idle.get_nowait())
        for worker in idle:
            self._release(worker)

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill the worker and start another (its start-up is awaited on first use)."""
        logger.info("replacing SQL worker pid %s", worker.process.pid)
        worker.stop()
        return _Worker(self._context, self._root, self.limits, self._generation)

    def _release(self, worker: _Worker) -> None:
        if worker.generation != self._generation:
            worker = self._replace(worker)
        with self._lock:
            if not self._closed:
                self._idle.put(worker)
                return
        worker.stop()

    def close(self) -> None:
        """Stop the idle workers now (they hold nothing worth a clean exit); busy ones when their query returns."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return

    def __enter__(self) -> SqlSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
