"""Synthetic structome databases of any size, in exactly the layout a build commits, written in minutes.

    from synthetic_db import make_database
    make_database("/tmp/db", 100_000)                      # or: python benchmarks/synthetic_db.py DB N
    make_database("s3://bucket/db?endpoint_override=...", 10_000)   # an object store, committed as a build does
    make_compacted_database("/tmp/db", 10**7)              # or: python benchmarks/synthetic_db.py DB N --compacted

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
import json
import logging
import os
import shutil
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

from structome.jobs.build.job import BUILD_COMPACTION  # noqa: E402
from structome.models.types import FileKind, PredictionRequest  # noqa: E402
from structome.pipelines.checksums import crc64_many  # noqa: E402
from structome.pipelines.fasta import iter_fasta  # noqa: E402
from structome.pipelines.ingest import prediction_id  # noqa: E402
from structome.pipelines.write import ARCHIVE_NAME, WriteContext, render_entry  # noqa: E402
from structome.storage import catalog, rows, schema  # noqa: E402
from structome.storage.afdb_json import entry_file_names  # noqa: E402
from structome.storage.archive import ArchiveWriter  # noqa: E402
from structome.storage.compaction import plan_compaction  # noqa: E402
from structome.storage.layout import DatabaseLayout  # noqa: E402
from structome.storage.parts import PartWriter  # noqa: E402
from structome.storage.plddt import FRACTION_COLUMNS, band_indices  # noqa: E402
from structome.storage.schema import ENTRIES, FILES, RESIDUES  # noqa: E402
from structome.storage.segments import SEGMENT_TABLES, Segment, SegmentFile, TableManifest, part_path  # noqa: E402

logger = logging.getLogger(__name__)

SHARD_SIZE = 64  # unique sequences per shard, as a build cuts them
MAX_LENGTH = 1400  # AFDB window: longer sequences stand as their first window
SHARED = ROOT.parent / "shared" / "data"  # ../shared/data beside the checkout
PROTEOMES = sorted((SHARED / "uniprot").glob("*.fasta*"))
BUILD_ID = "20261201T000000Z-synthe"
CREATED = dt.date(2026, 12, 1)
MODEL_KEY = "synthetic"  # part of every prediction id
MAX_LINKS = 60_000  # hard links to one template archive
SAMPLED_RESIDUES = 50  # make_compacted_database: the pLDDT columns of entries without residues rows come from these
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
    plddt, mean, fractions = _plddt(rng, table["uniprotEnd"].to_numpy())
    table = _with_plddt_columns(rng, table, mean, fractions)
    template = _render_template(layout, rng, proteome)
    offsets = np.concatenate([[0], np.cumsum(table["uniprotEnd"].to_numpy())])
    for number, start in enumerate(range(0, entries, SHARD_SIZE)):
        part = table.slice(start, SHARD_SIZE)
        _write_shard(layout, part, plddt[offsets[start] : offsets[start + len(part)]], template)
        if number % 1000 == 999:
            logger.info("%d of %d entries written", start + len(part), entries)
    template.remove(layout)  # every shard holds a hard link to it (or a copy)
    residues = int(pc.sum(table["uniprotEnd"]).as_py())
    _write_build(layout, entries, residues, len(range(0, entries, SHARD_SIZE)), time.perf_counter() - started)
    catalog.refresh_catalog(layout)
    return layout


def make_compacted_database(
    folder: str | os.PathLike,
    entries: int,
    *,
    seed: int = 0,
    build_entries: int = 100_000,
    residue_entries: int = 10_000,
    chunk_entries: int = 200_000,
) -> DatabaseLayout:
    """Write `entries` entries straight into the layout that builds of `build_entries` each, every one compacted
    at its end, leave (what `structome compact` would write, without writing the shards first: 10M entries
    in minutes, not hours).

    The segments' sizes come from replaying the builds' compaction plans (storage.compaction.plan_compaction
    with the build's policy); each committed shard (64 entries spread over the whole entryId range, as a build
    cuts them) lies in one segment; segments overlap in entryId, each is sorted like compaction sorts it, with
    its row groups. Shard folders hold their hard-linked archive, as after garbage collection. One difference:
    the residues table holds the rows of the first `residue_entries` entries only (a 10M-entry residues table
    has ~3.5 billion rows); every other table is complete."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    layout = DatabaseLayout(folder)
    if not layout.is_local:
        raise ValueError("make_compacted_database writes local databases only (hard links, folders)")
    layout.create()
    proteome = read_proteome()
    template = _render_template(layout, rng, proteome)
    numbers = np.sort(rng.choice(ACCESSION_SPACE, entries, replace=False))  # sorted accessions: sorted entryIds
    slots = rng.permutation(entries)  # entry -> its place among all shards' entries (shard = slot // SHARD_SIZE)
    shard_ids = _make_shard_folders(layout, -(-entries // SHARD_SIZE), template)
    sizes = _segment_sizes(entries, build_entries)
    shard_segment = _shards_per_segment(rng, len(shard_ids), sizes)
    segments = [SegmentWriter(layout, f"g{1:010d}-{number:08x}") for number in range(len(sizes))]
    for start in range(0, entries, chunk_entries):
        stop = min(start + chunk_entries, entries)
        shards = slots[start:stop] // SHARD_SIZE
        with_residues = max(0, min(stop, residue_entries) - start)
        tables = _chunk_tables(rng, proteome, numbers[start:stop], shard_ids[shards], with_residues)
        tables["ranks"] = slots[start:stop] % SHARD_SIZE
        for number, writer in enumerate(segments):
            writer.add(tables, shard_segment[shards] == number, template)
        logger.info("%d of %d entries written", stop, entries)
    finished = [writer.close(int(np.sum(shard_segment == n))) for n, writer in enumerate(segments)]
    template.remove(layout)
    manifest = TableManifest().successor(finished, set(shard_ids.tolist()))
    layout.write_table_manifest(manifest)
    layout.write_text_atomic(json.dumps({"generation": manifest.generation}) + "\n", "tables/collected.json")
    residues = sum(segment.rows["residues"] for segment in finished)
    _write_build(layout, entries, residues, len(shard_ids), time.perf_counter() - started)
    catalog.refresh_catalog(layout)
    return layout


def _segment_sizes(entries: int, build_entries: int) -> list[int]:
    """The segments (entries each) that builds of `build_entries`, each compacted at its end, leave."""
    manifest = TableManifest()
    for number, start in enumerate(range(0, entries, build_entries)):
        added = min(build_entries, entries - start)
        plan = plan_compaction(manifest, {f"build{number}": ""}, added, BUILD_COMPACTION)
        merged = [Segment(f"b{number}-{i}", merge.entries, 0) for i, merge in enumerate(plan.merges)]
        manifest = manifest.successor([*plan.kept, *merged], set())
    return [segment.entries for segment in manifest.segments]


def _shards_per_segment(rng: np.random.Generator, shards: int, sizes: list[int]) -> np.ndarray:
    """shard number -> segment number: each segment gets its share of the shards, in random order."""
    counts = np.floor(np.array(sizes) / sum(sizes) * shards).astype(np.int64)
    counts[0] += shards - counts.sum()
    return rng.permutation(np.repeat(np.arange(len(sizes)), counts))


def _make_shard_folders(layout: DatabaseLayout, count: int, template: Template) -> np.ndarray:
    """`count` committed shard folders, each holding a hard link to the template archive; their ids."""
    ids = np.array([hashlib.sha256(b"shard %d" % n).hexdigest()[:20] for n in range(count)], object)
    source, copies = Path(template.path), []
    for number, shard_id in enumerate(ids):
        if number and number % MAX_LINKS == 0:  # file systems cap a file's links (ext4: 65,000): a fresh copy
            source = Path(template.path).with_suffix(f".{number}.tar")
            shutil.copyfile(template.path, source)
            copies.append(source)
        folder = layout.path(layout.shard(shard_id))
        os.mkdir(folder)
        os.link(source, f"{folder}/{ARCHIVE_NAME}")
    for copy in copies:  # their links stay
        copy.unlink()
    return ids


def _chunk_tables(rng, proteome: Proteome, numbers: np.ndarray, shards: np.ndarray, with_residues: int) -> dict:
    """The entries of these (sorted) accession numbers, in these shards (ids), and the residues of the first
    `with_residues` of them."""
    lengths = rng.choice(proteome.lengths, len(numbers))
    table = _entries_of(rng, proteome, _accessions(numbers), lengths)
    plddt, mean, fractions = _plddt(rng, lengths[:with_residues])
    if with_residues < len(lengths):  # entries without residues rows: their pLDDT columns from 50 residues each
        _, rest_mean, rest_fractions = _plddt(rng, np.full(len(lengths) - with_residues, SAMPLED_RESIDUES))
        mean, fractions = np.concatenate([mean, rest_mean]), np.concatenate([fractions, rest_fractions])
    table = _with_plddt_columns(rng, table, mean, fractions)
    table = table.append_column(ENTRIES.field("shard"), pa.array(shards, pa.string())).select(ENTRIES.names)
    residues = _residues(table.slice(0, with_residues), plddt)
    return {"entries": table, "residues": residues}


class SegmentWriter:
    """One segment's four tables, written in sorted order chunk after chunk, by compaction's part writer
    (storage.parts: its row groups, pages, parts and Bloom filters)."""

    def __init__(self, layout: DatabaseLayout, segment_id: str):
        self.layout, self.segment_id = layout, segment_id
        self.writers = {table: self._writer(table) for table in SEGMENT_TABLES}

    def _writer(self, table: str) -> PartWriter:
        Path(self.layout.path(f"tables/{table}")).mkdir(parents=True, exist_ok=True)
        return PartWriter(table, lambda number: Path(self.layout.path(part_path(table, self.segment_id, number))))

    def add(self, tables: dict, mine: np.ndarray, template: Template) -> None:
        """The rows of the chunk's entries selected by `mine` (a mask over the chunk's entries)."""
        entries = tables["entries"].filter(mine)
        residues = tables["residues"]
        owners = pa.array(np.repeat(mine, tables["entries"]["uniprotEnd"].to_numpy())[: len(residues)])
        self.writers["entries"].write(entries)
        self.writers["residues"].write(residues.filter(owners))
        self.writers["files"].write(_sorted_files(entries, tables["ranks"][mine], template))

    def close(self, shards: int) -> Segment:
        parts, rows = {}, {}
        for table, writer in self.writers.items():
            written = writer.close()
            parts[table] = tuple(
                SegmentFile(part_path(table, self.segment_id, n), ranges) for n, (_, ranges) in enumerate(written)
            )
            rows[table] = writer.rows
        size = sum(os.path.getsize(self.layout.path(p.path)) for files in parts.values() for p in files)
        return Segment(self.segment_id, rows["entries"], shards, rows, size, parts)


_KIND_ORDER = np.argsort([kind.value for kind in KINDS])  # files are sorted by (entryId, kind)


def _sorted_files(entries: pa.Table, ranks: np.ndarray, template: Template) -> pa.Table:
    """The entries' files rows, each pointing at the template member of the entry's rank in its shard's archive."""
    members = (3 * ranks[:, None] + _KIND_ORDER[None, :]).ravel()
    files = template.files.take(pa.array(members))
    owner = np.repeat(np.arange(len(entries)), 3)
    entry_ids = entries["entryId"].take(pa.array(owner))
    shards = entries["shard"].take(pa.array(owner))
    names = {kind: entry_file_names("", 1)[kind] for kind in KINDS}
    suffixes = pa.array([names[KINDS[k]] for k in _KIND_ORDER] * len(entries), pa.string())
    replaced = {
        "entryId": entry_ids,
        "fileName": pc.binary_join_element_wise(entry_ids, suffixes, ""),
        "archive": pc.binary_join_element_wise("shards/", shards, f"/{ARCHIVE_NAME}", ""),
    }
    return pa.table({name: replaced.get(name, files[name]) for name in FILES.names}, schema=FILES)


# ---- entries ----------------------------------------------------------------------------------------------


def _entries(rng: np.random.Generator, proteome: Proteome, count: int) -> pa.Table:
    """The entries table without shard and pLDDT columns, longest sequences first (the shards' order)."""
    lengths = np.sort(rng.choice(proteome.lengths, count))[::-1]  # ties in random order: accessions are random
    return _entries_of(rng, proteome, _accessions(rng.choice(ACCESSION_SPACE, count, replace=False)), lengths)


def _entries_of(rng: np.random.Generator, proteome: Proteome, accessions: list[str], lengths: np.ndarray) -> pa.Table:
    """The entries table (without shard and pLDDT columns) of these accessions and sequence lengths."""
    count = len(accessions)
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


# UniProt-style accessions [OPQ][0-9][A-Z0-9]{3}[0-9] (14 million possible), each alphabet in ASCII order so that
# accession numbers and accession texts sort alike.
_ACCESSION_ALPHABETS = [b"OPQ", b"0123456789", *[b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"] * 3, b"0123456789"]
ACCESSION_SPACE = int(np.prod([len(a) for a in _ACCESSION_ALPHABETS]))


def _accessions(numbers: np.ndarray) -> list[str]:
    """The accessions of distinct numbers below ACCESSION_SPACE (mixed radix, last position fastest)."""
    if len(numbers) > ACCESSION_SPACE:
        raise ValueError(f"at most {ACCESSION_SPACE:,} accessions")
    codes = np.empty((len(numbers), len(_ACCESSION_ALPHABETS)), np.uint8)
    for position in reversed(range(len(_ACCESSION_ALPHABETS))):
        numbers, digit = np.divmod(numbers, len(_ACCESSION_ALPHABETS[position]))
        codes[:, position] = np.frombuffer(_ACCESSION_ALPHABETS[position], np.uint8)[digit]
    return codes.view(f"S{len(_ACCESSION_ALPHABETS)}").ravel().astype(str).tolist()


def _sequences(rng: np.random.Generator, proteome: Proteome, lengths: np.ndarray) -> list[str]:
    """Random residues with the proteome's composition (unique, with overwhelming odds)."""
    table = np.repeat(proteome.letters, np.round(proteome.frequencies * 4096).astype(np.int64))  # one draw: a lookup
    text = table[rng.integers(0, len(table), int(lengths.sum()))].tobytes().decode()
    ends = np.cumsum(lengths).tolist()
    return [text[end - n : end] for end, n in zip(ends, lengths.tolist(), strict=True)]


def _plddt(rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-residue pLDDT (an entry mean plus noise, 0-100), and each entry's mean and [N, 4] band fractions."""
    if not len(lengths):
        return np.zeros(0, np.float32), np.zeros(0), np.zeros((0, len(FRACTION_COLUMNS)))
    means = rng.uniform(35, 95, len(lengths)).astype(np.float32)
    noise = rng.standard_normal(int(lengths.sum()), dtype=np.float32) * 8
    plddt = np.clip(np.repeat(means, lengths) + noise, 0, 100)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bands = band_indices(plddt)
    counts = np.stack([np.add.reduceat((bands == b).astype(np.int64), starts) for b in range(len(FRACTION_COLUMNS))])
    return plddt, np.add.reduceat(plddt.astype(np.float64), starts) / lengths, (counts / lengths).T


def _with_plddt_columns(rng: np.random.Generator, table: pa.Table, mean: np.ndarray, fractions) -> pa.Table:
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


def _write_build(layout: DatabaseLayout, entries: int, residues: int, shards: int, seconds: float) -> None:
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
        "records": entries,
        "entriesPlanned": entries,
        "entriesSkipped": 0,
        "entriesWritten": entries,
        "predictions": entries,
        "residues": residues,  # stored residues rows
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
    make = make_compacted_database if "--compacted" in sys.argv[3:] else make_database
    make(sys.argv[1], int(sys.argv[2]))
    print(f"{sys.argv[2]} entries in {sys.argv[1]}: {time.perf_counter() - began:.1f} s")
