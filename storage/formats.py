"""Versions of what structome stores, so that next year's code reads today's databases.

The database root holds `structome.json`, its format marker:

    {"format": "structome-database", "layout": 1, "createdBy": "0.1.0", "created": "2026-12-02T01:52:00+00:00"}

`layout` is the version of the folder layout (storage.layout). A database from before markers existed is
layout 1; layout 2 added compacted tables (storage.segments), so that a structome that knows only layout 1 (and
would glob the shards' files, some of which compaction removes) refuses a layout-2 database. This structome reads
layouts OLDEST_READABLE..LAYOUT as they are. Every JSON file a build writes names its own format, `"format": "structome-<kind>/<version>"`; a
file without one is version 1. A reader refuses a version newer than it knows, asking for a newer structome.
Changing the layout is one function: bump LAYOUT and register the step that upgrades a database to it in
MIGRATIONS (`structome migrate` and every build run the pending steps).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import structome

if TYPE_CHECKING:
    from structome.storage.layout import DatabaseLayout

__all__ = [
    "DATABASE_FORMAT",
    "LAYOUT",
    "MARKER_NAME",
    "MIGRATIONS",
    "OLDEST_READABLE",
    "FormatError",
    "check_format",
    "format_tag",
    "new_marker",
    "parse_marker",
]

MARKER_NAME = "structome.json"
DATABASE_FORMAT = "structome-database"
LAYOUT = 2  # the database layout this structome writes
OLDEST_READABLE = 1  # the oldest layout it reads without a migration
# layout version -> the step that upgrades a database of the version before it (run in order, marker after each)
MIGRATIONS: dict[int, Callable[[DatabaseLayout], None]] = {
    2: lambda layout: None,  # layout 1 has no compacted tables: as it is, it is a layout-2 database at generation 0
}


class FormatError(ValueError):
    """A stored file this structome cannot read: corrupt, not ours, or written by a newer structome."""


class NewerFormatError(FormatError):
    """A stored file written by a newer structome: whole, only not readable by this one (never damage)."""


def format_tag(kind: str, version: int = 1) -> str:
    """The `format` value of a JSON file: structome-manifest/1."""
    return f"structome-{kind}/{version}"


def check_format(document: dict, kind: str, known: int, where: str) -> int:
    """The version of a JSON document of `kind` (1 when it names none); FormatError if newer than `known`."""
    tag = document.get("format", format_tag(kind))
    name, _, version = str(tag).partition("/")
    if name != f"structome-{kind}" or not version.isdigit():
        raise FormatError(f"{where}: format {tag!r} is not a structome-{kind} file")
    if int(version) > known:
        raise NewerFormatError(
            f"{where} is {tag}, newer than this structome ({structome.__version__}) reads "
            f"({format_tag(kind, known)}): upgrade structome"
        )
    return int(version)


def new_marker(layout: int = LAYOUT) -> dict:
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return {"format": DATABASE_FORMAT, "layout": layout, "createdBy": structome.__version__, "created": created}


def parse_marker(data: bytes | str, where: str) -> dict:
    """A database marker read from `where`; FormatError if it is not one, or of a newer layout than LAYOUT."""
    try:
        marker = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"{where} is corrupt ({error}): not a structome database marker") from error
    if not isinstance(marker, dict) or marker.get("format") != DATABASE_FORMAT or type(marker.get("layout")) is not int:
        raise FormatError(
            f"{where} is not a structome database marker (expected format {DATABASE_FORMAT!r} and an integer layout)"
        )
    if marker["layout"] > LAYOUT:
        raise FormatError(
            f"{where}: the database has layout {marker['layout']}, newer than layout {LAYOUT} that "
            f"this structome ({structome.__version__}) knows: upgrade structome"
        )
    return marker
