"""`structome serve` under hostile or unlucky conditions, over a real socket: slow renders and reads, access
tokens, request limits (header size, slow clients, malformed values), odd accessions, and the command's errors."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import ThreadedServer
from test_server import get_json, request

from structome.jobs.serve.app import RENDERERS, StructomeServer
from structome.storage.entry_index import EntryIndex

PNG = "/files/SM-P41068-F1-predicted_aligned_error_v1.png"
CIF = "/files/SM-P41068-F1-model_v1.cif"
STALL_S = 1.5


def _slow_png(pae: bytes) -> bytes:
    time.sleep(STALL_S)  # what a 1,400-residue plot costs, without the CPU
    return RENDERERS[".png"](pae)


def _slowed_reads(server: StructomeServer) -> None:
    """Every archive read of the server takes STALL_S, like a cold read on an NFS folder."""
    read_verified = server.archives.read_verified

    def slow(*args):
        time.sleep(STALL_S)
        return read_verified(*args)

    server.archives.read_verified = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("slow", ["render", "read"])
def test_a_slow_render_or_read_does_not_delay_other_requests(served_database, slow):
    renderers = {**RENDERERS, ".png": _slow_png} if slow == "render" else RENDERERS
    server = StructomeServer(served_database, EntryIndex.load(served_database), renderers=renderers)
    if slow == "read":
        _slowed_reads(server)
    with ThreadedServer(server.app) as url:
        answers: list = []
        stalled = threading.Thread(target=lambda: answers.append(request(url, PNG if slow == "render" else CIF)))
        stalled.start()
        time.sleep(0.3)  # the slow request is in its render or read now
        started = time.monotonic()
        status, entries = get_json(url, "/api/prediction/P41068")
        elapsed = time.monotonic() - started
        stalled.join()
    assert status == 200 and entries[0]["entryId"] == "SM-P41068-F1"
    assert elapsed < STALL_S / 2, f"/api/prediction waited {elapsed:.2f} s behind a slow {slow}"
    assert answers[0][0] == 200
