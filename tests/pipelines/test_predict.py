"""The predict stage's out-of-memory ladder and failure accounting, with scripted predictors."""

from __future__ import annotations

import numpy as np
import torch

from models.types import Entry, NonFiniteOutputError, Prediction, PredictionRequest
from pipelines.predict import CHUNK_LADDER, predict_shard
from pipelines.sharding import plan_shards


class ScriptedPredictor:
    """Raises out-of-memory above a padded size, and for one length unless chunked small enough."""

    provenance = None

    def __init__(self, max_padded: int = 10**9, oom_length: int | None = None, chunk_fix: int | None = None,
                 nan_length: int | None = None):
        self.max_padded, self.oom_length, self.chunk_fix, self.nan_length = max_padded, oom_length, chunk_fix, nan_length
        self.chunk_size = None
        self.calls: list[int] = []

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
        if any(len(r.sequence) == self.nan_length for r in requests):
            raise NonFiniteOutputError("scripted NaN")
        return [_prediction(r) for r in requests]


def _prediction(request: PredictionRequest) -> Prediction:
    n = len(request.sequence)
    return Prediction(request.prediction_id, request.sequence, np.zeros((n, 37, 3), np.float32),
                      np.ones((n, 37), bool), np.full(n, 50, np.float32), 0.5, np.zeros((n, n), np.uint8))


def _shard(lengths):
    requests = [PredictionRequest(f"p{i}", "A" * n) for i, n in enumerate(lengths)]
    entries = [Entry(f"E{i}", f"r{i}", "x.fasta", f"E{i}", r.sequence, 1, 1, len(r.sequence), "0" * 16, "0" * 32,
                     r.prediction_id) for i, r in enumerate(requests)]
    return plan_shards(entries, requests, shard_size=len(requests))[0]


def test_oom_splits_the_batch_until_it_fits():
    shard = _shard([50, 40, 40, 30, 30, 30])
    predictor = ScriptedPredictor(max_padded=100)
    result = predict_shard(predictor, shard, batch_tokens=10_000)
    assert len(result.predictions) == 6 and not result.failures
    assert predictor.calls[0] == 6  # tried whole first, then halves until each part fits 100 padded residues
    assert predictor.calls[1:] == [3, 1, 2, 3]


def test_one_protein_that_never_fits_is_a_ledger_row_not_a_failed_shard():
    shard = _shard([80, 20, 20])
    result = predict_shard(ScriptedPredictor(oom_length=80), shard, batch_tokens=10_000)
    assert sorted(p.prediction_id for p in result.predictions) == ["p1", "p2"]
    assert [(f.entry_id, f.reason, f.stage) for f in result.failures] == [("E0", "out_of_memory", "predict")]


def test_a_smaller_chunk_size_rescues_a_long_protein_and_is_reset_afterwards():
    predictor = ScriptedPredictor(oom_length=80, chunk_fix=CHUNK_LADDER[1])
    result = predict_shard(predictor, _shard([80, 20]), batch_tokens=10_000)
    assert len(result.predictions) == 2 and not result.failures
    assert predictor.chunk_size is None


def test_non_finite_output_is_isolated_to_its_protein():
    result = predict_shard(ScriptedPredictor(nan_length=33), _shard([40, 33, 20]), batch_tokens=10_000)
    assert len(result.predictions) == 2
    assert [f.reason for f in result.failures] == ["non_finite_output"]


def test_padding_is_counted():
    result = predict_shard(ScriptedPredictor(), _shard([10, 5]), batch_tokens=1000)
    assert result.padded_residues == 20
