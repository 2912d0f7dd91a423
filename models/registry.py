"""Named model presets: which weights a model name loads and whether they are trained.

Importing this module is cheap (no torch, no transformers): the CLI lists the presets without loading them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structome.models.esmfold import EsmFoldPredictor
    from structome.models.types import EsmFoldSettings, Provenance


# facebook/esmfold_v1 (config.json on the Hugging Face hub; the trunk and structure module use the defaults).
ESMFOLD_V1_CONFIG: Mapping = {
    "num_hidden_layers": 36,
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_attention_heads": 40,
    "vocab_size": 33,
    "esmfold_config": {
        "lddt_head_hid_dim": 128,
        "trunk": {
            "num_blocks": 48,
            "sequence_state_dim": 1024,
            "pairwise_state_dim": 128,
            "sequence_head_width": 32,
            "pairwise_head_width": 32,
            "max_recycles": 4,
            "structure_module": {"sequence_dim": 384, "pairwise_dim": 128, "num_blocks": 8, "num_heads_ipa": 12},
        },
    },
}


def _tiny_weights() -> str:
    from structome.models.tiny import ensure_tiny_weights

    return str(ensure_tiny_weights())


def _tiny_architecture() -> Mapping:
    from structome.models.tiny import tiny_config  # torch and transformers: only for this preset

    return tiny_config().to_dict()


@dataclass(frozen=True)
class ModelPreset:
    name: str
    default_weights: Callable[[], str]  # a local folder or a hub id
    untrained: bool
    architecture: Callable[[], Mapping]  # the transformers config as a dict, for the cost model


PRESETS = {
    "esmfold": ModelPreset(
        "esmfold", lambda: "facebook/esmfold_v1", untrained=False, architecture=lambda: ESMFOLD_V1_CONFIG
    ),
    "esmfold-tiny": ModelPreset("esmfold-tiny", _tiny_weights, untrained=True, architecture=_tiny_architecture),
}


def preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def load_predictor(name: str, weights: str | None, settings: EsmFoldSettings) -> EsmFoldPredictor:
    """Load the named model from `weights` (folder or hub id), or from the preset's default weights."""
    from structome.models.esmfold import load_esmfold

    chosen = preset(name)
    return load_esmfold(weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained)


def describe_model(name: str, weights: str | None, settings: EsmFoldSettings) -> Provenance:
    """Provenance (weights hash included) of the named model, without loading it."""
    from structome.models.esmfold import describe_esmfold

    chosen = preset(name)
    return describe_esmfold(weights or chosen.default_weights(), settings, model_name=name, untrained=chosen.untrained)
