"""`structome verify`: check every table file and archive member of a database, and repair what can be repaired.

What is checked (storage.integrity says what is recorded):
- the table files of every level-0 shard (those no segment covers) and every part of every current segment: the
  footer parsed, row counts against the shard's `checksums.json` or the part's digest in the manifest (a segment
  written before digests: its parts' rows summed against the segment's recorded rows), SHA-256 where recorded;
- every shard's archive: its size and SHA-256 against `checksums.json` where recorded, and every member the `files`
  table lists read at its recorded offset and length and checked against its recorded SHA-256;
- the loose tables (`failures/`, `builds/`) and the schema files (footers).
The tables of compacted shards are superseded (the segments hold their rows) and are not checked.

Repair (a local database; it takes the build and compaction locks):
- a damaged level-0 shard is moved out of `shards/` into `quarantine/<time>/` (one rename): its entries are no
  longer committed, so the next build re-folds exactly them;
- a damaged segment (any part), or a segment holding rows of a shard whose archive is damaged, is dropped from
  the table manifest (one atomic write of the next generation) and its parts moved to quarantine. Each shard it
  covered is given back to level 0 when the shard's own tables are still on disk and whole (compaction keeps them
  for the grace period and until the next collection): its rows are re-derived from them, nothing is re-folded.
  A shard whose tables are gone or damaged, or whose archive is damaged, is quarantined, and the next build
  re-folds its entries. Which shards a segment covered is read from the other segments (every compacted shard
  not found in a healthy segment's `entries` or `files` belongs to the dropped ones);
- a damaged loose table file is quarantined (its rows are lost: a `builds` row, or ledger rows of one build);
- schema files and catalog.duckdb are derived data: rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from structome.storage import catalog
from structome.storage.atomic import make_folders_durably, sync_folder
from structome.storage.formats import FormatError, NewerFormatError
from structome.storage.integrity import (
    SHARD_CHECKSUMS,
    Damage,
    DamagedDatabaseError,
    FileDigest,
    footer_problem,
    parse_shard_checksums,
)
from structome.storage.layout import SHARD_TABLES, DatabaseLayout
from structome.storage.segments import Segment, TableManifest

logger = logging.getLogger(__name__)

__all__ = ["QUARANTINE", "VerifyReport", "damage_summary", "quick_check", "refuse_damaged", "repair", "verify"]

QUARANTINE = "quarantine"
ARCHIVE = "archive.tar"
_MEMBER_COLUMNS = ["archive", "member", "offset", "length", "sha256"]


@dataclass(frozen=True)
class VerifyReport:
    damage: tuple[Damage, ...]
    files_checked: int
    members_checked: int
    repaired: tuple[str, ...] = field(default=())  # what a repair did, one line each
    remaining: tuple[Damage, ...] = field(default=())  # what a check after the repair still found

    @property
    def ok(self) -> bool:
        return not self.damage


def verify(layout: DatabaseLayout) -> VerifyReport:
    """Every table file and archive member checked (see the module's docstring); nothing is changed."""
    manifest = layout.table_manifest()
    shards = layout.committed_shards()
    level0 = layout.uncompacted_shards(manifest)
    damage: list[Damage] = []
    files = 0
    for shard, folder in shards.items():
        recorded, problem = _recorded(layout, folder)
        if problem is not None:
            damage.append(Damage(f"{folder}/{SHARD_CHECKSUMS}", problem, shard=shard))
        names = [f"{table}.parquet" for table in SHARD_TABLES] if shard in level0 else []
        for name in names:
            files += 1
            if (found := footer_problem(layout.fs, layout.path(f"{folder}/{name}"), recorded.get(name))) is not None:
                damage.append(Damage(f"{folder}/{name}", found, shard=shard))
        files += 1
        if (found := _archive_problem(layout, f"{folder}/{ARCHIVE}", recorded.get(ARCHIVE))) is not None:
            damage.append(Damage(f"{folder}/{ARCHIVE}", found, shard=shard))
    for segment in manifest.segments:
        files += sum(len(segment.table_files(table)) for table in SHARD_TABLES)
        damage += _segment_damage(layout, segment)
    for folder in ("failures", "builds", "schema"):
        for relative in _parquet_files(layout, folder):
            files += 1
            if (found := footer_problem(layout.fs, layout.path(relative), None)) is not None:
                damage.append(Damage(relative, found))
    member_damage, members = _member_damage(layout, manifest, level0, {d.file for d in damage})
    return VerifyReport(tuple(damage + member_damage), files, members)


def _recorded(layout: DatabaseLayout, folder: str) -> tuple[dict[str, FileDigest], str | None]:
    """A shard's recorded digests (none for a shard written before they were), and what is wrong with the record."""
    relative = f"{folder}/{SHARD_CHECKSUMS}"
    try:
        return parse_shard_checksums(layout.read_bytes(relative), f"{layout.location}/{relative}"), None
    except FileNotFoundError:
        return {}, None
    except NewerFormatError:  # a newer structome's record of a whole shard: refuse, never quarantine the shard
        raise
    except FormatError as error:
        return {}, f"unreadable record of checksums ({error})"


def _archive_problem(layout: DatabaseLayout, relative: str, recorded: FileDigest | None) -> str | None:
    path = layout.path(relative)
    try:
        size = layout.fs.get_file_info(path).size
        if size is None:
            return "missing"
        if recorded is None:
            return None
        if size != recorded.size:
            return f"{size} bytes, {recorded.size} recorded (truncated or rewritten)"
        digest = hashlib.sha256()
        with layout.fs.open_input_stream(path) as stream:
            while chunk := stream.read(8 << 20):
                digest.update(chunk)
    except OSError as error:
        return f"unreadable ({error})"
    return (
        None if digest.hexdigest() == recorded.sha256 else "checksum mismatch (SHA-256 differs from the recorded one)"
    )


def _segment_damage(layout: DatabaseLayout, segment: Segment) -> list[Damage]:
    damage = []
    for table in SHARD_TABLES:
        parts = segment.table_files(table)
        total = 0
        for part in parts:
            found = footer_problem(layout.fs, layout.path(part.path), part.digest)
            if found is not None:
                damage.append(Damage(part.path, found, segment=segment.segment_id))
                total = -1
            elif total >= 0:
                total += _rows(layout, part.path)
        expected = segment.rows.get(table)
        if total >= 0 and expected is not None and total != expected:
            damage.append(
                Damage(
                    parts[0].path,
                    f"the {table} parts hold {total} rows, the manifest records {expected}",
                    segment=segment.segment_id,
                )
            )
    return damage


def _rows(layout: DatabaseLayout, relative: str) -> int:
    with layout.fs.open_input_file(layout.path(relative)) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _parquet_files(layout: DatabaseLayout, folder: str) -> list[str]:
    return [f for f in layout.list_files(folder) if f.count("/") == 1 and f.endswith(".parquet")]


def _member_damage(
    layout: DatabaseLayout, manifest: TableManifest, level0: dict[str, str], damaged: set[str]
) -> tuple[list[Damage], int]:
    """Every member the readable `files` tables list, read at its recorded offset and checked; one Damage per
    archive (its first bad member, and how many)."""
    sources = [Damage(f"{folder}/files.parquet", "", shard=shard) for shard, folder in level0.items()]
    sources += [
        Damage(part.path, "", segment=segment.segment_id)
        for segment in manifest.segments
        for part in segment.table_files("files")
    ]
    members: dict[str, list[dict]] = {}
    damage, count = [], 0
    for source in sources:
        if source.file in damaged:
            continue
        try:  # a footer that holds says nothing of the pages (no checksum recorded for older shards and segments)
            with layout.fs.open_input_file(layout.path(source.file)) as handle:
                rows = pq.read_table(handle, columns=_MEMBER_COLUMNS).to_pylist()
        except (OSError, ValueError) as error:  # pyarrow: OSError for a damaged page, ArrowInvalid a ValueError
            damage.append(dataclasses.replace(source, problem=f"unreadable ({error})".replace("\n", " ")))
            continue
        for row in rows:
            members.setdefault(row["archive"], []).append(row)
    for archive, rows in sorted(members.items()):
        count += len(rows)
        if archive in damaged:
            continue
        if (problem := _first_bad_member(layout, archive, rows)) is not None:
            damage.append(Damage(archive, problem, shard=archive.split("/")[1]))
    return damage, count


def _first_bad_member(layout: DatabaseLayout, archive: str, rows: list[dict]) -> str | None:
    try:
        data = layout.read_bytes(archive)
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error})"
    bad = []
    for row in sorted(rows, key=lambda r: r["offset"]):
        end = row["offset"] + row["length"]
        if end > len(data):
            bad.append(f"member {row['member']} ends at byte {end}, the archive has {len(data)} (truncated)")
        elif hashlib.sha256(data[row["offset"] : end]).hexdigest() != row["sha256"]:
            bad.append(f"member {row['member']} at byte {row['offset']}: checksum mismatch")
    if not bad:
        return None
    return bad[0] + (f" (and {len(bad) - 1} more members)" if len(bad) > 1 else "")


# ---- the quick check (build, status) -----------------------------------------------------------------------------


def quick_check(layout: DatabaseLayout) -> list[Damage]:
    """What a glance finds (no checksums): the visible table files (storage.integrity.parquet_problem) and every
    archive shorter than the end of its last member the `files` table records (one query and one listing)."""
    visible, damage = layout.checked_parts(("files", "failures", "builds"))
    sources = [part.path for part in visible["files"]]
    if not sources:
        return damage
    connection = catalog.connect_files(layout)
    try:
        ends = connection.execute(
            'SELECT archive, max("offset" + length) FROM read_parquet'
            f"([{catalog.sql_listing(layout, sources)}], union_by_name = true) GROUP BY archive"
        ).fetchall()
    finally:
        connection.close()
    sizes = _file_sizes(layout, "shards")
    for archive, end in sorted(ends):
        size = sizes.get(archive)
        if size is None or size < end:
            problem = "missing" if size is None else f"truncated ({size} bytes; its members run to byte {end})"
            damage.append(Damage(archive, problem, shard=archive.split("/")[1]))
    return damage


def _file_sizes(layout: DatabaseLayout, folder: str) -> dict[str, int]:
    """Relative path -> size of every file under a folder (one recursive listing)."""
    selector = pafs.FileSelector(layout.path(folder), recursive=True, allow_not_found=True)
    prefix = len(layout.base) + 1
    return {info.path[prefix:]: info.size for info in layout.fs.get_file_info(selector) if info.is_file}


def damage_summary(layout: DatabaseLayout, damage: list[Damage], limit: int = 10) -> str:
    """One line naming the damaged files (the first `limit`) and what to do."""
    named = "; ".join(map(str, damage[:limit])) + (f"; and {len(damage) - limit} more" if len(damage) > limit else "")
    return (
        f"{layout.location} has {len(damage)} damaged file{'s' if len(damage) > 1 else ''}: {named}. "
        f"Run `structome verify --db {layout.location} --repair` to quarantine them (the next build re-folds their "
        "entries)"
    )


def refuse_damaged(layout: DatabaseLayout) -> None:
    """DamagedDatabaseError when the quick check finds damage: a build on a damaged database would not know which
    entries it holds (it would re-fold a damaged shard's entries beside the shard)."""
    damage = quick_check(layout)
    if damage:
        raise DamagedDatabaseError(damage_summary(layout, damage))


# ---- repair ------------------------------------------------------------------------------------------------------


def repair(layout: DatabaseLayout) -> VerifyReport:
    """Verify, then quarantine or re-derive what is damaged (see the module's docstring); hold no lock (it takes
    the build and compaction locks). The report is of the check before the repair, with what was done."""
    if not layout.is_local:
        raise ValueError(f"{layout.location}: repair works on local databases (move damaged shards by hand)")
    with layout.lock(), layout.compaction_lock():
        report = verify(layout)
        if not report.damage:
            return report
        done = _repair(layout, report.damage)
        catalog.refresh_catalog(layout)  # rewrites damaged schema files and the views
        after = verify(layout)
    return VerifyReport(report.damage, report.files_checked, report.members_checked, tuple(done), after.damage)


def _repair(layout: DatabaseLayout, damage: Iterable[Damage]) -> list[str]:
    damage = list(damage)
    quarantine = f"{QUARANTINE}/{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S.%fZ}"
    manifest = layout.table_manifest()
    shards = layout.committed_shards()
    bad_shards = {d.shard for d in damage if d.shard is not None}
    bad_segments = {d.segment for d in damage if d.segment is not None}
    bad_segments |= _segments_holding(layout, manifest, bad_shards & manifest.compacted_shards, bad_segments)
    done = []
    if bad_segments:
        done += _drop_segments(layout, manifest, bad_segments, bad_shards, quarantine)
    for shard in sorted(bad_shards - manifest.compacted_shards):
        if shard in shards:
            _move(layout, shards[shard], quarantine)
            done.append(f"quarantined shard {shard}: the next build re-folds its entries")
    for item in damage:
        if item.shard is None and item.segment is None and not item.file.startswith("schema/"):
            _move(layout, item.file, quarantine)
            done.append(f"quarantined {item.file}: its rows are lost")
    return done


def _shards_of(layout: DatabaseLayout, segment: Segment) -> set[str]:
    """The shards whose rows a (readable) segment holds: its entries' `shard` and its files' archive folders."""
    found = set()
    for table, column in (("entries", "shard"), ("files", "archive")):
        for part in segment.table_files(table):
            with layout.fs.open_input_file(layout.path(part.path)) as handle:
                values = pq.read_table(handle, columns=[column]).column(column).unique().to_pylist()
            found |= {value.split("/")[1] if column == "archive" else value for value in values}
    return found


def _segments_holding(layout: DatabaseLayout, manifest: TableManifest, shards: set[str], damaged: set[str]) -> set[str]:
    """The healthy segments that hold rows of these compacted shards."""
    if not shards:
        return set()
    return {s.segment_id for s in manifest.segments if s.segment_id not in damaged and _shards_of(layout, s) & shards}


def _drop_segments(
    layout: DatabaseLayout, manifest: TableManifest, dropped: set[str], bad_shards: set[str], quarantine: str
) -> list[str]:
    """Drop segments from the manifest; give their shards back to level 0 (tables whole) or quarantine them."""
    kept = [s for s in manifest.segments if s.segment_id not in dropped]
    known: set[str] = set().union(*(_shards_of(layout, s) for s in kept))
    covered = manifest.compacted_shards - known  # what the dropped segments held
    folders = layout.committed_shards()
    back: set[str] = set()
    lost: set[str] = set()
    for shard in sorted(covered):
        whole = shard in folders and shard not in bad_shards and _tables_whole(layout, folders[shard])
        (back if whole else lost).add(shard)
    for shard in sorted(lost):
        if shard in folders:
            _move(layout, folders[shard], quarantine)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    layout.write_table_manifest(
        TableManifest(manifest.generation + 1, tuple(kept), manifest.compacted_shards - covered, created)
    )
    layout.delete_file("tables/collected.json")  # the next collection re-checks every compacted shard's tables
    for segment in manifest.segments:
        if segment.segment_id in dropped:
            for path in segment.files:
                if layout.exists(path):
                    _move(layout, path, quarantine)
    lines = [f"dropped segment {s} from the table manifest (its parts quarantined)" for s in sorted(dropped)]
    lines += [f"shard {s}: back to level 0, its rows re-derived from its own tables" for s in sorted(back)]
    lines += [f"quarantined shard {s}: the next build re-folds its entries" for s in sorted(lost)]
    return lines


def _tables_whole(layout: DatabaseLayout, folder: str) -> bool:
    recorded, problem = _recorded(layout, folder)
    if problem is not None:
        return False
    names = [f"{table}.parquet" for table in SHARD_TABLES]
    return all(footer_problem(layout.fs, layout.path(f"{folder}/{n}"), recorded.get(n)) is None for n in names)


def _move(layout: DatabaseLayout, relative: str, quarantine: str) -> None:
    """Out of the visible layout with one rename, to the same relative path under the quarantine folder."""
    source, target = Path(layout.path(relative)), Path(layout.path(f"{quarantine}/{relative}"))
    make_folders_durably(target.parent)
    os.rename(source, target)
    sync_folder(source.parent)  # gone from the layout for good: a power loss must not bring it back
    sync_folder(target.parent)
    logger.info("moved %s to %s", relative, target)
