"""Planner benchmark: batch efficiency on real proteomes, and the tiny model's CPU throughput with the planner.

Run: .venv/bin/python benchmarks/bench_planner.py [--skip-throughput] [--recycles N] [--threads N]
         [--write-calibration]

(a) For every proteome in ../shared/data/uniprot: ingest and shard as `build` does, plan every shard's batches
    with the cost model (ESMFold v1, 4 recycles, an H100's 80 GB), and print token efficiency (real / padded
    residues) and FLOP efficiency (useful / executed FLOPs) beside two baselines: fixed-size batches over the
    unsorted unique sequences (as many calls as the planner makes), and the earlier length-sorted shards with a
    4096 padded-residue budget (token_budget_batches below, the batching structome had before).
(b) esmfold-tiny on this CPU (torch's default threads, --recycles 1 by default): a calibration grid (single
    sequences of several lengths; batches of 8 short ones against the same 8 one at a time), then 48
    sequences whose lengths are E. coli's x 0.25 (16 to 200) planned with the measured batch cap; every planned
    call is timed batched and as its sequences one at a time, twice in alternating order (best of each), so
    load from other processes falls on both; ratio = one-at-a-time seconds / planner seconds, same run.
    --write-calibration stores the grid's rates in pipelines/calibration.json (what `structome plan` reads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from structome.pipelines.batching import (  # noqa: E402
    BatchTotals,
    DeviceBudget,
    batch_by_cost,
    chunk_size_for_length,
    solo_length,
)
from structome.pipelines.calibration import CALIBRATION_PATH  # noqa: E402
from structome.pipelines.cost_model import CostModel  # noqa: E402
from structome.pipelines.estimate import ESTIMATE_MODEL_KEY, estimate_build  # noqa: E402
from structome.pipelines.ingest import ingest  # noqa: E402
from structome.pipelines.settings import BuildSettings  # noqa: E402
from structome.pipelines.sharding import cut_shards  # noqa: E402

UNIPROT = ROOT.parent / "shared" / "data" / "uniprot"
TOKEN_BUDGET = 4096  # the GPU padded-residue budget structome used before the cost planner
MIX_SIZE = 48
MIX_SCALE = 0.25
MIX_MAX = 200
SINGLE_LENGTHS = (32, 64, 128, 192)
BATCH_LENGTHS = (32, 48, 64, 96)
BATCH_OF = 8
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def efficiency_section() -> None:
    print("(a) ESMFold v1, 4 recycles, H100 80 GB budget: token / FLOP efficiency")
    print(
        f"{'proteome':<50} {'unique':>6} {'planner tok':>11} {'FLOP':>7} {'batches':>8} {'>mem':>4} | "
        f"{'fixed unsorted tok':>18} {'FLOP':>7} {'size':>4} {'>mem':>4} | {'sorted 4096-token tok':>21} {'FLOP':>7} "
        f"{'batches':>7} {'>mem':>4}"
    )
    for path in sorted(UNIPROT.glob("*.fasta*")):
        started = time.perf_counter()
        report = estimate_build([path], model="esmfold", gpu_type="h100", num_recycles=4)
        today, today_over = token_budget_totals(path, report.budget)
        planner, fixed = report.planner, report.baseline
        print(
            f"{path.name:<50} {report.unique_sequences:>6} {planner.token_efficiency:>11.4f} "
            f"{planner.flop_efficiency:>7.4f} {planner.batches:>8} {report.planner_over_memory:>4} | "
            f"{fixed.token_efficiency:>18.4f} "
            f"{fixed.flop_efficiency:>7.4f} {report.baseline_batch_size:>4} {report.baseline_over_memory:>4} | "
            f"{today.token_efficiency:>21.4f} {today.flop_efficiency:>7.4f} {today.batches:>7} {today_over:>4}"
            f"   ({time.perf_counter() - started:.1f} s)"
        )
    print("  >mem: batches the cost model says exceed the activation budget")


def token_budget_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """The earlier batching: consecutive batches (lengths longest first) whose count x longest <= batch_tokens."""
    batches: list[list[int]] = []
    for index, _ in enumerate(lengths):
        current = batches[-1] if batches else None
        if current and lengths[current[0]] * (len(current) + 1) <= batch_tokens:
            current.append(index)
        else:
            batches.append([index])
    return batches


def token_budget_totals(path: Path, budget: DeviceBudget) -> tuple[BatchTotals, int]:
    """Today's batching: length-sorted shards, consecutive batches within TOKEN_BUDGET padded residues;
    its totals and how many of its batches exceed the budget's activation memory."""
    settings = BuildSettings()
    cost = CostModel.for_preset("esmfold", 4)
    result = ingest([path], settings.ingest, ESTIMATE_MODEL_KEY)
    requests = result.requests()
    totals, over_memory = BatchTotals(), 0
    for shard in cut_shards(result.entries, requests, settings.shard_size_for(len(requests))):
        lengths = [len(r.sequence) for r in shard.requests]
        for batch in token_budget_batches(lengths, TOKEN_BUDGET):
            members = [lengths[i] for i in batch]
            memory = cost.peak_activation_bytes(len(members), max(members), chunk_size_for_length(max(members)))
            over_memory += memory > budget.activation_bytes
            totals += BatchTotals(
                len(members),
                1,
                sum(members),
                len(members) * max(members),
                cost.useful_flops(members),
                cost.executed_flops(members),
            )
    return totals, over_memory


class TinyBench:
    """esmfold-tiny loaded once; times model calls on random sequences of given lengths."""

    def __init__(self, recycles: int, threads: int | None = None, seed: int = 0):
        import torch

        if threads:
            torch.set_num_threads(threads)
        from structome.models.registry import load_predictor
        from structome.models.types import EsmFoldSettings, PredictionRequest

        self.torch_threads = torch.get_num_threads()
        self.recycles = recycles
        self.predictor = load_predictor("esmfold-tiny", None, EsmFoldSettings(num_recycles=recycles))
        self.cost = CostModel.for_preset("esmfold-tiny", recycles)
        self._request = PredictionRequest
        self._random = random.Random(seed)
        self.call([16])  # warm-up

    def call(self, lengths, chunk_size=None) -> float:
        """Seconds of one model call on random sequences of these lengths."""
        requests = [self._request(f"s{i}", "".join(self._random.choices(AMINO, k=n))) for i, n in enumerate(lengths)]
        self.predictor.set_chunk_size(chunk_size)
        started = time.perf_counter()
        self.predictor.predict(requests)
        return time.perf_counter() - started

    def paired(self, lengths, chunk_size=None) -> tuple[float, float]:
        """(batched, one at a time) seconds for the same lengths, best of two runs in alternating order, so
        that load from other processes hits both alike."""
        batched, alone = [], []
        for batched_first in (True, False):
            runs = [lambda: self.call(lengths, chunk_size), lambda: sum(self.call([n]) for n in lengths)]
            first, second = (run() for run in (runs if batched_first else runs[::-1]))
            batched.append(first if batched_first else second)
            alone.append(second if batched_first else first)
        return min(batched), min(alone)


def calibration_grid(bench: TinyBench) -> dict:
    """Single-sequence rates by length, and the largest batched call that still beats one at a time."""
    points = []
    for length in SINGLE_LENGTHS:
        seconds = min(bench.call([length]) for _ in range(3))
        flops = bench.cost.flops(length)
        points.append(
            {
                "padded_length": length,
                "batch": 1,
                "seconds": round(seconds, 4),
                "call_flops": flops,
                "flops_per_second": flops / seconds,
            }
        )
        print(f"  single L={length:<4} {seconds:7.3f} s  {flops / seconds / 1e9:6.1f} GFLOP/s")
    max_batch_flops = None
    for length in BATCH_LENGTHS:
        together, alone = bench.paired([length] * BATCH_OF)
        print(
            f"  {BATCH_OF} x L={length:<3} batched {together:6.3f} s, one at a time {alone:6.3f} s "
            f"(x{alone / together:.2f})"
        )
        if alone > 1.1 * together:  # batching still pays at this call size
            max_batch_flops = BATCH_OF * bench.cost.flops(length)
    return {"points": points, "max_batch_flops": max_batch_flops}


def throughput_section(bench: TinyBench, budget: DeviceBudget) -> None:
    """Every planned call timed batched and one sequence at a time (paired), summed over the mix."""
    lengths = mix_lengths()
    plan = batch_by_cost(lengths, bench.cost, budget)
    sizes = sorted((len(b.indices) for b in plan.batches), reverse=True)
    print(
        f"  mix: {len(lengths)} sequences, E. coli lengths x {MIX_SCALE} capped at {MIX_MAX} (min {min(lengths)}, "
        f"median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}, {sum(lengths)} residues)"
    )
    print(
        f"  planner: {len(plan.batches)} calls for {len(lengths)} sequences, largest {sizes[:5]}, "
        f"cap {budget.max_batch_flops:.2e} FLOPs per call, alone from L={solo_length(bench.cost, budget)}"
    )
    batched = alone = 0.0
    for batch in plan.batches:
        together, single = bench.paired([lengths[i] for i in batch.indices], batch.chunk_size)
        batched, alone = batched + together, alone + single
    residues = sum(lengths)
    print(f"  one at a time: {alone:6.2f} s ({residues / alone:6.1f} residues/s)")
    print(f"  planner:       {batched:6.2f} s ({residues / batched:6.1f} residues/s)")
    print(f"  ratio planner / one at a time: {alone / batched:.3f}")


def mix_lengths() -> list[int]:
    result = ingest([UNIPROT / "UP000000625_83333_ecoli_k12_2020.fasta"], BuildSettings().ingest, ESTIMATE_MODEL_KEY)
    lengths = [len(r.sequence) for r in result.requests()]
    sample = random.Random(1).sample(lengths, MIX_SIZE)
    return [min(MIX_MAX, max(16, round(n * MIX_SCALE))) for n in sample]


def _fmt(runs) -> str:
    return ", ".join(f"{r:.2f}" for r in runs)


def write_calibration(bench: TinyBench, grid: dict) -> None:
    entry = {
        "model": "esmfold-tiny",
        "device": "cpu",
        "measured": (
            f"{dt.date.today().isoformat()}, {platform.machine()} host, {bench.torch_threads} torch threads, "
            f"{bench.recycles} recycle(s), fp32: .venv/bin/python benchmarks/bench_planner.py --write-calibration"
        ),
        "max_batch_flops": grid["max_batch_flops"],
        "points": grid["points"],
    }
    data = json.loads(CALIBRATION_PATH.read_text()) if CALIBRATION_PATH.exists() else {"calibrations": []}
    data["calibrations"] = [c for c in data["calibrations"] if (c["model"], c["device"]) != ("esmfold-tiny", "cpu")]
    data["calibrations"].append(entry)
    CALIBRATION_PATH.write_text(json.dumps(data, indent=2) + "\n")
    print(f"  wrote {CALIBRATION_PATH.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--recycles", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--write-calibration", action="store_true")
    args = parser.parse_args()
    efficiency_section()
    if args.skip_throughput:
        return
    bench = TinyBench(args.recycles, args.threads)
    print(f"\n(b) esmfold-tiny on CPU, {bench.torch_threads} torch threads, {args.recycles} recycle(s)")
    grid = calibration_grid(bench)
    budget = DeviceBudget.for_device(bench.cost, 8 * 2**30, max_batch_flops=grid["max_batch_flops"])
    throughput_section(bench, budget)
    if args.write_calibration:
        write_calibration(bench, grid)


if __name__ == "__main__":
    main()
