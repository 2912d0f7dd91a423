"""Predict stage: one shard -> predictions, with an out-of-memory ladder; one bad protein never fails a shard."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.protocol import OUT_OF_MEMORY_ERRORS, Predictor, release_device_memory
from models.types import Failure, NonFiniteOutputError, Prediction, PredictionRequest
from pipelines.sharding import ShardPlan, ShardPredictions, plan_batches

logger = logging.getLogger(__name__)

# Chunk sizes tried, in order, for a single protein that still does not fit.
CHUNK_LADDER = (64, 32, 16, 8)


@dataclass(frozen=True)
class _Failed:
    request: PredictionRequest
    reason: str
    message: str


def predict_shard(predictor: Predictor, shard: ShardPlan, batch_tokens: int) -> ShardPredictions:
    """Fold every unique sequence of a shard in batches planned by the residue budget."""
    lengths = [len(r.sequence) for r in shard.requests]
    predictions: list[Prediction] = []
    failed: list[_Failed] = []
    padded = 0
    started = time.perf_counter()
    for indices in plan_batches(lengths, batch_tokens):
        batch = [shard.requests[i] for i in indices]
        padded += len(batch) * len(batch[0].sequence)
        done, lost = _predict_with_ladder(predictor, batch)
        predictions.extend(done)
        failed.extend(lost)
    return ShardPredictions(
        shard_id=shard.shard_id,
        predictions=tuple(predictions),
        failures=_entry_failures(shard, failed),
        model_seconds=time.perf_counter() - started,
        padded_residues=padded,
    )


def _predict_with_ladder(
    predictor: Predictor, batch: Sequence[PredictionRequest]
) -> tuple[list[Prediction], list[_Failed]]:
    """Out of memory or non-finite output: split the batch; a single protein tries smaller chunks, then fails."""
    try:
        return predictor.predict(batch), []
    except OUT_OF_MEMORY_ERRORS as error:
        problem = ("out_of_memory", error)
    except NonFiniteOutputError as error:
        problem = ("non_finite_output", error)
    release_device_memory()
    if len(batch) > 1:
        half = len(batch) // 2
        first, first_lost = _predict_with_ladder(predictor, batch[:half])
        second, second_lost = _predict_with_ladder(predictor, batch[half:])
        return first + second, first_lost + second_lost
    if problem[0] == "out_of_memory":
        return _retry_with_smaller_chunks(predictor, batch[0], problem[1])
    return [], [_Failed(batch[0], problem[0], str(problem[1]))]


def _retry_with_smaller_chunks(
    predictor: Predictor, request: PredictionRequest, error: BaseException
) -> tuple[list[Prediction], list[_Failed]]:
    try:
        for chunk_size in CHUNK_LADDER:
            predictor.set_chunk_size(chunk_size)
            try:
                return predictor.predict([request]), []
            except OUT_OF_MEMORY_ERRORS as retry_error:
                error = retry_error
                release_device_memory()
    finally:
        predictor.set_chunk_size(None)
    message = f"out of memory at length {len(request.sequence)} even with chunk size {CHUNK_LADDER[-1]}: {error}"
    logger.warning("%s: %s", request.prediction_id, message)
    return [], [_Failed(request, "out_of_memory", message)]


def _entry_failures(shard: ShardPlan, failed: Sequence[_Failed]) -> tuple[Failure, ...]:
    by_prediction = {f.request.prediction_id: f for f in failed}
    return tuple(
        Failure(
            record_id=entry.record_id,
            source_file=entry.source_file,
            reason=by_prediction[entry.prediction_id].reason,
            message=by_prediction[entry.prediction_id].message,
            stage="predict",
            entry_id=entry.entry_id,
            record_number=entry.record_number,
        )
        for entry in shard.entries
        if entry.prediction_id in by_prediction
    )
