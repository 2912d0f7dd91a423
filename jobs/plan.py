"""`structome plan`: what a build would do and cost, without running anything.

Reads the inputs as a build would (ingest, deduplication, fragments, length-sorted shards), plans every
shard's batches with the cost model, and compares them with fixed-size batches over the unsorted input.
Wall time comes from measured rates (calibration.json beside this file) where one exists for the model and
device; otherwise from the data-sheet peak times an assumed utilisation, and the report says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from models.registry import PRESETS
from pipelines.batch_plan import (
    BatchPlan, DeviceBudget, PlanTotals, plan_batches_by_cost, plan_fixed_batches, solo_length,
)
from pipelines.build import BuildSettings
from pipelines.cost_model import ESMFOLD_V1_CONFIG, CostModel
from pipelines.ingest import IngestSettings, ingest
from pipelines.sharding import plan_shards

logger = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
ASSUMED_UTILIZATION = 0.02  # of dense bf16 peak: reference ESMFold's (design.md); an assumption, not a measurement
PLAN_MODEL_KEY = "plan"  # any constant key deduplicates the same sequences as the build's
FORMATS = ("table", "json")


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


def _tiny_config() -> Mapping:
    from models.tiny import tiny_config  # torch and transformers: only for this preset

    return tiny_config().to_dict()


MODEL_CONFIGS: dict[str, Callable[[], Mapping]] = {"esmfold": lambda: ESMFOLD_V1_CONFIG, "esmfold-tiny": _tiny_config}


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
        return executed_flops / _interpolate(math.log(executed_flops), [math.log(f) for f in self.call_flops],
                                             self.flops_per_second)


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def load_calibrations(path: Path = CALIBRATION_PATH) -> list[Calibration]:
    entries = json.loads(path.read_text())["calibrations"]
    return [
        Calibration(
            model=e["model"], device=e["device"],
            call_flops=tuple(p["call_flops"] for p in e["points"]),
            flops_per_second=tuple(p["flops_per_second"] for p in e["points"]),
            max_batch_flops=e.get("max_batch_flops"), measured=e["measured"],
        )
        for e in entries
    ]


def find_calibration(calibrations: Sequence[Calibration], model: str, device: str) -> Calibration | None:
    return next((c for c in calibrations if (c.model, c.device) == (model, device)), None)


@dataclass(frozen=True)
class WallTimeEstimate:
    device_seconds: float | None  # summed over all batches on one device; None: no rate known
    wall_seconds: float | None  # spread evenly over the devices
    measured: bool  # from a measured calibration (else: data-sheet peak x assumed utilisation)
    note: str


@dataclass(frozen=True)
class PlanReport:
    inputs: tuple[str, ...]
    model: str
    num_recycles: int
    device: str  # --gpu-type
    device_label: str
    devices: int
    records: int
    entries: int
    fragments: int  # entries that are windows of a longer sequence
    ingest_failures: int
    unique_sequences: int
    residues: int  # of the unique sequences
    shards: int
    solo_length: int  # residues: sequences at least this long run alone
    budget: DeviceBudget
    planner: PlanTotals
    planner_over_memory: int  # lone sequences the cost model says exceed the activation budget
    baseline: PlanTotals
    baseline_batch_size: int
    baseline_over_memory: int  # baseline batches over the activation budget
    flops_polynomial: tuple[float, float, float, float]  # FLOPs(L) = a3 L^3 + a2 L^2 + a1 L + a0
    estimate: WallTimeEstimate

    def as_dict(self) -> dict:
        figures = asdict(self)
        for name in ("planner", "baseline"):
            totals = getattr(self, name)
            figures[name] |= {"token_efficiency": totals.token_efficiency, "flop_efficiency": totals.flop_efficiency}
        return figures


def plan_report(
    inputs: Sequence[str | Path], *, model: str = "esmfold", gpu_type: str = "h100", gpus: int = 1,
    num_recycles: int = 4, build_settings: BuildSettings | None = None, baseline_batch_size: int | None = None,
    calibrations: Sequence[Calibration] | None = None,
) -> PlanReport:
    """Everything `structome plan` prints, computed from the inputs alone."""
    if gpus < 1:
        raise ValueError("--gpus must be at least 1")
    settings = build_settings or BuildSettings()
    cost = cost_model_for(model, num_recycles)
    spec = device_spec(gpu_type)
    calibration = find_calibration(load_calibrations() if calibrations is None else calibrations, model, gpu_type)
    budget = budget_for(cost, spec, calibration)
    result = ingest(inputs, settings.ingest, PLAN_MODEL_KEY)
    requests = result.requests()
    shards = plan_shards(result.entries, requests, settings.shard_size_for(len(requests)))
    plans = [plan_batches_by_cost([len(r.sequence) for r in shard.requests], cost, budget) for shard in shards]
    planner = sum((p.totals for p in plans), PlanTotals())
    batch_size = baseline_batch_size or max(1, round(planner.sequences / max(planner.batches, 1)))
    baseline = plan_fixed_batches([len(r.sequence) for r in requests], batch_size, cost, budget)
    return PlanReport(
        inputs=tuple(str(p) for p in inputs), model=model, num_recycles=num_recycles, device=gpu_type,
        device_label=spec.label, devices=gpus, records=result.record_count, entries=len(result.entries),
        fragments=sum(1 for e in result.entries if e.length < len(e.sequence)),
        ingest_failures=len(result.failures), unique_sequences=len(requests),
        residues=sum(len(r.sequence) for r in requests), shards=len(shards), solo_length=solo_length(cost, budget),
        budget=budget, planner=planner, planner_over_memory=sum(_over_memory(p) for p in plans),
        baseline=baseline.totals, baseline_batch_size=batch_size, baseline_over_memory=_over_memory(baseline),
        flops_polynomial=tuple(asdict(cost.polynomial).values()),
        estimate=estimate_wall_time(plans, spec, gpus, calibration, model, gpu_type),
    )


def cost_model_for(model: str, num_recycles: int) -> CostModel:
    if model not in MODEL_CONFIGS:
        raise ValueError(f"no cost model for {model!r}; known: {', '.join(sorted(MODEL_CONFIGS))}")
    return CostModel.from_config(MODEL_CONFIGS[model](), num_recycles)


def device_spec(gpu_type: str) -> DeviceSpec:
    if gpu_type not in DEVICES:
        raise ValueError(f"unknown device {gpu_type!r}; known: {', '.join(DEVICES)}")
    return DEVICES[gpu_type]()


def budget_for(cost: CostModel, spec: DeviceSpec, calibration: Calibration | None) -> DeviceBudget:
    """The device's memory; the largest call where batching still paid if measured, else the cost model's."""
    max_batch_flops = calibration.max_batch_flops if calibration else None
    return DeviceBudget.for_device(cost, spec.memory_bytes, max_batch_flops=max_batch_flops)


def _over_memory(plan: BatchPlan) -> int:
    return sum(1 for batch in plan.batches if not batch.fits)


def estimate_wall_time(
    plans: Sequence[BatchPlan], spec: DeviceSpec, devices: int, calibration: Calibration | None, model: str,
    device: str,
) -> WallTimeEstimate:
    """Model time of every planned call, spread evenly over the devices (loading and writing not included)."""
    calls = [batch.executed_flops for plan in plans for batch in plan.batches]
    if calibration is not None:
        seconds = sum(calibration.seconds(flops) for flops in calls)
        note = f"measured calibration for {model} on {device}: {calibration.measured}"
    elif spec.peak_flops is not None:
        seconds = sum(calls) / (spec.peak_flops * ASSUMED_UTILIZATION)
        note = (
            f"no measured calibration for {model} on {device}: ASSUMED {ASSUMED_UTILIZATION:.0%} of the data-sheet "
            f"peak ({spec.peak_flops / 1e12:.0f} TFLOP/s dense bf16), reference ESMFold's utilisation"
        )
    else:
        return WallTimeEstimate(None, None, False, f"no measured calibration for {model} on {device}")
    return WallTimeEstimate(seconds, seconds / devices, calibration is not None, note)


def format_plan_table(report: PlanReport) -> str:
    planner, baseline = report.planner, report.baseline
    rows = [
        ("inputs", ", ".join(Path(p).name for p in report.inputs)),
        ("model", f"{report.model} ({report.num_recycles} recycles, {report.num_recycles + 1} trunk passes)"),
        ("devices", f"{report.devices} x {report.device} ({report.device_label})"),
        ("records", f"{report.records:,} ({report.ingest_failures:,} rejected at ingest)"),
        ("entries", f"{report.entries:,} ({report.fragments:,} of them fragments)"),
        ("unique sequences", f"{report.unique_sequences:,} ({report.residues:,} residues)"),
        ("shards", f"{report.shards:,}"),
        ("runs alone from", f"{report.solo_length:,} residues"),
        ("FLOPs(L)", "{:.3g} L^3 + {:.3g} L^2 + {:.3g} L + {:.3g}".format(*report.flops_polynomial)),
    ]
    head = [("", "cost planner", f"fixed {report.baseline_batch_size}, unsorted")]
    compare = [
        ("batches", f"{planner.batches:,}", f"{baseline.batches:,}"),
        ("token efficiency", f"{planner.token_efficiency:.4f}", f"{baseline.token_efficiency:.4f}"),
        ("FLOP efficiency", f"{planner.flop_efficiency:.4f}", f"{baseline.flop_efficiency:.4f}"),
        ("executed FLOPs", f"{planner.executed_flops:.3e}", f"{baseline.executed_flops:.3e}"),
        ("batches over memory", f"{report.planner_over_memory:,}", f"{report.baseline_over_memory:,}"),
    ]
    estimate = report.estimate
    wall = "unknown" if estimate.wall_seconds is None else _duration(estimate.wall_seconds)
    lines = [f"{name:<18} {value}" for name, value in rows]
    lines += [""] + [f"{a:<20} {b:>14} {c:>22}" for a, b, c in head + compare] + [""]
    lines += [f"useful FLOPs       {planner.useful_flops:.3e}",
              f"estimated time     {wall} on {report.devices} x {report.device}"
              f"{'' if estimate.measured else ' (ESTIMATE, not measured)'}",
              f"                   {estimate.note}"]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{int(hours)} h {rest / 60:.0f} min" if hours else f"{seconds / 60:.1f} min"


@click.command("plan")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", type=click.Choice(sorted(PRESETS)), default="esmfold", show_default=True)
@click.option("--gpus", type=int, default=1, show_default=True, help="Devices the build would run on.")
@click.option("--gpu-type", type=click.Choice(list(DEVICES)), default="h100", show_default=True)
@click.option("--num-recycles", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=2700, show_default=True, help="Longer sequences are fragmented.")
@click.option("--fragment-window", type=int, default=1400, show_default=True)
@click.option("--fragment-step", type=int, default=200, show_default=True)
@click.option("--shard-size", type=int, default=64, show_default=True, help="Unique sequences per shard, at most.")
@click.option("--baseline-batch-size", type=int, help="Fixed batch size of the baseline (default: the planner's mean).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def plan_command(inputs, model, gpus, gpu_type, num_recycles, max_length, fragment_window, fragment_step, shard_size,
                 baseline_batch_size, fmt) -> None:
    """Print what `build` would do with the FASTA INPUTS and what it would cost, without running anything."""
    try:
        settings = BuildSettings(
            ingest=IngestSettings(max_length=max_length, fragment_window=fragment_window, fragment_step=fragment_step),
            shard_size=shard_size,
        )
        report = plan_report(inputs, model=model, gpu_type=gpu_type, gpus=gpus, num_recycles=num_recycles,
                             build_settings=settings, baseline_batch_size=baseline_batch_size)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report.as_dict(), indent=2) if fmt == "json" else format_plan_table(report), nl=fmt == "json")
