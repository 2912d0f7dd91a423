"""storage.compaction: merged, sorted segments answer exactly what the shards answered; switches are atomic; a
killed run leaves the old or the new state; readers never see duplicates or gaps; superseded files go after the
grace period."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_database import add_entries
from processes import kill_all

from structome.storage import catalog, parts
from structome.storage.compaction import CompactionPolicy, collect_garbage, compact, plan_compaction
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import read_entry_file
from structome.storage.segments import Segment, TableManifest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from synthetic_db import make_database  # noqa: E402  (thousands of entries in seconds: one template archive)

# One fingerprint per table: row count, distinct keys (duplicates would show) and a hash of every stored value.
FINGERPRINTS = {
    "entries": "SELECT count(*), count(DISTINCT entryId), sum(hash(COLUMNS(*))) FROM entries",
    "residues": "SELECT count(*), count(DISTINCT (entryId, residueNumber)), sum(hash(COLUMNS(*))) FROM residues",
    "files": "SELECT count(*), count(DISTINCT fileName), sum(hash(COLUMNS(*))) FROM files",
    "failures": "SELECT count(*), sum(hash(COLUMNS(*))) FROM failures_all",
    "builds": "SELECT count(*) FROM builds",
}
SMALL = CompactionPolicy(fanout=2, base_entries=4, grace_s=0)  # tiers from a handful of entries up


def fingerprints(location) -> dict:
    connection = catalog.connect(DatabaseLayout(location))
    try:
        return {table: connection.sql(sql).fetchall() for table, sql in FINGERPRINTS.items()}
    finally:
        connection.close()


def run_compaction(location, policy: CompactionPolicy = SMALL):
    layout = DatabaseLayout(location)
    with layout.compaction_lock():
        return compact(layout, policy)


def test_compaction_keeps_every_answer_and_sorts_by_entry(tmp_path):
    db = tmp_path / "db"
    accessions = add_entries(db, 0, 30, shard_size=3)
    before = fingerprints(db)
    layout = DatabaseLayout(db)
    assert len(layout.table_files("entries")) == 10
    report = run_compaction(db, CompactionPolicy(grace_s=0))
    assert (report.shards_merged, report.segments_written, report.entries_rewritten) == (10, 1, 30)
    assert fingerprints(db) == before
    (segment,) = layout.table_manifest().segments
    assert layout.table_files("entries") == segment.paths("entries")
    (part,) = segment.table_files("entries")  # 30 entries: one part
    ids = pq.read_table(layout.path(part.path), columns=["entryId"]).column("entryId").to_pylist()
    assert ids == sorted(ids) and len(ids) == 30 and part.ranges["entryId"] == (ids[0], ids[-1])
    assert read_entry_file(layout, accessions[7]).data.startswith(b"data_")  # archives stay where they were
    assert not list((db / "shards").glob("*/*.parquet"))  # grace 0: the shards' own tables are gone
    assert len(list((db / "shards").glob("*/archive.tar"))) == 10
    again = run_compaction(db, CompactionPolicy(grace_s=0))
    assert (again.segments_written, again.generation) == (0, 1)  # nothing new: no new generation


def test_a_segment_in_parts_holds_disjoint_sorted_ranges_and_a_lookup_reads_one_part(tmp_path, monkeypatch):
    monkeypatch.setitem(parts.ROW_GROUP_ROWS, "entries", 2048)
    monkeypatch.setattr(parts, "ROW_GROUPS_PER_PART", 1)
    db = tmp_path / "db"
    make_database(db, 5000)  # synthetic: 79 shards of 64 random accessions, one template archive
    before = fingerprints(db)
    run_compaction(db, CompactionPolicy(grace_s=0))
    assert fingerprints(db) == before
    layout = DatabaseLayout(db)
    (segment,) = layout.table_manifest().segments
    in_parts = segment.table_files("entries")
    assert len(in_parts) == 3
    ids = [i for p in in_parts for i in pq.read_table(layout.path(p.path)).column("entryId").to_pylist()]
    assert ids == sorted(ids) and len(ids) == 5000
    bounds = [p.ranges["entryId"] for p in in_parts]
    assert all(high < next_low for (_, high), (next_low, _) in zip(bounds, bounds[1:], strict=False))
    probe = in_parts[1].ranges["uniprotAccession"][0]
    connection = catalog.connect(layout)
    try:
        assert catalog.key_files(connection, "entries", "uniprotAccession", probe) == [in_parts[1].path]
        assert catalog.key_files(connection, "entries", "uniprotAccession", "A00000") == []  # below every range
    finally:
        connection.close()
    for accession in (ids[0][3:-3], probe, ids[-1][3:-3]):
        assert read_entry_file(layout, accession).entry_id == f"SM-{accession}-F1"


def test_incremental_runs_rewrite_only_new_shards_and_full_tiers(tmp_path):
    db = tmp_path / "db"
    add_entries(db, 0, 4)
    first = run_compaction(db)
    assert (first.shards_merged, first.segments_merged, first.segments) == (2, 0, 1)
    add_entries(db, 100, 4)
    second = run_compaction(db)  # two tier-0 segments of 4 entries with fanout 2: merged into one of 8
    assert (second.shards_merged, second.segments_merged, second.entries_rewritten, second.segments) == (2, 1, 8, 1)
    add_entries(db, 200, 2)
    third = run_compaction(db)  # the new 2 entries stay beside the 8: different tiers
    assert (third.shards_merged, third.segments_merged, third.segments) == (1, 0, 2)
    expected = fingerprints(db)
    full = run_compaction(db, CompactionPolicy(full=True, grace_s=0))
    assert (full.segments, full.entries_rewritten) == (1, 10) and fingerprints(db) == expected
    assert expected["entries"][0][:2] == (10, 10)


def test_the_plan_merges_a_tier_once_it_holds_fanout_segments():
    policy = CompactionPolicy(fanout=4, base_entries=100)
    assert [policy.tier(n) for n in (1, 100, 101, 399, 400, 1_600, 10**7)] == [0, 0, 1, 1, 2, 3, 9]
    three = TableManifest(1, tuple(Segment(f"s{i}", 50, 1) for i in range(3)), frozenset({"a", "b", "c"}))
    plan = plan_compaction(three, {"d": "shards/d"}, 60, policy)  # the new shard makes the fourth tier-0 member
    assert len(plan.merges) == 1 and not plan.kept
    assert sorted(plan.merges[0].shards) == ["d"] and len(plan.merges[0].segments) == 3
    big = TableManifest(1, (Segment("big", 10**6, 9), *three.segments[:2]), frozenset("abc"))
    plan = plan_compaction(big, {"d": "shards/d"}, 60, policy)
    assert [s.segment_id for s in plan.kept] == ["big", "s0", "s1"] and len(plan.merges) == 1  # 3 small: no merge
    capped = CompactionPolicy(fanout=4, base_entries=100, max_merge_entries=150)
    plan = plan_compaction(three, {"d": "shards/d"}, 60, capped)  # 210 entries would be rewritten: left for later
    assert len(plan.kept) == 3 and len(plan.merges) == 1 and not plan.merges[0].segments


def test_superseded_files_stay_for_the_grace_period_and_leftovers_go(tmp_path):
    db = tmp_path / "db"
    add_entries(db, 0, 6)
    layout = DatabaseLayout(db)
    shard_tables = sorted((db / "shards").glob("*/entries.parquet"))
    run_compaction(db, CompactionPolicy(grace_s=3600))
    assert sorted((db / "shards").glob("*/entries.parquet")) == shard_tables  # a reader may still use them
    stray = db / "tables" / "entries" / "g0000000009-dead.parquet"  # what a killed run wrote but never listed
    shutil.copy(layout.path(layout.table_files("entries")[0]), stray)
    assert collect_garbage(layout, grace_s=3600) == 1 and not stray.exists()
    assert len(list((db / "shards").glob("*/entries.parquet"))) == 3
    assert collect_garbage(layout, grace_s=0) == 3 * 4  # now settled: the shards' four tables each
    assert not list((db / "shards").glob("*/*.parquet")) and collect_garbage(layout, grace_s=0) == 0


def test_compaction_on_an_object_store(s3_database):
    add_entries(s3_database, 0, 8, shard_size=3)
    before = fingerprints(s3_database)
    report = run_compaction(s3_database, CompactionPolicy(grace_s=0))
    assert (report.shards_merged, report.segments) == (3, 1)
    assert fingerprints(s3_database) == before
    layout = DatabaseLayout(s3_database)
    assert not [f for f in layout.list_files("shards") if f.endswith(".parquet")]
    assert read_entry_file(layout, "Q00003").data.startswith(b"data_")


def _compact_process(db, marker: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "structome", "compact", "--db", str(db), "--grace", "0", "--fanout", "2"]
    return subprocess.Popen(
        command,
        env={**__import__("os").environ, "STRUCTOME_TEST_MARKER": marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _staged_database(tmp_path):
    """Segments of two earlier runs plus level-0 shards: a run merges shards and tiers, many steps to kill."""
    db = tmp_path / "db"
    add_entries(db, 0, 12)
    run_compaction(db)
    add_entries(db, 100, 12)
    run_compaction(db, CompactionPolicy(fanout=8, base_entries=4, grace_s=3600))
    add_entries(db, 200, 24)
    return db


def _started_work(db, process: subprocess.Popen) -> float:
    """When the compaction process made its scratch folder (imports and planning done, merging begins)."""
    deadline = time.monotonic() + 120
    while not (db / ".compaction").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the compaction never started merging"
        time.sleep(0.002)
    return time.monotonic()


def _fresh_copy(staged, folder):
    """The staged database as a new compaction finds it, without the scratch folder of the runs that staged it."""
    db = shutil.copytree(staged, folder)
    shutil.rmtree(db / ".compaction", ignore_errors=True)
    return db


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_exactly_the_uncompacted_answers(tmp_path):
    staged = _staged_database(tmp_path)
    expected = fingerprints(staged)
    rehearsal = _fresh_copy(staged, tmp_path / "rehearsal")
    process = _compact_process(rehearsal, uuid.uuid4().hex)
    started = _started_work(rehearsal, process)
    assert process.wait(120) == 0, process.stderr.read()
    work_s = time.monotonic() - started  # merging, publishing, the manifest switch, the catalog, garbage
    rng = random.Random(11)
    killed_mid_way = 0
    for run in range(4):
        db = _fresh_copy(staged, tmp_path / f"run-{run}")  # each kill meets a whole run's work, not a rest
        marker = uuid.uuid4().hex
        process = _compact_process(db, marker)
        time.sleep(max(0.0, _started_work(db, process) + rng.uniform(0.0, 0.9) * work_s - time.monotonic()))
        killed_mid_way += process.poll() is None
        kill_all(marker)
        process.wait(30)
        assert fingerprints(db) == expected
        finished = _compact_process(db, uuid.uuid4().hex)  # the re-run resumes
        assert finished.wait(120) == 0, finished.stderr.read()
        assert fingerprints(db) == expected
        layout = DatabaseLayout(db)
        listed = set(layout.table_manifest().files)
        assert {f for f in layout.list_files("tables") if f.endswith(".parquet")} == listed  # no leftovers
        assert not list((db / "shards").glob("*/*.parquet")) and not list((db / ".compaction").glob("*/*"))
    assert killed_mid_way >= 3  # the runs died while merging, not after their end


READER = """
import json, pathlib, sys
from structome.storage import catalog, compaction
from structome.storage.layout import DatabaseLayout
queries, stop = json.loads(sys.argv[3]), pathlib.Path(sys.argv[2])
while not stop.exists():
    connection = catalog.connect(DatabaseLayout(sys.argv[1]))
    answer = {t: [list(map(str, row)) for row in connection.sql(q).fetchall()] for t, q in queries.items()}
    connection.close()
    print(json.dumps(answer), flush=True)
"""


def _as_text(answer: dict) -> dict:
    return {table: [list(map(str, row)) for row in rows] for table, rows in answer.items()}


def test_readers_and_a_build_during_compaction_never_see_duplicates_or_gaps(tmp_path):
    """Readers are other processes (as `structome sql` is); a build commits shards while the compaction runs."""
    db = _staged_database(tmp_path)
    expected = _as_text(fingerprints(db))
    stop = tmp_path / "stop"
    queries = json.dumps(FINGERPRINTS)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop), queries], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    layout = DatabaseLayout(db)
    try:
        time.sleep(1.0)  # the readers are reading
        with layout.lock():
            writer = threading.Thread(target=add_entries, args=(db, 900, 4))
            writer.start()
            report = run_compaction(db, CompactionPolicy(fanout=2, base_entries=4, grace_s=3600))
            writer.join()
        time.sleep(1.0)
    finally:
        stop.touch()
        outputs = [reader.communicate(timeout=60)[0] for reader in readers]
    assert all(reader.returncode == 0 for reader in readers)
    answers = [json.loads(line) for output in outputs for line in output.splitlines()]
    with_new = _as_text(fingerprints(db))
    assert with_new["entries"][0][:2] == ["52", "52"] and len(answers) >= 4
    assert {json.dumps(a, sort_keys=True) for a in answers} <= {
        json.dumps(x, sort_keys=True) for x in (expected, with_new)
    }
    assert report.shards_merged >= 12
    run_compaction(db)  # the build's shards, level 0 after that run, are merged by the next
    assert _as_text(fingerprints(db)) == with_new and not list((db / "shards").glob("*/*.parquet"))
