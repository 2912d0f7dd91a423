"""Named model presets: which weights a model name loads and whether they are trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from models.esmfold import EsmFoldPredictor, EsmFoldSettings, describe_esmfold, load_esmfold
from models.types import Provenance
from models.tiny import ensure_tiny_weights


@dataclass(frozen=True)
class ModelPreset:
    name: str
    default_weights: Callable[[], str]
    untrained: bool
    max_length: int  # longest sequence folded whole; longer ones are fragmented by ingest


PRESETS = {
    "esmfold": ModelPreset("esmfold", lambda: "facebook/esmfold_v1", untrained=False, max_length=2700),
    "esmfold-tiny": ModelPreset(
        "esmfold-tiny", lambda: str(ensure_tiny_weights()), untrained=True, max_length=2700
    ),
}


def preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def load_predictor(name: str, weights: str | None, settings: EsmFoldSettings) -> EsmFoldPredictor:
    """Load the named model from `weights` (folder or hub id), or from the preset's default weights."""
    chosen = preset(name)
    return load_esmfold(weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained)


def describe_model(name: str, weights: str | None, settings: EsmFoldSettings) -> Provenance:
    """Provenance (weights hash included) of the named model, without loading it."""
    chosen = preset(name)
    return describe_esmfold(
        weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained
    )
