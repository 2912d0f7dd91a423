"""Synthetic structome databases of any size, in exactly the layout a build commits, written in minutes.

    from synthetic_db import make_database
    make_database("/tmp/db", 100_000)                      # or: python benchmarks/synthetic_db.py DB N
    make_database("s3://bucket/db?endpoint_override=...", 10_000)   # an object store, committed as a build does

What is real: the folder layout (shards committed through `DatabaseLayout.begin_shard`/`commit_shard`), the
four Parquet tables per shard with the schemas of `storage.schema`, 64 unique sequences per shard, shards cut
from the length-sorted sequences like a build's (so every shard spans the whole entryId range), lengths drawn
from real proteomes (../shared/data/uniprot; a sequence longer than 1,400 residues stands as its first window),
unique UniProt-style accessions, taxIds of a few organisms, the residues table's row count (one row per residue),
MD5, CRC64 and prediction ids of the sequences, a `builds` row, `structome.json` and `catalog.duckdb`.

What is made up: the residues (random letters with the proteomes' composition) and pLDDT values (the entries'
pLDDT columns agree with the residues table). Archives are real but shared: ONE template shard of 64 entries is
rendered with the real writers (mmCIF, PAE and confidence JSON of random predictions, gzip members in a tar),
and every shard's archive.tar is a hard link to it; each files row points at a real member (offset, length,
SHA-256), so `structome get` does its real ranged read and checksum check, but the bytes it returns name a
template entry, not the one asked for. Good for timing; not for reading structures. An object store has no hard
links: there each shard's archive is a server-side copy of the template object (one CopyObject, no upload).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from fake_database import PROVENANCE, entry, random_prediction  # noqa: E402

from structome.models.types import FileKind, PredictionRequest  # noqa: E402
from structome.pipelines.checksums import crc64_many  # noqa: E402
from structome.pipelines.fasta import iter_fasta  # noqa: E402
from structome.pipelines.ingest import prediction_id  # noqa: E402
from structome.pipelines.write import ARCHIVE_NAME, WriteContext, render_entry  # noqa: E402
from structome.storage import catalog, rows, schema  # noqa: E402
from structome.storage.afdb_json import entry_file_names  # noqa: E402
from structome.storage.archive import ArchiveWriter  # noqa: E402
from structome.storage.layout import DatabaseLayout  # noqa: E402
from structome.storage.plddt import FRACTION_COLUMNS, band_indices  # noqa: E402
from structome.storage.schema import ENTRIES, FILES, RESIDUES  # noqa: E402

logger = logging.getLogger(__name__)

SHARD_SIZE = 64  # unique sequences per shard, as a build cuts them
MAX_LENGTH = 1400  # AFDB window: longer sequences stand as their first window
PROTEOMES = sorted((ROOT.parent / "shared" / "data" / "uniprot").glob("*.fasta*"))
BUILD_ID = "20261201T000000Z-synthe"
CREATED = dt.date(2026, 12, 1)
MODEL_KEY = "synthetic"  # part of every prediction id
KINDS = (FileKind.CIF, FileKind.PAE, FileKind.CONFIDENCE)  # the order write_shard adds an entry's files


@dataclass(frozen=True)
class Organism:
    tax_id: int
    name: str  # organismScientificName
    mnemonic: str  # UniProt species code of entry names, e.g. ECOLI
    share: float  # fraction of the entries


ORGANISMS = (
    Organism(9606, "Homo sapiens", "HUMAN", 0.35),
    Organism(10090, "Mus musculus", "MOUSE", 0.25),
    Organism(559292, "Saccharomyces cerevisiae (strain ATCC 204508 / S288c)", "YEAST", 0.15),
    Organism(83333, "Escherichia coli (strain K12)", "ECOLI", 0.15),
    Organism(7227, "Drosophila melanogaster", "DROME", 0.10),
)


@dataclass(frozen=True)
class Proteome:
    """What the synthetic entries borrow from real proteomes."""

    lengths: np.ndarray  # [records] residues, capped at MAX_LENGTH
    letters: np.ndarray  # [20] uint8 ASCII codes of the residues seen
    frequencies: np.ndarray  # [20] their shares


def read_proteome(paths=PROTEOMES) -> Proteome:
    lengths, counts = [], np.zeros(256, np.int64)
    for path in paths:
        for record in iter_fasta(path):
            sequence = record.sequence_raw.upper().rstrip("*")
            if sequence:
                lengths.append(min(len(sequence), MAX_LENGTH))
                counts += np.bincount(np.frombuffer(sequence.encode(), np.uint8), minlength=256)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8)
    frequencies = counts[letters] / counts[letters].sum()
    return Proteome(np.array(lengths, np.int64), letters, frequencies)


def make_database(folder: str | os.PathLike, entries: int, *, seed: int = 0) -> DatabaseLayout:
    """Write `entries` entries (one fragment each) into a new database at `folder` and refresh its catalog."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    layout = DatabaseLayout(folder)
    layout.create()
    proteome = read_proteome()
    table = _entries(rng, proteome, entries)
    plddt, fractions = _plddt(rng, table["uniprotEnd"].to_numpy())
    table = _with_plddt_columns(rng, table, plddt, fractions)
    template = _render_template(layout, rng, proteome)
    offsets = np.concatenate([[0], np.cumsum(table["uniprotEnd"].to_numpy())])
    for number, start in enumerate(range(0, entries, SHARD_SIZE)):
        part = table.slice(start, SHARD_SIZE)
        _write_shard(layout, part, plddt[offsets[start] : offsets[start + len(part)]], template)
        if number % 1000 == 999:
            logger.info("%d of %d entries written", start + len(part), entries)
    template.remove(layout)  # every shard holds a hard link to it (or a copy)
    _write_build(layout, table, len(range(0, entries, SHARD_SIZE)), time.perf_counter() - started)
    catalog.refresh_catalog(layout)
    return layout


# ---- entries ----------------------------------------------------------------------------------------------


def _entries(rng: np.random.Generator, proteome: Proteome, count: int) -> pa.Table:
    """The entries table without shard and pLDDT columns, longest sequences first (the shards' order)."""
    lengths = np.sort(rng.choice(proteome.lengths, count))[::-1]  # ties in random order: accessions are random
    accessions = _accessions(rng, count)
    sequences = _sequences(rng, proteome, lengths)
    organisms = rng.choice(len(ORGANISMS), count, p=[o.share for o in ORGANISMS])
    mnemonic = np.array([o.mnemonic for o in ORGANISMS], object)[organisms]
    names = [f"{a}_{m}" for a, m in zip(accessions, mnemonic, strict=True)]
    entry_ids = [f"SM-{a}-F1" for a in accessions]
    columns = {
        "entryId": entry_ids,
        "uniprotAccession": accessions,
        "uniprotId": names,
        "uniprotDescription": np.full(count, "Uncharacterized protein", object),
        "gene": [f"g{a.lower()}" for a in accessions],
        "taxId": np.array([o.tax_id for o in ORGANISMS])[organisms],
        "organismScientificName": np.array([o.name for o in ORGANISMS], object)[organisms],
        "uniprotStart": np.ones(count, np.int32),
        "uniprotEnd": lengths.astype(np.int32),
        "uniprotSequence": sequences,
        "sequenceChecksum": crc64_many(sequences),
        "sequenceMd5": [hashlib.md5(s.encode()).hexdigest() for s in sequences],
        "sequenceVersion": np.ones(count, np.int32),
        "sourceDatabase": np.full(count, "tr", object),
        "fragment": np.ones(count, np.int32),
        "predictionId": [prediction_id(MODEL_KEY, s) for s in sequences],
        "recordId": [f"tr|{a}|{n}" for a, n in zip(accessions, names, strict=True)],
        "recordNumber": rng.permutation(count).astype(np.int32) + 1,
        "sourceFile": np.full(count, "synthetic.fasta", object),
    }
    return pa.table({name: pa.array(values, ENTRIES.field(name).type) for name, values in columns.items()})


def _accessions(rng: np.random.Generator, count: int) -> list[str]:
    """Unique UniProt-style accessions [OPQ][0-9][A-Z0-9]{3}[0-9] (14 million possible), in random order."""
    alphabets = [b"OPQ", b"0123456789", *[b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"] * 3, b"0123456789"]
    sizes = np.array([len(a) for a in alphabets])
    if count > sizes.prod():
        raise ValueError(f"at most {sizes.prod():,} accessions")
    numbers = rng.choice(int(sizes.prod()), count, replace=False)
    codes = np.empty((count, len(alphabets)), np.uint8)
    for position in reversed(range(len(alphabets))):  # mixed radix, last position fastest
        numbers, digit = np.divmod(numbers, sizes[position])
        codes[:, position] = np.frombuffer(alphabets[position], np.uint8)[digit]
    return codes.view(f"S{len(alphabets)}").ravel().astype(str).tolist()


def _sequences(rng: np.random.Generator, proteome: Proteome, lengths: np.ndarray) -> list[str]:
    """Random residues with the proteome's composition (unique, with overwhelming odds)."""
    text = proteome.letters[rng.choice(len(proteome.letters), int(lengths.sum()), p=proteome.frequencies)]
    text = text.tobytes().decode()
    ends = np.cumsum(lengths).tolist()
    return [text[end - n : end] for end, n in zip(ends, lengths.tolist(), strict=True)]


def _plddt(rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-residue pLDDT (an entry mean plus noise, 0-100) and each entry's [N, 4] band fractions."""
    means = rng.uniform(35, 95, len(lengths))
    plddt = np.clip(np.repeat(means, lengths) + rng.normal(0, 8, int(lengths.sum())), 0, 100).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bands = band_indices(plddt)
    counts = np.stack([np.add.reduceat((bands == b).astype(np.int64), starts) for b in range(len(FRACTION_COLUMNS))])
    return plddt, (counts / lengths).T


def _with_plddt_columns(rng: np.random.Generator, table: pa.Table, plddt: np.ndarray, fractions) -> pa.Table:
    lengths = table["uniprotEnd"].to_numpy()
    mean = np.add.reduceat(plddt.astype(np.float64), np.concatenate([[0], np.cumsum(lengths)[:-1]])) / lengths
    count = len(table)
    columns = {
        "globalMetricValue": np.round(mean, 2),
        **{name: fractions[:, i] for i, name in enumerate(FRACTION_COLUMNS)},
        "ptm": rng.uniform(0.2, 0.9, count),
        "model": np.full(count, PROVENANCE.model, object),
        "modelVersion": np.full(count, PROVENANCE.model_version, object),
        "untrained": np.full(count, PROVENANCE.untrained),
        "latestVersion": np.ones(count, np.int32),
        "modelCreatedDate": np.full(count, CREATED),
        "build": np.full(count, BUILD_ID, object),
    }
    for name, values in columns.items():
        table = table.append_column(ENTRIES.field(name), pa.array(values, ENTRIES.field(name).type))
    return table


# ---- the template archive and the shards ------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One rendered shard archive and its files rows (3 per entry, in write order)."""

    path: str  # the tar every shard hard-links (or copies, on object stores), as a path of the layout's file system
    files: pa.Table  # FILES rows of its members

    def place(self, layout: DatabaseLayout, folder: str) -> None:
        """Put the archive into a shard's folder: a hard link locally, the store's own copy on object stores."""
        if layout.is_local:
            os.link(self.path, f"{folder}/{ARCHIVE_NAME}")
        else:
            layout.fs.copy_file(self.path, f"{folder}/{ARCHIVE_NAME}")

    def remove(self, layout: DatabaseLayout) -> None:
        layout.fs.delete_file(self.path)


def _render_template(layout: DatabaseLayout, rng: np.random.Generator, proteome: Proteome) -> Template:
    """SHARD_SIZE random predictions of proteome lengths rendered by the real writers into one archive."""
    context = WriteContext(layout, PROVENANCE, BUILD_ID, CREATED)
    path = f"{layout.staging}/synthetic-template.tar" if layout.is_local else layout.path("synthetic-template.tar")
    locations = []
    with (
        layout.fs.open_output_stream(path) as stream,
        ArchiveWriter(stream, archive=ARCHIVE_NAME, mtime=time.time()) as archive,
    ):
        for number, length in enumerate(rng.choice(proteome.lengths, SHARD_SIZE).tolist()):
            sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
            record = entry(f"SM-T{number:05d}-F1", f"T{number:05d}", sequence, f"t{number}")
            prediction = random_prediction(PredictionRequest(f"t{number}", sequence), seed=number)
            for kind, (name, text) in render_entry(context, record, prediction).items():
                locations.append(archive.add(record.entry_id, kind, name, text.encode()))
    return Template(path, rows.files_table(locations))


def _write_shard(layout: DatabaseLayout, part: pa.Table, plddt: np.ndarray, template: Template) -> None:
    """One shard's four tables and its archive, committed like write_shard commits."""
    shard_id = hashlib.sha256("\n".join(sorted(part["entryId"].to_pylist())).encode()).hexdigest()[:20]
    target = layout.begin_shard(shard_id)
    template.place(layout, target.folder)
    tables = {
        "entries": part.append_column(ENTRIES.field("shard"), pa.array([shard_id] * len(part))).select(ENTRIES.names),
        "residues": _residues(part, plddt),
        "files": _files(part, template, f"{target.relative}/{ARCHIVE_NAME}"),
        "failures": rows.failures_table([], BUILD_ID),
    }
    for name, table in tables.items():
        if not table.schema.equals(schema.TABLES[name]):
            raise AssertionError(f"{name}: not the schema of storage.schema")
        pq.write_table(table, f"{target.folder}/{name}.parquet", compression="zstd", filesystem=layout.fs)
    if not layout.commit_shard(target):
        raise RuntimeError(f"shard {shard_id} was already committed")


_LETTERS = pa.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _residues(part: pa.Table, plddt: np.ndarray) -> pa.Table:
    lengths = part["uniprotEnd"].to_numpy()
    owner = np.repeat(np.arange(len(part)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    number = (np.arange(int(lengths.sum())) - first[owner] + 1).astype(np.int32)
    letters = np.frombuffer("".join(part["uniprotSequence"].to_pylist()).encode(), np.uint8)
    codes = np.searchsorted(np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8), letters)
    columns = [part["entryId"].take(owner), number, number, _LETTERS.take(codes), plddt]
    return pa.Table.from_arrays([pa.array(c) if isinstance(c, np.ndarray) else c for c in columns], schema=RESIDUES)


def _files(part: pa.Table, template: Template, archive: str) -> pa.Table:
    """The template's files rows renamed to this shard's entries (member, offset, length and SHA-256 kept)."""
    count = 3 * len(part)
    files = template.files.slice(0, count)
    entry_ids = part["entryId"].take(np.repeat(np.arange(len(part)), 3))
    suffixes = pa.array([entry_file_names("", 1)[kind] for kind in KINDS] * len(part))
    replaced = {
        "entryId": entry_ids,
        "fileName": pc.binary_join_element_wise(entry_ids, suffixes, ""),
        "archive": pa.array([archive] * count),
    }
    return pa.table({name: replaced.get(name, files[name]) for name in FILES.names}, schema=FILES)


def _write_build(layout: DatabaseLayout, table: pa.Table, shards: int, seconds: float) -> None:
    """The builds row (and the build's empty failure ledger) that a completed build leaves."""
    finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
    record = {
        "build": BUILD_ID,
        "status": "completed",
        "startedAt": finished - dt.timedelta(seconds=round(seconds)),
        "finishedAt": finished,
        "wallSeconds": seconds,
        "inputs": ["synthetic.fasta"],
        **{column: getattr(PROVENANCE, name) for column, name in _PROVENANCE_COLUMNS.items()},
        "libraryVersions": "{}",
        "settings": "{}",
        "records": len(table),
        "entriesPlanned": len(table),
        "entriesSkipped": 0,
        "entriesWritten": len(table),
        "predictions": len(table),
        "residues": int(pc.sum(table["uniprotEnd"]).as_py()),
        "failures": 0,
        "shards": shards,
        "structomeVersion": "synthetic",
    }
    layout.write_parquet_atomic(rows.builds_table(record), layout.build_row(BUILD_ID))
    layout.write_parquet_atomic(rows.failures_table([], BUILD_ID), layout.build_failures(BUILD_ID))


_PROVENANCE_COLUMNS = {
    "model": "model",
    "modelVersion": "model_version",
    "weights": "weights",
    "weightsSha256": "weights_sha256",
    "untrained": "untrained",
    "precision": "precision",
    "numRecycles": "num_recycles",
    "chunkSize": "chunk_size",
}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    began = time.perf_counter()
    make_database(sys.argv[1], int(sys.argv[2]))
    print(f"{sys.argv[2]} entries in {sys.argv[1]}: {time.perf_counter() - began:.1f} s")
