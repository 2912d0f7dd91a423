"""Per-shard tar archives whose members' byte offsets are recorded, so one file is one ranged read.

Members are stored gzip-compressed (`<name>.gz`, like AlphaFold DB's bulk archives); `tar -xf` works on
them as on any tar file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, BinaryIO, Self, TypeVar

from structome.models.types import FileKind

GZIP_LEVEL = 6
ENCODINGS = {"gzip": ".gz", "identity": ""}  # stored encoding -> suffix of the member name
StoredBytes = TypeVar("StoredBytes", bytes, memoryview)  # a member read alone, or a view into a coalesced read


@dataclass(frozen=True, slots=True)
class FileLocation:
    """Where one stored file's bytes lie: `length` bytes of `archive` at `offset`; a row of the files table."""

    entry_id: str
    kind: FileKind  # a plain string is converted (an unknown kind raises ValueError)
    file_name: str  # logical AFDB-style name, e.g. SM-P12345-F1-model_v1.cif
    archive: str  # path relative to the database folder
    member: str  # name inside the tar (file_name + .gz when gzip)
    offset: int  # byte offset of the stored bytes in the archive
    length: int  # stored byte count
    encoding: str  # gzip or identity
    size: int  # decoded byte count
    sha256: str  # of the stored bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FileKind(self.kind))
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{self.file_name}: unknown stored encoding {self.encoding!r}")
        if self.offset < 0 or self.length < 0:
            raise ValueError(f"{self.file_name}: negative offset or length")

    @classmethod
    def from_row(cls, row: Mapping, **extra: Any) -> Self:
        """From a files-table row keyed by column name (e.g. a pyarrow `to_pylist` item); EXTRA: a subclass's fields."""
        return cls(*(row[column] for column in FILE_COLUMNS), **extra)

    def row(self) -> dict:
        """The files-table row."""
        return {column: getattr(self, name) for column, name in zip(FILE_COLUMNS, FILE_FIELDS, strict=True)}


FILE_FIELDS = tuple(field.name for field in fields(FileLocation))
# The files table's columns (storage.schema.FILES, in this order: tests/storage/test_archive.py), named here from
# FileLocation's fields so that reading one file's location never imports pyarrow for the schema.
FILE_COLUMNS = tuple(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name) for name in FILE_FIELDS)


def file_columns_sql(table: str = "") -> str:
    """The files columns as a SELECT list, e.g. `f.entryId, f.kind, ...` for table `f`."""
    prefix = f"{table}." if table else ""
    return ", ".join(f'{prefix}"{column}"' for column in FILE_COLUMNS)


class ArchiveWriter:
    """Appends files to a new tar archive and records each member's offset and checksum."""

    def __init__(self, stream: BinaryIO, *, archive: str, mtime: float):
        """`stream`: a writable file object positioned at 0 (closed by the caller); `archive`: its path relative
        to the database folder, as recorded in every FileLocation."""
        self._archive = archive
        self._mtime = int(mtime)
        self._tar = tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, entry_id: str, kind: FileKind, file_name: str, data: bytes, *, compress: bool = True) -> FileLocation:
        encoding = "gzip" if compress else "identity"
        stored = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if compress else data
        info = tarfile.TarInfo(file_name + ENCODINGS[encoding])
        info.size = len(stored)
        info.mtime = self._mtime
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(stored))
        # The data ends the member, padded to whole 512-byte blocks (whatever header size PAX needed).
        padded = -(-len(stored) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return FileLocation(
            entry_id=entry_id,
            kind=kind,
            file_name=file_name,
            archive=self._archive,
            member=info.name,
            offset=self._tar.offset - padded,
            length=len(stored),
            encoding=encoding,
            size=len(data),
            sha256=hashlib.sha256(stored).hexdigest(),
        )

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArchiveChecksumError(IOError):
    """The bytes read from an archive do not match the recorded checksum."""


def verify_stored(data: StoredBytes, where: str, offset: int, length: int, sha256: str | None = None) -> StoredBytes:
    """A member's stored bytes as read, checked against the recorded length and checksum."""
    if len(data) != length:
        raise ArchiveChecksumError(f"{where}: short read at {offset} ({len(data)} of {length} bytes)")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArchiveChecksumError(f"{where}: checksum mismatch for bytes {offset}..{offset + length}")
    return data


def decode(data: bytes, encoding: str) -> bytes:
    return gzip.decompress(data) if encoding == "gzip" else data
