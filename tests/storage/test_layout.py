"""The database folder: exclusive build lock, atomic shard commits and file writes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from storage.layout import DatabaseLayout, DatabaseLockedError, write_parquet_atomic


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
    first = layout.new_staging_dir("s1")
    (first / "entries.parquet").write_bytes(b"one")
    assert not layout.is_committed("s1")
    assert layout.commit_shard(first, "s1")
    assert (layout.shard("s1") / "entries.parquet").read_bytes() == b"one"
    second = layout.new_staging_dir("s1")
    (second / "entries.parquet").write_bytes(b"two")
    assert not layout.commit_shard(second, "s1")  # already committed: never rewritten
    assert (layout.shard("s1") / "entries.parquet").read_bytes() == b"one"
    assert not second.exists()


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
    leftover = layout.new_staging_dir("s9")
    (leftover / "archive.tar").write_bytes(b"half")
    layout.clear_staging()
    assert list(layout.staging.iterdir()) == []
