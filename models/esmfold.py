"""ESMFold through transformers' `EsmForProteinFolding`, loaded from a local folder or a hub id."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import EsmForProteinFolding
from transformers.models.esm.openfold_utils import atom14_to_atom37, compute_predicted_aligned_error, compute_tm

from models.types import STANDARD_RESIDUES, Prediction, PredictionRequest, Provenance

logger = logging.getLogger(__name__)

_RESIDUE_INDEX = {letter: i for i, letter in enumerate(STANDARD_RESIDUES)} | {"X": len(STANDARD_RESIDUES)}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")
_PAE_BINS = 64
_PAE_MAX_BIN = 31


@dataclass(frozen=True)
class EsmFoldSettings:
    """Run-time choices that do not change the weights."""

    num_recycles: int = 4  # ESMFold v1 was trained with 4
    stem_precision: str = "fp32"  # language model: fp32, fp16 or bf16
    trunk_precision: str = "fp32"  # folding trunk: fp32 or bf16 (fp16 overflows to NaN)
    chunk_size: int | None = None  # trunk chunk size; None = chosen by length per batch
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.stem_precision not in _DTYPES:
            raise ValueError(f"stem precision must be one of {sorted(_DTYPES)}, got {self.stem_precision!r}")
        if self.trunk_precision not in ("fp32", "bf16"):
            raise ValueError(f"trunk precision must be fp32 or bf16, got {self.trunk_precision!r}")
        if self.num_recycles < 0:
            raise ValueError("num_recycles must be >= 0")


def chunk_size_for_length(padded_length: int) -> int | None:
    """Trunk chunk size by length: unchunked while cheap, chunked to bound the L^2 pair memory."""
    if padded_length <= 256:
        return None
    return 64 if padded_length <= 1024 else 32


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

    def set_chunk_size(self, chunk_size: int | None) -> None:
        """Force a chunk size (the OOM ladder lowers it); None goes back to the length rule."""
        self._chunk_override = chunk_size

    def predict(self, requests: Sequence[PredictionRequest]) -> list[Prediction]:
        ids, mask = encode([r.sequence for r in requests])
        device = self.settings.device
        self.model.trunk.set_chunk_size(self._chunk_override or chunk_size_for_length(ids.shape[1]))
        with torch.inference_mode(), self._trunk_autocast():
            output = self.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), num_recycles=self.settings.num_recycles
            )
        return [self._unpack(output, row, request) for row, request in enumerate(requests)]

    def _trunk_autocast(self):
        enabled = self.settings.trunk_precision == "bf16"
        device_type = torch.device(self.settings.device).type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)

    def _unpack(self, output, row: int, request: PredictionRequest) -> Prediction:
        """One sequence's stored outputs, sliced to its own length before any per-sequence metric."""
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


def _round_pae(pae: torch.Tensor) -> np.ndarray:
    values = torch.nan_to_num(pae, nan=float(_PAE_MAX_BIN)).round().clamp(0, _PAE_MAX_BIN)
    return values.to(torch.uint8).cpu().numpy()


def load_esmfold(
    weights: str, settings: EsmFoldSettings, *, model_name: str = "esmfold", untrained: bool = False
) -> EsmFoldPredictor:
    """Load `EsmForProteinFolding` from a local folder or a Hugging Face id (AutoModel would load only the LM)."""
    folder = resolve_weights(weights)
    model = EsmForProteinFolding.from_pretrained(folder, dtype=torch.float32)
    model.esm.to(_DTYPES[settings.stem_precision])
    model.eval().to(settings.device)
    provenance = describe_esmfold(weights, settings, model_name=model_name, untrained=untrained)
    logger.info("loaded %s from %s on %s (%s)", model_name, weights, settings.device, provenance.precision)
    return EsmFoldPredictor(model, settings, provenance)


def describe_esmfold(
    weights: str, settings: EsmFoldSettings, *, model_name: str = "esmfold", untrained: bool = False
) -> Provenance:
    """The provenance a load would give, without loading the model (the driver plans with it)."""
    return Provenance(
        model=model_name,
        model_version="v1",
        weights=weights,
        weights_sha256=weights_sha256(resolve_weights(weights)),
        untrained=untrained,
        precision=f"stem={settings.stem_precision},trunk={settings.trunk_precision}",
        num_recycles=settings.num_recycles,
        chunk_size=settings.chunk_size,
        device=settings.device,
        library_versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )


def resolve_weights(weights: str) -> Path:
    """A local folder as is; otherwise a hub id, fetched into (or found in) the Hugging Face cache."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or weights.startswith("."):
        raise FileNotFoundError(f"weights folder {weights} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt"]
    try:  # the local cache first: no network round trip per worker once the weights are there
        return Path(snapshot_download(weights, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        return Path(snapshot_download(weights, allow_patterns=patterns))


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the weight and config files (names and contents), cached per file state."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files in {folder}")
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(file.name.encode())
        digest.update(_file_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns).encode())
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
