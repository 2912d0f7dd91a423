"""The one interface every structure predictor offers to the pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import torch

from structome.models.types import PredictionRequest, PredictionResult, Provenance


class Predictor(Protocol):
    """Folds batches of sequences. Loaded once, then called batch after batch.

    `predict` returns one result per request, in order: a Prediction, or a NonFiniteOutput for a protein whose
    output held NaN or inf (the others of the batch keep theirs; in a reduced precision the caller folds that one
    again in `full_precision()`). It raises `torch.OutOfMemoryError` when the batch does not fit; the caller
    splits the batch and retries (the OOM ladder).
    """

    provenance: Provenance
    reduced_precision: bool  # whether anything runs below fp32 (then full_precision() changes something)

    def predict(self, requests: Sequence[PredictionRequest]) -> list[PredictionResult]: ...

    def set_chunk_size(self, chunk_size: int | None) -> None: ...

    def full_precision(self) -> AbstractContextManager[None]: ...


# What a predictor raises when a batch does not fit in device memory (torch raises it for CUDA and MPS).
OUT_OF_MEMORY_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


def release_device_memory() -> None:
    """Return cached GPU memory after an out-of-memory error, before the retry."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
