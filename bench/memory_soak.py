"""Resident memory over a long live run of the demo pipeline.

The issue's target: resident size flat over a 10-minute run (report start and end).

Runs the shipped demo pipeline (simulated motor-imagery EEG -> band-pass ->
log-variance -> LDA calibrated online -> feedback with its LSL outlet) in this
process on the live clock for ``--minutes``, through the real
:class:`~bci_runtime.runner.Runner`. Only the console printing of the feedback
node is turned off and its LSL stream gets a unique name and source_id. A
sampler thread reads this process's RSS (psutil) every ``--every`` seconds.

Reported, in MiB unless stated:

- ``start``: RSS at the end of the warm-up (``--warmup``, default 30 s: imports,
  the LSL outlet, the decoder's calibration and first fit are behind us);
- ``end``: the last sample; ``max``: the largest after the warm-up;
- ``slope_kib_per_min``: least-squares slope of RSS over the samples after the
  warm-up;
- ``telemetry_rings_mib``: the preallocated telemetry rings (written in full
  when created, so they are resident from the start and cannot explain growth).

``--srate``/``--chunk-size`` raise the dispatch rate of the simulator for a
harsher soak (default: the demo's 250 Hz in 10-sample chunks, 25 dispatches/s).

Run::

    .venv/bin/python bench/memory_soak.py                 # 10 minutes
    .venv/bin/python bench/memory_soak.py --minutes 1     # quick check
    .venv/bin/python bench/memory_soak.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from importlib.resources import files
from typing import Any

import numpy as np
import psutil
import yaml

from bci_runtime.graph import load_graph_text
from bci_runtime.runner import Runner

MIB = 1024 * 1024


def demo_graph(minutes: float, srate: float | None, chunk_size: int | None) -> Any:
    doc = yaml.safe_load((files("bci_runtime.pipelines") / "demo.yaml").read_text())
    doc["clock"] = "live"
    doc["duration"] = minutes * 60.0
    sid = f"bench-soak-{uuid.uuid4().hex}"
    doc["nodes"]["feedback"]["params"].update(
        {"console": False, "lsl_name": f"bench-soak-{sid[-8:]}", "source_id": sid})
    if srate is not None:
        doc["nodes"]["eeg"]["params"]["srate"] = srate
    if chunk_size is not None:
        doc["nodes"]["eeg"]["params"]["chunk_size"] = chunk_size
    return load_graph_text(yaml.safe_dump(doc, sort_keys=False), "demo.yaml (soak)")


def ring_bytes(runner: Runner) -> tuple[int, int]:
    """(bytes of telemetry rings written so far, their full size)."""
    ex = runner.runtime.executor
    if ex is None:
        return 0, 0
    recorders = [ex.end_to_end]
    for tel in ex.telemetry.values():
        recorders += [tel.processing, tel.latency]
    written = sum(min(r.count, r._values.shape[0]) * r._values.itemsize for r in recorders)
    full = sum(r._values.nbytes for r in recorders)
    return written, full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds before the 'start' figure (default 30)")
    parser.add_argument("--srate", type=float, default=None, help="simulator rate override")
    parser.add_argument("--chunk-size", type=int, default=None, help="samples per chunk override")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.minutes * 60.0 <= args.warmup:
        parser.error(f"--minutes must be longer than the {args.warmup:g} s warm-up")

    proc = psutil.Process(os.getpid())
    graph = demo_graph(args.minutes, args.srate, args.chunk_size)
    runner = Runner(graph)
    samples: list[dict[str, float]] = []
    done = threading.Event()
    t_start = time.monotonic()

    def sample() -> None:
        written, _ = ring_bytes(runner)
        samples.append({"t_s": round(time.monotonic() - t_start, 2),
                        "rss_mib": proc.memory_info().rss / MIB,
                        "rings_written_mib": written / MIB})

    def sampler() -> None:
        sample()
        k = 1
        while not done.wait(max(0.0, t_start + k * args.every - time.monotonic())):
            sample()
            if not args.json:
                s = samples[-1]
                print(f"  t={s['t_s']:7.1f} s  rss={s['rss_mib']:8.2f} MiB", file=sys.stderr,
                      flush=True)
            k += 1

    thread = threading.Thread(target=sampler, name="rss-sampler", daemon=True)
    thread.start()
    result = runner.run()
    sample()  # the end of the run, before anything is torn down by this script
    done.set()
    thread.join(5.0)

    after = [s for s in samples if s["t_s"] >= args.warmup]
    if len(after) < 2:
        print("not enough samples after the warm-up", file=sys.stderr)
        return 1
    t = np.array([s["t_s"] for s in after]) / 60.0
    rss = np.array([s["rss_mib"] for s in after])
    slope_kib_min = float(np.polyfit(t, rss, 1)[0] * 1024.0)
    rings_now, rings_full = ring_bytes(runner)
    rings_growth = after[-1]["rings_written_mib"] - after[0]["rings_written_mib"]
    summary = runner.graph.nodes["feedback"].summary()
    report = {
        "pipeline": "demo", "clock": "live", "minutes": args.minutes,
        "every_s": args.every, "warmup_s": args.warmup,
        "status": result.status, "reason": result.reason,
        "samples_in": result.samples,
        "dispatches_per_s": round(result.telemetry["bandpass"].calls / max(result.wall_s, 1e-9), 1),
        "decisions": summary["decisions"],
        "rss_mib": {
            "start": round(after[0]["rss_mib"], 2), "start_t_s": after[0]["t_s"],
            "end": round(after[-1]["rss_mib"], 2), "end_t_s": after[-1]["t_s"],
            "max": round(float(rss.max()), 2),
            "end_minus_start": round(after[-1]["rss_mib"] - after[0]["rss_mib"], 3),
        },
        "slope_kib_per_min": round(slope_kib_min, 1),
        "telemetry_rings_mib": {"written_during_window": round(rings_growth, 3),
                                "written_total": round(rings_now / MIB, 3),
                                "capacity": round(rings_full / MIB, 3)},
        "series": [{k: round(v, 3) for k, v in s.items()} for s in samples],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        r = report["rss_mib"]
        print(f"demo pipeline, live clock, {args.minutes:g} min: {result.status} "
              f"({result.samples} samples, {report['decisions']} decisions, "
              f"{report['dispatches_per_s']} dispatches/s)")
        print(f"RSS start (t={r['start_t_s']:.0f} s) {r['start']:.2f} MiB, end "
              f"(t={r['end_t_s']:.0f} s) {r['end']:.2f} MiB, max {r['max']:.2f} MiB; "
              f"end - start {r['end_minus_start'] * 1024:+.0f} KiB; "
              f"slope {report['slope_kib_per_min']:+.1f} KiB/min")
        tr = report["telemetry_rings_mib"]
        print(f"telemetry rings written in that window: {tr['written_during_window'] * 1024:.0f} "
              f"KiB (bounded: {tr['written_total']:.2f} of {tr['capacity']:.2f} MiB filled)")
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
