"""CPU-side throughput of a build: ingest (FASTA -> entries, CRC64) and write (entry -> mmCIF + JSON + archive).

Run: .venv/bin/python benchmarks/bench_ingest_write.py [FASTA ...]
Prints figures measured side by side in this run; no GPU needed.
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from Bio.SeqUtils.CheckSum import crc64 as biopython_crc64

from structome.models.types import Entry, Prediction, Provenance
from structome.pipelines.checksums import crc64_many
from structome.pipelines.fasta import iter_fasta
from structome.pipelines.ingest import ingest
from structome.pipelines.settings import IngestSettings
from structome.pipelines.write import WriteContext, render_entry
from structome.storage.archive import ArchiveWriter
from structome.storage.layout import DatabaseLayout

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = [
    ROOT.parent / "shared/data/uniprot/UP000002311_559292_yeast.fasta.gz",
    ROOT / "tests/data/fasta/ecoli_k12_2020_slice.fasta",
]


def best_of(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_ingest(path: Path) -> None:
    sequences = [r.sequence_raw.upper().rstrip("*") for r in iter_fasta(path)]
    ingest_seconds = best_of(lambda: ingest([path], IngestSettings(), "bench"))
    ours = best_of(lambda: crc64_many(sequences))
    theirs = best_of(lambda: [biopython_crc64(s) for s in sequences], repeats=1)
    n = len(sequences)
    print(f"ingest {path.name}: {n} records in {ingest_seconds:.2f} s = {n / ingest_seconds:,.0f} records/s")
    print(
        f"  CRC64 Biopython {theirs / n * 1e6:.1f} us/seq, structome {ours / n * 1e6:.2f} us/seq: "
        f"{theirs / ours:.1f}x faster"
    )


def synthetic(length: int, seed: int) -> tuple[Entry, Prediction]:
    rng = np.random.default_rng(seed)
    sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
    mask = np.zeros((length, 37), bool)
    mask[:, :14] = True  # about a real protein's atom count (~8 atoms per residue on average with side chains)
    mask[:, 5:14] = rng.random((length, 9)) < 0.5
    coords = np.cumsum(rng.normal(0, 1.5, (length, 37, 3)), axis=0).astype(np.float32)
    prediction = Prediction(
        "p",
        sequence,
        coords,
        mask,
        rng.uniform(30, 95, length).astype(np.float32),
        0.7,
        rng.integers(0, 32, (length, length), dtype=np.uint8),
    )
    entry = Entry(
        "SM-P0-F1",
        "sp|P0|X",
        "x.fasta",
        "P0",
        sequence,
        1,
        1,
        length,
        "0" * 16,
        "0" * 32,
        "p",
        entry_name="X_ECOLI",
        database="sp",
        organism="Escherichia coli",
        tax_id=83333,
    )
    return entry, prediction


def bench_write(length: int = 300, count: int = 60) -> None:
    provenance = Provenance("esmfold-tiny", "v1", "w", "0" * 64, True, "stem=fp32,trunk=fp32", 4, None, "cpu")
    pairs = [synthetic(length, seed) for seed in range(count)]
    with tempfile.TemporaryDirectory() as folder:
        context = WriteContext(DatabaseLayout(folder), provenance, "bench", dt.date.today())
        per_entry = []
        with open(Path(folder) / "a.tar", "wb") as stream, ArchiveWriter(stream, archive="a.tar", mtime=0) as archive:
            for entry, prediction in pairs:
                started = time.perf_counter()
                for kind, (name, text) in render_entry(context, entry, prediction).items():
                    archive.add(entry.entry_id, kind, name, text.encode())
                per_entry.append(time.perf_counter() - started)
        size = (Path(folder) / "a.tar").stat().st_size
    median = statistics.median(per_entry)
    print(
        f"write {count} entries of {length} aa (mmCIF + PAE + confidence JSON, gzip, tar): "
        f"median {median * 1e3:.1f} ms/entry = {1 / median:.0f} entries/s/core; {size / count / 1e3:.0f} KB/entry stored"
    )


def main(paths: list[str]) -> None:
    print(
        f"# {dt.datetime.now():%Y-%m-%d %H:%M} on {platform.machine()} {platform.processor() or ''}, "
        f"python {platform.python_version()}"
    )
    for path in [Path(p) for p in paths] or [p for p in DEFAULT_INPUTS if p.exists()]:
        bench_ingest(path)
    bench_write()


if __name__ == "__main__":
    main(sys.argv[1:])
