"""Build manifests: which shards a build planned, and an append-only log of what happened to each.

The manifest is written once when the build starts; each shard state change (started, committed, retried,
failed) is one JSON line appended to the events log, so `structome status` can follow a running build
from another terminal and a killed build leaves a record of how far it got. Locally every line is
appended and synced at once; on object stores (no appends) lines go out as part objects every few seconds.
The manifest and every event line name their format (MANIFEST_FORMAT, EVENTS_FORMAT); files without one are
version 1, and a newer version is refused.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from structome.pipelines.build import BuildPlan
from structome.storage.formats import FormatError, check_format, format_tag
from structome.storage.layout import DatabaseLayout

STATES = ("started", "committed", "retried", "failed")
MANIFEST_VERSION = EVENTS_VERSION = 1
MANIFEST_FORMAT = format_tag("manifest", MANIFEST_VERSION)
EVENTS_FORMAT = format_tag("events", EVENTS_VERSION)

OBJECT_STORE_FLUSH_SECONDS = 5.0


class ManifestWriter:
    def __init__(self, layout: DatabaseLayout, plan: BuildPlan):
        self.layout = layout
        self.events = layout.build_events(plan.build_id)
        self._pending: list[str] = []
        self._flush_every = 0.0 if layout.is_local else OBJECT_STORE_FLUSH_SECONDS
        self._flushed_at = time.monotonic()
        shards: list[dict[str, Any]] = [
            {"shard": s.shard_id, "sequences": len(s.requests), "entries": len(s.entries), "residues": s.residues}
            for s in plan.shards
        ]
        manifest = {
            "format": MANIFEST_FORMAT,
            "build": plan.build_id,
            "startedAt": time.time(),
            "shards": shards,
            "entries": plan.entries_planned,
            "residues": sum(s["residues"] for s in shards),
        }
        layout.write_text_atomic(json.dumps(manifest) + "\n", layout.build_manifest(plan.build_id))

    def record(self, shard_id: str, state: str, **details) -> None:
        if state not in STATES:
            raise ValueError(f"unknown shard state {state!r}")
        line = json.dumps(
            {"format": EVENTS_FORMAT, "t": round(time.time(), 3), "shard": shard_id, "state": state, **details}
        )
        self._pending.append(line)
        if time.monotonic() - self._flushed_at >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self.layout.append_lines(self._pending, self.events)
        self._pending = []
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        self.flush()


@dataclass(frozen=True)
class Progress:
    """How far a build got, read back from its manifest and events."""

    build: str
    shards_planned: int
    shards_committed: int
    shards_running: int
    shards_failed: int
    retries: int
    entries_planned: int
    entries_done: int
    residues_planned: int
    residues_done: int
    elapsed_seconds: float

    @property
    def residues_per_second(self) -> float | None:
        return self.residues_done / self.elapsed_seconds if self.elapsed_seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.residues_per_second
        return (self.residues_planned - self.residues_done) / rate if rate else None


def read_progress(layout: DatabaseLayout, build_id: str, *, running: bool = False) -> Progress | None:
    """None when the build left no manifest; a running build's elapsed time runs to now."""
    path = layout.build_manifest(build_id)
    if not layout.exists(path):
        return None
    manifest, sizes = _read_manifest(layout, path)
    events = layout.build_events(build_id)
    latest, counts, last_time = _replay(layout.read_lines(events), f"{layout.location}/{events}")
    done = [shard for shard, state in latest.items() if state == "committed"]
    return Progress(
        build=build_id,
        shards_planned=len(sizes),
        shards_committed=len(done),
        shards_running=sum(1 for state in latest.values() if state == "started"),
        shards_failed=sum(1 for state in latest.values() if state == "failed"),
        retries=counts["retried"],
        entries_planned=manifest["entries"],
        entries_done=sum(sizes[s]["entries"] for s in done if s in sizes),
        residues_planned=manifest["residues"],
        residues_done=sum(sizes[s]["residues"] for s in done if s in sizes),
        elapsed_seconds=max(
            0.0, (time.time() if running else last_time or manifest["startedAt"]) - manifest["startedAt"]
        ),
    )


def _read_manifest(layout: DatabaseLayout, path: str) -> tuple[dict, dict[str, dict]]:
    """The manifest and its shards by id; FormatError naming the file when it is not one (damaged, truncated)."""
    where = f"{layout.location}/{path}"
    try:
        manifest = json.loads(layout.read_text(path))
    except ValueError as error:  # not JSON, or not UTF-8
        raise FormatError(f"{where} is not a readable build manifest (damaged?): {error}") from error
    if not isinstance(manifest, dict) or not _MANIFEST_FIELDS <= manifest.keys():
        raise FormatError(f"{where} is not a readable build manifest (damaged?): it lacks {sorted(_MANIFEST_FIELDS)}")
    check_format(manifest, "manifest", MANIFEST_VERSION, where)
    try:
        return manifest, {s["shard"]: s for s in manifest["shards"]}
    except (KeyError, TypeError) as error:
        raise FormatError(f"{where} is not a readable build manifest (damaged?): a shard lacks {error}") from error


_MANIFEST_FIELDS = {"shards", "entries", "residues", "startedAt"}


def _replay(lines: list[str], where: str) -> tuple[dict[str, str], Counter, float | None]:
    """Latest state per shard; a torn last line (a killed writer) is ignored."""
    latest: dict[str, str] = {}
    counts: Counter = Counter()
    last_time = None
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        check_format(event, "events", EVENTS_VERSION, where)
        latest[event["shard"]] = event["state"]
        counts[event["state"]] += 1
        last_time = event["t"]
    return latest, counts, last_time
