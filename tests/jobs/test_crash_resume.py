"""SIGKILL the build driver mid-build, then re-run: exactly the expected entries, nothing half-written visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from processes import kill_all

from structome.pipelines.ingest import ingest
from structome.pipelines.settings import IngestSettings
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout

# Proteins above 100 aa become 60-aa windows: many small shards, each a few tenths of a second on CPU.
OPTIONS = [
    "--num-recycles",
    "0",
    "--max-length",
    "100",
    "--fragment-window",
    "60",
    "--fragment-step",
    "60",
    "--shard-size",
    "3",
    "--no-progress",
]


def run_build(inputs, db, marker, **kwargs):
    env = {**os.environ, "STRUCTOME_TEST_MARKER": marker}
    return subprocess.Popen(
        [sys.executable, "-m", "structome", "build", *map(str, inputs), "--db", str(db), *OPTIONS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _first_records(fasta, count: int, target):
    """The first `count` records of a FASTA file, written to `target`."""
    records = fasta.read_text().split("\n>")
    target.write_text("\n>".join(records[:count]).rstrip("\n") + "\n")
    return target


@pytest.mark.slow
def test_killed_build_resumes_without_duplicates_or_partial_files(tmp_path, data_dir):
    inputs = [_first_records(data_dir / "fasta" / "ecoli_k12_2020_slice.fasta", 24, tmp_path / "ecoli_24.fasta")]
    inputs.append(data_dir / "fasta" / "awkward.fasta")
    db = tmp_path / "db"
    marker = uuid.uuid4().hex
    driver = run_build(inputs, db, marker, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((db / "shards").glob("*/entries.parquet")):
            assert driver.poll() is None, f"build ended before the kill: {driver.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.2)
        kill_all(marker)  # the driver and every Ray process it started, at once
        driver.wait(timeout=30)
    finally:
        kill_all(marker)
    layout = DatabaseLayout(db)
    committed = list((db / "shards").iterdir())
    assert committed and all((s / "archive.tar").exists() and (s / "files.parquet").exists() for s in committed)

    again = run_build(inputs, db, marker)
    try:
        _, stderr = again.communicate(timeout=900)
    finally:
        kill_all(marker)
    assert again.returncode == 0, stderr[-3000:]
    assert not list(layout.staging.iterdir())
    rows = catalog.query(layout, "SELECT entryId FROM entries").column("entryId").to_pylist()
    assert len(rows) == len(set(rows))
    reports = sorted((db / "builds").glob("*.report.json"))
    last = json.loads(reports[-1].read_text())
    assert last["status"] == "completed" and last["entriesSkipped"] > 0
    # exactly the entries a clean ingest of the inputs gives, each once
    expected = ingest(inputs, IngestSettings(max_length=100, fragment_window=60, fragment_step=60), "any")
    assert sorted(rows) == sorted(e.entry_id for e in expected.entries)
    builds = catalog.query(layout, "SELECT status FROM builds ORDER BY build").column("status").to_pylist()
    assert builds == ["running", "completed"]  # the killed build never got to record an end
    status = subprocess.run(
        [sys.executable, "-m", "structome", "status", "--db", str(db)], capture_output=True, text=True, check=True
    ).stdout
    assert "interrupted" in status
