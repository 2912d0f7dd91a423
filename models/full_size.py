"""The full ESMFold v1 architecture (ESM-2 3B stem, 48-block trunk) with random weights.

Random weights fold nothing real, but they cost exactly what the real model costs: benchmarks use this
to measure speed and memory, and precision policies' numerical deviation, without downloading 14 GB.
"""

from __future__ import annotations

import torch
from transformers import EsmConfig, EsmForProteinFolding

from structome.models.tiny import folding_config

FULL_SIZE_SEED = 0


def full_size_config() -> EsmConfig:
    """facebook/esmfold_v1's shapes: ESM-2 3B (2560 wide, 36 layers, 40 heads) and transformers' default trunk."""
    return folding_config(
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=40,
        intermediate_size=10240,
        max_position_embeddings=1026,
        esmfold_config={"esm_type": "esm2_3B", "fp16_esm": False, "trunk": {"chunk_size": None}},
    )


def build_full_size_model(seed: int = FULL_SIZE_SEED) -> EsmForProteinFolding:
    """Seeded random weights in fp32 (3.5 B parameters, 13 GiB)."""
    torch.manual_seed(seed)
    return EsmForProteinFolding(full_size_config()).eval()
