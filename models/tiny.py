"""`esmfold-tiny`: the real ESMFold class with a tiny config and seeded random weights.

It exists so every part of structome runs on a laptop CPU and in CI. It is saved to a folder once and
then loaded through the same `from_pretrained` path as the real model; its outputs are untrained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForProteinFolding

from structome.models.cache import cache_folder, publish_unless_present, staging_folder

logger = logging.getLogger(__name__)

TINY_SEED = 0
TINY_VERSION = "3"  # bump when the config below changes
# The ESM-2 vocabulary of the language-model stem (not the folding model's input vocabulary).
ESM2_VOCAB = "<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - <null_1> <mask>".split()


def tiny_config() -> EsmConfig:
    """~0.3 M parameters: hidden 32, 2 LM layers, 2 trunk blocks, state dims 64/32, 2 structure blocks."""
    trunk = {
        "num_blocks": 2,
        "sequence_state_dim": 64,
        "pairwise_state_dim": 32,
        "sequence_head_width": 16,
        "pairwise_head_width": 16,
        "structure_module": {"sequence_dim": 64, "pairwise_dim": 32, "ipa_dim": 16, "num_blocks": 2},
    }
    return folding_config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=4098,
        esmfold_config={"fp16_esm": False, "lddt_head_hid_dim": 32, "trunk": trunk},
    )


def folding_config(*, esmfold_config: dict, **stem_shape) -> EsmConfig:
    """An EsmForProteinFolding config: an ESM-2 stem of the given shape (rotary, ESM-2 vocabulary) + the folding parts."""
    return EsmConfig(
        vocab_size=len(ESM2_VOCAB),
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        mask_token_id=ESM2_VOCAB.index("<mask>"),
        pad_token_id=ESM2_VOCAB.index("<pad>"),
        is_folding_model=True,
        vocab_list=ESM2_VOCAB,
        esmfold_config=esmfold_config,
        **stem_shape,
    )


def build_tiny_model() -> EsmForProteinFolding:
    """Seeded random weights; the confidence heads get a wider spread so pLDDT and PAE span their range."""
    torch.manual_seed(TINY_SEED)
    model = EsmForProteinFolding(tiny_config())
    with torch.no_grad():
        heads: list[torch.nn.Module] = [*list(model.lddt_head)[1:], model.ptm_head]  # the Linear layers
        for head in heads:
            assert isinstance(head, torch.nn.Linear)
            head.weight.normal_(0.0, 0.5)
            head.bias.normal_(0.0, 1.0)
    return model


def default_tiny_folder() -> Path:
    return cache_folder(f"esmfold-tiny-v{TINY_VERSION}")


def ensure_tiny_weights(folder: Path | None = None) -> Path:
    """Build and save the tiny model once (atomically: temp folder, then rename); return its folder."""
    folder = Path(folder or default_tiny_folder())
    if (folder / "config.json").exists():
        return folder
    model = build_tiny_model()
    staging = staging_folder(folder)
    model.save_pretrained(staging)
    publish_unless_present(staging, folder)  # False: another process finished first, and its copy is kept
    logger.info("saved esmfold-tiny (untrained random weights) to %s", folder)
    return folder
