"""How structome's reads scale with the database size, beside a compacted reference measured in the same run.

    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --entries 10000 100000 [1000000] [--runs 3]
        [--object-store]
    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --entries 10000000 --direct
    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --db DB [DB...]

For each size it writes a synthetic database in the committed layout (benchmarks/synthetic_db.py: 64 sequences
per shard, real-proteome lengths, real archives) into --scratch, measures it as committed (with --before; at 1M
that takes minutes), compacts it with `structome compact` (timed, a whole process), measures again, and deletes
it. Figures:

- point lookups (`SELECT * FROM entries WHERE entryId = ?`, then by uniprotAccession) and `GROUP BY taxId` over
  entries, warm (one run first, then the median of --runs), in one connection opened as `structome sql` opens it
  (storage.catalog.connect); beside each, the same query on the reference: the entries table rewritten into one
  Parquet file sorted by entryId with row groups of 100k rows, read by a plain in-memory DuckDB;
- `structome get <accession>` and `structome sql "SELECT 1"`: wall of whole processes (median of --runs);
- the catalog refresh a build ends with (storage.catalog.refresh_catalog), median of --runs;
- planning an update: pipelines.build.plan_build of the E. coli K-12 2024 proteome plus 20 entries sampled from
  the database (which it must find), in a process of its own: median wall of the planning, and peak RSS;
- files on disk (every file under the database folder; each shard's archive.tar counts, though hard-linked);
- `structome serve --sql-workers 0`: seconds from start until /api/prediction/<accession> answers 200, and the
  server's VmRSS then (given up after --serve-timeout seconds);
- opening a catalog connection (storage.catalog.connect, then close), median of --runs: on an object store, where
  there is no catalog.duckdb, this is where the views are made (listing the committed shards and manifests).

With --direct each database is written compacted instead (synthetic_db.make_compacted_database: the segments
that builds of 100k entries leave; 10M entries in minutes) and measured as it is; --db measures existing
databases as they are and keeps them.

--object-store writes the same database (same seed) a second time, on the local S3 test server (moto, in its own
process on a free port, as the tests use it; stopped at the end), measures every figure there too through the
same commands (`--db s3://...`), and prints local and object store side by side with their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_db import SHARED, make_compacted_database, make_database  # noqa: E402

from structome.storage import catalog  # noqa: E402
from structome.storage.layout import DatabaseLayout  # noqa: E402

STRUCTOME = [sys.executable, "-m", "structome"]  # the structome on this interpreter's path (PYTHONPATH too)
ROW_GROUP = 100_000  # rows per row group of the reference
QUERIES = {  # label -> SQL over `entries` (? = the probed entry's entryId or accession)
    "lookup by entryId": "SELECT * FROM entries WHERE entryId = ?",
    "lookup by accession": "SELECT * FROM entries WHERE uniprotAccession = ?",
    "GROUP BY taxId": "SELECT taxId, count(*), avg(globalMetricValue) FROM entries GROUP BY taxId",
}


@dataclass(frozen=True)
class Figures:
    """One database size, measured; seconds unless named otherwise."""

    entries: int
    stage: str  # "before compaction" or "compacted"
    generate: float  # writing the synthetic database
    compact: float | None  # `structome compact` process wall (None before compaction)
    queries: dict[str, float]  # label -> warm median in structome's catalog connection
    reference: dict[str, float]  # label -> warm median on the compacted file
    get: float  # `structome get` process wall
    sql_select_1: float  # `structome sql "SELECT 1"` process wall
    refresh: float
    connect: float  # storage.catalog.connect + close
    plan: float  # planning an update (storage.reader.committed_entries of a proteome and 20 stored entries)
    plan_rss_mib: float  # that process's peak RSS
    files: int  # files (objects) under the database
    serve_ready: float | None  # None: not ready within the timeout
    serve_rss_mib: float | None


def median_seconds(action: Callable[[], object], runs: int, warm_up: bool = True) -> float:
    if warm_up:
        action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def probe(connection: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """An entry in the middle of the entryId range: what the point lookups ask for."""
    [(entry_id, accession)] = connection.execute(
        "SELECT entryId, uniprotAccession FROM entries ORDER BY entryId LIMIT 1 OFFSET (SELECT count(*) FROM entries) // 2"
    ).fetchall()
    return {"lookup by entryId": entry_id, "lookup by accession": accession}


def time_queries(connection: duckdb.DuckDBPyConnection, keys: dict[str, str], runs: int) -> dict[str, float]:
    def run(sql: str, key: str | None) -> Callable[[], object]:
        return lambda: connection.execute(sql, [key] if key else []).fetchall()

    return {label: median_seconds(run(sql, keys.get(label)), runs) for label, sql in QUERIES.items()}


def compacted_reference(connection: duckdb.DuckDBPyConnection, path: Path) -> duckdb.DuckDBPyConnection:
    """The entries table as one Parquet file sorted by entryId, and a plain connection with a view over it."""
    connection.execute(
        f"COPY (SELECT * FROM entries ORDER BY entryId) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})"
    )
    reference = duckdb.connect()
    reference.execute(f"CREATE VIEW entries AS SELECT * FROM read_parquet('{path}')")
    return reference


def process_wall(arguments: list[str], runs: int) -> float:
    """Median wall of whole `structome` processes (one warm-up first); a failing command raises."""
    command = [*STRUCTOME, *arguments]
    return median_seconds(lambda: subprocess.run(command, check=True, capture_output=True), runs)


def count_files(location: str) -> int:
    return len(DatabaseLayout(location).list_files(""))


def connect_and_close(location: str) -> None:
    catalog.connect(DatabaseLayout(location)).close()


def remove_database(location: str) -> None:
    layout = DatabaseLayout(location)
    if layout.is_local:
        shutil.rmtree(layout.base, ignore_errors=True)
    else:
        layout.fs.delete_dir_contents(layout.base, missing_dir_ok=True)


class S3Server:
    """The local S3 test server (moto) in its own process on a free port; `database(name)` is a database URI."""

    BUCKET = "structome-bench"

    def __enter__(self) -> S3Server:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            os.environ.setdefault(name, value)  # what the tests set; the structome processes inherit them
        port = free_port()
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.options = f"endpoint_override=http://127.0.0.1:{port}&scheme=http&region=us-east-1"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        pafs.FileSystem.from_uri(f"s3://{self.BUCKET}?{self.options}&allow_bucket_creation=true")[0].create_dir(
            self.BUCKET
        )
        return self

    def database(self, name: str) -> str:
        return f"s3://{self.BUCKET}/{name}?{self.options}"

    def __exit__(self, *exc) -> None:
        self.process.terminate()  # this server, by its pid
        self.process.wait(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def serve_ready(db: str, accession: str, timeout: float) -> tuple[float | None, float | None]:
    """Seconds until /api/prediction/<accession> answers 200, and the server's RSS (MiB) then; (None, RSS) past
    the timeout."""
    port = free_port()
    command = [*STRUCTOME, "serve", "--db", db, "--port", str(port), "--sql-workers", "0"]
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout:
            if server.poll() is not None:
                raise RuntimeError(f"structome serve exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/prediction/{accession}", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - started, rss_mib(server.pid)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        return None, rss_mib(server.pid)
    finally:
        server.kill()  # this server, by its pid
        server.wait()


UPDATE = SHARED / "uniprot" / "UP000000625_83333_ecoli_k12_2024.fasta"  # a proteome (E. coli K-12, 4,400 records)
_PLAN = """
import re, sys, time
sys.path[:0] = sys.argv[4:]
from fake_database import PROVENANCE
from structome.pipelines.build import plan_build
from structome.pipelines.settings import BuildSettings
from structome.storage.layout import DatabaseLayout
started = time.perf_counter()
plan = plan_build(sys.argv[2:4], DatabaseLayout(sys.argv[1]), BuildSettings(), PROVENANCE)
found = plan.entries_skipped + sum(1 for f in plan.ingest_failures if f.reason == "conflicts_with_database")
peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024  # not ru_maxrss: fork
print(time.perf_counter() - started, peak, found)
"""


def plan_update(db: str, runs: int) -> dict[str, float]:
    """Planning a build of a proteome plus 20 entries the database holds (whose lookup must find them), in its own
    process: median wall of the planning, and the process's peak RSS."""
    rows = catalog.query(DatabaseLayout(db), "SELECT * FROM entries USING SAMPLE 20 ROWS").to_pylist()
    stored = "".join(
        f">tr|{r['uniprotAccession']}|{r['uniprotId']} {r['uniprotDescription']} OS={r['organismScientificName']} "
        f"OX={r['taxId']} GN={r['gene']} PE=1 SV=1\n{r['uniprotSequence']}\n"
        for r in rows
    )
    results = []
    with tempfile.NamedTemporaryFile("w", suffix=".fasta") as fasta:
        fasta.write(stored)
        fasta.flush()
        tests = Path(__file__).resolve().parents[1] / "tests"
        command = [sys.executable, "-c", _PLAN, db, str(UPDATE), fasta.name, str(tests)]
        for _ in range(runs):
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            seconds, rss, found = output.splitlines()[-1].split()
            if int(found) < len(rows):  # more: synthetic accessions that happen to be E. coli's
                raise AssertionError(f"planning found {found} entries in the database, fewer than the {len(rows)}")
            results.append((float(seconds), float(rss)))
    return {"plan": statistics.median(s for s, _ in results), "plan_rss_mib": max(r for _, r in results)}


def measure(
    entries: int, db: str, scratch: Path, runs: int, serve_timeout: float, before: bool, direct: bool
) -> list[Figures]:
    """A new database at `db` (a folder or an object-store URI) as committed (if `before`), then compacted, then
    removed. `direct`: generated compacted (synthetic_db.make_compacted_database) and measured as it is."""
    remove_database(db)
    started = time.perf_counter()
    layout = (make_compacted_database if direct else make_database)(db, entries)
    generate = time.perf_counter() - started
    print(f"# {entries:,} entries written to {layout.location} in {generate:.0f} s", flush=True)
    stages = ["compacted (generated so)"] if direct else ["before compaction"] * before + ["compact"]
    try:
        measured = measure_database(db, stages, scratch / f"reference-{entries}.parquet", runs, serve_timeout)
        return [dataclasses.replace(f, generate=generate) for f in measured]
    finally:
        remove_database(db)


def measure_database(
    db: str, stages: list[str], reference_file: Path, runs: int, serve_timeout: float
) -> list[Figures]:
    """Each stage in turn: "compact" runs `structome compact` and measures the result, any other name measures
    the database as it is. The reference (a local file) is made once, first."""
    try:
        connection = catalog.connect(DatabaseLayout(db))
        keys = probe(connection)
        reference_connection = compacted_reference(connection, reference_file)
        connection.close()
        reference = time_queries(reference_connection, keys, runs)
        reference_connection.close()
        measured = []
        for stage in stages:
            started = time.perf_counter()
            if stage != "compact":
                measured.append(measure_stage(db, stage, keys, reference, runs, serve_timeout))
                continue
            subprocess.run([*STRUCTOME, "compact", "--db", db, "--grace", "0"], check=True, capture_output=True)
            compacted = measure_stage(db, "compacted", keys, reference, runs, serve_timeout)
            measured.append(dataclasses.replace(compacted, compact=time.perf_counter() - started))
        return measured
    finally:
        reference_file.unlink(missing_ok=True)


def measure_stage(
    db: str, stage: str, keys: dict[str, str], reference: dict[str, float], runs: int, serve_timeout: float
) -> Figures:
    connection = catalog.connect(DatabaseLayout(db))
    queries = time_queries(connection, keys, runs)
    (entries,) = connection.execute("SELECT count(*) FROM entries").fetchone()
    connection.close()
    accession = keys["lookup by accession"]
    ready, rss = serve_ready(db, accession, serve_timeout)
    return Figures(
        entries=entries,
        stage=stage,
        generate=0.0,
        compact=None,
        queries=queries,
        reference=reference,
        get=process_wall(["get", "--db", db, accession], runs),
        sql_select_1=process_wall(["sql", "--db", db, "SELECT 1"], runs),
        refresh=median_seconds(lambda: catalog.refresh_catalog(DatabaseLayout(db)), runs, warm_up=False),
        connect=median_seconds(lambda: connect_and_close(db), runs),
        **plan_update(db, runs),
        files=count_files(db),
        serve_ready=ready,
        serve_rss_mib=rss,
    )


def table(figures: list[Figures], serve_timeout: float) -> str:
    """A Markdown table: one row per size, structome's figure with the compacted reference in brackets."""
    header = ["entries", "layout", *(f"{label}, warm (reference)" for label in QUERIES)]
    header += ["`structome get`", '`structome sql "SELECT 1"`', "catalog refresh", "catalog connect"]
    header += ["planning an update / peak RSS", "files on disk"]
    header += ["`structome serve` ready / RSS", "generated in", "`structome compact`"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        cells = [f"{f.entries:,}", f.stage]
        cells += [f"{f.queries[label]:.3f} s ({f.reference[label]:.3f} s)" for label in QUERIES]
        cells += [f"{f.get:.2f} s", f"{f.sql_select_1:.2f} s", f"{f.refresh:.2f} s", f"{f.connect:.3f} s"]
        cells += [f"{f.plan:.1f} s / {f.plan_rss_mib:.0f} MiB", f"{f.files:,}"]
        cells.append(
            f"{f.serve_ready:.1f} s / {f.serve_rss_mib:.0f} MiB"
            if f.serve_ready is not None
            else f"not ready after {serve_timeout:.0f} s (RSS {f.serve_rss_mib:.0f} MiB)"
        )
        cells.append(f"{f.generate:.0f} s")
        cells.append(f"{f.compact:.0f} s" if f.compact is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SIDE_BY_SIDE: dict[str, Callable[[Figures], float | None]] = {  # figure -> its value (seconds unless named)
    **{f"{label}, warm": (lambda f, label=label: f.queries[label]) for label in QUERIES},
    "`structome get`": lambda f: f.get,
    '`structome sql "SELECT 1"`': lambda f: f.sql_select_1,
    "catalog refresh": lambda f: f.refresh,
    "catalog connect": lambda f: f.connect,
    "planning an update": lambda f: f.plan,
    "`structome serve` ready": lambda f: f.serve_ready,
    "`structome serve` RSS (MiB)": lambda f: f.serve_rss_mib,
    "`structome compact`": lambda f: f.compact,
    "files (objects)": lambda f: f.files,
}


def side_by_side(local: list[Figures], remote: list[Figures]) -> str:
    """A Markdown table: each figure on the local database and on the object store, and their ratio."""
    lines = ["| entries | layout | figure | local | object store | ratio |", "|---|---|---|---|---|---|"]
    for here, there in zip(local, remote, strict=True):
        for name, value in SIDE_BY_SIDE.items():
            a, b = value(here), value(there)
            ratio = f"{b / a:.1f}x" if a and b is not None else ""
            lines.append(f"| {here.entries:,} | {here.stage} | {name} | {_value(a)} | {_value(b)} | {ratio} |")
    return "\n".join(lines)


def _value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per figure (median)")
    parser.add_argument("--serve-timeout", type=float, default=300.0)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"), help="folder for the databases")
    parser.add_argument("--before", action="store_true", help="also measure the database before compaction")
    parser.add_argument(
        "--object-store", action="store_true", help="also on the local S3 test server (moto), side by side"
    )
    parser.add_argument(
        "--direct", action="store_true", help="generate each database compacted (make_compacted_database; for 10M)"
    )
    parser.add_argument("--db", nargs="+", default=[], help="measure these databases as they are, instead")
    args = parser.parse_args()
    print(f"# {dt.date.today()}, {os.cpu_count()} CPUs, duckdb {duckdb.__version__}, median of {args.runs}")
    if args.db:
        measured = []
        for db in args.db:
            reference = args.scratch / f"reference-{Path(db).name}.parquet"
            measured += measure_database(db, [f"as stored ({Path(db).name})"], reference, args.runs, args.serve_timeout)
            print("\n".join(table(measured[-1:], args.serve_timeout).splitlines()[2:]), flush=True)
        print(table(measured, args.serve_timeout))
        return
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(S3Server()) if args.object_store else None
        local, remote = [], []
        for entries in args.entries:
            places = [(local, str(args.scratch / f"scale-{entries}"))]
            places += [(remote, s3.database(f"scale-{entries}"))] if s3 is not None else []
            for figures, where in places:
                measured = measure(
                    entries, where, args.scratch, args.runs, args.serve_timeout, args.before, args.direct
                )
                figures += measured
                print("\n".join(table(measured, args.serve_timeout).splitlines()[2:]), flush=True)
    print(table(local, args.serve_timeout))
    if remote:
        print("\nobject store (moto):\n" + table(remote, args.serve_timeout))
        print("\n" + side_by_side(local, remote))


if __name__ == "__main__":
    main()
