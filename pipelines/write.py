"""Write stage: a shard's predictions -> mmCIF, PAE and confidence files in an archive, and Parquet rows.

Everything goes into a private folder that the layout commits at once (a rename, or a commit marker on
object stores), so a crash never leaves a half-written shard visible in the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from structome.models.types import Entry, Failure, FailureReason, FileKind, Prediction, Provenance, Stage
from structome.pipelines.sharding import Shard, ShardPredictions
from structome.storage import rows
from structome.storage.afdb_json import entry_file_names, to_confidence_json, to_pae_json
from structome.storage.archive import ArchiveWriter, FileLocation
from structome.storage.integrity import write_shard_checksums
from structome.storage.layout import DatabaseLayout, ShardTarget
from structome.storage.mmcif import to_mmcif

logger = logging.getLogger(__name__)

ARCHIVE_NAME = "archive.tar"


@dataclass(frozen=True)
class WriteContext:
    """What every shard of one build writes with."""

    layout: DatabaseLayout
    provenance: Provenance
    build_id: str
    created: dt.date
    version: int = 1


@dataclass(frozen=True)
class ShardSummary:
    shard_id: str
    entries_written: int
    residues_written: int
    failures: tuple[Failure, ...]
    committed: bool  # False when another writer had committed the same shard first
    write_seconds: float


def write_shard(
    context: WriteContext, shard: Shard, predictions: Sequence[Prediction], failures: Sequence[Failure]
) -> ShardSummary:
    """Render and store every entry of the shard that has a prediction; commit the shard atomically."""
    started = time.perf_counter()
    by_id = {p.prediction_id: p for p in predictions}
    pairs = [(entry, by_id[entry.prediction_id]) for entry in shard.entries if entry.prediction_id in by_id]
    target = context.layout.begin_shard(shard.shard_id)
    try:
        written = _write_files(context, target, pairs)
        all_failures = [*failures, *written.failures]
        _write_tables(context, target, written, all_failures)
        committed = context.layout.commit_shard(target)
    except BaseException:
        context.layout.abandon_shard(target)
        raise
    return ShardSummary(
        shard_id=shard.shard_id,
        entries_written=len(written.entry_rows) if committed else 0,
        residues_written=sum(entry.length for entry, _ in written.pairs) if committed else 0,
        failures=tuple(all_failures),
        committed=committed,
        write_seconds=time.perf_counter() - started,
    )


@dataclass
class _Written:
    entry_rows: list[dict] = field(default_factory=list)
    pairs: list[tuple[Entry, Prediction]] = field(default_factory=list)
    files: list[FileLocation] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def write_predicted_shard(context: WriteContext, shard: Shard, predicted: ShardPredictions) -> ShardSummary:
    """The writer task's entry point (runs in CPU workers, which never import torch)."""
    return write_shard(context, shard, predicted.predictions, predicted.failures)


def _write_files(context: WriteContext, target: ShardTarget, pairs) -> _Written:
    """Archive members for every entry; an entry whose files cannot be rendered becomes a failure."""
    written = _Written()
    archive_path = f"{target.relative}/{ARCHIVE_NAME}"
    stream = context.layout.fs.open_output_stream(f"{target.folder}/{ARCHIVE_NAME}")
    with stream, ArchiveWriter(stream, archive=archive_path, mtime=time.time()) as archive:
        for entry, prediction in pairs:
            try:
                documents = render_entry(context, entry, prediction)
            except (ValueError, RuntimeError) as error:
                written.failures.append(_write_failure(entry, error))
                continue
            for kind, (name, text) in documents.items():
                written.files.append(archive.add(entry.entry_id, kind, name, text.encode()))
            written.entry_rows.append(
                rows.entry_row(
                    entry,
                    prediction,
                    context.provenance,
                    build=context.build_id,
                    shard=target.shard_id,
                    created=context.created,
                    version=context.version,
                )
            )
            written.pairs.append((entry, prediction))
    return written


def render_entry(context: WriteContext, entry: Entry, prediction: Prediction) -> dict[FileKind, tuple[str, str]]:
    """kind -> (AFDB-style file name, text) for one entry."""
    names = entry_file_names(entry.entry_id, context.version)
    return {
        FileKind.CIF: (
            names[FileKind.CIF],
            to_mmcif(prediction, entry, context.provenance, created=context.created, version=context.version),
        ),
        FileKind.PAE: (names[FileKind.PAE], to_pae_json(prediction)),
        FileKind.CONFIDENCE: (names[FileKind.CONFIDENCE], to_confidence_json(prediction)),
    }


def _write_tables(context: WriteContext, target: ShardTarget, written: _Written, failures) -> None:
    tables = {
        "entries": rows.entries_table(written.entry_rows),
        "residues": rows.residues_table(written.pairs),
        "files": rows.files_table(written.files),
        "failures": rows.failures_table(list(failures), context.build_id),
    }
    for name, table in tables.items():  # the folder is private until the commit: no temporary names needed
        pq.write_table(table, f"{target.folder}/{name}.parquet", filesystem=context.layout.fs, compression="zstd")
    # what `structome verify` checks the shard against, committed with it
    write_shard_checksums(context.layout.fs, target.folder, [*(f"{name}.parquet" for name in tables), ARCHIVE_NAME])


def _write_failure(entry: Entry, error: Exception) -> Failure:
    logger.warning("%s: could not render files: %s", entry.entry_id, error)
    return Failure(
        record_id=entry.record_id,
        source_file=entry.source_file,
        reason=FailureReason.WRITE_ERROR,
        message=f"{type(error).__name__}: {error}",
        stage=Stage.WRITE,
        entry_id=entry.entry_id,
        record_number=entry.record_number,
        accession=entry.accession,
    )
