"""Progress of a running build as proteins fold, not only as shards commit.

Predictor workers tell a small Ray actor (ProgressTally) of every batch they finish; a driver thread
(ProgressReporter) reads its totals about every second and shows them: a bar on a terminal, else (or with
--no-progress) one line every `progress_interval_s`. The ETA divides the useful FLOPs still to fold (cost model)
by the FLOP rate measured so far, so the longest-first shard order does not fool it the way a protein or
residue rate would. The same figures go to `builds/<build>.progress.json` for `structome status`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm import tqdm

from structome.pipelines.batching import Batch
from structome.pipelines.build import BuildPlan
from structome.pipelines.cost_model import CostModel
from structome.storage.layout import DatabaseLayout

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often the driver reads the tally


@dataclass(frozen=True)
class Folded:
    """Work folded so far (or planned)."""

    proteins: int = 0
    residues: int = 0
    flops: float = 0.0  # useful FLOPs (cost model)


class ProgressTally:
    """A Ray actor: what each shard's current attempt has folded. A retried shard starts again from zero."""

    def __init__(self) -> None:
        self.shards: dict[str, Folded] = {}

    def start(self, shard_id: str) -> None:
        self.shards[shard_id] = Folded()

    def add(self, shard_id: str, proteins: int, residues: int, flops: float) -> None:
        done = self.shards.get(shard_id, Folded())
        self.shards[shard_id] = Folded(done.proteins + proteins, done.residues + residues, done.flops + flops)

    def totals(self) -> Folded:
        return Folded(
            sum(f.proteins for f in self.shards.values()),
            sum(f.residues for f in self.shards.values()),
            sum(f.flops for f in self.shards.values()),
        )


def batch_reporter(tally, shard_id: str) -> Callable[[Batch], None]:
    """What a worker calls after each batch of `shard_id` (fire and forget: folding never waits for it)."""
    tally.start.remote(shard_id)
    return lambda batch: tally.add.remote(shard_id, len(batch.indices), batch.residues, batch.useful_flops)


@dataclass(frozen=True)
class Snapshot:
    """One progress reading: what `status` shows and the log lines say."""

    folded: Folded
    planned: Folded
    elapsed_seconds: float
    shards_committed: int
    shards_planned: int
    failures: int

    @property
    def residues_per_second(self) -> float | None:
        return (
            self.folded.residues / self.elapsed_seconds if self.elapsed_seconds > 0 and self.folded.residues else None
        )

    @property
    def eta_seconds(self) -> float | None:
        """Useful FLOPs left over the FLOP rate measured so far; None before the first batch."""
        if not self.folded.flops or self.elapsed_seconds <= 0:
            return None
        return max(0.0, self.planned.flops - self.folded.flops) / (self.folded.flops / self.elapsed_seconds)

    def line(self) -> str:
        rate, eta = self.residues_per_second, self.eta_seconds
        share = self.folded.proteins / self.planned.proteins if self.planned.proteins else 1.0
        return (
            f"folded {self.folded.proteins:,}/{self.planned.proteins:,} proteins ({share:.0%}), "
            f"{self.folded.residues:,}/{self.planned.residues:,} residues"
            + (f", {rate:,.0f} residues/s" if rate else "")
            + (f", ETA {format_duration(eta)}" if eta is not None else ", ETA after the first batch")
            + f"; {self.shards_committed}/{self.shards_planned} shards committed, {self.failures:,} failures"
        )

    def to_json(self) -> dict:
        return asdict(self) | {"t": round(time.time(), 3), "line": self.line()}


def format_duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def planned_work(plan: BuildPlan, cost: CostModel) -> Folded:
    lengths = [len(r.sequence) for shard in plan.shards for r in shard.requests]
    return Folded(len(lengths), sum(lengths), cost.useful_flops(lengths))


class ProgressReporter:
    """Reads the tally from a thread; a bar when `bar` (and stderr is a terminal), else a line every interval."""

    def __init__(
        self,
        plan: BuildPlan,
        layout: DatabaseLayout,
        read_totals: Callable[[], Folded],
        planned: Folded,
        *,
        bar: bool,
        interval_s: float,
    ):
        self.plan, self.layout, self.read_totals, self.planned = plan, layout, read_totals, planned
        self.interval_s = interval_s
        self.bar = tqdm(total=planned.proteins, unit="protein", disable=not (bar and sys.stderr.isatty()))
        self.shards_committed = self.failures = 0
        self.last = Folded()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="structome-progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._report(self.snapshot(), final=True)
        self.bar.close()

    def committed(self, shards: int, failures: int) -> None:
        """The scheduling loop's counts (plain ints: read by the thread, written only by the loop)."""
        self.shards_committed, self.failures = shards, failures

    def snapshot(self) -> Snapshot:
        try:
            self.last = self.read_totals()
        except Exception as error:  # noqa: BLE001 (a progress reading must never stop a build)
            logger.debug("progress not read now: %s", error)
        return Snapshot(
            self.last,
            self.planned,
            time.monotonic() - self.started,
            self.shards_committed,
            len(self.plan.shards),
            self.failures,
        )

    def _run(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(POLL_SECONDS if not self.bar.disable else self.interval_s):
            snapshot = self.snapshot()
            due = time.monotonic() - last_line >= self.interval_s
            self._report(snapshot, final=False, line=due)
            if due:
                last_line = time.monotonic()

    def _report(self, snapshot: Snapshot, *, final: bool, line: bool = True) -> None:
        if not self.bar.disable:
            rate, eta = snapshot.residues_per_second, snapshot.eta_seconds
            self.bar.set_postfix_str(
                (f"{rate:,.0f} residues/s" if rate else "")
                + (f", ETA {format_duration(eta)}" if eta is not None and not final else "")
                + f", {snapshot.failures} failures",
                refresh=False,
            )
            self.bar.update(snapshot.folded.proteins - self.bar.n)
        elif line:
            print(snapshot.line(), file=sys.stderr, flush=True)
        if line:
            self._write(snapshot)

    def _write(self, snapshot: Snapshot) -> None:
        try:
            self.layout.write_text_atomic(
                json.dumps(snapshot.to_json()) + "\n", self.layout.build_progress(self.plan.build_id)
            )
        except OSError as error:  # `status` goes without it; the build's own files are what matters
            logger.info("progress file not written now: %s", error)


def read_folding_progress(layout: DatabaseLayout, build_id: str) -> dict | None:
    """The latest progress a build wrote (see ProgressReporter), or None."""
    path = layout.build_progress(build_id)
    if not layout.exists(path):
        return None
    try:
        return json.loads(layout.read_text(path))
    except ValueError:  # a torn write on a store without atomic replace: next time
        return None
