"""The format marker seen from the command line: every command refuses a newer database clearly, an older
one is read as it is, and `structome migrate` marks it once."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fake_database import entry, random_prediction, write_database

from structome.jobs.cli import main
from structome.models.types import PredictionRequest


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture()
def db(tmp_path):
    one = entry("SM-Q1-F1", "Q1", "MKTAYIAKQRQISFVKSH", "p-q1")
    write_database(tmp_path / "db", [one], [random_prediction(PredictionRequest("p-q1", one.sequence), 0)])
    return tmp_path / "db"


def test_a_database_from_before_markers_is_read_as_it_is_and_migrated_once(db):
    (db / "structome.json").unlink()
    result = run("sql", "--db", str(db), "--format", "json", "SELECT entryId FROM entries")
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"entryId": "SM-Q1-F1"}]
    assert not (db / "structome.json").exists()  # reading never writes
    first = run("migrate", "--db", str(db))
    assert first.exit_code == 0 and f"migrated {db} from layout 1 to layout 2" in first.stderr
    assert json.loads((db / "structome.json").read_text())["layout"] == 2
    again = run("migrate", "--db", str(db))
    assert again.exit_code == 0 and "migrated" not in again.stderr and "is at layout 2" in again.stderr


def test_migrate_refuses_a_folder_that_is_no_database(tmp_path):
    result = run("migrate", "--db", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "is not a structome database" in result.stderr
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT 1"],
        ["get", "SM-Q1-F1"],
        ["status"],
        ["export", "--sql", "SELECT entryId FROM entries", "-o", "-"],
        ["migrate"],
    ],
)
def test_every_command_refuses_a_database_of_a_newer_layout(db, command):
    marker = json.loads((db / "structome.json").read_text())
    (db / "structome.json").write_text(json.dumps({**marker, "layout": 7}))
    name, *rest = command
    result = run(name, "--db", str(db), *rest)
    assert result.exit_code == 1, result.output
    assert "layout 7, newer than layout 2" in result.stderr and "upgrade structome" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
