"""The actuation path: decoder output -> stimulator node -> safety check -> driver.

For each control chunk handed to :meth:`Stimulator.process`, two figures:

* **to driver**: from the call to the simulated driver's delivery returning (the
  pulse published on a real LSL outlet): the watchdog feed, the finiteness
  check, the mode (a threshold crossing or the slew-bounded amplitude) and the
  supervisor's decision. This is what issue 6 bounds: ≤ 0.2 ms p99;
* **whole call**: the same plus what follows the delivery in the same call, the
  audit-log line (one ``os.write``) and the node's output chunks.

Both modes, armed, on the live clock. ``--pace`` (default) feeds a 25 Hz control
stream, so the CPU idles 40 ms between chunks as in a live run; ``--tight``
feeds back to back (on a simulated clock stepping 40 ms per chunk, so the limits
see the same history). On a virtual machine the first Python after an idle spell
runs several times slower than warm code; the ``reference`` line shows it for a
plain ``json.dumps`` of a small dict under the same pacing. Like ``bci``, the
bench holds the CPUs' wake-up latency low
(:func:`~bci_runtime.realtime.low_wakeup_latency`); ``BCI_CPU_WAKEUP=normal``
measures without it.

Run::

    .venv/bin/python bench/actuation_path.py            # table
    .venv/bin/python bench/actuation_path.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import percentiles  # noqa: E402

from bci_runtime.chunk import Chunk  # noqa: E402
from bci_runtime.clock import LslClock, SimulatedClock  # noqa: E402
from bci_runtime.drivers.stimulator import Stimulator  # noqa: E402
from bci_runtime.node import NodeContext  # noqa: E402
from bci_runtime.realtime import low_wakeup_latency  # noqa: E402
from bci_runtime.spec import StreamSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMITS = str(ROOT / "pipelines" / "limits" / "two_contacts.yaml")
SPEC = StreamSpec("bio", "Biomarker", ("beta", "state"), 25.0)
MODES = {
    "continuous": {"mode": "continuous", "modulation": {
        "channel": "beta", "contact": "E1", "width_us": 90, "frequency_hz": 130,
        "gain_ma": 1.0, "max_ma": 2.5, "slew_ma_per_s": 50.0}},
    "triggered": {"mode": "triggered", "trigger": {
        "channel": "state", "threshold": 0.5, "refractory_s": 0.0, "contact": "E2",
        "amplitude_ma": 1.0, "width_us": 90, "frequency_hz": 130, "n_pulses": 2}},
}


def measure(mode: str, n: int, folder: Path, pace: bool) -> dict[str, object]:
    node = Stimulator("stim", {"limits": LIMITS, "driver": {"type": "simulated"},
                               "audit_log": str(folder / f"{mode}.jsonl"), **MODES[mode]})
    node.bind({"control": SPEC})
    # back to back, the clock is simulated so the limits still see a 25 Hz history
    clock = LslClock() if pace else SimulatedClock()
    node.open(NodeContext(name="stim", clock=clock))
    rng = np.random.default_rng(0)
    beta = 1.0 + 0.5 * rng.random(n + 50)
    chunks = []
    for i in range(n + 50):  # triggered: the state alternates, so every other chunk crosses
        data = np.array([[beta[i], float(i % 2)]])
        chunks.append(data)
    driver = node._driver
    deliver = driver.deliver
    delivered_at: list[float] = []

    def timed_deliver(pulse: object, t: float) -> None:
        deliver(pulse, t)
        delivered_at.append(time.perf_counter())

    driver.deliver = timed_deliver
    whole, to_driver = [], []
    try:
        start = time.monotonic()
        for i, data in enumerate(chunks):
            if i == 10:
                node.arm("bench")
            if pace:
                delay = start + i / 25.0 - time.monotonic()  # a 25 Hz control stream
                if delay > 0:
                    time.sleep(delay)
            if not pace:
                clock.advance_to(i / 25.0)
            chunk = Chunk(data, np.array([clock.now()]), SPEC)
            delivered_at.clear()
            c0, t0 = time.thread_time(), time.perf_counter()
            node.process("control", chunk)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if i >= 50:
                whole.append((wall, cpu))
                if delivered_at:
                    to_driver.append((delivered_at[0] - t0, cpu))
        summary = node.safety_summary()
    finally:
        node.close()
    return {"to_driver": percentiles(to_driver), "whole_call": percentiles(whole),
            "requests": summary["requests"], "rejected": summary["rejected"],
            "emitted_outside_limits": summary["emitted_outside_limits"]}


def reference(n: int, pace: bool) -> dict[str, float]:
    """A plain json.dumps under the same pacing: the machine's cost of waking up."""
    record = {"t": 1.0, "amplitude_ma": 1.5, "reasons": [], "contact": "E1"}
    samples = []
    start = time.monotonic()
    for i in range(n + 50):
        if pace:
            delay = start + i / 25.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        c0, t0 = time.thread_time(), time.perf_counter()
        json.dumps(record)
        if i >= 50:
            samples.append((time.perf_counter() - t0, time.thread_time() - c0))
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=3000, help="timed chunks per mode")
    parser.add_argument("--tight", action="store_true", help="no pacing: back to back")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pace = not args.tight
    held = low_wakeup_latency()  # as `bci` does; BCI_CPU_WAKEUP=normal to compare without
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, object] = {mode: measure(mode, args.chunks, Path(tmp), pace)
                                      for mode in MODES}
    results["reference_json_dumps"] = reference(min(args.chunks, 1000), pace)
    results["low_wakeup_latency"] = held
    if args.json:
        print(json.dumps(results, indent=2))
        return
    how = "at 25 Hz" if pace else "back to back"
    print(f"actuation path ({args.chunks} control chunks {how}; target: to driver p99 ≤ 0.2 ms; "
          f"low CPU wake-up latency {'held' if held else 'not held'})")
    for mode in MODES:
        r = results[mode]
        for part in ("to_driver", "whole_call"):
            q = r[part]
            print(f"  {mode:10s} {part:10s} p50 {q['p50_ms']:.3f}  p90 {q['p90_ms']:.3f}  "
                  f"p99 {q['p99_ms']:.3f}  max {q['max_ms']:.3f} ms  (n {q['n']})")
        print(f"  {mode:10s} requests {r['requests']}, rejected {r['rejected']}, "
              f"outside limits {r['emitted_outside_limits']}")
    q = results["reference_json_dumps"]
    print(f"  reference: json.dumps of 4 keys p50 {q['p50_ms'] * 1e3:.1f} µs, "
          f"p99 {q['p99_ms'] * 1e3:.1f} µs")


if __name__ == "__main__":
    main()
