"""Damage: how a table file or archive is checked, and what is recorded at commit time to check it against.

Two depths of checking:

- quick (`parquet_problem`): the file exists and has Parquet's magic at both ends and a footer length that fits
  (one open and two small reads). Every listing of the visible files runs it (storage.layout.visible_parts), so a
  missing, truncated or garbage shard or segment part is left out of every query with a warning instead of making
  every query fail with DuckDB's raw error.
- deep (`storage.verify`): the footer parsed, row counts and SHA-256 against what was recorded, every archive
  member against its recorded offset, length and SHA-256.

What is recorded: a committed shard's folder holds `checksums.json` (SHARD_CHECKSUMS: size, rows and SHA-256 of
each of its files, written before the commit so it appears with them); a compacted segment's parts carry their
rows, size and SHA-256 in the table manifest (storage.segments.SegmentFile). Shards and segments written before
these records existed are checked as far as what is recorded allows (footers, the files table's offsets).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from structome.storage.formats import FormatError, NewerFormatError, check_format, format_tag

if TYPE_CHECKING:
    import pyarrow.fs as pafs

SHARD_CHECKSUMS = "checksums.json"  # in a shard's folder
CHECKSUMS_VERSION = 1
_MAGIC = b"PAR1"
_CHUNK = 8 << 20


class DamagedDatabaseError(FormatError):
    """Files of the database are damaged: a build refuses to run on it until `structome verify --repair`."""


@dataclass(frozen=True)
class Damage:
    """One damaged file: where (relative to the database), what is wrong, and the unit it takes out of view."""

    file: str
    problem: str
    shard: str | None = None  # the shard whose files these are
    segment: str | None = None  # or the compacted segment

    @property
    def unit(self) -> str:
        if self.shard is not None:
            return f"shard {self.shard}"
        return f"segment {self.segment}" if self.segment is not None else "file"

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} ({self.unit})"


@dataclass(frozen=True)
class FileDigest:
    """What is recorded of one written file."""

    size: int  # bytes
    sha256: str
    rows: int | None = None  # a Parquet file's row count

    def to_json(self) -> dict:
        return {"size": self.size, "sha256": self.sha256, **({"rows": self.rows} if self.rows is not None else {})}

    @classmethod
    def from_json(cls, item: dict) -> FileDigest:
        rows = item.get("rows")
        return cls(int(item["size"]), str(item["sha256"]), None if rows is None else int(rows))


def digest_file(fs: pafs.FileSystem, path: str, *, parquet: bool) -> FileDigest:
    """Size, SHA-256 (and, for Parquet, the row count from the footer) of a file as it is now."""
    digest, size = hashlib.sha256(), 0
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    rows = None
    if parquet:
        import pyarrow.parquet as pq

        with fs.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    return FileDigest(size, digest.hexdigest(), rows)


def write_shard_checksums(fs: pafs.FileSystem, folder: str, names: Iterable[str]) -> None:
    """Record the digests of a shard's files in its private folder, before the commit makes them visible."""
    files = {name: digest_file(fs, f"{folder}/{name}", parquet=name.endswith(".parquet")).to_json() for name in names}
    document = {"format": format_tag("checksums", CHECKSUMS_VERSION), "files": files}
    with fs.open_output_stream(f"{folder}/{SHARD_CHECKSUMS}") as stream:
        stream.write(json.dumps(document, indent=1).encode() + b"\n")


def parse_shard_checksums(data: bytes, where: str) -> dict[str, FileDigest]:
    """file name -> its recorded digest; FormatError when the record itself is damaged."""
    try:
        document = json.loads(data)
        check_format(document, "checksums", CHECKSUMS_VERSION, where)
        return {name: FileDigest.from_json(item) for name, item in document["files"].items()}
    except NewerFormatError:  # a ValueError too: not corrupt, only newer
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        # AttributeError: valid JSON of another shape (a list, a string; "files" not an object) has no .get/.items
        raise FormatError(f"{where} is corrupt ({error!r})") from error


def parquet_problem(fs: pafs.FileSystem | None, path: str, expected_size: int | None = None) -> str | None:
    """What is wrong with a Parquet file at a glance (missing, empty, truncated, not Parquet); None if it looks whole.

    One open and two small reads: cheap enough for every listing of the visible files. A file whose both ends are
    intact but whose inside is damaged passes; `structome verify` finds it (footer, rows, checksums). `fs` None: a
    local path, read with os (every `structome get` and `sql` checks the catalog's files so, without pyarrow)."""
    try:
        if fs is None:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(descriptor).st_size
                head, tail = os.pread(descriptor, 4, 0), os.pread(descriptor, 8, max(size - 8, 0))
            finally:
                os.close(descriptor)
        else:
            with fs.open_input_file(path) as handle:
                size = handle.size()
                head, tail = (handle.read_at(4, 0), handle.read_at(8, size - 8)) if size >= 12 else (b"", b"")
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error})"
    if expected_size is not None and size != expected_size:
        return f"{size} bytes, {expected_size} recorded (truncated or rewritten)"
    if size < 12:
        return f"truncated or not Parquet ({size} bytes)"
    if head != _MAGIC or tail[4:] != _MAGIC:
        return "truncated or not Parquet (no Parquet magic at its start or end)"
    (footer,) = struct.unpack("<I", tail[:4])
    if footer + 12 > size:
        return f"truncated (its footer claims {footer} bytes of {size})"
    return None


def footer_problem(fs: pafs.FileSystem, path: str, recorded: FileDigest | None) -> str | None:
    """The deep check of a Parquet file: readable footer, recorded rows and checksum; None when it holds."""
    quick = parquet_problem(fs, path, recorded.size if recorded else None)
    if quick is not None:
        return quick
    import pyarrow.parquet as pq

    try:
        with fs.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    except (OSError, ValueError) as error:  # pyarrow: ArrowInvalid (a ValueError) for a damaged footer
        return f"footer unreadable ({error})"
    return recorded_problem(fs, path, recorded, rows)


def recorded_problem(fs: pafs.FileSystem, path: str, recorded: FileDigest | None, rows: int | None) -> str | None:
    """Rows and SHA-256 against what was recorded (nothing to compare: None)."""
    if recorded is None:
        return None
    if recorded.rows is not None and rows is not None and rows != recorded.rows:
        return f"{rows} rows, {recorded.rows} recorded"
    actual = digest_file(fs, path, parquet=False)
    if actual.size != recorded.size:
        return f"{actual.size} bytes, {recorded.size} recorded"
    if actual.sha256 != recorded.sha256:
        return "checksum mismatch (SHA-256 differs from the one recorded at commit)"
    return None
