"""Command-line options shared by several commands; their defaults are read from the settings dataclasses.

Every numeric option is range-checked here by click (a count of at least 1, a fraction above 0), so a bad value
is refused before any work starts instead of failing every protein later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from structome.models.types import EsmFoldSettings
from structome.pipelines.settings import BuildSettings, IngestSettings

_INGEST = IngestSettings()
_BUILD = BuildSettings()
_MODEL = EsmFoldSettings()

POSITIVE = click.IntRange(min=1)  # counts and sizes: at least 1
NON_NEGATIVE = click.IntRange(min=0)
POSITIVE_FRACTION = click.FloatRange(min=0, min_open=True)  # e.g. GPUs per worker: above 0


def _database_location(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A local --db must be a folder (or not exist yet); an object-store URI is taken as it is."""
    if "://" not in value and Path(value).exists() and not Path(value).is_dir():
        raise click.BadParameter(f"{value} is a file, not a database folder")
    return value


DB_OPTION = click.option(
    "--db",
    "db",
    required=True,
    callback=_database_location,
    help="Database: a folder, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix).",
)

NUM_RECYCLES_OPTION = click.option("--num-recycles", type=NON_NEGATIVE, default=_MODEL.num_recycles, show_default=True)


ALLOW_EMPTY_OPTION = click.option(
    "--allow-empty", is_flag=True, help="Accept an input without FASTA records (else it is refused, naming it)."
)


def sharding_options(command: Callable) -> Callable:
    """--max-length, --fragment-window, --fragment-step and --shard-size, as `build` and `plan` take them."""
    for option in reversed(
        (
            click.option(
                "--max-length",
                type=POSITIVE,
                default=_INGEST.max_length,
                show_default=True,
                help="Longer sequences are fragmented.",
            ),
            click.option("--fragment-window", type=POSITIVE, default=_INGEST.fragment_window, show_default=True),
            click.option("--fragment-step", type=POSITIVE, default=_INGEST.fragment_step, show_default=True),
            click.option(
                "--shard-size",
                type=POSITIVE,
                default=_BUILD.shard_size,
                show_default=True,
                help="Unique sequences per shard, at most.",
            ),
        )
    ):
        command = option(command)
    return command


def build_settings(
    max_length: int, fragment_window: int, fragment_step: int, shard_size: int, allow_empty: bool = False, **extra
) -> BuildSettings:
    """The BuildSettings that the sharding options, --allow-empty (and any other BuildSettings field in EXTRA)
    describe."""
    ingest = IngestSettings(
        max_length=max_length, fragment_window=fragment_window, fragment_step=fragment_step, allow_empty=allow_empty
    )
    return BuildSettings(ingest=ingest, shard_size=shard_size, **extra)
