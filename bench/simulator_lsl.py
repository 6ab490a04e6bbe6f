"""The simulator as an amplifier on LSL: pacing, lost samples, and generation speed.

Two sections:

1. **LSL stream** (``bci simulate``'s code path, :func:`run_simulation`): 256
   channels at 2 kHz of the ``ecog`` paradigm (when it is importable; else ``mi``
   at its maximum of 128 channels, 2 kHz, said in the output) for ``--duration``
   seconds (default 600 = 10 minutes), pushed in chunks of ``--chunk-size``
   samples (default 20 = 10 ms). A receiver in a **separate process** opens a
   pylsl inlet before the clock starts (the sender waits for it), pulls every
   sample and checks that none was lost: the count equals what was sent, and
   every timestamp is exactly ``t0 + k / srate`` (within 1e-6 s) for
   consecutive ``k`` from 0, i.e. no gap and no drift over the whole run. The
   sender reports its pacing error (push time - due time) per chunk: p50, p99,
   p99.9, max; the receiver also reports the delivery delay (pull time - the
   newest sample's timestamp).
2. **In-process generation speed** (× real time): ``mi`` 64 ch at 1 kHz with the
   ``day-to-day`` drift (four simulated days, jumps every 120 s) and its
   artifacts (blinks, EMG, line noise), in 20-sample blocks, for 600 s of
   signal; the issue's target is >= 50× real time. No LSL involved. It runs
   first, so that the two sections do not compete for the CPU.

Run::

    .venv/bin/python bench/simulator_lsl.py                     # both, 10-minute stream
    .venv/bin/python bench/simulator_lsl.py --duration 120      # a 2-minute stream
    .venv/bin/python bench/simulator_lsl.py --inprocess         # generation speed only
    .venv/bin/python bench/simulator_lsl.py --no-inprocess --json

Prints a short table, then one JSON line (``--json``: only the JSON line).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import queue
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np

GRID_TOL_S = 1e-6
INPROCESS_TARGET = 50.0


# -- the receiver (separate process) ---------------------------------------------------------
def _receiver(source_id: str, srate: float, channels: int, ctrl: Any, out: Any) -> None:
    """Pull every sample of ``source_id``; check count and grid; report through ``out``."""
    import pylsl

    found = pylsl.resolve_byprop("source_id", source_id, 1, 30.0)
    if not found:
        out.put({"error": f"no stream with source_id {source_id} within 30 s"})
        return
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, max_chunklen=0, recover=False,
                              processing_flags=0)
    info = inlet.info(timeout=10.0)
    inlet.open_stream(timeout=10.0)
    out.put({"ready": True, "channels": info.channel_count(), "srate": info.nominal_srate()})
    try:  # pylsl >= 1.18: arrays, and return as soon as anything arrived
        inlet.pull_chunk(timeout=0.0, max_samples=1, as_numpy=True, min_samples=1)
        numpy_pull = True
    except TypeError:  # older pylsl: lists, and waits for max_samples or the timeout
        numpy_pull = False
    buf = np.empty((8192, channels), dtype=np.float32)
    count = 0
    t0: float | None = None
    max_dev = 0.0
    off_grid = 0
    first_off: list[tuple[int, float]] = []
    delays: list[float] = []
    expected: int | None = None
    idle_since = time.monotonic()
    lost = False
    while True:
        try:
            if numpy_pull:
                _, stamps = inlet.pull_chunk(timeout=0.2, max_samples=8192, dest_obj=buf,
                                             as_numpy=True, min_samples=1)
            else:
                _, stamps = inlet.pull_chunk(timeout=0.2, max_samples=8192, dest_obj=buf)
                stamps = np.asarray(stamps, dtype=np.float64)
        except pylsl.util.LostError:
            lost = True
            stamps = np.empty(0)
        now = pylsl.local_clock()
        if expected is None:
            try:
                expected = ctrl.get_nowait()
            except queue.Empty:
                pass
        if len(stamps):
            idle_since = time.monotonic()
            delays.append(now - float(stamps[-1]))
            if t0 is None:
                t0 = float(stamps[0])
            k = np.arange(count, count + len(stamps), dtype=np.float64)
            dev = np.abs(stamps - (t0 + k / srate))
            max_dev = max(max_dev, float(dev.max()))
            bad = np.flatnonzero(dev > GRID_TOL_S)
            if bad.size:
                off_grid += int(bad.size)
                first_off.extend((count + int(i), float(dev[i])) for i in bad[:5])
            count += len(stamps)
        if lost or (expected is not None and count >= expected):
            break
        if expected is not None and time.monotonic() - idle_since > 10.0:
            break  # nothing more is coming
    d = np.asarray(delays) * 1e3
    out.put({
        "received": count, "t0": t0, "max_grid_dev_s": max_dev, "off_grid": off_grid,
        "first_off_grid": first_off[:5], "lost_stream": lost,
        "delivery_ms": ({"p50": float(np.percentile(d, 50)), "p99": float(np.percentile(d, 99)),
                         "max": float(d.max())} if d.size else {}),
    })


# -- section 1: the LSL stream ------------------------------------------------------------
def stream_bench(duration: float, channels: int, srate: float, chunk_size: int,
                 progress: Any, realtime: bool = False) -> dict[str, Any]:
    from bci_runtime.simulators.lsl_mode import run_simulation
    from bci_runtime.simulators.simulate_options import available_paradigms

    if "ecog" in available_paradigms():
        paradigm, ch = "ecog", channels
        note = ""
    else:
        paradigm, ch = "mi", min(channels, 128)
        note = f"ecog not importable: mi at its maximum of {ch} channels"
    source_id = f"bench-sim-{uuid.uuid4().hex[:12]}"
    ctx = mp.get_context("spawn")
    ctrl, out = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(source_id, srate, ch, ctrl, out), daemon=True)
    proc.start()
    result: dict[str, Any] = {"paradigm": paradigm, "channels": ch, "srate": srate,
                              "chunk_size": chunk_size, "duration_s": duration, "note": note,
                              "realtime_requested": realtime}
    try:
        stop = threading.Event()

        def on_start(s: Any) -> None:
            if progress:
                print(f"streaming {paradigm} {s.channels} ch @ {s.srate:g} Hz for {duration:g} s "
                      f"(receiver connected)...", file=progress, flush=True)

        summary = run_simulation(paradigm, channels=ch, srate=srate, duration=duration, seed=7,
                                 chunk_size=chunk_size, source_id=source_id, stop=stop,
                                 wait_for_consumers_s=60.0, on_start=on_start,
                                 realtime=realtime)
        ctrl.put(summary.samples_pushed)
        rx: dict[str, Any] = {}
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:
            try:
                msg = out.get(timeout=1.0)
            except queue.Empty:
                if not proc.is_alive():
                    break
                continue
            if "ready" in msg:
                continue
            rx = msg
            break
    finally:
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
    pace = summary.pacing_ms
    result.update({
        "samples_sent": summary.samples_pushed, "chunks_sent": summary.chunks_pushed,
        "samples_received": rx.get("received"), "t0_match": rx.get("t0") == summary.t0,
        "max_grid_dev_s": rx.get("max_grid_dev_s"), "off_grid_samples": rx.get("off_grid"),
        "receiver_error": rx.get("error"),
        "lossless": (rx.get("received") == summary.samples_pushed and rx.get("off_grid") == 0
                     and rx.get("t0") == summary.t0),
        "pacing_ms": {k: pace[k] for k in ("p50", "p99", "p999", "max")},
        "late_chunks": summary.late_chunks, "late_threshold_ms": summary.late_threshold_ms,
        "realtime": summary.realtime,
        # per late chunk: how late, and how long generation took since the previous push
        # (small: the OS or the machine held the process, not the generator)
        "late_examples": [{"chunk": c.chunk, "error_ms": c.error_ms,
                           "generate_ms": c.generate_ms} for c in summary.late[:5]],
        "generate_ms": summary.generate_ms, "delivery_ms": rx.get("delivery_ms", {}),
        "wall_s": summary.wall_s,
    })
    return result


# -- section 2: in-process generation speed -------------------------------------------------
def inprocess_bench(seconds: float, block: int = 20) -> dict[str, Any]:
    from bci_runtime.simulators.paradigms import make_generator

    srate = 1000.0
    gen = make_generator("mi", {"n_channels": 64, "srate": srate}, seed=3,
                         drift={"scenario": "day-to-day"})
    n_blocks = int(round(seconds * srate / block))
    markers = 0
    t = time.perf_counter()
    for _ in range(n_blocks):
        markers += len(gen.next_block(block).markers)
    wall = time.perf_counter() - t
    simulated = n_blocks * block / srate
    return {"paradigm": "mi", "channels": 64, "srate": srate, "block": block,
            "scenario": "day-to-day", "simulated_s": simulated, "wall_s": wall,
            "x_realtime": simulated / wall, "target_x": INPROCESS_TARGET,
            "meets_target": simulated / wall >= INPROCESS_TARGET, "markers": markers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of LSL streaming (default 600)")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--srate", type=float, default=2000.0)
    parser.add_argument("--chunk-size", type=int, default=20)
    parser.add_argument("--inprocess", action="store_true",
                        help="only the in-process generation speed")
    parser.add_argument("--no-inprocess", action="store_true",
                        help="skip the in-process generation speed")
    parser.add_argument("--inprocess-seconds", type=float, default=600.0,
                        help="signal seconds generated in-process (default 600)")
    parser.add_argument("--realtime", action="store_true",
                        help="pace under SCHED_FIFO, as `bci simulate --realtime`")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    for name in ("duration", "srate", "inprocess_seconds"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number above 0")
    if args.channels < 1 or args.chunk_size < 1:
        parser.error("--channels and --chunk-size must be at least 1")
    progress = None if args.json else sys.stderr
    report: dict[str, Any] = {}
    if not args.no_inprocess:
        report["inprocess"] = inprocess_bench(args.inprocess_seconds)
    if not args.inprocess:
        report["lsl"] = stream_bench(args.duration, args.channels, args.srate, args.chunk_size,
                                     progress, args.realtime)
    if not args.json:
        if "inprocess" in report:
            r = report["inprocess"]
            print(f"in-process: mi {r['channels']} ch @ {r['srate']:g} Hz, {r['scenario']}, "
                  f"{r['block']}-sample blocks: {r['x_realtime']:.1f}x real time "
                  f"({r['simulated_s']:g} s in {r['wall_s']:.2f} s; target >= "
                  f"{r['target_x']:g}x: {'met' if r['meets_target'] else 'NOT met'})")
        if "lsl" in report:
            r = report["lsl"]
            p = r["pacing_ms"]
            print(f"LSL: {r['paradigm']} {r['channels']} ch @ {r['srate']:g} Hz, chunks of "
                  f"{r['chunk_size']}, {r['duration_s']:g} s" + (f"  ({r['note']})"
                                                               if r["note"] else ""))
            print(f"  {'sent':>10} {'received':>10} {'off-grid':>9} {'max |dt| s':>11} "
                  f"{'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'late':>5}")
            dev = r["max_grid_dev_s"]
            print(f"  {r['samples_sent']:>10} {r['samples_received']!s:>10} "
                  f"{r['off_grid_samples']!s:>9} {dev if dev is None else f'{dev:.1e}':>11} "
                  f"{p['p50']:>8.3f} {p['p99']:>8.3f} {p['p999']:>9.3f} {p['max']:>8.3f} "
                  f"{r['late_chunks']:>5}")
            d = r["delivery_ms"]
            if d:
                print(f"  delivery (receiver pull - newest sample): p50 {d['p50']:.3f} ms  "
                      f"p99 {d['p99']:.3f} ms  max {d['max']:.3f} ms")
            print(f"  lossless: {r['lossless']}"
                  + (f"  receiver error: {r['receiver_error']}" if r["receiver_error"] else ""))
    print(json.dumps(report))
    ok = report.get("lsl", {}).get("lossless", True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
