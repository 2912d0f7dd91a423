"""`structome serve`, `get` and `sql` on large compacted databases: ready time, memory, lookup latency, search.

    PYTHONPATH=... .venv/bin/python benchmarks/bench_serve_index.py --entries 100000 [--requests 400]
    PYTHONPATH=... .venv/bin/python benchmarks/bench_serve_index.py --db /tmp/db-10m   # an existing database

--entries N writes a database in the committed layout (benchmarks/synthetic_db.py make_database), compacts it
with `structome compact --grace 0` (what a build does at its end) and measures it, then removes it (--keep keeps
it). --db measures existing databases as they are (compact them first to measure the compacted layout).

Figures, from one `structome serve --sql-workers 0` process (the code on PYTHONPATH; run it again with another
checkout's path to compare):
- ready: seconds from the start of the process until /api/prediction/<accession> answers 200; RSS then;
- /api/prediction/<accession> and /files/<name> (the stored gzip mmCIF): p50 / p90 / max over --requests random
  entries, one request at a time on a kept-alive connection (every lookup a cache miss: each entry is asked for
  once), then the same entries again (cache hits);
- search (`/?q=`): wall of a few kinds of text (an accession, a prefix, a common word, a word found nowhere);
- RSS after all of that;
- `structome get --db DB ACCESSION` and `structome sql --db DB "SELECT 1"`: process wall, median of 5.
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

from structome.storage.layout import DatabaseLayout  # noqa: E402


def compact(db: Path) -> float:
    """`structome compact --grace 0` on the database; seconds taken."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "structome", "compact", "--db", str(db), "--grace", "0"], check=True)
    return time.perf_counter() - started


def sample_entries(db: Path, count: int) -> tuple[int, list[tuple[str, str]]]:
    """The number of entries and `count` random (entryId, accession) pairs, read from the visible files."""
    files = [str(db / f) for f in DatabaseLayout(db).table_files("entries")]
    probe = duckdb.connect()
    try:
        relation = probe.read_parquet(files).select("entryId, uniprotAccession")
        [(total,)] = relation.aggregate("count(*)").fetchall()
        sample = probe.sql(f"SELECT * FROM relation USING SAMPLE {count} ROWS (reservoir, 7)").fetchall()
        return total, sample
    finally:
        probe.close()


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


def measure(db: Path, requests: int) -> None:
    count, sample = sample_entries(db, requests)
    layout = DatabaseLayout(db)
    print(
        f"## {db}: {count:,} entries; {len(layout.table_manifest().segments)} segments, "
        f"{len(layout.table_files('entries'))} entries files"
    )
    port = free_port()
    command = [sys.executable, "-m", "structome", "serve", "--db", str(db), "--port", str(port), "--sql-workers", "0"]
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
    cli_walls(db, sample[2][1])


def cli_walls(db: Path, accession: str) -> None:
    """Process walls of `structome get` and `structome sql "SELECT 1"`, median of 5 each."""
    for label, arguments in (
        (f"get {accession}", ["get", "--db", str(db), accession]),
        ('sql "SELECT 1"', ["sql", "--db", str(db), "SELECT 1"]),
    ):
        walls = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "structome", *arguments], check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - started)
        print(f"structome {label}: process wall, median of 5 {statistics.median(walls):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="*", default=[], help="make, compact and measure these sizes")
    parser.add_argument("--db", type=Path, nargs="*", default=[], help="existing databases (measured as they are)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the databases --entries made")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, duckdb {duckdb.__version__}, load {os.getloadavg()[0]:.1f}")
    for db in args.db:
        measure(db.resolve(), args.requests)
    for entries in args.entries:
        from synthetic_db import make_database

        db = args.scratch / f"serve-index-{entries}"
        shutil.rmtree(db, ignore_errors=True)
        started = time.perf_counter()
        make_database(db, entries)
        made = time.perf_counter() - started
        print(f"# made in {made:.0f} s, compacted in {compact(db):.0f} s")
        try:
            measure(db, args.requests)
        finally:
            if not args.keep:
                shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    main()
