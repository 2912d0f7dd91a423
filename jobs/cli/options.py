"""Command-line options shared by several commands; their defaults are read from the settings dataclasses."""

from __future__ import annotations

from collections.abc import Callable

import click

from structome.models.types import EsmFoldSettings
from structome.pipelines.settings import BuildSettings, IngestSettings

_INGEST = IngestSettings()
_BUILD = BuildSettings()
_MODEL = EsmFoldSettings()

DB_OPTION = click.option(
    "--db",
    "db",
    required=True,
    help="Database: a folder, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix).",
)

NUM_RECYCLES_OPTION = click.option("--num-recycles", type=int, default=_MODEL.num_recycles, show_default=True)


ALLOW_EMPTY_OPTION = click.option(
    "--allow-empty", is_flag=True, help="Accept an input without FASTA records (else it is refused, naming it)."
)


def sharding_options(command: Callable) -> Callable:
    """--max-length, --fragment-window, --fragment-step and --shard-size, as `build` and `plan` take them."""
    for option in reversed(
        (
            click.option(
                "--max-length",
                type=int,
                default=_INGEST.max_length,
                show_default=True,
                help="Longer sequences are fragmented.",
            ),
            click.option("--fragment-window", type=int, default=_INGEST.fragment_window, show_default=True),
            click.option("--fragment-step", type=int, default=_INGEST.fragment_step, show_default=True),
            click.option(
                "--shard-size",
                type=int,
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
