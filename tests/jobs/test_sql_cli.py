"""`structome sql`: read-only like the server's endpoint, and a reader that never blocks a build's catalog refresh."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from fake_database import entry, random_prediction, write_database

from structome.jobs.cli import main
from structome.models.types import PredictionRequest
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout


@pytest.fixture()
def db(tmp_path) -> DatabaseLayout:
    first = random_prediction(PredictionRequest("p-a", "MKVLAAGIVGLLW"), 0)
    return write_database(tmp_path / "db", [entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")], [first])


def sql(db: DatabaseLayout, *args: str):
    return CliRunner().invoke(main, ["sql", "--db", str(db.root), *args])


@pytest.mark.parametrize(
    "statement",
    [
        "COPY entries TO '{out}'",
        "COPY (SELECT 1 AS a) TO '{out}' (FORMAT csv)",
        "SELECT 1; COPY entries TO '{out}'",
        "EXPORT DATABASE '{out}'",
    ],
)
def test_sql_refuses_writes_without_allow_writes(db, tmp_path, statement):
    out = tmp_path / "written"
    result = sql(db, statement.format(out=out))
    assert result.exit_code == 1 and "read-only" in result.output and "--allow-writes" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_allow_writes_keeps_the_power(db, tmp_path):
    out = tmp_path / "entries.csv"
    result = sql(db, "--allow-writes", f"COPY (SELECT entryId FROM entries) TO '{out}' (FORMAT csv)")
    assert result.exit_code == 0, result.output
    assert out.read_text().split() == ["entryId", "SM-P1-F1"]


def test_a_select_still_answers(db):
    result = sql(db, "--format", "csv", "SELECT entryId FROM entries")
    assert result.exit_code == 0 and result.output.split() == ["entryId", "SM-P1-F1"]


def test_a_reader_open_during_a_catalog_refresh_does_not_break_the_writer(db, monkeypatch):
    """What `structome sql` does while a long query runs: hold its connection. A build's catalog refresh (another
    process) must go through at once; a held file lock made it retry for 5 s, fail, and end the build `interrupted`."""
    refreshes: list[tuple[int, str, float]] = []
    writer = f"from structome.storage.catalog import refresh_catalog as r; from structome.storage.layout import \
DatabaseLayout as L; r(L({str(db.root)!r}))"

    def refreshed_while_open(open_catalog):
        def reader_in_the_middle_of_a_long_query(layout, *args):
            connection = open_catalog(layout, *args)
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=60)
            refreshes.append((done.returncode, done.stderr[-300:], time.monotonic() - started))
            return connection

        return reader_in_the_middle_of_a_long_query

    for name in ("connect", "connect_snapshot", "connect_detached"):  # however the command opens the catalog
        monkeypatch.setattr(catalog, name, refreshed_while_open(getattr(catalog, name)))
    result = sql(db, "--format", "csv", "SELECT entryId FROM entries ORDER BY 1")
    assert result.exit_code == 0 and result.output.split() == ["entryId", "SM-P1-F1"], result.output
    (returncode, stderr, elapsed), *_ = refreshes
    assert returncode == 0, f"the build's catalog refresh failed while `structome sql` read: {stderr}"
    assert elapsed < 4.5, f"the refresh waited {elapsed:.1f} s for the reader"


def test_no_catalog_connection_draws_progress_bars(db):
    """DuckDB draws a progress bar into stdout for a query past 2 s: into `structome sql` output and the server's
    log. Every connection structome opens turns it off (the SQL workers': test_sql_sandbox). Checked in a fresh
    process, as a command runs (under pytest's capture DuckDB starts with the bar off)."""
    probe = f"""
from structome.storage import catalog
from structome.storage.layout import DatabaseLayout
layout = DatabaseLayout({str(db.root)!r})
for open_catalog in (catalog.connect, catalog.connect_snapshot, catalog.connect_detached, catalog.connect_files):
    print(open_catalog(layout).sql("SELECT current_setting('enable_progress_bar')").fetchall()[0][0])
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"] * 4
