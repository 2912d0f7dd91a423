"""Named model presets: which weights a model name loads and whether they are trained.

Importing this module is cheap (no torch, no transformers): the CLI lists the presets without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from models.esmfold import EsmFoldPredictor, EsmFoldSettings
    from models.types import Provenance


def _tiny_weights() -> str:
    from models.tiny import ensure_tiny_weights

    return str(ensure_tiny_weights())


@dataclass(frozen=True)
class ModelPreset:
    name: str
    default_weights: Callable[[], str]
    untrained: bool


PRESETS = {
    "esmfold": ModelPreset("esmfold", lambda: "facebook/esmfold_v1", untrained=False),
    "esmfold-tiny": ModelPreset("esmfold-tiny", _tiny_weights, untrained=True),
}


def preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def load_predictor(name: str, weights: str | None, settings: EsmFoldSettings) -> EsmFoldPredictor:
    """Load the named model from `weights` (folder or hub id), or from the preset's default weights."""
    from models.esmfold import load_esmfold

    chosen = preset(name)
    return load_esmfold(weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained)


def describe_model(name: str, weights: str | None, settings: EsmFoldSettings) -> Provenance:
    """Provenance (weights hash included) of the named model, without loading it."""
    from models.esmfold import describe_esmfold

    chosen = preset(name)
    return describe_esmfold(
        weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained
    )
