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


@pytest.fixture()
def group_umask():
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def _modes(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if ".staging" not in p.parts}


def test_a_shared_database_is_readable_by_the_group_under_umask_002(tmp_path, group_umask):
    from fake_database import add_entries

    add_entries(tmp_path / "db", 0, 3)
    modes = _modes(tmp_path / "db")
    shards = [name for name in modes if name.startswith("shards/") and name.count("/") == 1]
    assert len(shards) == 2
    assert {modes[name] for name in shards} == {0o775}  # not mkdtemp's 0700
    assert {mode for name, mode in modes.items() if name.startswith("shards/") and name.count("/") == 2} == {0o664}


def test_a_database_this_account_may_not_write_says_so(tmp_path, monkeypatch):
    from structome.storage.layout import DatabaseLayout

    layout = DatabaseLayout(tmp_path / "db")
    layout.create()

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic.Path, "mkdir", refuse)
    with pytest.raises(atomic.DatabasePermissionError) as caught:
        layout.begin_shard("s1")
    message = str(caught.value)
    assert message.startswith("permission denied: cannot write a shard into") and ".staging" in message
    assert "umask 002" in message and "mode 0" in message


def test_a_published_shard_is_synced_file_by_file_before_the_rename_and_its_folder_after(tmp_path, disk_calls):
    staged, target = tmp_path / "staging" / "s1.x", tmp_path / "shards" / "s1"
    staged.mkdir(parents=True)
    target.parent.mkdir()
    for name in ("entries.parquet", "archive.tar"):
        (staged / name).write_bytes(b"data")
    disk_calls.clear()
    publish_folder(staged, target)
    renamed = disk_calls.index(("rename", str(target)))
    before, after = disk_calls[:renamed], disk_calls[renamed + 1 :]
    assert {("fsync", str(staged / name)) for name in ("entries.parquet", "archive.tar")} <= set(before)
    assert before[-1] == ("fsync", str(staged))  # the folder's own entries, then the rename
    assert after == [("fsync", str(tmp_path / "shards"))]  # the rename made durable in the parent


def test_a_file_committed_into_new_folders_syncs_each_new_folder_into_its_parent(tmp_path, disk_calls):
    target = tmp_path / "tables" / "g1" / "entries.parquet"
    write_bytes_atomic(b"rows", target)
    made = [("mkdir", str(tmp_path / "tables")), ("mkdir", str(tmp_path / "tables" / "g1"))]
    assert disk_calls[:4] == [made[0], ("fsync", str(tmp_path)), made[1], ("fsync", str(tmp_path / "tables"))]
    renamed = disk_calls.index(("rename", str(target)))
    assert disk_calls[renamed - 1][1].endswith(".tmp") and disk_calls[renamed - 1][0] == "fsync"
    assert disk_calls[renamed + 1 :] == [("fsync", str(target.parent))]


def test_a_new_log_file_is_synced_into_its_folder(tmp_path, disk_calls):
    from structome.storage.layout import DatabaseLayout

    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    disk_calls.clear()
    layout.append_lines(["one"], "builds/b1.events.jsonl")
    assert disk_calls[-1] == ("fsync", str(tmp_path / "db" / "builds"))
