"""A build, a compaction and `structome serve` at once (issue 11), all three real processes: while the build
commits shards and `structome compact` switches generations, a client keeps asking the server for entries and
files that existed before, and every answer must be the first one again (never a 404, a 500 or a duplicated
fragment); entries of the build, once served, stay served; SQL counts every entry once throughout and at the end.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from fake_database import add_entries
from processes import kill_all
from test_server import request

from structome.storage.compaction import CompactionPolicy, compact
from structome.storage.layout import DatabaseLayout

NEW = [f"B{i:05d}" for i in range(12)]  # the build's accessions; its shards hold one sequence each
COUNTS = "SELECT count(*), count(DISTINCT entryId), count(*) FILTER (WHERE starts_with(entryId, 'SM-Q')) FROM entries"
FILE_STEMS = ("model_v1.cif", "predicted_aligned_error_v1.json", "confidence_v1.json")
DEADLINE_S = 120
PAUSE_S = 0.3  # between the client's rounds: leaves the 2 cores of CI to the build


def structome(*args: str, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "structome", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fetch(url: str, path: str) -> tuple[int, bytes]:
    status, _, body = request(url, path, headers={"Accept-Encoding": "gzip"})  # files as stored: fixed bytes
    return status, body


def paths_of(accessions: list[str]) -> list[str]:
    """The API record of each accession and, for every third, its three stored files."""
    paths = [f"/api/prediction/{a}" for a in accessions]
    return paths + [f"/files/SM-{a}-F1-{stem}" for a in accessions[::3] for stem in FILE_STEMS]


class Client(threading.Thread):
    """Asks for every path again and again (in a shuffled order each round) and records what went wrong."""

    def __init__(self, url: str, known: dict[str, bytes], new: list[str], known_entries: int):
        super().__init__(daemon=True)
        self.url, self.answers, self.new, self.known_entries = url, dict(known), new, known_entries
        self.stop, self.rounds, self.problems = threading.Event(), 0, []
        self.sql_counts: list[int] = []

    def run(self) -> None:
        rng = random.Random(0)
        paths = [*self.answers, *self.new]
        while not self.stop.is_set():
            rng.shuffle(paths)
            try:
                for path in paths:
                    self._check(path, *fetch(self.url, path))
                self._check_sql()
            except OSError as error:  # the server went away
                self.problems.append(("connection", 0, repr(error).encode()))
                return
            self.rounds += 1
            self.stop.wait(PAUSE_S)

    def _check(self, path: str, status: int, body: bytes) -> None:
        expected = self.answers.get(path)
        if expected is None and status == 404 and path in self.new:  # not committed (or not reloaded) yet
            return
        if expected is None and status == 200:
            self.answers[path] = body  # a new entry, from now on served exactly so
        elif (status, body) != (200, expected):
            self.problems.append((path, status, body[:300]))

    def _check_sql(self) -> None:
        status, _, body = request(self.url, "/api/sql?q=" + quote(COUNTS))
        rows = json.loads(body).get("rows") if status == 200 else None
        if rows is None or rows[0][0] != rows[0][1] or rows[0][2] != self.known_entries:
            self.problems.append(("/api/sql", status, body[:300]))
        else:
            self.sql_counts.append(rows[0][0])

    def wait_for_all(self, paths: list[str]) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not all(p in self.answers for p in paths):
            assert time.monotonic() < deadline and self.is_alive(), "new entries never served"
            time.sleep(0.2)
        rounds = self.rounds
        while self.rounds < rounds + 2:  # two whole rounds more with everything in place
            assert time.monotonic() < deadline and self.is_alive(), "the client stopped"
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_served(url: str, server: subprocess.Popen, path: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            if fetch(url, path)[0] == 200:
                return
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "structome serve did not start"
        time.sleep(0.2)


def write_fasta(path: Path) -> Path:
    rng = random.Random(7)
    with path.open("w") as handle:
        for accession in NEW:
            sequence = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(30, 60)))
            handle.write(f">sp|{accession}|{accession}_ECOLI Test OS=Escherichia coli OX=83333 GN=n{accession}\n")
            handle.write(sequence + "\n")
    return path


def stop(process: subprocess.Popen) -> str:
    """Stop a process we started, by its pid; its stderr."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1]


def sql_rows(url: str, sql: str) -> list:
    status, _, body = request(url, "/api/sql?q=" + quote(sql))
    assert status == 200, body[:300]
    return json.loads(body)["rows"]


def test_a_build_a_compaction_and_the_server_at_once(tmp_path, tiny_weights):
    db = tmp_path / "db"
    known = add_entries(db, 0, 24)  # segments of an earlier compaction, then level-0 shards
    layout = DatabaseLayout(db)
    with layout.compaction_lock():
        compact(layout, CompactionPolicy(grace_s=0))
    known += add_entries(db, 100, 16)
    shards_before = len(layout.committed_shards())
    level0 = shards_before - len(layout.table_manifest().compacted_shards)
    fasta = write_fasta(tmp_path / "new.fasta")
    marker = uuid.uuid4().hex
    env = {**os.environ, "STRUCTOME_TEST_MARKER": marker}  # every process below (Ray's too) carries it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = structome(
        "serve", "--db", str(db), "--port", str(port), "--sql-workers", "1", "--reload-interval", "0.2", env=env
    )
    client = None
    try:
        wait_until_served(url, server, f"/api/prediction/{known[0]}")
        baseline = {path: fetch(url, path) for path in paths_of(known)}
        assert {status for status, _ in baseline.values()} == {200}
        client = Client(url, {path: body for path, (_, body) in baseline.items()}, paths_of(NEW), len(known))
        client.start()
        build = structome(
            "build", str(fasta), "--db", str(db), "--num-recycles", "0", "--shard-size", "1", "--no-progress", env=env
        )
        deadline = time.monotonic() + DEADLINE_S
        while len(layout.committed_shards()) == shards_before:  # the build has committed its first shard
            assert build.poll() is None and time.monotonic() < deadline, stop(build)
            time.sleep(0.05)
        assert build.poll() is None  # so the compaction below starts while the build commits more
        report = json.loads(run_structome("compact", "--db", str(db), "--fanout", "2", env=env))
        assert report["shardsMerged"] > level0 and report["segmentsMerged"] == 1  # build shards, the old segment
        assert build.wait(DEADLINE_S) == 0, stop(build)
        run_structome("compact", "--db", str(db), env=env)  # the build's later shards, unless its own run took them
        client.wait_for_all(paths_of(NEW))
        counted = sql_rows(url, COUNTS)
        files = sql_rows(url, "SELECT count(*), count(DISTINCT fileName) FROM files")
    finally:
        if client is not None:
            client.stop.set()
            client.join(timeout=60)
        stderr = stop(server)
        kill_all(marker)  # whatever a failure left running: the build and its Ray processes, SQL workers
    assert not client.problems, client.problems[:5]
    assert client.rounds >= 3 and len(set(client.sql_counts)) > 1  # SQL saw the build's entries arrive
    assert "Traceback" not in stderr, stderr[-3000:]
    total = len(known) + len(NEW)
    assert counted == [[total, total, len(known)]] and files == [[3 * total, 3 * total]]
    assert set(layout.committed_shards()) <= layout.table_manifest().compacted_shards  # everything was compacted


def run_structome(*args: str, env: dict) -> str:
    """A whole structome command; its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "structome", *args], env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
