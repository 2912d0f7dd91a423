"""End to end through the real CLI: a slice of the real E. coli proteome plus awkward FASTA -> Ray (in-process)
-> tiny ESMFold -> mmCIF/JSON archives + Parquet -> DuckDB -> sql / get / status; then a re-run that resumes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import gemmi
import pytest
from Bio.PDB.MMCIFParser import MMCIFParser
from Bio.PDB.PDBParser import PDBParser

from structome.storage.mmcif import validate_mmcif

# Small windows keep the tiny model's CPU time (which grows as L^3) to seconds: proteins above 200 aa
# become 150-aa windows.
BUILD_OPTIONS = [
    "--num-recycles",
    "0",
    "--max-length",
    "200",
    "--fragment-window",
    "150",
    "--fragment-step",
    "150",
    "--batch-tokens",
    "600",
    "--shard-size",
    "16",
    "--no-progress",
    "--progress-interval",
    "1",
]


def structome(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "structome", *args], capture_output=True, text=True, timeout=900, env=os.environ.copy()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"structome {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def sql_json(db: Path, query: str) -> list[dict]:
    return json.loads(structome("sql", "--db", str(db), "--format", "json", query).stdout)


def count_records(paths) -> int:
    total = 0
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as handle:
            total += sum(1 for line in handle if line.startswith(b">"))
    return total


@pytest.fixture(scope="module")
def inputs(data_dir) -> list[Path]:
    fasta = data_dir / "fasta"
    return [
        fasta / "ecoli_k12_2020_slice.fasta",
        fasta / "afdb_P41068_TRAP_ECOLI.fasta",
        fasta / "awkward.fasta",
        fasta / "ecoli_slice.fasta.gz",
    ]


@pytest.fixture(scope="module")
def build_run(tmp_path_factory, inputs) -> tuple[Path, str]:
    """The database and what `build` wrote to stderr."""
    db = tmp_path_factory.mktemp("e2e") / "db"
    result = structome("build", *map(str, inputs), "--db", str(db), *BUILD_OPTIONS)
    assert "completed" in result.stderr
    return db, result.stderr


@pytest.fixture(scope="module")
def built(build_run) -> tuple[Path, dict]:
    db, _ = build_run
    (report,) = [json.loads(p.read_text()) for p in (db / "builds").glob("*.report.json")]
    return db, report


def test_progress_lines_follow_proteins_as_they_fold(build_run, built):
    """Without a bar, a line every --progress-interval: proteins and residues folded, residues/s, an ETA."""
    _, stderr = build_run
    _, report = built
    lines = [line for line in stderr.splitlines() if line.startswith("folded ")]
    assert len(lines) >= 2 and "residues/s" in lines[-1]
    assert lines[-1].startswith(f"folded {report['predictions']:,}/{report['predictions']:,} proteins (100%)")
    assert any("ETA " in line for line in lines)
    assert "UNTRAINED" in stderr.splitlines()[0] and "UNTRAINED" in stderr.splitlines()[-1]


def test_every_record_is_an_entry_or_a_failure(built, inputs):
    db, report = built
    assert report["status"] == "completed" and report["records"] == count_records(inputs)
    accounted = sql_json(
        db,
        """
        SELECT count(*) AS n FROM (
            SELECT DISTINCT sourceFile, recordNumber FROM entries
            UNION ALL SELECT DISTINCT sourceFile, recordNumber FROM failures WHERE entryId = '')""",
    )
    assert accounted[0]["n"] == report["records"]
    assert report["entriesWritten"] == report["entriesPlanned"] > 60
    reasons = {row["reason"] for row in sql_json(db, "SELECT DISTINCT reason FROM failures")}
    assert {"invalid_character", "internal_stop", "empty_sequence", "duplicate_id", "duplicate_record"} <= reasons


def test_identical_sequences_are_predicted_once(built):
    db, report = built
    (row,) = sql_json(db, "SELECT count(*) AS entries, count(DISTINCT predictionId) AS predictions FROM entries")
    assert row["predictions"] == report["predictions"] < row["entries"]


def test_long_proteins_are_fragmented_in_afdb_windows(built):
    db, _ = built
    rows = sql_json(
        db,
        "SELECT entryId, fragment, uniprotStart, uniprotEnd, length(uniprotSequence) AS n "
        "FROM entries WHERE uniprotAccession = 'P07658' ORDER BY fragment",
    )
    n = rows[0]["n"]
    assert n == 715 and len(rows) == 5  # ceil((715 - 150) / 150) + 1
    assert [(r["uniprotStart"], r["uniprotEnd"]) for r in rows[:-1]] == [(1 + 150 * i, 150 + 150 * i) for i in range(4)]
    assert (rows[-1]["uniprotStart"], rows[-1]["uniprotEnd"]) == (n - 149, n)
    assert [r["entryId"] for r in rows] == [f"SM-P07658-F{i}" for i in range(1, 6)]


def test_sql_formats(built, tmp_path):
    db, _ = built
    query = "SELECT entryId, taxId, globalMetricValue FROM entries WHERE uniprotAccession = 'P41068'"
    table = structome("sql", "--db", str(db), query).stdout
    assert "SM-P41068-F1" in table and "83333" in table and "(1 row)" in table
    rows = list(csv.DictReader(io.StringIO(structome("sql", "--db", str(db), "--format", "csv", query).stdout)))
    assert rows[0]["entryId"] == "SM-P41068-F1"
    out = tmp_path / "e.parquet"
    structome("sql", "--db", str(db), "--format", "parquet", "-o", str(out), query)
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("taxId").to_pylist() == [83333]
    bad = structome("sql", "--db", str(db), "SELECT nope FROM entries", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_get_writes_valid_modelcif_that_matches_the_catalog(built, tmp_path, data_dir):
    db, _ = built
    structome("get", "--db", str(db), "P41068", "-o", str(tmp_path))
    path = tmp_path / "SM-P41068-F1-model_v1.cif"
    text = path.read_text()
    assert validate_mmcif(text, data_dir / "dictionaries" / "mmcif_ma.dic") == []
    block = gemmi.cif.read_string(text).sole_block()
    (row,) = sql_json(db, "SELECT * FROM entries WHERE entryId = 'SM-P41068-F1'")
    assert block.find_value("_ma_target_ref_db_details.seq_db_sequence_checksum").strip("'") == row["sequenceChecksum"]
    assert row["sequenceChecksum"] == "0197355516942160"  # the real UniProt CRC64, leading zero kept
    assert "untrained random weights" in text
    structure = MMCIFParser(QUIET=True).get_structure("x", str(path))
    assert len(list(structure[0]["A"])) == 196
    pae = json.loads(structome("get", "--db", str(db), "SM-P41068-F1", "--format", "pae").stdout)
    assert len(pae[0]["predicted_aligned_error"]) == 196
    structome("get", "--db", str(db), "P41068", "--format", "pdb", "-o", str(tmp_path))
    from_pdb = PDBParser(QUIET=True).get_structure("x", str(tmp_path / "SM-P41068-F1-model_v1.pdb"))
    assert [a.coord.tolist() for a in from_pdb.get_atoms()] == [a.coord.tolist() for a in structure.get_atoms()]


def test_get_refuses_to_pick_one_fragment_silently(built):
    db, _ = built
    result = structome("get", "--db", str(db), "P07658", check=False)
    assert result.returncode == 2
    assert "5 fragments" in result.stderr and "SM-P07658-F5" in result.stderr
    missing = structome("get", "--db", str(db), "NOPE123", check=False)
    assert missing.returncode == 1 and "NOPE123" in missing.stderr


def test_archives_are_plain_tars_with_every_file(built):
    db, _ = built
    (row,) = sql_json(db, "SELECT count(*) AS n FROM files")
    members = 0
    for archive in (db / "shards").glob("*/archive.tar"):
        with tarfile.open(archive) as tar:
            members += len(tar.getnames())
    (entries,) = sql_json(db, "SELECT count(*) AS n FROM entries")
    assert members == row["n"] == 3 * entries["n"]


def test_status_and_a_rerun_that_does_nothing_new(built, inputs):
    db, first = built
    shards_before = sorted(p.name for p in (db / "shards").iterdir())
    again = structome("build", *map(str, inputs), "--db", str(db), *BUILD_OPTIONS)
    assert "0 entries written" in again.stderr
    assert sorted(p.name for p in (db / "shards").iterdir()) == shards_before
    (row,) = sql_json(db, "SELECT count(*) AS n, count(DISTINCT entryId) AS distinct_ids FROM entries")
    assert row["n"] == row["distinct_ids"] == first["entriesWritten"]
    builds = sql_json(db, "SELECT entriesSkipped, entriesWritten FROM builds ORDER BY build")
    assert builds[-1] == {"entriesSkipped": first["entriesWritten"], "entriesWritten": 0}
    status = structome("status", "--db", str(db)).stdout
    assert "no build is running" in status and "invalid_character" in status and "completed" in status


def test_a_missing_input_is_a_clear_error(tmp_path):
    result = structome("build", str(tmp_path / "absent.fasta"), "--db", str(tmp_path / "db"), check=False)
    assert result.returncode != 0 and "absent.fasta" in result.stderr and "Traceback" not in result.stderr
