"""Throughput and latency of `structome serve` under a load generator on loopback.

Builds a database of N copies of a real 196-residue AFDB structure (TRAP_ECOLI, ~38 KB gzip mmCIF members),
starts the real `structome serve` command in its own process, and drives it with wrk (Debian: `apt-get install
wrk`) for each route: requests/s, p50 and p99 latency, errors, and the server's memory before and after. In the
same run, the framework's floor: a bare Starlette app on the same uvicorn answering one 38 KB body from memory,
so the ratio shows what structome's work per download (index lookup, pread, SHA-256 check, HTTP headers) costs.
The generator shares the machine's cores with the server: on a 2-core machine both numbers are lower bounds.

    .venv/bin/python benchmarks/bench_serve.py [--entries 500] [--seconds 10] [--connections 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_database import afdb_entry, afdb_prediction, write_database  # noqa: E402

LUA = """
math.randomseed(7)
local n = {entries}
request = function()
  local path = string.format("{pattern}", math.random(1, n))
  return wrk.format("GET", path, {{["Accept-Encoding"] = "{encoding}"}})
end
"""
ROUTES = [  # (label, path pattern with %05d for the entry number, Accept-Encoding)
    ("mmCIF download, sent as stored (gzip)", "/files/SM-P%05d-F1-model_v1.cif", "gzip"),
    ("mmCIF download, decoded (no gzip)", "/files/SM-P%05d-F1-model_v1.cif", "identity"),
    ("PAE JSON download (gzip)", "/files/SM-P%05d-F1-predicted_aligned_error_v1.json", "gzip"),
    ("/api/prediction/{accession}", "/api/prediction/P%05d", "gzip"),
]


FLOOR_APP = """
import os, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
body = os.urandom(38_000)
async def member(request):
    return Response(body, media_type="chemical/x-mmcif", headers={"Content-Encoding": "gzip"})
uvicorn.run(Starlette(routes=[Route("/files/{name}", member)]), host="127.0.0.1", port=%d, log_level="warning")
"""


def build_database(folder: Path, count: int) -> None:
    prediction = afdb_prediction("p-trap")
    entries = [afdb_entry(prediction, accession=f"P{i:05d}") for i in range(1, count + 1)]
    write_database(folder, entries, [prediction], shard_size=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(command: list[str], ready_url: str) -> subprocess.Popen:
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(ready_url, timeout=2).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"{command[:2]} exited: {server.stderr.read()}") from None
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("structome serve did not answer within 120 s")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency.get("50"),
        "p99": latency.get("99"),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="structome serve --workers")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work:
        started = time.perf_counter()
        build_database(Path(work) / "db", args.entries)
        print(
            f"database: {args.entries} entries in {time.perf_counter() - started:.1f} s; "
            f"{os.cpu_count()} CPUs; wrk -t2 -c{args.connections} -d{args.seconds}s on loopback",
            flush=True,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        structome = [
            str(Path(sys.executable).with_name("structome")),
            "serve",
            "--db",
            str(Path(work) / "db"),
            "--port",
            str(port),
            "--sql-workers",
            "0",
            "--workers",
            str(args.workers),
        ]
        print(f"{'route':52} {'req/s':>8} {'p50':>9} {'p99':>9} {'non-2xx':>8}  socket errors")
        floor = load_routes(
            [("framework floor: bare Starlette, 38 KB from memory", "/files/%05d", "gzip")],
            [sys.executable, "-c", FLOOR_APP % port],
            url,
            work,
            args,
        )
        rates = load_routes(ROUTES, structome, url, work, args, report_memory=args.workers == 1)
        print(f"stored-gzip mmCIF downloads reach {rates[0] / floor[0]:.2f} of the framework floor")


def load_routes(routes, command: list[str], url: str, work: str, args, report_memory: bool = False) -> list[float]:
    """Start the server, drive each route with wrk, stop it; requests/s per route."""
    server = start_server(command, url + routes[0][1] % 1)
    rates = []
    try:
        rss_start = rss_mib(server.pid)
        for label, pattern, encoding in routes:
            script = Path(work) / "load.lua"
            script.write_text(LUA.format(entries=args.entries, pattern=pattern, encoding=encoding))
            result = run_wrk(url, script, args.seconds, args.connections)
            rates.append(result["rps"])
            print(
                f"{label:52} {result['rps']:8.0f} {result['p50']:>9} {result['p99']:>9} "
                f"{result['non2xx']:8d}  {result['socket_errors']}",
                flush=True,
            )
        if report_memory:
            print(f"server memory (RSS): {rss_start:.0f} MiB at start, {rss_mib(server.pid):.0f} MiB after the load")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rates


if __name__ == "__main__":
    main()
