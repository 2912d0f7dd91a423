"""Execute a build plan on Ray: one long-lived predictor actor per GPU (or CPU slot), writers as CPU tasks.

Shards go to free actors longest first; a finished shard's predictions pass from the actor to a writer
task through the object store (the driver only sees a small stats record), so writing overlaps folding.
The number of shards being written at once is bounded, which keeps memory flat over a long build.
An actor that dies mid-shard is replaced and the shard retried elsewhere, up to `shard_retries` times;
then the shard's entries go to the failure ledger.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import os
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayError
from tqdm import tqdm

from jobs.manifest import ManifestWriter
from models.esmfold import EsmFoldSettings
from models.types import Failure
from pipelines.build import BuildCounters, BuildPlan
from pipelines.predict import predict_shard
from pipelines.sharding import ShardPlan, ShardPredictions
from pipelines.write import WriteContext, write_predicted_shard

logger = logging.getLogger(__name__)

# Default padded residues per model call. On a GPU batching fills the device; on a CPU it only adds
# cache misses (measured on the tiny model: 4 x 150 aa batched took 12.5 s, one at a time 10.5 s).
GPU_BATCH_TOKENS = 4096
CPU_BATCH_TOKENS = 512
DEFAULT_LOADER = "models.registry:load_predictor"
# Shards queued per actor. With 2, the driver's round trip (result to the object store, ray.wait, dispatch)
# overlaps folding (benchmark: 12-14 ms instead of ~22 ms idle per shard), but after an actor dies the
# driver cannot always tell which queued shard was running (a finished one's result can arrive after the
# death notice), so an innocent shard may be charged a retry. 1 until that is solved.
SHARDS_PER_WORKER = 1


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


@dataclass(frozen=True)
class RunnerSettings:
    address: str | None = None  # None: start Ray in-process
    workers: int | None = None  # predictor actors; None: one per GPU, else one per 4 CPUs
    gpus_per_worker: float = 1.0
    cpus_per_worker: int = 1  # reserved per actor; on CPU-only clusters torch may use more threads
    worker_resources: dict[str, float] = field(default_factory=dict)  # custom resources each actor needs
    device: str = "auto"  # auto: GPU actors when the cluster has GPUs now; cuda: always (autoscaled GPU nodes)
    max_writes_in_flight: int = 4
    shard_retries: int = 2  # a shard whose actor died is retried on a fresh actor this many times
    progress: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device must be auto, cuda or cpu, got {self.device!r}")
        if self.gpus_per_worker <= 0 or self.shard_retries < 0 or self.max_writes_in_flight < 1:
            raise ValueError("gpus per worker and writes in flight must be positive, shard retries >= 0")


class PredictorWorker:
    """Loads the model once, then folds shard after shard."""

    def __init__(self, model: ModelSpec, device: str, threads: int):
        import torch
        from transformers.utils import logging as transformers_logging

        torch.set_num_threads(max(1, threads))
        transformers_logging.disable_progress_bar()  # one bar per build, the driver's
        module, function = model.loader.split(":")
        load = getattr(importlib.import_module(module), function)
        self.predictor = load(model.name, model.weights, dataclasses.replace(model.settings, device=device))
        key = self.predictor.provenance.settings_key()
        if key != model.settings_key:
            raise RuntimeError(f"this worker's model ({key}) differs from the planned one ({model.settings_key})")
        self.label = f"{ray.get_runtime_context().get_node_id()[:8]}/pid{os.getpid()}"

    def describe(self) -> str:
        return self.label

    def predict(self, shard: ShardPlan, batch_tokens: int) -> tuple[dict, ShardPredictions]:
        """Two returns: small stats for the driver, the predictions for the writer."""
        result = predict_shard(self.predictor, shard, batch_tokens)
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
    worker: object
    shard: ShardPlan
    attempt: int
    result: object  # ObjectRef of the ShardPredictions


class RayBuildRunner:
    """Drives one plan through the actors and writers and keeps the counters."""

    def __init__(self, plan: BuildPlan, context: WriteContext, model: ModelSpec, settings: RunnerSettings):
        self.plan = plan
        self.context = context
        self.model = model
        self.settings = settings
        self.counters = BuildCounters()
        self.batch_tokens = plan.settings.batch_tokens  # resolved by device when the workers start

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
        return self._actor_class.remote(self.model, self.pool.device, self.pool.threads)

    def start_workers(self) -> list:
        self.pool = plan_workers(self.settings, ray.cluster_resources(), len(self.plan.shards))
        self.batch_tokens = self.batch_tokens or self.pool.batch_tokens
        self._actor_class = ray.remote(PredictorWorker).options(**self.pool.actor_options)
        logger.info("starting %d predictor worker(s) on %s, %d padded residues per batch", self.pool.count,
                    self.pool.device, self.batch_tokens)
        workers = [self.start_worker() for _ in range(self.pool.count)]
        try:
            ray.get([w.describe.remote() for w in workers])
        except RayError as error:
            raise BuildError(f"predictor workers could not start: {_first_line(error)}") from error
        return workers


@dataclass(frozen=True)
class WorkerPool:
    count: int
    device: str  # cuda or cpu
    threads: int  # torch threads per actor
    actor_options: dict
    batch_tokens: int  # default padded residues per batch for this device


def plan_workers(settings: RunnerSettings, resources: dict, shards: int) -> WorkerPool:
    """How many predictor actors, where, with what: one per GPU (or fraction), else one per 4 CPUs."""
    gpus, cpus = resources.get("GPU", 0), int(resources.get("CPU", 1))
    if settings.device == "cpu":
        gpus = 0
    elif settings.device == "cuda":  # GPU actors even before a GPU node is up (an autoscaler adds them)
        gpus = max(gpus, settings.gpus_per_worker)
    count = settings.workers or (int(gpus // settings.gpus_per_worker) if gpus else max(1, cpus // 4))
    count = max(1, min(count, shards))
    options = {"num_cpus": settings.cpus_per_worker, "max_restarts": 0}
    if gpus:
        options["num_gpus"] = settings.gpus_per_worker
    if settings.worker_resources:
        options["resources"] = dict(settings.worker_resources)
    return WorkerPool(
        count=count,
        device="cuda" if gpus else "cpu",
        threads=settings.cpus_per_worker if gpus else max(1, cpus // count),
        actor_options=options,
        batch_tokens=GPU_BATCH_TOKENS if gpus else CPU_BATCH_TOKENS,
    )


class _Loop:
    """The scheduling loop: dispatch shards to idle workers, hand results to writers, retry on worker death."""

    def __init__(self, runner: RayBuildRunner, manifest: ManifestWriter):
        self.runner = runner
        self.counters = runner.counters
        self.manifest = manifest
        self.pending = collections.deque((shard, 0) for shard in runner.plan.shards)
        self.predicting: dict = {}  # stats ref -> _Running
        self.writing: dict = {}  # write ref -> (shard, stats)
        # Defined in pipelines.write, so writer processes import gemmi and pyarrow but never torch.
        self.write_task = ray.remote(num_cpus=1)(write_predicted_shard)
        self.started = time.monotonic()
        self.queued: dict = collections.defaultdict(list)  # worker -> its stats refs in dispatch order

    def run(self) -> None:
        self.idle = [w for w in self.runner.start_workers() for _ in range(SHARDS_PER_WORKER)]  # one slot per queued shard
        self.bar = tqdm(total=self.runner.plan.entries_planned, unit="entry", disable=not self.runner.settings.progress)
        with self.bar:
            while self.pending or self.predicting or self.writing:
                self._dispatch()
                (ready,), _ = ray.wait([*self.predicting, *self.writing], num_returns=1)
                if ready in self.predicting:
                    self._on_predicted(ready, self.predicting.pop(ready))
                else:
                    self._on_written(ready, *self.writing.pop(ready))

    def _dispatch(self) -> None:
        while self.idle and self.pending and len(self.writing) < self.runner.settings.max_writes_in_flight:
            worker, (shard, attempt) = self.idle.pop(), self.pending.popleft()
            stats, result = worker.predict.options(num_returns=2).remote(shard, self.runner.batch_tokens)
            self.predicting[stats] = _Running(worker, shard, attempt, result)
            self.queued[worker].append(stats)
            self.manifest.record(shard.shard_id, "started", attempt=attempt)

    def _on_predicted(self, ref, running: _Running) -> None:
        try:
            stats = ray.get(ref)
        except RayActorError as error:
            self._on_worker_death(ref, running, error)
            return
        except RayError as error:  # the predictor raised: the worker lives on
            self.queued[running.worker].remove(ref)
            self.idle.append(running.worker)
            self._retry_or_fail(running, error)
            return
        self.queued[running.worker].remove(ref)
        self.idle.append(running.worker)
        self._dispatch()  # the next shard first, the write after: the actor's queue never runs dry
        self._hand_to_writer(running, stats)

    def _hand_to_writer(self, running: _Running, stats: dict) -> None:
        self.writing[self.write_task.remote(self.runner.context, running.shard, running.result)] = (running.shard, stats)

    def _on_worker_death(self, ref, running: _Running, error: RayError) -> None:
        """Replace the dead worker. Shards it finished before dying go on to the writers; the first unfinished
        one was running and counts an attempt; the ones queued behind it go back as they were (innocent
        bystanders of a poison shard)."""
        refs = self.queued.pop(running.worker)
        ray.kill(running.worker, no_restart=True)
        self.idle.extend([self.runner.start_worker()] * SHARDS_PER_WORKER)
        blamed = False
        for queued_ref in refs:
            queued = running if queued_ref == ref else self.predicting.pop(queued_ref)
            stats = None if queued_ref == ref else _result_if_done(queued_ref)
            if stats is not None:
                self._hand_to_writer(queued, stats)
            elif not blamed:
                blamed = True
                self._retry_or_fail(queued, error)
            else:
                self.pending.appendleft((queued.shard, queued.attempt))
                self.manifest.record(queued.shard.shard_id, "retried", error="requeued: its worker died")

    def _retry_or_fail(self, running: _Running, error: RayError) -> None:
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
        self._advance(len(shard.entries))

    def _on_written(self, ref, shard: ShardPlan, stats: dict) -> None:
        try:
            summary = ray.get(ref)
        except RayError as error:  # storage trouble is not a protein's fault: stop the build
            raise BuildError(f"writing shard {shard.shard_id} failed: {_first_line(error)}") from error
        self.counters.add_shard(summary, stats)
        self.manifest.record(shard.shard_id, "committed", entries=summary.entries_written, worker=stats["worker"])
        self._advance(len(shard.entries))

    def _advance(self, entries: int) -> None:
        elapsed = time.monotonic() - self.started
        counters = self.counters
        failures = len(counters.predict_failures) + len(counters.shard_failures) + len(self.runner.plan.ingest_failures)
        self.bar.set_postfix(residues_per_s=f"{self.counters.residues_written / elapsed:.0f}", failures=failures,
                             refresh=False)
        self.bar.update(entries)


def _result_if_done(ref) -> dict | None:
    """The stats of a call that already finished well, else None (without waiting)."""
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return None
    try:
        return ray.get(ref)
    except RayError:
        return None


def _shard_failures(shard: ShardPlan, error: Exception, attempts: int) -> list[Failure]:
    message = f"worker failed {attempts} time(s) on this shard: {_first_line(error)}"
    return [
        Failure(e.record_id, e.source_file, "worker_failed", message, "predict", e.entry_id, e.record_number)
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
    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    return True
