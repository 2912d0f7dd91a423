"""How a build runs on Ray: worker counts, devices, retries (no Ray import: the CLI reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

WORKER_DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class RunnerSettings:
    address: str | None = None  # None: start Ray in-process
    workers: int | None = None  # predictor actors; None: one per GPU, else one per 4 CPUs
    gpus_per_worker: float = 1.0
    cpus_per_worker: int = 1  # reserved per actor; on CPU-only clusters torch may use more threads
    worker_resources: dict[str, float] = field(default_factory=dict)  # custom resources each actor needs
    device: str = "auto"  # auto: GPU actors when the cluster has GPUs now; cuda: always (autoscaled GPU nodes)
    max_writes_in_flight: int = 4
    shard_retries: int = 2  # a shard whose actor died (or hung) is retried on a fresh actor this many times
    # A shard's call may run this many times its planned model time (pipelines.estimate), and at least the floor;
    # an actor that misses the deadline (a GPU stuck in a kernel, a deadlock) is killed and replaced.
    shard_deadline_factor: float = 20.0
    shard_deadline_floor_s: float = 900.0
    progress: bool = True  # a bar on a terminal; without one (or False), a line every progress_interval_s
    progress_interval_s: float = 30.0
    catalog_refresh_s: float = 30.0  # while committing, the catalog's views are rewritten at most this often

    def __post_init__(self) -> None:
        if self.device not in WORKER_DEVICES:
            raise ValueError(f"device must be auto, cuda or cpu, got {self.device!r}")
        if self.progress_interval_s <= 0:
            raise ValueError(f"the progress interval must be positive, got {self.progress_interval_s}")
        if self.gpus_per_worker <= 0 or self.shard_retries < 0 or self.max_writes_in_flight < 1:
            raise ValueError("gpus per worker and writes in flight must be positive, shard retries >= 0")
        if self.shard_deadline_factor < 1 or self.shard_deadline_floor_s <= 0:
            raise ValueError("the shard deadline factor must be at least 1 and its floor positive")

    def shard_deadline_s(self, planned_seconds: float) -> float:
        return max(self.shard_deadline_floor_s, self.shard_deadline_factor * planned_seconds)
