"""`structome plan`: what a build would do and cost, without running anything (pipelines.estimate)."""

from __future__ import annotations

import json

import click

from structome.jobs.cli.options import (
    ALLOW_EMPTY_OPTION,
    NUM_RECYCLES_OPTION,
    POSITIVE,
    build_settings,
    sharding_options,
)
from structome.models.registry import PRESETS
from structome.pipelines.calibration import DEVICES
from structome.pipelines.estimate import estimate_build, format_estimate_table

FORMATS = ("table", "json")


@click.command("plan")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@ALLOW_EMPTY_OPTION
@click.option("--model", type=click.Choice(sorted(PRESETS)), default="esmfold", show_default=True)
@click.option("--gpus", type=POSITIVE, default=1, show_default=True, help="Devices the build would run on.")
@click.option("--gpu-type", type=click.Choice(list(DEVICES)), default="h100", show_default=True)
@NUM_RECYCLES_OPTION
@sharding_options
@click.option(
    "--baseline-batch-size", type=POSITIVE, help="Fixed batch size of the baseline (default: the planner's mean)."
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--list-over-memory", is_flag=True, help="Name every sequence that may not fit the device (default: the first few)."
)
def plan_command(
    inputs,
    allow_empty,
    model,
    gpus,
    gpu_type,
    num_recycles,
    max_length,
    fragment_window,
    fragment_step,
    shard_size,
    baseline_batch_size,
    fmt,
    list_over_memory,
) -> None:
    """Print what `build` would do with the FASTA INPUTS and what it would cost, without running anything."""
    try:
        settings = build_settings(max_length, fragment_window, fragment_step, shard_size, allow_empty)
        report = estimate_build(
            inputs,
            model=model,
            gpu_type=gpu_type,
            gpus=gpus,
            num_recycles=num_recycles,
            build_settings=settings,
            baseline_batch_size=baseline_batch_size,
        )
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        json.dumps(report.as_dict(), indent=2) if fmt == "json" else format_estimate_table(report, list_over_memory),
        nl=fmt == "json",
    )
