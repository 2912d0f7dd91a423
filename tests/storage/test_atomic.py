"""Atomic local writes: a failed write leaves the old file and no temporary; a folder is published whole."""

from __future__ import annotations

import os

import pytest

from structome.storage import atomic
from structome.storage.atomic import publish_folder, write_bytes_atomic, write_chunks_atomic


def test_a_write_replaces_the_file_and_syncs_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    target = tmp_path / "a" / "x.json"
    write_bytes_atomic(b"old", target)
    write_bytes_atomic(b"new", target)
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["x.json"]
    assert synced[-1] == str(target.parent)  # the rename itself is made durable
    assert synced[-2].endswith(".tmp")  # the data before the rename


def test_a_failed_stream_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.tar"
    target.write_bytes(b"previous")

    def chunks():
        yield b"part"
        raise OSError("read failed")

    with pytest.raises(OSError, match="read failed"):
        write_chunks_atomic(chunks(), target)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.tar"]
    assert write_chunks_atomic(iter([b"ab", b"cde"]), target) == 5 and target.read_bytes() == b"abcde"


def test_a_stream_into_a_missing_folder_fails_without_making_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_chunks_atomic(iter([b"x"]), tmp_path / "missing" / "out.tar")
    assert not (tmp_path / "missing").exists()


def test_a_folder_is_published_once(tmp_path):
    staged, target = tmp_path / "staged", tmp_path / "shard"
    staged.mkdir()
    (staged / "entries.parquet").write_bytes(b"one")
    publish_folder(staged, target)
    assert (target / "entries.parquet").read_bytes() == b"one" and not staged.exists()
    late = tmp_path / "late"
    late.mkdir()
    (late / "entries.parquet").write_bytes(b"two")
    with pytest.raises(OSError):
        publish_folder(late, target)
    assert (target / "entries.parquet").read_bytes() == b"one" and late.exists()
