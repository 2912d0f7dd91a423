"""The typed settings of a build's pipeline stages: pure dataclasses, cheap to import (the CLI reads its defaults here)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PREFIX = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class IngestSettings:
    """Length limit and AlphaFold-DB fragment windows (residues); entry ids are "<prefix>-<acc>-F<n>"."""

    max_length: int = 2700  # longer sequences are cut into windows
    fragment_window: int = 1400
    fragment_step: int = 200
    entry_prefix: str = "SM"
    allow_empty: bool = False  # an input without records is accepted (else refused, naming it)

    def __post_init__(self) -> None:
        if not 1 <= self.fragment_window <= self.max_length:
            raise ValueError(f"need 1 <= fragment_window ({self.fragment_window}) <= max_length ({self.max_length})")
        if not 1 <= self.fragment_step <= self.fragment_window:
            raise ValueError(f"need 1 <= fragment_step ({self.fragment_step}) <= fragment_window")
        if not _PREFIX.fullmatch(self.entry_prefix):
            raise ValueError(f"entry_prefix must match [A-Za-z0-9_]+, got {self.entry_prefix!r}")


@dataclass(frozen=True)
class BuildSettings:
    ingest: IngestSettings = field(default_factory=IngestSettings)
    batch_tokens: int | None = None  # cap on padded residues per model call; None: the cost model's plan alone
    shard_size: int = 64  # unique sequences per shard at most (the unit of commit and resume)
    min_shards: int = 8  # small inputs are still cut into this many shards, for progress and overlap

    def __post_init__(self) -> None:
        if (self.batch_tokens is not None and self.batch_tokens < 1) or self.shard_size < 1 or self.min_shards < 1:
            raise ValueError("batch tokens, shard size and shard count must be positive")

    def shard_size_for(self, unique_sequences: int) -> int:
        return max(1, min(self.shard_size, -(-unique_sequences // self.min_shards)))

    def as_dict(self) -> dict:
        return {
            "max_length": self.ingest.max_length,
            "fragment_window": self.ingest.fragment_window,
            "fragment_step": self.ingest.fragment_step,
            "entry_prefix": self.ingest.entry_prefix,
            "batch_tokens": self.batch_tokens,
            "shard_size": self.shard_size,
        }
