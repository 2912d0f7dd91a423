"""Reading the database back: what is committed, and single files for downloads."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.dataset as ds

from storage import catalog
from storage.archive import decode, verify_stored
from storage.layout import DatabaseLayout

FILE_KINDS = ("cif", "pae", "confidence")


def committed_entries(layout: DatabaseLayout) -> dict[str, str]:
    """entryId -> predictionId of every committed entry (read straight from Parquet, no catalog lock)."""
    files = [layout.path(f) for f in layout.table_files("entries")]
    if not files:
        return {}
    dataset = ds.dataset(files, format="parquet", filesystem=layout.fs)
    table = dataset.to_table(columns=["entryId", "predictionId"])
    return dict(zip(table.column("entryId").to_pylist(), table.column("predictionId").to_pylist()))


class EntryNotFoundError(LookupError):
    pass


class AmbiguousEntryError(LookupError):
    """An accession with several fragments: the caller must name one entry."""

    def __init__(self, identifier: str, entry_ids: list[str]):
        self.entry_ids = entry_ids
        super().__init__(
            f"{identifier} has {len(entry_ids)} fragments; name one of: {', '.join(entry_ids)}"
        )


@dataclass(frozen=True)
class StoredFile:
    entry_id: str
    kind: str
    file_name: str
    data: bytes  # decoded content


def resolve_entry(layout: DatabaseLayout, identifier: str) -> str:
    """An entryId as is; an accession with exactly one entry gives that entry; several raise."""
    table = catalog.query(
        layout,
        "SELECT entryId FROM entries WHERE entryId = ? OR uniprotAccession = ? ORDER BY fragment, entryId",
        [identifier, identifier],
    )
    entry_ids = table.column("entryId").to_pylist()
    if identifier in entry_ids:
        return identifier
    if not entry_ids:
        raise EntryNotFoundError(f"no entry or accession {identifier!r} in {layout.location}")
    if len(entry_ids) > 1:
        raise AmbiguousEntryError(identifier, entry_ids)
    return entry_ids[0]


def read_entry_file(layout: DatabaseLayout, identifier: str, kind: str = "cif") -> StoredFile:
    """One file of one entry: a catalog lookup, then one ranged read of its archive member."""
    if kind not in FILE_KINDS:
        raise ValueError(f"file kind must be one of {FILE_KINDS}, got {kind!r}")
    entry_id = resolve_entry(layout, identifier)
    table = catalog.query(
        layout,
        "SELECT fileName, archive, \"offset\", length, encoding, sha256 FROM files WHERE entryId = ? AND kind = ?",
        [entry_id, kind],
    )
    if table.num_rows == 0:
        raise EntryNotFoundError(f"{entry_id} has no {kind} file")
    row = table.to_pylist()[0]
    data = layout.read_range(row["archive"], row["offset"], row["length"])
    stored = verify_stored(data, f"{layout.location}/{row['archive']}", row["offset"], row["length"], row["sha256"])
    return StoredFile(entry_id, kind, row["fileName"], decode(stored, row["encoding"]))
