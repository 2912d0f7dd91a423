"""The build pipeline: ingest -> skip what the database already holds -> length-sorted shards.

The plan is pure data; `structome.jobs.build.runner` executes it on Ray (predict on model actors, write on CPU tasks).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structome
from structome.models.types import Entry, Failure, FailureReason, Provenance, Stage
from structome.pipelines.fasta import source_path
from structome.pipelines.ingest import InputFile, ingest
from structome.pipelines.settings import BuildSettings
from structome.pipelines.sharding import Shard, cut_shards
from structome.storage.formats import format_tag
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import committed_entries

logger = logging.getLogger(__name__)


REPORT_FORMAT = format_tag("report", 1)  # builds/<build>.report.json


@dataclass(frozen=True)
class BuildPlan:
    build_id: str
    inputs: tuple[str, ...]
    settings: BuildSettings
    provenance: Provenance
    record_count: int
    shards: tuple[Shard, ...]  # longest sequences first
    ingest_failures: tuple[Failure, ...]
    entries_skipped: int  # already committed by an earlier build
    input_files: tuple[InputFile, ...] = ()  # each input as read: absolute path, SHA-256 of its bytes, records

    @property
    def entries_planned(self) -> int:
        return sum(len(s.entries) for s in self.shards)

    @property
    def predictions_planned(self) -> int:
        return sum(len(s.requests) for s in self.shards)


def new_build_id(now: dt.datetime | None = None) -> str:
    """Sortable by start time: 20261125T031500Z-1a2b3c."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def plan_build(
    inputs: Sequence[str | Path],
    layout: DatabaseLayout,
    settings: BuildSettings,
    provenance: Provenance,
    build_id: str | None = None,
) -> BuildPlan:
    """Read the inputs and plan only what the database does not hold yet."""
    result = ingest(inputs, settings.ingest, provenance.settings_key())
    committed = committed_entries(layout, (e.entry_id for e in result.entries))
    todo, conflicts = _split_committed(result.entries, committed)
    wanted = {e.prediction_id for e in todo}
    requests = [r for r in result.requests() if r.prediction_id in wanted]
    shards = cut_shards(todo, requests, settings.shard_size_for(len(requests)))
    skipped = len(result.entries) - len(todo) - len(conflicts)
    logger.info(
        "%d records -> %d entries (%d already in the database), %d unique sequences in %d shards",
        result.record_count,
        len(result.entries),
        skipped,
        len(requests),
        len(shards),
    )
    return BuildPlan(
        build_id=build_id or new_build_id(),
        inputs=tuple(source_path(p) for p in inputs),
        settings=settings,
        provenance=provenance,
        record_count=result.record_count,
        shards=tuple(shards),
        ingest_failures=tuple(result.failures) + tuple(conflicts),
        entries_skipped=skipped,
        input_files=result.inputs,
    )


def _split_committed(entries: Sequence[Entry], committed: dict[str, str]) -> tuple[list[Entry], list[Failure]]:
    """Entries still to write, and ledger rows for ids the database holds with another prediction."""
    todo, conflicts = [], []
    for entry in entries:
        existing = committed.get(entry.entry_id)
        if existing is None:
            todo.append(entry)
        elif existing != entry.prediction_id:
            conflicts.append(_conflict(entry, existing))
    return todo, conflicts


def _conflict(entry: Entry, existing: str) -> Failure:
    return Failure(
        record_id=entry.record_id,
        source_file=entry.source_file,
        reason=FailureReason.CONFLICTS_WITH_DATABASE,
        message=(
            f"{entry.entry_id} is already stored with another sequence or model (predictionId {existing}, "
            f"this input gives {entry.prediction_id}); a database holds one model per entry: use another --db"
        ),
        stage=Stage.INGEST,
        entry_id=entry.entry_id,
        record_number=entry.record_number,
        accession=entry.accession,
    )


@dataclass
class BuildCounters:
    """What a running build has done so far; becomes the `builds` row and the JSON report."""

    entries_written: int = 0
    residues_written: int = 0
    predictions: int = 0
    shards_committed: int = 0
    model_seconds: float = 0.0
    padded_residues: int = 0
    folded_residues: int = 0
    predict_failures: list[Failure] = field(default_factory=list)
    shard_failures: list[Failure] = field(
        default_factory=list
    )  # of shards that never committed (not in any shard file)
    retried_shards: int = 0
    hung_workers: int = 0  # killed and replaced for missing a shard's deadline
    per_worker: dict[str, dict] = field(default_factory=dict)  # worker label -> shards, residues, model seconds

    def add_shard(self, summary, stats: dict) -> None:
        """Count one written shard: its ShardSummary and the predictor's figures for it."""
        self.entries_written += summary.entries_written
        self.residues_written += summary.residues_written
        self.shards_committed += int(summary.committed)
        self.predict_failures.extend(summary.failures)
        self.predictions += stats["predictions"]
        self.model_seconds += stats["model_seconds"]
        self.padded_residues += stats["padded_residues"]
        self.folded_residues += stats["folded_residues"]
        worker = self.per_worker.setdefault(stats["worker"], {"shards": 0, "residues": 0, "modelSeconds": 0.0})
        worker["shards"] += 1
        worker["residues"] += stats["folded_residues"]
        worker["modelSeconds"] += stats["model_seconds"]


def build_record(
    plan: BuildPlan, counters: BuildCounters, *, status: str, started: dt.datetime, finished: dt.datetime | None
) -> dict:
    """The `builds` row (column names of storage.schema.BUILDS)."""
    provenance = plan.provenance
    failures = [*plan.ingest_failures, *counters.predict_failures, *counters.shard_failures]
    return {
        "build": plan.build_id,
        "status": status,
        "startedAt": started,
        "finishedAt": finished,
        "wallSeconds": (finished - started).total_seconds() if finished else None,
        "inputs": list(plan.inputs),
        "model": provenance.model,
        "modelVersion": provenance.model_version,
        "weights": provenance.weights,
        "weightsSha256": provenance.weights_sha256,
        "untrained": provenance.untrained,
        "precision": provenance.precision,
        "numRecycles": provenance.num_recycles,
        "chunkSize": provenance.chunk_size,
        "libraryVersions": json.dumps(provenance.library_versions, sort_keys=True),
        "settings": json.dumps(plan.settings.as_dict(), sort_keys=True),
        "records": plan.record_count,
        "entriesPlanned": plan.entries_planned,
        "entriesSkipped": plan.entries_skipped,
        "entriesWritten": counters.entries_written,
        "predictions": counters.predictions,
        "residues": counters.residues_written,
        "failures": len(failures),
        "shards": counters.shards_committed,
        "structomeVersion": structome.__version__,
    }


def build_report(record: dict, plan: BuildPlan, counters: BuildCounters) -> dict:
    """The JSON report: the `builds` row plus efficiency figures and failures by reason."""
    failures = [*plan.ingest_failures, *counters.predict_failures, *counters.shard_failures]
    by_reason = Counter(f.reason for f in failures)
    return {
        "format": REPORT_FORMAT,
        **{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in record.items()},
        "provenance": plan.provenance.as_dict(),
        "failuresByReason": dict(sorted(by_reason.items())),
        "inputFiles": [asdict(input_file) for input_file in plan.input_files],
        "shardsPlanned": len(plan.shards),
        "retriedShards": counters.retried_shards,
        "hungWorkers": counters.hung_workers,
        "modelSeconds": round(counters.model_seconds, 3),
        "paddingEfficiency": (
            round(counters.folded_residues / counters.padded_residues, 4) if counters.padded_residues else None
        ),
        "workers": {name: _worker_figures(figures) for name, figures in sorted(counters.per_worker.items())},
    }


def _worker_figures(figures: dict) -> dict:
    seconds = figures["modelSeconds"]
    rate = round(figures["residues"] / seconds, 1) if seconds else None
    return {**figures, "modelSeconds": round(seconds, 3), "residuesPerSecond": rate}
