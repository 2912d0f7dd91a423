"""`structome verify [--repair]` on a real small build (tiny model), and the reading commands on a damaged
database: one-line messages naming the damage, never a traceback; a repaired database rebuilds to the same content."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fake_database import add_entries

from structome.jobs.build.job import BuildRequest, run_build
from structome.jobs.build.settings import RunnerSettings
from structome.jobs.cli.main import main
from structome.models.types import EsmFoldSettings
from structome.pipelines.settings import BuildSettings
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout

SEQUENCES = {f"V{i}": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"[: 18 + 5 * i] for i in range(6)}
# What must come back identical: every entry's row but its provenance of where and when it was written.
CONTENT = {
    "entries": "SELECT * EXCLUDE (build, shard) FROM entries ORDER BY entryId",
    "residues": "SELECT * FROM residues ORDER BY entryId, residueNumber",
    "files": "SELECT entryId, kind, fileName, size, sha256 FROM files ORDER BY entryId, kind",
}


def structome(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "structome", *args], capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )


def in_process(*args: str) -> Result:
    """The CLI in this process (torch and Ray already imported: seconds less per command than a subprocess)."""
    return CliRunner().invoke(main, list(args))


def content(layout: DatabaseLayout) -> dict[str, list[dict]]:
    return {table: catalog.query(layout, sql).to_pylist() for table, sql in CONTENT.items()}


@pytest.mark.slow  # two real builds (Ray, the tiny model): ~40 s of CPU
def test_a_damaged_shard_of_a_real_build_is_named_repaired_and_rebuilt_to_the_same_content(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{name} test protein\n{sequence}\n" for name, sequence in SEQUENCES.items()))
    db = tmp_path / "db"
    request = BuildRequest(
        inputs=(str(fasta),),
        db=str(db),
        model_settings=EsmFoldSettings(num_recycles=0),
        build_settings=BuildSettings(shard_size=2),
        runner=RunnerSettings(workers=1, progress=False),
    )
    run_build(request)
    layout = DatabaseLayout(db)
    expected = content(layout)
    assert len(expected["entries"]) == len(SEQUENCES)
    shard = sorted(layout.committed_shards())[1]
    archive = db / "shards" / shard / "archive.tar"
    with open(archive, "r+b") as handle:
        handle.truncate(1500)  # into its members (a cut into the tar's end padding loses nothing but is named too)

    checked = in_process("verify", "--db", str(db))
    assert checked.exit_code == 1 and f"shards/{shard}/archive.tar" in checked.stdout, checked.output
    status = in_process("status", "--db", str(db))
    assert status.exit_code == 0 and f"shards/{shard}/archive.tar: truncated" in status.stdout
    refused = in_process("build", str(fasta), "--db", str(db), "--no-progress")
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)  # a message, not a traceback
    assert f"shards/{shard}/archive.tar" in refused.stderr and "structome verify" in refused.stderr

    repaired = in_process("verify", "--db", str(db), "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert f"quarantined shard {shard}" in repaired.stdout
    lost = len(SEQUENCES) - len(catalog.query(layout, "SELECT entryId FROM entries"))
    assert lost > 0
    report = run_build(request)
    assert report["entriesWritten"] == lost and report["entriesSkipped"] == len(SEQUENCES) - lost
    assert in_process("verify", "--db", str(db)).exit_code == 0
    assert content(layout) == expected


def test_reading_commands_on_a_damaged_database_answer_from_the_healthy_rest(tmp_path):
    db = tmp_path / "db"
    accessions = add_entries(db, 0, 6, shard_size=2)
    layout = DatabaseLayout(db)
    shard = sorted(layout.committed_shards())[0]
    (db / "shards" / shard / "entries.parquet").unlink()
    (db / "catalog.duckdb").write_bytes(b"garbage" * 100)
    counted = structome("sql", "--db", str(db), "--format", "csv", "SELECT count(*) AS n FROM entries")
    assert counted.returncode == 0 and counted.stdout.split() == ["n", "4"], counted.stderr
    assert f"shard {shard} is damaged" in counted.stderr and "Traceback" not in counted.stderr
    healthy = catalog.query(layout, "SELECT uniprotAccession FROM entries").column(0).to_pylist()
    assert set(healthy) < set(accessions)
    got = structome("get", "--db", str(db), healthy[0])
    assert got.returncode == 0 and got.stdout.startswith("data_")
    status = structome("status", "--db", str(db))
    assert status.returncode == 0 and f"shards/{shard}/entries.parquet: missing" in status.stdout
    assert Path(db / "catalog.duckdb").read_bytes()[8:12] == b"DUCK"  # rebuilt
