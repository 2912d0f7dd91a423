"""ESMFold through transformers' `EsmForProteinFolding`, loaded from a local folder or a hub id."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import EsmForProteinFolding
from transformers.models.esm.openfold_utils import atom14_to_atom37, compute_predicted_aligned_error, compute_tm

from structome.models.chunking import chunk_size_for_length
from structome.models.types import (
    STANDARD_RESIDUES,
    EsmFoldSettings,
    NonFiniteOutput,
    NonFiniteOutputError,
    Prediction,
    PredictionRequest,
    PredictionResult,
    Provenance,
)

logger = logging.getLogger(__name__)

_RESIDUE_INDEX = {letter: i for i, letter in enumerate(STANDARD_RESIDUES)} | {"X": len(STANDARD_RESIDUES)}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")  # the files a weights folder's digest covers
_HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt")  # what is downloaded of a hub id
_HUB_WEIGHT_SUFFIXES = tuple(s for s in _WEIGHT_SUFFIXES if f"*{s}" in _HUB_PATTERNS)  # ... and hashed
_PAE_BINS = 64
_PAE_MAX_BIN = 31


def encode(sequences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """AlphaFold2 residue indices (ESMFold's input vocabulary), right-padded, and the residue mask."""
    length = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), length), dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor([_RESIDUE_INDEX[c] for c in sequence], dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


class EsmFoldPredictor:
    """A loaded ESMFold model; `predict` folds one padded batch."""

    def __init__(self, model: EsmForProteinFolding, settings: EsmFoldSettings, provenance: Provenance):
        self.model = model
        self.settings = settings
        self.provenance = provenance
        self._chunk_override: int | None = settings.chunk_size
        self._trunk_precision = settings.trunk_precision
        self._apply_policy_to_trunk_only()

    def _apply_policy_to_trunk_only(self) -> None:
        """The trunk (folding blocks and structure module) runs under the trunk policy; the stem keeps its
        weights' dtype and the heads stay fp32. (Autocast around the whole model would also leave the stem's
        rotary tables cached in low precision for later fp32 calls.)"""
        trunk = self.model.trunk
        forward = trunk.__dict__.setdefault("_unwrapped_forward", trunk.forward)  # one wrapper per model

        def forward_under_policy(*args, **kwargs):
            with _trunk_policy(self._trunk_precision, self.settings.device):
                return _as_fp32(forward(*args, **kwargs))

        trunk.__dict__["forward"] = forward_under_policy  # an instance attribute, as nn.Module sets one

    @property
    def reduced_precision(self) -> bool:
        return self._trunk_precision != "fp32"

    @contextmanager
    def full_precision(self) -> Iterator[None]:
        """Run the trunk in plain fp32 inside this block (the stem keeps its weights' dtype)."""
        previous, self._trunk_precision = self._trunk_precision, "fp32"
        try:
            yield
        finally:
            self._trunk_precision = previous

    def set_chunk_size(self, chunk_size: int | None) -> None:
        """Force a chunk size (the OOM ladder lowers it); None goes back to the settings' (or the length rule)."""
        self._chunk_override = chunk_size if chunk_size is not None else self.settings.chunk_size

    def predict(self, requests: Sequence[PredictionRequest]) -> list[PredictionResult]:
        ids, mask = encode([r.sequence for r in requests])
        device = self.settings.device
        self.model.trunk.set_chunk_size(self._chunk_override or chunk_size_for_length(ids.shape[1]))
        with torch.inference_mode():
            output = self.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), num_recycles=self.settings.num_recycles
            )
        return [self._unpack(output, row, request) for row, request in enumerate(requests)]

    def _unpack(self, output, row: int, request: PredictionRequest) -> PredictionResult:
        """One sequence's stored outputs, sliced to its own length before any per-sequence metric; a
        NonFiniteOutput for this sequence alone if they hold NaN or inf."""
        try:
            return self._prediction(output, row, request)
        except NonFiniteOutputError as error:
            return NonFiniteOutput(request.prediction_id, str(error))

    def _prediction(self, output, row: int, request: PredictionRequest) -> Prediction:
        n = len(request.sequence)
        atom14 = output["positions"][-1][row : row + 1, :n].float()
        gather = {k: output[k][row : row + 1, :n] for k in ("residx_atom37_to_atom14", "atom37_atom_exists")}
        atom37 = atom14_to_atom37(atom14, gather)[0]
        # Unknown residues (X) have no atoms in atom37, as in reference ESMFold: their mask is all False.
        exists = gather["atom37_atom_exists"][0].bool()
        logits = output["ptm_logits"][row, :n, :n].float()
        pae = compute_predicted_aligned_error(logits, max_bin=_PAE_MAX_BIN, no_bins=_PAE_BINS)
        return Prediction(
            prediction_id=request.prediction_id,
            sequence=request.sequence,
            coords=atom37.cpu().numpy().astype(np.float32),
            atom_mask=exists.cpu().numpy(),
            plddt=(output["plddt"][row, :n, 1].float() * 100).cpu().numpy().astype(np.float32),
            ptm=float(compute_tm(logits, max_bin=_PAE_MAX_BIN, no_bins=_PAE_BINS)),
            pae=_round_pae(pae["predicted_aligned_error"]),
        )


def _as_fp32(value):
    """Floating tensors (in dicts, lists, tuples) as fp32, the heads' dtype."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _as_fp32(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_fp32(item) for item in value)
    return value


@contextmanager
def _trunk_policy(precision: str, device: str) -> Iterator[None]:
    """Autocast for bf16/fp16; TF32 matmuls for tf32 (restored afterwards); nothing for fp32."""
    device_type = torch.device(device).type
    if precision in ("bf16", "fp16"):
        with torch.autocast(device_type=device_type, dtype=_DTYPES[precision]):
            yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _round_pae(pae: torch.Tensor) -> np.ndarray:
    values = torch.nan_to_num(pae, nan=float(_PAE_MAX_BIN)).round().clamp(0, _PAE_MAX_BIN)
    return values.to(torch.uint8).cpu().numpy()


def load_esmfold(
    weights: str, settings: EsmFoldSettings, *, model_name: str = "esmfold", untrained: bool = False
) -> EsmFoldPredictor:
    """Load `EsmForProteinFolding` from a local folder or a Hugging Face id (AutoModel would load only the LM)."""
    folder = resolve_weights(weights)
    model = EsmForProteinFolding.from_pretrained(folder, dtype=torch.float32)
    stem: torch.nn.Module = model.esm
    stem.to(_DTYPES[settings.stem_precision])
    model.eval().to(settings.device)
    provenance = describe_esmfold(weights, settings, model_name=model_name, untrained=untrained, folder=folder)
    logger.info("loaded %s from %s on %s (%s)", model_name, weights, settings.device, provenance.precision)
    return EsmFoldPredictor(model, settings, provenance)


def describe_esmfold(
    weights: str,
    settings: EsmFoldSettings,
    *,
    model_name: str = "esmfold",
    untrained: bool = False,
    folder: Path | None = None,
) -> Provenance:
    """The provenance a load would give, without loading the model (the driver plans with it). FOLDER: where the
    weights were loaded from (hashed there); without it a hub id's digest comes from the hub's metadata."""
    return Provenance(
        model=model_name,
        model_version="v1",
        weights=weights,
        weights_sha256=weights_sha256(folder) if folder is not None else _describe_sha256(weights),
        untrained=untrained,
        precision=f"stem={settings.stem_precision},trunk={settings.trunk_precision}",
        num_recycles=settings.num_recycles,
        chunk_size=settings.chunk_size,
        device=settings.device,
        library_versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )


def _describe_sha256(weights: str) -> str:
    """A local folder's digest, hashed here; a hub id's from the hub's metadata (no download), else from the
    Hugging Face cache (or a download) when the hub cannot be asked."""
    if is_local_weights(weights):
        return weights_sha256(resolve_weights(weights))
    from structome.models.hub import hub_unreachable_errors, hub_weights_sha256

    try:
        return hub_weights_sha256(weights, _HUB_WEIGHT_SUFFIXES)
    except hub_unreachable_errors() as error:
        logger.info("the hub cannot give the digest of %s (%s): hashing the weights here", weights, error)
        return weights_sha256(resolve_weights(weights))


def is_local_weights(weights: str) -> bool:
    """A local folder (or a path meant as one), not a hub id."""
    path = Path(weights).expanduser()
    return path.is_dir() or path.is_absolute() or weights.startswith(".")


def resolve_weights(weights: str) -> Path:
    """A local folder as is; otherwise a hub id, fetched into (or found in) the Hugging Face cache."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    if is_local_weights(weights):
        raise FileNotFoundError(f"weights folder {weights} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = list(_HUB_PATTERNS)
    try:  # the local cache first: no network round trip per worker once the weights are there
        return Path(snapshot_download(weights, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        return Path(snapshot_download(weights, allow_patterns=patterns))


FileState = tuple[str, str, int, int]  # name, resolved path, size, modification time (ns)


@dataclass(frozen=True)
class WeightsDigest:
    """A weights folder's SHA-256 and the file state it was computed from. Another process (a Ray worker) that
    sees the same state, i.e. the same file names, resolved paths, sizes and modification times, can trust it
    instead of re-reading gigabytes: the trust the per-file cache below already places in a file state."""

    files: tuple[FileState, ...]  # every weight and config file, by name
    sha256: str


_TRUSTED_DIGESTS: dict[tuple[FileState, ...], str] = {}  # file state -> SHA-256, told by trust_weights_digest


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the weight and config files (names and contents), cached per file state."""
    return _state_sha256(_weights_state(folder))


def weights_digest(weights: str) -> WeightsDigest:
    """The digest of a weights folder or hub id, to hand to other processes (see trust_weights_digest)."""
    state = _weights_state(resolve_weights(weights))
    return WeightsDigest(state, _state_sha256(state))


def trust_weights_digest(digest: WeightsDigest) -> None:
    """From now on, this process takes `digest.sha256` for a folder whose files are in exactly that state."""
    _TRUSTED_DIGESTS[digest.files] = digest.sha256


def _weights_state(folder: Path) -> tuple[FileState, ...]:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files in {folder}")
    stats = [(file, file.stat()) for file in files]
    return tuple((file.name, str(file.resolve()), stat.st_size, stat.st_mtime_ns) for file, stat in stats)


def _state_sha256(state: tuple[FileState, ...]) -> str:
    if state in _TRUSTED_DIGESTS:
        return _TRUSTED_DIGESTS[state]
    digest = hashlib.sha256()
    for name, path, size, mtime_ns in state:
        digest.update(name.encode())
        digest.update(_file_sha256(path, size, mtime_ns).encode())
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def default_device() -> str:
    """CUDA when present (each Ray actor sees only its own GPU), else CPU."""
    return "cuda" if torch.cuda.is_available() else os.environ.get("STRUCTOME_DEVICE", "cpu")
