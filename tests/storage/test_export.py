"""Bulk export: a real database (local and S3) streamed to a tar and opened again with tarfile."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import tarfile

import pyarrow as pa
import pytest
from fake_database import CREATED, entry, random_prediction, write_database

from structome.models.types import PredictionRequest
from structome.storage import catalog
from structome.storage.archive import ArchiveChecksumError
from structome.storage.export import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    ExportError,
    UnknownEntriesError,
    entry_ids_of,
    export_files,
    stream_tar,
)
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import FILE_KINDS, read_entry_file

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQ"
ENTRY_IDS = [f"SM-Q{n}-F1" for n in range(7)]


def build_database(location) -> DatabaseLayout:
    """Seven entries of different lengths in three shards (sharing one prediction, like deduplicated inputs)."""
    entries = [
        entry(entry_id, entry_id[3:-3], SEQUENCE[: 12 + 6 * n], f"p{min(n, 5)}") for n, entry_id in enumerate(ENTRY_IDS)
    ]
    entries[6] = entry(ENTRY_IDS[6], "Q6", SEQUENCE[:42], "p5")  # the same sequence as Q5
    requests = {e.prediction_id: PredictionRequest(e.prediction_id, e.sequence) for e in entries}
    predictions = [random_prediction(request, seed) for seed, request in enumerate(requests.values())]
    return write_database(location, entries, predictions, shard_size=2)


@pytest.fixture(scope="module")
def local_db(tmp_path_factory) -> DatabaseLayout:
    return build_database(tmp_path_factory.mktemp("export") / "db")


@pytest.fixture(params=["local", "s3"])
def any_db(request, local_db) -> DatabaseLayout:
    return local_db if request.param == "local" else build_database(request.getfixturevalue("s3_database"))


def catalog_files(layout: DatabaseLayout) -> dict[tuple[str, str], dict]:
    rows = catalog.query(layout, "SELECT * FROM files").to_pylist()
    return {(row["entryId"], row["kind"]): row for row in rows}


def open_tar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_the_tar_holds_each_file_exactly_as_stored_in_afdb_bulk_naming(any_db):
    layout = any_db
    wanted = ["SM-Q4-F1", "SM-Q0-F1", "SM-Q6-F1"]
    files = export_files(layout, wanted)
    data = b"".join(stream_tar(layout, files))

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert {member.mtime for member in tar.getmembers()} == {
            int(dt.datetime.combine(CREATED, dt.time(), dt.UTC).timestamp())
        }
        assert all(member.isfile() and member.mode == 0o644 for member in tar.getmembers())
    expected = [
        f"{entry_id}-{suffix}_v1.{ext}.gz"
        for entry_id in sorted(wanted)
        for suffix, ext in (("model", "cif"), ("predicted_aligned_error", "json"), ("confidence", "json"))
    ]
    assert names == [MANIFEST_NAME, *expected]

    members = open_tar(data)
    stored = catalog_files(layout)
    for file in files:
        row = stored[(file.entry_id, file.kind)]
        assert hashlib.sha256(members[file.member_name]).hexdigest() == row["sha256"]
        assert len(members[file.member_name]) == row["length"]
        content = gzip.decompress(members[file.member_name])
        assert len(content) == row["size"]
        if file.kind == "cif":  # each download is a catalog query, ~1 s on the moto server
            assert content == read_entry_file(layout, file.entry_id, file.kind).data

    manifest = json.loads(members[MANIFEST_NAME])
    assert manifest["format"] == MANIFEST_FORMAT and manifest["database"] == layout.location
    assert manifest["entries"] == 3 and manifest["builds"] == ["20261125T000000Z-aaaaaa"]
    assert [f["member"] for f in manifest["files"]] == expected
    for listed in manifest["files"]:
        row = stored[(listed["entryId"], listed["kind"])]
        assert (listed["fileName"], listed["size"], listed["sha256"], listed["encoding"], listed["decodedSize"]) == (
            row["fileName"],
            len(members[listed["member"]]),
            row["sha256"],
            "gzip",
            row["size"],
        )


def test_the_stream_is_the_tar_tarfile_writes_and_is_reproducible(local_db):
    files = export_files(local_db, ENTRY_IDS)
    data = b"".join(stream_tar(local_db, files))
    rewritten = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as source,
        tarfile.open(fileobj=rewritten, mode="w", format=tarfile.PAX_FORMAT) as copy,
    ):
        for member in source.getmembers():
            copy.addfile(member, source.extractfile(member))
    assert rewritten.getvalue() == data
    assert b"".join(stream_tar(local_db, export_files(local_db, list(reversed(ENTRY_IDS))))) == data
    assert len(data) % tarfile.RECORDSIZE == 0


@pytest.mark.parametrize("chunk_bytes", [1, 700, 4096, 1 << 20])
def test_chunks_have_the_requested_size(local_db, chunk_bytes):
    files = export_files(local_db, ENTRY_IDS)
    chunks = list(stream_tar(local_db, files, chunk_bytes=chunk_bytes))
    assert all(len(chunk) == chunk_bytes for chunk in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk_bytes
    assert b"".join(chunks) == b"".join(stream_tar(local_db, files))


def test_nothing_is_read_before_it_is_needed_and_neighbours_share_a_read(local_db, monkeypatch):
    reads = []
    original = DatabaseLayout.read_range

    def counting(self, relative, offset, length):
        reads.append((relative, offset, length))
        return original(self, relative, offset, length)

    monkeypatch.setattr(DatabaseLayout, "read_range", counting)
    files = export_files(local_db, ENTRY_IDS)
    stream = stream_tar(local_db, files, chunk_bytes=512)
    next(stream)  # the manifest's header: no archive read yet
    assert reads == []
    list(stream)
    assert len(reads) <= len(ENTRY_IDS)  # an entry's three files sit side by side: one read each, at most
    assert sum(length for _, _, length in reads) < 2 * sum(f.length for f in files)


def test_selection_kinds_order_and_duplicates(local_db):
    files = export_files(local_db, ["SM-Q3-F1", "SM-Q1-F1", "SM-Q3-F1"], kinds=("confidence", "cif"))
    assert [(f.entry_id, f.kind) for f in files] == [
        ("SM-Q1-F1", "cif"),
        ("SM-Q1-F1", "confidence"),
        ("SM-Q3-F1", "cif"),
        ("SM-Q3-F1", "confidence"),
    ]
    assert files[0].member_name == "SM-Q1-F1-model_v1.cif.gz" and files[0].archive.endswith("archive.tar")
    assert export_files(local_db, []) == []
    with pytest.raises(ExportError):
        export_files(local_db, ENTRY_IDS, kinds=("cif", "png"))


def test_unknown_entry_ids_are_reported_not_dropped(local_db):
    with pytest.raises(UnknownEntriesError) as raised:
        export_files(local_db, ["SM-Q1-F1", "SM-NOPE-F1", None, "Q1"])
    assert raised.value.entry_ids == ["SM-NOPE-F1", None, "Q1"]  # accessions are not entry ids
    assert "3 requested entries" in str(raised.value) and "'SM-NOPE-F1'" in str(raised.value)


def test_an_empty_export_is_a_tar_with_only_the_manifest(local_db):
    members = open_tar(b"".join(stream_tar(local_db, [])))
    assert list(members) == [MANIFEST_NAME] and json.loads(members[MANIFEST_NAME])["files"] == []


def test_a_corrupt_member_stops_the_stream_before_its_bytes(local_db, monkeypatch):
    files = export_files(local_db, ["SM-Q2-F1", "SM-Q5-F1"])
    original = DatabaseLayout.read_range

    def corrupting(self, relative, offset, length):
        data = bytearray(original(self, relative, offset, length))
        if relative == files[3].archive and offset <= files[3].offset < offset + length:
            data[files[3].offset - offset] ^= 1  # one bit of SM-Q5-F1's model file
        return bytes(data)

    monkeypatch.setattr(DatabaseLayout, "read_range", corrupting)
    sent = []
    with pytest.raises(ArchiveChecksumError):
        for chunk in stream_tar(local_db, files, chunk_bytes=512):
            sent.append(chunk)
    names = tarfile.open(fileobj=io.BytesIO(b"".join(sent) + bytes(1024)), mode="r").getnames()
    assert files[3].member_name not in names


def test_entry_ids_of_a_query_result():
    assert entry_ids_of(pa.table({"entryid": ["a", None], "x": [1, 2]})) == ["a", None]
    with pytest.raises(ExportError, match="must return a column named entryId"):
        entry_ids_of(pa.table({"uniprotAccession": ["P1"]}))
    with pytest.raises(ExportError, match="must be text"):
        entry_ids_of(pa.table({"entryId": [1]}))


def test_kinds_default_to_every_file(local_db):
    assert {f.kind for f in export_files(local_db, ["SM-Q0-F1"])} == set(FILE_KINDS)
