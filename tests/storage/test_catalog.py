"""storage.catalog on object stores: what DuckDB asks the store about a file is asked once per connection for the
files that are written once, and every time for those rewritten under the same name (build rows)."""

from __future__ import annotations

import random
import threading

import pyarrow.parquet as pq
import pytest
from fake_database import BUILD_ID, add_entries

from structome.models.types import Failure, FailureReason, Stage
from structome.pipelines.ingest import IngestSettings, ingest
from structome.storage import catalog, rows
from structome.storage.compaction import CompactionPolicy, compact
from structome.storage.layout import DatabaseLayout


def test_object_store_file_facts_are_kept_only_for_files_written_once(s3_database):
    add_entries(s3_database, 0, 4)
    layout = DatabaseLayout(s3_database)
    shard_file = layout.path(layout.table_files("entries")[0])
    rewritten = layout.path("builds/x.parquet")
    layout.write_bytes_atomic(b"PAR1", "builds/x.parquet")
    fs = catalog._duckdb_file_system(layout)
    assert fs.info(f"structome://{shard_file}")["type"] == "file" and fs.info(rewritten)["size"] == 4
    layout.write_bytes_atomic(b"PAR1PAR1", "builds/x.parquet")
    layout.fs.delete_file(shard_file)  # a shard's file is never rewritten: what was learnt of it still holds
    assert fs.info(shard_file)["type"] == "file" and fs.info(rewritten)["size"] == 8
    with pytest.raises(FileNotFoundError):
        catalog._duckdb_file_system(layout).info(shard_file)  # a new connection asks the store again


def test_object_store_reads_from_many_threads_on_one_handle_return_the_bytes_asked_for(s3_database):
    """DuckDB seeks and reads one handle from several threads (each step a Python call that may yield the GIL):
    every read must return the bytes at the offset its own thread sought."""
    layout = DatabaseLayout(s3_database)
    data = random.Random(3).randbytes(2 << 20)
    layout.write_bytes_atomic(data, "shards/blob.bin")
    handle = catalog._duckdb_file_system(layout).open(layout.path("shards/blob.bin"), "rb")
    wrong: list[tuple[int, int]] = []

    def read_randomly(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            at, size = rng.randrange(len(data) - 70_000), rng.randrange(1, 65_536)
            handle.seek(at)
            if handle.read(size) != data[at : at + size] or handle.tell() != at + size:
                wrong.append((at, size))

    threads = [threading.Thread(target=read_randomly, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    handle.seek(-10, 2)  # from the end, as Parquet readers find the footer
    assert handle.read() == data[-10:] and handle.read(5) == b""


def test_an_object_store_connection_keeps_reads_of_files_written_once_and_rereads_the_rest(s3_database):
    layout = DatabaseLayout(s3_database)
    layout.write_bytes_atomic(b"segment bytes", "tables/part.parquet")
    layout.write_bytes_atomic(b"build row v1", "builds/x.parquet")
    fs = catalog._duckdb_file_system(layout)

    def read(relative: str, at: int, size: int) -> bytes:
        with fs.open(layout.path(relative), "rb") as handle:
            handle.seek(at)
            return handle.read(size)

    assert read("tables/part.parquet", 8, 5) == b"bytes" and read("builds/x.parquet", 10, 2) == b"v1"
    layout.fs.delete_file(layout.path("tables/part.parquet"))  # never rewritten: the bytes read still hold
    layout.write_bytes_atomic(b"build row v2", "builds/x.parquet")
    assert read("tables/part.parquet", 8, 5) == b"bytes"  # from the connection's memory, no request
    assert read("builds/x.parquet", 10, 2) == b"v2"  # a file that is rewritten: asked again
    with pytest.raises(OSError):
        read("tables/part.parquet", 0, 7)  # a range never read: the store is asked, and the file is gone


# --- the failures view: every refused record, by input path, with its accession ----------------------------

EARLIER, LATER = "20261124T000000Z-000000", "20261126T000000Z-ffffff"  # around fake_database.BUILD_ID


def _failure(entry_id: str, reason: FailureReason, stage: Stage, accession: str = "Q00000", **fields) -> Failure:
    values = dict(record_id=f"sp|{accession}|X_ECOLI", source_file="/in/in.fasta", message="m", record_number=1)
    return Failure(reason=reason, stage=stage, entry_id=entry_id, accession=accession, **(values | fields))


def _ledger(layout: DatabaseLayout, build: str, failures: list[Failure]) -> None:
    layout.write_parquet_atomic(rows.failures_table(failures, build), layout.build_failures(build))


def _failures(layout: DatabaseLayout) -> list[tuple]:
    sql = (
        "SELECT reason, entryId, uniprotAccession, sourceFile, build FROM failures ORDER BY build, sourceFile, entryId"
    )
    return [tuple(row.values()) for row in catalog.query(layout, sql).to_pylist()]


def test_failures_view_shows_conflicts_and_hides_only_failures_a_later_build_repaired(tmp_path):
    add_entries(tmp_path / "db", 0, 2)  # SM-Q00000-F1 and SM-Q00001-F1, written by BUILD_ID
    layout = DatabaseLayout(tmp_path / "db")
    # an earlier build failed Q00000 (repaired since: hidden); a later one was refused as a conflict (shown)
    _ledger(layout, EARLIER, [_failure("SM-Q00000-F1", FailureReason.WORKER_FAILED, Stage.PREDICT)])
    conflict = _failure("SM-Q00001-F1", FailureReason.CONFLICTS_WITH_DATABASE, Stage.INGEST, "Q00001")
    _ledger(layout, LATER, [conflict])
    catalog.refresh_catalog(layout)
    shown = _failures(layout)
    assert ("conflicts_with_database", "SM-Q00001-F1", "Q00001", "/in/in.fasta", LATER) in shown
    assert not any(row[1] == "SM-Q00000-F1" for row in shown)
    assert ("invalid_character", "", "", "in.fasta", BUILD_ID) in shown  # add_entries' own ingest failure


def test_failures_of_two_inputs_with_one_name_never_merge(tmp_path):
    """7 failures counted, 4 shown: two inputs named in.fasta in two folders were one in the ledger."""
    inputs = []
    for folder, bad in (("a", 4), ("b", 3)):
        (tmp_path / folder).mkdir()
        inputs.append(tmp_path / folder / "in.fasta")
        inputs[-1].write_text("".join(f">bad{n}\nMK{n}\n" for n in range(bad)))
    result = ingest(inputs, IngestSettings(), "model")
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    _ledger(layout, LATER, list(result.failures))
    catalog.refresh_catalog(layout)
    shown = catalog.query(layout, "SELECT sourceFile, count(*) AS n FROM failures GROUP BY ALL ORDER BY ALL")
    assert shown.to_pylist() == [{"sourceFile": str(inputs[0]), "n": 4}, {"sourceFile": str(inputs[1]), "n": 3}]


def test_failures_written_before_uniprot_accession_existed_still_read_and_compact(tmp_path):
    """A database of an older structome: its failures files (and schema file) have no uniprotAccession column."""
    add_entries(tmp_path / "db", 0, 4)
    layout = DatabaseLayout(tmp_path / "db")
    old_files = [layout.schema_file("failures"), *layout.table_files("failures")]
    for relative in old_files:
        table = pq.read_table(layout.path(relative))
        pq.write_table(table.drop_columns(["uniprotAccession"]), layout.path(relative))
    _ledger(layout, LATER, [_failure("", FailureReason.INVALID_CHARACTER, Stage.INGEST, "P12345")])
    catalog.refresh_catalog(layout)
    expected = [
        ("invalid_character", "", None, "in.fasta", BUILD_ID),
        ("invalid_character", "", "P12345", "/in/in.fasta", LATER),
    ]
    assert _failures(layout) == expected
    with layout.compaction_lock():
        report = compact(layout, CompactionPolicy(grace_s=0))
    assert report.segments_written == 1
    assert _failures(layout) == expected
