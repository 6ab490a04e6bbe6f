"""Safety envelope speed: the supervisor's check per request, and how late the watchdog trips.

* **check**: one :meth:`SafetySupervisor.request` (every limit checked, the
  decision logged to an audit file), p50/p99 over ``--requests`` calls with
  requests inside, above and far beyond the limits (issue 6: the actuation path
  adds ≤ 0.2 ms p99);
* **stalls**: a :class:`Watchdog` fed every 1 ms (a 1 kHz stream) is starved
  ``--stalls`` times; for each, the time from the last feed to the safe state
  (the trip callback), against the limit max(3 periods, 50 ms) + 10 ms.

In process, on this machine's clock; the hardware-in-the-loop version over LSL
comes with the stimulator nodes.

Run::

    .venv/bin/python bench/safety_speed.py
    .venv/bin/python bench/safety_speed.py --stalls 1000 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bci_runtime.audit_log import AuditLog
from bci_runtime.realtime import short_lock_slices
from bci_runtime.safety import PulseRequest, SafetySupervisor
from bci_runtime.stim_limits import load_limits
from bci_runtime.watchdog import Watchdog, stale_timeout

LIMITS = Path(__file__).resolve().parents[1] / "pipelines" / "limits" / "two_contacts.yaml"


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "max": round(float(a.max()), 4),
            "n": int(a.size)}


def check_times(n: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "audit.jsonl")
        limits = load_limits(LIMITS).model_copy(update={"on_violation": "clamp",
                                                        "max_pulses_per_s": 1e9})
        supervisor = SafetySupervisor(limits, audit=audit)
        supervisor.arm(0.0, by="bench")
        amplitudes = rng.choice([1.0, 2.5, 9.0], n)
        times = []
        for i in range(n):
            request = PulseRequest("E1", float(amplitudes[i]), 100.0, 100.0, 1)
            t0 = time.perf_counter()
            supervisor.request(request, 2.0 + i * 1e-3)
            times.append((time.perf_counter() - t0) * 1e3)
        audit.close()
    return {"check_ms": percentiles(times[10:]), "counts": supervisor.counts}


def stall_times(stalls: int, srate: float = 1000.0) -> dict[str, object]:
    timeout = stale_timeout(srate)
    tripped = threading.Event()
    at: list[float] = []

    def on_trip(reason: str) -> None:
        at.append(time.monotonic())
        tripped.set()

    dog = Watchdog(timeout, on_trip, name="input")
    to_safe = []
    try:
        for _ in range(stalls):
            dog.reset()
            tripped.clear()
            for _ in range(20):  # 20 ms of a 1 kHz stream
                dog.feed()
                time.sleep(1.0 / srate)
            last = time.monotonic()
            dog.feed()
            tripped.wait(5.0)
            to_safe.append((at[-1] - last) * 1e3)
    finally:
        dog.close()
    late = [t - timeout * 1e3 for t in to_safe]
    return {"timeout_ms": timeout * 1e3, "to_safe_state_ms": percentiles(to_safe),
            "after_deadline_ms": percentiles(late),
            "within_10ms_of_deadline": int(sum(t <= 10.0 for t in late))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--stalls", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    short_lock_slices()  # as `bci` runs
    check = check_times(args.requests)
    stalls = stall_times(args.stalls)
    if args.json:
        print(json.dumps({"check": check, "stalls": stalls}))
        return 0
    c = check["check_ms"]
    print(f"supervisor check + audit line: p50 {c['p50']:.4f} ms, p99 {c['p99']:.4f} ms, "
          f"max {c['max']:.3f} ms ({c['n']} requests; {check['counts']})")
    s, late = stalls["to_safe_state_ms"], stalls["after_deadline_ms"]
    print(f"watchdog, {s['n']} stalls of a 1 kHz stream (timeout {stalls['timeout_ms']:.0f} ms):"
          f" last sample -> safe state p50 {s['p50']:.2f}, p99 {s['p99']:.2f}, max "
          f"{s['max']:.2f} ms; after the deadline p99 {late['p99']:.2f} ms; "
          f"{stalls['within_10ms_of_deadline']}/{s['n']} within 10 ms of it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
