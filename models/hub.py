"""Weights on the Hugging Face hub: their digest from the hub's metadata, so that a driver that never loads the
weights (a CPU head node under `structome submit`) does not download gigabytes to record their provenance.

The digest is the one a local folder of the same files gets (models.esmfold.weights_sha256: SHA-256 over each
weight and config file's name and SHA-256): Git LFS files (the weights) carry their SHA-256 in the hub's
metadata; the few small files kept in git (config.json) carry only their git id and are fetched (kilobytes).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def hub_unreachable_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the hub cannot answer (offline, no network, an HTTP error)."""
    import httpx2  # huggingface_hub's HTTP client

    return (OSError, httpx2.HTTPError)


def hub_weights_sha256(repo_id: str, suffixes: Sequence[str]) -> str:
    """The digest of the repository's top-level files ending in SUFFIXES at its current revision."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, files_metadata=True)
    files = sorted(
        (s for s in info.siblings or () if "/" not in s.rfilename and s.rfilename.endswith(tuple(suffixes))),
        key=lambda s: s.rfilename,
    )
    if not files:
        raise FileNotFoundError(f"no weight files in {repo_id} on the hub")
    digest = hashlib.sha256()
    for sibling in files:
        digest.update(sibling.rfilename.encode())
        digest.update(_file_sha256(repo_id, info.sha, sibling).encode())
    logger.info("weights %s at revision %s: digest from the hub's metadata", repo_id, info.sha)
    return digest.hexdigest()


def _file_sha256(repo_id: str, revision: str | None, sibling) -> str:
    if sibling.lfs is not None:
        return sibling.lfs.sha256
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, sibling.rfilename, revision=revision)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
