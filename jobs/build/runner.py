"""Execute a build plan on Ray: one long-lived predictor actor per GPU (or CPU slot), writers as CPU tasks.

Shards go longest first to the least busy actor, which holds up to SHARDS_PER_WORKER of them queued so that
the round trip between two shards overlaps folding. A finished shard's predictions pass from the actor to a
writer task through the object store, packed (the driver only sees a small stats record), so writing
overlaps folding. The number of shards being written at once is bounded, which keeps memory flat over a long
build. An actor that dies mid-shard is replaced and the shard retried elsewhere, up to `shard_retries` times;
then the shard's entries go to the failure ledger. Shards queued behind it go back unharmed. A shard's call has a
deadline (RunnerSettings.shard_deadline_s of its planned model time, counted from when the actor starts it): an
actor that misses it is hung (a GPU stuck in a kernel, a deadlock), and is killed and replaced the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from structome.jobs.build.manifest import ManifestWriter
from structome.jobs.build.progress import ProgressReporter, ProgressTally, batch_reporter, planned_work
from structome.jobs.build.settings import RunnerSettings
from structome.models.esmfold import WeightsDigest, is_local_weights, trust_weights_digest, weights_digest
from structome.models.types import EsmFoldSettings, Failure, FailureReason, Stage
from structome.pipelines.batching import Batcher, DeviceBudget
from structome.pipelines.build import BuildCounters, BuildPlan
from structome.pipelines.calibration import budget_for, device_spec, find_calibration, load_calibrations
from structome.pipelines.cost_model import CostModel
from structome.pipelines.estimate import planned_shard_seconds
from structome.pipelines.predict import predict_shard
from structome.pipelines.sharding import Shard, ShardPredictions
from structome.pipelines.write import WriteContext, write_predicted_shard
from structome.storage.catalog import refresh_catalog

logger = logging.getLogger(__name__)

DEFAULT_LOADER = "structome.models.registry:load_predictor"
# Shards queued per actor: with 2, the driver's round trip (result to the object store, ray.wait, dispatch)
# overlaps folding (benchmark: 12-14 ms instead of ~22 ms idle per shard with 1).
SHARDS_PER_WORKER = 2
# After an actor dies, how long the calls it held may take to report how they ended (they end at once: the
# actor is gone; a finished call's result may still be on its way).
SETTLE_SECONDS = 30.0
# CPUs a CPU-only host keeps free of predictor threads, for the writer tasks and the driver.
WRITER_CPUS = 1
WAKE_SECONDS = 5.0  # the loop looks at deadlines at least this often


class ShardDeadlineError(RuntimeError):
    """A shard's call did not end within its deadline: its worker was killed as hung."""


class BuildError(RuntimeError):
    """The build cannot go on (workers cannot start, a writer failed)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model every actor loads; `settings_key` must match the key the plan was made with."""

    name: str
    weights: str | None
    settings: EsmFoldSettings
    settings_key: str
    loader: str = DEFAULT_LOADER  # "module:function(name, weights, settings) -> Predictor"
    weights_digest: WeightsDigest | None = (
        None  # the driver's hash of `weights`: workers seeing the same files skip theirs
    )


def with_weights_digest(model: ModelSpec) -> ModelSpec:
    """The spec with the driver's hash of a local weights folder (cached since planning), or as it was for a hub
    id (never downloaded here) or weights the driver cannot see (the workers then hash them themselves)."""
    if model.weights is None or model.weights_digest is not None or not is_local_weights(model.weights):
        return model
    try:
        return dataclasses.replace(model, weights_digest=weights_digest(model.weights))
    except OSError as error:
        logger.info("workers will hash the weights themselves: %s", error)
        return model


class PredictorWorker:
    """Loads the model once, then folds shard after shard."""

    def __init__(self, model: ModelSpec, device: str, threads: int, batch_tokens: int | None, tally=None):
        import torch
        from transformers.utils import logging as transformers_logging

        torch.set_num_threads(max(1, threads))
        transformers_logging.disable_progress_bar()  # one bar per build, the driver's
        if model.weights_digest is not None:
            trust_weights_digest(model.weights_digest)
        module, function = model.loader.split(":")
        load = getattr(importlib.import_module(module), function)
        self.predictor = load(model.name, model.weights, dataclasses.replace(model.settings, device=device))
        key = self.predictor.provenance.settings_key()
        if key != model.settings_key:
            raise RuntimeError(f"this worker's model ({key}) differs from the planned one ({model.settings_key})")
        self.batcher = batcher_for(model, device, batch_tokens)
        self.tally = tally  # a ProgressTally actor, told of every folded batch
        self.label = f"{ray.get_runtime_context().get_node_id()[:8]}/pid{os.getpid()}"

    def describe(self) -> str:
        return self.label

    def predict(self, shard: Shard, after: dict | None = None) -> tuple[dict, ShardPredictions]:
        """Two returns: small stats for the driver, the predictions for the writer.

        `after` (unused) is the ref of the stats of the call queued before this one: Ray starts this call only
        once they have reached the driver, so a death can never hide that the previous shard was finished.
        """
        on_batch = batch_reporter(self.tally, shard.shard_id) if self.tally is not None else None
        result = predict_shard(self.predictor, shard, self.batcher, on_batch)
        stats = {
            "worker": self.label,
            "predictions": len(result.predictions),
            "model_seconds": result.model_seconds,
            "padded_residues": result.padded_residues,
            "folded_residues": sum(len(p.sequence) for p in result.predictions),
        }
        return stats, result


@dataclass
class _Running:
    worker: Any  # the actor handle
    shard: Shard
    attempt: int
    result: Any  # ObjectRef of the ShardPredictions
    deadline_s: float  # how long the call may run once started
    started: float | None = None  # time.monotonic() when the actor started it (the call before it had ended)

    def overdue(self, now: float) -> bool:
        return self.started is not None and now - self.started > self.deadline_s


class RayBuildRunner:
    """Drives one plan through the actors and writers and keeps the counters."""

    def __init__(
        self,
        plan: BuildPlan,
        context: WriteContext,
        model: ModelSpec,
        settings: RunnerSettings,
        check_lock: Callable[[], None] = lambda: None,
    ):
        self.plan = plan
        self.context = context
        self.model = with_weights_digest(model)
        self.settings = settings
        self.counters = BuildCounters()
        self.check_lock = check_lock  # raises once the build lock is lost (storage.locks.LeaseLock.ensure_held)

    def run(self) -> BuildCounters:
        if not self.plan.shards:
            return self.counters
        connected = _ensure_ray(self.settings.address)
        manifest = ManifestWriter(self.context.layout, self.plan)
        try:
            _Loop(self, manifest).run()
        finally:
            manifest.close()
            if connected:
                ray.shutdown()
        return self.counters

    def start_worker(self):
        return self._actor_class.remote(
            self.model, self.pool.device, self.pool.threads, self.plan.settings.batch_tokens, self.tally
        )

    def shard_deadline_s(self, shard: Shard) -> float:
        """How long a call on SHARD may run: the settings' multiple of its planned model time, at least the floor."""
        lengths = [len(r.sequence) for r in shard.requests]
        cost, calibration = self._rates
        return self.settings.shard_deadline_s(planned_shard_seconds(lengths, cost, calibration, self.pool.device))

    def start_workers(self) -> list:
        self.pool = plan_workers(self.settings, ray.cluster_resources(), len(self.plan.shards))
        self._actor_class = ray.remote(PredictorWorker).options(**self.pool.actor_options)
        self._rates = (
            CostModel.for_preset(self.model.name, self.model.settings.num_recycles),
            find_calibration(load_calibrations(), self.model.name, self.pool.device),
        )
        self.tally: Any = ray.remote(ProgressTally).options(num_cpus=0).remote()  # an actor handle
        logger.info("starting %d predictor worker(s) on %s", self.pool.count, self.pool.device)
        workers = [self.start_worker() for _ in range(self.pool.count)]
        try:
            ray.get([w.describe.remote() for w in workers])
        except RayError as error:
            raise BuildError(f"predictor workers could not start: {_first_line(error)}") from error
        return workers


def batcher_for(model: ModelSpec, device: str, batch_tokens: int | None) -> Batcher:
    """The model's cost model and this device's budget: a GPU's memory, or the host's with the CPU
    calibration's batch cap (batching pays on a CPU only for short sequences); `batch_tokens` caps padded
    residues per call on top."""
    cost = CostModel.for_preset(model.name, model.settings.num_recycles)
    if device == "cuda":
        import torch

        memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        budget = DeviceBudget.for_device(cost, memory)
    else:
        budget = budget_for(cost, device_spec("cpu"), find_calibration(load_calibrations(), model.name, "cpu"))
    return Batcher(cost, dataclasses.replace(budget, max_padded_residues=batch_tokens))


@dataclass(frozen=True)
class WorkerPool:
    count: int
    device: str  # cuda or cpu
    threads: int  # torch threads per actor
    actor_options: dict


def plan_workers(settings: RunnerSettings, resources: dict, shards: int) -> WorkerPool:
    """How many predictor actors, where, with what: one per GPU (or fraction), else one per 4 CPUs."""
    gpus, cpus = resources.get("GPU", 0), int(resources.get("CPU", 1))
    if settings.device == "cpu":
        gpus = 0
    elif settings.device == "cuda":  # GPU actors even before a GPU node is up (an autoscaler adds them)
        gpus = max(gpus, settings.gpus_per_worker)
    count = settings.workers or (int(gpus // settings.gpus_per_worker) if gpus else max(1, cpus // 4))
    count = max(1, min(count, shards))
    # A CPU that writes beside the folding: torch threads on every core fight the writer tasks, and OpenMP
    # threads that wait for a busy core spin (measured on 2 cores: 2 threads 5-10x slower than 1 under load).
    folding_cpus = cpus - WRITER_CPUS if cpus > WRITER_CPUS else cpus
    options: dict[str, object] = {"num_cpus": settings.cpus_per_worker, "max_restarts": 0}
    if gpus:
        options["num_gpus"] = settings.gpus_per_worker
    if settings.worker_resources:
        options["resources"] = dict(settings.worker_resources)
    return WorkerPool(
        count=count,
        device="cuda" if gpus else "cpu",
        threads=settings.cpus_per_worker if gpus else max(1, folding_cpus // count),
        actor_options=options,
    )


class _Loop:
    """The scheduling loop: dispatch shards to workers with room, hand results to writers, retry on worker death."""

    def __init__(self, runner: RayBuildRunner, manifest: ManifestWriter):
        self.runner = runner
        self.counters = runner.counters
        self.manifest = manifest
        self.pending = collections.deque((shard, 0) for shard in runner.plan.shards)
        self.predicting: dict = {}  # stats ref -> _Running
        self.starting: dict = {}  # describe ref of a replacement actor (loading its model) -> the actor
        self.writing: dict = {}  # write ref -> (shard, stats)
        # Defined in pipelines.write, so writer processes import gemmi and pyarrow but never torch.
        self.write_task = ray.remote(num_cpus=1)(write_predicted_shard)
        self.started = self.refreshed = time.monotonic()

    def run(self) -> None:
        self.queued: dict[Any, list] = {
            worker: [] for worker in self.runner.start_workers()
        }  # worker -> stats refs, in call order
        with self._progress_reporter() as self.progress:
            while self.pending or self.predicting or self.writing:
                self.runner.check_lock()  # a build that lost its lease stops here, before it writes more
                self._dispatch()
                waiting = [*self.predicting, *self.writing, *self.starting]
                ready, _ = ray.wait(waiting, num_returns=1, timeout=self._until_next_deadline())
                if not ready:
                    self._replace_hung_workers()
                elif ready[0] in self.starting:
                    self._on_started(ready[0])
                elif ready[0] in self.predicting:
                    self._on_predicted(ready[0])
                else:
                    self._on_written(ready[0], *self.writing.pop(ready[0]))

    def _progress_reporter(self) -> ProgressReporter:
        runner, settings = self.runner, self.runner.settings
        cost = CostModel.for_preset(runner.model.name, runner.model.settings.num_recycles)
        return ProgressReporter(
            runner.plan,
            runner.context.layout,
            lambda: ray.get(runner.tally.totals.remote(), timeout=10),
            planned_work(runner.plan, cost),
            bar=settings.progress,
            interval_s=settings.progress_interval_s,
        )

    def _dispatch(self) -> None:
        while self.pending and self.queued and len(self.writing) < self.runner.settings.max_writes_in_flight:
            worker = min(self.queued, key=lambda w: len(self.queued[w]))  # the least busy
            if len(self.queued[worker]) >= SHARDS_PER_WORKER:
                return
            shard, attempt = self.pending.popleft()
            after = self.queued[worker][-1] if self.queued[worker] else None
            stats, result = worker.predict.options(num_returns=2).remote(shard, after)
            running = _Running(worker, shard, attempt, result, self.runner.shard_deadline_s(shard))
            if after is None:  # the actor starts it now
                running.started = time.monotonic()
            self.predicting[stats] = running
            self.queued[worker].append(stats)
            self.manifest.record(shard.shard_id, "started", attempt=attempt)

    def _on_predicted(self, ready) -> None:
        """Take the calls of `ready`'s worker that have ended, in the order it ran them: a call starts only after
        the previous one ended, but ray.wait may report a later one first."""
        worker = self.predicting[ready].worker
        if isinstance(_outcome(ready), RayActorError):
            self._on_worker_death(worker)
            return
        queue = self.queued[worker]
        while queue and not isinstance(outcome := _outcome(queue[0]), GetTimeoutError):  # until one still runs
            if isinstance(outcome, RayActorError):
                self._on_worker_death(worker)
                return
            running, never_ran = self.predicting.pop(queue.pop(0)), []
            if isinstance(outcome, RayError):  # the calls queued behind wait for its stats: Ray fails them unrun
                never_ran = [self.predicting.pop(r) for r in queue]
                queue.clear()
            if queue:  # the next call starts now
                self.predicting[queue[0]].started = time.monotonic()
            self._dispatch()  # the next shard first, the write after: the actor's queue never runs dry
            self._on_call_ended(running, outcome)
            self._requeue(never_ran, "the shard queued before it failed")

    def _on_call_ended(self, running: _Running, outcome: dict | RayError) -> None:
        """A call that ended without killing its worker: its stats, or what the predictor raised."""
        if isinstance(outcome, RayError):
            self._retry_or_fail(running, outcome)
        else:
            self.writing[self.write_task.remote(self.runner.context, running.shard, running.result)] = (
                running.shard,
                outcome,
            )

    def _on_worker_death(self, worker, hung: ShardDeadlineError | None = None) -> None:
        """Replace the dead (or HUNG, then killed) worker, then judge the calls it held once each has ended, in the
        order it ran them: those that finished go on as usual; the first that did not was being folded and counts
        an attempt; the ones queued behind it never ran and go back as they were (innocent bystanders of a poison
        shard). Exact, because a call starts only once the driver holds the previous call's stats
        (PredictorWorker.predict)."""
        refs = self.queued.pop(worker)
        ray.kill(worker, no_restart=True)
        replacement = self.runner.start_worker()
        self.starting[replacement.describe.remote()] = replacement  # takes shards once its model is loaded
        outcomes = _settled(refs)
        calls = [self.predicting.pop(r) for r in refs]
        # None: every call ended before the kill (a call killed as hung that finished just then)
        failed = next((i for i, outcome in enumerate(outcomes) if isinstance(outcome, RayError)), None)
        for call, outcome in zip(calls[:failed], outcomes[:failed], strict=True):
            self._on_call_ended(call, outcome)
        if failed is None:
            return
        error = outcomes[failed]
        assert isinstance(error, RayError)
        self._retry_or_fail(calls[failed], hung if hung is not None and failed == 0 else error)
        self._requeue(calls[failed + 1 :], "its worker died")

    def _until_next_deadline(self) -> float:
        """Seconds until the first running call is due (WAKE_SECONDS at most)."""
        now, wait = time.monotonic(), WAKE_SECONDS
        for refs in self.queued.values():
            if refs and (call := self.predicting[refs[0]]).started is not None:
                wait = min(wait, call.started + call.deadline_s - now)
        return max(wait, 0.0) + 0.01

    def _replace_hung_workers(self) -> None:
        """Kill and replace every actor whose running call is past its deadline."""
        now = time.monotonic()
        for worker, refs in list(self.queued.items()):
            if refs and (call := self.predicting[refs[0]]).overdue(now):
                assert call.started is not None
                message = (
                    f"no result after {now - call.started:.0f} s (deadline {call.deadline_s:.0f} s): "
                    "the worker was killed as hung"
                )
                logger.warning("shard %s: %s", call.shard.shard_id, message)
                self.counters.hung_workers += 1
                self._on_worker_death(worker, ShardDeadlineError(message))

    def _on_started(self, ref) -> None:
        worker = self.starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as error:
            raise BuildError(f"a replacement predictor worker could not start: {_first_line(error)}") from error
        self.queued[worker] = []

    def _requeue(self, calls: list[_Running], reason: str) -> None:
        """Back to the front of the queue in their order, attempts unchanged: these shards never ran."""
        for call in reversed(calls):
            self.pending.appendleft((call.shard, call.attempt))
            self.manifest.record(call.shard.shard_id, "retried", error=f"requeued: {reason}")

    def _retry_or_fail(self, running: _Running, error: RayError | ShardDeadlineError) -> None:
        shard = running.shard
        if running.attempt < self.runner.settings.shard_retries:
            logger.warning("shard %s: worker failed (%s); retrying", shard.shard_id, _first_line(error))
            self.counters.retried_shards += 1
            self.pending.appendleft((shard, running.attempt + 1))
            self.manifest.record(shard.shard_id, "retried", error=_first_line(error))
            return
        logger.error("shard %s failed %d times; its entries go to the ledger", shard.shard_id, running.attempt + 1)
        self.counters.shard_failures.extend(_shard_failures(shard, error, running.attempt + 1))
        self.manifest.record(shard.shard_id, "failed", error=_first_line(error))
        self._advance()

    def _on_written(self, ref, shard: Shard, stats: dict) -> None:
        try:
            summary = ray.get(ref)
        except RayError as error:  # storage trouble is not a protein's fault: stop the build
            raise BuildError(f"writing shard {shard.shard_id} failed: {_first_line(error)}") from error
        self.counters.add_shard(summary, stats)
        self.manifest.record(shard.shard_id, "committed", entries=summary.entries_written, worker=stats["worker"])
        self._advance()
        self._refresh_catalog_now_and_then()

    def _refresh_catalog_now_and_then(self) -> None:
        """Let `sql` and the server see the shards committed so far (the views list files; they are no globs)."""
        if time.monotonic() - self.refreshed < self.runner.settings.catalog_refresh_s:
            return
        try:
            refresh_catalog(self.runner.context.layout)
        except duckdb.IOException as error:  # a long reader holds catalog.duckdb: next time
            logger.info("catalog not refreshed now: %s", error)
        self.refreshed = time.monotonic()

    def _advance(self) -> None:
        counters = self.counters
        failures = len(counters.predict_failures) + len(counters.shard_failures) + len(self.runner.plan.ingest_failures)
        self.progress.committed(counters.shards_committed, failures)


def _outcome(ref) -> dict | RayError:
    """A call's stats, or the error it ended with (GetTimeoutError while it has not ended)."""
    try:
        return ray.get(ref, timeout=0)
    except RayError as error:
        return error


def _settled(refs: list) -> list[dict | RayError]:
    """Each call's outcome once it has ended (GetTimeoutError if it has not after SETTLE_SECONDS)."""
    ray.wait(refs, num_returns=len(refs), timeout=SETTLE_SECONDS)
    return [_outcome(ref) for ref in refs]


def _shard_failures(shard: Shard, error: Exception, attempts: int) -> list[Failure]:
    message = f"worker failed {attempts} time(s) on this shard: {_first_line(error)}"
    hung = isinstance(error, ShardDeadlineError)
    reason = FailureReason.DEADLINE_EXCEEDED if hung else FailureReason.WORKER_FAILED
    return [
        Failure(
            e.record_id,
            e.source_file,
            reason,
            message,
            Stage.PREDICT,
            e.entry_id,
            e.record_number,
            accession=e.accession,
        )
        for e in shard.entries
    ]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _ensure_ray(address: str | None) -> bool:
    """Join `address`, or start Ray in-process. True when this call connected (and must disconnect)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private in-process cluster needs no token
    # "local": a new private instance. Without it, ray.init joins whatever cluster `ray start` last started on
    # this machine (someone else's, whose workers lack our environment).
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    return True
