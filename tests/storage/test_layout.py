"""The database folder: exclusive build lock, atomic shard commits and file writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from structome.storage.layout import DatabaseLayout, DatabaseLockedError, write_parquet_atomic


def test_a_second_build_lock_is_refused_until_the_first_is_released(tmp_path):
    layout = DatabaseLayout(tmp_path / "db")
    assert not layout.build_running()
    with layout.lock():
        assert layout.build_running()
        with pytest.raises(DatabaseLockedError, match="another build"):
            with layout.lock():
                pass
    assert not layout.build_running()
    with layout.lock():
        pass


def test_a_shard_appears_whole_and_only_once(tmp_path):
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    first = layout.begin_shard("s1")
    (Path(first.folder) / "entries.parquet").write_bytes(b"one")
    assert not layout.is_committed("s1") and layout.committed_shards() == {}
    assert layout.commit_shard(first)
    assert layout.read_bytes("shards/s1/entries.parquet") == b"one"
    assert layout.committed_shards() == {"s1": "shards/s1"}
    second = layout.begin_shard("s1")
    (Path(second.folder) / "entries.parquet").write_bytes(b"two")
    assert not layout.commit_shard(second)  # already committed: never rewritten
    assert layout.read_bytes("shards/s1/entries.parquet") == b"one"
    assert not Path(second.folder).exists()


def test_parquet_writes_leave_no_temporary_files(tmp_path):
    target = tmp_path / "t" / "x.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2]}), target)
    write_parquet_atomic(pa.table({"a": [3]}), target)
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]
    import pyarrow.parquet as pq

    assert pq.read_table(target).column("a").to_pylist() == [3]


def test_clear_staging_removes_leftovers_of_a_crashed_writer(tmp_path):
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    leftover = layout.begin_shard("s9")
    (Path(leftover.folder) / "archive.tar").write_bytes(b"half")
    layout.clear_staging()
    assert list(layout.staging.iterdir()) == []


@pytest.fixture(params=["local", "s3"])
def any_layout(request, tmp_path):
    location = tmp_path / "db" if request.param == "local" else request.getfixturevalue("s3_database")
    layout = DatabaseLayout(location)
    layout.create()
    return layout


def _put(layout, target, name: str, data: bytes) -> None:
    with layout.fs.open_output_stream(f"{target.folder}/{name}") as stream:
        stream.write(data)


def test_only_committed_attempts_are_visible_and_leftovers_are_cleared(any_layout):
    layout = any_layout
    crashed = layout.begin_shard("s1")  # a writer that died before its commit
    _put(layout, crashed, "entries.parquet", b"half")
    assert layout.committed_shards() == {} and layout.table_files("entries") == []
    first = layout.begin_shard("s1")
    _put(layout, first, "entries.parquet", b"one")
    assert layout.commit_shard(first)
    assert layout.committed_shards() == {"s1": first.relative}
    assert layout.table_files("entries") == [f"{first.relative}/entries.parquet"]
    late = layout.begin_shard("s1")
    _put(layout, late, "entries.parquet", b"two")
    assert not layout.commit_shard(late)  # committed once: never rewritten
    assert layout.read_bytes(layout.table_files("entries")[0]) == b"one"
    layout.clear_staging()
    leftovers = [f for f in layout.list_files("") if "entries.parquet" in f]
    assert leftovers == [f"{first.relative}/entries.parquet"]


def test_logs_append_and_read_back_in_order(any_layout):
    layout = any_layout
    layout.append_lines(["a", "b"], "builds/x.events.jsonl")
    layout.append_lines([], "builds/x.events.jsonl")
    layout.append_lines(["c"], "builds/x.events.jsonl")
    assert layout.read_lines("builds/x.events.jsonl") == ["a", "b", "c"]
    assert layout.read_lines("builds/none.events.jsonl") == []


def test_an_object_store_lease_refuses_a_second_build_and_expires(s3_database, monkeypatch):
    from structome.storage import locks

    monkeypatch.setattr(locks, "SETTLE_SECONDS", 0.05)
    layout = DatabaseLayout(s3_database)
    assert not layout.build_running()
    with layout.lock():
        assert layout.build_running()
        with pytest.raises(DatabaseLockedError, match="another build"):
            with DatabaseLayout(s3_database).lock():
                pass
    assert not layout.build_running() and not layout.exists(".build.lock")
    with layout.fs.open_output_stream(layout.path(".build.lock")) as stream:  # a dead build's stale lease
        stream.write(b'{"owner": "dead", "renewedAt": 0}')
    assert not layout.build_running()
    with layout.lock():
        assert layout.build_running()
