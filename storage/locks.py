"""The build lock: one build writes a database at a time.

On a file system it is an flock on `.build.lock` (released by the kernel when the holder dies). Object
stores have no locks: there it is a lease object that the holder renews every few seconds; a lease not
renewed for LEASE_SECONDS belongs to a dead build and may be taken over. A lease names its format
(LEASE_FORMAT); one without is version 1, and a newer one is refused (a newer structome holds it).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TextIO

import pyarrow.fs as pafs

from structome.storage.formats import check_format, format_tag

LEASE_SECONDS = 60.0  # a lease older than this was left by a dead build
RENEW_SECONDS = 10.0
SETTLE_SECONDS = 1.0  # wait before re-reading a new lease, so a racing writer's lease shows
LEASE_VERSION = 1
LEASE_FORMAT = format_tag("lease", LEASE_VERSION)


class DatabaseLockedError(RuntimeError):
    """Another build is writing this database."""


def _refusal(where: str, holder: str, activity: str) -> DatabaseLockedError:
    return DatabaseLockedError(f"another {activity} is writing {where} ({holder}); wait for it or use another --db")


class BuildLock:
    """An exclusive advisory lock on the database folder, held for a whole build."""

    def __init__(self, path: Path, activity: str = "build"):
        self.path, self.activity = path, activity  # activity: what the lock guards, for the refusal's message
        self._handle: TextIO | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise _refusal(str(self.path.parent), f"lock {self.path}", self.activity) from None
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

    def held_by_another(self) -> bool:
        """True while some process holds the lock (checked without taking it for long)."""
        if not self.path.exists():
            return False
        with open(self.path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class LeaseLock:
    """A renewed lease object: taken when absent or stale, verified after a settle delay, renewed by a thread."""

    def __init__(self, fs: pafs.FileSystem, path: str, where: str, activity: str = "build"):
        self.fs, self.path, self.where, self.activity = fs, path, where, activity
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> LeaseLock:
        current = read_lease(self.fs, self.path)
        if current is not None and _fresh(current):
            raise _refusal(self.where, f"lease held by {current['owner']}", self.activity)
        self._write()
        time.sleep(SETTLE_SECONDS)
        current = read_lease(self.fs, self.path)
        if current is None or current["owner"] != self.owner:
            raise _refusal(
                self.where, f"lease taken by {current['owner'] if current else 'another writer'}", self.activity
            )
        self._renewer = threading.Thread(target=self._renew, name="structome-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = read_lease(self.fs, self.path)
        if current is not None and current["owner"] == self.owner:
            self.fs.delete_file(self.path)

    def _write(self) -> None:
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(json.dumps({"format": LEASE_FORMAT, "owner": self.owner, "renewedAt": time.time()}).encode())

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            self._write()


def read_lease(fs: pafs.FileSystem, path: str) -> dict | None:
    """The lease at `path`, None if there is none; FormatError for a lease of a newer structome."""
    try:
        with fs.open_input_stream(path) as stream:
            lease = json.loads(stream.read())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # not ours to judge: treat as held until it goes stale
        return {"owner": "unreadable lease", "renewedAt": time.time()}
    check_format(lease, "lease", LEASE_VERSION, path)
    return lease


def lease_is_fresh(fs: pafs.FileSystem, path: str) -> bool:
    return _fresh(read_lease(fs, path))


def _fresh(lease: dict | None) -> bool:
    return lease is not None and time.time() - lease["renewedAt"] < LEASE_SECONDS
