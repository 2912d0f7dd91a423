"""Predict stage: one shard -> predictions, with an out-of-memory ladder; one bad protein never fails a shard
nor costs the rest of its batch a second fold."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from structome.models.chunking import CHUNK_LADDER, chunk_size_for_length
from structome.models.protocol import OUT_OF_MEMORY_ERRORS, Predictor, release_device_memory
from structome.models.types import Failure, FailureReason, Prediction, PredictionRequest, PredictionResult, Stage
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
    """Out of memory: split the batch; a single protein tries smaller chunks, then fails. A protein with
    non-finite output is the only one folded again (in fp32), then fails; the rest of its batch stands."""
    try:
        results = predictor.predict(batch)
    except OUT_OF_MEMORY_ERRORS as error:
        release_device_memory()
        if len(batch) > 1:
            half = len(batch) // 2
            first, first_lost = _predict_with_ladder(predictor, batch[:half])
            second, second_lost = _predict_with_ladder(predictor, batch[half:])
            return first + second, first_lost + second_lost
        return _retry_with_smaller_chunks(predictor, batch[0], error)
    return _refold_non_finite(predictor, batch, results)


def _refold_non_finite(
    predictor: Predictor, batch: Sequence[PredictionRequest], results: Sequence[PredictionResult]
) -> tuple[list[Prediction], list[_Failed]]:
    done: list[Prediction] = []
    lost: list[_Failed] = []
    for request, result in zip(batch, results, strict=True):
        if isinstance(result, Prediction):
            done.append(result)
            continue
        rescued, failed = _retry_in_full_precision(predictor, request, result.message)
        done.extend(rescued)
        lost.extend(failed)
    return done, lost


def _retry_in_full_precision(
    predictor: Predictor, request: PredictionRequest, message: str
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
                (result,) = predictor.predict([request])
            except OUT_OF_MEMORY_ERRORS as error:
                release_device_memory()
                return [], [
                    _Failed(request, FailureReason.OUT_OF_MEMORY, f"fp32 retry after non-finite output: {error}")
                ]
        if isinstance(result, Prediction):
            return [result], []
        message = result.message
    return [], [_Failed(request, FailureReason.NON_FINITE_OUTPUT, message)]


def _retry_with_smaller_chunks(
    predictor: Predictor, request: PredictionRequest, error: BaseException
) -> tuple[list[Prediction], list[_Failed]]:
    """Alone and still out of memory: smaller chunks, kept for a refold in fp32 if the output is non-finite."""
    try:
        for chunk_size in CHUNK_LADDER:
            predictor.set_chunk_size(chunk_size)
            try:
                results = predictor.predict([request])
            except OUT_OF_MEMORY_ERRORS as retry_error:
                error = retry_error
                release_device_memory()
                continue
            return _refold_non_finite(predictor, [request], results)
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
            accession=entry.accession,
        )
        for entry in shard.entries
        if entry.prediction_id in by_prediction
    )
