"""The build lock: one build writes a database at a time.

On a file system it is an flock on `.build.lock` (released by the kernel when the holder dies). Object
stores have no locks: there it is a lease object that the holder renews every few seconds; a lease not
renewed for LEASE_SECONDS belongs to a dead build and may be taken over. A lease names its format
(LEASE_FORMAT); one without is version 1, and a newer one is refused (a newer structome holds it).

On S3 (with boto3 installed) the lease is taken and renewed with conditional writes: created only if absent
(`If-None-Match: *`), replaced only if unchanged since read (`If-Match: <etag>`), so two builds can never both
hold it, and a holder whose lease was taken over learns it at its next renewal. Elsewhere (GCS, or S3 without
boto3) it is written, then read back after SETTLE_SECONDS: two builds that take a stale lease within that delay
of each other's write may both believe they hold it. Either way a holder that cannot renew for LOST_AFTER_SECONDS
(half of LEASE_SECONDS, so before anyone may take over) counts the lease as lost: `ensure_held` then raises
LeaseLostError, and the build stops writing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qs, urlsplit

from structome.storage.formats import FormatError, check_format, format_tag

if TYPE_CHECKING:
    import pyarrow.fs as pafs

LEASE_SECONDS = 60.0  # a lease older than this was left by a dead build
RENEW_SECONDS = 10.0
LOST_AFTER_SECONDS = LEASE_SECONDS / 2  # a holder unable to renew this long stops, well before a takeover
SETTLE_SECONDS = 1.0  # wait before re-reading a new lease, so a racing writer's lease shows
LEASE_VERSION = 1
LEASE_FORMAT = format_tag("lease", LEASE_VERSION)

logger = logging.getLogger(__name__)


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

    def ensure_held(self) -> None:
        """An flock cannot be lost while its holder lives: nothing to check."""

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


class LeaseLostError(DatabaseLockedError):
    """This build's lease is gone (not renewed in time, or taken over): it must stop writing."""


class LeaseLock:
    """A renewed lease object: taken when absent or stale, renewed by a thread; `ensure_held` says if it is lost."""

    def __init__(self, fs: pafs.FileSystem, path: str, where: str, activity: str = "build", uri: str | None = None):
        self.where, self.activity = where, activity
        self.store = lease_object(fs, path, uri)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._version: str | None = None  # the lease object's version as this holder last wrote it
        self._renewed = 0.0  # time.monotonic() of the last successful write (a clock step must not lose it)
        self._lost: str | None = None  # why the lease is lost

    def __enter__(self) -> LeaseLock:
        current, version = self.store.read()
        if current is not None and _fresh(current):
            raise _refusal(self.where, f"lease held by {current['owner']}", self.activity)
        self._take(current, version)
        self._renewer = threading.Thread(target=self._renew, name="structome-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            current, _ = self.store.read()
        except FormatError:  # a newer structome's lease: never ours to delete
            return
        if current is not None and current["owner"] == self.owner:
            self.store.delete()

    def ensure_held(self) -> None:
        """Raise LeaseLostError once the lease is lost; a build calls it before it goes on writing."""
        if self._lost is not None:
            raise LeaseLostError(
                f"lost the {self.activity} lease on {self.where}: {self._lost}; stopped writing. Run the "
                f"{self.activity} again to resume (what was committed is kept)"
            )

    def _take(self, current: dict | None, version: str | None) -> None:
        """Write our lease over the absent or stale one; without conditional writes, read it back after a delay."""
        body = self._body()
        taken = self.store.create(body) if current is None else self.store.replace(body, version)
        if taken is None:
            raise _refusal(self.where, "lease taken by another writer at the same moment", self.activity)
        self._version, self._renewed = taken, time.monotonic()
        if self.store.conditional:
            return
        time.sleep(SETTLE_SECONDS)
        current, _ = self.store.read()
        if current is None or current["owner"] != self.owner:
            raise _refusal(
                self.where, f"lease taken by {current['owner'] if current else 'another writer'}", self.activity
            )

    def _body(self) -> bytes:
        return json.dumps({"format": LEASE_FORMAT, "owner": self.owner, "renewedAt": time.time()}).encode()

    def _renew(self) -> None:
        """Renew every RENEW_SECONDS; a failed write is tried again until LOST_AFTER_SECONDS have passed."""
        error: Exception | None = None
        while self._lost is None and not self._stop.wait(RENEW_SECONDS):
            try:
                self._renew_once()
                error = None
            except OSError as failure:
                error = failure
                logger.warning("could not renew the lease on %s: %s", self.where, failure)
            except FormatError as failure:  # a newer structome's lease: not ours any more
                self._lose(f"the lease could not be read ({failure})")
            if self._lost is None and time.monotonic() - self._renewed > LOST_AFTER_SECONDS:
                self._lose(f"it could not be renewed for {time.monotonic() - self._renewed:.0f} s ({error})")

    def _renew_once(self) -> None:
        if not self.store.conditional:  # look first: the write itself cannot tell
            current, _ = self.store.read()
            if current is not None and current["owner"] != self.owner:
                self._lose(f"{current['owner']} took it over")
                return
        version = self.store.replace(self._body(), self._version)
        if version is None:
            self._lose("another writer took it over")
            return
        self._version, self._renewed = version, time.monotonic()

    def _lose(self, reason: str) -> None:
        logger.error(
            "lost the %s lease on %s: %s; the %s stops writing", self.activity, self.where, reason, self.activity
        )
        self._lost = reason


class _PlainLeaseObject:
    """The lease through pyarrow's file system: plain reads and writes (no conditions)."""

    conditional = False

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[dict | None, str | None]:
        return read_lease(self.fs, self.path), None

    def create(self, body: bytes) -> str | None:
        return self.replace(body, None)

    def replace(self, body: bytes, version: str | None) -> str | None:
        """Write BODY whatever is there; the version is unknown ("")."""
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(body)
        return ""

    def delete(self) -> None:
        self.fs.delete_file(self.path)


class _S3LeaseObject:
    """The lease on S3 through boto3's conditional PUTs; versions are ETags. Store errors become OSError."""

    conditional = True

    def __init__(self, client, path: str):
        self.client = client
        self.bucket, self.key = path.split("/", 1)

    def read(self) -> tuple[dict | None, str | None]:
        try:
            answer = self._call(self.client.get_object, Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None, None
        written = answer["LastModified"].timestamp()
        return parse_lease(answer["Body"].read(), f"s3://{self.bucket}/{self.key}", written), answer["ETag"]

    def create(self, body: bytes) -> str | None:
        return self._put(body, IfNoneMatch="*")

    def replace(self, body: bytes, version: str | None) -> str | None:
        """Write BODY only if the object is still at VERSION; None if it changed."""
        return self._put(body, IfMatch=version) if version else None

    def delete(self) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.key)

    def _put(self, body: bytes, **condition) -> str | None:
        """The new ETag; None when the condition does not hold (another writer was first)."""
        try:
            return self._call(self.client.put_object, Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except _ConditionFailed:
            return None

    @staticmethod
    def _call(method, **arguments):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**arguments)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise _ConditionFailed(code) from error
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(arguments.get("Key")) from error
            raise OSError(f"S3 {code}: {error}") from error
        except BotoCoreError as error:
            raise OSError(str(error)) from error


class _ConditionFailed(Exception):
    """A conditional write found the object changed (or present)."""


def lease_object(fs: pafs.FileSystem, path: str, uri: str | None) -> _PlainLeaseObject | _S3LeaseObject:
    """Conditional writes on S3 when boto3 is installed; plain writes otherwise."""
    import pyarrow.fs as pafs

    if uri is None or not uri.startswith("s3://") or not isinstance(fs, pafs.S3FileSystem):
        return _PlainLeaseObject(fs, path)
    try:
        import boto3
    except ImportError:
        logger.info("boto3 is not installed: the lease on %s is taken without conditional writes", uri)
        return _PlainLeaseObject(fs, path)
    options = {k: v[-1] for k, v in parse_qs(urlsplit(uri).query).items()}
    endpoint = options.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme', 'https')}://{endpoint}"
    return _S3LeaseObject(boto3.client("s3", endpoint_url=endpoint, region_name=options.get("region")), path)


def read_lease(fs: pafs.FileSystem, path: str) -> dict | None:
    """The lease at `path`, None if there is none; FormatError for a lease of a newer structome."""
    try:
        with fs.open_input_stream(path) as stream:
            data = stream.read()
        modified = fs.get_file_info(path).mtime
    except FileNotFoundError:
        return None
    return parse_lease(data, path, modified.timestamp() if modified is not None else None)


def parse_lease(data: bytes, where: str, written: float | None = None) -> dict:
    """The lease in DATA; one that cannot be read counts as renewed when its object was WRITTEN (now if unknown):
    held until it goes stale, like any other."""
    unreadable = {"owner": "unreadable lease", "renewedAt": time.time() if written is None else written}
    try:
        lease = json.loads(data)
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no UTF-8: not ours to judge
        return unreadable
    if not isinstance(lease, dict):  # JSON of another shape: as unreadable (check_format and ["owner"] need a dict)
        return unreadable
    check_format(lease, "lease", LEASE_VERSION, where)
    if not isinstance(lease.get("owner"), str) or not isinstance(lease.get("renewedAt"), int | float):
        return unreadable
    return lease


def lease_is_fresh(fs: pafs.FileSystem, path: str) -> bool:
    return _fresh(read_lease(fs, path))


def _fresh(lease: dict | None) -> bool:
    return lease is not None and time.time() - lease["renewedAt"] < LEASE_SECONDS
