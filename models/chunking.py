"""The trunk chunk-size rule, shared by the predictor and the (torch-free) batch planner."""

from __future__ import annotations

CHUNK_LADDER = (64, 32, 16, 8)  # chunk sizes tried, largest first, when a protein does not fit
UNCHUNKED_MAX_LENGTH = 256  # residues; longer sequences are always chunked
LONG_CHUNK_FROM = 1025  # residues; from here on the second rung


def chunk_size_for_length(padded_length: int) -> int | None:
    """Unchunked while cheap; chunked above 256 residues to bound the pair and triangle-attention memory
    (unchunked long proteins also came out as garbage in esm#641)."""
    if padded_length <= UNCHUNKED_MAX_LENGTH:
        return None
    return CHUNK_LADDER[0] if padded_length < LONG_CHUNK_FROM else CHUNK_LADDER[1]
