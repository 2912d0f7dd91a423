"""`structome build`: fold FASTA inputs into a database (the work itself is structome.jobs.build)."""

from __future__ import annotations

import click

from structome.jobs.build.settings import WORKER_DEVICES, RunnerSettings
from structome.jobs.cli import output
from structome.jobs.cli.options import (
    ALLOW_EMPTY_OPTION,
    DB_OPTION,
    NUM_RECYCLES_OPTION,
    POSITIVE,
    POSITIVE_FRACTION,
    build_settings,
    sharding_options,
)
from structome.models.registry import PRESETS
from structome.models.types import STEM_PRECISIONS, TRUNK_PRECISIONS, EsmFoldSettings
from structome.pipelines.fasta import check_input
from structome.storage.layout import DatabaseLockedError

_MODEL = EsmFoldSettings()
_RUNNER = RunnerSettings()


@click.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@ALLOW_EMPTY_OPTION
@DB_OPTION
@click.option("--model", type=click.Choice(sorted(PRESETS)), default="esmfold-tiny", show_default=True)
@click.option("--weights", help="Local weights folder or Hugging Face id (default: the model's own).")
@sharding_options
@click.option(
    "--batch-tokens",
    type=POSITIVE,
    help="Cap on padded residues per model call (count x longest); batches are planned by the cost "
    "model within the device's memory either way.",
)
@NUM_RECYCLES_OPTION
@click.option(
    "--stem-precision",
    type=click.Choice(STEM_PRECISIONS),
    default=_MODEL.stem_precision,
    show_default=True,
    help="Language-model weights dtype.",
)
@click.option(
    "--trunk-precision",
    type=click.Choice(TRUNK_PRECISIONS),
    default=_MODEL.trunk_precision,
    show_default=True,
    help="Folding-trunk arithmetic; a protein with NaN/inf output is folded again in fp32.",
)
@click.option("--chunk-size", type=POSITIVE, help="Force the trunk chunk size (default: by length).")
@click.option("--workers", type=POSITIVE, help="Predictor actors (default: one per GPU, else one per 4 CPUs).")
@click.option(
    "--gpus-per-worker",
    type=POSITIVE_FRACTION,
    default=_RUNNER.gpus_per_worker,
    show_default=True,
    help="GPUs per predictor actor; fractions share a GPU.",
)
@click.option(
    "--device",
    type=click.Choice(WORKER_DEVICES),
    default=_RUNNER.device,
    show_default=True,
    help="auto: GPU workers if the cluster has GPUs at start; cuda: always (lets an autoscaler add GPU nodes).",
)
@click.option("--address", help="Ray cluster address (default: start Ray in-process).")
@click.option("--no-progress", is_flag=True, help="No progress bar: a progress line every --progress-interval.")
@click.option(
    "--progress-interval",
    type=POSITIVE_FRACTION,
    default=_RUNNER.progress_interval_s,
    show_default=True,
    help="Seconds between progress lines when there is no bar (no terminal, or --no-progress).",
)
@click.option(
    "--no-compact", is_flag=True, help="Leave the new shards uncompacted (`structome compact` merges them later)."
)
def build_command(
    inputs,
    allow_empty,
    db,
    model,
    weights,
    max_length,
    fragment_window,
    fragment_step,
    batch_tokens,
    shard_size,
    num_recycles,
    stem_precision,
    trunk_precision,
    chunk_size,
    workers,
    gpus_per_worker,
    device,
    address,
    no_progress,
    progress_interval,
    no_compact,
) -> None:
    """Predict every protein of the FASTA INPUTS (files or streams; plain, gzip, bzip2, xz or zstd) into the
    database; re-runs resume."""
    # Imported here: torch, transformers and Ray take seconds to import, and only `build` needs them.
    try:  # in seconds, before the imports below: an input that is no FASTA at all fails at once
        for path in inputs:
            check_input(path, allow_empty=allow_empty)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    from structome.jobs.build.job import BUILD_COMPACTION, BuildRequest, run_build
    from structome.jobs.build.runner import BuildError
    from structome.models.esmfold import default_device

    if PRESETS[model].untrained:
        click.echo(output.untrained_warning(model), err=True)
    try:
        request = BuildRequest(
            inputs=tuple(inputs),
            db=db,
            model=model,
            weights=weights,
            model_settings=EsmFoldSettings(
                num_recycles=num_recycles,
                stem_precision=stem_precision,
                trunk_precision=trunk_precision,
                chunk_size=chunk_size,
                device=default_device(),
            ),
            build_settings=build_settings(
                max_length, fragment_window, fragment_step, shard_size, allow_empty, batch_tokens=batch_tokens
            ),
            runner=RunnerSettings(
                address=address,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                device=device,
                progress=not no_progress,
                progress_interval_s=progress_interval,
            ),
            compaction=None if no_compact else BUILD_COMPACTION,
        )
        report = run_build(request)
    except (ValueError, FileNotFoundError, DatabaseLockedError, BuildError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(output.build_summary(report, db), err=True)
    if output.nothing_built(report):
        raise click.ClickException(f"every protein of this build failed; nothing was written to {db}")
