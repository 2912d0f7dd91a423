"""The server's lookups: AFDB API records, file lookups and search as point queries on the views."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
from pathlib import Path

import duckdb
import pytest
from fake_database import index_tables

from structome.storage import schema
from structome.storage.afdb_json import entry_file_names
from structome.storage.archive import FILE_COLUMNS, FileLocation
from structome.storage.entry_index import (
    ENTRY_COLUMNS,
    SEARCH_COUNT_CAP,
    DerivedFile,
    EntryIndex,
    LruCache,
    visible_state,
)


def record(accession: str, fragment: int = 1, **fields) -> dict:
    values = {column: None for column in ENTRY_COLUMNS}
    values.update(
        entryId=f"SM-{accession}-F{fragment}",
        uniprotAccession=accession,
        fragment=fragment,
        uniprotStart=1,
        uniprotEnd=4,
        uniprotSequence="MKVL",
        latestVersion=1,
        modelCreatedDate=dt.date(2026, 11, 25),
        globalMetricValue=71.234567,
        ptm=0.51234,
    )
    values.update(fields)
    return values


def location(entry_id: str, kind: str, suffix: str) -> FileLocation:
    return FileLocation(
        entry_id,
        kind,
        entry_id + suffix,
        "shards/a/archive.tar",
        entry_id + suffix + ".gz",
        512,
        100,
        "gzip",
        300,
        "ab" * 32,
    )


_FOLDER = tempfile.TemporaryDirectory(prefix="entry-index-")  # the tables' files, until the tests end


def index_of(records: list[dict], files: list[FileLocation], **options) -> EntryIndex:
    """An index over files of tables `entries` and `files` (the storage schema) holding these rows."""
    return EntryIndex(*index_tables(Path(tempfile.mkdtemp(dir=_FOLDER.name)), records, files), **options)


def test_search_ranks_exact_accession_gene_or_name_first_and_counts_all():
    index = index_of(
        [
            record("P00001", uniprotDescription="binds abcA partners", gene="zzz"),
            record("P00002", gene="abcA", uniprotId="ABCA_ECOLI"),
            record("P00003", organismScientificName="Escherichia coli"),
        ],
        [],
    )
    found = index.search("ABCA")
    assert found.total == 2 and [r["uniprotAccession"] for r in found.records] == ["P00002", "P00001"]
    assert found.counted_all and found.scanned_all
    assert index.search("coli").total == 2 and index.search("  ").total == 0 and index.search("nothing").total == 0
    assert [r["uniprotAccession"] for r in index.search("p0000", limit=2).records] == ["P00001", "P00002"]
    assert index.search("sm-p00003-f1").records[0]["uniprotAccession"] == "P00003"


def test_search_puts_exact_then_prefix_then_substring_matches_and_shows_whole_lengths():
    index = index_of(
        [
            record("Q1A000", gene="x"),  # its accession starts with the text
            record("P9", gene="q1a"),  # exact gene match
            record("A5", uniprotDescription="like Q1A000"),  # substring of the description
            record("Q1A", 1, uniprotEnd=1400, uniprotSequence="M" * 1600),  # exact accession, two fragments
            record("Q1A", 2, uniprotStart=201, uniprotEnd=1600, uniprotSequence="M" * 1600),
        ],
        [],
    )
    found = index.search("q1a")
    assert [r["uniprotAccession"] for r in found.records] == ["Q1A", "P9", "Q1A000", "A5"] and found.total == 4
    whole = found.records[0]
    assert (whole["entryId"], whole["sequenceLength"], whole["globalMetricValue"]) == ("SM-Q1A-F1", 1600, 71.23)


def test_search_counts_up_to_the_cap_and_says_so():
    records = [record(f"P{i:06d}", organismScientificName="Homo sapiens") for i in range(SEARCH_COUNT_CAP + 5)]
    index = index_of(records, [])
    found = index.search("sapiens", limit=3)
    assert not found.counted_all and found.scanned_all and found.total == SEARCH_COUNT_CAP + 1
    assert [r["uniprotAccession"] for r in found.records] == ["P000000", "P000001", "P000002"]
    assert index.search("P00100").counted_all  # P001000..P001004, and the prefix P00100x: 5 + ...
    assert index.search("P001004").total == 1


def test_a_search_that_runs_out_of_time_keeps_its_key_matches_and_says_so(tmp_path):
    connection, tables = index_tables(tmp_path, [], [])
    columns = {c: "NULL" for c in schema.ENTRIES.names}
    columns.update(
        entryId="'SM-P' || lpad(i::VARCHAR, 7, '0') || '-F1'",
        uniprotAccession="'P' || lpad(i::VARCHAR, 7, '0')",
        gene="'gene' || i",
        uniprotDescription="'protein number ' || i",
        fragment="1",
        uniprotEnd="4",
    )
    select = ", ".join(f"{value} AS {name}" for name, value in columns.items())
    connection.execute("DROP VIEW entries")  # search reads this table; lookups read the (empty) files
    connection.execute(f"CREATE TABLE entries AS SELECT {select} FROM range(1000000) r(i)")
    index = EntryIndex(connection, tables)
    index.search_budget_s = 0.005  # the scan of 1M rows takes longer
    found = index.search("p000001")
    assert not found.scanned_all and not found.counted_all
    assert [r["uniprotAccession"] for r in found.records][:3] == ["P0000010", "P0000011", "P0000012"]
    assert found.total == 10  # P0000010..P0000019, by their accessions' prefix
    index.search_budget_s = 30.0
    assert index.search("number 999999").scanned_all  # the cursor works again after the interrupt


def test_records_fragments_urls_and_derived_files():
    files = [
        location("SM-P1-F2", "pae", "-predicted_aligned_error_v1.json"),
        location("SM-P1-F2", "cif", "-model_v1.cif"),
        location("SM-P10-F1", "cif", "-model_v1.cif"),  # in the entryId range of P1's fragments, not P1's
    ]
    index = index_of([record("P1", 2, uniprotStart=2, uniprotEnd=3), record("P1", 1), record("P10")], files)
    first, second = json.loads(index.prediction_json("P1"))
    assert (first["entryId"], second["entryId"]) == ("SM-P1-F1", "SM-P1-F2")  # fragment order
    assert second["sequence"] == "KV" and (second["sequenceStart"], second["sequenceEnd"]) == (2, 3)
    assert second["cifUrl"] == "/files/SM-P1-F2-model_v1.cif" and second["pdbUrl"] == "/files/SM-P1-F2-model_v1.pdb"
    assert second["paeImageUrl"] == "/files/SM-P1-F2-predicted_aligned_error_v1.png" and "cifUrl" not in first
    assert list(second)[-4:] == ["cifUrl", "pdbUrl", "paeDocUrl", "paeImageUrl"]  # the written order, always
    assert first["globalMetricValue"] == 71.23 and first["ptm"] == 0.512 and first["modelCreatedDate"] == "2026-11-25"
    assert index.prediction_json("SM-P1-F2") == index.prediction_json("P1") and index.prediction_json("P9") is None
    assert index.derived_file("SM-P1-F2-model_v1.pdb") == DerivedFile(files[1], ".pdb") and len(index) == 3
    assert index.stored_file("SM-P1-F2-model_v1.cif") == files[1] and index.stored_file("SM-P1-F2-model_v2.cif") is None
    assert index.derived_file("SM-P1-F2-predicted_aligned_error_v1.png").source == files[0]
    assert index.derived_file("SM-P1-F2-predicted_aligned_error_v1.pdb") is None  # no PDB from a PAE file
    assert index.stored_file("../../etc/passwd") is None and index.derived_file("x.png") is None


def test_an_api_answer_reads_only_the_files_columns_its_urls_show_and_a_download_the_whole_row(monkeypatch):
    from structome.storage import key_index

    names = entry_file_names("SM-P1-F1", 1)
    files = [location("SM-P1-F1", kind, name.removeprefix("SM-P1-F1")) for kind, name in names.items()]
    index = index_of([record("P1")], files, cache_bytes=0)
    asked: list[tuple[str, tuple[str, ...]]] = []
    original = key_index.SortedTable.rows
    monkeypatch.setattr(
        key_index.SortedTable,
        "rows",
        lambda self, key, low, high=None, columns=(): (
            asked.append((key, tuple(columns))) or original(self, key, low, high, columns)
        ),
    )
    [answer] = index.predictions("P1")
    assert asked[-1] == ("entryId", ("entryId", "kind", "fileName"))
    assert {field: answer[field] for field in ("cifUrl", "pdbUrl", "paeDocUrl", "paeImageUrl", "plddtDocUrl")} == {
        "cifUrl": "/files/SM-P1-F1-model_v1.cif",
        "pdbUrl": "/files/SM-P1-F1-model_v1.pdb",
        "paeDocUrl": "/files/SM-P1-F1-predicted_aligned_error_v1.json",
        "paeImageUrl": "/files/SM-P1-F1-predicted_aligned_error_v1.png",
        "plddtDocUrl": "/files/SM-P1-F1-confidence_v1.json",
    }
    assert index.stored_file(names["cif"]) == files[0] and asked[-1] == ("entryId", FILE_COLUMNS)


def test_accessions_and_entry_ids_are_found_in_any_case():
    index = index_of([record("P1", 1), record("P1", 2, uniprotStart=2, uniprotEnd=3)], [])
    assert index.prediction_json("p1") == index.prediction_json("P1") is not None
    assert index.predictions("sm-p1-f2") == index.predictions("SM-P1-F2") != []
    assert index.prediction_json("q1") is None


def test_every_stored_file_name_gives_its_entry_id():
    names = entry_file_names("AF-Q8-2-F12", 4)
    files = [location("AF-Q8-2-F12", kind, name.removeprefix("AF-Q8-2-F12")) for kind, name in names.items()]
    index = index_of([record("Q8-2", 12, entryId="AF-Q8-2-F12")], files)
    assert [index.stored_file(name) for name in names.values()] == files


def test_the_api_answer_is_byte_for_byte_the_json_of_the_records():
    index = index_of(
        [record("P1", gene="g", uniprotDescription='a "quoted" é')], [location("SM-P1-F1", "cif", "-model_v1.cif")]
    )
    answer = index.prediction_json("P1")
    assert answer == json.dumps(json.loads(answer)).encode()
    assert answer.startswith(
        b'[{"entryId": "SM-P1-F1", "gene": "g", "sequenceChecksum": null, "uniprotAccession": "P1"'
    )
    assert b'"uniprotDescription": "a \\"quoted\\" \\u00e9"' in answer


def test_concurrent_lookups_from_many_threads_each_get_their_own_answer():
    records = [record(f"P{i:04d}", gene=f"g{i}") for i in range(200)]
    files = [location(f"SM-P{i:04d}-F1", "cif", "-model_v1.cif") for i in range(200)]
    index = index_of(records, files, cache_bytes=0)  # no cache: every call queries
    failures: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(3):
            for i in range(offset, 200, 8):
                answer = json.loads(index.prediction_json(f"P{i:04d}"))
                if answer[0]["gene"] != f"g{i}" or index.stored_file(f"SM-P{i:04d}-F1-model_v1.cif") != files[i]:
                    failures.append(f"P{i:04d} round {round_}")
        if index.search(f"P{offset:04d}").records[0]["gene"] != f"g{offset}":
            failures.append(f"search P{offset:04d}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(index._cursors) == 8  # one cursor per thread, for its search only
    index.close()


def test_the_cache_is_bounded_and_keeps_the_recently_used():
    cache = LruCache(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    cache.get("a")
    cache.put("c", b"1234")  # 12 > 10: the least recently used ("b") goes
    assert cache.get("b") is not cache.get("a") and len(cache) == 2 and cache.get("c") == b"1234"
    cache.put("huge", b"x" * 11)  # more than the whole cache: not kept
    assert len(cache) == 2


def test_a_reloaded_index_answers_from_the_new_state_not_the_old_cache(tmp_path):
    from fake_database import entry, random_prediction, write_database

    from structome.models.types import PredictionRequest

    first = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    layout = write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [first])
    state = visible_state(layout)
    old = EntryIndex.load(layout)
    assert old.prediction_json("P2") is None and old.prediction_json("P1") is not None  # both cached now
    second = random_prediction(PredictionRequest("p-b", "MKKLLAW"), 1)
    write_database(tmp_path / "db", [entry("SM-P2-F1", "P2", "MKKLLAW", "p-b")], [second])  # refreshes the catalog
    assert visible_state(layout) != state
    assert old.prediction_json("P2") is None  # the old snapshot's cache still answers as it did
    new = EntryIndex.load(layout)
    assert json.loads(new.prediction_json("P2"))[0]["entryId"] == "SM-P2-F1" and len(new) == 2
    assert new.stored_file("SM-P2-F1-model_v1.cif") is not None and new.search("p2").total == 1
    assert visible_state(layout) == visible_state(layout)  # nothing changed: no reload
    old.close()
    new.close()


def test_an_index_over_the_catalog_views_reads_relative_paths_from_every_thread(tmp_path):
    from fake_database import entry, random_prediction, write_database

    from structome.models.types import PredictionRequest

    prediction = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    layout = write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [prediction])
    index = EntryIndex.load(layout)
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(index.stored_file("SM-P1-F1-model_v1.cif")))
    thread.start()
    thread.join()
    assert answers[0] is not None and answers[0].entry_id == "SM-P1-F1"
    with pytest.raises(duckdb.CatalogException):
        duckdb.connect().execute("SELECT * FROM entries")  # the views live in the index's own database only


def test_lookups_read_only_the_row_groups_that_hold_the_key_and_run_no_sql(monkeypatch):
    from structome.storage import key_index

    records = [record(f"P{i:04d}", gene=f"g{i}") for i in range(100)]
    records += [record("P0050", fragment=2, gene="g50b")]  # a second fragment: the same accession, the next group
    files = [location(f"SM-P{i:04d}-F1", kind, suffix) for i in range(100) for kind, suffix in (("cif", ".cif"),)]
    index = index_of(records, files, cache_bytes=0)
    read: list[int] = []
    original = key_index.SortedTable._read
    monkeypatch.setattr(
        key_index.SortedTable,
        "_read",
        lambda self, file, group, *a: read.append(group) or original(self, file, group, *a),
    )
    answer = index.predictions("P0050")
    assert [r["entryId"] for r in answer] == ["SM-P0050-F1", "SM-P0050-F2"] and answer[1]["gene"] == "g50b"
    assert len(read) <= 4  # the entries group(s) of P0050 and the files group(s) of its entry range, of 51 + 50
    assert index.stored_file("SM-P0099-F1.cif") is None  # not a stored file name: no read at all
    assert index.prediction_json("P9999") is None and index._cursors == []  # no SQL for lookups
    index.close()


def test_a_file_without_a_column_reads_it_as_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    from structome.storage.key_index import SortedTable

    pq.write_table(
        pa.table({"entryId": ["a", "b", "c"], "gene": ["x", "y", "z"]}), tmp_path / "old.parquet", row_group_size=1
    )
    pq.write_table(pa.table({"entryId": ["b"], "gene": ["w"], "ptm": [0.5]}), tmp_path / "new.parquet")
    table = SortedTable(
        fs.LocalFileSystem(), [str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")], ["entryId"]
    )
    assert table.rows("entryId", "b", columns=["gene", "ptm"]) == [
        {"gene": "y", "ptm": None},
        {"gene": "w", "ptm": 0.5},
    ]
    assert table.rows("entryId", "a", "b", ["entryId"]) == [{"entryId": "a"}, {"entryId": "b"}, {"entryId": "b"}]
    assert table.rows("entryId", "d", columns=["gene"]) == [] and table.num_rows == 4 and table.row_groups == 4


def test_lookups_import_no_pandas(tmp_path):
    """A server's first lookup must not pay for pandas (pyarrow.compute imports it on first use)."""
    import subprocess
    import sys

    from fake_database import entry, random_prediction, write_database

    from structome.models.types import PredictionRequest

    prediction = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [prediction])
    code = (
        "import sys; from structome.storage.entry_index import EntryIndex; from structome.storage.layout import "
        f"DatabaseLayout; index = EntryIndex.load(DatabaseLayout({str(tmp_path / 'db')!r})); "
        "assert index.predictions('P1') and index.stored_file('SM-P1-F1-model_v1.cif'); "
        "print(sorted(m for m in ('pandas', 'torch', 'ray', 'transformers') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
