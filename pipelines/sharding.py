"""Group unique sequences into length-sorted shards, and shards into batches by a residue budget."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from models.types import Entry, Failure, Prediction, PredictionRequest


@dataclass(frozen=True)
class ShardPlan:
    """A unit of work and of commit: some unique sequences (longest first) and the entries they serve."""

    shard_id: str
    requests: tuple[PredictionRequest, ...]  # sorted by length, longest first
    entries: tuple[Entry, ...]  # every entry whose prediction_id is among `requests`

    @property
    def residues(self) -> int:
        return sum(len(r.sequence) for r in self.requests)


@dataclass(frozen=True)
class ShardPredictions:
    """A shard's folding results on their way to the writer (this module stays free of torch)."""

    shard_id: str
    predictions: tuple[Prediction, ...]
    failures: tuple[Failure, ...]  # one per affected entry
    model_seconds: float  # time spent inside the predictor
    padded_residues: int  # residues folded including padding


def plan_shards(entries: Sequence[Entry], requests: Sequence[PredictionRequest], shard_size: int) -> list[ShardPlan]:
    """Sort unique sequences by length (longest first) and cut them into shards of `shard_size`."""
    if shard_size < 1:
        raise ValueError("shard size must be at least 1")
    by_prediction: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_prediction[entry.prediction_id].append(entry)
    ordered = sorted(requests, key=lambda r: (-len(r.sequence), r.prediction_id))
    shards = []
    for start in range(0, len(ordered), shard_size):
        chunk = tuple(ordered[start : start + shard_size])
        shard_entries = tuple(e for r in chunk for e in by_prediction[r.prediction_id])
        shards.append(ShardPlan(_shard_id(shard_entries), chunk, shard_entries))
    return shards


def _shard_id(entries: Sequence[Entry]) -> str:
    """Content address: the same entries with the same predictions always give the same shard id."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.entry_id):
        digest.update(f"{entry.entry_id}:{entry.prediction_id}\n".encode())
    return digest.hexdigest()[:20]


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices of consecutive batches whose padded size (count x longest) stays within `batch_tokens`.

    `lengths` must be sorted longest first; a sequence longer than the budget runs alone.
    """
    if any(a < b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("plan_batches needs lengths sorted longest first")
    batches: list[list[int]] = []
    for index, length in enumerate(lengths):
        current = batches[-1] if batches else None
        if current and lengths[current[0]] * (len(current) + 1) <= batch_tokens:
            current.append(index)
        else:
            batches.append([index])
    return batches
