"""What a new user meets first: refused option values, one-line errors instead of tracebacks, --version,
untrained-weights warnings, a non-zero exit when nothing could be built, lookups in any case."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fake_database import entry, random_prediction, write_database

from structome.jobs.cli.main import main
from structome.models.types import PredictionRequest
from structome.storage.layout import DatabaseLayout

FASTA = ">sp|P1|X_ECOLI Test OS=Escherichia coli OX=83333 GN=abc PE=1 SV=1\nMKVLAAGIVGLLW\n"


def structome(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture()
def fasta(tmp_path):
    path = tmp_path / "in.fasta"
    path.write_text(FASTA)
    return str(path)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--chunk-size", "-5"),
        ("--batch-tokens", "0"),
        ("--workers", "0"),
        ("--gpus-per-worker", "0"),
        ("--num-recycles", "-1"),
        ("--shard-size", "0"),
        ("--max-length", "-1"),
        ("--fragment-step", "0"),
    ],
)
def test_build_refuses_out_of_range_numbers_before_any_work(tmp_path, fasta, option, value):
    result = structome("build", fasta, "--db", str(tmp_path / "db"), option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    "command, option, value",
    [("plan", "--gpus", "0"), ("plan", "--baseline-batch-size", "0"), ("plan", "--fragment-window", "0")],
)
def test_plan_refuses_out_of_range_numbers(fasta, command, option, value):
    result = structome(command, fasta, option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output


def test_compact_refuses_out_of_range_numbers(tmp_path):
    for option, value in (("--fanout", "1"), ("--grace", "-1"), ("--max-merge", "0")):
        result = structome("compact", "--db", str(tmp_path), option, value)
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output


def test_version_comes_from_the_package_metadata():
    import structome as package

    result = structome("--version")
    assert result.exit_code == 0 and result.output == f"structome {package.__version__}\n"


def test_a_db_that_is_a_file_is_refused_in_one_line(tmp_path, fasta):
    result = structome("build", fasta, "--db", fasta)
    assert result.exit_code == 2 and f"{fasta} is a file, not a database folder" in result.output


@pytest.mark.parametrize(
    "code, text",
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
    ],
)
def test_file_system_errors_are_one_line_naming_the_path(tmp_path, fasta, monkeypatch, code, text):
    """A full disk, a read-only mount, a folder the account may not write: the message and the path, no errno
    number, no traceback (and the same error with --debug keeps its traceback)."""
    where = str(tmp_path / "db" / "structome.json")

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), where)

    monkeypatch.setattr(DatabaseLayout, "write_text_atomic", refuse)
    result = structome("build", fasta, "--db", str(tmp_path / "db"))
    assert result.exit_code == 1
    warning, error = result.output.splitlines()[0], result.output.splitlines()[-1]
    assert warning.startswith("WARNING: esmfold-tiny has UNTRAINED")
    assert error.startswith(f"Error: {text}: {where} (") and "Errno" not in error
    with pytest.raises(OSError):
        structome("--debug", "build", fasta, "--db", str(tmp_path / "db"))


def test_unexpected_errors_are_not_hidden(tmp_path, fasta, monkeypatch):
    def crash(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(DatabaseLayout, "write_text_atomic", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        structome("build", fasta, "--db", str(tmp_path / "db"))


LONG_ACCESSION = "A" * 260  # a bare header's id: a file name of over 255 bytes


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    entries = [
        entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a"),
        entry(f"SM-{LONG_ACCESSION}-F1", LONG_ACCESSION, "MKVLAAG", "p-b"),
    ]
    predictions = [random_prediction(PredictionRequest(e.prediction_id, e.sequence), i) for i, e in enumerate(entries)]
    return write_database(tmp_path_factory.mktemp("usability") / "db", entries, predictions)


def test_get_finds_accessions_and_entry_ids_in_any_case(database):
    upper = structome("get", "--db", str(database.location), "P1")
    assert upper.exit_code == 0 and upper.output.startswith("data_")
    for spelling in ("p1", "sm-p1-f1"):
        assert structome("get", "--db", str(database.location), spelling).output == upper.output


# What a command may import only when it needs it (issue 11: `get` and `sql "SELECT 1"` in < 0.5 s): pyarrow and
# numpy cost ~165 ms, fsspec and pandas more, torch, Ray and transformers seconds.
HEAVY_MODULES = ("pyarrow", "numpy", "pandas", "fsspec", "torch", "ray", "transformers")


@pytest.mark.parametrize(
    "args, printed",
    [
        (["get", "P1"], "data_"),
        (["get", "sm-p1-f1", "--format", "confidence"], '{"residueNumber"'),
        (["sql", "SELECT 1 AS one"], "one"),
        (
            ["sql", "--format", "json", "SELECT entryId, globalMetricValue, modelCreatedDate FROM entries"],
            '[{"entryId"',
        ),
        (["sql", "--format", "csv", "SELECT * FROM builds"], "build,"),
    ],
)
def test_get_and_sql_import_no_heavy_module(database, args, printed):
    """The commands run as a user runs them (a fresh process); what they imported is read at their end."""
    code = (
        "import sys; from structome.jobs.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
        f"finally:\n    print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY_MODULES)!r}), file=sys.stderr)"
    )
    command, *rest = args
    done = subprocess.run(
        [sys.executable, "-c", code, command, "--db", str(database.location), *rest],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith(printed), done.stderr
    assert done.stderr.splitlines()[-1] == "[]", f"`structome {' '.join(args)}` imported {done.stderr}"


def test_get_into_a_missing_folder_or_with_a_too_long_name_is_one_line(database, tmp_path):
    missing = tmp_path / "nowhere" / "x.cif"
    result = structome("get", "--db", str(database.location), "P1", "-o", str(missing))
    assert (
        result.exit_code == 1
        and result.output == f"Error: folder {missing.parent} does not exist (-o takes a file or an existing folder)\n"
    )
    result = structome("get", "--db", str(database.location), LONG_ACCESSION, "-o", str(tmp_path))
    assert result.exit_code == 1 and result.output.startswith("Error: File name too long: ")
    assert "shorter name" in result.output and "Traceback" not in result.output


def test_status_names_a_damaged_manifest_and_shows_the_rest(database):
    manifest = database.path(database.build_manifest("20991231T000000Z-abcdef"))
    os.makedirs(os.path.dirname(manifest), exist_ok=True)
    try:
        for damage in ('{"format": "structome-manifest/1", "shar', "[1, 2]"):
            with open(manifest, "w") as handle:
                handle.write(damage)
            result = structome("status", "--db", str(database.location))
            assert result.exit_code == 0, result.output
            assert f"{manifest} is not a readable build manifest" in result.output and "contents" in result.output
    finally:
        os.remove(manifest)


def _report(**figures) -> dict:
    report = {
        "build": "20261204T000000Z-abcdef",
        "status": "completed",
        "wallSeconds": 1.0,
        "records": 3,
        "entriesPlanned": 3,
        "entriesWritten": 0,
        "entriesSkipped": 0,
        "predictions": 0,
        "failures": 3,
        "failuresByReason": {"worker_failed": 3},
        "model": "esmfold-tiny",
        "untrained": True,
    }
    return report | figures


@pytest.fixture()
def finished_build(monkeypatch):
    """`build` ending with the report given to it, without running anything."""
    import structome.jobs.build.job as job

    def use(report: dict) -> None:
        monkeypatch.setattr(job, "run_build", lambda request: report)

    return use


def test_a_build_in_which_every_protein_failed_exits_non_zero(tmp_path, fasta, finished_build):
    finished_build(_report())
    result = structome("build", fasta, "--db", str(tmp_path / "db"))
    assert result.exit_code == 1
    assert "every protein of this build failed" in result.output.splitlines()[-1]
    assert "SELECT recordId, reason, message FROM failures WHERE build = '20261204T000000Z-abcdef'" in result.output


def test_a_build_with_some_failures_says_how_many_and_how_to_list_them(tmp_path, fasta, finished_build):
    finished_build(_report(entriesWritten=2, failures=1, failuresByReason={"out_of_memory": 1}))
    result = structome("build", fasta, "--db", str(tmp_path / "db"))
    assert result.exit_code == 0
    assert f"1 record(s) failed; list them with: structome sql --db {tmp_path / 'db'}" in result.output


def test_a_resumed_build_with_nothing_left_to_do_exits_zero(tmp_path, fasta, finished_build):
    finished_build(_report(entriesPlanned=0, entriesSkipped=3, failures=0, failuresByReason={}))
    assert structome("build", fasta, "--db", str(tmp_path / "db")).exit_code == 0


def test_untrained_weights_are_announced_at_the_start_and_the_end(tmp_path, fasta, finished_build):
    finished_build(_report(entriesWritten=3, failures=0, failuresByReason={}))
    lines = structome("build", fasta, "--db", str(tmp_path / "db")).output.splitlines()
    assert lines[0].startswith("WARNING: esmfold-tiny has UNTRAINED random weights")
    assert lines[-1] == lines[0] and len(lines) == 3
    finished_build(_report(entriesWritten=3, failures=0, failuresByReason={}, model="esmfold", untrained=False))
    output = structome("build", fasta, "--db", str(tmp_path / "db"), "--model", "esmfold").output
    assert "UNTRAINED" not in output
