"""One `structome build`: lock the database, plan, run on Ray, record the build, refresh the catalog, compact."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from structome.jobs.build.runner import DEFAULT_LOADER, ModelSpec, RayBuildRunner
from structome.jobs.build.settings import RunnerSettings
from structome.models.registry import describe_model
from structome.models.types import EsmFoldSettings
from structome.pipelines.build import BuildCounters, BuildPlan, build_record, build_report, plan_build
from structome.pipelines.fasta import check_input
from structome.pipelines.settings import BuildSettings
from structome.pipelines.write import WriteContext
from structome.storage import rows
from structome.storage.catalog import refresh_catalog
from structome.storage.compaction import CompactionPolicy, compact
from structome.storage.layout import DatabaseLayout, DatabaseLockedError
from structome.storage.verify import refuse_damaged

logger = logging.getLogger(__name__)

# A build compacts what it committed, and merges full tiers up to this size: a small build on a large database
# never ends with an hour-long rewrite (`structome compact` merges beyond it).
BUILD_COMPACTION = CompactionPolicy(max_merge_entries=2_000_000)


@dataclass(frozen=True)
class BuildRequest:
    inputs: tuple[str, ...]
    db: str  # a folder or an object-store URI
    model: str = "esmfold-tiny"
    weights: str | None = None
    model_settings: EsmFoldSettings = EsmFoldSettings()
    build_settings: BuildSettings = BuildSettings()
    runner: RunnerSettings = RunnerSettings()
    loader: str = DEFAULT_LOADER  # how workers load the model ("module:function"); tests inject faults here
    compaction: CompactionPolicy | None = BUILD_COMPACTION  # None: leave the new shards uncompacted


def run_build(request: BuildRequest) -> dict:
    """Build (or resume) the database; returns the build report."""
    for path in request.inputs:  # a FIFO or <(...) is no regular file, and is read once, by the plan
        if not Path(path).exists():
            raise FileNotFoundError(f"input {path} does not exist")
        if Path(path).is_dir():
            raise FileNotFoundError(f"input {path} is a folder, not a FASTA file")
        check_input(path, allow_empty=request.build_settings.ingest.allow_empty)  # before the model or Ray
    layout = DatabaseLayout(request.db)
    with layout.lock() as lock:
        layout.create()  # a new database, or an older one brought to this layout (its marker written)
        layout.clear_staging()
        refuse_damaged(layout)  # DamagedDatabaseError naming the files; `structome verify --repair` quarantines them
        provenance = describe_model(request.model, request.weights, request.model_settings)
        plan = plan_build(request.inputs, layout, request.build_settings, provenance)
        return _execute(plan, layout, request, lock.ensure_held)


def _execute(plan: BuildPlan, layout: DatabaseLayout, request: BuildRequest, check_lock: Callable[[], None]) -> dict:
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    context = WriteContext(layout=layout, provenance=plan.provenance, build_id=plan.build_id, created=started.date())
    spec = ModelSpec(
        request.model,
        plan.provenance.weights,
        request.model_settings,
        plan.provenance.settings_key(),
        loader=request.loader,
    )
    runner = RayBuildRunner(plan, context, spec, request.runner, check_lock)
    _record(layout, plan, runner.counters, "running", started, finished=None)
    _write_build_failures(layout, plan, runner.counters)
    refresh_catalog(layout)
    status = "failed"
    try:
        runner.run()
        status = "completed"
    finally:  # a failed build still records what it committed before failing
        finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
        _write_build_failures(layout, plan, runner.counters)
        report = _record(layout, plan, runner.counters, status, started, finished)
        refresh_catalog(layout)
    if request.compaction is not None:
        report["compaction"] = _compact(layout, request.compaction)
        _write_report(layout, plan.build_id, report)
    return report


def _compact(layout: DatabaseLayout, policy: CompactionPolicy) -> dict:
    """Compact what the build committed; a compaction running elsewhere, or one that fails, leaves the shards as
    they are (visible, and merged by the next run): the build's own work is done and stays."""
    try:
        with layout.compaction_lock():
            return compact(layout, policy).to_json()
    except DatabaseLockedError as error:
        logger.warning("not compacting now: %s", error)
        return {"skipped": str(error)}
    except (OSError, duckdb.Error) as error:
        logger.error("compaction failed (the build's shards stay visible; `structome compact` retries): %s", error)
        return {"error": f"{type(error).__name__}: {error}"}


def _write_build_failures(layout: DatabaseLayout, plan: BuildPlan, counters: BuildCounters) -> None:
    """The ledger rows no shard file holds: ingest failures, and entries of shards that never committed."""
    failures = [*plan.ingest_failures, *counters.shard_failures]
    layout.write_parquet_atomic(rows.failures_table(failures, plan.build_id), layout.build_failures(plan.build_id))


def _record(layout, plan, counters, status, started, finished) -> dict:
    record = build_record(plan, counters, status=status, started=started, finished=finished)
    layout.write_parquet_atomic(rows.builds_table(record), layout.build_row(plan.build_id))
    report = build_report(record, plan, counters)
    _write_report(layout, plan.build_id, report)
    return report


def _write_report(layout: DatabaseLayout, build_id: str, report: dict) -> None:
    layout.write_text_atomic(json.dumps(report, indent=2) + "\n", layout.build_report(build_id))
