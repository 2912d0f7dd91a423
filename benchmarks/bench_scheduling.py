"""Scheduling benchmark: the real runner, writers and storage driven by a model that only sleeps.

Run: .venv/bin/python benchmarks/bench_scheduling.py [--quick] [--proteins N] [--length-scale X]
         [--max-length L] [--rate F] [--shard-size S] [--batch-tokens T] [--keep DIR]

It writes a synthetic proteome (random unique sequences whose lengths are drawn from the E. coli K-12
proteome, multiplied by --length-scale and capped at --max-length), builds it with `run_build` (Ray
in-process, one predictor actor with no CPU reserved, loader `benchmarks.sleep_model:load`: each model call
sleeps count x FLOPs(longest)/rate seconds, ESMFold's cost model) and prints, from this one run:

  (a) utilization = model seconds summed over actors (the build report's per-worker figures)
      / (actors x the scheduling loop's wall time, first "started" to last "committed" in the events file).
  (b) scheduling overhead per shard: on each actor, the idle gap between the exit of a shard's last model
      call and the entry of the next shard's first model call (wall clock, traced inside the sleep model,
      STRUCTOME_SLEEP_TRACE). It holds everything the runner does between two shards: returning the
      predictions to the object store, the driver noticing, recording, starting the writer, sending the next
      shard, and the actor unpacking it. Gaps where the driver held the next shard back because
      max_writes_in_flight shards were still being written are counted apart (a writer-throughput limit of
      the machine, not scheduling).
  (c) memory: every 0.5 s a separate sampler process sums RSS and PSS of the driver and of every process
      whose environment holds this run's marker (all Ray processes started by the in-process ray.init).

Defaults keep the full 20,000-protein run under 10 minutes on a 2-core machine and the two writer tasks
ahead of the model: E. coli's length distribution scaled by 0.35 (median 95, mean 108, max 825 aa; mmCIF + PAE
+ gzip cost ~20 ms of CPU per 100-aa entry) and a simulated device of 3.2e14 FLOP/s (~18 ms per protein on
average; a 300-aa protein in 91 ms). When the writers fall behind, the runner holds shards back
(max_writes_in_flight) and the figures measure this machine's writer throughput instead of scheduling: the
output counts those gaps apart; on a 2-core machine that other work also loads, they dominate (note the load
average printed with the figures). E. coli's own lengths (writers keep up on 2 cores):
--quick --length-scale 1 --max-length 1000 --rate 5.8e14 (the sleep model's default rate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LENGTH_SOURCES = [
    ROOT.parent / "shared/data/uniprot/UP000000625_83333_ecoli_k12_2020.fasta",
    ROOT / "tests/data/fasta/ecoli_k12_2020_slice.fasta",
]
MARKER_VARIABLE = "STRUCTOME_BENCH_MARKER"
SAMPLE_INTERVAL_S = 0.5
TARGET_UTILIZATION = 0.95
TARGET_OVERHEAD_P50_MS = 10.0


# ---------------------------------------------------------------------------------------------- memory


def _sampler(marker: str, out: str, driver_pid: int) -> None:
    """Runs in its own process (no GIL contention with the driver): one JSON line per sample."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    me = os.getpid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with open(out, "a", buffering=1) as handle:
        while not stop:
            sample = {
                "t": time.time(),
                "driver_rss": 0,
                "ray_rss": 0,
                "pss": 0,
                "ray_processes": 0,
                "load1": float(Path("/proc/loadavg").read_text().split()[0]),
                "roles": {},
            }
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit() or int(proc.name) == me:
                    continue
                try:
                    pid = int(proc.name)
                    if pid != driver_pid and needle not in (proc / "environ").read_bytes():
                        continue
                    rss = _status_kib(proc, "VmRSS")
                    pss = _rollup_kib(proc, "Pss")
                    role = "driver" if pid == driver_pid else _role((proc / "cmdline").read_bytes())
                except (OSError, ValueError):  # gone, or not ours
                    continue
                sample["pss"] += pss
                sample["roles"].setdefault(role, []).append(pss)
                if pid == driver_pid:
                    sample["driver_rss"] = rss
                else:
                    sample["ray_rss"] += rss
                    sample["ray_processes"] += 1
            handle.write(json.dumps(sample) + "\n")
            time.sleep(SAMPLE_INTERVAL_S)


def _role(cmdline: bytes) -> str:
    """What a marked process is, from the title Ray gives it ("ray::PredictorWorker.predict", "ray::_write",
    "ray::IDLE") or its program (raylet, gcs_server, Ray's Python agents)."""
    args = cmdline.split(b"\0")
    title = args[0].decode(errors="replace").strip()
    if title.startswith("ray::"):
        return "actor" if title.startswith("ray::PredictorWorker") else "task workers"
    if len(args) > 1 and args[1].endswith(b"default_worker.py"):  # a worker still starting, not yet titled
        return "task workers"
    return "Ray daemons"


def _status_kib(proc: Path, key: str) -> int:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _rollup_kib(proc: Path, key: str) -> int:
    for line in (proc / "smaps_rollup").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------- input


def source_lengths() -> tuple[Path, list[int]]:
    from structome.pipelines.fasta import iter_fasta

    source = next(p for p in LENGTH_SOURCES if p.exists())
    return source, [len(r.sequence_raw.rstrip("*")) for r in iter_fasta(source)]


def write_proteome(path: Path, count: int, scale: float, max_length: int, seed: int) -> list[int]:
    """`count` unique random sequences, lengths drawn from a real proteome, scaled and capped; returns them."""
    import numpy as np

    _, lengths = source_lengths()
    rng = np.random.default_rng(seed)
    drawn = np.clip(np.rint(rng.choice(lengths, count) * scale), 1, max_length).astype(int)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    seen: set[str] = set()
    with open(path, "w") as handle:
        for number, length in enumerate(drawn, 1):
            sequence = "".join(rng.choice(letters, length))
            while sequence in seen:
                sequence = "".join(rng.choice(letters, length))
            seen.add(sequence)
            handle.write(
                f">sp|B{number:06d}|SYN{number}_ECOLI Synthetic protein {number} OS=Escherichia coli "
                f"(strain K12) OX=83333 GN=syn{number} PE=1 SV=1\n"
            )
            handle.write("\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60)) + "\n")
    return [int(x) for x in drawn]


# ---------------------------------------------------------------------------------------------- analysis


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def read_events(layout, build_id: str) -> list[dict]:
    return [json.loads(line) for line in layout.read_lines(layout.build_events(build_id)) if line.strip()]


def read_trace(folder: Path) -> list[dict]:
    calls = []
    for file in sorted(folder.glob("trace-*.tsv")):
        pid = int(file.stem.split("-")[1])
        for line in file.read_text().splitlines():
            entered, exited, count, longest, first_id, planned = line.split("\t")
            calls.append(
                {
                    "pid": pid,
                    "in": float(entered),
                    "out": float(exited),
                    "count": int(count),
                    "longest": int(longest),
                    "first": first_id,
                    "planned": float(planned),
                }
            )
    return calls


def prediction_shards(db: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    mapping = {}
    for file in (db / "shards").glob("*/entries.parquet"):
        table = pq.read_table(file, columns=["predictionId", "shard"])
        mapping.update(zip(table.column("predictionId").to_pylist(), table.column("shard").to_pylist(), strict=True))
    return mapping


def shard_timeline(events: list[dict], calls: list[dict], shard_of: dict[str, str]) -> dict[str, dict]:
    shards: dict[str, dict] = {}
    for event in events:
        shard = shards.setdefault(event["shard"], {"calls": []})
        if event["state"] == "started":
            shard["started"] = event["t"]  # the last start counts (a retried shard restarts)
        elif event["state"] == "committed":
            shard["committed"] = event["t"]
    for call in calls:
        shards[shard_of[call["first"]]]["calls"].append(call)
    for shard in shards.values():
        if shard["calls"]:
            shard["calls"].sort(key=lambda c: c["in"])
            shard["pid"] = shard["calls"][-1]["pid"]
            shard["in"] = shard["calls"][0]["in"]
            shard["out"] = shard["calls"][-1]["out"]
    return shards


def gaps_between_shards(shards: dict[str, dict], max_writes: int) -> list[dict]:
    """Per actor, consecutive shards: the idle gap and its two halves; flags gaps held back by the writers."""
    done = [s for s in shards.values() if "out" in s and "committed" in s]
    gaps = []
    for pid in sorted({s["pid"] for s in done}):
        mine = sorted((s for s in done if s["pid"] == pid), key=lambda s: s["in"])
        for before, after in itertools.pairwise(mine):
            writing = sum(1 for s in done if s["out"] <= before["out"] < s["committed"])
            gaps.append(
                {
                    "gap": after["in"] - before["out"],
                    "to_driver": after["started"] - before["out"],  # events are rounded to 1 ms
                    "to_actor": after["in"] - after["started"],
                    "write_blocked": writing >= max_writes,
                }
            )
    return gaps


def within_shard_gaps(shards: dict[str, dict]) -> list[float]:
    return [b["in"] - a["out"] for s in shards.values() for a, b in itertools.pairwise(s["calls"])]


def memory_at_progress(samples: list[dict], events: list[dict], total_entries: int) -> list[tuple[str, dict]]:
    """The last sample taken before the build crossed 25/50/75/100% of its entries (and at the loop start)."""

    def nearest(t: float) -> dict:
        return max((s for s in samples if s["t"] <= t), key=lambda s: s["t"], default=samples[0])

    marks = [("loop start", nearest(min(e["t"] for e in events if e["state"] == "started")))]
    committed = 0
    quarters = [25, 50, 75, 100]
    for event in events:
        if event["state"] != "committed":
            continue
        committed += event["entries"]
        while quarters and committed >= total_entries * quarters[0] / 100:
            marks.append((f"{quarters.pop(0)}%", nearest(event["t"])))
    return marks


def lasting_pss(sample: dict) -> int:
    """PSS of the processes that live through the whole build: driver, actor, Ray daemons (KiB)."""
    return sum(sum(sample["roles"].get(role, [])) for role in ("driver", "actor", "Ray daemons"))


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1e3


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    from benchmarks.sleep_model import DEFAULT_FLOPS_PER_S

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proteins", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="2,000 proteins (unless --proteins is given)")
    parser.add_argument("--length-scale", type=float, default=0.35, help="multiplies the drawn lengths")
    parser.add_argument("--max-length", type=int, default=1000, help="cap on the scaled lengths")
    parser.add_argument(
        "--rate",
        type=float,
        default=3.2e14,
        help=f"simulated FLOP/s (default 3.2e14; the sleep model's own default is "
        f"{DEFAULT_FLOPS_PER_S:.3g}, 300 aa in 50 ms)",
    )
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded residues per call (GPU default)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the database and traces in DIR")
    args = parser.parse_args(argv)
    if args.quick and "--proteins" not in " ".join(argv):
        args.proteins = 2000
    return args


def main(argv: list[str]) -> None:
    if argv[:1] == ["--_sampler"]:
        _sampler(argv[1], argv[2], int(argv[3]))
        return
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/bench_scheduling.py", *argv])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="structome-bench-sched-"))
    work.mkdir(parents=True, exist_ok=True)
    fasta, db, trace, memory_log = work / "synthetic.fasta", work / "db", work / "trace", work / "memory.jsonl"
    for stale in (db, trace, memory_log):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    source, _ = source_lengths()
    lengths = write_proteome(fasta, args.proteins, args.length_scale, args.max_length, args.seed)
    from benchmarks.sleep_model import esmfold_flops

    planned_model_s = sum(esmfold_flops(n) for n in lengths) / args.rate
    print(
        f"# {args.proteins} synthetic proteins, lengths from {source.name} x {args.length_scale} capped at "
        f"{args.max_length}: "
        f"median {statistics.median(lengths):.0f}, mean {statistics.mean(lengths):.0f}, max {max(lengths)}; "
        f"rate {args.rate:.3g} FLOP/s -> ~{planned_model_s:.0f} s of model time (before padding)"
    )

    marker = uuid.uuid4().hex
    os.environ[MARKER_VARIABLE] = marker  # inherited by every Ray process the in-process ray.init starts
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["STRUCTOME_SLEEP_FLOPS_PER_S"] = repr(args.rate)
    os.environ["STRUCTOME_SLEEP_TRACE"] = str(trace)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from structome.jobs.build.job import BuildRequest, run_build
    from structome.jobs.build.settings import RunnerSettings
    from structome.models.types import EsmFoldSettings
    from structome.pipelines.settings import BuildSettings
    from structome.storage.layout import DatabaseLayout

    runner = RunnerSettings(workers=args.workers, cpus_per_worker=args.cpus_per_worker, progress=False)
    request = BuildRequest(
        inputs=(str(fasta),),
        db=db,
        model="esmfold-tiny",
        model_settings=EsmFoldSettings(num_recycles=0),
        build_settings=BuildSettings(batch_tokens=args.batch_tokens, shard_size=args.shard_size),
        runner=runner,
        loader="benchmarks.sleep_model:load",
    )
    load_before = os.getloadavg()
    sampler = subprocess.Popen([sys.executable, __file__, "--_sampler", marker, str(memory_log), str(os.getpid())])
    started = time.time()
    try:
        report = run_build(request)
    finally:
        command_wall = time.time() - started
        time.sleep(SAMPLE_INTERVAL_S)
        sampler.send_signal(signal.SIGTERM)
        sampler.wait(timeout=10)
    load_after = os.getloadavg()

    layout = DatabaseLayout(db)
    events = read_events(layout, report["build"])
    calls = read_trace(trace)
    shards = shard_timeline(events, calls, prediction_shards(db))
    samples = [json.loads(line) for line in memory_log.read_text().splitlines()]

    # (a) utilization
    loop_start = min(e["t"] for e in events if e["state"] == "started")
    loop_end = max(e["t"] for e in events if e["state"] == "committed")
    loop_wall = loop_end - loop_start
    actors = len(report["workers"])
    model_seconds = sum(w["modelSeconds"] for w in report["workers"].values())
    utilization = model_seconds / (actors * loop_wall)
    traced_seconds = sum(c["out"] - c["in"] for c in calls)
    predict_span = max(c["out"] for c in calls) - min(c["in"] for c in calls)
    planned_seconds = sum(c["planned"] for c in calls)
    overruns = sum(1 for c in calls if c["out"] - c["in"] > c["planned"] + 0.002)

    # (b) scheduling overhead
    gaps = gaps_between_shards(shards, runner.max_writes_in_flight)
    free = [g for g in gaps if not g["write_blocked"]]
    blocked = [g for g in gaps if g["write_blocked"]]
    inner = within_shard_gaps(shards)

    # (c) memory
    in_loop = [s for s in samples if loop_start <= s["t"] <= loop_end] or samples
    marks = memory_at_progress(samples, events, report["entriesWritten"])
    quarter = dict(marks)

    print(
        f"\nbuild {report['build']}: {report['entriesWritten']} entries written of {report['entriesPlanned']} "
        f"planned, {report['shards']} shards, {report['failures']} failures, {report['retriedShards']} retried "
        f"shards, {actors} actor(s), padding efficiency {report['paddingEfficiency']}"
    )
    print(
        f"walls: whole run_build call {command_wall:.1f} s (ray.init, ingest, catalog included); report "
        f"wallSeconds {report['wallSeconds']}; scheduling loop (first 'started' -> last 'committed' event) "
        f"{loop_wall:.2f} s"
    )
    print("\n(a) utilization = report modelSeconds summed over actors / (actors x scheduling-loop wall)")
    print(f"    {model_seconds:.2f} s / ({actors} x {loop_wall:.2f} s) = {utilization:.4f}")
    print(
        f"    cross-checks: traced predict() time {traced_seconds:.2f} s (planned sleep {planned_seconds:.2f} s, "
        f"{overruns} of {len(calls)} calls over plan by >2 ms); busy share of the span first predict entry -> "
        f"last predict exit ({predict_span:.2f} s): {traced_seconds / (actors * predict_span):.4f}; the loop "
        f"also holds the first shard's delivery and the last shard's write "
        f"({loop_end - max(c['out'] for c in calls):.2f} s)"
    )
    print(
        "\n(b) scheduling overhead per shard = actor idle gap: last predict() exit of one shard -> first "
        "predict() entry of the next, same actor"
    )
    print(
        f"    all {len(gaps)} gaps: p50 {ms([g['gap'] for g in gaps], 50):.1f} ms, "
        f"p95 {ms([g['gap'] for g in gaps], 95):.1f} ms, max {ms([g['gap'] for g in gaps], 100):.1f} ms, "
        f"total {sum(g['gap'] for g in gaps):.2f} s"
    )
    if free:
        print(
            f"    {len(free)} gaps not held back by writers: p50 {ms([g['gap'] for g in free], 50):.1f} ms, "
            f"p95 {ms([g['gap'] for g in free], 95):.1f} ms; split p50: actor exit -> driver sends next "
            f"('started' event, 1 ms resolution) {ms([g['to_driver'] for g in free], 50):.1f} ms, send -> "
            f"actor enters predict() {ms([g['to_actor'] for g in free], 50):.1f} ms"
        )
    print(
        f"    {len(blocked)} gaps with >= {runner.max_writes_in_flight} shards still being written "
        f"(dispatch held back by max_writes_in_flight): total {sum(g['gap'] for g in blocked):.2f} s"
    )
    print(
        f"    for comparison, between two model calls inside one shard: p50 {ms(inner, 50):.2f} ms, "
        f"p95 {ms(inner, 95):.2f} ms ({len(inner)} gaps)"
    )
    print(
        f"\n(c) memory, sampled every {SAMPLE_INTERVAL_S} s by a separate process; Ray = the "
        f"{max(s['ray_processes'] for s in samples)} processes at most that carry this run's marker; RSS counts "
        f"shared object-store pages in every process that maps them, PSS splits them"
    )
    roles = ("driver", "actor", "Ray daemons", "task workers")
    print(
        f"    {'when':<11} {'driver RSS':>11} {'Ray RSS':>10} {'all PSS':>10} | PSS by role: "
        + ", ".join(roles)
        + " (count x largest)"
    )
    for label, sample in marks:
        by_role = [sample["roles"].get(role, []) for role in roles]
        print(
            f"    {label:<11} {mib(sample['driver_rss']):>11} {mib(sample['ray_rss']):>10} "
            f"{mib(sample['pss']):>10} | " + ", ".join(f"{len(v)} x {mib(max(v, default=0))}" for v in by_role)
        )
    peak = max(in_loop, key=lambda s: s["pss"])
    print(
        f"    peak in the loop: driver RSS {mib(max(s['driver_rss'] for s in in_loop))}, Ray RSS "
        f"{mib(max(s['ray_rss'] for s in in_loop))}, PSS {mib(peak['pss'])}; peak over the whole call: PSS "
        f"{mib(max(s['pss'] for s in samples))}"
    )
    growth = (quarter["100%"]["pss"] - quarter["25%"]["pss"]) / quarter["25%"]["pss"]
    lasting_growth = (lasting_pss(quarter["100%"]) - lasting_pss(quarter["25%"])) / lasting_pss(quarter["25%"])
    print(
        f"    PSS 25% -> 100%: all processes {growth:+.1%}; driver + actor + Ray daemons (alive all along) "
        f"{lasting_growth:+.1%}; task workers (writers) are started and reaped by Ray, so their count varies"
    )
    loads = [s["load1"] for s in samples]
    print(
        f"\nload average: before {load_before[0]:.2f}, during mean {statistics.mean(loads):.2f} / max "
        f"{max(loads):.2f}, after {load_after[0]:.2f} (1-minute, {os.cpu_count()} CPUs)"
    )

    rows = [
        (
            "utilization (modelSeconds / actors x loop wall)",
            f"{utilization:.3f}",
            f">= {TARGET_UTILIZATION}",
            utilization >= TARGET_UTILIZATION,
        ),
        (
            "overhead per shard, p50, all gaps",
            f"{ms([g['gap'] for g in gaps], 50):.1f} ms",
            f"<= {TARGET_OVERHEAD_P50_MS:.0f} ms",
            ms([g["gap"] for g in gaps], 50) <= TARGET_OVERHEAD_P50_MS,
        ),
        ("overhead per shard, p95, all gaps", f"{ms([g['gap'] for g in gaps], 95):.1f} ms", "-", None),
        (
            "overhead p50 / p95, gaps not held by writers",
            f"{ms([g['gap'] for g in free], 50):.1f} / {ms([g['gap'] for g in free], 95):.1f} ms" if free else "-",
            "-",
            None,
        ),
        (
            "gaps where writers held the next shard back",
            f"{len(blocked)} of {len(gaps)}, {sum(g['gap'] for g in blocked):.1f} s idle",
            "-",
            None,
        ),
        (
            "driver RSS at 25/50/75/100%",
            " / ".join(mib(quarter[q]["driver_rss"]) for q in ("25%", "50%", "75%", "100%")),
            "flat",
            None,
        ),
        (
            "driver+Ray PSS at 25/50/75/100%",
            " / ".join(mib(quarter[q]["pss"]) for q in ("25%", "50%", "75%", "100%")),
            "flat",
            None,
        ),
        ("PSS growth 25% -> 100%: all / driver+actor+daemons", f"{growth:+.1%} / {lasting_growth:+.1%}", "flat", None),
        (
            "peak PSS in loop / driver RSS peak",
            f"{mib(peak['pss'])} / {mib(max(s['driver_rss'] for s in in_loop))}",
            "-",
            None,
        ),
    ]
    print(
        f"\n## scheduling benchmark, {dt.datetime.now():%Y-%m-%d %H:%M}, {' '.join(platform.uname())}, "
        f"nproc {os.cpu_count()}, load {statistics.mean(loads):.2f} mean during the run"
    )
    print(
        f"`{command}`: {report['entriesWritten']} proteins (E. coli lengths x {args.length_scale}, <= "
        f"{args.max_length}; median {statistics.median(lengths):.0f}), rate {args.rate:.3g} "
        f"FLOP/s, shard {args.shard_size}, batch {args.batch_tokens} tokens, {actors} actor(s) with "
        f"{args.cpus_per_worker} CPUs reserved, loop {loop_wall:.1f} s, whole call {command_wall:.1f} s"
    )
    print("| figure | measured | target | met |\n| --- | --- | --- | --- |")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'-' if met is None else ('yes' if met else 'NO')} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(database, traces and samples kept in {work})")


if __name__ == "__main__":
    main(sys.argv[1:])
