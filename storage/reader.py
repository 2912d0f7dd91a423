"""Reading the database back: what is committed, and single files for downloads."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

import duckdb

from structome.models.types import FileKind
from structome.storage import catalog
from structome.storage.archive import (
    FILE_COLUMNS,
    ArchiveChecksumError,
    FileLocation,
    decode,
    file_columns_sql,
    verify_stored,
)
from structome.storage.layout import DatabaseLayout

FILE_KINDS = tuple(kind.value for kind in FileKind)  # stored: cif, pae, confidence
DOWNLOAD_KINDS = (*FILE_KINDS, "pdb")  # pdb: rendered from the mmCIF


def committed_entries(layout: DatabaseLayout, entry_ids: Iterable[str]) -> dict[str, str]:
    """entryId -> predictionId of those of `entry_ids` that are committed (read straight from Parquet, no catalog
    lock). Memory follows the ids asked for, not the database: DuckDB streams the entries files' two key columns
    through a semi join with the ids (at 10M entries, ~4,400 ids: benchmarks/bench_scale.py)."""
    import pyarrow as pa

    files = layout.table_files("entries")
    wanted = pa.table({"entryId": pa.array(sorted(set(entry_ids)), pa.string())})
    if not files or not len(wanted):
        return {}
    listing = catalog.sql_listing(layout, files)
    connection = catalog.connect_files(layout)
    try:
        connection.register("wanted", wanted)
        found = connection.execute(
            f"SELECT entryId, predictionId FROM read_parquet([{listing}], union_by_name = true) "
            "SEMI JOIN wanted USING (entryId)"
        ).fetchall()
    finally:
        connection.close()
    return dict(found)


class EntryNotFoundError(LookupError):
    pass


class AmbiguousEntryError(LookupError):
    """An accession with several fragments: the caller must name one entry."""

    def __init__(self, identifier: str, entry_ids: list[str]):
        self.entry_ids = entry_ids
        super().__init__(f"{identifier} has {len(entry_ids)} fragments; name one of: {', '.join(entry_ids)}")


@dataclass(frozen=True)
class StoredFile:
    entry_id: str
    kind: str
    file_name: str
    data: bytes  # decoded content


def resolve_entry(layout: DatabaseLayout, identifier: str) -> str:
    """An entryId as is; an accession with exactly one entry gives that entry; several raise."""
    connection = catalog.connect(layout)
    try:
        return _resolve_entry(connection, layout, identifier)
    finally:
        connection.close()


def _resolve_entry(connection: duckdb.DuckDBPyConnection, layout: DatabaseLayout, identifier: str) -> str:
    """The identifier as given, then upper-cased (accessions and entry ids are upper case: p0dpd0 finds P0DPD0)."""
    for spelling in lookup_spellings(identifier):
        entry_ids = _entry_ids_of(connection, spelling)
        if entry_ids:
            break
    else:
        raise EntryNotFoundError(f"no entry or accession {identifier!r} in {layout.location}")
    if len(entry_ids) > 1:
        raise AmbiguousEntryError(identifier, entry_ids)
    return entry_ids[0]


def lookup_spellings(identifier: str) -> tuple[str, ...]:
    """How an accession or entry id given by a user is looked up, in order: as given, then upper-cased."""
    return tuple(dict.fromkeys((identifier, identifier.upper())))


def _entry_ids_of(connection: duckdb.DuckDBPyConnection, identifier: str) -> list[str]:
    # Two equality lookups, not one `OR`: each reads only the parts whose key range holds the identifier.
    if _point_rows(connection, "entries", "entryId", identifier, "1"):
        return [identifier]
    found = _point_rows(connection, "entries", "uniprotAccession", identifier, "entryId", "ORDER BY fragment, entryId")
    return [entry_id for (entry_id,) in found]


def _point_rows(
    connection: duckdb.DuckDBPyConnection, table: str, column: str, value: str, select: str, rest: str = "", *more
) -> list[tuple]:
    """`SELECT select FROM table WHERE column = value [rest]` over only the files that may hold the value
    (catalog.key_files): a cold process parses those footers, not every segment's. `rest` may add conditions
    (`AND ...`, its parameters in `more`) and an ORDER BY."""
    files = catalog.key_files(connection, table, column, value)
    if not files:
        return []
    listing = ", ".join(f"'{catalog.quote(f)}'" for f in files)
    return connection.execute(
        f'SELECT {select} FROM read_parquet([{listing}], union_by_name = true) WHERE "{column}" = ? {rest}',
        [value, *more],
    ).fetchall()


def read_entry_file(layout: DatabaseLayout, identifier: str, kind: str = FileKind.CIF) -> StoredFile:
    """One file of one entry: two point lookups in one catalog connection, then one ranged read of its archive
    member."""
    if kind == "pdb":
        from structome.storage.mmcif import mmcif_to_pdb  # gemmi: only for this conversion

        cif = read_entry_file(layout, identifier, FileKind.CIF)
        return StoredFile(
            cif.entry_id, kind, cif.file_name.removesuffix(".cif") + ".pdb", mmcif_to_pdb(cif.data.decode()).encode()
        )
    if kind not in FILE_KINDS:
        raise ValueError(f"file kind must be one of {DOWNLOAD_KINDS}, got {kind!r}")
    connection = catalog.connect(layout)
    try:
        entry_id = _resolve_entry(connection, layout, identifier)
        rows = _point_rows(connection, "files", "entryId", entry_id, file_columns_sql(), "AND kind = ?", kind)
    finally:
        connection.close()
    if not rows:
        raise EntryNotFoundError(f"{entry_id} has no {kind} file")
    location = FileLocation.from_row(dict(zip(FILE_COLUMNS, rows[0], strict=True)))
    data = layout.read_range(location.archive, location.offset, location.length)
    stored = verify_stored(
        data, f"{layout.location}/{location.archive}", location.offset, location.length, location.sha256
    )
    return StoredFile(entry_id, kind, location.file_name, decode(stored, location.encoding))


class ArchiveReader:
    """Ranged reads of archive members for a long-running reader (the server).

    A local database keeps up to `capacity` archives open and reads with pread (no open per request, safe to
    call from any thread: an evicted file closes only when the last reader drops it); an object store gets one
    ranged GET per read. Committed archives never change, so an open file stays valid.
    """

    def __init__(self, layout: DatabaseLayout, capacity: int = 256):
        self.layout, self._capacity = layout, capacity
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, archive: str, offset: int, length: int) -> bytes:
        if not self.layout.is_local:
            return self.layout.read_range(archive, offset, length)
        file = self._file(archive)
        data = os.pread(file.fileno(), length, offset)
        if len(data) != length:
            raise ArchiveChecksumError(
                f"{self.layout.location}/{archive}: short read at {offset} ({len(data)} of {length} bytes)"
            )
        return data

    def read_verified(self, archive: str, offset: int, length: int, sha256: str) -> bytes:
        """A whole stored member, checked against its recorded SHA-256."""
        return verify_stored(
            self.read(archive, offset, length), f"{self.layout.location}/{archive}", offset, length, sha256
        )

    def _file(self, archive: str) -> BinaryIO:
        with self._lock:
            file = self._files.get(archive)
            if file is None:
                file = self._files[archive] = open(self.layout.path(archive), "rb", buffering=0)
                if len(self._files) > self._capacity:
                    self._files.popitem(last=False)  # closed by reference counting once no read holds it
            self._files.move_to_end(archive)
            return file

    def close(self) -> None:
        with self._lock:
            for file in self._files.values():
                file.close()
            self._files.clear()
