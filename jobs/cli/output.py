"""Rendering for the CLI: SQL results in four formats, the build summary, `status`.

Results arrive as column names and rows of Python values (catalog.query_rows): only the parquet format needs
Arrow, and pyarrow (~165 ms to import) is imported only for it, so `structome sql "SELECT 1"` stays quick.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from structome.storage import catalog
from structome.storage.formats import FormatError
from structome.storage.layout import DatabaseLayout

if TYPE_CHECKING:
    import pyarrow as pa

SQL_FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 60  # characters shown per cell in the table format


def write_parquet(table: pa.Table, out: Path | None) -> None:
    import pyarrow.parquet as pq

    if out is None and sys.stdout.isatty():
        raise SystemExit("Error: parquet output is binary; give -o FILE or redirect stdout")
    pq.write_table(table, out if out is not None else sys.stdout.buffer)


def write_rows(columns: Sequence[str], rows: list[tuple], fmt: str, out: Path | None) -> None:
    """A result in one of the text formats (table, csv, json) to `out` or stdout."""
    text = {"table": as_text_table, "csv": as_csv, "json": as_json}[fmt](columns, rows)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def as_json(columns: Sequence[str], rows: list[tuple]) -> str:
    """A JSON array of row objects."""
    objects = [dict(zip(columns, row, strict=True)) for row in rows]
    return json.dumps(objects, default=_json_default, ensure_ascii=False) + "\n"


def _json_default(value):
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def as_csv(columns: Sequence[str], rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _cell(v, limit=None) for v in row])
    return buffer.getvalue()


def as_text_table(columns: Sequence[str], rows: list[tuple]) -> str:
    header = list(columns)
    body = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    plural = "" if len(body) == 1 else "s"
    return "\n".join(lines) + f"\n({len(body)} row{plural})\n"


def _cell(value, limit: int | None = MAX_CELL) -> str:
    if value is None:
        return "NULL"
    text = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    if isinstance(value, float):
        text = f"{value:.4g}"
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def untrained_warning(model: str) -> str:
    return (
        f"WARNING: {model} has UNTRAINED random weights: its structures and confidence scores are meaningless "
        "(it exists to try structome on a CPU). For real structures: --model esmfold."
    )


def build_summary(report: dict, db: str) -> str:
    """The build's one summary line, then how to list its failures and a reminder of untrained weights."""
    reasons = ", ".join(f"{k}: {v}" for k, v in report["failuresByReason"].items()) or "none"
    lines = [
        f"build {report['build']} {report['status']} in {report['wallSeconds']:.1f} s: "
        f"{report['records']} records, {report['entriesWritten']} entries written, "
        f"{report['entriesSkipped']} already present, {report['predictions']} sequences folded; "
        f"failures {report['failures']} ({reasons})"
    ]
    if report["failures"]:
        lines.append(
            f"{report['failures']:,} record(s) failed; list them with: structome sql --db {db} "
            f"\"SELECT recordId, reason, message FROM failures WHERE build = '{report['build']}'\""
        )
    if report.get("untrained"):
        lines.append(untrained_warning(report["model"]))
    return "\n".join(lines)


def nothing_built(report: dict) -> bool:
    """Every protein this build tried failed (or every record was refused): such a build must not exit 0."""
    tried = report["entriesPlanned"] > 0 or report["entriesSkipped"] == 0
    return report["failures"] > 0 and report["entriesWritten"] == 0 and tried


def status_text(layout: DatabaseLayout) -> str:
    from structome.storage.verify import damage_summary, quick_check

    running = layout.build_running()
    sections = [
        f"database {layout.location}",
        "a build is running now (counts are what it has committed so far)" if running else "no build is running",
    ]
    progress = _latest_progress(layout, running)
    if progress:
        sections.append(progress)
    damage = quick_check(layout)
    if damage:  # damaged table files are left out of the counts below
        sections.append("\nDAMAGED: " + damage_summary(layout, damage))
    for title, query in _STATUS_QUERIES:
        columns, rows = catalog.query_rows(layout, query, [running] if "?" in query else None)
        sections.append(f"\n{title}\n" + as_text_table(columns, rows))
    return "\n".join(sections)


def _latest_progress(layout: DatabaseLayout, running: bool) -> str | None:
    """The newest build's shard progress from its manifest: done/planned, rate, ETA."""
    from structome.jobs.build.manifest import read_progress
    from structome.jobs.build.progress import read_folding_progress

    manifests = [f for f in layout.list_files("builds") if f.endswith(".manifest.json")]
    if not manifests:
        return None
    build_id = manifests[-1].removeprefix("builds/").removesuffix(".manifest.json")
    try:
        progress = read_progress(layout, build_id, running=running)
    except FormatError as error:
        return f"\nlatest build {build_id}: progress unknown: {error}"
    if progress is None:
        return None
    rate, eta = progress.residues_per_second, progress.eta_seconds
    folding = read_folding_progress(layout, build_id) if running else None
    return (
        (f"\nnow: {folding['line']}" if folding else "")
        + f"\nlatest build {progress.build}: {progress.shards_committed}/{progress.shards_planned} shards, "
        f"{progress.entries_done}/{progress.entries_planned} entries, {progress.residues_done:,} residues"
        + (f", {rate:,.0f} residues/s" if rate else "")
        + (f", ETA {eta:,.0f} s" if running and eta is not None else "")
        + f"; {progress.shards_running} running, {progress.retries} retried, {progress.shards_failed} failed"
    )


# A build still marked running while nobody holds the lock was interrupted (killed, crashed).
_STATUS_QUERIES = (
    (
        "builds",
        "SELECT build, CASE WHEN status = 'running' AND NOT ? THEN 'interrupted' ELSE status END AS status, "
        "startedAt, wallSeconds, records, entriesWritten, entriesSkipped, failures, model, untrained "
        "FROM builds ORDER BY build",
    ),
    (
        "contents",
        "SELECT count(*) AS entries, count(DISTINCT uniprotAccession) AS accessions, "
        "count(DISTINCT predictionId) AS predictions, coalesce(sum(uniprotEnd - uniprotStart + 1), 0) "
        "AS residues, round(avg(globalMetricValue), 2) AS meanPlddt FROM entries",
    ),
    (
        "failures by reason",
        "SELECT stage, reason, count(*) AS records FROM failures GROUP BY ALL ORDER BY records DESC",
    ),
)
