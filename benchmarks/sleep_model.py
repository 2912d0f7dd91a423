"""A predictor that sleeps for as long as ESMFold would take, then returns realistic synthetic outputs.

Load it by name in Ray workers: `loader="benchmarks.sleep_model:load"` (the workers need /work/main on
PYTHONPATH). It lets the scheduling benchmark drive the real runner, the real writers and the real storage
without a GPU: a call on a padded batch of `count` sequences whose longest has L residues takes
count x FLOPs(L) / rate seconds, with the ESMFold v1 cost model of design.md:

    FLOPs(L) ~ 2.95e5 L^3 + 1.98e8 L^2 + 1.1e10 L

Environment:
    STRUCTOME_SLEEP_FLOPS_PER_S  simulated device rate (default: a 300-aa protein takes 0.05 s).
    STRUCTOME_SLEEP_TRACE        a folder; if set, every predict() call appends one line to
                                 trace-<pid>.tsv there: entry and exit wall time (time.time(), s), batch
                                 size, longest length, first prediction id, planned seconds.

The synthetic outputs are made first and the sleep only fills the rest of the planned time, so a call lasts
the planned time (unless making the outputs alone takes longer, which the trace shows).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from structome.models.types import PAE_MAX, STANDARD_RESIDUES, Prediction, PredictionRequest, Provenance

REFERENCE_LENGTH = 300
REFERENCE_SECONDS = 0.05


def esmfold_flops(length: int) -> float:
    """ESMFold v1 FLOPs for one sequence of `length` residues (design.md cost model)."""
    return 2.95e5 * length**3 + 1.98e8 * length**2 + 1.1e10 * length


DEFAULT_FLOPS_PER_S = esmfold_flops(REFERENCE_LENGTH) / REFERENCE_SECONDS  # ~5.8e14


def batch_seconds(count: int, longest: int, flops_per_s: float) -> float:
    """Planned time of one call on a padded batch: every sequence costs as much as the longest."""
    return count * esmfold_flops(longest) / flops_per_s


class SleepPredictor:
    """Satisfies models.protocol.Predictor; never folds anything."""

    def __init__(self, provenance: Provenance, flops_per_s: float, trace_folder: Path | None = None):
        if flops_per_s <= 0:
            raise ValueError(f"the simulated rate must be positive, got {flops_per_s}")
        self.provenance = provenance
        self.flops_per_s = flops_per_s
        self.chunk_size: int | None = None
        self._trace = None
        if trace_folder is not None:
            trace_folder.mkdir(parents=True, exist_ok=True)
            self._trace = open(trace_folder / f"trace-{os.getpid()}.tsv", "a", buffering=1)
        self._atom_mask_by_residue = _atom37_mask_table()
        self._pool = _Pool()

    def set_chunk_size(self, chunk_size: int | None) -> None:
        self.chunk_size = chunk_size  # chunking changes memory, not the simulated time

    def predict(self, requests: Sequence[PredictionRequest]) -> list[Prediction]:
        entered = time.time()
        started = time.perf_counter()
        longest = max(len(r.sequence) for r in requests)
        planned = batch_seconds(len(requests), longest, self.flops_per_s)
        predictions = [self._synthetic(request) for request in requests]
        remaining = planned - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
        if self._trace is not None:
            self._trace.write(
                f"{entered:.6f}\t{time.time():.6f}\t{len(requests)}\t{longest}\t"
                f"{requests[0].prediction_id}\t{planned:.6f}\n"
            )
        return predictions

    def _synthetic(self, request: PredictionRequest) -> Prediction:
        """Plausible-looking outputs: a window of this actor's pool, chosen by the prediction id."""
        sequence = request.sequence
        n = len(sequence)
        if n > self._pool.size:
            self._pool = _Pool(n)
        pool = self._pool
        digest = int(hashlib.md5(request.prediction_id.encode()).hexdigest()[:16], 16)
        o = digest % (pool.size - n + 1)
        atom_mask = self._atom_mask_by_residue[_RESIDUE_INDEX[np.frombuffer(sequence.encode(), np.uint8)]]
        centred = pool.coords[o : o + n] - pool.coords[o, 1]
        coords = np.where(atom_mask[..., None], centred, np.float32(0))  # absent atoms at 0, as ESMFold gives them
        from_end = np.minimum(np.arange(n), np.arange(n)[::-1])  # termini are less confident
        plddt = pool.plddt[o : o + n] * np.minimum(1.0, 0.5 + 0.5 * from_end / max(3, n // 20)).astype(np.float32)
        pae = pool.pae[o : o + n, o : o + n].copy()
        ptm = float(np.clip((plddt.mean() / 100.0) ** 2 + (digest % 1000 - 500) / 25000.0, 0.05, 0.95))
        return Prediction(request.prediction_id, sequence, coords, atom_mask, plddt, ptm, pae)


class _Pool:
    """Synthetic outputs for one long chain, made once per actor; predictions are windows of it, so making
    one costs a few copies (cheap next to the simulated model time even for short proteins)."""

    def __init__(self, size: int = 3000, seed: int = 20261125):
        rng = np.random.default_rng(seed)
        self.size = size
        # CA trace: a persistent random walk with 3.8 Å steps; the other atoms within ~1.5-6 Å of their CA.
        steps = rng.normal(0.0, 1.0, (size, 3)) + 0.6 * np.array([1.0, 0.3, 0.1])
        steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
        ca = np.cumsum(steps, axis=0)
        reach = np.minimum(1.5 + 0.35 * np.arange(37), 6.0)[None, :, None]
        self.coords = (ca[:, None, :] + rng.normal(0.0, 1.0, (size, 37, 3)) * reach / np.sqrt(3)).astype(np.float32)
        self.coords[:, 1] = ca
        # pLDDT 0-100: smooth confident domains and low-confidence loops.
        position = np.arange(size)
        wave = np.sin(position / 40.0) + 0.5 * np.sin(position / 9.0 + 1.0)
        self.plddt = np.clip(70.0 + 18.0 * wave + rng.normal(0.0, 4.0, size), 15.0, 98.5).astype(np.float32)
        # PAE (Å, 0..31): grows with sequence separation, lower between confident residues.
        separation = np.abs(position[:, None] - position[None, :]).astype(np.float32)
        confidence = (self.plddt[:, None] + self.plddt[None, :]) / 200.0
        pae = 1.0 + np.minimum(separation / 8.0, 20.0) + 12.0 * (1.0 - confidence)
        pae += rng.uniform(0.0, 2.0, (size, size)).astype(np.float32)
        self.pae = np.clip(np.rint(pae), 0, int(PAE_MAX)).astype(np.uint8)


_RESIDUE_INDEX = np.full(256, 20, dtype=np.intp)  # byte -> AlphaFold2 residue index (X for anything else)
for _index, _letter in enumerate(STANDARD_RESIDUES):
    _RESIDUE_INDEX[ord(_letter)] = _index


def _atom37_mask_table() -> np.ndarray:
    """[21, 37] bool: which atom37 atoms each residue type has (row 20, X: the backbone N, CA, C, O)."""
    from transformers.models.esm.openfold_utils import residue_constants

    table = np.asarray(residue_constants.STANDARD_ATOM_MASK, dtype=bool).copy()
    table[20, [0, 1, 2, 4]] = True
    return table


def load(name: str, weights: str | None, settings) -> SleepPredictor:
    """Loader for ModelSpec.loader: the named model's real provenance (so the settings key matches the plan)."""
    from structome.models.registry import describe_model

    provenance = describe_model(name, weights, settings)
    rate = float(os.environ.get("STRUCTOME_SLEEP_FLOPS_PER_S", DEFAULT_FLOPS_PER_S))
    trace = os.environ.get("STRUCTOME_SLEEP_TRACE")
    return SleepPredictor(provenance, rate, Path(trace) if trace else None)
