"""Compacted tables: segments, and the manifest generation that says which are current.

A build commits small shards (storage.layout); compaction (storage.compaction) merges committed shards' tables
into segments, each a set of large Parquet files sorted for pruning:

    tables/<table>/<segment>-<part>.parquet   a segment's table, sorted, cut into parts of a few dozen row groups
    tables/manifests/<generation>.json        generation N of the table listing; the highest one is current

A manifest lists the current segments, their parts with each part's key ranges (PART_KEYS: min and max), and the
shards they cover. The parts of one segment hold disjoint key ranges, so a point lookup opens (and parses the
footer of) one part per segment, not the whole segment: a cold `structome get` costs the same at 10M entries as
at 100k. (Segments written before parts existed are one file, `tables/<table>/<segment>.parquet`, with no
ranges.) A table's visible files are the current
segments' files plus the files of every committed shard the manifest does not cover, so switching from one
generation to the next (one atomic write of a new manifest) swaps old files for new ones at once: readers see
the old state or the new one, never both, never neither. Files that a manifest stopped listing stay on disk for a
grace period (readers that listed them may still be reading) before compaction removes them. Shard archives stay
where a build wrote them: the `files` rows that point into them are copied into segments unchanged.

Other engines must read exactly the files the current manifest lists (storage.layout.DatabaseLayout.table_files,
or the catalog's views), never a glob over every Parquet file: superseded files linger during the grace period.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from structome.storage.formats import FormatError, check_format, format_tag
from structome.storage.integrity import FileDigest

__all__ = [
    "MANIFESTS",
    "PART_KEYS",
    "SEGMENTS_FOLDER",
    "SEGMENT_TABLES",
    "SORT_KEYS",
    "Segment",
    "SegmentFile",
    "TableManifest",
    "generation_of",
    "manifest_path",
    "part_path",
]

MANIFEST_VERSION = 1
SEGMENTS_FOLDER = "tables"  # segments' files and the manifests
MANIFESTS = f"{SEGMENTS_FOLDER}/manifests"
SEGMENT_TABLES = ("entries", "residues", "files", "failures")  # the tables a shard holds
# How each table is sorted inside a segment: point lookups by entryId (and by accession, since an entryId is
# <prefix>-<accession>-F<n>) skip every row group whose statistics exclude the key.
SORT_KEYS = {
    "entries": ("entryId",),
    "residues": ("entryId", "residueNumber"),
    "files": ("entryId", "kind"),
    "failures": ("sourceFile", "recordNumber", "entryId", "reason"),
}
# The columns whose range each part records: what point lookups filter on (storage.catalog.key_files).
PART_KEYS = {
    "entries": ("entryId", "uniprotAccession"),
    "residues": ("entryId",),
    "files": ("entryId",),
    "failures": (),
}


@dataclass(frozen=True)
class SegmentFile:
    """One part of a segment's table: its path relative to the database, and the [min, max] of each PART_KEYS
    column over its rows (a column without a range: any value may be there)."""

    path: str
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)
    digest: FileDigest | None = None  # size, rows and SHA-256 as written (parts written before digests: None)

    def may_hold(self, column: str, value: str) -> bool:
        bounds = self.ranges.get(column)
        return bounds is None or bounds[0] <= value <= bounds[1]

    def to_json(self) -> dict:
        ranges = {column: list(bounds) for column, bounds in self.ranges.items()}
        return {"path": self.path, "ranges": ranges, **({"digest": self.digest.to_json()} if self.digest else {})}

    @classmethod
    def from_json(cls, item: dict) -> SegmentFile:
        digest = FileDigest.from_json(item["digest"]) if "digest" in item else None
        return cls(item["path"], {column: (low, high) for column, (low, high) in item["ranges"].items()}, digest)


@dataclass(frozen=True)
class Segment:
    """One merged unit: the four tables of a set of committed shards, each in one sorted Parquet file."""

    segment_id: str  # g<generation>-<random>, unique
    entries: int  # rows of its entries table; decides its tier
    shards: int  # how many committed shards it covers
    rows: dict[str, int] = field(default_factory=dict)  # table -> row count
    size: int = 0  # bytes of its files
    parts: dict[str, tuple[SegmentFile, ...]] = field(default_factory=dict)  # table -> its parts, in key order

    def table_files(self, table: str) -> tuple[SegmentFile, ...]:
        """The segment's files of `table` (a segment written before parts: its one file, no ranges)."""
        return self.parts.get(table) or (SegmentFile(f"{SEGMENTS_FOLDER}/{table}/{self.segment_id}.parquet"),)

    def paths(self, table: str) -> list[str]:
        return [part.path for part in self.table_files(table)]

    @property
    def files(self) -> list[str]:
        return [path for table in SEGMENT_TABLES for path in self.paths(table)]

    def to_json(self) -> dict:
        return {
            "id": self.segment_id,
            "entries": self.entries,
            "shards": self.shards,
            "rows": self.rows,
            "size": self.size,
            "parts": {table: [part.to_json() for part in parts] for table, parts in self.parts.items()},
        }

    @classmethod
    def from_json(cls, item: dict) -> Segment:
        parts = {table: tuple(map(SegmentFile.from_json, files)) for table, files in item.get("parts", {}).items()}
        return cls(item["id"], item["entries"], item["shards"], dict(item.get("rows", {})), item.get("size", 0), parts)


def part_path(table: str, segment_id: str, number: int) -> str:
    """Where part `number` of a segment's table lives, relative to the database."""
    return f"{SEGMENTS_FOLDER}/{table}/{segment_id}-{number:04d}.parquet"


@dataclass(frozen=True)
class TableManifest:
    """Generation `generation` of the compacted tables. Generation 0 (no manifest written yet): nothing compacted."""

    generation: int = 0
    segments: tuple[Segment, ...] = ()
    compacted_shards: frozenset[str] = frozenset()  # shard ids whose tables live in the segments
    created: str = ""  # ISO time the generation was written

    @property
    def files(self) -> list[str]:
        """Every file this generation lists."""
        return [f for segment in self.segments for f in segment.files]

    def successor(self, segments: list[Segment], shards: set[str]) -> TableManifest:
        """The next generation: these segments, covering the shards covered so far plus `shards`."""
        created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        return TableManifest(self.generation + 1, tuple(segments), self.compacted_shards | shards, created)

    def to_bytes(self) -> bytes:
        document = {
            "format": format_tag("tables", MANIFEST_VERSION),
            "generation": self.generation,
            "created": self.created,
            "segments": [segment.to_json() for segment in self.segments],
            "compactedShards": sorted(self.compacted_shards),
        }
        return json.dumps(document, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> TableManifest:
        try:
            document = json.loads(data)
            check_format(document, "tables", MANIFEST_VERSION, where)
            return cls(
                document["generation"],
                tuple(Segment.from_json(item) for item in document["segments"]),
                frozenset(document["compactedShards"]),
                document["created"],
            )
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise FormatError(f"{where} is corrupt ({error!r}): not a structome table manifest") from error


def manifest_path(generation: int) -> str:
    return f"{MANIFESTS}/{generation:010d}.json"


def generation_of(path: str) -> int | None:
    """The generation a manifest's path names; None for anything else in the folder (temporary files)."""
    name = path.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    return int(stem) if name.endswith(".json") and stem.isdigit() else None
