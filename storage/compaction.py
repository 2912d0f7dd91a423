"""Compaction: merge committed shards' tables into sorted segments, incrementally, like an LSM tree.

Each run (at the end of a build, or `structome compact`) holds the compaction lock, not the build lock: a build
may commit shards meanwhile, which stay level 0 until the next run.

1. plans: the committed shards no segment covers become one new segment; then, while some size tier holds
   `fanout` segments, they merge into one (a segment's tier is log_fanout of its entries over `base_entries`,
   so each entry is rewritten about log_fanout(N / base_entries) times over the database's life, and a lookup
   opens at most ~(fanout - 1) segments per tier);
2. writes each new segment's four files (DuckDB sorts, spilling to disk beyond its memory limit) under new names;
3. switches: one atomic write of the next manifest generation (storage.segments) makes the new files visible
   and the merged ones invisible at once; then the catalog's views are rewritten to list the new files;
4. collects garbage: files that no generation still young enough for a reader to use lists (older than the
   grace period), including leftovers of killed runs.

Killed at any moment, a run leaves the old generation visible (nothing it wrote is listed yet) or the new one
(the manifest is written): never both, never neither. The next run removes what the killed one left.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from structome.storage import catalog, formats, schema
from structome.storage.atomic import publish_file
from structome.storage.formats import FormatError
from structome.storage.integrity import digest_file
from structome.storage.layout import DatabaseLayout
from structome.storage.parts import PartWriter
from structome.storage.segments import (
    SEGMENT_TABLES,
    SORT_KEYS,
    Segment,
    SegmentFile,
    TableManifest,
    manifest_path,
    part_path,
)

logger = logging.getLogger(__name__)

__all__ = ["CompactionPolicy", "CompactionReport", "collect_garbage", "compact", "plan_compaction"]

_COLLECTED = "tables/collected.json"  # {"generation": g}: the shard files generation g covers are removed


@dataclass(frozen=True)
class CompactionPolicy:
    fanout: int = 4  # segments of one tier merged at once
    base_entries: int = 16_384  # a segment up to this size is tier 0
    full: bool = False  # merge everything into one segment
    grace_s: float = 600.0  # how long superseded files stay for readers that listed them
    max_merge_entries: int | None = None  # leave larger tier merges to a later run with a higher limit
    memory_limit: str = "2GB"  # DuckDB's, while sorting (it spills beyond)

    def __post_init__(self) -> None:
        if self.fanout < 2 or self.base_entries < 1 or self.grace_s < 0:
            raise ValueError("fanout must be >= 2, base entries >= 1 and the grace period >= 0")

    def allows(self, merged: list[Segment | _Merge]) -> bool:
        """Whether merging these (segments or pending merges) stays within max_merge_entries."""
        return self.max_merge_entries is None or sum(item.entries for item in merged) <= self.max_merge_entries

    def tier(self, entries: int) -> int:
        """0 up to base_entries, then one more for each factor of `fanout`."""
        if entries <= self.base_entries:
            return 0
        return math.floor(math.log(entries / self.base_entries, self.fanout)) + 1


@dataclass
class _Merge:
    """One segment to write: from level-0 shards (shard id -> folder) and existing segments."""

    shards: dict[str, str] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    entries: int = 0  # planned (from the inputs' counts; level-0 shards are counted when known)

    def absorb(self, other: _Merge) -> None:
        self.shards.update(other.shards)
        self.segments += other.segments
        self.entries += other.entries


@dataclass(frozen=True)
class CompactionPlan:
    merges: tuple[_Merge, ...]
    kept: tuple[Segment, ...]  # current segments left as they are

    @property
    def empty(self) -> bool:
        return not self.merges


@dataclass(frozen=True)
class CompactionReport:
    generation: int  # the current generation afterwards
    shards_merged: int
    segments_merged: int
    segments_written: int
    entries_rewritten: int
    segments: int  # current segments afterwards
    files_removed: int
    seconds: float

    def to_json(self) -> dict:
        return {
            "generation": self.generation,
            "shardsMerged": self.shards_merged,
            "segmentsMerged": self.segments_merged,
            "segmentsWritten": self.segments_written,
            "entriesRewritten": self.entries_rewritten,
            "segments": self.segments,
            "filesRemoved": self.files_removed,
            "seconds": round(self.seconds, 3),
        }


def plan_compaction(
    manifest: TableManifest, level0: dict[str, str], level0_entries: int, policy: CompactionPolicy
) -> CompactionPlan:
    """What to merge: the uncovered shards (`level0`, holding `level0_entries` entries) into one new segment, then
    any tier that holds `fanout` segments."""
    if policy.full:
        everything = _Merge(
            dict(level0), list(manifest.segments), level0_entries + sum(s.entries for s in manifest.segments)
        )
        needed = level0 or len(manifest.segments) > 1
        return CompactionPlan((everything,) if needed else (), ())
    pending = [_Merge(dict(level0), [], level0_entries)] if level0 else []
    kept = list(manifest.segments)
    while True:
        tiers: dict[int, list[Segment | _Merge]] = {}
        candidates: list[Segment | _Merge] = [*kept, *pending]
        for item in candidates:
            tiers.setdefault(policy.tier(item.entries), []).append(item)
        full_tier = next(
            (items for _, items in sorted(tiers.items()) if len(items) >= policy.fanout and policy.allows(items)), None
        )
        if full_tier is None:
            return CompactionPlan(tuple(pending), tuple(kept))
        merged = _Merge()
        for item in full_tier:
            if isinstance(item, Segment):
                kept.remove(item)
                merged.absorb(_Merge({}, [item], item.entries))
            else:
                pending.remove(item)
                merged.absorb(item)
        pending.append(merged)


def compact(layout: DatabaseLayout, policy: CompactionPolicy = CompactionPolicy()) -> CompactionReport:
    """One compaction run (hold the compaction lock). Safe to kill at any point; a rerun resumes."""
    started = time.perf_counter()
    if layout.layout_version != formats.LAYOUT:  # the marker must say layout 2 before a segment exists
        raise FormatError(f"{layout.location} is at layout {layout.layout_version}: run `structome migrate` first")
    manifest = layout.table_manifest()
    level0 = layout.uncompacted_shards(manifest)
    # Damaged shards and segments are neither merged nor marked compacted: they wait for `structome verify --repair`.
    damage = layout.unit_damage(manifest, level0)
    level0 = {shard: folder for shard, folder in level0.items() if shard not in {d.shard for d in damage}}
    damaged = tuple(s for s in manifest.segments if s.segment_id in {d.segment for d in damage})
    healthy = replace(manifest, segments=tuple(s for s in manifest.segments if s not in damaged))
    plan = plan_compaction(healthy, level0, _entries_of(layout, level0.values()), policy)
    written = []
    if not plan.empty:
        with _Scratch(layout, policy) as scratch:
            written = [scratch.write_segment(merge, manifest.generation + 1) for merge in plan.merges]
        manifest = manifest.successor([*damaged, *plan.kept, *written], set(level0))
        layout.write_table_manifest(manifest)
        logger.info("%s: generation %d, %d segments", layout.location, manifest.generation, len(manifest.segments))
    catalog.refresh_catalog(layout)  # before any removal: the views must list only current files
    removed = collect_garbage(layout, policy.grace_s)
    return CompactionReport(
        generation=manifest.generation,
        shards_merged=sum(len(m.shards) for m in plan.merges),
        segments_merged=sum(len(m.segments) for m in plan.merges),
        segments_written=len(written),
        entries_rewritten=sum(s.entries for s in written),
        segments=len(manifest.segments),
        files_removed=removed,
        seconds=time.perf_counter() - started,
    )


def _entries_of(layout: DatabaseLayout, shard_folders) -> int:
    """How many entries the shards hold, from their entries files' footers."""
    total = 0
    for folder in shard_folders:
        with layout.fs.open_input_file(layout.path(f"{folder}/entries.parquet")) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


class _Scratch:
    """A DuckDB connection that reads the database's files and writes sorted segments into a scratch folder."""

    def __init__(self, layout: DatabaseLayout, policy: CompactionPolicy):
        self.layout = layout
        parent = None
        if layout.is_local:  # the same file system as the segments: they appear by rename
            parent = layout.compaction_scratch
            shutil.rmtree(parent, ignore_errors=True)  # a killed run's leftovers (we hold the compaction lock)
            parent.mkdir()
        self.folder = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
        self.connection = catalog.connect_files(layout)
        self.connection.execute(f"SET memory_limit = '{policy.memory_limit}'")
        self.connection.execute(f"SET temp_directory = '{catalog.quote(self.folder / 'spill')}'")

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def write_segment(self, merge: _Merge, generation: int) -> Segment:
        segment_id = f"g{generation:010d}-{secrets.token_hex(4)}"
        rows, size, parts = {}, 0, {}
        for table in SEGMENT_TABLES:
            sources = [f"{folder}/{table}.parquet" for folder in merge.shards.values()]
            sources += [path for segment in merge.segments for path in segment.paths(table)]
            staged = self.folder / table
            rows[table], files = self._sort_into(table, sources, staged)
            written = []
            for number, (file, ranges) in enumerate(files):
                digest = digest_file(pafs.LocalFileSystem(), str(file), parquet=True)  # what `verify` checks
                size += digest.size
                written.append(SegmentFile(part_path(table, segment_id, number), ranges, digest))
                self._publish(file, written[-1].path)
            parts[table] = tuple(written)
        shards = len(merge.shards) + sum(s.shards for s in merge.segments)
        logger.info("segment %s: %d entries from %d shards", segment_id, rows["entries"], shards)
        return Segment(segment_id, rows["entries"], shards, rows, size, parts)

    def _sort_into(self, table: str, sources: list[str], target: Path) -> tuple[int, list[tuple[Path, dict]]]:
        """Sort the sources' rows into part files in the folder `target` (storage.parts): the row count, and the
        parts with their key ranges in key order (at least one, empty when there are no rows). DuckDB sorts
        (spilling beyond its memory limit) and streams the sorted rows to the part writer."""
        columns = ", ".join(f'"{name}"' for name in schema.TABLES[table].names)
        listing = catalog.sql_listing(self.layout, [self.layout.schema_file(table), *sources])
        order = ", ".join(f'"{key}"' for key in SORT_KEYS[table])
        target.mkdir(parents=True, exist_ok=True)
        writer = PartWriter(table, lambda number: target / f"{number:04d}.parquet")
        reader = self.connection.sql(
            f"SELECT {columns} FROM read_parquet([{listing}], union_by_name = true) ORDER BY {order}"
        ).to_arrow_reader(writer.group_rows)
        for batch in reader:
            writer.write(batch)
        parts = writer.close()
        return writer.rows, parts

    def _publish(self, staged: Path, relative: str) -> None:
        if self.layout.is_local:
            publish_file(staged, self.layout.path(relative))
            return
        with open(staged, "rb") as source, self.layout.fs.open_output_stream(self.layout.path(relative)) as target:
            shutil.copyfileobj(source, target, 8 << 20)
        staged.unlink()


def collect_garbage(layout: DatabaseLayout, grace_s: float) -> int:
    """Remove what no reader can still be using (hold the compaction lock): files listed only by generations that
    were superseded more than `grace_s` ago, the level-0 files of shards compacted that long ago, and leftovers
    of killed runs. The number of files removed."""
    generations = layout.manifest_generations()
    if not generations:
        return 0
    now = dt.datetime.now(dt.UTC)
    manifests = {g: layout.table_manifest(g) for g in generations}
    settled = [
        g for g in generations if (now - dt.datetime.fromisoformat(manifests[g].created)).total_seconds() >= grace_s
    ]
    cutoff = settled[-1] if settled else None  # everything listed before this generation took over is unused
    listed = {f for g in generations if cutoff is None or g >= cutoff for f in manifests[g].files}
    removed = [f for f in layout.list_files("tables") if _is_segment_file(f) and f not in listed]
    if cutoff is not None:
        removed += _shard_files_to_remove(layout, manifests[cutoff])
    for relative in removed:
        layout.delete_file(relative)
    if cutoff is not None:  # the record first, then the manifests it relies on: a kill in between only repeats work
        layout.write_text_atomic(json.dumps({"generation": cutoff}) + "\n", _COLLECTED)
        old = [manifest_path(g) for g in generations if g < cutoff]
        for relative in old:
            layout.delete_file(relative)
        removed += old
    if removed:
        logger.info("%s: removed %d superseded files", layout.location, len(removed))
    return len(removed)


def _shard_files_to_remove(layout: DatabaseLayout, settled: TableManifest) -> list[str]:
    """The tables of shards `settled` covers that an earlier collection has not removed yet."""
    done: frozenset[str] = frozenset()
    if layout.exists(_COLLECTED):
        previous = json.loads(layout.read_text(_COLLECTED))["generation"]
        if previous in layout.manifest_generations():
            done = layout.table_manifest(previous).compacted_shards
    folders = layout.committed_shards()
    current = layout.table_manifest().compacted_shards  # a shard a repair gave back to level 0 keeps its tables
    return [
        f"{folders[shard]}/{table}.parquet"
        for shard in sorted((settled.compacted_shards & current) - done)
        if shard in folders
        for table in SEGMENT_TABLES
    ]


def _is_segment_file(relative: str) -> bool:
    parts = relative.split("/")
    return len(parts) == 3 and parts[1] in SEGMENT_TABLES and parts[2].endswith(".parquet")
