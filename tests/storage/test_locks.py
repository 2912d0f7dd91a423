"""The object-store lease: renewal failures stop the build instead of dying silently; conditional writes on S3
(the local moto server) let only one of two racing builds take the lease."""

from __future__ import annotations

import os
import re
import threading
import time
import types

import pyarrow.fs as pafs
import pytest

from structome.storage import locks
from structome.storage.layout import DatabaseLayout, DatabaseLockedError
from structome.storage.locks import LeaseLostError


@pytest.fixture()
def fast_lease(monkeypatch):
    monkeypatch.setattr(locks, "SETTLE_SECONDS", 0.05)
    monkeypatch.setattr(locks, "RENEW_SECONDS", 0.02)
    monkeypatch.setattr(locks, "LOST_AFTER_SECONDS", 0.3)


def wait_until_lost(lock, timeout_s: float = 10.0) -> LeaseLostError:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            lock.ensure_held()
        except LeaseLostError as error:
            return error
        time.sleep(0.02)
    raise AssertionError("the lease was never counted as lost")


def failing(*args, **kwargs):
    raise OSError("injected: the store refused the write")


def fail_the_next_renewal(lock) -> list[int]:
    """Make the lease's next write fail and the later ones succeed; one item per write tried."""
    replace, calls = lock.store.replace, []

    def fail_once(*args, **kwargs):
        calls.append(1)
        return failing() if len(calls) == 1 else replace(*args, **kwargs)

    lock.store.replace = fail_once
    return calls


@pytest.mark.parametrize("conditional", [True, False])
def test_a_lease_that_cannot_be_renewed_is_lost_and_the_build_told_so(s3_database, fast_lease, conditional):
    layout = DatabaseLayout(s3_database)
    with layout.lock() as lock:
        assert lock.store.conditional  # S3 with boto3: conditional writes
        if not conditional:  # as on GCS: plain writes
            lock.store = locks._PlainLeaseObject(layout.fs, layout.path(".build.lock"))
        lock.ensure_held()
        lock.store.replace = failing
        error = wait_until_lost(lock)
    assert isinstance(error, DatabaseLockedError)  # the CLI's one-line error
    message = str(error)
    assert "lost the build lease" in message and "could not be renewed" in message and "injected" in message
    assert "Run the build again to resume" in message


def test_a_renewal_that_fails_once_is_tried_again(s3_database, fast_lease):
    layout = DatabaseLayout(s3_database)
    with layout.lock() as lock:
        calls = fail_the_next_renewal(lock)
        time.sleep(0.6)  # beyond LOST_AFTER_SECONDS: renewals after the failure kept it
        lock.ensure_held()
        assert len(calls) > 3


def test_a_wall_clock_step_does_not_lose_the_lease(s3_database, fast_lease, monkeypatch):
    layout = DatabaseLayout(s3_database)
    with layout.lock() as lock:
        stepped = types.SimpleNamespace(time=lambda: time.time() + 3600, monotonic=time.monotonic)
        monkeypatch.setattr(locks, "time", stepped)  # the clock jumps an hour ahead (NTP, a suspended VM)
        calls = fail_the_next_renewal(lock)
        time.sleep(0.15)  # one failed renewal, then good ones, well within LOST_AFTER_SECONDS
        lock.ensure_held()
        assert len(calls) > 2


def test_a_holder_whose_lease_was_taken_over_stops_at_its_next_renewal(s3_database, fast_lease):
    layout = DatabaseLayout(s3_database)
    with layout.lock() as lock:
        with layout.fs.open_output_stream(layout.path(".build.lock")) as stream:  # another build's lease
            stream.write(b'{"format": "structome-lease/1", "owner": "other", "renewedAt": 1e12}')
        assert "another writer took it over" in str(wait_until_lost(lock))
    assert b"other" in layout.read_bytes(".build.lock")  # left to its holder


def test_two_builds_taking_a_stale_lease_at_once_never_both_hold_it(s3_database, fast_lease):
    layout = DatabaseLayout(s3_database)
    layout.fs.create_dir(layout.path(""))
    with layout.fs.open_output_stream(layout.path(".build.lock")) as stream:  # a dead build's stale lease
        stream.write(b'{"owner": "dead", "renewedAt": 0}')
    takers = [layout.lock(), DatabaseLayout(s3_database).lock()]
    both_read = threading.Barrier(2)
    for taker in takers:  # both read the stale lease before either writes: the worst interleaving
        read = taker.store.read
        taker.store.read = lambda read=read: (both_read.wait(), read())[1]
    outcomes: list[object] = []

    def take(lock) -> None:
        try:
            lock.__enter__()
            outcomes.append(lock)
        except DatabaseLockedError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=take, args=(t,)) for t in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, DatabaseLockedError)]
    assert len(holders) == 1 and len(refused) == 1, outcomes
    assert "at the same moment" in str(refused[0])
    (holder,) = holders
    holder.store.read = lambda: locks._S3LeaseObject.read(holder.store)
    holder.__exit__(None, None, None)
    assert not layout.exists(".build.lock")


@pytest.mark.parametrize(
    "lease",
    [
        b'{"format": "structome-lease/9", "owner": "a newer structome", "renewedAt": 1e12}',  # FormatError
        b'{"format": "structome-lease/1", "renewedAt": 1e12}',  # no owner: KeyError
        b"[1, 2]",  # JSON of another shape: AttributeError
    ],
)
def test_a_renewal_that_cannot_read_the_lease_loses_it_instead_of_ending_the_renewer_silently(
    tmp_path, fast_lease, lease
):
    """Without conditional writes a renewal reads the lease first; an error other than OSError there ended the
    renewer thread and left `ensure_held` passing while nobody renewed: after LEASE_SECONDS another build could
    take the lease beside this one."""
    fs, path = pafs.LocalFileSystem(), str(tmp_path / ".build.lock")
    with locks.LeaseLock(fs, path, where=str(tmp_path)) as lock:
        lock.ensure_held()
        with fs.open_output_stream(path) as stream:
            stream.write(lease)
        assert re.search("could not be read|unreadable lease took it over", str(wait_until_lost(lock, timeout_s=2.0)))
        assert lock._renewer is not None
        lock._renewer.join(2.0)
        assert not lock._renewer.is_alive()


@pytest.mark.parametrize("lease", [b"{not json", b"\xff\xfe garbage", b"[]"])
def test_an_unreadable_lease_goes_stale_like_any_other(tmp_path, lease):
    """An unreadable lease counts as renewed when it was written: after LEASE_SECONDS a build takes it over (it
    was renewed 'now' at every read, and refused every build for ever; bytes that are no UTF-8 raised)."""
    fs, path = pafs.LocalFileSystem(), str(tmp_path / ".build.lock")
    (tmp_path / ".build.lock").write_bytes(lease)
    with pytest.raises(DatabaseLockedError, match="unreadable lease"):  # fresh: held
        locks.LeaseLock(fs, path, where=str(tmp_path)).__enter__()
    old = time.time() - locks.LEASE_SECONDS - 5
    os.utime(tmp_path / ".build.lock", (old, old))
    with locks.LeaseLock(fs, path, where=str(tmp_path)) as lock:
        lock.ensure_held()
        assert lock.owner.encode() in (tmp_path / ".build.lock").read_bytes()
