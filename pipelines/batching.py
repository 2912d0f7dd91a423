"""Batches planned by cost: padded FLOPs and activation memory per batch within a device budget.

A model call costs at least as long as a call of `min_batch_flops` would (below that the device waits on
launches, not arithmetic), and a call never holds more than the memory budget. The planner cuts the
length-sorted sequences into consecutive batches minimising the summed call cost max(executed, min), then
the executed (padded) FLOPs, then the number of calls: the fewest full calls with the least padding. A batch
of several sequences never executes more than `max_batch_flops`; a sequence at or above `solo_length` always
runs alone (one such sequence already fills half a call, and the L^3 term makes padding others to it costly).

Chunk size by length: models.chunking's rule (unchunked up to 256 residues, 64 up to 1024, then 32); a sequence that does not fit alone at that
chunk size takes the largest smaller one of CHUNK_LADDER that fits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from structome.models.chunking import CHUNK_LADDER, chunk_size_for_length
from structome.pipelines.cost_model import CostModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceBudget:
    """What one model call may use on a device."""

    activation_bytes: float  # peak activation memory per call (device memory less weights and headroom)
    min_batch_flops: float  # work below which a call costs no less (launch-bound)
    max_batch_flops: float  # executed FLOPs of a multi-sequence batch at most
    max_batch_size: int = 256  # sequences per call at most
    max_padded_residues: int | None = None  # count x longest per multi-sequence call at most (--batch-tokens)

    def __post_init__(self) -> None:
        if self.activation_bytes <= 0 or self.min_batch_flops < 0 or self.max_batch_flops <= 0:
            raise ValueError("activation memory and the batch FLOP cap must be positive")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")

    @classmethod
    def for_device(
        cls,
        model: CostModel,
        device_memory_bytes: float,
        *,
        usable_fraction: float = 0.85,
        max_batch_flops: float | None = None,
    ) -> DeviceBudget:
        """Activations get `usable_fraction` of the device less the weights. A call holds at most
        `max_batch_flops` (default: two sequences at the model's L^3/L^2 crossover length, an assumption until
        measured, so that longer sequences run alone) and costs at least as long as half of that."""
        activations = device_memory_bytes * usable_fraction - model.weight_bytes
        if activations <= 0:
            raise ValueError(f"the weights ({model.weight_bytes / 2**30:.1f} GiB) leave no activation memory")
        cap = max_batch_flops or 2 * model.flops(math.floor(model.cubic_crossover_length))
        return cls(activation_bytes=activations, min_batch_flops=cap / 2, max_batch_flops=cap)


@dataclass(frozen=True)
class Batch:
    """One model call."""

    indices: tuple[int, ...]  # into the planner's input, longest first
    padded_length: int  # residues every sequence is padded to
    chunk_size: int | None  # trunk chunk size; None: unchunked
    residues: int  # real residues
    useful_flops: float  # FLOPs of the sequences unpadded
    executed_flops: float  # FLOPs of the padded batch
    activation_bytes: float  # peak activation memory the cost model predicts
    fits: bool  # within the activation budget (a lone sequence may not fit at any chunk size)

    @property
    def padded_residues(self) -> int:
        return len(self.indices) * self.padded_length


@dataclass(frozen=True)
class BatchTotals:
    """Efficiency figures of one or more plans (they add up)."""

    sequences: int = 0
    batches: int = 0
    residues: int = 0
    padded_residues: int = 0
    useful_flops: float = 0.0
    executed_flops: float = 0.0

    def __add__(self, other: BatchTotals) -> BatchTotals:
        return BatchTotals(
            self.sequences + other.sequences,
            self.batches + other.batches,
            self.residues + other.residues,
            self.padded_residues + other.padded_residues,
            self.useful_flops + other.useful_flops,
            self.executed_flops + other.executed_flops,
        )

    @property
    def token_efficiency(self) -> float:
        """Real residues / padded residues."""
        return self.residues / self.padded_residues if self.padded_residues else 1.0

    @property
    def flop_efficiency(self) -> float:
        """Useful FLOPs / executed FLOPs."""
        return self.useful_flops / self.executed_flops if self.executed_flops else 1.0


@dataclass(frozen=True)
class Batching:
    batches: tuple[Batch, ...]

    @property
    def totals(self) -> BatchTotals:
        return BatchTotals(
            sequences=sum(len(b.indices) for b in self.batches),
            batches=len(self.batches),
            residues=sum(b.residues for b in self.batches),
            padded_residues=sum(b.padded_residues for b in self.batches),
            useful_flops=sum(b.useful_flops for b in self.batches),
            executed_flops=sum(b.executed_flops for b in self.batches),
        )


@dataclass(frozen=True)
class Batcher:
    """How one predictor's calls are planned: its cost model and its device's budget."""

    cost: CostModel
    budget: DeviceBudget

    def batch(self, lengths: Sequence[int]) -> Batching:
        return batch_by_cost(lengths, self.cost, self.budget)


def solo_length(model: CostModel, budget: DeviceBudget) -> int:
    """Shortest length that always runs alone: two such sequences would exceed the batch FLOP cap."""
    low, high = 1, 1
    while 2 * model.flops(high) <= budget.max_batch_flops:
        low, high = high, high * 2
    while low < high:  # smallest L with 2 F(L) > cap
        middle = (low + high) // 2
        low, high = (middle + 1, high) if 2 * model.flops(middle) <= budget.max_batch_flops else (low, middle)
    return high


def make_batch(
    indices: Sequence[int], lengths: Sequence[int], model: CostModel, chunk_size: int | None, budget: DeviceBudget
) -> Batch:
    members = [lengths[i] for i in indices]
    padded = max(members)
    memory = model.peak_activation_bytes(len(members), padded, chunk_size)
    return Batch(
        indices=tuple(indices),
        padded_length=padded,
        chunk_size=chunk_size,
        residues=sum(members),
        useful_flops=model.useful_flops(members),
        executed_flops=model.executed_flops(members),
        activation_bytes=memory,
        fits=memory <= budget.activation_bytes,
    )


def longest_lone_fit(model: CostModel, budget: DeviceBudget) -> int:
    """The longest sequence whose call fits the activation budget alone at the smallest chunk size (0: none)."""

    def fits(length: int) -> bool:
        return model.peak_activation_bytes(1, length, CHUNK_LADDER[-1]) <= budget.activation_bytes

    if not fits(1):
        return 0
    low, high = 1, 2
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def lone_chunk_size(length: int, model: CostModel, budget: DeviceBudget) -> int | None:
    """The length rule's chunk size, or the largest smaller one that fits; the smallest if none does."""
    preferred = chunk_size_for_length(length)
    candidates = [preferred] + [c for c in CHUNK_LADDER if preferred is None or c < preferred]
    for chunk in candidates:
        if model.peak_activation_bytes(1, length, chunk) <= budget.activation_bytes:
            return chunk
    logger.debug(  # callers summarise (`plan`); a build tries anyway and the OOM ladder records what fails
        "a sequence of %d residues exceeds the activation budget even at chunk size %d", length, CHUNK_LADDER[-1]
    )
    return CHUNK_LADDER[-1]


def batch_by_cost(lengths: Sequence[int], model: CostModel, budget: DeviceBudget) -> Batching:
    """Cut sequences (any order) into cost-planned batches; every index appears in exactly one batch.

    Optimal over consecutive groups of the length-sorted sequences (dynamic programming, O(n x batch size)).
    """
    if any(length < 1 for length in lengths):
        raise ValueError("every sequence needs at least one residue")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    sorted_lengths = [lengths[i] for i in order]
    solo = solo_length(model, budget)
    starts = _best_batch_starts(sorted_lengths, model, budget, solo)
    batches = []
    end = len(order)
    while end > 0:
        start = starts[end]
        members = order[start:end]
        chunk = (
            lone_chunk_size(sorted_lengths[start], model, budget)
            if end - start == 1
            else chunk_size_for_length(sorted_lengths[start])
        )
        batches.append(make_batch(members, lengths, model, chunk, budget))
        end = start
    return Batching(tuple(reversed(batches)))


def _best_batch_starts(lengths: Sequence[int], model: CostModel, budget: DeviceBudget, solo: int) -> list[int]:
    """starts[end]: where the last batch of the best plan of the first `end` sequences begins."""
    flops = [model.flops(length) for length in lengths]
    # Cost of a plan: (call time in FLOP equivalents, executed FLOPs, calls), compared in that order.
    best: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] + [(math.inf, math.inf, 0)] * len(lengths)
    starts = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(end - 1, -1, -1):
            count = end - start
            if count > 1 and not _within_caps(lengths[start], count, flops[start], budget, solo):
                break  # an earlier start has a longer head and more members: over the caps too
            if count > 1 and not _fits(lengths[start], count, model, budget):
                continue  # memory is not monotone: a longer head may be chunked
            executed = count * flops[start]
            call_time, padded, calls = best[start]
            cost = (call_time + max(executed, budget.min_batch_flops), padded + executed, calls + 1)
            if cost < best[end]:
                best[end], starts[end] = cost, start
    return starts


def _within_caps(head: int, count: int, head_flops: float, budget: DeviceBudget, solo: int) -> bool:
    padded_ok = budget.max_padded_residues is None or count * head <= budget.max_padded_residues
    return head < solo and count <= budget.max_batch_size and count * head_flops <= budget.max_batch_flops and padded_ok


def _fits(head: int, count: int, model: CostModel, budget: DeviceBudget) -> bool:
    return model.peak_activation_bytes(count, head, chunk_size_for_length(head)) <= budget.activation_bytes


def batch_fixed_size(lengths: Sequence[int], batch_size: int, model: CostModel, budget: DeviceBudget) -> Batching:
    """Baseline: consecutive batches of `batch_size` sequences in input order, chunk size by length."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    batches = []
    for first in range(0, len(lengths), batch_size):
        indices = sorted(range(first, min(first + batch_size, len(lengths))), key=lambda i: (-lengths[i], i))
        batches.append(make_batch(indices, lengths, model, chunk_size_for_length(lengths[indices[0]]), budget))
    return Batching(tuple(batches))
