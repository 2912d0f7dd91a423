"""Predict stage: one shard -> predictions, with an out-of-memory ladder; one bad protein never fails a shard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from structome.models.chunking import CHUNK_LADDER, chunk_size_for_length
from structome.models.protocol import OUT_OF_MEMORY_ERRORS, Predictor, release_device_memory
from structome.models.types import Failure, FailureReason, NonFiniteOutputError, Prediction, PredictionRequest, Stage
from structome.pipelines.batching import Batch, Batcher
from structome.pipelines.sharding import Shard, ShardPredictions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failed:
    request: PredictionRequest
    reason: FailureReason
    message: str


def predict_shard(
    predictor: Predictor, shard: Shard, batcher: Batcher, on_batch: Callable[[Batch], None] | None = None
) -> ShardPredictions:
    """Fold every unique sequence of a shard in batches planned by the cost model within the device budget;
    `on_batch` hears of each batch once it is folded (progress)."""
    batching = batcher.batch([len(r.sequence) for r in shard.requests])
    predictions: list[Prediction] = []
    failed: list[_Failed] = []
    started = time.perf_counter()
    for batch in batching.batches:
        requests = [shard.requests[i] for i in batch.indices]
        lowered = batch.chunk_size != chunk_size_for_length(batch.padded_length)  # a lone protein made to fit
        if lowered:
            predictor.set_chunk_size(batch.chunk_size)
        try:
            done, lost = _predict_with_ladder(predictor, requests)
        finally:
            if lowered:
                predictor.set_chunk_size(None)
        predictions.extend(done)
        failed.extend(lost)
        if on_batch is not None:
            on_batch(batch)
    return ShardPredictions(
        shard_id=shard.shard_id,
        predictions=tuple(predictions),
        failures=_entry_failures(shard, failed),
        model_seconds=time.perf_counter() - started,
        padded_residues=batching.totals.padded_residues,
    )


def _predict_with_ladder(
    predictor: Predictor, batch: Sequence[PredictionRequest]
) -> tuple[list[Prediction], list[_Failed]]:
    """Out of memory or non-finite output: split the batch; a single protein tries smaller chunks, then fails."""
    try:
        return predictor.predict(batch), []
    except OUT_OF_MEMORY_ERRORS as error:
        problem = (FailureReason.OUT_OF_MEMORY, error)
    except NonFiniteOutputError as error:
        problem = (FailureReason.NON_FINITE_OUTPUT, error)
    release_device_memory()
    if len(batch) > 1:
        half = len(batch) // 2
        first, first_lost = _predict_with_ladder(predictor, batch[:half])
        second, second_lost = _predict_with_ladder(predictor, batch[half:])
        return first + second, first_lost + second_lost
    if problem[0] is FailureReason.OUT_OF_MEMORY:
        return _retry_with_smaller_chunks(predictor, batch[0], problem[1])
    return _retry_in_full_precision(predictor, batch[0], problem[1])


def _retry_in_full_precision(
    predictor: Predictor, request: PredictionRequest, error: BaseException
) -> tuple[list[Prediction], list[_Failed]]:
    """NaN or inf from a reduced-precision trunk: fold this protein again in fp32, never store garbage."""
    if predictor.reduced_precision:
        logger.warning(
            "%s: non-finite output in %s; folding it again in fp32",
            request.prediction_id,
            predictor.provenance.precision,
        )
        with predictor.full_precision():
            try:
                return predictor.predict([request]), []
            except NonFiniteOutputError as retry_error:
                error = retry_error
            except OUT_OF_MEMORY_ERRORS as retry_error:
                release_device_memory()
                return [], [
                    _Failed(request, FailureReason.OUT_OF_MEMORY, f"fp32 retry after non-finite output: {retry_error}")
                ]
    return [], [_Failed(request, FailureReason.NON_FINITE_OUTPUT, str(error))]


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
    return [], [_Failed(request, FailureReason.OUT_OF_MEMORY, message)]


def _entry_failures(shard: Shard, failed: Sequence[_Failed]) -> tuple[Failure, ...]:
    by_prediction = {f.request.prediction_id: f for f in failed}
    return tuple(
        Failure(
            record_id=entry.record_id,
            source_file=entry.source_file,
            reason=by_prediction[entry.prediction_id].reason,
            message=by_prediction[entry.prediction_id].message,
            stage=Stage.PREDICT,
            entry_id=entry.entry_id,
            record_number=entry.record_number,
        )
        for entry in shard.entries
        if entry.prediction_id in by_prediction
    )
