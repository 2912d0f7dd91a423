"""Pure functions from records to Parquet rows (column names from `storage.schema`)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from structome.models.types import Entry, Failure, Prediction, Provenance
from structome.storage.archive import FileLocation
from structome.storage.plddt import plddt_fractions
from structome.storage.schema import BUILDS, ENTRIES, FAILURES, FILES, RESIDUES


def entry_row(
    entry: Entry,
    prediction: Prediction,
    provenance: Provenance,
    *,
    build: str,
    shard: str,
    created: dt.date,
    version: int,
) -> dict:
    return {
        "entryId": entry.entry_id,
        "uniprotAccession": entry.accession,
        "uniprotId": entry.entry_name,
        "uniprotDescription": entry.description,
        "gene": entry.gene,
        "taxId": entry.tax_id,
        "organismScientificName": entry.organism,
        "uniprotStart": entry.start,
        "uniprotEnd": entry.end,
        "uniprotSequence": entry.sequence,
        "sequenceChecksum": entry.sequence_checksum,
        "sequenceMd5": entry.sequence_md5,
        "sequenceVersion": entry.sequence_version,
        "sourceDatabase": entry.database,
        "fragment": entry.fragment,
        "globalMetricValue": round(prediction.mean_plddt, 2),
        **plddt_fractions(prediction.plddt),
        "ptm": prediction.ptm,
        "predictionId": entry.prediction_id,
        "model": provenance.model,
        "modelVersion": provenance.model_version,
        "untrained": provenance.untrained,
        "latestVersion": version,
        "modelCreatedDate": created,
        "build": build,
        "recordId": entry.record_id,
        "recordNumber": entry.record_number,
        "sourceFile": entry.source_file,
        "shard": shard,
    }


def residues_table(pairs: list[tuple[Entry, Prediction]]) -> pa.Table:
    """One row per residue of every entry, built column-wise."""
    if not pairs:
        return RESIDUES.empty_table()
    lengths = [entry.length for entry, _ in pairs]
    return pa.table(
        {
            "entryId": np.repeat([entry.entry_id for entry, _ in pairs], lengths),
            "residueNumber": np.concatenate([np.arange(1, n + 1, dtype=np.int32) for n in lengths]),
            "uniprotResidueNumber": np.concatenate(
                [np.arange(entry.start, entry.end + 1, dtype=np.int32) for entry, _ in pairs]
            ),
            "residue": [letter for entry, _ in pairs for letter in entry.fragment_sequence],
            "pLDDT": np.concatenate([prediction.plddt.astype(np.float32) for _, prediction in pairs]),
        },
        schema=RESIDUES,
    )


def failure_row(failure: Failure, build: str) -> dict:
    return {
        "recordId": failure.record_id,
        "uniprotAccession": failure.accession,
        "recordNumber": failure.record_number,
        "sourceFile": failure.source_file,
        "entryId": failure.entry_id,
        "reason": failure.reason,
        "message": failure.message,
        "stage": failure.stage,
        "build": build,
    }


def entries_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ENTRIES)


def files_table(locations: list[FileLocation]) -> pa.Table:
    return pa.Table.from_pylist([location.row() for location in locations], schema=FILES)


def failures_table(failures: list[Failure], build: str) -> pa.Table:
    return pa.Table.from_pylist([failure_row(f, build) for f in failures], schema=FAILURES)


def builds_table(record: dict) -> pa.Table:
    return pa.Table.from_pylist([record], schema=BUILDS)
