"""Shard archives: recorded offsets give one ranged read; the archive is a plain tar."""

from __future__ import annotations

import gzip
import tarfile

import pytest

from structome.models.types import FileKind
from structome.storage import schema
from structome.storage.archive import (
    FILE_COLUMNS,
    ArchiveChecksumError,
    ArchiveWriter,
    FileLocation,
    decode,
    verify_stored,
)
from structome.storage.rows import files_table


def write_archive(path, add):
    with open(path, "wb") as stream, ArchiveWriter(stream, archive="archive.tar", mtime=0) as archive:
        return add(archive)


def read_stored(path, offset, length, sha256=None):
    with open(path, "rb") as handle:
        handle.seek(offset)
        return verify_stored(handle.read(length), str(path), offset, length, sha256)


def test_members_are_found_by_offset_and_the_archive_is_a_plain_tar(tmp_path):
    path = tmp_path / "archive.tar"
    contents = {f"SM-P{i}-F1-model_v1.cif": (f"data_{i}\n" * (i + 1) * 50).encode() for i in range(5)}
    contents["SM-" + "L" * 140 + "-F1-model_v1.cif"] = b"a name longer than ustar allows needs a PAX header"
    members = write_archive(
        path, lambda archive: [archive.add("SM-P-F1", FileKind.CIF, name, data) for name, data in contents.items()]
    )
    for member in members:
        stored = read_stored(path, member.offset, member.length, member.sha256)
        assert decode(stored, member.encoding) == contents[member.file_name]
        assert member.size == len(contents[member.file_name])
    assert all(m.length < m.size for m in members[:5])  # repetitive text compresses
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names == [name + ".gz" for name in contents]
        first = tar.extractfile(names[0]).read()
        assert gzip.decompress(first) == contents[members[0].file_name]


def test_uncompressed_members_and_a_corrupted_read(tmp_path):
    path = tmp_path / "archive.tar"
    member = write_archive(
        path, lambda archive: archive.add("SM-X-F1", FileKind.PAE, "x.json", b'{"a": 1}', compress=False)
    )
    assert member.encoding == "identity"
    assert read_stored(path, member.offset, member.length, member.sha256) == b'{"a": 1}'
    with pytest.raises(ArchiveChecksumError):
        read_stored(path, member.offset + 1, member.length, member.sha256)
    with pytest.raises(ArchiveChecksumError):
        read_stored(path, path.stat().st_size - 2, 10)


def test_a_location_is_a_files_row_and_round_trips_through_the_table(tmp_path):
    assert FILE_COLUMNS == tuple(schema.FILES.names)  # named from FileLocation's fields, in the schema's order
    path = tmp_path / "archive.tar"
    location = write_archive(path, lambda archive: archive.add("SM-P-F1", "confidence", "c.json", b"{}"))
    assert location.kind is FileKind.CONFIDENCE and location.archive == "archive.tar" and location.member == "c.json.gz"
    row = files_table([location]).to_pylist()[0]
    assert row["kind"] == "confidence" and row["fileName"] == "c.json" and row["offset"] == location.offset
    assert FileLocation.from_row(row) == location
    with pytest.raises(ValueError):
        FileLocation.from_row({**row, "kind": "pdb"})
    with pytest.raises(ValueError):
        FileLocation.from_row({**row, "encoding": "zstd"})
