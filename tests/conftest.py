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
    from structome.models.tiny import ensure_tiny_weights

    return ensure_tiny_weights()


@pytest.fixture(scope="session")
def tiny_predictor(tiny_weights):
    from structome.models.registry import load_predictor
    from structome.models.types import EsmFoldSettings

    return load_predictor("esmfold-tiny", str(tiny_weights), EsmFoldSettings(num_recycles=1))


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on a free port; `endpoint` is its URL."""
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_database(s3_server):
    """A fresh bucket on the local S3 server, as a database URI (s3://bucket/db?endpoint_override=...)."""
    import uuid

    import pyarrow.fs as pafs

    bucket = f"structome-test-{uuid.uuid4().hex[:12]}"
    options = f"endpoint_override={s3_server}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?{options}")
    fs.create_dir(bucket)
    return f"s3://{bucket}/db?{options.removesuffix('&allow_bucket_creation=true')}"


@pytest.fixture()
def disk_calls(monkeypatch) -> list[tuple[str, str]]:
    """Every fsync (of the path its descriptor names), rename and mkdir, in the order made."""
    from structome.storage import atomic as _atomic

    calls: list[tuple[str, str]] = []
    real_fsync, real_rename, real_replace, real_mkdir = os.fsync, os.rename, os.replace, _atomic.Path.mkdir

    def fsync(descriptor: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def rename(source, target) -> None:
        real_rename(source, target)
        calls.append(("rename", str(target)))

    def replace(source, target) -> None:
        real_replace(source, target)
        calls.append(("rename", str(target)))

    def mkdir(path, *args, **kwargs) -> None:
        real_mkdir(path, *args, **kwargs)
        calls.append(("mkdir", str(path)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(_atomic.Path, "mkdir", mkdir)
    return calls
