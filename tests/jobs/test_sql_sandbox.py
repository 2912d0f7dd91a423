"""The SQL sandbox of `POST /api/sql`: real worker processes over a real (small) database."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_database import entry, random_prediction, write_database

from structome.jobs.serve.sql_sandbox import (
    SqlError,
    SqlLimits,
    SqlRefused,
    SqlResourceError,
    SqlSandbox,
    SqlTimeout,
    check_statement,
    open_locked_catalog,
)
from structome.models.types import PredictionRequest
from structome.storage.layout import DatabaseLayout

LIMITS = SqlLimits(timeout_s=1.0, row_limit=100, result_bytes=1 << 20)
ENTRIES = [entry(f"SM-P{i:05d}-F1", f"P{i:05d}", "ACDEFGHIKLMNPQRSTVWY"[: 8 + i], f"pred{i}") for i in range(6)]
CROSS_JOIN = "SELECT count(*) FROM range(100000000) a, range(100000000) b"


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> DatabaseLayout:
    folder = tmp_path_factory.mktemp("sql")
    predictions = [random_prediction(PredictionRequest(e.prediction_id, e.sequence), i) for i, e in enumerate(ENTRIES)]
    layout = write_database(folder / "db", ENTRIES, predictions, shard_size=4)
    for other in ("other", "db2"):  # real files outside the database, one in a folder named like it
        (folder / other).mkdir()
        pq.write_table(pa.table({"secret": [1]}), folder / other / "x.parquet")
    return layout


@pytest.fixture(scope="module")
def sandbox(database):
    sandbox = SqlSandbox(database, LIMITS, workers=2)
    yield sandbox
    sandbox.close()


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below root with its size and modification time."""
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def wait_dead(pid: int) -> None:
    """Wait until a worker killed from outside has exited (without reaping it: its Process object does that)."""
    for _ in range(250):
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return
        time.sleep(0.02)
    raise AssertionError(f"worker {pid} did not die")


def test_select_returns_rows(sandbox):
    result = sandbox.run("SELECT entryId, uniprotAccession, uniprotEnd FROM entries ORDER BY entryId")
    assert result.columns == ["entryId", "uniprotAccession", "uniprotEnd"]
    assert result.types == ["VARCHAR", "VARCHAR", "INTEGER"]
    assert result.rows == [[e.entry_id, e.accession, len(e.sequence)] for e in ENTRIES]
    assert not result.truncated and result.elapsed_s > 0


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("FROM entries SELECT count(*)", 6),
        ("SELECT count(*) FROM residues", sum(len(e.sequence) for e in ENTRIES)),
        ("SELECT count(*) FROM failures", 0),
        ("SELECT count(*) FROM range(3) r, unnest([1, 2]) u", 6),  # pure table functions
        ("WITH entries AS (SELECT 1 AS n) SELECT count(*) FROM entries", 1),  # a CTE may shadow a table
        ("SELECT count(*) FROM entries e JOIN files f USING (entryId) WHERE f.kind = 'cif'", 6),
        ("SELECT count(*) FROM temp.main.entries", 6),
        ("WITH t AS (SELECT 7 AS a) SELECT a * 6 FROM t", 42),
        ("VALUES (5)", 5),
        ("SELECT count(*) FROM (DESCRIBE entries) WHERE column_name = 'entryId'", 1),
    ],
)
def test_read_only_forms_work(sandbox, sql, expected):
    assert sandbox.run(sql).rows == [[expected]]


@pytest.mark.parametrize("sql", ["SUMMARIZE entries", "DESCRIBE entries", "SHOW TABLES", "FROM entries"])
def test_select_typed_statements_are_allowed(sandbox, sql):
    check_statement(sql)
    assert sandbox.run(sql).rows


def test_values_are_json_safe(sandbox):
    result = sandbox.run("""SELECT DATE '2026-11-25' AS d, TIMESTAMP '2026-11-25 01:02:03' AS ts, 1.25::DECIMAL(5, 2) AS n,
        ['nan'::DOUBLE, 'inf'::DOUBLE, 2.5] AS f, '\\x00\\xff'::BLOB AS b, {'a': [1, NULL]} AS s, MAP {1: 'x'} AS m,
        '00000000-0000-0000-0000-000000000001'::UUID AS u""")
    assert result.rows == [
        [
            "2026-11-25",
            "2026-11-25T01:02:03",
            1.25,
            [None, None, 2.5],
            "AP8=",
            {"a": [1, None]},
            {"1": "x"},
            "00000000-0000-0000-0000-000000000001",
        ]
    ]
    json.dumps(result.rows, allow_nan=False)


@pytest.mark.parametrize(
    "sql",
    [
        "PIVOT entries ON gene",  # a multi-statement (it creates an enum type first)
        "SELECT * FROM (PIVOT entries ON gene)",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "COPY (SELECT 1 AS a) TO 'schema/entries.parquet'",  # the write a locked-down DuckDB still allows
        "COPY entries TO 'shards/copy.parquet'",
        "EXPORT DATABASE 'exported'",
        "ATTACH 'other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 8",
        "SET VARIABLE x = 1",
        "RESET memory_limit",
        "PRAGMA version",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO entries SELECT * FROM entries",
        "UPDATE entries SET gene = 'x'",
        "DELETE FROM entries",
        "DROP VIEW entries",
        "CALL duckdb_settings()",
        "CHECKPOINT",
        "UPDATE EXTENSIONS",  # a statement type the Python client cannot even name
        "SELECT 1; SELECT 2",
        "SELECT 1; COPY entries TO 'shards/copy.parquet'",
        "",
        "-- only a comment",
    ],
)
def test_statements_other_than_one_select_are_refused(sandbox, database, sql):
    before = listing(database.root)
    with pytest.raises(SqlRefused):
        sandbox.run(sql)
    assert listing(database.root) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/proc/self/environ')",
        "SELECT * FROM read_parquet('../other/x.parquet')",
        "SELECT * FROM read_parquet('shards/../../other/x.parquet')",
        "SELECT * FROM read_parquet('{root}/../other/x.parquet')",
        "SELECT * FROM read_parquet('{root}/../other/*.parquet')",
        "SELECT * FROM read_parquet('{root}2/x.parquet')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM glob('../*')",
        "SELECT * FROM read_csv('https://example.org/x.csv')",
        "SELECT * FROM '{root}/../other/x.parquet'",
    ],
)
def test_files_outside_the_database_are_refused(sandbox, database, sql):
    with pytest.raises(SqlRefused):
        sandbox.run(sql.format(root=database.root))


def test_settings_are_locked_and_harmless_functions_stay_harmless(sandbox, database):
    with pytest.raises(SqlError, match="does not exist"):
        sandbox.run("SELECT getenv('HOME')")  # not a DuckDB function outside its shell
    before = listing(database.root)
    with pytest.raises(SqlRefused):
        sandbox.run("SELECT * FROM enable_logging(storage = 'file', storage_path = 'shards/log')")
    assert listing(database.root) == before


def test_the_worker_connection_is_locked_to_the_views_files(database, monkeypatch):
    """Beneath the statement rule: DuckDB itself opens only the files the views read."""
    monkeypatch.chdir(database.root)  # as the worker does
    connection = open_locked_catalog(str(database.root), LIMITS)
    try:
        assert connection.sql("SELECT count(*) FROM entries").fetchall() == [(6,)]
        shard = connection.sql("SELECT min(file) FROM table_files WHERE tableName = 'entries'").fetchall()[0][0]
        assert connection.sql(f"SELECT count(*) FROM '{shard}'").fetchall()[0][0] > 0  # a view's file: its rows
        for hidden in ("catalog.duckdb", "structome.json", "../other/x.parquet"):
            with pytest.raises(duckdb.PermissionException):
                connection.sql(f"SELECT * FROM read_blob('{hidden}')").fetchall()
        settings = dict(connection.sql("SELECT name, value FROM duckdb_settings()").fetchall())
        assert settings["lock_configuration"] == "true" and settings["enable_external_access"] == "false"
        assert settings["threads"] == "1" and settings["temp_directory"] == ""
        assert settings["enable_progress_bar"] == "false"
        with pytest.raises(duckdb.Error, match="locked"):
            connection.execute("SET enable_external_access = true")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM duckdb_settings()",
        "SELECT current_setting('file_search_path')",
        "SELECT 'allowed_paths'.current_setting()",
        "SELECT (SELECT current_setting('file_search_path'))",
        "SELECT * FROM entries WHERE gene IN (SELECT value FROM duckdb_settings())",
        "FROM pg_settings",
        "SELECT * FROM pg_catalog.pg_settings",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM duckdb_extensions()",
        "SELECT sql FROM duckdb_views()",
        "SELECT * FROM read_text('catalog.duckdb')",
        "SELECT * FROM read_blob('structome.json')",
        "SELECT * FROM read_parquet('shards/*/entries.parquet')",
        "SELECT * FROM read_parquet('{root}/shards/*/entries.parquet')",
        "SELECT * FROM 'shards/*/entries.parquet'",
        'SELECT * FROM "shards/*/files.parquet"',
        "SELECT * FROM glob('*')",
        "SELECT * FROM parquet_metadata('schema/entries.parquet')",
        "SELECT * FROM query_table('table_files')",
        "SELECT * FROM query('SELECT * FROM duckdb_settings()')",
        "SELECT * FROM table_files",
        "SELECT * FROM failures_all",
        "SELECT * FROM system.main.duckdb_settings()",
        "WITH t AS (SELECT 1) SELECT * FROM (WITH pg_settings AS (SELECT 1) FROM pg_settings), pg_settings",
        "WITH a AS (FROM pg_settings), pg_settings AS (SELECT 1) FROM a",
        "DESCRIBE SELECT * FROM read_text('catalog.duckdb')",
        "SUMMARIZE SELECT * FROM read_blob('catalog.duckdb')",
        "SHOW databases",
        "SELECT * FROM entries, LATERAL (SELECT * FROM read_text(entries.entryId))",
    ],
)
def test_the_endpoint_exposes_the_tables_and_nothing_of_the_machine(sandbox, database, sql):
    with pytest.raises(SqlRefused) as refused:
        sandbox.run(sql.format(root=database.root))
    assert str(database.root) not in str(refused.value)


def test_show_and_describe_of_the_tables_work(sandbox):
    assert ["entries"] in sandbox.run("SHOW TABLES").rows
    assert ["entryId", "VARCHAR"] in [row[:2] for row in sandbox.run("DESCRIBE entries").rows]


def test_parse_error_is_an_sql_error_not_a_refusal(sandbox):
    with pytest.raises(SqlError, match="syntax error") as error:
        sandbox.run("SELEC 1")
    assert type(error.value) is SqlError


def test_row_limit_truncates(sandbox):
    result = sandbox.run("SELECT * FROM range(1000)")
    assert result.truncated and result.rows == [[i] for i in range(100)]
    exact = sandbox.run("SELECT * FROM range(100)")
    assert not exact.truncated and len(exact.rows) == 100


def test_result_larger_than_the_byte_cap_is_refused(sandbox):
    with pytest.raises(SqlResourceError, match="larger than"):
        sandbox.run("SELECT repeat('x', 100000) FROM range(20)")  # 2 MB of JSON, cap 1 MB
    assert sandbox.run("SELECT 1").rows == [[1]]


def test_timeout_interrupts_the_query_and_the_sandbox_goes_on(sandbox):
    started = time.perf_counter()
    with pytest.raises(SqlTimeout):
        sandbox.run(CROSS_JOIN)
    assert time.perf_counter() - started < LIMITS.timeout_s + 1.0  # interrupted, not killed after the grace
    assert sandbox.run("SELECT 2").rows == [[2]]


def test_memory_is_bounded_by_the_address_space_limit(sandbox):
    pid = sandbox.pids[0]
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max address space"))
    assert line.split()[3:5] == [str(LIMITS.address_space_bytes)] * 2
    with pytest.raises(SqlResourceError):
        sandbox.run("SELECT length(repeat('x', 3000000000))")  # memory_limit alone lets this through
    assert sandbox.run("SELECT 3").rows == [[3]]


def test_worker_killed_from_outside_is_replaced(sandbox):
    pid = sandbox.pids[0]  # the next query's worker
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    assert sandbox.run("SELECT 4").rows == [[4]]
    assert pid not in sandbox.pids and len(sandbox.pids) == 2


def test_hung_worker_is_killed_after_the_grace_period(sandbox):
    pid = sandbox.pids[0]
    os.kill(pid, signal.SIGSTOP)  # neither answers nor can interrupt itself
    with pytest.raises(SqlTimeout):
        sandbox.run("SELECT 5")
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    assert sandbox.run("SELECT 6").rows == [[6]] and pid not in sandbox.pids


def test_concurrent_queries_are_all_answered(sandbox):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: sandbox.run(f"SELECT {i}, count(*) FROM entries").rows, range(12)))
    assert results == [[[i, 6]] for i in range(12)]


def test_close_stops_the_workers(database):
    sandbox = SqlSandbox(database, LIMITS, workers=1)
    (pid,) = sandbox.pids
    sandbox.close()
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(SqlError, match="closed"):
        sandbox.run("SELECT 1")


def test_object_store_databases_are_not_supported():
    with pytest.raises(ValueError, match="needs a local database"):
        SqlSandbox(DatabaseLayout("s3://bucket/db?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"))


def test_a_build_can_refresh_the_catalog_while_the_sandbox_serves(tmp_path):
    """The workers hold no lock on catalog.duckdb: a build writing the next shard and its catalog goes on; the
    workers' views are a snapshot (the catalog lists files, not globs) until the sandbox is renewed, as the
    server does when it sees the change."""
    from fake_database import entry, random_prediction, write_database

    from structome.models.types import PredictionRequest

    first = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    layout = write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [first])
    with SqlSandbox(layout, workers=1) as sandbox:
        assert sandbox.run("SELECT count(*) FROM entries").rows == [[1]]
        second = random_prediction(PredictionRequest("p-b", "MKKLLAW"), 1)
        write_database(tmp_path / "db", [entry("SM-P2-F1", "P2", "MKKLLAW", "p-b")], [second])  # refreshes the catalog
        assert sandbox.run("SELECT entryId FROM entries ORDER BY 1").rows == [["SM-P1-F1"]]  # the snapshot
        sandbox.renew()
        assert sandbox.run("SELECT entryId FROM entries ORDER BY 1").rows == [["SM-P1-F1"], ["SM-P2-F1"]]
