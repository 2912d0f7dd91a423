"""Execute a build plan on Ray: one long-lived predictor actor per GPU (or CPU slot), writers as CPU tasks.

Shards go to free actors longest first; a finished shard's predictions pass from the actor to a writer
task through the object store (the driver never holds them), so writing overlaps folding. The number of
shards being written at once is bounded, which keeps memory flat over a long build.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from dataclasses import dataclass

import ray
from ray.exceptions import RayError
from tqdm import tqdm

from models.esmfold import EsmFoldSettings
from models.registry import load_predictor
from models.types import Failure
from pipelines.build import BuildCounters, BuildPlan
from pipelines.predict import ShardPredictions, predict_shard
from pipelines.sharding import ShardPlan
from pipelines.write import ShardSummary, WriteContext, write_shard

logger = logging.getLogger(__name__)

# Default padded residues per model call. On a GPU batching fills the device; on a CPU it only adds
# cache misses (measured on the tiny model: 4 x 150 aa batched took 12.5 s, one at a time 10.5 s).
GPU_BATCH_TOKENS = 4096
CPU_BATCH_TOKENS = 512


@dataclass(frozen=True)
class ModelSpec:
    """Which model every actor loads; `settings_key` must match the key the plan was made with."""

    name: str
    weights: str | None
    settings: EsmFoldSettings
    settings_key: str


@dataclass(frozen=True)
class RunnerSettings:
    address: str | None = None  # None: start Ray in-process
    workers: int | None = None  # predictor actors; None: one per GPU, else one per 4 CPUs
    gpus_per_worker: float = 1.0
    cpus_per_worker: int = 1  # reserved per actor; on CPU-only clusters torch may use more threads
    max_writes_in_flight: int = 4
    actor_restarts: int = 2  # a dead actor is replaced and its shard retried this many times
    progress: bool = True


class PredictorWorker:
    """Loads the model once, then folds shard after shard."""

    def __init__(self, model: ModelSpec, device: str, threads: int):
        import torch
        from transformers.utils import logging as transformers_logging

        torch.set_num_threads(max(1, threads))
        transformers_logging.disable_progress_bar()  # one bar per build, the driver's
        settings = dataclasses.replace(model.settings, device=device)
        self.predictor = load_predictor(model.name, model.weights, settings)
        key = self.predictor.provenance.settings_key()
        if key != model.settings_key:
            raise RuntimeError(f"this worker's model ({key}) differs from the planned one ({model.settings_key})")

    def predict(self, shard: ShardPlan, batch_tokens: int) -> ShardPredictions:
        return predict_shard(self.predictor, shard, batch_tokens)


def _write(context: WriteContext, shard: ShardPlan, predicted: ShardPredictions) -> tuple[ShardSummary, dict]:
    summary = write_shard(context, shard, predicted.predictions, predicted.failures)
    stats = {
        "predictions": len(predicted.predictions),
        "model_seconds": predicted.model_seconds,
        "padded_residues": predicted.padded_residues,
        "folded_residues": sum(len(p.sequence) for p in predicted.predictions),
    }
    return summary, stats


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
        started_ray = _ensure_ray(self.settings.address)
        try:
            self._run_shards(self._start_workers())
        finally:
            if started_ray:
                ray.shutdown()
        return self.counters

    def _start_workers(self) -> list:
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = self.settings.workers or (int(gpus // self.settings.gpus_per_worker) if gpus else max(1, cpus // 4))
        count = max(1, min(count, len(self.plan.shards)))
        threads = self.settings.cpus_per_worker if gpus else max(1, cpus // count)
        options = {"num_cpus": self.settings.cpus_per_worker, "max_restarts": self.settings.actor_restarts,
                   "max_task_retries": self.settings.actor_restarts}
        if gpus:
            options["num_gpus"] = self.settings.gpus_per_worker
        device = "cuda" if gpus else "cpu"
        self.batch_tokens = self.plan.settings.batch_tokens or (GPU_BATCH_TOKENS if gpus else CPU_BATCH_TOKENS)
        actor_class = ray.remote(PredictorWorker).options(**options)
        logger.info("starting %d predictor worker(s) on %s, %d padded residues per batch", count, device,
                    self.batch_tokens)
        return [actor_class.remote(self.model, device, threads) for _ in range(count)]

    def _run_shards(self, workers: list) -> None:
        write_task = ray.remote(num_cpus=1)(_write)
        pending = collections.deque(self.plan.shards)
        idle = list(workers)
        predicting: dict = {}
        writing: dict = {}
        with tqdm(total=self.plan.entries_planned, unit="entry", disable=not self.settings.progress) as bar:
            while pending or predicting or writing:
                while idle and pending and len(writing) < self.settings.max_writes_in_flight:
                    worker, shard = idle.pop(), pending.popleft()
                    predicting[worker.predict.remote(shard, self.batch_tokens)] = (worker, shard)
                ready, _ = ray.wait([*predicting, *writing], num_returns=1)
                if ready[0] in predicting:
                    worker, shard = predicting.pop(ready[0])
                    idle.append(worker)
                    writing[write_task.remote(self.context, shard, ready[0])] = shard
                else:
                    self._finish_shard(writing.pop(ready[0]), ready[0], bar)

    def _finish_shard(self, shard: ShardPlan, ref, bar: tqdm) -> None:
        try:
            summary, stats = ray.get(ref)
        except RayError as error:  # the shard's worker died beyond its restarts: its entries go to the ledger
            logger.error("shard %s failed: %s", shard.shard_id, error)
            self.counters.predict_failures.extend(_shard_failures(shard, error))
            bar.update(len(shard.entries))
            return
        self.counters.add_shard(summary, stats)
        bar.update(len(shard.entries))
        bar.set_postfix(failures=len(self.counters.predict_failures) + len(self.plan.ingest_failures))


def _shard_failures(shard: ShardPlan, error: Exception) -> list[Failure]:
    message = f"worker failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return [
        Failure(e.record_id, e.source_file, "worker_failed", message, "predict", e.entry_id, e.record_number)
        for e in shard.entries
    ]


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
