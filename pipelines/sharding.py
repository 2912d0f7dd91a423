"""Group unique sequences into length-sorted shards (the units of work, commit and resume)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from structome.models.types import Entry, Failure, Prediction, PredictionRequest

ATOM_SLOTS = 37  # atom37 order


@dataclass(frozen=True)
class Shard:
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

    def __reduce__(self):
        """Pickled (Ray's object store included) with the predictions packed: see PackedPredictions."""
        fields = (
            self.shard_id,
            PackedPredictions.pack(self.predictions),
            self.failures,
            self.model_seconds,
            self.padded_residues,
        )
        return _unpickle_shard_predictions, fields


def _unpickle_shard_predictions(shard_id, packed, failures, model_seconds, padded_residues) -> ShardPredictions:
    return ShardPredictions(shard_id, packed.unpack(), failures, model_seconds, padded_residues)


@dataclass(frozen=True)
class PackedPredictions:
    """Many predictions as a few flat arrays: a shard's results on the wire. Five buffers instead of four per
    prediction, and only existing atoms' coordinates (~8 of 37 slots per residue): 64 predictions of ~108 aa
    take 1.7 MB in Ray's object store instead of 4.4 MB (what is left is mostly the [L, L] PAE).

    Unpacking gives absent atoms the coordinates 0, as ESMFold's atom14 -> atom37 conversion does (the writers
    never read them). Everything else round-trips bit for bit.
    """

    prediction_ids: tuple[str, ...]
    sequences: tuple[str, ...]
    ptm: np.ndarray  # [N] float64
    plddt: np.ndarray  # [sum L], the predictions' dtype (float32)
    atom_bits: np.ndarray  # np.packbits of the [sum L, 37] atom masks
    coords: np.ndarray  # [existing atoms, 3], the predictions' dtype (float32), Å
    pae: np.ndarray  # [sum L^2] uint8, each prediction's [L, L] matrix row-major

    @classmethod
    def pack(cls, predictions: Sequence[Prediction]) -> PackedPredictions:
        masks = [p.atom_mask.reshape(-1).astype(bool, copy=False) for p in predictions]
        # np.compress on [L x 37, 3] rows: boolean indexing of [L, 37, 3] is ~6x slower
        coords = [
            np.compress(mask, p.coords.reshape(-1, 3), axis=0) for p, mask in zip(predictions, masks, strict=True)
        ]
        return cls(
            prediction_ids=tuple(p.prediction_id for p in predictions),
            sequences=tuple(p.sequence for p in predictions),
            ptm=np.array([p.ptm for p in predictions], dtype=np.float64),
            plddt=_concatenate([p.plddt for p in predictions], np.float32),
            atom_bits=np.packbits(_concatenate(masks, bool)),
            coords=_concatenate(coords, np.float32).reshape(-1, 3),
            pae=_concatenate([p.pae.reshape(-1) for p in predictions], np.uint8),
        )

    def unpack(self) -> tuple[Prediction, ...]:
        lengths = [len(s) for s in self.sequences]
        masks = np.unpackbits(self.atom_bits, count=sum(lengths) * ATOM_SLOTS).view(bool).reshape(-1, ATOM_SLOTS)
        predictions = []
        residue = atom = pair = 0
        for index, n in enumerate(lengths):
            mask = masks[residue : residue + n]
            atoms = int(mask.sum())
            coords = np.zeros((n, ATOM_SLOTS, 3), self.coords.dtype)
            coords[mask] = self.coords[atom : atom + atoms]
            predictions.append(
                Prediction(
                    prediction_id=self.prediction_ids[index],
                    sequence=self.sequences[index],
                    coords=coords,
                    atom_mask=mask,
                    plddt=self.plddt[residue : residue + n],
                    ptm=float(self.ptm[index]),
                    pae=self.pae[pair : pair + n * n].reshape(n, n),
                )
            )
            residue, atom, pair = residue + n, atom + atoms, pair + n * n
        return tuple(predictions)


def _concatenate(arrays: list[np.ndarray], empty_dtype) -> np.ndarray:
    """np.concatenate that keeps the arrays' dtype, and gives an empty array of `empty_dtype` for none."""
    return np.concatenate(arrays) if arrays else np.zeros(0, empty_dtype)


def cut_shards(entries: Sequence[Entry], requests: Sequence[PredictionRequest], shard_size: int) -> list[Shard]:
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
        shards.append(Shard(_shard_id(shard_entries), chunk, shard_entries))
    return shards


def _shard_id(entries: Sequence[Entry]) -> str:
    """Content address: the same entries with the same predictions always give the same shard id."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.entry_id):
        digest.update(f"{entry.entry_id}:{entry.prediction_id}\n".encode())
    return digest.hexdigest()[:20]
