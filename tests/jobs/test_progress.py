"""Build progress as proteins fold: the tally the workers feed, the ETA, the lines without a terminal, `status`."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from structome.jobs.build.progress import (
    Folded,
    ProgressReporter,
    ProgressTally,
    Snapshot,
    format_duration,
    read_folding_progress,
)
from structome.models.types import PredictionRequest
from structome.storage.layout import DatabaseLayout


def test_the_eta_divides_the_flops_left_by_the_measured_flop_rate():
    """A quarter of the FLOPs in 100 s: 300 s left, although 40% of the residues (the long ones first) are done."""
    snapshot = Snapshot(Folded(10, 2000, 2e12), Folded(40, 5000, 8e12), 100.0, 1, 4, 2)
    assert snapshot.eta_seconds == pytest.approx(300.0) and snapshot.residues_per_second == pytest.approx(20.0)
    assert snapshot.line() == (
        "folded 10/40 proteins (25%), 2,000/5,000 residues, 20 residues/s, ETA 5 min 00 s; "
        "1/4 shards committed, 2 failures"
    )
    nothing_yet = Snapshot(Folded(), Folded(40, 5000, 8e12), 5.0, 0, 4, 0)
    assert nothing_yet.eta_seconds is None and "ETA after the first batch" in nothing_yet.line()
    assert [format_duration(s) for s in (7, 125, 3 * 3600 + 65)] == ["7 s", "2 min 05 s", "3 h 01 min"]


def test_a_retried_shard_counts_from_zero_again():
    tally = ProgressTally()
    tally.start("s1")
    tally.add("s1", 2, 100, 1e9)
    tally.start("s2")
    tally.add("s2", 1, 50, 5e8)
    tally.start("s1")  # its worker died: the new attempt folds it again
    tally.add("s1", 1, 60, 6e8)
    assert tally.totals() == Folded(2, 110, 1.1e9)


def test_without_a_terminal_a_line_every_interval_and_a_progress_file_for_status(tmp_path, capsys):
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    shards = [SimpleNamespace(requests=[PredictionRequest(f"p{i}", "M" * 10)]) for i in range(4)]
    plan = SimpleNamespace(build_id="20261204T000000Z-abcdef", shards=shards)
    folded = iter(Folded(n, 10 * n, 1e9 * n) for n in range(1, 1000))
    reporter = ProgressReporter(
        plan, layout, lambda: next(folded), Folded(4, 40, 4e9), bar=True, interval_s=0.2
    )  # bar=True, but stderr is no terminal here
    with reporter:
        time.sleep(0.7)
        reporter.committed(shards=1, failures=0)
    lines = capsys.readouterr().err.splitlines()
    assert 3 <= len(lines) <= 5 and all(line.startswith("folded ") for line in lines)
    assert "residues/s" in lines[0] and "1/4 shards committed" in lines[-1]
    written = read_folding_progress(layout, plan.build_id)
    assert written["line"] == lines[-1] and written["shards_planned"] == 4
    assert read_folding_progress(layout, "20261204T000000Z-other") is None


def test_a_progress_reading_that_fails_never_stops_the_build(tmp_path, capsys):
    layout = DatabaseLayout(tmp_path / "db")
    layout.create()
    plan = SimpleNamespace(build_id="20261204T000000Z-abcdef", shards=[])

    def unreachable():
        raise TimeoutError("the tally actor is busy")

    with ProgressReporter(plan, layout, unreachable, Folded(), bar=False, interval_s=0.1):
        time.sleep(0.25)
    assert "folded 0/0 proteins" in capsys.readouterr().err


def test_status_of_a_running_build_shows_its_latest_folding_progress(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner
    from fake_database import entry, random_prediction, write_database

    from structome.jobs.cli.main import main

    one = entry("SM-P1-F1", "P1", "MKVLAAGIVGLLW", "p-a")
    layout = write_database(tmp_path / "db", [one], [random_prediction(PredictionRequest("p-a", one.sequence), 0)])
    build = "20991231T000000Z-abcdef"
    shards = [{"shard": "s1", "sequences": 40, "entries": 40, "residues": 5000}]
    manifest = {"build": build, "startedAt": time.time() - 100, "shards": shards, "entries": 40, "residues": 5000}
    layout.write_text_atomic(json.dumps(manifest), layout.build_manifest(build))
    snapshot = Snapshot(Folded(10, 2000, 2e12), Folded(40, 5000, 8e12), 100.0, 0, 1, 0)
    layout.write_text_atomic(json.dumps(snapshot.to_json()), layout.build_progress(build))
    monkeypatch.setattr(DatabaseLayout, "build_running", lambda self: True)
    result = CliRunner().invoke(main, ["status", "--db", str(layout.location)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"now: {snapshot.line()}" in result.output and "0/1 shards" in result.output
