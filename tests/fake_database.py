"""Databases written by the real write stage from made-up or real structures, without folding anything.

`entry()` and `random_prediction()` make small synthetic records; `afdb_prediction()` turns a real AlphaFold DB
model (coordinates, pLDDT from B-factors) into a Prediction, so pages and viewers get a real fold with every
pLDDT band. `write_database()` stores them through `pipelines.write.write_shard` and refreshes the catalog;
`add_entries()` commits numbered synthetic entries (accessions Q00000...) in small shards.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from pathlib import Path

import duckdb
import gemmi
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from structome.models.types import (
    STANDARD_RESIDUES,
    Entry,
    Failure,
    FailureReason,
    Prediction,
    PredictionRequest,
    Provenance,
    Stage,
)
from structome.pipelines.checksums import crc64_hex, md5_hex
from structome.pipelines.sharding import cut_shards
from structome.pipelines.write import WriteContext, write_shard
from structome.storage import catalog, schema
from structome.storage.entry_index import KEYS
from structome.storage.key_index import SortedTable
from structome.storage.layout import DatabaseLayout
from structome.storage.mmcif import ATOM37_NAMES

PROVENANCE = Provenance(
    model="esmfold-tiny",
    model_version="v1",
    weights="/tmp/w",
    weights_sha256="ab" * 32,
    untrained=True,
    precision="stem=fp32,trunk=fp32",
    num_recycles=1,
    chunk_size=None,
    device="cpu",
)
BUILD_ID = "20261125T000000Z-aaaaaa"
CREATED = dt.date(2026, 11, 25)
AFDB_P41068 = Path(__file__).parent / "data" / "afdb" / "AF-P41068-F1-model_v4.cif"


def entry(
    entry_id: str,
    accession: str,
    sequence: str,
    prediction_id: str,
    fragment: int = 1,
    start: int = 1,
    end: int | None = None,
    **fields,
) -> Entry:
    values = dict(
        record_id=f"sp|{accession}|X_ECOLI",
        source_file="in.fasta",
        entry_name="X_ECOLI",
        database="sp",
        description="Test protein",
        organism="Escherichia coli",
        tax_id=83333,
        gene="xyz",
        sequence_checksum="0197355516942160",
        sequence_md5="f" * 32,
    )
    values.update(fields)
    return Entry(
        entry_id=entry_id,
        accession=accession,
        sequence=sequence,
        fragment=fragment,
        start=start,
        end=end or len(sequence),
        prediction_id=prediction_id,
        **values,
    )


def random_prediction(request: PredictionRequest, seed: int) -> Prediction:
    rng = np.random.default_rng(seed)
    n = len(request.sequence)
    coords = np.cumsum(rng.normal(0, 1.5, (n, 37, 3)), axis=0).astype(np.float32)
    mask = np.zeros((n, 37), bool)
    mask[:, [0, 1, 2, 4]] = True
    return Prediction(
        request.prediction_id,
        request.sequence,
        coords,
        mask,
        rng.uniform(20, 95, n).astype(np.float32),
        0.42,
        rng.integers(0, 32, (n, n), dtype=np.uint8),
    )


def afdb_prediction(prediction_id: str, path: Path = AFDB_P41068) -> Prediction:
    """A real AFDB model as a Prediction: atom37 coordinates, CA B-factors as pLDDT, PAE from CA distances."""
    model = gemmi.read_structure(str(path))[0]
    residues = list(model[0])
    sequence = "".join(gemmi.find_tabulated_residue(r.name).one_letter_code.upper() for r in residues)
    coords = np.zeros((len(residues), 37, 3), np.float32)
    mask = np.zeros((len(residues), 37), bool)
    for i, residue in enumerate(residues):
        for atom in residue:
            if atom.name in ATOM37_NAMES:
                j = ATOM37_NAMES.index(atom.name)
                coords[i, j] = atom.pos.tolist()
                mask[i, j] = True
    plddt = np.array([r["CA"][0].b_iso for r in residues], np.float32)
    ca = coords[:, 1]
    distance = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    pae = np.clip(distance / 3, 0, 31).astype(np.uint8)
    assert set(sequence) <= set(STANDARD_RESIDUES)
    return Prediction(prediction_id, sequence, coords, mask, plddt, 0.81, pae)


def afdb_entry(prediction: Prediction, accession: str = "P41068") -> Entry:
    return entry(
        f"SM-{accession}-F1",
        accession,
        prediction.sequence,
        prediction.prediction_id,
        record_id=f"sp|{accession}|TRAP_ECOLI",
        entry_name="TRAP_ECOLI",
        gene="rbsD",
        description="D-ribose pyranase",
        organism="Escherichia coli (strain K12)",
        sequence_checksum=crc64_hex(prediction.sequence),
        sequence_md5=md5_hex(prediction.sequence),
    )


def write_database(
    location,
    entries: Sequence[Entry],
    predictions: Sequence[Prediction],
    failures: Sequence[Failure] = (),
    shard_size: int = 10,
) -> DatabaseLayout:
    """Store the entries (one shard per `shard_size` unique sequences) and refresh the catalog."""
    layout = DatabaseLayout(location)
    layout.create()
    requests = {e.prediction_id: PredictionRequest(e.prediction_id, e.sequence[e.start - 1 : e.end]) for e in entries}
    context = WriteContext(layout, PROVENANCE, BUILD_ID, CREATED)
    for number, shard in enumerate(cut_shards(list(entries), list(requests.values()), shard_size=shard_size)):
        write_shard(context, shard, predictions, failures if number == 0 else ())
    catalog.refresh_catalog(layout)
    return layout


def index_tables(
    folder: Path, records: Sequence[dict], files: Sequence, row_group_size: int = 2
) -> tuple[duckdb.DuckDBPyConnection, dict[str, SortedTable]]:
    """What an EntryIndex reads: `folder`/entries.parquet (rows keyed by column; missing columns null) and
    `folder`/files.parquet (FileLocations), in the storage schema, sorted by entryId, in row groups of
    `row_group_size` rows (so that lookups cross groups); an in-memory DuckDB with views over them; their
    SortedTables."""
    folder.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    tables = {}
    for name, rows in (("entries", records), ("files", [f.row() for f in files])):
        table = schema.TABLES[name]
        arrow = pa.Table.from_pylist([{c: row.get(c) for c in table.names} for row in rows], schema=table)
        path = str(folder / f"{name}.parquet")
        pq.write_table(arrow.sort_by("entryId") if arrow.num_rows else arrow, path, row_group_size=row_group_size)
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{catalog.quote(path)}')")
        tables[name] = SortedTable(pafs.LocalFileSystem(), [path], KEYS[name])
    return connection, tables


def add_entries(location, first: int, count: int, shard_size: int = 2) -> list[str]:
    """Commit `count` new entries (and a failure row) in shards of `shard_size`; their accessions."""
    rng = random.Random(first)
    accessions = [f"Q{i:05d}" for i in range(first, first + count)]
    entries = [
        entry(
            f"SM-{acc}-F1",
            acc,
            "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(8, 24))),
            f"p{acc}",
        )
        for acc in accessions
    ]
    predictions = [random_prediction(PredictionRequest(e.prediction_id, e.sequence), i) for i, e in enumerate(entries)]
    failure = Failure(
        f"bad{first}", "in.fasta", FailureReason.INVALID_CHARACTER, "not a protein", Stage.INGEST, record_number=first
    )
    write_database(location, entries, predictions, [failure], shard_size=shard_size)
    return accessions
