"""Storage options for compacted tables (issue 11), measured side by side in one run.

    PYTHONPATH=... .venv/bin/python benchmarks/bench_table_formats.py --entries 100000 [--commits 16] [--runs 5]
        [--tables entries files [residues]] [--object-store] [--scratch DIR]

It writes a synthetic database in the committed layout (benchmarks/synthetic_db.py), reads its shards' tables,
holds back --commits + CONCURRENT_COMMITS shards of 64 entries as the commits to come, and loads the rest, sorted
by entryId, into each option as its compacted base. Options:

  a. Parquet segments listed by a JSON manifest: each commit writes one segment per table and a new manifest
     generation (manifests/<gen>.json, then manifest.json replaced atomically); the minor compaction merges the
     small segments into one sorted segment, the full one rewrites every segment into one; superseded files are
     deleted afterwards (a grace period). Read by DuckDB `read_parquet([the manifest's files])`. Variants: row
     groups of 10k rows instead of 100k; merges written by DuckDB `COPY ... ORDER BY` instead of pyarrow.
  b. Delta Lake (`deltalake`, one Delta table per table): `write_deltalake(mode="append")` per commit,
     `optimize.compact()` as the minor compaction, `optimize.z_order(["entryId"])` as the full one, `vacuum` as the
     cleanup. Read by DuckDB over `DeltaTable(...).to_pyarrow_dataset()` (DuckDB's delta extension is a download
     this machine cannot make). Skipped, with a note, where deltalake is missing: `pip install deltalake`.
  c. DuckDB tables in one .duckdb file: one transaction of INSERTs per commit (the writer holds the connection);
     no minor compaction; the full one is `CREATE TABLE ... AS SELECT ... ORDER BY entryId` and a swap.
  c+ART. The same with an ART index on entryId (rebuilt with the table, maintained by every INSERT).

Figures: commit (median over --commits), minor and full compaction (and per entry merged), warm queries (median of
--runs after one warm-up) in one reader connection, open + first lookup in a fresh connection, files and bytes on
disk, and concurrency: a spawned reader process queries in a loop while this process commits
CONCURRENT_COMMITS shards and compacts; it checks that every state it saw is one a commit left (row counts of a
prefix of the commits, no duplicate entryId, files rows matching entries rows). --object-store adds a probe
against a local moto S3 server, if moto is installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import median_seconds  # noqa: E402
from synthetic_db import SHARD_SIZE, make_database  # noqa: E402

from structome.storage.atomic import replace_atomically, write_text_atomic  # noqa: E402

try:
    import deltalake
    from deltalake.exceptions import DeltaError
except ImportError:  # option b is skipped
    deltalake = None
    DeltaError = OSError

READ_ERRORS = (duckdb.Error, OSError, DeltaError)  # what a reader may meet while a writer works

ROW_GROUP = 100_000  # rows per row group of every compacted file
CONCURRENT_COMMITS = 4  # shards committed while a reader process queries
KEY = "entryId"  # every table's sort key
QUERIES = {  # label -> SQL (? = the probed entry's entryId or accession)
    "lookup by entryId": "SELECT * FROM entries WHERE entryId = ?",
    "lookup by accession": "SELECT * FROM entries WHERE uniprotAccession = ?",
    "files of an entry": "SELECT * FROM files WHERE entryId = ?",
    "GROUP BY taxId": "SELECT taxId, count(*), avg(globalMetricValue) FROM entries GROUP BY taxId",
}
STATE_SQL = "SELECT (SELECT count(*) FROM entries), (SELECT count(DISTINCT entryId) FROM entries), " + (
    "(SELECT count(*) FROM files)"
)

Tables = dict[str, pa.Table]  # table name -> rows


class Option(Protocol):
    """One storage option in one folder; every method leaves a state a reader may see."""

    label: str
    folder: Path

    def create(self, base: Tables) -> None: ...
    def commit(self, shard: Tables) -> None: ...
    def compact_minor(self) -> bool: ...  # False: the option has none
    def compact_full(self) -> None: ...
    def cleanup(self) -> None: ...  # drop what no reader of the current state needs
    def close(self) -> None: ...


def open_reader(kind: str, folder: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection on which the tables of option `kind` are queryable by name."""
    if kind == "a":
        connection = duckdb.connect()
        for name, files in read_manifest(folder)["tables"].items():
            listed = ", ".join(f"'{folder / f}'" for f in files)
            connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}])")
        return connection
    if kind == "b":
        connection = duckdb.connect()
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            connection.register(path.name, deltalake.DeltaTable(path).to_pyarrow_dataset())
        return connection
    return duckdb.connect(str(folder / "tables.duckdb"), read_only=True)


# ---- a. Parquet segments + manifest -----------------------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@dataclass(frozen=True)
class SegmentSettings:
    label: str = "a. segments"
    row_group: int = ROW_GROUP  # rows per row group
    merge_with: str = "pyarrow"  # what rewrites merged segments: pyarrow (in memory) or duckdb (COPY ... ORDER BY)
    delete_superseded: bool = False  # True: at once, no grace period for readers


class Segments:
    """Sorted Parquet segments per table; a JSON manifest per generation lists the current ones."""

    kind = "a"

    def __init__(self, folder: Path, settings: SegmentSettings = SegmentSettings()):
        self.folder, self.settings, self.label = folder, settings, settings.label

    def create(self, base: Tables) -> None:
        self.folder.mkdir(parents=True)
        self._publish({name: [self._write(name, table)] for name, table in base.items()}, generation=1)

    def commit(self, shard: Tables) -> None:
        manifest = read_manifest(self.folder)
        tables = {name: [*manifest["tables"][name], self._write(name, shard[name], tier=0)] for name in shard}
        self._publish(tables, manifest["generation"] + 1)

    def compact_minor(self) -> bool:
        """Tier 0 (one segment per commit) merged into one sorted tier-1 segment per table."""
        self._merge(lambda f: Path(f).name.startswith("t0-"), tier=1)
        return True

    def compact_full(self) -> None:
        self._merge(lambda f: True, tier=2)

    def _merge(self, chosen: Callable[[str], bool], tier: int) -> None:
        manifest = read_manifest(self.folder)
        tables = {}
        for name, files in manifest["tables"].items():
            merged = [f for f in files if chosen(f)]
            kept = [f for f in files if not chosen(f)]
            tables[name] = [*kept, self._merge_files(name, merged, tier)] if merged else files
        self._publish(tables, manifest["generation"] + 1)
        if self.settings.delete_superseded:
            self.cleanup()

    def _merge_files(self, name: str, files: list[str], tier: int) -> str:
        if self.settings.merge_with == "pyarrow":
            return self._write(name, pa.concat_tables(pq.read_table(self.folder / f) for f in files), tier)
        relative = self._name(name, tier)
        listed = ", ".join(f"'{self.folder / f}'" for f in files)
        sql = f"COPY (SELECT * FROM read_parquet([{listed}]) ORDER BY {KEY}) TO '{{}}' " + (
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {self.settings.row_group})"
        )
        with duckdb.connect() as connection:
            replace_atomically(self.folder / relative, lambda temporary: connection.execute(sql.format(temporary)))
        return relative

    def _write(self, name: str, table: pa.Table, tier: int = 1) -> str:
        relative = self._name(name, tier)
        ordered = table.sort_by(KEY)
        replace_atomically(
            self.folder / relative,
            lambda temporary: pq.write_table(
                ordered, temporary, row_group_size=self.settings.row_group, compression="zstd"
            ),
        )
        return relative

    @staticmethod
    def _name(name: str, tier: int) -> str:
        return f"segments/{name}/t{tier}-{secrets.token_hex(8)}.parquet"

    def _publish(self, tables: dict[str, list[str]], generation: int) -> None:
        """The generation's manifest kept (time travel), then made current by one atomic replace."""
        text = json.dumps({"format": "structome-segments", "generation": generation, "tables": tables})
        write_text_atomic(text, self.folder / "manifests" / f"{generation:08d}.json")
        write_text_atomic(text, self.folder / "manifest.json")

    def cleanup(self) -> None:
        """Segments the current manifest does not list (a build would wait out a grace period first)."""
        listed = {f for files in read_manifest(self.folder)["tables"].values() for f in files}
        for path in (self.folder / "segments").rglob("*.parquet"):
            if str(path.relative_to(self.folder)) not in listed:
                path.unlink()

    def close(self) -> None:
        pass


# ---- b. Delta Lake ----------------------------------------------------------------------------------------


class Delta:
    """One Delta table per table, written and optimized by deltalake (delta-rs)."""

    kind = "b"
    label = "b. Delta Lake"

    def __init__(self, folder: Path):
        self.folder = folder
        self.properties = deltalake.WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP)
        self.metrics: dict[str, dict] = {}  # what optimize reported, by step

    def create(self, base: Tables) -> None:
        self.folder.mkdir(parents=True)
        for name, table in base.items():
            deltalake.write_deltalake(self.folder / name, table.sort_by(KEY), writer_properties=self.properties)

    def commit(self, shard: Tables) -> None:
        for name, table in shard.items():  # one Delta commit per table: not atomic across tables
            deltalake.write_deltalake(self.folder / name, table, mode="append", writer_properties=self.properties)

    def compact_minor(self) -> bool:
        for name in self._names():
            table = deltalake.DeltaTable(self.folder / name)
            self.metrics[f"compact {name}"] = table.optimize.compact(writer_properties=self.properties)
        return True

    def compact_full(self) -> None:
        for name in self._names():
            table = deltalake.DeltaTable(self.folder / name)
            self.metrics[f"z_order {name}"] = table.optimize.z_order([KEY], writer_properties=self.properties)

    def cleanup(self) -> None:
        for name in self._names():
            deltalake.DeltaTable(self.folder / name).vacuum(0, dry_run=False, enforce_retention_duration=False)

    def _names(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_dir())

    def close(self) -> None:
        pass


# ---- c. DuckDB tables -------------------------------------------------------------------------------------


class DuckTables:
    """The tables inside one .duckdb file; `hold`: the writer keeps its connection between commits."""

    kind = "c"

    def __init__(self, folder: Path, label: str, index: bool, hold: bool = True):
        self.folder, self.label, self.index, self.hold = folder, label, index, hold
        self.path = folder / "tables.duckdb"
        self._held: duckdb.DuckDBPyConnection | None = None
        self.lock_waits = 0  # connects retried because a reader held the file

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.hold:
            connection = self._connect()
            try:
                yield connection
            finally:
                connection.close()
            return
        if self._held is None:
            self._held = self._connect()
        yield self._held

    def _connect(self, timeout: float = 60.0) -> duckdb.DuckDBPyConnection:
        started = time.perf_counter()
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException:  # a reader holds the file lock
                if time.perf_counter() - started > timeout:
                    raise
                self.lock_waits += 1
                time.sleep(0.01)

    def create(self, base: Tables) -> None:
        self.folder.mkdir(parents=True)
        with self._connection() as connection:
            for name, table in base.items():
                connection.register("incoming", table)
                self._sorted_table(connection, name, "incoming")
                connection.unregister("incoming")

    def _sorted_table(self, connection: duckdb.DuckDBPyConnection, name: str, source: str) -> None:
        connection.execute(f"CREATE TABLE {name}__sorted AS SELECT * FROM {source} ORDER BY {KEY}")
        connection.execute(f"DROP TABLE IF EXISTS {name}")
        connection.execute(f"ALTER TABLE {name}__sorted RENAME TO {name}")
        if self.index:
            connection.execute(f"CREATE INDEX {name}_{KEY} ON {name} ({KEY})")

    def commit(self, shard: Tables) -> None:
        with self._connection() as connection:
            connection.execute("BEGIN")
            for name, table in shard.items():
                connection.register("incoming", table)
                connection.execute(f"INSERT INTO {name} SELECT * FROM incoming")
                connection.unregister("incoming")
            connection.execute("COMMIT")

    def compact_minor(self) -> bool:
        return False  # appended rows already sit in the table's row groups

    def compact_full(self) -> None:
        with self._connection() as connection:
            connection.execute("BEGIN")
            names = [row[0] for row in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
            for name in names:
                self._sorted_table(connection, name, name)
            connection.execute("COMMIT")
            connection.execute("CHECKPOINT")

    def cleanup(self) -> None:
        with self._connection() as connection:
            connection.execute("CHECKPOINT")

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


# ---- the measurements -------------------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


METADATA = ("manifests", "manifest.json", "_delta_log")  # names of metadata files or their folders


@dataclass(frozen=True)
class Disk:
    files: int  # data files
    metadata: int  # manifests, Delta log entries and checkpoints
    bytes: int  # both

    @staticmethod
    def of(folder: Path) -> Disk:
        paths = [p for p in folder.rglob("*") if p.is_file()]
        metadata = sum(any(part in METADATA for part in p.relative_to(folder).parts) for p in paths)
        return Disk(len(paths) - metadata, metadata, sum(p.stat().st_size for p in paths))


@dataclass(frozen=True)
class Concurrency:
    """What a reader process saw while a writer committed and compacted."""

    reads: int
    errors: dict[str, int]  # first line of each error -> how often
    states: list[tuple[int, int, int]]  # distinct (entries, distinct entryIds, files rows) seen
    consistent: bool  # every state one a commit left
    writer_waits: int  # connects the writer retried on a file lock (c)


@dataclass(frozen=True)
class Result:
    label: str
    create: float
    commit: float  # median seconds of one 64-entry commit
    pending: Disk  # after the commits, before compaction
    lookup_pending: float  # lookup by entryId with the commits uncompacted
    minor: float | None  # None: no minor compaction
    full: float
    queries: dict[str, float]
    open_lookup: float  # a fresh reader: open, then one lookup by entryId
    compacted: Disk  # after full compaction, before cleanup
    clean: Disk  # after cleanup
    concurrency: Concurrency | None = None
    notes: list[str] = field(default_factory=list)


def reader_loop(kind: str, folder: str, ready, stop, queue) -> None:  # runs in a spawned process
    reads, errors, states = 0, {}, set()
    while not stop.is_set():
        try:
            with open_reader(kind, Path(folder)) as connection:
                states.add(tuple(connection.execute(STATE_SQL).fetchone()))
            reads += 1
        except READ_ERRORS as error:
            line = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
            errors[line] = errors.get(line, 0) + 1
            time.sleep(0.005)
        ready.set()
    queue.put((reads, errors, sorted(states)))


def concurrency(option: Option, shards: list[Tables], start: tuple[int, int]) -> Concurrency:
    """Commit `shards` and compact while a spawned reader queries; check the states it saw."""
    context = multiprocessing.get_context("spawn")  # a forked child of a DuckDB process fails
    ready, stop, queue = context.Event(), context.Event(), context.Queue()
    reader = context.Process(target=reader_loop, args=(option.kind, str(option.folder), ready, stop, queue))
    reader.start()
    if not ready.wait(120):
        raise RuntimeError("the reader process never read")
    allowed = {start}
    for shard in shards:
        option.commit(shard)
        start = (start[0] + len(shard["entries"]), start[1] + len(shard["files"]))
        allowed.add(start)
        time.sleep(0.2)  # time for the reader to see this state
    option.compact_minor()
    option.compact_full()
    time.sleep(1.0)
    stop.set()
    reads, errors, states = queue.get(timeout=120)
    reader.join()
    consistent = all(n == d and (n, f) in allowed for n, d, f in states)
    return Concurrency(reads, errors, states, consistent, getattr(option, "lock_waits", 0))


def lookup_keys(base: Tables) -> dict[str, str]:
    """The middle entry of the entryId range."""
    ordered = base["entries"].select([KEY, "uniprotAccession"]).sort_by(KEY)
    row = ordered.slice(len(ordered) // 2, 1).to_pylist()[0]
    return {
        "lookup by entryId": row[KEY],
        "lookup by accession": row["uniprotAccession"],
        "files of an entry": row[KEY],
    }


def time_queries(connection: duckdb.DuckDBPyConnection, keys: dict[str, str], runs: int) -> dict[str, float]:
    def run(sql: str, key: str | None) -> Callable[[], object]:
        return lambda: connection.execute(sql, [key] if key else []).fetchall()

    return {label: median_seconds(run(sql, keys.get(label)), runs) for label, sql in QUERIES.items()}


def open_and_lookup(kind: str, folder: Path, key: str) -> None:
    with open_reader(kind, folder) as connection:
        if not connection.execute(QUERIES["lookup by entryId"], [key]).fetchall():
            raise AssertionError(f"{key} not found")


def measure(option: Option, base: Tables, commits: list[Tables], keys: dict[str, str], runs: int) -> Result:
    create = timed(lambda: option.create(base))
    commit = statistics.median(timed(lambda s=shard: option.commit(s)) for shard in commits)
    option.close()  # readers below are other connections (c: the file lock)
    pending = Disk.of(option.folder)
    lookup = keys["lookup by entryId"]
    with open_reader(option.kind, option.folder) as connection:
        sql = QUERIES["lookup by entryId"]
        lookup_pending = median_seconds(lambda: connection.execute(sql, [lookup]).fetchall(), runs)
    started = time.perf_counter()
    has_minor = option.compact_minor()
    minor = time.perf_counter() - started if has_minor else None
    full = timed(option.compact_full)
    option.close()
    compacted = Disk.of(option.folder)
    option.cleanup()
    option.close()
    with open_reader(option.kind, option.folder) as connection:
        queries = time_queries(connection, keys, runs)
        expected = sum(len(t) for t in [base["entries"], *(c["entries"] for c in commits)])
        [(count,)] = connection.execute("SELECT count(DISTINCT entryId) FROM entries").fetchall()
        if count != expected:
            raise AssertionError(f"{option.label}: {count} entries after compaction, {expected} committed")
    open_lookup = median_seconds(lambda: open_and_lookup(option.kind, option.folder, lookup), runs)
    return Result(
        option.label, create, commit, pending, lookup_pending, minor, full, queries, open_lookup, compacted,
        Disk.of(option.folder), notes=[f"{step}: {summary(m)}" for step, m in getattr(option, "metrics", {}).items()],
    )  # fmt: skip


def summary(metrics: dict) -> str:
    """What deltalake's optimize reported: files removed and added."""
    return ", ".join(
        f"{k} {metrics[k]}" for k in ("numFilesRemoved", "numFilesAdded", "totalConsideredFiles") if k in metrics
    )


# ---- data -------------------------------------------------------------------------------------------------


def read_shards(db: Path, tables: list[str]) -> list[Tables]:
    return [
        {name: pq.read_table(folder / f"{name}.parquet") for name in tables}
        for folder in sorted((db / "shards").iterdir())
    ]


def split(shards: list[Tables], held: int) -> tuple[Tables, list[Tables]]:
    """The base (all but `held` full shards, concatenated) and the held-back full shards, spread over the list."""
    full = [i for i, s in enumerate(shards) if len(s["entries"]) == SHARD_SIZE]
    chosen = set(full[:: max(1, len(full) // held)][:held])
    base = {
        name: pa.concat_tables(s[name] for i, s in enumerate(shards) if i not in chosen).combine_chunks()
        for name in shards[0]
    }
    return base, [shards[i] for i in sorted(chosen)]


# ---- object store probe -----------------------------------------------------------------------------------


def object_store_probe(shard: Tables) -> list[str]:
    """What works against a local moto S3 server: conditional PUTs, segments + manifest, Delta commits."""
    try:
        import boto3
        import pyarrow.dataset as pads
        import pyarrow.fs as pafs
        from moto.server import ThreadedMotoServer
    except ImportError as error:
        return [f"object-store probe skipped: {error}"]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    endpoint = "http://{}:{}".format(*server.get_host_and_port())
    notes = []
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        notes.append(_conditional_put(s3))
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint.removeprefix("http://"), scheme="http", region="us-east-1",
            access_key="testing", secret_key="testing",
        )  # fmt: skip
        pq.write_table(shard["entries"], "bench/seg/t0-1.parquet", filesystem=fs)
        with fs.open_output_stream("bench/seg/manifest.json") as out:
            out.write(json.dumps({"tables": {"entries": ["seg/t0-1.parquet"]}}).encode())
        listed = json.loads(fs.open_input_stream("bench/seg/manifest.json").read())["tables"]["entries"]
        dataset = pads.dataset([f"bench/{f}" for f in listed], filesystem=fs, format="parquet")
        rows = duckdb.connect().register("entries", dataset).execute("SELECT count(*) FROM entries").fetchone()[0]
        notes.append(f"a: segment + manifest written with pyarrow's S3FileSystem, read back by DuckDB: {rows} rows")
        notes.append(_delta_on_s3(shard, endpoint))
    finally:
        server.stop()
    return notes


def _conditional_put(s3) -> str:
    s3.put_object(Bucket="bench", Key="manifests/00000002.json", Body=b"{}", IfNoneMatch="*")
    try:
        s3.put_object(Bucket="bench", Key="manifests/00000002.json", Body=b"{}", IfNoneMatch="*")
    except s3.exceptions.ClientError as error:
        return f"moto: a second PUT with If-None-Match: * is refused ({error.response['Error']['Code']})"
    return "moto: a second PUT with If-None-Match: * succeeded (no conditional writes)"


def _delta_on_s3(shard: Tables, endpoint: str) -> str:
    if deltalake is None:
        return "b: deltalake missing"
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    options |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    try:
        for _ in range(2):
            deltalake.write_deltalake("s3://bench/delta", shard["entries"], mode="append", storage_options=options)
        table = deltalake.DeltaTable("s3://bench/delta", storage_options=options)
        first = f"b: two appends to s3://bench/delta: version {table.version()}, {table.count()} rows"
        return f"{first}; {_stale_delta_writer(shard, options)}"
    except READ_ERRORS as error:
        return f"b: Delta on moto S3 failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"


def _stale_delta_writer(shard: Tables, options: dict[str, str]) -> str:
    """A writer holding version 1 appends after another commit took version 2: lost, or retried as 3?"""
    stale = deltalake.DeltaTable("s3://bench/delta", storage_options=options)
    deltalake.write_deltalake("s3://bench/delta", shard["entries"], mode="append", storage_options=options)
    deltalake.write_deltalake(stale, shard["entries"], mode="append")
    table = deltalake.DeltaTable("s3://bench/delta", storage_options=options)
    return (
        f"a writer holding a stale snapshot appended after another commit: version {table.version()}, "
        f"{table.count()} rows (4 shards committed, 2 before)"
    )


# ---- report -----------------------------------------------------------------------------------------------


def cell(value: float | None, reference: float | None, unit: str) -> str:
    """The figure, and its ratio to option a's in brackets (reference None: this is option a)."""
    if value is None:
        return "n/a"
    if unit == "s":
        text = f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    else:
        text = f"{value:,.1f}{unit}" if unit else f"{value:,.0f}"
    if reference:
        text += f" ({value / reference:.2f}x)"
    return text


def report(results: list[Result], entries: int, merged: int) -> str:
    a = results[0]
    rows: list[tuple[str, Callable[[Result], float | None], str]] = [
        ("initial load of the base (sorted)", lambda r: r.create, "s"),
        ("commit of one 64-entry shard (median)", lambda r: r.commit, "s"),
        ("lookup by entryId, commits pending", lambda r: r.lookup_pending, "s"),
        (f"minor compaction ({merged:,} entries merged)", lambda r: r.minor, "s"),
        ("  per entry merged", lambda r: None if r.minor is None else r.minor / merged * 1e6, " µs"),
        ("full compaction (sorted rewrite)", lambda r: r.full, "s"),
        ("  per entry", lambda r: r.full / entries * 1e6, " µs"),
        *((f"{label}, warm", (lambda r, k=label: r.queries[k]), "s") for label in QUERIES),
        ("open + first lookup by entryId", lambda r: r.open_lookup, "s"),
        ("data files, commits pending", lambda r: r.pending.files, ""),
        ("metadata files, commits pending", lambda r: r.pending.metadata, ""),
        ("data files after compaction + cleanup", lambda r: r.clean.files, ""),
        ("  per million entries", lambda r: r.clean.files / entries * 1e6, ""),
        ("metadata files after cleanup", lambda r: r.clean.metadata, ""),
        ("MB, commits pending", lambda r: r.pending.bytes / 1e6, " MB"),
        ("MB after compaction, before cleanup", lambda r: r.compacted.bytes / 1e6, " MB"),
        ("MB after cleanup", lambda r: r.clean.bytes / 1e6, " MB"),
    ]
    lines = ["| figure | " + " | ".join(r.label for r in results) + " |", "|---" * (len(results) + 1) + "|"]
    for name, value, unit in rows:
        cells = [cell(value(r), None if r is a else value(a), unit) for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def concurrency_report(results: list[tuple[str, Concurrency]]) -> str:
    lines = ["| option | reads | failed reads | states seen | consistent | writer lock waits | errors |"]
    lines.append("|---|---|---|---|---|---|---|")
    for label, c in results:
        errors = "; ".join(f"{n}x {e}" for e, n in c.errors.items()) or "none"
        lines.append(
            f"| {label} | {c.reads} | {sum(c.errors.values())} | {len(c.states)} | "
            f"{'yes' if c.consistent else 'NO'} | {c.writer_waits} | {errors} |"
        )
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------


def options(scratch: Path) -> list[Option]:
    found: list[Option] = [
        Segments(scratch / "a"),
        Segments(scratch / "a-10k", SegmentSettings("a, 10k-row groups", row_group=10_000)),
        Segments(scratch / "a-duckdb", SegmentSettings("a, merged by DuckDB COPY", merge_with="duckdb")),
    ]
    if deltalake is not None:
        found.append(Delta(scratch / "b"))
    found += [DuckTables(scratch / "c", "c. DuckDB table", index=False)]
    found += [DuckTables(scratch / "c-art", "c+ART. DuckDB table, ART index", index=True)]
    return found


def concurrent_options(scratch: Path) -> list[Option]:
    """Fresh options for the concurrency phase: c connects per commit, as readers of another process need."""
    found: list[Option] = [
        Segments(scratch / "a"),
        Segments(scratch / "a-now", SegmentSettings("a, no grace period", delete_superseded=True)),
    ]
    if deltalake is not None:
        found.append(Delta(scratch / "b"))
    return [*found, DuckTables(scratch / "c", "c. DuckDB table", index=False, hold=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tables", nargs="+", default=["entries", "files"])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench-table-formats"))
    parser.add_argument("--object-store", action="store_true")
    args = parser.parse_args()
    if "entries" not in args.tables or "files" not in args.tables:
        parser.error("--tables needs entries and files (the queries read both)")
    shutil.rmtree(args.scratch, ignore_errors=True)
    args.scratch.mkdir(parents=True)
    print(f"# {dt.date.today()}, {os.cpu_count()} CPUs, DuckDB {duckdb.__version__}, pyarrow {pa.__version__}, "
          f"deltalake {deltalake.__version__ if deltalake else 'missing (pip install deltalake)'}", flush=True)  # fmt: skip
    try:
        run(args)
    finally:
        shutil.rmtree(args.scratch, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    make_database(args.scratch / "db", args.entries)
    shards = read_shards(args.scratch / "db", args.tables)
    shutil.rmtree(args.scratch / "db")
    base, held = split(shards, args.commits + CONCURRENT_COMMITS)
    commits, later = held[: args.commits], held[args.commits :]
    print(f"# {args.entries:,} entries generated and read in {time.perf_counter() - started:.0f} s; base "
          f"{len(base['entries']):,} entries, {len(commits)} commits of {SHARD_SIZE}, tables {args.tables}", flush=True)  # fmt: skip
    keys = lookup_keys(base)
    results = []
    for option in options(args.scratch / "measure"):
        results.append(measure(option, base, commits, keys, args.runs))
        print(f"# {option.label} measured", flush=True)
        shutil.rmtree(option.folder)
    merged = SHARD_SIZE * len(commits)
    print(report(results, args.entries, merged))
    if deltalake is None:
        print("\nb. Delta Lake skipped: deltalake is not installed (`pip install deltalake`).")
    for result in results:
        if result.notes:
            print(f"\n{result.label}:", *result.notes, sep="\n- ")
    seen = []
    for option in concurrent_options(args.scratch / "concurrent"):
        option.create(base)
        option.close()
        seen.append((option.label, concurrency(option, later, (len(base["entries"]), len(base["files"])))))
        option.close()
        shutil.rmtree(option.folder)
    print("\nA reader process querying while the writer commits "
          f"{len(later)} shards, then compacts (minor, full):\n" + concurrency_report(seen))  # fmt: skip
    if args.object_store:
        print("\nObject store (local moto S3 server):", *object_store_probe(later[0]), sep="\n- ")


if __name__ == "__main__":
    main()
