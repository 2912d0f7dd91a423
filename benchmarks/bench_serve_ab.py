"""Two checkouts' `structome serve` side by side on one database, each request asked of both in turn.

    .venv/bin/python benchmarks/bench_serve_ab.py --db DB --code main=/tmp/pp-main --code new=/tmp/pp-new
        [--requests 200]

Each --code NAME=PATH starts one `structome serve --sql-workers 0` with PYTHONPATH=PATH (a folder holding a
`structome` link to a checkout). Then, for --requests random entries (benchmarks/bench_serve_index.py's sample),
/api/prediction/<accession> and then /files/<entryId>-model_v1.cif are asked of every server in turn, the order
alternating from one entry to the next, so that a loaded machine's drift hits every server alike (on this shared
2-core VM, two runs of bench_serve_index.py minutes apart differed by more than the change measured). Every
request is a cache miss: each entry is asked once per server. Figures per server: p50 / p90 wall, and the
server process's CPU time per request (from /proc/<pid>/stat: less sensitive to the load than the wall).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve_index import free_port, get, sample_entries  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(db: Path, pythonpath: str, accession: str) -> tuple[subprocess.Popen, http.client.HTTPConnection]:
    """A server of the code on `pythonpath`, once /api/prediction/<accession> answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "structome", "serve", "--db", str(db), "--port", str(port), "--sql-workers", "0"]
    server = subprocess.Popen(
        command, env={**os.environ, "PYTHONPATH": pythonpath}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:] if server.stderr else ''}")
        try:
            if get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), f"/api/prediction/{accession}")[0] == 200:
                return server, http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        except OSError:
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--code", action="append", required=True, help="NAME=PYTHONPATH, two or more")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    codes = dict(code.split("=", 1) for code in args.code)
    _, sample = sample_entries(args.db.resolve(), args.requests + 1)
    servers: dict[str, tuple[subprocess.Popen, http.client.HTTPConnection]] = {}
    print(f"# {args.db}, {len(sample) - 1} entries, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    try:
        for name, pythonpath in codes.items():
            servers[name] = start(args.db.resolve(), pythonpath, sample[0][1])  # sample[0] only warms them up
        kinds = {
            "/api/prediction": [f"/api/prediction/{accession}" for _, accession in sample[1:]],
            "/files (mmCIF, gzip)": [f"/files/{entry_id}-model_v1.cif" for entry_id, _ in sample[1:]],
        }
        for label, paths in kinds.items():
            walls: dict[str, list[float]] = {name: [] for name in codes}
            cpu = {name: cpu_seconds(server.pid) for name, (server, _) in servers.items()}
            for number, path in enumerate(paths):
                for name in list(codes)[:: 1 if number % 2 == 0 else -1]:
                    status, seconds = get(servers[name][1], path)
                    if status != 200:
                        raise RuntimeError(f"{name} {path}: {status}")
                    walls[name].append(seconds * 1000)
            for name, times in walls.items():
                times.sort()
                per_request = (cpu_seconds(servers[name][0].pid) - cpu[name]) / len(times) * 1000
                print(
                    f"{label:22} {name:10} cache misses: p50 {statistics.median(times):.1f} / "
                    f"p90 {times[len(times) * 9 // 10]:.1f} ms, server CPU {per_request:.2f} ms per request"
                )
        print(f"# load {os.getloadavg()[0]:.1f} at the end")
    finally:
        for server, _ in servers.values():
            server.terminate()  # these servers, by their pids
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
