"""Command-line options shared by several commands."""

from __future__ import annotations

import click

DB_OPTION = click.option(
    "--db", "db", required=True,
    help="Database: a folder, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix).",
)
