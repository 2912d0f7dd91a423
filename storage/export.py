"""Bulk export: the stored files of chosen entries as one streamed tar, in AlphaFold DB's bulk layout.

AlphaFold DB's bulk downloads are flat tar files of gzip-compressed per-entry files
(`AF-P12345-F1-model_v4.cif.gz`, ...). An export is the same: every file goes in exactly as it is stored
(never decompressed or recompressed), a gzip-stored file as `<fileName>.gz`, an identity-stored one as
`<fileName>`. The first member is `manifest.json`, so a streaming consumer knows what follows before it
comes:

    {"format": "structome-export/1",
     "database": "/data/db",                      the database location (object-store URIs without options)
     "builds": ["20261125T000000Z-aaaaaa"],       builds of the exported entries
     "entries": 2,
     "files": [
      {"member": "SM-P1-F1-model_v1.cif.gz", "entryId": "SM-P1-F1", "kind": "cif",
       "fileName": "SM-P1-F1-model_v1.cif", "encoding": "gzip", "size": 4183, "decodedSize": 15877,
       "sha256": "...", "build": "20261125T000000Z-aaaaaa"},
      ...]}

`size` is the member's byte count in the tar and `sha256` the checksum of those bytes (the catalog's
`files.length` and `files.sha256`); `decodedSize` the file's size once gunzipped. Files follow the
manifest in its order: by entryId, then cif, pae, confidence.

The tar is reproducible: every member has mode 0644, owner 0/0 and one mtime, by default the newest
`modelCreatedDate` of the exported entries at 00:00 UTC. The bytes are those `tarfile` writes in PAX
format for the same members, including the end-of-archive blocks and the padding to a 10 KiB record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from structome.storage import catalog
from structome.storage.archive import ENCODINGS, FileLocation, file_columns_sql, verify_stored
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import FILE_KINDS

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_ID_COLUMN",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "ExportError",
    "ExportFile",
    "UnknownEntriesError",
    "entry_id_position",
    "entry_ids_of",
    "export_files",
    "manifest_bytes",
    "stream_tar",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "structome-export/1"
ENTRY_ID_COLUMN = "entryId"
_MAX_GAP = 64 << 10  # members of one archive this close are fetched by one ranged read (tar headers sit between)
_MAX_READ = 8 << 20  # bytes one coalesced read may span (a single larger member is still one read)


class ExportError(ValueError):
    """The selection cannot be exported (no entryId column, bad kinds)."""


class UnknownEntriesError(LookupError):
    """Some requested entry ids have no stored files (of the requested kinds) in the database."""

    def __init__(self, entry_ids: Sequence[str | None], location: str):
        self.entry_ids = list(entry_ids)
        shown = ", ".join("NULL" if e is None else repr(e) for e in self.entry_ids[:10])
        more = f" and {len(self.entry_ids) - 10} more" if len(self.entry_ids) > 10 else ""
        super().__init__(f"{len(self.entry_ids)} requested entries are not in {location}: {shown}{more}")


@dataclass(frozen=True, slots=True)
class ExportFile(FileLocation):
    """One stored file of the export: where its bytes are (`length` = the member's size in the export tar), and
    the entry facts the manifest and the tar's mtime need."""

    build: str = ""  # the entry's build
    created: dt.date | None = None  # the entry's modelCreatedDate

    @property
    def member_name(self) -> str:
        """The name in the export tar: AFDB bulk naming, `<fileName>.gz` for gzip-stored files."""
        return self.file_name + ENCODINGS[self.encoding]

    def manifest_row(self) -> dict:
        return {
            "member": self.member_name,
            "entryId": self.entry_id,
            "kind": self.kind,
            "fileName": self.file_name,
            "encoding": self.encoding,
            "size": self.length,
            "decodedSize": self.size,
            "sha256": self.sha256,
            "build": self.build,
        }


def entry_id_position(columns: Sequence[str]) -> int:
    """Where the entryId column is among a query's columns (matched case-insensitively, as SQL identifiers are)."""
    matches = [i for i, name in enumerate(columns) if name.lower() == ENTRY_ID_COLUMN.lower()]
    if not matches:
        raise ExportError(
            f"the query must return a column named {ENTRY_ID_COLUMN} (it returned: {', '.join(columns) or 'none'})"
        )
    if len(matches) > 1:
        raise ExportError(
            f"the query returned several {ENTRY_ID_COLUMN} columns: {', '.join(columns[i] for i in matches)}"
        )
    return matches[0]


def entry_ids_of(table: pa.Table) -> list[str | None]:
    """The entryId column of a query result."""
    column = table.column(entry_id_position(table.column_names))
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        raise ExportError(f"{ENTRY_ID_COLUMN} must be text, the query returned {column.type}")
    return column.to_pylist()


_FILES_SQL = f"""
SELECT {file_columns_sql("f")}, coalesce(e.build, '') AS build, e.modelCreatedDate AS created
FROM files AS f
JOIN _export_ids AS w ON f.entryId = w.entryId
JOIN _export_kinds AS k ON f.kind = k.kind
LEFT JOIN (SELECT DISTINCT ON (entryId) entryId, build, modelCreatedDate FROM entries ORDER BY entryId, build)
    AS e ON e.entryId = f.entryId
QUALIFY row_number() OVER (PARTITION BY f.entryId, f.kind ORDER BY f.archive, f."offset") = 1
ORDER BY f.entryId, k.position
"""


def export_files(
    layout: DatabaseLayout, entry_ids: Sequence[str | None], kinds: Sequence[str] = FILE_KINDS
) -> list[ExportFile]:
    """The stored files of the entries, ordered by entryId, then cif, pae, confidence; one catalog query.

    Repeated ids count once. Raises UnknownEntriesError (listing them all) if any id, NULL included, lacks a
    stored file of one of the kinds: an export holds everything asked for or is not made.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    wanted_kinds = [kind for kind in FILE_KINDS if kind in set(kinds)]
    if not wanted_kinds or set(kinds) - set(FILE_KINDS):
        raise ExportError(f"kinds must be a non-empty subset of {', '.join(FILE_KINDS)}, got {', '.join(kinds)}")
    unique = list(dict.fromkeys(entry_ids))
    ids = [entry_id for entry_id in unique if entry_id is not None]
    connection = catalog.connect(layout)
    try:
        # Registered Arrow tables, not a long IN list: a join scales to any number of ids.
        connection.register("_export_ids", pa.table({"entryId": pa.array(ids, pa.string())}))
        connection.register(
            "_export_kinds", pa.table({"kind": wanted_kinds, "position": list(range(len(wanted_kinds)))})
        )
        rows = connection.sql(_FILES_SQL).to_arrow_table().to_pylist()
    finally:
        connection.close()
    files = [ExportFile.from_row(r, build=r["build"], created=r["created"]) for r in rows]
    found: dict[str | None, int] = {}
    for file in files:
        found[file.entry_id] = found.get(file.entry_id, 0) + 1
    unknown = [entry_id for entry_id in unique if found.get(entry_id, 0) != len(wanted_kinds)]
    if unknown:
        raise UnknownEntriesError(unknown, layout.location)
    return files


def manifest_bytes(layout: DatabaseLayout, files: Sequence[ExportFile]) -> bytes:
    """The manifest member's content: one line per file, so it stays readable."""
    head = {
        "format": MANIFEST_FORMAT,
        "database": layout.location,
        "builds": sorted({f.build for f in files if f.build}),
        "entries": len({f.entry_id for f in files}),
    }
    rows = ",\n".join(" " + json.dumps(f.manifest_row(), separators=(",", ":")) for f in files)
    return (json.dumps(head)[:-1] + ', "files": [\n' + rows + "\n]}\n").encode()


def default_mtime(files: Sequence[ExportFile]) -> int:
    """The newest modelCreatedDate of the files' entries at 00:00 UTC, as a Unix time; 0 if none is known."""
    dates = [f.created for f in files if f.created is not None]
    return int(dt.datetime.combine(max(dates), dt.time(), dt.UTC).timestamp()) if dates else 0


def stream_tar(
    layout: DatabaseLayout, files: Sequence[ExportFile], *, chunk_bytes: int = 1 << 20, mtime: int | None = None
) -> Iterator[bytes]:
    """The export tar as chunks of exactly `chunk_bytes` (the last one shorter); the manifest first.

    Stored bytes are read by ranged reads (neighbouring members of one archive by one read of up to 8 MiB)
    and checked against their recorded length and sha256 before any of them is yielded; a mismatch raises
    storage.archive.ArchiveChecksumError mid-stream, so a consumer must treat an unfinished stream as failed.
    Memory: one chunk plus one read.
    """
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    mtime = default_mtime(files) if mtime is None else int(mtime)
    chunks = _Chunker(chunk_bytes)
    manifest = manifest_bytes(layout, files)
    yield from chunks.add(_member_header(MANIFEST_NAME, len(manifest), mtime))
    yield from chunks.add(manifest + _padding(len(manifest)))
    for group, data in _read_groups(layout, files, chunk_bytes):
        start = group[0].offset
        for file in group:
            stored = data[file.offset - start : file.offset - start + file.length]
            verify_stored(stored, f"{layout.location}/{file.archive}", file.offset, file.length, file.sha256)
            yield from chunks.add(_member_header(file.member_name, file.length, mtime))
            yield from chunks.add(stored)
            yield from chunks.add(_padding(file.length))
    yield from chunks.add(_end_of_archive(chunks.total))
    yield from chunks.flush()


def _member_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return bytes(-size % tarfile.BLOCKSIZE)


def _end_of_archive(written: int) -> bytes:
    """Two zero blocks, then zeros to a whole record (as tarfile.close() writes)."""
    end = written + 2 * tarfile.BLOCKSIZE
    return bytes(2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE))


def _read_groups(
    layout: DatabaseLayout, files: Sequence[ExportFile], chunk_bytes: int
) -> Iterator[tuple[list[ExportFile], memoryview]]:
    """Runs of files that sit close together in one archive, each with the bytes of one ranged read."""
    limit = max(chunk_bytes, _MAX_READ)
    group: list[ExportFile] = []
    for file in files:
        if group:
            first, last = group[0], group[-1]
            gap = file.offset - (last.offset + last.length)
            span = file.offset + file.length - first.offset
            if file.archive != last.archive or not 0 <= gap <= _MAX_GAP or span > limit:
                yield group, _read_group(layout, group)
                group = []
        group.append(file)
    if group:
        yield group, _read_group(layout, group)


def _read_group(layout: DatabaseLayout, group: list[ExportFile]) -> memoryview:
    start, end = group[0].offset, group[-1].offset + group[-1].length
    return memoryview(layout.read_range(group[0].archive, start, end - start))


class _Chunker:
    """Re-cuts a byte stream into pieces of exactly `size` bytes (the last one shorter)."""

    def __init__(self, size: int):
        self.size = size
        self.total = 0  # bytes added so far
        self._buffer = bytearray()

    def add(self, data: bytes | memoryview) -> Iterator[bytes]:
        self.total += len(data)
        view = memoryview(data)
        if self._buffer:
            take = self.size - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < self.size:
                return
            yield bytes(self._buffer)
            self._buffer.clear()
        while len(view) >= self.size:
            yield bytes(view[: self.size])
            view = view[self.size :]
        self._buffer += view

    def flush(self) -> Iterator[bytes]:
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()
