"""Stale data, hardware in the loop: injected stalls → the stimulator's safe state, over real LSL.

A paced LSL outlet (a 250 Hz, 1-channel biomarker) drives an ``lsl_inlet`` →
``stimulator`` graph on the live clock, whose simulated driver publishes its
trains on LSL (:mod:`bci_runtime.simulators.stall_injection`). Each trial arms the
stimulator, waits for trains, then stops the outlet for 100–200 ms. The bound
(issue: stale data): the safe state within 10 ms of the watchdog's deadline,
max(3 sample periods, 50 ms) without a new sample.

Printed: the distribution of deadline → safe state (the stimulator's own figure)
and last sample → safe state (the outlet's last push to the audit log's record),
p50/p99/p99.9/max, and how many stalls were within the bound. The per-stall
figures go to ``bench/results/safety_hil.json``.

Run::

    .venv/bin/python bench/safety_hil.py
    .venv/bin/python bench/safety_hil.py --stalls 1000 --json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from bci_runtime.realtime import short_lock_slices
from bci_runtime.simulators.stall_injection import (
    BOUND_S,
    StallReport,
    latency_stats,
    run_stall_trials,
)

RESULTS = Path(__file__).resolve().parent / "results" / "safety_hil.json"
QS = (50, 99, 99.9)


def figures(report: StallReport) -> dict[str, Any]:
    """The summary with p99.9 added to both distributions."""
    summary = report.summary()
    summary["deadline_to_safe_ms"] = latency_stats(report.deadline_to_safe_ms, QS)
    summary["last_sample_to_safe_ms"] = latency_stats(report.last_sample_to_safe_ms, QS)
    summary["lsl_last_sample_to_safe_ms"] = latency_stats(report.lsl_last_sample_to_safe_ms, QS)
    summary["bound_ms"] = BOUND_S * 1e3
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalls", type=int, default=1000)
    parser.add_argument("--srate", type=float, default=250.0)
    parser.add_argument("--chunk-size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    short_lock_slices()  # as `bci` runs
    report = run_stall_trials(args.stalls, srate=args.srate, chunk_size=args.chunk_size,
                              seed=args.seed)
    summary = figures(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    settings = {"stalls": args.stalls, "srate": args.srate, "chunk_size": args.chunk_size,
                "seed": args.seed, "python": platform.python_version(),
                "machine": platform.machine()}
    RESULTS.write_text(json.dumps({"settings": settings, "summary": summary,
                                   "per_stall": report.per_stall()}, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['n']} stalls of a {args.srate:g} Hz stream ({args.chunk_size} sample(s) "
          f"per push), deadline {summary['stale_ms']:g} ms, bound +{summary['bound_ms']:g} ms; "
          f"{summary['wall_s']:.0f} s")
    print(f"{'ms':<34}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
    for key, label in (("deadline_to_safe_ms", "deadline -> safe state"),
                       ("last_sample_to_safe_ms", "last sample -> safe state (audit)"),
                       ("lsl_last_sample_to_safe_ms", "last sample -> safe row (LSL)")):
        s = summary[key]
        print(f"{label:<34}" + "".join(f"{s[k]:>9.3f}" if s[k] is not None else f"{'-':>9}"
                                       for k in ("p50", "p99", "p99.9", "max")))
    print(f"safe state every time: {summary['safe_every_time']}/{summary['n']}; within "
          f"{summary['bound_ms']:g} ms of the deadline: {summary['within_10ms']}/{summary['n']}; "
          f"trains after a safe state: {summary['trains_after_safe']} (audit), "
          f"{summary['lsl_trains_after_safe']} (LSL); outside limits: "
          f"{summary['emitted_outside_limits']}; unexpected safe states: "
          f"{summary['unexpected_safe_states']}")
    print(f"per-stall figures: {RESULTS}")
    return 0 if summary["safe_every_time"] == summary["n"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
