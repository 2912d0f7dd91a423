"""The database's entry metadata and file locations, read once into memory for serving.

`EntryIndex.load` runs two catalog queries (lean columns of `entries` and all of `files`); afterwards a
request is a dictionary lookup: an accession's AlphaFold-DB-API records are kept as ready JSON bytes, and
each file name maps to where its bytes sit (one ranged read).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from structome.models.types import FileKind
from structome.storage import catalog
from structome.storage.archive import FileLocation, file_columns_sql
from structome.storage.layout import DatabaseLayout
from structome.storage.plddt import FRACTION_COLUMNS

logger = logging.getLogger(__name__)

# Files AFDB offers that are rendered from a stored one on request: stored kind -> (API field, stored name's
# suffix, the rendered file's suffix). The PAE plot from the PAE JSON, the PDB-format model from the mmCIF.
DERIVED_KINDS = {FileKind.PAE: ("paeImageUrl", ".json", ".png"), FileKind.CIF: ("pdbUrl", ".cif", ".pdb")}
# The API field of each stored kind's URL.
URL_FIELDS = {FileKind.CIF: "cifUrl", FileKind.PAE: "paeDocUrl", FileKind.CONFIDENCE: "plddtDocUrl"}

# entries columns served as they are (AlphaFold DB API names), in the order AFDB lists them.
ENTRY_COLUMNS = (
    "entryId", "gene", "sequenceChecksum", "uniprotAccession", "uniprotId", "uniprotDescription", "taxId",
    "organismScientificName", "uniprotStart", "uniprotEnd", "uniprotSequence", "modelCreatedDate", "latestVersion",
    "globalMetricValue", *FRACTION_COLUMNS, "ptm", "sequenceMd5", "model", "modelVersion", "untrained", "fragment",
)  # fmt: skip
_SEARCHED = ("uniprotAccession", "entryId", "uniprotId", "gene", "organismScientificName", "uniprotDescription")
_EXACT = ("uniprotAccession", "gene", "uniprotId")  # an exact match on these ranks first


@dataclass(frozen=True, slots=True)
class DerivedFile:
    """A file rendered on request from a stored one."""

    source: FileLocation
    suffix: str  # ".png" or ".pdb"

    @property
    def file_name(self) -> str:
        return self.source.file_name.removesuffix(DERIVED_KINDS[self.source.kind][1]) + self.suffix


class EntryIndex:
    """Entries by accession and entryId, files by name, and a simple text search."""

    def __init__(self, records: list[dict], files: list[FileLocation]):
        self.files = {f.file_name: f for f in files}
        derived = [DerivedFile(f, DERIVED_KINDS[f.kind][2]) for f in files if f.kind in DERIVED_KINDS]
        self.derived = {d.file_name: d for d in derived}
        urls = _file_urls(files)
        by_accession: dict[str, list[dict]] = defaultdict(list)
        for record in sorted(records, key=lambda r: (r["uniprotAccession"], r["fragment"], r["entryId"])):
            by_accession[record["uniprotAccession"]].append(_api_record(record, urls.get(record["entryId"], {})))
        self.accession_of = {r["entryId"]: r["uniprotAccession"] for r in records}
        self._json = {accession: json.dumps(items).encode() for accession, items in by_accession.items()}
        self._haystack = [
            (
                accession,
                "\n".join(str(items[0].get(c) or "") for c in _SEARCHED).lower()
                + "\n"
                + "\n".join(i["entryId"].lower() for i in items),
            )
            for accession, items in by_accession.items()
        ]
        self._exact: dict[str, set[str]] = defaultdict(set)  # accession, gene or entry name (lower case) -> accessions
        for accession, items in by_accession.items():
            for column in _EXACT:
                self._exact[str(items[0].get(column) or "").lower()].add(accession)

    @classmethod
    def load(cls, layout: DatabaseLayout) -> EntryIndex:
        """Read what is committed now (without locking catalog.duckdb, which a running build may refresh)."""
        columns = ", ".join(f'"{c}"' for c in ENTRY_COLUMNS)
        connection = catalog.connect_detached(layout)
        try:
            records = connection.sql(f"SELECT {columns} FROM entries").to_arrow_table().to_pylist()
            rows = connection.sql(f"SELECT {file_columns_sql()} FROM files").to_arrow_table().to_pylist()
        finally:
            connection.close()
        files = [FileLocation.from_row(row) for row in rows]
        logger.info("index of %s: %d entries, %d files", layout.location, len(records), len(files))
        return cls(records, files)

    def __len__(self) -> int:
        return len(self.accession_of)

    def prediction_json(self, identifier: str) -> bytes | None:
        """The AFDB API answer (a JSON list) for an accession or an entryId; None when unknown."""
        return self._json.get(identifier) or self._json.get(self.accession_of.get(identifier, ""))

    def predictions(self, identifier: str) -> list[dict]:
        answer = self.prediction_json(identifier)
        return json.loads(answer) if answer else []

    def search(self, text: str, limit: int = 50) -> tuple[list[dict], int]:
        """Entries whose accession, entry id, name, gene, organism or description contains `text` (any case);
        exact accession or gene matches first. Returns (the first `limit` records, total matches)."""
        needle = text.strip().lower()
        if not needle:
            return [], 0
        hits = [accession for accession, haystack in self._haystack if needle in haystack]
        exact = self._exact.get(needle, set())
        hits.sort(key=lambda accession: (accession not in exact, accession))
        return [record for accession in hits[:limit] for record in self.predictions(accession)[:1]], len(hits)


def _file_urls(files: list[FileLocation]) -> dict[str, dict[str, str]]:
    urls: dict[str, dict[str, str]] = defaultdict(dict)
    for f in files:
        urls[f.entry_id][URL_FIELDS[f.kind]] = f"/files/{f.file_name}"
        if f.kind in DERIVED_KINDS:
            field, _, suffix = DERIVED_KINDS[f.kind]
            urls[f.entry_id][field] = f"/files/{DerivedFile(f, suffix).file_name}"
    return urls


def _api_record(record: dict, urls: dict[str, str]) -> dict:
    """An entries row as AlphaFold DB's /api/prediction shows it (both its older and newer field names)."""
    start, end = record["uniprotStart"], record["uniprotEnd"]
    api = {c: record[c] for c in ENTRY_COLUMNS if c not in ("fragment",)}
    api.update(
        modelCreatedDate=record["modelCreatedDate"].isoformat() if record["modelCreatedDate"] else None,
        allVersions=[record["latestVersion"]],
        sequence=(record["uniprotSequence"] or "")[start - 1 : end],
        sequenceStart=start,
        sequenceEnd=end,
        globalMetricValue=_rounded(record["globalMetricValue"]),
        **{c: _rounded(record[c], 3) for c in (*FRACTION_COLUMNS, "ptm")},
        **urls,
    )
    return api


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
