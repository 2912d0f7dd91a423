"""Fixtures for `structome serve`: a database with a real AFDB structure, and uvicorn on a free port."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from fake_database import afdb_entry, afdb_prediction, entry, random_prediction, write_database

from structome.jobs.serve.viewer_assets import tarball_url
from structome.models.types import PredictionRequest

LONG_SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
REGISTRY_CONNECT_TIMEOUT_S = 3.0


@pytest.fixture(scope="session")
def served_database(tmp_path_factory):
    """SM-P41068-F1 (the real AFDB model of TRAP_ECOLI, pLDDT in all four bands), two accessions sharing one
    prediction, an accession with two fragments, and a description with markup in it."""
    trap = afdb_prediction("p-trap")
    entries = [
        afdb_entry(trap),
        entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a", gene="abcA", description='see ": "/files/x'),
        entry("SM-P2-F1", "P2", "MKVLAAGIVGLLW", "p-a", description="<script>alert(1)</script> & co"),
        entry("SM-P3-F1", "P3", LONG_SEQUENCE, "p-b", 1, 1, 20),
        entry("SM-P3-F2", "P3", LONG_SEQUENCE, "p-c", 2, 14, 33),
    ]
    requests = [
        PredictionRequest("p-a", "MKVLAAGIVGLLW"),
        PredictionRequest("p-b", LONG_SEQUENCE[:20]),
        PredictionRequest("p-c", LONG_SEQUENCE[13:]),
    ]
    predictions = [trap, *(random_prediction(r, i) for i, r in enumerate(requests))]
    layout = write_database(tmp_path_factory.mktemp("served") / "db", entries, predictions)
    return layout


def unavailable(reason: str) -> None:
    """A test requirement is missing: skip here, but fail in CI (which must provide it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


@functools.cache
def registry_problem(url: str) -> str | None:
    """Why the registry serving `url` cannot be reached (one TCP connect, checked once per session), else None."""
    parts = urlsplit(url)
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    try:
        socket.create_connection(address, timeout=REGISTRY_CONNECT_TIMEOUT_S).close()
    except OSError as error:  # refused, unknown host, timed out
        return f"the npm registry {address[0]}:{address[1]} cannot be reached ({error})"
    return None


def pytest_runtest_setup(item):
    """`network` tests fetch pdbe-molstar from the npm registry: without it they skip here, and fail in CI."""
    if item.get_closest_marker("network") and (problem := registry_problem(tarball_url())) is not None:
        unavailable(problem)


class ThreadedServer:
    """uvicorn serving an ASGI app from a thread, on a free loopback port, configured as `structome serve` runs it
    (OPTIONS: of structome.jobs.serve.launch.uvicorn_config)."""

    def __init__(self, app, **options):
        import uvicorn

        from structome.jobs.serve.launch import uvicorn_config

        self.server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=0, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def structome_server(served_database):
    from structome.jobs.serve.app import create_server
    from structome.jobs.serve.sql_sandbox import SqlLimits

    return create_server(served_database.location, sql_workers=2, sql_limits=SqlLimits(timeout_s=2.0, row_limit=50))


@pytest.fixture(scope="session")
def server_url(structome_server):
    with ThreadedServer(structome_server.app) as url:
        yield url
