"""CLI start-up benchmark: wall time of whole `structome` processes on a small database, beside the floors.

Run: .venv/bin/python benchmarks/bench_cli.py [--entries 500] [--runs 9]

A command that does not fold must not import torch, Ray or transformers: issue 11 asks `structome sql "SELECT 1"`
and `structome get` to finish in < 0.5 s (they import not even pyarrow or numpy). Printed beside them, measured in
the same run: a bare Python start, and one that imports only what those commands cannot do without (click, DuckDB). Each figure is the median
of --runs whole processes (the first, cold one dropped). The database is synthetic, written in the committed
layout by the tests' database writer (real AFDB structure, real archives), so `get` does its real work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from fake_database import afdb_entry, afdb_prediction, write_database  # noqa: E402

STRUCTOME = str(Path(sys.executable).with_name("structome"))


def build_database(folder: Path, count: int) -> None:
    prediction = afdb_prediction("p-trap")
    entries = [afdb_entry(prediction, accession=f"P{i:05d}") for i in range(1, count + 1)]
    write_database(folder, entries, [prediction], shard_size=64)


def wall(command: list[str], runs: int) -> float:
    """Median wall seconds of `runs` processes after one warm-up."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def heavy_imports(command: list[str]) -> list[str]:
    """Which of torch, ray, transformers, pandas, gemmi, pyarrow, numpy the command imports."""
    probe = (
        "import runpy, sys; sys.argv = ['structome', *sys.argv[1:]];"
        "import atexit; atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'ray', 'transformers', 'pandas', 'gemmi', 'pyarrow', 'numpy'}), file=sys.stderr));"
        "runpy.run_module('structome', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command[1:]], capture_output=True, text=True)
    return result.stderr.strip().splitlines()[-1:] if result.stderr else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "db"
        build_database(db, args.entries)
        floors = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import click, duckdb'": [sys.executable, "-c", "import click, duckdb"],
        }
        commands = {
            'structome sql "SELECT 1"': [STRUCTOME, "sql", "--db", str(db), "SELECT 1"],
            "structome sql point lookup": [
                STRUCTOME,
                "sql",
                "--db",
                str(db),
                "SELECT entryId FROM entries WHERE uniprotAccession = 'P00042'",
            ],  # fmt: skip
            "structome get P00042": [STRUCTOME, "get", "--db", str(db), "P00042"],
            "structome --help": [STRUCTOME, "--help"],
        }
        floor = {name: wall(command, args.runs) for name, command in floors.items()}
        print(f"# {args.entries} entries, median of {args.runs} processes; python {sys.version.split()[0]}")
        for name, seconds in floor.items():
            print(f"{name:<45} {seconds:6.3f} s   (floor)")
        base = floor["python -c 'import click, duckdb'"]
        for name, command in commands.items():
            seconds = wall(command, args.runs)
            imports = ", ".join(heavy_imports(command)) or "[]"
            print(f"{name:<45} {seconds:6.3f} s   {seconds / base:4.2f}x the import floor; imports {imports}")


if __name__ == "__main__":
    main()
