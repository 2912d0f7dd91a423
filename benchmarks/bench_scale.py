"""How structome's reads scale with the database size, beside a compacted reference measured in the same run.

    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --entries 10000 100000 [1000000] [--runs 3]
    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --entries 10000000 --direct
    PYTHONPATH=... .venv/bin/python benchmarks/bench_scale.py --db DB [DB...]

For each size it writes a synthetic database in the committed layout (benchmarks/synthetic_db.py: 64 sequences
per shard, real-proteome lengths, real archives) into --scratch, measures it as committed (with --before; at 1M
that takes minutes), compacts it with `structome compact` (timed, a whole process), measures again, and deletes
it. With --direct each database is written compacted instead (synthetic_db.make_compacted_database: the segments
that builds of 100k entries leave; 10M entries in minutes) and measured as it is; --db measures existing
databases as they are and keeps them. Figures:

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
  server's VmRSS then (given up after --serve-timeout seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

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
    plan: float  # planning an update (storage.reader.committed_entries of a proteome and 20 stored entries)
    plan_rss_mib: float  # that process's peak RSS
    files: int  # files under the database folder
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


def count_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def serve_ready(db: Path, accession: str, timeout: float) -> tuple[float | None, float | None]:
    """Seconds until /api/prediction/<accession> answers 200, and the server's RSS (MiB) then; (None, RSS) past
    the timeout."""
    port = free_port()
    command = [*STRUCTOME, "serve", "--db", str(db), "--port", str(port), "--sql-workers", "0"]
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
sys.path[:0] = sys.argv[3:]
from fake_database import PROVENANCE
from structome.pipelines.build import plan_build
from structome.pipelines.settings import BuildSettings
from structome.storage.layout import DatabaseLayout
started = time.perf_counter()
plan = plan_build([sys.argv[2], str(sys.argv[1]) + ".stored.fasta"], DatabaseLayout(sys.argv[1]), BuildSettings(), PROVENANCE)
found = plan.entries_skipped + sum(1 for f in plan.ingest_failures if f.reason == "conflicts_with_database")
peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024  # not ru_maxrss: fork
print(time.perf_counter() - started, peak, found)
"""


def plan_update(db: Path, runs: int) -> dict[str, float]:
    """Planning a build of a proteome plus 20 entries the database holds (whose lookup must find them), in its own
    process: median wall of the planning, and the process's peak RSS."""
    rows = catalog.query(DatabaseLayout(db), "SELECT * FROM entries USING SAMPLE 20 ROWS").to_pylist()
    stored = "".join(
        f">tr|{r['uniprotAccession']}|{r['uniprotId']} {r['uniprotDescription']} OS={r['organismScientificName']} "
        f"OX={r['taxId']} GN={r['gene']} PE=1 SV=1\n{r['uniprotSequence']}\n"
        for r in rows
    )
    Path(f"{db}.stored.fasta").write_text(stored)
    here = Path(__file__).resolve()
    command = [sys.executable, "-c", _PLAN, str(db), str(UPDATE), str(here.parents[1] / "tests")]
    results = []
    try:
        for _ in range(runs):
            seconds, rss, found = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
            if int(found) < len(rows):  # more: synthetic accessions that happen to be E. coli's
                raise AssertionError(f"planning found {found} entries in the database, fewer than the {len(rows)}")
            results.append((float(seconds), float(rss)))
    finally:
        Path(f"{db}.stored.fasta").unlink()
    return {"plan": statistics.median(s for s, _ in results), "plan_rss_mib": max(r for _, r in results)}


def measure(entries: int, scratch: Path, runs: int, serve_timeout: float, before: bool, direct: bool) -> list[Figures]:
    """A new database as committed (if `before`), then compacted, then deleted. `direct`: generated compacted
    (synthetic_db.make_compacted_database) and measured as it is."""
    db = scratch / f"scale-{entries}"
    shutil.rmtree(db, ignore_errors=True)
    started = time.perf_counter()
    (make_compacted_database if direct else make_database)(db, entries)
    generate = time.perf_counter() - started
    print(f"# {entries:,} entries written in {generate:.0f} s", flush=True)
    try:
        stages = ["compacted (generated so)"] if direct else ["before compaction"] * before + ["compact"]
        return [dataclasses.replace(f, generate=generate) for f in measure_database(db, stages, runs, serve_timeout)]
    finally:
        shutil.rmtree(db, ignore_errors=True)


def measure_database(db: Path, stages: list[str], runs: int, serve_timeout: float) -> list[Figures]:
    """Each stage in turn: "compact" runs `structome compact` and measures the result, any other name measures
    the database as it is. The reference is made once, first."""
    reference_file = db.parent / f"{db.name}.reference.parquet"
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
            if stage == "compact":
                subprocess.run(
                    [*STRUCTOME, "compact", "--db", str(db), "--grace", "0"], check=True, capture_output=True
                )
                compacted = measure_stage(db, "compacted", keys, reference, runs, serve_timeout)
                measured.append(dataclasses.replace(compacted, compact=time.perf_counter() - started))
            else:
                measured.append(measure_stage(db, stage, keys, reference, runs, serve_timeout))
        return measured
    finally:
        reference_file.unlink(missing_ok=True)


def measure_stage(
    db: Path, stage: str, keys: dict[str, str], reference: dict[str, float], runs: int, serve_timeout: float
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
        get=process_wall(["get", "--db", str(db), accession], runs),
        sql_select_1=process_wall(["sql", "--db", str(db), "SELECT 1"], runs),
        refresh=median_seconds(lambda: catalog.refresh_catalog(DatabaseLayout(db)), runs, warm_up=False),
        **plan_update(db, runs),
        files=count_files(db),
        serve_ready=ready,
        serve_rss_mib=rss,
    )


def table(figures: list[Figures], serve_timeout: float) -> str:
    """A Markdown table: one row per size, structome's figure with the compacted reference in brackets."""
    header = ["entries", "layout", *(f"{label}, warm (reference)" for label in QUERIES)]
    header += ["`structome get`", '`structome sql "SELECT 1"`', "catalog refresh", "planning an update / peak RSS"]
    header += ["files on disk"]
    header += ["`structome serve` ready / RSS", "generated in", "`structome compact`"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in figures:
        cells = [f"{f.entries:,}", f.stage]
        cells += [f"{f.queries[label]:.3f} s ({f.reference[label]:.3f} s)" for label in QUERIES]
        cells += [f"{f.get:.2f} s", f"{f.sql_select_1:.2f} s", f"{f.refresh:.2f} s"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per figure (median)")
    parser.add_argument("--serve-timeout", type=float, default=300.0)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"), help="folder for the databases")
    parser.add_argument("--before", action="store_true", help="also measure the database before compaction")
    parser.add_argument(
        "--direct", action="store_true", help="generate each database compacted (make_compacted_database; for 10M)"
    )
    parser.add_argument("--db", type=Path, nargs="+", default=[], help="measure these databases as they are, instead")
    args = parser.parse_args()
    print(f"# {dt.date.today()}, {os.cpu_count()} CPUs, duckdb {duckdb.__version__}, median of {args.runs}")
    figures = []
    for db in args.db:
        figures += measure_database(db, [f"as stored ({db.name})"], args.runs, args.serve_timeout)
        print("\n".join(table(figures[-1:], args.serve_timeout).splitlines()[2:]), flush=True)
    if args.db:
        print(table(figures, args.serve_timeout))
        return
    for entries in args.entries:
        measured = measure(entries, args.scratch, args.runs, args.serve_timeout, args.before, args.direct)
        figures += measured
        print("\n".join(table(measured, args.serve_timeout).splitlines()[2:]), flush=True)
    print(table(figures, args.serve_timeout))


if __name__ == "__main__":
    main()
