"""A damaged database: a shard or segment part missing, truncated or garbage is left out by name and the healthy
rest answers; catalog.duckdb and the schema files are rebuilt; `verify` names every damaged file and `repair`
quarantines or re-derives, so the database holds exactly its healthy entries (and the damaged ones can be re-folded)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from fake_database import add_entries

from structome.storage import catalog
from structome.storage.compaction import CompactionPolicy, collect_garbage, compact
from structome.storage.formats import FormatError
from structome.storage.integrity import DamagedDatabaseError
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import EntryNotFoundError, committed_entries, read_entry_file
from structome.storage.verify import QUARANTINE, quick_check, refuse_damaged, repair, verify

FINGERPRINT = {
    "entries": "SELECT entryId, hash(COLUMNS(*)) FROM entries ORDER BY entryId",
    "residues": "SELECT entryId, residueNumber, hash(COLUMNS(*)) FROM residues ORDER BY ALL",
    "files": "SELECT fileName, hash(COLUMNS(*)) FROM files ORDER BY fileName",
}


def fingerprint(layout: DatabaseLayout, *, detached: bool = False) -> dict:
    """`detached`: through catalog.connect_snapshot, as `structome sql` reads (else catalog.connect, as `get`)."""
    return {table: catalog.query(layout, sql, detached=detached).to_pylist() for table, sql in FINGERPRINT.items()}


def entry_ids(layout: DatabaseLayout, *, detached: bool = False) -> set[str]:
    rows = catalog.query(layout, "SELECT entryId FROM entries", detached=detached)
    return set(rows.column("entryId").to_pylist())


def shard_entries(layout: DatabaseLayout, shard: str) -> set[str]:
    rows = catalog.query(layout, "SELECT entryId FROM entries WHERE shard = ?", [shard])
    return set(rows.column("entryId").to_pylist())


@pytest.fixture()
def database(tmp_path) -> DatabaseLayout:
    """8 entries in 4 shards of 2."""
    add_entries(tmp_path / "db", 0, 8, shard_size=2)
    return DatabaseLayout(tmp_path / "db")


def truncate(path, size: int = 100) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def garble(path) -> None:
    Path(path).write_bytes(b"not parquet at all " * 20)


def flip_inside(path, offset: int) -> None:
    """Change bytes inside a file, keeping its size and both ends."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", [os.remove, truncate, garble], ids=["missing", "truncated", "garbage"])
@pytest.mark.parametrize("table", ["entries", "residues"])
def test_a_damaged_shard_is_left_out_by_name_and_the_healthy_rest_answers(database, damage, table, caplog):
    layout = database
    shard = sorted(layout.committed_shards())[1]
    lost = shard_entries(layout, shard)
    healthy = entry_ids(layout) - lost
    damage(layout.root / "shards" / shard / f"{table}.parquet")
    with caplog.at_level(logging.WARNING):
        assert entry_ids(layout) == healthy  # the stale catalog notices, and reads the healthy files
        assert entry_ids(layout, detached=True) == healthy  # so does its snapshot
        catalog.refresh_catalog(layout)  # a build's refresh: no DuckDB error, the shard left out
        assert entry_ids(layout) == healthy
    assert f"shard {shard} is damaged" in caplog.text and f"shards/{shard}/{table}.parquet" in caplog.text
    assert read_entry_file(layout, sorted(healthy)[0]).data.startswith(b"data_")
    with pytest.raises(EntryNotFoundError):
        read_entry_file(layout, sorted(lost)[0])
    with pytest.raises(DamagedDatabaseError, match=f"shards/{shard}/{table}.parquet") as refused:
        refuse_damaged(layout)  # what a build does first
    assert "structome verify" in str(refused.value)


@pytest.mark.parametrize("detached", [False, True], ids=["connect", "snapshot"])
def test_a_garbage_catalog_is_rebuilt(database, caplog, detached):
    layout = database
    expected = fingerprint(layout)
    layout.catalog.write_bytes(b"garbage" * 1000)
    with caplog.at_level(logging.WARNING):
        assert fingerprint(layout, detached=detached) == expected
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    layout.catalog.write_bytes(b"")
    catalog.refresh_catalog(layout)  # the writer's way in rebuilds it too
    assert fingerprint(layout) == expected


def test_a_catalog_a_reader_in_another_process_holds_is_not_taken_for_unreadable(database, caplog):
    """DuckDB holds a read-only file with a shared lock: a writer's open fails (IOException), and the check for a
    lock must see that shared lock too, not rebuild (replace) a healthy catalog under its readers."""
    layout = database
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; held = duckdb.connect({str(layout.catalog)!r}, read_only=True); "
         "print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "open\n"
        inode = layout.catalog.stat().st_ino
        assert catalog._locked_by_another_process(layout.catalog)
        with caplog.at_level(logging.WARNING), pytest.raises(duckdb.IOException):
            catalog._retrying(layout, lambda: duckdb.connect(str(layout.catalog), read_only=False), attempts=2)
        assert "rebuilding" not in caplog.text and layout.catalog.stat().st_ino == inode
    finally:
        reader.communicate("")
    assert not catalog._locked_by_another_process(layout.catalog)


@pytest.mark.parametrize("damage", [truncate, garble, os.remove])
def test_a_damaged_schema_file_is_rewritten(database, damage):
    layout = database
    expected = fingerprint(layout)
    damage(layout.root / "schema" / "entries.parquet")
    assert fingerprint(layout) == expected
    assert quick_check(layout) == []


def test_a_damaged_segment_part_is_left_out_and_repair_re_derives_it_from_its_shards(database):
    layout = database
    expected = fingerprint(layout)
    with layout.compaction_lock():
        compact(layout, CompactionPolicy(grace_s=600))  # the shards' own tables stay for the grace period
    (segment,) = layout.table_manifest().segments
    part = segment.table_files("files")[0].path
    truncate(layout.root / part)
    assert entry_ids(layout) == set()  # the whole segment is left out: no entry without its files
    report = verify(layout)
    assert [(d.file, d.segment) for d in report.damage] == [(part, segment.segment_id)]
    time.sleep(0.5)  # the repair's generation is younger than the compaction's by at least this
    repaired = repair(layout)
    assert any("back to level 0" in line for line in repaired.repaired)
    assert fingerprint(layout) == expected and verify(layout).ok
    assert (layout.root / QUARANTINE).is_dir() and not (layout.root / part).exists()
    # a collection while only the compaction's generation has settled: the shards given back keep their tables
    compacted = layout.table_manifest(layout.manifest_generations()[0]).created
    age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(compacted)).total_seconds()
    with layout.compaction_lock():
        collect_garbage(layout, grace_s=age - 0.25)
    assert fingerprint(layout) == expected and verify(layout).ok
    with layout.compaction_lock():
        compact(layout, CompactionPolicy(grace_s=0))  # compacts them again; the collection keeps every answer
    assert fingerprint(layout) == expected and verify(layout).ok


def test_repair_quarantines_a_segment_whose_shards_tables_are_gone(database):
    layout = database
    with layout.compaction_lock():
        compact(layout, CompactionPolicy(grace_s=0))  # the shards' own tables are removed
    everything = entry_ids(layout)
    (segment,) = layout.table_manifest().segments
    flip_inside(layout.root / segment.table_files("entries")[0].path, 40)  # both ends intact: only a checksum sees it
    report = verify(layout)
    assert [d.segment for d in report.damage] == [segment.segment_id]
    assert "checksum" in report.damage[0].problem
    repair(layout)
    assert entry_ids(layout) == set() and verify(layout).ok
    assert committed_entries(layout, everything) == {}  # a build re-folds all of them
    assert layout.table_manifest().compacted_shards == frozenset() and layout.committed_shards() == {}


def test_verify_names_each_damaged_file_and_repair_quarantines_exactly_their_shards(database):
    layout = database
    assert verify(layout).ok and verify(layout).members_checked == 8 * 3
    shards = sorted(layout.committed_shards())
    truncated, flipped, member = shards[0], shards[1], shards[2]
    lost = set().union(*(shard_entries(layout, s) for s in (truncated, flipped, member)))
    before = entry_ids(layout)
    row = catalog.query(layout, 'SELECT archive, "offset" FROM files WHERE archive LIKE ?', [f"%{member}%"])
    truncate(layout.root / "shards" / truncated / "archive.tar", 3000)
    flip_inside(layout.root / "shards" / flipped / "entries.parquet", 20)
    flip_inside(layout.root / row["archive"][0].as_py(), row["offset"][0].as_py() + 10)
    report = verify(layout)
    assert {(d.file.split("/")[-1], d.shard) for d in report.damage} == {
        ("archive.tar", truncated),
        ("entries.parquet", flipped),
        ("archive.tar", member),
    }
    assert {d.shard for d in quick_check(layout)} == {truncated}  # what a glance sees: the truncated archive
    repair(layout)
    assert entry_ids(layout) == before - lost and verify(layout).ok
    quarantined = {p.name for p in (layout.root / QUARANTINE).glob("*/shards/*")}
    assert quarantined == {truncated, flipped, member}
    assert committed_entries(layout, lost) == {}


def test_a_quarantine_move_is_made_durable_in_both_folders(database, disk_calls):
    layout = database
    shard = sorted(layout.committed_shards())[0]
    truncate(layout.root / "shards" / shard / "archive.tar", 3000)
    disk_calls.clear()
    repair(layout)
    moved = [c for c in disk_calls if c[0] == "rename" and c[1].endswith(f"/shards/{shard}")]
    assert len(moved) == 1 and QUARANTINE in moved[0][1]
    after = disk_calls[disk_calls.index(moved[0]) + 1 :][:2]
    assert set(after) == {("fsync", str(layout.root / "shards")), ("fsync", str(Path(moved[0][1]).parent))}


@pytest.mark.parametrize(
    "record",
    [
        b"[]",
        b'"checksums"',
        b'{"files": []}',
        b'{"files": {"entries.parquet": {"size": 1, "sha256": "x", "rows": "many"}}}',
    ],
)
def test_a_checksums_record_of_the_wrong_shape_is_named_not_a_crash(database, record):
    """Valid JSON that is no checksums record (a list, a string, files not an object, rows no number) is damage
    verify names; it raised AttributeError (or kept rows='many') before."""
    layout = database
    shard = sorted(layout.committed_shards())[0]
    (layout.root / "shards" / shard / "checksums.json").write_bytes(record)
    damage = [d for d in verify(layout).damage if d.file.endswith("checksums.json")]
    assert [(d.shard, d.problem.startswith("unreadable record of checksums")) for d in damage] == [(shard, True)]


def test_a_damaged_page_of_an_older_shards_files_table_is_named_and_repaired(database):
    """A shard written before checksums were recorded: its footer holds, a page of its files table does not.
    verify read that table to check the archive members and stopped with pyarrow's OSError."""
    layout = database
    shard = sorted(layout.committed_shards())[0]
    folder = layout.root / "shards" / shard
    (folder / "checksums.json").unlink()
    metadata = pq.ParquetFile(folder / "files.parquet").metadata.row_group(0)
    (column,) = [
        metadata.column(i) for i in range(metadata.num_columns) if metadata.column(i).path_in_schema == "offset"
    ]
    with open(folder / "files.parquet", "r+b") as handle:
        handle.seek(column.data_page_offset + 4)
        handle.write(b"\xff" * 20)
    report = verify(layout)
    assert [(d.file, d.shard, d.problem.startswith("unreadable")) for d in report.damage] == [
        (f"shards/{shard}/files.parquet", shard, True)
    ]
    repair(layout)  # the shard is quarantined: the next build re-folds its entries
    assert verify(layout).ok and shard not in layout.committed_shards()
    assert next((layout.root / QUARANTINE).glob(f"*/shards/{shard}")).is_dir()


def test_a_checksums_record_of_a_newer_structome_is_refused_not_taken_for_damage(database):
    """A newer structome's checksums.json is whole: verify says to upgrade, and repair quarantines nothing (it was
    'corrupt', damage of its shard, and repair quarantined a healthy shard)."""
    layout = database
    shard = sorted(layout.committed_shards())[0]
    (layout.root / "shards" / shard / "checksums.json").write_bytes(b'{"format": "structome-checksums/9", "files": {}}')
    with pytest.raises(FormatError, match="newer than this structome .* upgrade structome"):
        verify(layout)
    with pytest.raises(FormatError, match="upgrade structome"):
        repair(layout)
    assert shard in layout.committed_shards() and not (layout.root / QUARANTINE).exists()


def test_compaction_leaves_a_damaged_shard_uncompacted(database):
    layout = database
    shard = sorted(layout.committed_shards())[0]
    os.remove(layout.root / "shards" / shard / "residues.parquet")
    with layout.compaction_lock():
        report = compact(layout, CompactionPolicy(grace_s=0))
    assert report.shards_merged == 3
    assert shard not in layout.table_manifest().compacted_shards  # repair, not compaction, decides its fate
    repair(layout)
    assert verify(layout).ok and shard not in layout.committed_shards()
