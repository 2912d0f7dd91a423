"""Devices and measured throughput: data-sheet specs, calibrations (calibration.json beside this file).

A calibration is a measured rate of one model on one device by the size of a call; planners use it for wall
time and for the largest call where batching still pays. Pure data: no torch, no Ray.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from structome.pipelines.batching import DeviceBudget
from structome.pipelines.cost_model import CostModel

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class DeviceSpec:
    label: str
    memory_bytes: float  # device memory
    peak_flops: float | None  # dense bf16 FLOP/s from the vendor's data sheet; None: no data-sheet figure used


def _host_memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# Data-sheet figures (dense, without sparsity), not measurements.
DEVICES: dict[str, Callable[[], DeviceSpec]] = {
    "h100": lambda: DeviceSpec("NVIDIA H100 SXM 80 GB", 80e9, 989e12),
    "h200": lambda: DeviceSpec("NVIDIA H200 141 GB", 141e9, 989e12),
    "a100": lambda: DeviceSpec("NVIDIA A100 80 GB", 80e9, 312e12),
    "l4": lambda: DeviceSpec("NVIDIA L4 24 GB", 24e9, 121e12),
    "a10g": lambda: DeviceSpec("NVIDIA A10G 24 GB (A10 data sheet)", 24e9, 125e12),
    "cpu": lambda: DeviceSpec("CPU worker (this host's memory)", _host_memory_bytes(), None),
}


def device_spec(gpu_type: str) -> DeviceSpec:
    if gpu_type not in DEVICES:
        raise ValueError(f"unknown device {gpu_type!r}; known: {', '.join(DEVICES)}")
    return DEVICES[gpu_type]()


@dataclass(frozen=True)
class Calibration:
    """Measured throughput of one model on one device: FLOP/s by the size of a call."""

    model: str
    device: str
    call_flops: tuple[float, ...]  # executed FLOPs of a call, ascending
    flops_per_second: tuple[float, ...]  # measured at each call size
    max_batch_flops: float | None  # largest batched call measured that still beat one at a time, if known
    measured: str  # where, when and with what command

    def seconds(self, executed_flops: float) -> float:
        """A call's time, the rate interpolated in log(call size) and held constant beyond the measured range."""
        return executed_flops / _interpolate(
            math.log(executed_flops), [math.log(f) for f in self.call_flops], self.flops_per_second
        )


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def load_calibrations(path: Path = CALIBRATION_PATH) -> list[Calibration]:
    entries = json.loads(path.read_text())["calibrations"]
    return [
        Calibration(
            model=e["model"],
            device=e["device"],
            call_flops=tuple(p["call_flops"] for p in e["points"]),
            flops_per_second=tuple(p["flops_per_second"] for p in e["points"]),
            max_batch_flops=e.get("max_batch_flops"),
            measured=e["measured"],
        )
        for e in entries
    ]


def find_calibration(calibrations: Sequence[Calibration], model: str, device: str) -> Calibration | None:
    return next((c for c in calibrations if (c.model, c.device) == (model, device)), None)


def budget_for(cost: CostModel, spec: DeviceSpec, calibration: Calibration | None) -> DeviceBudget:
    """The device's memory; the largest call where batching still paid if measured, else the cost model's."""
    max_batch_flops = calibration.max_batch_flops if calibration else None
    return DeviceBudget.for_device(cost, spec.memory_bytes, max_batch_flops=max_batch_flops)
