"""The database folder: exclusive build lock, atomic shard commits and file writes, the format marker."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from structome import __version__
from structome.storage import formats
from structome.storage.atomic import write_parquet_atomic
from structome.storage.formats import FormatError
from structome.storage.layout import DatabaseLayout, DatabaseLockedError


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
def any_location(request, tmp_path) -> str:
    return str(tmp_path / "db") if request.param == "local" else request.getfixturevalue("s3_database")


@pytest.fixture()
def any_layout(any_location):
    layout = DatabaseLayout(any_location)
    layout.create()
    return layout


def _put(layout, target, name: str, data: bytes) -> None:
    with layout.fs.open_output_stream(f"{target.folder}/{name}") as stream:
        stream.write(data)


def _put_tables(layout, target, tag: str) -> None:
    """A shard's four table files, each a one-row Parquet file holding `tag`."""
    for table in ("entries", "residues", "files", "failures"):
        with layout.fs.open_output_stream(f"{target.folder}/{table}.parquet") as stream:
            pq.write_table(pa.table({"tag": [tag]}), stream)


def _tag(layout, relative: str) -> str:
    with layout.fs.open_input_file(layout.path(relative)) as handle:
        return pq.read_table(handle).column("tag")[0].as_py()


def test_only_committed_attempts_are_visible_and_leftovers_are_cleared(any_layout):
    layout = any_layout
    crashed = layout.begin_shard("s1")  # a writer that died before its commit
    _put(layout, crashed, "entries.parquet", b"half")
    assert layout.committed_shards() == {} and layout.table_files("entries") == []
    first = layout.begin_shard("s1")
    _put_tables(layout, first, "one")
    assert layout.commit_shard(first)
    assert layout.committed_shards() == {"s1": first.relative}
    assert layout.table_files("entries") == [f"{first.relative}/entries.parquet"]
    late = layout.begin_shard("s1")
    _put_tables(layout, late, "two")
    assert not layout.commit_shard(late)  # committed once: never rewritten
    assert _tag(layout, layout.table_files("entries")[0]) == "one"
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


def test_a_lease_names_its_format_and_a_newer_one_is_refused(s3_database, monkeypatch):
    from structome.storage import locks

    monkeypatch.setattr(locks, "SETTLE_SECONDS", 0.05)
    layout = DatabaseLayout(s3_database)
    with layout.lock():
        assert json.loads(layout.read_text(".build.lock"))["format"] == "structome-lease/1"
    with layout.fs.open_output_stream(layout.path(".build.lock")) as stream:  # an old lease, without a format
        stream.write(b'{"owner": "old", "renewedAt": 0}')
    assert not layout.build_running()
    with layout.fs.open_output_stream(layout.path(".build.lock")) as stream:
        stream.write(b'{"format": "structome-lease/2", "owner": "next year", "renewedAt": 0}')
    with pytest.raises(FormatError, match="structome-lease/2, newer than .*structome-lease/1.*upgrade structome"):
        layout.build_running()


# ---- the format marker ----------------------------------------------------------------------------------


def _marker(layout: DatabaseLayout) -> dict:
    return json.loads(layout.read_text(formats.MARKER_NAME))


def _put_marker(layout: DatabaseLayout, data: bytes) -> None:
    with layout.fs.open_output_stream(layout.path(formats.MARKER_NAME)) as stream:
        stream.write(data)


def test_create_writes_the_marker(any_layout):
    marker = _marker(any_layout)
    assert marker.keys() == {"format", "layout", "createdBy", "created"}
    assert (marker["format"], marker["layout"], marker["createdBy"]) == ("structome-database", 2, __version__)
    assert any_layout.list_files("") == ["structome.json"]
    assert any_layout.migrate() == []  # already current: nothing to do, marker untouched
    assert _marker(any_layout) == marker


def test_a_database_of_a_newer_layout_is_refused(any_layout, any_location):
    _put_marker(any_layout, json.dumps({**_marker(any_layout), "layout": 3}).encode())
    reopened = DatabaseLayout(any_location)
    with pytest.raises(FormatError, match=r"layout 3, newer than layout 2 .*upgrade structome"):
        reopened.committed_shards()
    with pytest.raises(FormatError, match="upgrade structome"):
        reopened.migrate()


@pytest.mark.parametrize("data", [b'{"format": "structome-database", "lay', b"[1, 2]", b'{"format": "x", "layout": 1}'])
def test_a_corrupt_marker_is_refused_naming_the_file(any_layout, any_location, data):
    _put_marker(any_layout, data)
    with pytest.raises(FormatError, match=r"structome\.json.* (corrupt|not a structome database marker)") as error:
        DatabaseLayout(any_location).table_files("entries")
    assert f"{any_location.split('?')[0]}/structome.json" in str(error.value)  # the file, by its full name


def test_a_database_from_before_markers_is_read_as_layout_1_and_migrated_once(any_layout, any_location):
    """Layout 1 (no compacted tables) reads as it is; migrating marks it layout 2, once."""
    layout = any_layout
    layout.fs.delete_file(layout.path(formats.MARKER_NAME))
    shard = layout.begin_shard("s1")
    _put_tables(layout, shard, "one")
    layout.commit_shard(shard)
    old = DatabaseLayout(any_location)
    assert old.layout_version == 1 and old.table_files("entries") == [f"{shard.relative}/entries.parquet"]
    assert not old.exists(formats.MARKER_NAME)  # reading never writes
    assert old.migrate() == [f"migrated {old.location} from layout 1 to layout 2"]
    assert _marker(old)["layout"] == 2
    assert DatabaseLayout(any_location).migrate() == []  # idempotent
    assert DatabaseLayout(any_location).table_files("entries") == [f"{shard.relative}/entries.parquet"]


def test_an_empty_place_is_no_database_until_created(tmp_path):
    layout = DatabaseLayout(tmp_path / "db")
    assert layout.layout_version is None and not (tmp_path / "db").exists()
    layout.create()
    assert DatabaseLayout(tmp_path / "db").layout_version == 2


def test_the_next_layout_is_one_registered_migration(any_layout, any_location, monkeypatch):
    """With layout 3 registered (and layout 2 no longer readable as it is), a layout-2 database is refused for
    reading until migrated; migrating runs the step once, under the same marker (its creation kept), and leaves it
    readable."""
    layout = any_layout
    created = _marker(layout)
    steps = []
    monkeypatch.setattr(formats, "LAYOUT", 3)
    monkeypatch.setattr(formats, "OLDEST_READABLE", 3)
    monkeypatch.setitem(formats.MIGRATIONS, 3, lambda db: steps.append(db.list_files("")))
    old = DatabaseLayout(any_location)
    with pytest.raises(
        FormatError, match=r"layout 2; this structome reads layouts 3 to 3: run `structome migrate --db "
    ):
        old.committed_shards()
    with old.lock():  # as `structome migrate` and every build do
        assert old.migrate() == [f"migrated {old.location} from layout 2 to layout 3"]
    assert len(steps) == 1 and "structome.json" in steps[0]  # the step could read the database
    assert _marker(old) == {**created, "layout": 3}
    assert DatabaseLayout(any_location).committed_shards() == {} and old.migrate() == []
