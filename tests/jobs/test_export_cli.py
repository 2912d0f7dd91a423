"""`structome export`: SQL -> tar file, through the real CLI once and in-process (CliRunner) for the edges."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_database import entry, random_prediction, write_database
from test_end_to_end import structome

from structome.jobs.cli import main
from structome.models.types import PredictionRequest
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout
from structome.storage.reader import read_entry_file

SEQUENCES = {"Q1": "MKTAYIAKQRQISFVKSH", "Q2": "MKVLAAGIVGLLWKKRR", "Q3": "MSNIIKQLEQEQMKQDVPSFRPG"}


def build_database(location) -> DatabaseLayout:
    entries = [
        entry(f"SM-{accession}-F1", accession, sequence, f"p-{accession}") for accession, sequence in SEQUENCES.items()
    ]
    predictions = [random_prediction(PredictionRequest(e.prediction_id, e.sequence), n) for n, e in enumerate(entries)]
    return write_database(location, entries, predictions, shard_size=2)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return build_database(tmp_path_factory.mktemp("export-cli") / "db").root


def export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_export_through_the_real_cli(db, tmp_path):
    out = tmp_path / "two.tar"
    result = structome(
        "export",
        "--db",
        str(db),
        "--sql",
        "SELECT entryId FROM entries WHERE uniprotAccession IN ('Q3', 'Q1')",
        "-o",
        str(out),
    )
    files = members(out.read_bytes())
    assert list(files) == ["manifest.json"] + [
        f"SM-{a}-F1-{name}_v1.{ext}.gz"
        for a in ("Q1", "Q3")
        for name, ext in (("model", "cif"), ("predicted_aligned_error", "json"), ("confidence", "json"))
    ]
    assert result.stderr.strip().endswith(f"exported 2 entries, 6 files, {out.stat().st_size:,} bytes to {out}")
    stored = {
        row["fileName"] + ".gz": row["sha256"]
        for row in catalog.query(DatabaseLayout(db), "SELECT * FROM files").to_pylist()
    }
    assert all(hashlib.sha256(data).hexdigest() == stored[name] for name, data in files.items() if name in stored)
    cif = gzip.decompress(files["SM-Q3-F1-model_v1.cif.gz"])
    assert cif == read_entry_file(DatabaseLayout(db), "SM-Q3-F1").data
    manifest = json.loads(files["manifest.json"])
    assert [f["member"] for f in manifest["files"]] == list(files)[1:]
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


def test_stdout_and_kinds(db, tmp_path):
    query = "SELECT entryId, globalMetricValue FROM entries ORDER BY globalMetricValue"
    to_file = export("--db", str(db), "--sql", query, "-o", str(tmp_path / "all.tar"), "--kinds", "cif, pae")
    to_stdout = export("--db", str(db), "--sql", query, "-o", "-", "--kinds", "pae,cif")
    assert to_file.exit_code == to_stdout.exit_code == 0, to_file.output + to_stdout.output
    assert to_stdout.stdout_bytes == (tmp_path / "all.tar").read_bytes()
    names = list(members(to_stdout.stdout_bytes))
    assert len(names) == 1 + 2 * len(SEQUENCES) and not any("confidence" in name for name in names)
    assert "exported 3 entries, 6 files" in to_stdout.stderr and "to stdout" in to_stdout.stderr


@pytest.mark.parametrize(
    "query, message",
    [
        ("SELECT uniprotAccession FROM entries", "must return a column named entryId (it returned: uniprotAccession)"),
        ("SELECT entryId FROM entries WHERE taxId = -1", "the query returned no rows"),
        ("SELECT entryId FROM no_such_table", "no_such_table"),
        ("SELECT 'SM-NOPE-F1' AS entryId UNION ALL SELECT 'SM-Q1-F1'", "1 requested entries are not in"),
        ("COPY (SELECT 'SM-Q1-F1' AS entryId) TO '{tmp}/copied.csv'", "only SELECT queries are allowed, not COPY"),
    ],
)
def test_bad_queries_are_clear_errors_and_write_nothing(db, tmp_path, query, message):
    result = export("--db", str(db), "--sql", query.format(tmp=tmp_path), "-o", str(tmp_path / "out.tar"))
    assert result.exit_code == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_kinds_are_a_usage_error(db, tmp_path):
    result = export(
        "--db", str(db), "--sql", "SELECT entryId FROM entries", "-o", str(tmp_path / "x.tar"), "--kinds", "cif,png"
    )
    assert result.exit_code == 2 and "--kinds" in result.stderr and not (tmp_path / "x.tar").exists()


def test_a_failure_mid_stream_leaves_the_old_file_and_no_partial_one(db, tmp_path, monkeypatch):
    out = tmp_path / "out.tar"
    out.write_bytes(b"the previous export")
    original, reads = DatabaseLayout.read_range, []

    def failing_after_the_first_read(self, relative, offset, length):
        reads.append(relative)
        if len(reads) > 1:
            raise OSError("connection reset by peer")
        return original(self, relative, offset, length)

    monkeypatch.setattr(DatabaseLayout, "read_range", failing_after_the_first_read)
    result = export("--db", str(db), "--sql", "SELECT entryId FROM entries", "-o", str(out))
    assert result.exit_code == 1 and "export failed: connection reset by peer" in result.stderr
    assert len(reads) == 2 and out.read_bytes() == b"the previous export"
    assert list(tmp_path.iterdir()) == [out]
    out.unlink()
    assert export("--db", str(db), "--sql", "SELECT entryId FROM entries", "-o", str(out)).exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_export_from_an_object_store(s3_database, tmp_path):
    build_database(s3_database)
    out = tmp_path / "s3.tar"
    result = export(
        "--db", s3_database, "--sql", "SELECT entryId FROM entries WHERE uniprotAccession = 'Q2'", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    files = members(out.read_bytes())
    assert list(files) == [
        "manifest.json",
        "SM-Q2-F1-model_v1.cif.gz",
        "SM-Q2-F1-predicted_aligned_error_v1.json.gz",
        "SM-Q2-F1-confidence_v1.json.gz",
    ]
    assert json.loads(files["manifest.json"])["database"] == s3_database.split("?")[0]
    assert b"_ma_qa_metric_global" in gzip.decompress(files["SM-Q2-F1-model_v1.cif.gz"])
