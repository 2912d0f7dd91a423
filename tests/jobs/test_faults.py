"""Faults during a build, in real Ray actor processes: a worker killed mid-shard, a poison shard that kills
every worker it meets, a predictor error, an out-of-memory protein, and a second build on the same database."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from processes import kill_all

from structome.jobs.build.job import BuildRequest, run_build
from structome.jobs.build.settings import RunnerSettings
from structome.models.types import EsmFoldSettings, PredictionRequest
from structome.pipelines.settings import BuildSettings
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout, DatabaseLockedError

SEQUENCES = {
    f"T{i}": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"[: 20 + 7 * i] for i in range(7)
}  # lengths 20, 27, ..., 62


def write_fasta(path: Path) -> Path:
    path.write_text("".join(f">{name} test protein\n{sequence}\n" for name, sequence in SEQUENCES.items()))
    return path


def build(tmp_path, loader: str, **runner) -> tuple[dict, DatabaseLayout]:
    db = tmp_path / "db"
    request = BuildRequest(
        inputs=(str(write_fasta(tmp_path / "in.fasta")),),
        db=db,
        model_settings=EsmFoldSettings(num_recycles=0),
        build_settings=BuildSettings(shard_size=2),
        runner=RunnerSettings(workers=1, progress=False, **runner),
        loader=loader,
    )
    return run_build(request), DatabaseLayout(db)


def entries(layout) -> list[str]:
    return sorted(catalog.query(layout, "SELECT entryId FROM entries").column("entryId").to_pylist())


def failures(layout) -> list[tuple[str, str]]:
    rows = catalog.query(layout, "SELECT entryId, reason FROM failures ORDER BY entryId").to_pylist()
    return [(r["entryId"], r["reason"]) for r in rows]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STRUCTOME_TEST_DIE_MARKER", str(tmp_path / "died"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # Ray workers import tests.jobs


def test_a_worker_killed_mid_shard_is_replaced_and_its_shard_retried(tmp_path):
    report, layout = build(tmp_path, "tests.jobs.faulty_models:die_once")
    assert (tmp_path / "died").exists(), "the fault was not injected"
    assert report["status"] == "completed" and report["retriedShards"] == 1
    assert entries(layout) == sorted(f"SM-{name}-F1" for name in SEQUENCES)
    assert failures(layout) == []
    killed_pid = (tmp_path / "died").read_text()
    (worker,) = report["workers"]  # the replacement did every shard; the killed one committed none
    assert not worker.endswith(f"pid{killed_pid}")


def test_a_hung_worker_is_killed_at_its_shards_deadline_and_the_shard_retried(tmp_path, monkeypatch):
    from structome.jobs.build.runner import RayBuildRunner

    monkeypatch.setenv("STRUCTOME_TEST_HANG_MARKER", str(tmp_path / "hung"))
    planned = RayBuildRunner.shard_deadline_s
    deadlines: list[float] = []

    def first_call_short(runner, shard) -> float:
        """The first call (the one that hangs: one worker runs its calls in order) gets 5 s, every other one the
        planned deadline: no test waits out a floor sized for a loaded machine's first call."""
        deadlines.append(5.0 if not deadlines else planned(runner, shard))
        return deadlines[-1]

    monkeypatch.setattr(RayBuildRunner, "shard_deadline_s", first_call_short)
    started = time.monotonic()
    report, layout = build(tmp_path, "tests.jobs.faulty_models:hang_once")
    assert (tmp_path / "hung").exists(), "the fault was not injected"
    assert time.monotonic() - started < 600, report  # not the hour the predictor sleeps
    assert report["status"] == "completed" and report["hungWorkers"] == 1 and report["retriedShards"] == 1, report
    assert entries(layout) == sorted(f"SM-{name}-F1" for name in SEQUENCES) and failures(layout) == []
    (worker,) = report["workers"]  # the replacement did every shard
    assert not worker.endswith(f"pid{(tmp_path / 'hung').read_text()}")
    assert deadlines[1:] and set(deadlines[1:]) == {RunnerSettings().shard_deadline_floor_s}  # tiny shards: the floor


def test_a_shard_past_its_deadline_on_its_last_attempt_goes_to_the_ledger_as_such():
    from fake_database import entry

    from structome.jobs.build.runner import ShardDeadlineError, _shard_failures
    from structome.pipelines.sharding import cut_shards

    record = entry("SM-T0-F1", "T0", SEQUENCES["T0"], "p0")
    (shard,) = cut_shards([record], [PredictionRequest("p0", SEQUENCES["T0"])], shard_size=1)
    (failure,) = _shard_failures(shard, ShardDeadlineError("no result after 40 s (deadline 30 s)"), 3)
    assert failure.reason == "deadline_exceeded" and "3 time(s)" in failure.message and "deadline" in failure.message


def test_a_poison_shard_goes_to_the_ledger_after_its_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTOME_TEST_DIE_LENGTH", "41")  # T3
    report, layout = build(tmp_path, "tests.jobs.faulty_models:die_on_length", shard_retries=1)
    assert report["status"] == "completed" and report["retriedShards"] == 1
    poisoned = {entry for entry, reason in failures(layout) if reason == "worker_failed"}
    assert poisoned == {"SM-T3-F1"}  # 7 sequences give 7 one-sequence shards (at least 8 shards wanted)
    assert set(entries(layout)) | poisoned == {f"SM-{name}-F1" for name in SEQUENCES}
    message = catalog.query(layout, "SELECT message FROM failures LIMIT 1").column("message")[0].as_py()
    assert "2 time(s)" in message


def test_a_predictor_error_is_retried_and_the_shard_queued_behind_it_is_not_charged(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTOME_TEST_RAISE_LENGTH", "41")  # T3; Ray fails the call queued behind it unrun
    report, layout = build(tmp_path, "tests.jobs.faulty_models:raise_on_length", shard_retries=1)
    assert report["status"] == "completed" and report["retriedShards"] == 1
    assert failures(layout) == [("SM-T3-F1", "worker_failed")]
    assert len(entries(layout)) == len(SEQUENCES) - 1
    assert len(report["workers"]) == 1  # the worker lived on


def test_out_of_memory_fails_only_the_protein_that_does_not_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTOME_TEST_OOM_ABOVE", "55")  # T6 (62 aa) never fits, even alone and chunked
    report, layout = build(tmp_path, "tests.jobs.faulty_models:oom_above")
    assert failures(layout) == [("SM-T6-F1", "out_of_memory")]
    assert len(entries(layout)) == len(SEQUENCES) - 1
    assert report["failuresByReason"] == {"out_of_memory": 1}


@pytest.mark.parametrize(("only_reduced", "rescued"), [(True, True), (False, False)])
def test_a_protein_with_non_finite_output_costs_its_batch_nothing(tiny_weights, only_reduced, rescued):
    from faulty_models import NanOnLength

    from structome.models.registry import ESMFOLD_V1_CONFIG, load_predictor
    from structome.models.types import PredictionRequest
    from structome.pipelines.batching import Batcher, DeviceBudget
    from structome.pipelines.cost_model import CostModel
    from structome.pipelines.predict import predict_shard
    from structome.pipelines.sharding import Shard

    settings = EsmFoldSettings(num_recycles=0, trunk_precision="bf16")
    predictor = NanOnLength(load_predictor("esmfold-tiny", str(tiny_weights), settings), 27, only_reduced)
    requests = tuple(PredictionRequest(f"p{i}", SEQUENCES[f"T{i}"]) for i in reversed(range(4)))  # 41 ... 20 aa
    one_batch = Batcher(CostModel.from_config(ESMFOLD_V1_CONFIG), DeviceBudget(1e30, 1e30, 1e30))
    result = predict_shard(predictor, Shard("s0", requests, ()), one_batch)
    assert predictor.forward_calls == 2  # the batch once, then only the culprit, alone and in fp32
    folded = sorted(p.prediction_id for p in result.predictions)
    assert folded == (["p0", "p1", "p2", "p3"] if rescued else ["p0", "p2", "p3"])


def test_a_second_build_on_the_same_database_is_refused(tmp_path):
    fasta = Path(__file__).resolve().parents[2] / "examples" / "ecoli_k12_sample.fasta"  # a build of ~30 s
    db = tmp_path / "db"
    marker = uuid.uuid4().hex
    first = subprocess.Popen(
        [sys.executable, "-m", "structome", "build", str(fasta), "--db", str(db), "--no-progress"],
        env={**os.environ, "STRUCTOME_TEST_MARKER": marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (DatabaseLayout(db).build_running() and list((db / "builds").glob("*.manifest.json"))):
            assert first.poll() is None and time.monotonic() < deadline  # until it holds the lock and has planned
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "structome", "build", str(fasta), "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert "another build is writing" in second.stderr and "Traceback" not in second.stderr
        status = subprocess.run(
            [sys.executable, "-m", "structome", "status", "--db", str(db)], capture_output=True, text=True, timeout=120
        )
        assert status.returncode == 0 and "a build is running now" in status.stdout
        assert "latest build" in status.stdout and "shards" in status.stdout
        assert first.poll() is None and DatabaseLayout(db).build_running()  # the refused build left it alone
    finally:
        kill_all(marker)  # the first build and its Ray processes: its end is another test's business
        first.wait(30)
    with pytest.raises(DatabaseLockedError):  # in one process too
        with DatabaseLayout(tmp_path / "other").lock():
            with DatabaseLayout(tmp_path / "other").lock():
                pass


def test_a_build_that_lost_its_lease_stops_before_it_dispatches_more(tmp_path):
    from types import SimpleNamespace

    from structome.jobs.build.runner import _Loop
    from structome.pipelines.build import BuildCounters
    from structome.storage.locks import LeaseLostError

    def lost() -> None:
        raise LeaseLostError("lost the build lease on s3://b/db: it could not be renewed for 31 s")

    dispatched = []
    runner = SimpleNamespace(
        counters=BuildCounters(),
        plan=SimpleNamespace(shards=("s1", "s2"), entries_planned=2),
        settings=RunnerSettings(progress=False),
        start_workers=lambda: [],
        check_lock=lost,
        shard_deadline_s=lambda shard: dispatched.append(shard) or 1.0,
    )
    loop = _Loop(runner, manifest=None)
    loop._progress_reporter = lambda: contextlib.nullcontext(None)  # no Ray tally in this fake runner
    with pytest.raises(LeaseLostError, match="could not be renewed"):
        loop.run()
    assert dispatched == []


def test_a_call_that_ends_just_as_its_worker_is_killed_as_hung_is_written_not_a_crash(monkeypatch):
    """The deadline passed, but the call ended between ray.wait's timeout and the kill: every call the worker held
    has a result. It is written as usual (next() over the calls found no failed one: StopIteration stopped the
    build)."""
    from types import SimpleNamespace

    from structome.jobs.build import runner as runner_module
    from structome.jobs.build.runner import _Loop, _Running
    from structome.pipelines.build import BuildCounters

    replacement = SimpleNamespace(describe=SimpleNamespace(remote=lambda: "describe-ref"))
    runner = SimpleNamespace(
        counters=BuildCounters(),
        plan=SimpleNamespace(shards=(), entries_planned=1),  # s1 is already running
        settings=RunnerSettings(progress=False),
        start_worker=lambda: replacement,
    )
    records = []
    loop = _Loop(runner, manifest=SimpleNamespace(record=lambda *args, **kwargs: records.append(args)))
    written = []
    loop.write_task = SimpleNamespace(remote=lambda context, shard, result: written.append((shard, result)) or "w")
    runner.context = None
    worker, shard = object(), SimpleNamespace(shard_id="s1", entries=())
    loop.queued = {worker: ["stats-ref"]}
    loop.predicting = {"stats-ref": _Running(worker, shard, 0, "result-ref", deadline_s=1.0, started=0.0)}
    monkeypatch.setattr(runner_module.ray, "kill", lambda actor, no_restart: None)
    monkeypatch.setattr(runner_module, "_settled", lambda refs: [{"worker": "w", "predictions": 1}])
    loop._replace_hung_workers()
    assert written == [(shard, "result-ref")] and loop.pending == collections.deque()
    assert loop.starting == {"describe-ref": replacement} and loop.predicting == {} and worker not in loop.queued
    assert not any(record[1] in ("retried", "failed") for record in records)
