"""The database: where every table, archive and report lives, and how things appear atomically.

    DB/
      structome.json                 the format marker: {"format": "structome-database", "layout": 1, ...}
      catalog.duckdb                 views over the Parquet files below (local databases only)
      shards/<shard>/                one committed shard:
        entries.parquet residues.parquet files.parquet failures.parquet archive.tar
        checksums.json               what was written (storage.integrity), checked by `structome verify`
      failures/<build>.parquet       failures of one build no shard holds (ingest, never-committed shards)
      builds/<build>.parquet         one row per build; builds/<build>.report.json its report,
                                     .manifest.json its planned shards, .events.jsonl shard progress
      schema/<table>.parquet         an empty, typed file per table
      tables/                        compacted segments and their manifests (storage.segments)
      quarantine/                    damaged files that `structome verify --repair` moved out of view (storage.verify)
      .staging/                      shards being written; never read
      .compaction/                   segments being written (the compaction's scratch); never read
      .build.lock                    held by the build that is writing
      .compaction.lock               held by the compaction that is running (builds and compaction run at once)

DB is a folder (local or a shared file system) or an object-store URI (`s3://bucket/prefix`,
`gs://bucket/prefix`; pyarrow's file systems, options in the URI query such as `?endpoint_override=...`).
A local shard is written under .staging and appears by one rename. Object stores have no rename: a shard
is written under `shards/<shard>/<attempt>/` and appears when the marker `shards/<shard>/<attempt>.committed`
is written; readers only ever see attempts with a marker.

Opening a database checks its format marker (storage.formats) on first use: a newer layout, or a corrupt
marker, is refused. A database from before markers is layout 1, read as it is; `create` (every build, under
the build lock) and `structome migrate` write its marker and run any pending layout migrations.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from structome.storage import formats
from structome.storage.atomic import (
    make_unique_folder,
    permission_denied,
    publish_folder,
    sync_folder,
    write_bytes_atomic,
    write_parquet_atomic,
)
from structome.storage.formats import MARKER_NAME, FormatError, new_marker, parse_marker
from structome.storage.integrity import Damage, parquet_problem
from structome.storage.locks import BuildLock, DatabaseLockedError, LeaseLock, lease_is_fresh
from structome.storage.segments import (
    MANIFESTS,
    SEGMENT_TABLES,
    SegmentFile,
    TableManifest,
    generation_of,
    manifest_path,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "DatabaseLayout",
    "DatabaseLockedError",
    "FormatError",
    "ShardTarget",
]

COMMIT_SUFFIX = ".committed"
SHARD_TABLES = SEGMENT_TABLES
_LOCK = ".build.lock"
_COMPACTION_LOCK = ".compaction.lock"
_TABLE_GLOBS = {
    "entries": ("shards/*/entries.parquet",),
    "residues": ("shards/*/residues.parquet",),
    "files": ("shards/*/files.parquet",),
    "failures": ("failures/*.parquet", "shards/*/failures.parquet"),
    "builds": ("builds/*.parquet",),
}
_LOOSE_TABLES = {"failures": "failures", "builds": "builds"}  # tables with files outside shards
_REMOTE_REQUESTS = 16  # files read at once on an object store
_WARNED: set[tuple[str, Damage]] = set()  # damage already reported by this process


@dataclass(frozen=True)
class ShardTarget:
    """Where a writer puts a shard's files before the commit."""

    shard_id: str
    folder: str  # file-system path to write into
    relative: str  # the shard's folder relative to the database once committed


class DatabaseLayout:
    """Names and atomic file operations of one database, on a local folder or an object store.

    A local folder's pyarrow file system is made on first use of `fs`: what `structome get` and `sql` read (the
    marker, the quick checks, one ranged read) goes through os, so those commands never import pyarrow (~165 ms).
    """

    def __init__(self, location: str | os.PathLike):
        text = os.fspath(location)
        self.uri = text if "://" in text else None  # with its query (the store's options)
        self._fs: pafs.FileSystem | None = None
        if "://" in text:
            import pyarrow.fs as pafs

            self._fs, base = pafs.FileSystem.from_uri(text)
            self.location = text.split("?", 1)[0].rstrip("/")
            self.is_local = isinstance(self._fs, pafs.LocalFileSystem)  # file:// URIs
        else:
            base = self.location = str(Path(text).resolve())
            self.is_local = True
        self.base = base.rstrip("/")
        self._marker: dict | None = None  # structome.json as read; None while unread or absent
        self._layout: int | None = None  # the database's layout; None: no database here (yet)
        self._marker_read = False
        self._migrating = False

    def __repr__(self) -> str:
        return f"DatabaseLayout({self.location!r})"

    @property
    def fs(self) -> pafs.FileSystem:
        """The database's pyarrow file system."""
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    @property
    def root(self) -> Path:
        """The database folder (local databases only)."""
        if not self.is_local:
            raise ValueError(f"{self.location} is not a local folder")
        self._require_readable()
        return Path(self.base)

    def path(self, relative: str) -> str:
        """A file-system path from a path relative to the database."""
        self._require_readable()
        return self._path(relative)

    def _path(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    # ---- format -------------------------------------------------------------------------------------

    @property
    def layout_version(self) -> int | None:
        """The database's layout (1 for one from before markers); None where there is no database yet."""
        return self.read_layout_version()

    def read_layout_version(self) -> int | None:
        """The layout, read once, on first use; FormatError for a corrupt marker or a layout newer than ours."""
        if not self._marker_read:
            self._marker, self._layout = self._read_marker()
            self._marker_read = True
        return self._layout

    def _read_marker(self) -> tuple[dict | None, int | None]:
        try:
            marker = parse_marker(self._read(self._path(MARKER_NAME)), f"{self.location}/{MARKER_NAME}")
        except FileNotFoundError:
            content = any(self._exists(self._path(f)) for f in ("shards", "builds"))
            return None, (1 if content else None)  # a database from before markers is layout 1
        return marker, marker["layout"]

    def _require_readable(self) -> None:
        version = self.layout_version
        if version is not None and version < formats.OLDEST_READABLE and not self._migrating:
            raise FormatError(
                f"{self.location} has layout {version}; this structome reads layouts "
                f"{formats.OLDEST_READABLE} to {formats.LAYOUT}: "
                f"run `structome migrate --db {self.location}`"
            )

    def migrate(self) -> list[str]:
        """Bring the database to this structome's layout and write its marker (hold the build lock).

        Idempotent; what it did, one line a step (nothing when the database was already current).
        """
        version = self.layout_version or formats.LAYOUT
        done = []
        self._migrating = True
        try:
            for step in range(version + 1, formats.LAYOUT + 1):  # a marker after each step: a rerun resumes
                formats.MIGRATIONS[step](self)
                self._write_marker({**(self._marker or new_marker(step)), "layout": step})
                done.append(f"migrated {self.location} from layout {step - 1} to layout {step}")
        finally:
            self._migrating = False
        if self._marker is None:
            self._write_marker(new_marker(version))
            done.append(f"wrote {self.location}/{MARKER_NAME} (layout {version})")
        return done

    def _write_marker(self, marker: dict) -> None:
        self._put_atomic(json.dumps(marker, indent=2).encode() + b"\n", self._path(MARKER_NAME))
        self._marker, self._layout, self._marker_read = marker, marker["layout"], True

    # ---- names --------------------------------------------------------------------------------------

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def compaction_scratch(self) -> Path:
        """Where a local compaction writes (the same file system, so segments appear by rename)."""
        return self.root / ".compaction"

    def shard(self, shard_id: str) -> str:
        """A committed local shard's folder, relative to the database."""
        return f"shards/{shard_id}"

    def build_row(self, build_id: str) -> str:
        return f"builds/{build_id}.parquet"

    def build_report(self, build_id: str) -> str:
        return f"builds/{build_id}.report.json"

    def build_manifest(self, build_id: str) -> str:
        """The plan of a build: its shards with their sizes (written once, at the start)."""
        return f"builds/{build_id}.manifest.json"

    def build_events(self, build_id: str) -> str:
        """Append-only log of shard state changes (started, committed, retried, failed)."""
        return f"builds/{build_id}.events.jsonl"

    def build_progress(self, build_id: str) -> str:
        """The latest progress reading of a running build (proteins folded, rate, ETA), rewritten periodically."""
        return f"builds/{build_id}.progress.json"

    def build_failures(self, build_id: str) -> str:
        """Failures of a build not held by any shard file (ingest, and shards that never committed)."""
        return f"failures/{build_id}.parquet"

    def schema_file(self, table: str) -> str:
        return f"schema/{table}.parquet"

    def table_globs(self, table: str) -> tuple[str, ...]:
        """Globs of a table's Parquet files, relative to the database folder (local databases)."""
        return _TABLE_GLOBS[table]

    # ---- files --------------------------------------------------------------------------------------

    def exists(self, relative: str | None = None) -> bool:
        """Whether a file exists; without an argument, whether this is a structome database."""
        if relative is None:
            return self.catalog.exists() if self.is_local else self.exists(self.schema_file("entries"))
        return self._exists(self.path(relative))

    def _exists(self, path: str) -> bool:
        if self.is_local:
            return os.path.exists(path)
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def create(self) -> None:
        """Make the database, or bring an existing one to this layout (under the build lock if it may hold data)."""
        self.read_layout_version()  # before the folders below make a new database look like an old one
        if self.is_local:
            for folder in ("", "shards", ".staging", "builds", "failures", "schema"):
                Path(self._path(folder)).mkdir(parents=True, exist_ok=True)
        self.migrate()

    def read_bytes(self, relative: str) -> bytes:
        try:
            return self._read(self.path(relative))
        except PermissionError as error:
            raise permission_denied(error, "read", self.path(relative)) from error

    def _read(self, path: str) -> bytes:
        if self.is_local:
            with open(path, "rb") as file:
                return file.read()
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode()

    def read_range(self, relative: str, offset: int, length: int) -> bytes:
        """One ranged read (a single GET with a Range header on object stores)."""
        try:
            if self.is_local:
                with open(self.path(relative), "rb", buffering=0) as file:
                    return os.pread(file.fileno(), length, offset)
            with self.fs.open_input_file(self.path(relative)) as handle:
                return handle.read_at(length, offset)
        except PermissionError as error:
            raise permission_denied(error, "read", self.path(relative)) from error

    def list_files(self, folder: str) -> list[str]:
        """Paths (relative to the database) of every file under a folder, recursively, sorted."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(folder), recursive=True, allow_not_found=True)
        prefix = len(self.base) + 1
        return sorted(info.path[prefix:] for info in self.fs.get_file_info(selector) if info.is_file)

    def write_bytes_atomic(self, data: bytes, relative: str) -> None:
        """Readers see the old file or the whole new one, never a part (object PUTs are atomic)."""
        self._put_atomic(data, self.path(relative))

    def _put_atomic(self, data: bytes, path: str) -> None:
        if self.is_local:
            write_bytes_atomic(data, path)
            return
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def write_text_atomic(self, text: str, relative: str) -> None:
        self.write_bytes_atomic(text.encode(), relative)

    def write_parquet_atomic(self, table: pa.Table, relative: str) -> None:
        if self.is_local:
            write_parquet_atomic(table, self.path(relative))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, self.path(relative), filesystem=self.fs, compression="zstd")

    def append_lines(self, lines: list[str], relative: str) -> None:
        """Append to a log: a durable append locally; a new part object on object stores (no appends)."""
        if not lines:
            return
        text = "".join(line + "\n" for line in lines)
        if self.is_local:
            path = Path(self.path(relative))
            created = not path.exists()
            with open(path, "a") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if created:  # the new file's entry in its folder
                sync_folder(path.parent)
            return
        self.write_text_atomic(text, f"{relative}.parts/{time.time_ns():020d}-{secrets.token_hex(3)}")

    def read_lines(self, relative: str) -> list[str]:
        if self.is_local:
            return self.read_text(relative).splitlines() if self.exists(relative) else []
        return [line for part in self.list_files(f"{relative}.parts") for line in self.read_text(part).splitlines()]

    # ---- shards -------------------------------------------------------------------------------------

    def begin_shard(self, shard_id: str) -> ShardTarget:
        """A private folder for one attempt at writing a shard."""
        if self.is_local:
            try:
                Path(self.staging).mkdir(parents=True, exist_ok=True)
                folder = make_unique_folder(self.staging, prefix=f"{shard_id}.")
            except PermissionError as error:
                raise permission_denied(error, "write a shard into", self.staging) from error
            return ShardTarget(shard_id, str(folder), self.shard(shard_id))
        relative = f"shards/{shard_id}/{secrets.token_hex(6)}"
        return ShardTarget(shard_id, self.path(relative), relative)

    def commit_shard(self, target: ShardTarget) -> bool:
        """Make a fully written shard visible at once. False (and the attempt removed) if already committed."""
        if self.is_committed(target.shard_id):
            self.abandon_shard(target)
            return False
        if not self.is_local:
            self.write_bytes_atomic(b"", target.relative + COMMIT_SUFFIX)
            return True
        try:
            publish_folder(target.folder, self.path(target.relative))
        except OSError:  # committed by someone else since the check
            if not self.is_committed(target.shard_id):
                raise
            self.abandon_shard(target)
            return False
        return True

    def abandon_shard(self, target: ShardTarget) -> None:
        if self.is_local:
            shutil.rmtree(target.folder, ignore_errors=True)
        else:
            self.fs.delete_dir_contents(target.folder, missing_dir_ok=True)

    def committed_shards(self) -> dict[str, str]:
        """shard id -> the committed shard's folder relative to the database."""
        if self.is_local:
            return {name: self.shard(name) for name in sorted(self._local_shard_ids()) if self._is_shard_folder(name)}
        committed: dict[str, str] = {}
        for marker in self.list_files("shards"):
            if marker.endswith(COMMIT_SUFFIX):  # shards/<shard>/<attempt>.committed; the first attempt wins
                committed.setdefault(marker.split("/")[1], marker.removesuffix(COMMIT_SUFFIX))
        return committed

    def _local_shard_ids(self) -> set[str]:
        """The names under shards/ of a local database: the committed shards' folders (a commit renames a complete
        folder there) and whatever else someone put there (see _is_shard_folder). One listdir, no stat: 156k
        shards in ~0.2 s; a caller checks only the names it keeps."""
        try:
            return set(os.listdir(self.path("shards")))
        except FileNotFoundError:
            return set()

    def _is_shard_folder(self, name: str) -> bool:
        """Not a hidden name (an editor's, a file manager's) and a folder."""
        return not name.startswith(".") and os.path.isdir(self.path(self.shard(name)))

    def uncompacted_shards(self, manifest: TableManifest) -> dict[str, str]:
        """shard id -> folder of the committed shards that `manifest`'s segments do not cover (level 0), sorted."""
        if self.is_local:
            level0 = self._local_shard_ids() - manifest.compacted_shards
            return {name: self.shard(name) for name in sorted(level0) if self._is_shard_folder(name)}
        return {s: f for s, f in self.committed_shards().items() if s not in manifest.compacted_shards}

    def is_committed(self, shard_id: str) -> bool:
        if self.is_local:
            return Path(self.path(self.shard(shard_id))).is_dir()
        return any(f.endswith(COMMIT_SUFFIX) for f in self.list_files(f"shards/{shard_id}"))

    def table_files(self, table: str) -> list[str]:
        """Every visible Parquet file of a table, relative to the database: the current segments' files, then
        those of committed shards no segment covers (the manifest is read first: a shard committed meanwhile
        shows as a shard; one compacted meanwhile shows in the segments of the old generation)."""
        return self.visible_files([table])[table]

    def visible_files(self, tables) -> dict[str, list[str]]:
        """table_files of several tables, from one reading of the manifest and the shard listing."""
        return {table: [part.path for part in parts] for table, parts in self.visible_parts(tables).items()}

    def visible_parts(self, tables) -> dict[str, list[SegmentFile]]:
        """visible_files with what is known of each file's key ranges (a segment's parts; none for shards).

        A damaged shard or segment (a table file missing, truncated or not Parquet: storage.integrity) is left out
        whole, with a warning naming it, so the healthy rest stays readable (`checked_parts` says what was left out)."""
        return self.checked_parts(tables)[0]

    def checked_parts(self, tables) -> tuple[dict[str, list[SegmentFile]], list[Damage]]:
        """visible_parts, and the damaged files whose units (a shard, a segment, a loose file) it left out."""
        manifest = self.table_manifest()
        shards = self.uncompacted_shards(manifest)
        damage = self.unit_damage(manifest, shards)
        bad_shards = {d.shard for d in damage}
        bad_segments = {d.segment for d in damage}
        segments = [segment for segment in manifest.segments if segment.segment_id not in bad_segments]
        folders = [folder for shard, folder in shards.items() if shard not in bad_shards]
        visible = {}
        for table in tables:
            files = []
            if table in SHARD_TABLES:
                files = [part for segment in segments for part in segment.table_files(table)]
                files += [SegmentFile(f"{folder}/{table}.parquet") for folder in folders]
            if table in _LOOSE_TABLES:
                listing = self.list_files(_LOOSE_TABLES[table])
                loose = [f for f in listing if f.count("/") == 1 and f.endswith(".parquet")]
                broken = self.damaged_files(loose)
                damage += broken
                files += [SegmentFile(f) for f in loose if f not in {d.file for d in broken}]
            visible[table] = files
        for item in damage:
            if (self.location, item) not in _WARNED:  # once per process (a server re-lists every reload)
                _WARNED.add((self.location, item))
                logger.warning(
                    "%s is damaged and left out of every query: %s; `structome verify --db %s --repair` quarantines it",
                    item.unit,
                    f"{item.file}: {item.problem}",
                    self.location,
                )
        return visible, damage

    def unit_damage(self, manifest: TableManifest, shards: dict[str, str]) -> list[Damage]:
        """The quick check (storage.integrity.parquet_problem) of every table file of the given level-0 shards
        (shard id -> folder) and of the manifest's segments."""
        shard_files = {f"{folder}/{table}.parquet": shard for shard, folder in shards.items() for table in SHARD_TABLES}
        segment_files = {
            part.path: (segment.segment_id, part.digest.size if part.digest else None)
            for segment in manifest.segments
            for table in SHARD_TABLES
            for part in segment.table_files(table)
        }
        damage = [Damage(d.file, d.problem, shard=shard_files[d.file]) for d in self.damaged_files(list(shard_files))]
        expected = {path: size for path, (_, size) in segment_files.items()}
        for found in self.damaged_files(list(segment_files), expected):
            damage.append(Damage(found.file, found.problem, segment=segment_files[found.file][0]))
        return damage

    def damaged_files(self, files: list[str], sizes: dict[str, int | None] | None = None) -> list[Damage]:
        """The quick check of each file (relative paths); in parallel on object stores (one ranged read each)."""
        sizes = sizes or {}

        def check(relative: str) -> str | None:
            return parquet_problem(None if self.is_local else self.fs, self.path(relative), sizes.get(relative))

        problems = self.map_files(check, files)
        return [Damage(file, problem) for file, problem in zip(files, problems, strict=True) if problem is not None]

    def map_files(self, function: Callable[[str], T], files: list[str]) -> list[T]:
        """function(file) of each file, in order: in parallel on object stores, where each call is a request or
        two, so that n files cost about one round trip, not n."""
        if self.is_local or len(files) < 2:
            return list(map(function, files))
        with ThreadPoolExecutor(_REMOTE_REQUESTS) as pool:
            return list(pool.map(function, files))

    # ---- compacted tables (storage.segments) ----------------------------------------------------------

    def manifest_generations(self) -> list[int]:
        """The generations of table manifests stored, oldest first."""
        generations = (generation_of(f) for f in self.list_files(MANIFESTS))
        return sorted(g for g in generations if g is not None)

    def table_manifest(self, generation: int | None = None) -> TableManifest:
        """The current table manifest (or a given generation); generation 0 when nothing was ever compacted."""
        if generation is None:
            generations = self.manifest_generations()
            if not generations:
                return TableManifest()
            generation = generations[-1]
        relative = manifest_path(generation)
        return TableManifest.from_bytes(self.read_bytes(relative), f"{self.location}/{relative}")

    def write_table_manifest(self, manifest: TableManifest) -> None:
        """Make a generation current (only under the build lock): one atomic write."""
        self.write_bytes_atomic(manifest.to_bytes(), manifest_path(manifest.generation))

    def delete_file(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.path(relative))
        except FileNotFoundError:
            pass

    def clear_staging(self) -> None:
        """Remove leftovers of crashed writers (only while holding the build lock)."""
        if self.is_local:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir(parents=True, exist_ok=True)
            return
        committed = set(self.committed_shards().values())
        attempts = {"/".join(f.split("/")[:3]) for f in self.list_files("shards") if f.count("/") >= 3}
        for attempt in sorted(attempts - committed):
            self.fs.delete_dir_contents(self.path(attempt), missing_dir_ok=True)

    # ---- the build lock -------------------------------------------------------------------------------

    def lock(self) -> BuildLock | LeaseLock:
        """The build lock; a database of an older layout can be locked too, to migrate it."""
        self.read_layout_version()  # a newer layout or a corrupt marker is refused before any lock is taken
        if self.is_local:
            return BuildLock(Path(self._path(_LOCK)))
        return LeaseLock(self.fs, self._path(_LOCK), self.location, uri=self.uri)

    def compaction_lock(self) -> BuildLock | LeaseLock:
        """Held while compacting: a build may commit shards meanwhile (compaction merges only shards it listed)."""
        self.read_layout_version()
        if self.is_local:
            return BuildLock(Path(self._path(_COMPACTION_LOCK)), "compaction")
        return LeaseLock(self.fs, self._path(_COMPACTION_LOCK), self.location, "compaction", uri=self.uri)

    def build_running(self) -> bool:
        """True while some process holds the build lock."""
        if self.is_local:
            return BuildLock(Path(self.path(_LOCK))).held_by_another()
        return lease_is_fresh(self.fs, self.path(_LOCK))
