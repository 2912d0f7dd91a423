"""`structome plan`: counts, efficiencies against the baseline, and an honest wall-time estimate."""

from __future__ import annotations

import json
import logging
import random

import click
import pytest
from click.testing import CliRunner

from structome.jobs.cli.plan import plan_command
from structome.pipelines.calibration import Calibration, load_calibrations
from structome.pipelines.estimate import estimate_build
from structome.pipelines.fasta import iter_fasta
from structome.pipelines.ingest import fragment_windows
from structome.pipelines.settings import IngestSettings


@click.group()
def cli() -> None:
    """A throwaway group: structome.jobs.cli registers the same command."""


cli.add_command(plan_command)


@pytest.fixture(scope="module")
def slice_fasta(data_dir):
    return str(data_dir / "fasta" / "ecoli_k12_2020_slice.fasta")


def run_plan(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, ["plan", *args], catch_exceptions=False)


def test_json_report_counts_and_beats_the_baseline(slice_fasta):
    result = run_plan(slice_fasta, "--model", "esmfold", "--gpus", "4", "--gpu-type", "h100", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["records"] == 62
    assert report["entries"] + report["ingest_failures"] >= report["records"]
    assert 0 < report["unique_sequences"] <= report["entries"]
    assert report["planner"]["sequences"] == report["baseline"]["sequences"] == report["unique_sequences"]
    assert report["planner"]["residues"] == report["residues"]
    assert report["shards"] >= 1 and report["planner"]["batches"] >= report["shards"]
    assert report["planner"]["token_efficiency"] > report["baseline"]["token_efficiency"]
    assert report["planner"]["flop_efficiency"] > report["baseline"]["flop_efficiency"]
    assert report["planner"]["executed_flops"] >= report["planner"]["useful_flops"] > 0
    estimate = report["estimate"]
    assert estimate["measured"] is False
    assert "no measured calibration for esmfold on h100" in estimate["note"]
    assert "ASSUMED" in estimate["note"]
    assert estimate["wall_seconds"] == pytest.approx(estimate["device_seconds"] / 4)
    a3, a2, a1, _ = report["flops_polynomial"]
    assert a3 == pytest.approx(2.95e5 * 5 / 4, rel=0.01)  # 4 recycles: 5 trunk passes


def test_table_says_when_the_time_is_an_assumption(slice_fasta):
    result = run_plan(slice_fasta, "--gpu-type", "a100")
    assert result.exit_code == 0, result.output
    assert "no measured calibration for esmfold on a100" in result.output
    assert "ESTIMATE, not measured" in result.output
    assert "model calls only: starting Ray, loading the model and writing come on top" in result.output
    for label in ("token efficiency", "FLOP efficiency", "unique sequences", "shards", "fixed"):
        assert label in result.output


def test_the_tiny_model_on_cpu_uses_the_measured_calibration(slice_fasta):
    assert any((c.model, c.device) == ("esmfold-tiny", "cpu") for c in load_calibrations())
    result = run_plan(slice_fasta, "--model", "esmfold-tiny", "--gpu-type", "cpu", "--format", "json")
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.output)["estimate"]
    assert estimate["measured"] is True and estimate["wall_seconds"] > 0
    assert "measured calibration for esmfold-tiny on cpu" in estimate["note"]


def test_fragments_are_counted(data_dir):
    path = data_dir / "fasta" / "biotite_cas9.fasta"
    settings = IngestSettings(max_length=500, fragment_window=400, fragment_step=200)
    expected = sum(
        len(windows)
        for windows in (fragment_windows(len(r.sequence_raw.rstrip("*")), settings) for r in iter_fasta(path))
        if len(windows) > 1
    )
    result = run_plan(
        str(path), "--max-length", "500", "--fragment-window", "400", "--fragment-step", "200", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert expected > 0 and report["fragments"] == expected


def test_a_measured_gpu_calibration_is_used_as_measured(slice_fasta):
    rate = 1e14
    flat = Calibration(
        model="esmfold",
        device="h100",
        call_flops=(1e12, 1e15),
        flops_per_second=(rate, rate),
        max_batch_flops=None,
        measured="test",
    )
    report = estimate_build([slice_fasta], model="esmfold", gpu_type="h100", gpus=2, calibrations=[flat])
    assert report.estimate.measured
    assert report.estimate.device_seconds == pytest.approx(report.planner.executed_flops / rate)
    assert report.estimate.wall_seconds == pytest.approx(report.estimate.device_seconds / 2)


def test_interpolated_rates():
    calibration = Calibration("m", "d", (1e9, 1e11), (1e9, 3e9), None, "test")
    assert calibration.seconds(1e9) == pytest.approx(1.0)
    assert calibration.seconds(1e10) == pytest.approx(1e10 / 2e9)  # halfway in log(call size)
    assert calibration.seconds(1e12) == pytest.approx(1e12 / 3e9)  # held beyond the measured range


def test_bad_options_are_one_line_errors(slice_fasta):
    result = CliRunner().invoke(cli, ["plan", slice_fasta, "--gpus", "0"])
    assert result.exit_code == 2 and "Invalid value for '--gpus': 0 is not in the range x>=1" in result.output
    result = CliRunner().invoke(cli, ["plan", slice_fasta, "--gpu-type", "tpu"])
    assert result.exit_code != 0


def test_sequences_that_may_not_fit_are_one_summary_not_a_warning_each(tmp_path, caplog):
    """On a 24 GB A10G ~950 residues fit alone at fp32; 12 longer proteins are one summary naming the first
    five (all with --list-over-memory), what would fit them, and not 12 log warnings."""
    rng = random.Random(0)
    lengths = {f"Q{i:05d}": 1000 + 80 * i for i in range(12)} | {f"P{i:05d}": 100 + i for i in range(20)}
    fasta = tmp_path / "long.fasta"
    fasta.write_text(
        "".join(
            f">sp|{acc}|X_YEAST\n{''.join(rng.choices('ACDEFGHIKLMNPQRSTVWY', k=n))}\n" for acc, n in lengths.items()
        )
    )
    with caplog.at_level(logging.WARNING):
        result = run_plan(str(fasta), "--gpu-type", "a10g")
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    summary = [line for line in result.output.splitlines() if line.startswith("may not fit")]
    assert len(summary) == 1 and "12 sequence(s) up to 1,880 residues exceed one a10g's memory" in summary[0]
    assert "--stem-precision bf16 fits" in result.output and "all fit on: " in result.output
    longest_first = [f"Q{i:05d}" for i in reversed(range(12))]
    assert f"{', '.join(longest_first[:5])} and 7 more (--list-over-memory names all)" in result.output
    listed = run_plan(str(fasta), "--gpu-type", "a10g", "--list-over-memory").output
    assert ", ".join(longest_first) in listed and "more" not in listed
    report = json.loads(run_plan(str(fasta), "--gpu-type", "a10g", "--format", "json").output)
    assert report["over_memory"]["sequences"] == 12 and report["over_memory"]["accessions"] == longest_first
    assert "may not fit" not in run_plan(str(fasta), "--gpu-type", "h200").output
