"""`structome serve` on large databases: ready time, memory, and lookup latency of the point-query index.

    PYTHONPATH=... .venv/bin/python benchmarks/bench_serve_index.py --entries 100000 1000000 [--requests 400]
    PYTHONPATH=... .venv/bin/python benchmarks/bench_serve_index.py --db /tmp/db-1m [--keep]

Each database comes from benchmarks/synthetic_db.py (or --db: existing ones). Compaction is not merged yet,
so the server reads a STAND-IN for it: `entries` and `files` rewritten into one Parquet file each, sorted by
entryId, row groups of --row-group rows (DB/compacted-stand-in/), and `catalog.connect_detached` replaced in
the server process by views that list exactly those two files (what the compacted catalog will list).

Figures, from one `structome serve --sql-workers 0` process:
- ready: seconds from the start of the process until /api/prediction/<accession> answers 200; RSS then;
- /api/prediction/<accession> and /files/<name> (stored gzip, and a derived .pdb is left out: it renders):
  p50 / p90 / max over --requests random entries, one request at a time on a kept-alive connection (every
  lookup a cache miss: each entry is asked for once), then the same entries again (cache hits);
- search (`/?q=`): wall of a few kinds of text (an accession, a prefix, a common word, a word found nowhere);
- RSS after all of that.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAND_IN = "compacted-stand-in"
TABLES = ("entries", "files")


def compact_stand_in(db: Path, row_group: int) -> float:
    """Write DB/compacted-stand-in/{entries,files}.parquet sorted by entryId; seconds taken."""
    started = time.perf_counter()
    folder = db / STAND_IN
    folder.mkdir(exist_ok=True)
    connection = duckdb.connect()
    connection.execute(f"SET file_search_path = '{db}'")
    for table in TABLES:
        connection.execute(
            f"COPY (SELECT * FROM read_parquet('shards/*/{table}.parquet') ORDER BY entryId) "
            f"TO '{folder / table}.parquet' (FORMAT parquet, ROW_GROUP_SIZE {row_group})"
        )
    connection.close()
    return time.perf_counter() - started


def serve_stand_in(db: str, port: int) -> None:
    """Run `structome serve` with the catalog's views over the stand-in files (this process only)."""
    from structome.jobs.cli.main import main
    from structome.storage import catalog

    def connect_detached(layout):
        connection = duckdb.connect()
        connection.execute(f"SET file_search_path = '{layout.root}'")
        for table in TABLES:
            connection.execute(
                f"CREATE TEMPORARY VIEW {table} AS SELECT * FROM read_parquet(['{STAND_IN}/{table}.parquet'])"
            )
        return connection

    catalog.connect_detached = connect_detached
    main(["serve", "--db", db, "--port", str(port), "--sql-workers", "0"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def get(connection: http.client.HTTPConnection, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    response.read()
    return response.status, time.perf_counter() - started


def latencies(port: int, paths: list[str]) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for path in paths:
        status, seconds = get(connection, path)
        if status != 200:
            raise RuntimeError(f"{path}: {status}")
        times.append(seconds * 1000)
    connection.close()
    times.sort()
    return f"p50 {statistics.median(times):.1f} / p90 {times[len(times) * 9 // 10]:.1f} / max {times[-1]:.1f} ms"


def measure(db: Path, requests: int, row_group: int) -> None:
    compacted = compact_stand_in(db, row_group)
    probe = duckdb.connect()
    sample = probe.execute(
        f"SELECT entryId, uniprotAccession FROM read_parquet('{db / STAND_IN}/entries.parquet') "
        f"USING SAMPLE {requests} ROWS (reservoir, 7)"
    ).fetchall()
    count = probe.execute(f"SELECT count(*) FROM read_parquet('{db / STAND_IN}/entries.parquet')").fetchone()[0]
    probe.close()
    print(f"## {db}: {count:,} entries; stand-in written in {compacted:.1f} s (row groups of {row_group:,})")
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(db), str(port)]
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = f"/api/prediction/{sample[0][1]}"
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
            try:
                status, _ = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), first)
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        ready = time.perf_counter() - started
        print(f"ready in {ready:.2f} s, RSS {rss_mib(server.pid):.0f} MiB")
        predictions = [f"/api/prediction/{accession}" for _, accession in sample]
        files = [f"/files/{entry_id}-model_v1.cif" for entry_id, _ in sample]
        random.Random(7).shuffle(files)
        for label, paths in (("/api/prediction", predictions), ("/files (mmCIF, gzip)", files)):
            print(f"{label:22} {len(paths)} entries, cache misses: {latencies(port, paths)}")
            print(f"{label:22} the same again, cache hits: {latencies(port, paths)}")
        accession = sample[1][1]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for label, text in (
            ("an accession", accession),
            ("an accession prefix", accession[:4]),
            ("a common word", "sapiens"),
            ("a word found nowhere", "zzqx"),
            ("an entry name's tail", "_drome"),
        ):
            timings = [get(connection, f"/?q={quote(text)}")[1] for _ in range(3)]
            print(f"search, {label} ({text!r}): median of 3 {statistics.median(timings) * 1000:.0f} ms")
        print(f"RSS after the load: {rss_mib(server.pid):.0f} MiB")
    finally:
        server.terminate()  # this server, by its pid
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="*", default=[])
    parser.add_argument("--db", type=Path, nargs="*", default=[], help="existing databases (left in place)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"))
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)  # the server process itself
    args = parser.parse_args()
    if args.serve:
        serve_stand_in(args.serve[0], int(args.serve[1]))
        return
    print(f"# {os.cpu_count()} CPUs, duckdb {duckdb.__version__}, load {os.getloadavg()[0]:.1f}")
    for db in args.db:
        measure(db.resolve(), args.requests, args.row_group)
    for entries in args.entries:
        from synthetic_db import make_database

        db = args.scratch / f"serve-index-{entries}"
        shutil.rmtree(db, ignore_errors=True)
        make_database(db, entries)
        try:
            measure(db, args.requests, args.row_group)
        finally:
            shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    main()
