"""What a build would do and cost, without running anything (`structome plan`).

Reads the inputs as a build would (ingest, deduplication, fragments, length-sorted shards), batches every
shard with the cost model, and compares them with fixed-size batches over the unsorted input. Wall time
comes from measured rates (pipelines.calibration) where one exists for the model and device; otherwise from
the data-sheet peak times an assumed utilisation, and the estimate says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from structome.pipelines.batching import (
    Batching,
    BatchTotals,
    DeviceBudget,
    batch_by_cost,
    batch_fixed_size,
    longest_lone_fit,
    solo_length,
)
from structome.pipelines.calibration import (
    DEVICES,
    Calibration,
    DeviceSpec,
    budget_for,
    device_spec,
    find_calibration,
    load_calibrations,
)
from structome.pipelines.cost_model import CostModel
from structome.pipelines.ingest import ingest
from structome.pipelines.settings import BuildSettings
from structome.pipelines.sharding import Shard, cut_shards

ASSUMED_UTILIZATION = 0.02  # of dense bf16 peak: reference ESMFold's (design.md); an assumption, not a measurement
# A rate no device of its kind falls below (FLOP/s): the slowest data-sheet GPU (L4) at ASSUMED_UTILIZATION, and a
# CPU a few times slower than the slowest calibrated call. Only for deadlines: generous on purpose.
SLOWEST_ASSUMED_FLOPS = {"cuda": 121e12 * ASSUMED_UTILIZATION, "cpu": 2e9}
ESTIMATE_MODEL_KEY = "estimate"  # any constant key deduplicates the same sequences as the build's


@dataclass(frozen=True)
class WallTimeEstimate:
    device_seconds: float | None  # summed over all batches on one device; None: no rate known
    wall_seconds: float | None  # spread evenly over the devices
    measured: bool  # from a measured calibration (else: data-sheet peak x assumed utilisation)
    note: str


@dataclass(frozen=True)
class OverMemory:
    """Sequences the cost model says exceed the device's activation memory alone, even at the smallest chunk
    size (a build tries them and records `out_of_memory` for those that fail), and what would fit them."""

    sequences: int
    accessions: tuple[str, ...]  # of their entries, longest sequence first
    longest_sequence: int  # residues
    longest_fitting: int  # residues: the longest sequence that fits this device alone
    fit_with_half_precision_stem: int  # of `sequences`, how many fit with --stem-precision bf16 (smaller weights)
    devices_fitting_all: tuple[str, ...]  # known GPU types on which every one of them fits (fp32)


@dataclass(frozen=True)
class BuildEstimate:
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
    planner: BatchTotals
    planner_over_memory: int  # lone sequences the cost model says exceed the activation budget
    over_memory: OverMemory
    baseline: BatchTotals
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


def estimate_build(
    inputs: Sequence[str | Path],
    *,
    model: str = "esmfold",
    gpu_type: str = "h100",
    gpus: int = 1,
    num_recycles: int = 4,
    build_settings: BuildSettings | None = None,
    baseline_batch_size: int | None = None,
    calibrations: Sequence[Calibration] | None = None,
) -> BuildEstimate:
    """Everything `structome plan` prints, computed from the inputs alone."""
    if gpus < 1:
        raise ValueError("--gpus must be at least 1")
    settings = build_settings or BuildSettings()
    cost = CostModel.for_preset(model, num_recycles)
    spec = device_spec(gpu_type)
    calibration = find_calibration(load_calibrations() if calibrations is None else calibrations, model, gpu_type)
    budget = budget_for(cost, spec, calibration)
    result = ingest(inputs, settings.ingest, ESTIMATE_MODEL_KEY)
    requests = result.requests()
    shards = cut_shards(result.entries, requests, settings.shard_size_for(len(requests)))
    plans = [batch_by_cost([len(r.sequence) for r in shard.requests], cost, budget) for shard in shards]
    planner = sum((p.totals for p in plans), BatchTotals())
    batch_size = baseline_batch_size or max(1, round(planner.sequences / max(planner.batches, 1)))
    baseline = batch_fixed_size([len(r.sequence) for r in requests], batch_size, cost, budget)
    return BuildEstimate(
        inputs=tuple(str(p) for p in inputs),
        model=model,
        num_recycles=num_recycles,
        device=gpu_type,
        device_label=spec.label,
        devices=gpus,
        records=result.record_count,
        entries=len(result.entries),
        fragments=sum(1 for e in result.entries if e.length < len(e.sequence)),
        ingest_failures=len(result.failures),
        unique_sequences=len(requests),
        residues=sum(len(r.sequence) for r in requests),
        shards=len(shards),
        solo_length=solo_length(cost, budget),
        budget=budget,
        planner=planner,
        planner_over_memory=sum(_over_memory(p) for p in plans),
        over_memory=over_memory(shards, plans, cost, budget, spec, model, num_recycles),
        baseline=baseline.totals,
        baseline_batch_size=batch_size,
        baseline_over_memory=_over_memory(baseline),
        flops_polynomial=tuple(asdict(cost.polynomial).values()),
        estimate=estimate_wall_time(plans, spec, gpus, calibration, model, gpu_type),
    )


def _over_memory(plan: Batching) -> int:
    return sum(1 for batch in plan.batches if not batch.fits)


def over_memory(
    shards: Sequence[Shard],
    plans: Sequence[Batching],
    cost: CostModel,
    budget: DeviceBudget,
    spec: DeviceSpec,
    model: str,
    num_recycles: int,
) -> OverMemory:
    """The planned calls that do not fit, as sequences and accessions, and which precision or device would."""
    lengths: list[int] = []
    accessions: list[str] = []
    for shard, plan in zip(shards, plans, strict=True):
        for batch in plan.batches:
            if batch.fits:
                continue
            ids = {shard.requests[i].prediction_id for i in batch.indices}
            lengths.append(batch.padded_length)
            accessions += [e.accession for e in shard.entries if e.prediction_id in ids]
    half_stem = CostModel.for_preset(model, num_recycles, bytes_per_stem_value=2)
    longest_half = longest_lone_fit(half_stem, budget_for(half_stem, spec, None))
    devices = tuple(
        name
        for name, spec in DEVICES.items()
        if name != "cpu" and lengths and max(lengths) <= longest_lone_fit(cost, budget_for(cost, spec(), None))
    )
    return OverMemory(
        sequences=len(lengths),
        accessions=tuple(dict.fromkeys(accessions)),
        longest_sequence=max(lengths, default=0),
        longest_fitting=longest_lone_fit(cost, budget),
        fit_with_half_precision_stem=sum(1 for length in lengths if length <= longest_half),
        devices_fitting_all=devices,
    )


def estimate_wall_time(
    plans: Sequence[Batching],
    spec: DeviceSpec,
    devices: int,
    calibration: Calibration | None,
    model: str,
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


SHOWN_ACCESSIONS = 5  # of the sequences that may not fit, named in the table (all with list_all)


def format_estimate_table(report: BuildEstimate, list_all: bool = False) -> str:
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
    lines += [
        f"useful FLOPs       {planner.useful_flops:.3e}",
        f"estimated time     {wall} on {report.devices} x {report.device}"
        f"{'' if estimate.measured else ' (ESTIMATE, not measured)'}",
        f"                   {estimate.note}",
        "                   model calls only: starting Ray, loading the model and writing come on top",
    ]
    if report.over_memory.sequences:
        lines += _over_memory_lines(report.over_memory, report.device, list_all)
    return "\n".join(lines) + "\n"


def _over_memory_lines(over: OverMemory, device: str, list_all: bool) -> list[str]:
    """One summary of the sequences that may not fit, instead of a warning per sequence."""
    shown = over.accessions if list_all else over.accessions[:SHOWN_ACCESSIONS]
    rest = len(over.accessions) - len(shown)
    fitting = ", ".join(over.devices_fitting_all) or "none of the known GPU types"
    return [
        "",
        f"may not fit        {over.sequences:,} sequence(s) up to {over.longest_sequence:,} residues exceed one "
        f"{device}'s memory even at the smallest chunk size (up to {over.longest_fitting:,} fits); a build "
        "tries them and records out_of_memory where they fail",
        f"                   --stem-precision bf16 fits {over.fit_with_half_precision_stem:,} of them; all fit on: "
        f"{fitting}; or cut them with --max-length/--fragment-window {over.longest_fitting:,}",
        f"                   {', '.join(shown)}"
        + (f" and {rest:,} more (--list-over-memory names all)" if rest else ""),
    ]


def _duration(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{int(hours)} h {rest / 60:.0f} min" if hours else f"{seconds / 60:.1f} min"


def planned_shard_seconds(
    lengths: Sequence[int], cost: CostModel, calibration: Calibration | None, device: str
) -> float:
    """A shard's model time folded one sequence per call (batching only makes it shorter): the measured rate of
    the model on the device where there is one, else SLOWEST_ASSUMED_FLOPS."""
    flops = [cost.flops(length) for length in lengths]
    if calibration is not None:
        return sum(calibration.seconds(f) for f in flops)
    return sum(flops) / SLOWEST_ASSUMED_FLOPS[device]
