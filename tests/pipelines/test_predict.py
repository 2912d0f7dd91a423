"""The predict stage's out-of-memory ladder and failure accounting, with scripted predictors."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import torch

from structome.models.chunking import CHUNK_LADDER
from structome.models.registry import ESMFOLD_V1_CONFIG
from structome.models.types import Entry, NonFiniteOutput, Prediction, PredictionRequest
from structome.pipelines.batching import Batcher, DeviceBudget
from structome.pipelines.cost_model import CostModel
from structome.pipelines.predict import predict_shard
from structome.pipelines.sharding import cut_shards

UNLIMITED = 1e30


def batcher(batch_tokens: int = 10_000, activation_bytes: float = UNLIMITED) -> Batcher:
    """Every call costs the same (so the fewest calls win), capped at `batch_tokens` padded residues."""
    budget = DeviceBudget(
        activation_bytes=activation_bytes,
        min_batch_flops=UNLIMITED,
        max_batch_flops=UNLIMITED,
        max_padded_residues=batch_tokens,
    )
    return Batcher(CostModel.from_config(ESMFOLD_V1_CONFIG), budget)


class ScriptedPredictor:
    """Raises out-of-memory above a padded size, and for one length unless chunked small enough."""

    provenance = SimpleNamespace(precision="stem=fp16,trunk=bf16")

    def __init__(
        self,
        max_padded: int = 10**9,
        oom_length: int | None = None,
        chunk_fix: int | None = None,
        nan_length: int | None = None,
        nan_in_fp32: bool = True,
        reduced_precision: bool = True,
    ):
        self.max_padded, self.oom_length, self.chunk_fix, self.nan_length = (
            max_padded,
            oom_length,
            chunk_fix,
            nan_length,
        )
        self.nan_in_fp32, self.reduced_precision = nan_in_fp32, reduced_precision
        self.chunk_size = None
        self.in_fp32 = False
        self.calls: list[int] = []

    @contextmanager
    def full_precision(self):
        self.in_fp32 = True
        try:
            yield
        finally:
            self.in_fp32 = False

    def set_chunk_size(self, chunk_size):
        self.chunk_size = chunk_size

    def predict(self, requests):
        longest = max(len(r.sequence) for r in requests)
        self.calls.append(len(requests))
        if len(requests) * longest > self.max_padded:
            raise torch.OutOfMemoryError("scripted: batch too large")
        if any(len(r.sequence) == self.oom_length for r in requests):
            if self.chunk_fix is None or self.chunk_size is None or self.chunk_size > self.chunk_fix:
                raise torch.OutOfMemoryError("scripted: this protein does not fit")
        return [self._result(r) for r in requests]

    def _result(self, request):
        if len(request.sequence) == self.nan_length and (self.nan_in_fp32 or not self.in_fp32):
            return NonFiniteOutput(request.prediction_id, "scripted NaN")
        return _prediction(request)


def _prediction(request: PredictionRequest) -> Prediction:
    n = len(request.sequence)
    return Prediction(
        request.prediction_id,
        request.sequence,
        np.zeros((n, 37, 3), np.float32),
        np.ones((n, 37), bool),
        np.full(n, 50, np.float32),
        0.5,
        np.zeros((n, n), np.uint8),
    )


def _shard(lengths):
    requests = [PredictionRequest(f"p{i}", "A" * n) for i, n in enumerate(lengths)]
    entries = [
        Entry(
            f"E{i}", f"r{i}", "x.fasta", f"E{i}", r.sequence, 1, 1, len(r.sequence), "0" * 16, "0" * 32, r.prediction_id
        )
        for i, r in enumerate(requests)
    ]
    return cut_shards(entries, requests, shard_size=len(requests))[0]


def test_oom_splits_the_batch_until_it_fits():
    shard = _shard([50, 40, 40, 30, 30, 30])
    predictor = ScriptedPredictor(max_padded=100)
    result = predict_shard(predictor, shard, batcher())
    assert len(result.predictions) == 6 and not result.failures
    assert predictor.calls[0] == 6  # tried whole first, then halves until each part fits 100 padded residues
    assert predictor.calls[1:] == [3, 1, 2, 3]


def test_one_protein_that_never_fits_is_a_ledger_row_not_a_failed_shard():
    shard = _shard([80, 20, 20])
    result = predict_shard(ScriptedPredictor(oom_length=80), shard, batcher())
    assert sorted(p.prediction_id for p in result.predictions) == ["p1", "p2"]
    assert [(f.entry_id, f.reason, f.stage) for f in result.failures] == [("E0", "out_of_memory", "predict")]


def test_a_smaller_chunk_size_rescues_a_long_protein_and_is_reset_afterwards():
    predictor = ScriptedPredictor(oom_length=80, chunk_fix=CHUNK_LADDER[1])
    result = predict_shard(predictor, _shard([80, 20]), batcher())
    assert len(result.predictions) == 2 and not result.failures
    assert predictor.chunk_size is None


def test_non_finite_output_is_isolated_to_its_protein():
    predictor = ScriptedPredictor(nan_length=33)
    result = predict_shard(predictor, _shard([40, 33, 20]), batcher())
    assert len(result.predictions) == 2
    assert [f.reason for f in result.failures] == ["non_finite_output"]
    assert predictor.calls == [3, 1]  # the batch once, then the NaN protein alone in fp32 (no split, no refold)


def test_a_protein_that_overflows_in_reduced_precision_is_folded_again_in_fp32():
    predictor = ScriptedPredictor(nan_length=33, nan_in_fp32=False)
    result = predict_shard(predictor, _shard([40, 33, 20]), batcher())
    assert sorted(p.prediction_id for p in result.predictions) == ["p0", "p1", "p2"] and not result.failures
    assert not predictor.in_fp32  # back to the build's precision afterwards
    assert predictor.calls == [3, 1]


def test_a_protein_rescued_by_smaller_chunks_is_still_checked_for_non_finite_output():
    predictor = ScriptedPredictor(oom_length=80, chunk_fix=CHUNK_LADDER[1], nan_length=80)
    result = predict_shard(predictor, _shard([80]), batcher())
    assert [f.reason for f in result.failures] == ["non_finite_output"] and not result.predictions


def test_in_fp32_already_there_is_nothing_to_fall_back_to():
    predictor = ScriptedPredictor(nan_length=33, nan_in_fp32=False, reduced_precision=False)
    result = predict_shard(predictor, _shard([33]), batcher())
    assert [f.reason for f in result.failures] == ["non_finite_output"] and predictor.calls == [1]


def test_padding_is_counted():
    result = predict_shard(ScriptedPredictor(), _shard([10, 5]), batcher(1000))
    assert result.padded_residues == 20


def test_the_planner_batches_within_its_token_cap_and_lowers_the_chunk_of_a_protein_that_needs_it():
    cost = CostModel.from_config(ESMFOLD_V1_CONFIG)
    chunked = cost.peak_activation_bytes(1, 250, 64)  # 250 aa: unchunked by the length rule, too big for this budget
    chunks = []

    class Spy(ScriptedPredictor):
        def predict(self, requests):
            chunks.append((len(requests), self.chunk_size))
            return super().predict(requests)

    predictor = Spy()
    result = predict_shard(predictor, _shard([250, 40, 40, 30]), batcher(100, activation_bytes=chunked))
    assert len(result.predictions) == 4 and not result.failures
    assert chunks[0] == (1, 64)  # the long protein alone, chunked so that it fits
    assert all(count * 40 <= 100 for count, _ in chunks[1:]) and sum(c for c, _ in chunks) == 4
    assert predictor.chunk_size is None  # back to the length rule afterwards


def test_each_folded_batch_is_reported_as_it_ends():
    """Progress follows proteins as they fold, not only shards as they commit."""
    heard = []
    predictor = ScriptedPredictor()
    original = predictor.predict
    predictor.predict = lambda requests: (heard.append("call"), original(requests))[1]
    shard = _shard([50, 40, 40, 30, 30, 30])
    result = predict_shard(predictor, shard, batcher(batch_tokens=100), on_batch=heard.append)
    batches = [item for item in heard if item != "call"]
    assert heard == ["call", batches[0], "call", batches[1], "call", batches[2]]  # each batch right after its call
    assert sum(len(b.indices) for b in batches) == 6 == len(result.predictions)
    assert sum(b.residues for b in batches) == 220
