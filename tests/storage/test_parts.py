"""Segment parts: the part writer's files, their Bloom filters as DuckDB and the server's lookups read them."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from structome.storage import parts, schema
from structome.storage.key_index import SortedTable, _matching_rows, may_contain


def entries_rows(accessions: list[str]) -> pa.Table:
    columns = {field.name: pa.nulls(len(accessions), field.type) for field in schema.ENTRIES}
    columns["entryId"] = pa.array([f"SM-{a}-F1" for a in accessions])
    columns["uniprotAccession"] = pa.array(accessions)
    return pa.table(columns, schema=schema.ENTRIES)


@pytest.fixture
def written(tmp_path, monkeypatch):
    """2,000 sorted entries through a PartWriter with groups of 256 rows and 3 groups per part, fed in odd-sized
    batches: 3 parts (768, 768, 464 rows)."""
    monkeypatch.setitem(parts.ROW_GROUP_ROWS, "entries", 256)
    monkeypatch.setattr(parts, "ROW_GROUPS_PER_PART", 3)
    accessions = sorted(f"P{n:05d}" for n in random.Random(3).sample(range(10**5), 2000))
    writer = parts.PartWriter("entries", lambda number: tmp_path / f"part-{number}.parquet")
    rows = entries_rows(accessions)
    for start in range(0, len(rows), 333):
        writer.write(rows.slice(start, 333))
    return writer.close(), accessions, writer.rows


def test_parts_hold_whole_row_groups_in_key_order_with_their_ranges(written):
    files, accessions, rows = written
    assert rows == 2000 and len(files) == 3
    groups = [pq.ParquetFile(path).metadata.num_row_groups for path, _ in files]
    assert groups == [3, 3, 2]
    read = [a for path, _ in files for a in pq.read_table(path).column("uniprotAccession").to_pylist()]
    assert read == accessions
    first, last = pq.read_table(files[1][0]).column("entryId").to_pylist()[::767]
    assert files[1][1]["entryId"] == (first, last)


def test_bloom_filters_never_miss_a_key_and_agree_with_duckdb(written):
    files, accessions, _ = written
    absent = [f"Q{n:05d}" for n in range(300)]
    for path, _ in files:
        metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.names.index("uniprotAccession")
        data = path.read_bytes()

        def read(offset, length, data=data):
            return data[offset : offset + length]

        table = pq.read_table(path, columns=["uniprotAccession"]).column("uniprotAccession").to_pylist()
        start = 0
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(column)
            held = table[start : start + metadata.row_group(group).num_rows]
            start += len(held)
            assert all(may_contain(read, chunk, key) for key in held)  # no false negatives
            ruled_out = [key for key in absent if not may_contain(read, chunk, key)]
            assert len(ruled_out) >= 0.9 * len(absent)  # fpp 0.01 in the writer
            for key in (held[0], *absent[:20]):  # DuckDB reads the same filters the same way
                [(excluded,)] = duckdb.execute(
                    "SELECT bloom_filter_excludes FROM parquet_bloom_probe(?, 'uniprotAccession', ?) "
                    "WHERE row_group_id = ?",
                    [str(path), key, group],
                ).fetchall()
                assert excluded == (not may_contain(read, chunk, key))


def test_a_lookup_finds_exactly_the_rows_of_a_key(written):
    files, accessions, _ = written
    table = SortedTable(pafs.LocalFileSystem(), [str(path) for path, _ in files], ("entryId", "uniprotAccession"))
    for accession in (accessions[0], accessions[1000], accessions[-1]):
        assert [r["entryId"] for r in table.rows("uniprotAccession", accession, columns=("entryId",))] == [
            f"SM-{accession}-F1"
        ]
    assert table.rows("uniprotAccession", "Q00001", columns=("entryId",)) == []
    low, high = accessions[10], accessions[20]
    assert [r["uniprotAccession"] for r in table.rows("uniprotAccession", low, high, ("uniprotAccession",))] == (
        accessions[10:21]
    )


def test_an_equality_match_is_a_whole_value_not_a_substring():
    keys = pa.chunked_array([pa.array(["A1", "A12", None, "XA1", "A1"]), pa.array(["BA1A1", "A1"])])
    assert _matching_rows(keys, "A1", "A1") == [0, 4, 6]
    assert _matching_rows(keys.slice(1), "A1", "A1") == [3, 5]  # a sliced chunk keeps its offsets
    assert _matching_rows(keys, "A", "A2") == [0, 1, 4, 6]


def test_a_key_the_bloom_filter_holds_is_read_in_one_pass_and_a_range_reads_its_key_first(written, monkeypatch):
    files, accessions, _ = written
    table = SortedTable(pafs.LocalFileSystem(), [str(path) for path, _ in files], ("entryId", "uniprotAccession"))
    reads: list[tuple[int, list[str]]] = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_group",
        lambda self, group, columns=None, **options: (
            reads.append((group, columns)) or original(self, group, columns, **options)
        ),
    )
    accession = accessions[1000]  # part 1 (rows 768-1535 of the sorted 2,000), its group 0
    assert table.rows("uniprotAccession", accession, columns=("entryId", "gene", "uniprotAccession")) == [
        {"uniprotAccession": accession, "entryId": f"SM-{accession}-F1", "gene": None}
    ]
    assert reads == [(0, ["uniprotAccession", "entryId", "gene"])]  # the key and the columns at once, each once
    reads.clear()
    assert table.rows("uniprotAccession", "Q00001", columns=("entryId",)) == [] and reads == []  # filters say no
    low, high = accessions[250], accessions[260]  # a range across groups 0 and 1 of part 0: no Bloom filter
    found = table.rows("uniprotAccession", low, high, ("entryId",))
    assert [r["entryId"] for r in found] == [f"SM-{a}-F1" for a in accessions[250:261]]
    assert reads == [(0, ["uniprotAccession"]), (0, ["entryId"]), (1, ["uniprotAccession"]), (1, ["entryId"])]


def test_rows_of_a_key_held_apart_in_one_group_come_in_group_order(tmp_path):
    path = tmp_path / "blooms.parquet"
    rows = pa.table(
        {"entryId": ["a", "b", "a", "c", "a"], "gene": ["g1", "g2", "g3", "g4", "g5"], "n": [1, 2, 3, 4, 5]}
    )
    pq.write_table(rows, path, bloom_filter_options={"entryId": {"ndv": 8, "fpp": 0.01}})
    table = SortedTable(pafs.LocalFileSystem(), [str(path)], ("entryId",))
    assert table.rows("entryId", "a", columns=("n", "gene")) == [
        {"n": 1, "gene": "g1"},
        {"n": 3, "gene": "g3"},
        {"n": 5, "gene": "g5"},
    ]
    assert table.rows("entryId", "b", "c", ("entryId", "n")) == [{"entryId": "b", "n": 2}, {"entryId": "c", "n": 4}]
