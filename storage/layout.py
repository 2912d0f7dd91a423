"""The database folder: where every table, archive and report lives, and how things appear atomically.

    DB/
      catalog.duckdb                 views over the Parquet files below
      shards/<shard>/                one committed shard (appears by a single rename)
        entries.parquet residues.parquet files.parquet failures.parquet archive.tar
      failures/<build>.parquet       failures of one build no shard holds (ingest, never-committed shards)
      builds/<build>.parquet         one row per build; builds/<build>.report.json its report,
                                     .manifest.json its planned shards, .events.jsonl shard progress
      .staging/                      shards being written; never read
      .build.lock                    held by the build that is writing
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


_TABLE_GLOBS = {
    "entries": ("shards/*/entries.parquet",),
    "residues": ("shards/*/residues.parquet",),
    "files": ("shards/*/files.parquet",),
    "failures": ("failures/*.parquet", "shards/*/failures.parquet"),
    "builds": ("builds/*.parquet",),
}


class DatabaseLockedError(RuntimeError):
    """Another build is writing this database."""


@dataclass(frozen=True)
class DatabaseLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    def shard(self, shard_id: str) -> Path:
        return self.shards / shard_id

    def build_row(self, build_id: str) -> Path:
        return self.root / "builds" / f"{build_id}.parquet"

    def build_report(self, build_id: str) -> Path:
        return self.root / "builds" / f"{build_id}.report.json"

    def build_manifest(self, build_id: str) -> Path:
        """The plan of a build: its shards with their sizes (written once, at the start)."""
        return self.root / "builds" / f"{build_id}.manifest.json"

    def build_events(self, build_id: str) -> Path:
        """Append-only log of shard state changes (started, committed, retried, failed)."""
        return self.root / "builds" / f"{build_id}.events.jsonl"

    def build_failures(self, build_id: str) -> Path:
        """Failures of a build not held by any shard file (ingest, and shards that never committed)."""
        return self.root / "failures" / f"{build_id}.parquet"

    def table_globs(self, table: str) -> tuple[str, ...]:
        """Globs of a table's Parquet files, relative to the database folder."""
        return _TABLE_GLOBS[table]

    def exists(self) -> bool:
        return self.catalog.exists()

    def create(self) -> None:
        for folder in (self.root, self.shards, self.staging, self.root / "builds", self.root / "failures"):
            folder.mkdir(parents=True, exist_ok=True)

    def is_committed(self, shard_id: str) -> bool:
        return self.shard(shard_id).is_dir()

    def new_staging_dir(self, shard_id: str) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{shard_id}.", dir=self.staging))

    def commit_shard(self, staging_dir: Path, shard_id: str) -> bool:
        """Make a fully written shard visible with one rename. False if it was already committed."""
        for file in staging_dir.iterdir():
            _fsync(file)
        try:
            os.rename(staging_dir, self.shard(shard_id))
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(staging_dir, ignore_errors=True)
            return False
        return True

    def clear_staging(self) -> None:
        """Remove leftovers of crashed writers (only while holding the build lock)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def lock(self) -> BuildLock:
        return BuildLock(self.root / ".build.lock")

    def build_running(self) -> bool:
        """True while some process holds the build lock (checked without taking it for long)."""
        path = self.root / ".build.lock"
        if not path.exists():
            return False
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class BuildLock:
    """An exclusive advisory lock on the database folder, held for a whole build."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DatabaseLockedError(
                f"another build is writing {self.path.parent} (lock {self.path}); wait for it or use another --db"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    _fsync(temporary)
    os.replace(temporary, path)


def write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    _fsync(temporary)
    os.replace(temporary, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
