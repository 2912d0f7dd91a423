"""The cost-driven batch planner: budgets hold, every sequence is planned once, long ones run alone."""

from __future__ import annotations

import random

import pytest

from structome.models.registry import ESMFOLD_V1_CONFIG
from structome.pipelines.batching import (
    CHUNK_LADDER,
    BatchTotals,
    DeviceBudget,
    batch_by_cost,
    batch_fixed_size,
    chunk_size_for_length,
    lone_chunk_size,
    solo_length,
)
from structome.pipelines.cost_model import CostModel

V1 = CostModel.from_config(ESMFOLD_V1_CONFIG, 4)
H100 = DeviceBudget.for_device(V1, 80e9)


def proteome_like_lengths(count: int, seed: int = 0) -> list[int]:
    """Log-normal lengths like a bacterial proteome (median ~280), 30 to 2700 residues, some repeated."""
    rng = random.Random(seed)
    return [min(2700, max(30, round(rng.lognormvariate(5.65, 0.6)))) for _ in range(count)]


def test_every_index_is_planned_exactly_once_and_within_the_budget():
    lengths = proteome_like_lengths(500)
    plan = batch_by_cost(lengths, V1, H100)
    planned = [i for batch in plan.batches for i in batch.indices]
    assert sorted(planned) == list(range(len(lengths)))
    for batch in plan.batches:
        assert batch.fits
        assert batch.activation_bytes <= H100.activation_bytes
        assert batch.padded_length == max(lengths[i] for i in batch.indices)
        if len(batch.indices) > 1:
            assert batch.executed_flops <= H100.max_batch_flops


def test_long_sequences_run_alone_and_are_always_chunked():
    solo = solo_length(V1, H100)
    assert solo == pytest.approx(V1.cubic_crossover_length, abs=1)  # the default budget: alone above the crossover
    lengths = [solo - 1, solo - 1, solo, solo + 5, 2000, 300, 120, 120]
    plan = batch_by_cost(lengths, V1, H100)
    for batch in plan.batches:
        if batch.padded_length >= solo:
            assert len(batch.indices) == 1
        if batch.padded_length > 256:
            assert batch.chunk_size is not None
    assert any(len(b.indices) > 1 for b in plan.batches)  # the short ones are batched


def test_memory_bounds_batches_when_it_binds():
    tight = DeviceBudget(
        activation_bytes=V1.peak_activation_bytes(3, 200, None), min_batch_flops=1e15, max_batch_flops=1e16
    )
    plan = batch_by_cost([200] * 10, V1, tight)
    assert max(len(b.indices) for b in plan.batches) == 3
    assert all(b.fits for b in plan.batches)


def test_a_sequence_over_the_budget_takes_a_smaller_chunk_or_is_flagged():
    # Unchunked by length, but the L^3 attention logits do not fit: chunk 64 does.
    budget = DeviceBudget(
        activation_bytes=V1.peak_activation_bytes(1, 200, 64), min_batch_flops=1e14, max_batch_flops=2e14
    )
    assert chunk_size_for_length(200) is None
    assert V1.peak_activation_bytes(1, 200, None) > budget.activation_bytes
    assert lone_chunk_size(200, V1, budget) == 64
    # Beyond any chunk size: the smallest, flagged (the predictor's out-of-memory ladder takes over).
    (batch,) = batch_by_cost([3000], V1, budget).batches
    assert batch.chunk_size == CHUNK_LADDER[-1] and not batch.fits


def test_planner_beats_fixed_unsorted_batches_on_a_synthetic_mix():
    lengths = proteome_like_lengths(2000, seed=3)
    planner = batch_by_cost(lengths, V1, H100).totals
    assert planner.token_efficiency >= 0.97
    assert planner.flop_efficiency >= 0.98
    size = round(len(lengths) / planner.batches)
    baseline = batch_fixed_size(lengths, size, V1, H100).totals
    assert baseline.batches == pytest.approx(planner.batches, rel=0.05)  # about as many calls
    assert baseline.token_efficiency < 0.8 and baseline.flop_efficiency < 0.7
    assert planner.executed_flops < baseline.executed_flops


def test_short_sequences_fill_calls_up_to_the_flop_cap():
    per_call = min(int(H100.max_batch_flops // V1.flops(150)), H100.max_batch_size)
    plan = batch_by_cost([150] * (3 * per_call + 1), V1, H100)
    assert len(plan.batches) == 4
    assert max(len(b.indices) for b in plan.batches) == per_call


def test_efficiency_totals_add_up():
    a = batch_by_cost([100, 90, 80], V1, H100).totals
    b = batch_by_cost([500], V1, H100).totals
    both = a + b
    assert (both.sequences, both.residues) == (4, 770)
    assert both.padded_residues == 3 * 100 + 500
    assert both.token_efficiency == pytest.approx(770 / 800)
    assert BatchTotals().token_efficiency == 1.0


def test_fixed_baseline_keeps_input_order():
    plan = batch_fixed_size([10, 300, 20, 30, 40], 2, V1, H100)
    assert [sorted(b.indices) for b in plan.batches] == [[0, 1], [2, 3], [4]]
    assert [b.padded_length for b in plan.batches] == [300, 30, 40]


def test_long_sequences_are_always_chunked_and_longer_ones_more_finely():
    sizes = [chunk_size_for_length(length) for length in (1, 256, 257, 1024, 1025, 2700)]
    assert sizes == [None, None, 64, 64, 32, 32]


def test_invalid_input_is_refused():
    with pytest.raises(ValueError):
        batch_by_cost([10, 0], V1, H100)
    with pytest.raises(ValueError):
        batch_fixed_size([10], 0, V1, H100)
    with pytest.raises(ValueError):
        DeviceBudget.for_device(V1, 10e9)  # 13 GiB of weights do not fit in 10 GB
