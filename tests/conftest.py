"""Shared fixtures: the tiny model (built and saved by the tests themselves) and test data paths."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Every test session builds its own esmfold-tiny into a private cache (also seen by Ray workers).
os.environ.setdefault("STRUCTOME_CACHE", tempfile.mkdtemp(prefix="structome-test-cache-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_weights() -> Path:
    from models.tiny import ensure_tiny_weights

    return ensure_tiny_weights()


@pytest.fixture(scope="session")
def tiny_predictor(tiny_weights):
    from models.esmfold import EsmFoldSettings
    from models.registry import load_predictor

    return load_predictor("esmfold-tiny", str(tiny_weights), EsmFoldSettings(num_recycles=1))
