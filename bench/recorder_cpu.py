"""CPU cost of ``bci record``: 256 ch at 2 kHz plus four other streams.

The issue's target: the recorder keeps up with 256 channels at 2 kHz plus four
other streams using at most 5 % of one core.

A **producer process** (separate, as amplifiers' LSL apps are) opens five outlets
and, once the recorder's inlets are connected to all of them, pushes for
``--duration`` seconds (default 60) on an exact grid:

=============  ======  ========  =======  =====================================
stream         ch      rate      chunk    format
=============  ======  ========  =======  =====================================
bench-eeg256   256     2000 Hz   20       float32 (channel 0: the sample index)
bench-ecog64   64      500 Hz    10       float32
bench-aux8     8       250 Hz    5        float32
bench-decoder  1       10 Hz     1        float32 (a decoder output)
bench-markers  1       2 Hz      1        string
=============  ======  ========  =======  =====================================

The **recorder** (:class:`~bci_runtime.drivers.recorder.LslRecorder`, what
``bci record`` runs) records them in this process (``--subprocess``: a real
``bci record`` process). Its CPU time (user + sys, every thread including
liblsl's) is measured over the steady-state window, from ``--warmup`` seconds
(default 5) after the producer started until 1 s before it stops, and given as a
percentage of one core. The samples written per stream are compared with what
the producer pushed (they must be equal: nothing lost), and ``--verify`` (on by
default) reloads the file with pyxdf and checks the index channel of
``bench-eeg256`` (contiguous from 0).

Run::

    .venv/bin/python bench/recorder_cpu.py                    # 60 s
    .venv/bin/python bench/recorder_cpu.py --duration 20 --json
    .venv/bin/python bench/recorder_cpu.py --subprocess       # a `bci record` process

Prints a table, then one JSON line (``--json``: only the JSON line).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

TARGET_PERCENT = 5.0

# name, channels, rate (Hz), chunk, format
STREAMS = [
    ("bench-eeg256", 256, 2000.0, 20, "float32"),
    ("bench-ecog64", 64, 500.0, 10, "float32"),
    ("bench-aux8", 8, 250.0, 5, "float32"),
    ("bench-decoder", 1, 10.0, 1, "float32"),
    ("bench-markers", 1, 2.0, 1, "string"),
]


# -- the producer (separate process) ---------------------------------------------------------
def _producer(tag: str, duration: float, ctrl: Any, out: Any) -> None:
    """Open the outlets, wait for the recorder, push for ``duration`` s, report counts."""
    import bci_runtime  # noqa: F401 - its liblsl configuration (quiet log)
    import numpy as np
    import pylsl

    outlets = []
    for name, n_ch, srate, chunk, fmt in STREAMS:
        rate = pylsl.IRREGULAR_RATE if fmt == "string" else srate
        info = pylsl.StreamInfo(name, "Markers" if fmt == "string" else "EEG", n_ch, rate,
                                fmt, f"{name}-{tag}")
        chans = info.desc().append_child("channels")
        for c in range(n_ch):
            chans.append_child("channel").append_child_value("label", f"ch{c + 1}")
        outlets.append(pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60))
    out.put({"ready": True})
    deadline = time.monotonic() + 60.0
    while not all(o.have_consumers() for o in outlets) and time.monotonic() < deadline:
        outlets[0].wait_for_consumers(0.1)
    rng = np.random.default_rng(0)
    blocks = []
    for name, n_ch, srate, chunk, fmt in STREAMS:
        if fmt == "string":
            blocks.append(None)
        else:  # a few seconds of noise, cycled
            blocks.append(rng.standard_normal((int(srate * 2) + chunk, n_ch)).astype(np.float32))
    pushed = [0] * len(STREAMS)
    t0 = pylsl.local_clock()
    out.put({"started": True, "t0": t0, "wall": time.monotonic()})
    end = t0 + duration
    while True:
        # the next chunk due, over all streams
        dues = [t0 + (pushed[i] + STREAMS[i][3] - 1) / STREAMS[i][2] for i in range(len(STREAMS))]
        i = min(range(len(STREAMS)), key=dues.__getitem__)
        if dues[i] >= end:
            break
        delay = dues[i] - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        name, n_ch, srate, chunk, fmt = STREAMS[i]
        k = pushed[i]
        stamps = (t0 + np.arange(k, k + chunk) / srate).tolist()
        if fmt == "string":
            outlets[i].push_sample([f"marker-{k}"], stamps[0])
        else:
            block = blocks[i]
            start = k % (len(block) - chunk)
            data = block[start:start + chunk].copy()
            data[:, 0] = np.arange(k, k + chunk)  # the sample index (exact in float32)
            outlets[i].push_chunk(data, stamps, pushthrough=True)
        pushed[i] = k + chunk
    out.put({"pushed": {STREAMS[i][0]: pushed[i] for i in range(len(STREAMS))},
             "wall": time.monotonic()})
    ctrl.get(timeout=120.0)  # keep the outlets until the recorder has everything
    del outlets


# -- measuring ---------------------------------------------------------------------------------
def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _thread_times() -> dict[int, float]:
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def run_bench(duration: float, warmup: float, subprocess_mode: bool, verify: bool,
              out_dir: Path | None, progress: Any) -> dict[str, Any]:
    if duration < warmup + 5:
        raise SystemExit(f"--duration must be at least --warmup + 5 s ({warmup + 5:g})")
    tag = uuid.uuid4().hex[:10]
    folder = out_dir or Path(tempfile.mkdtemp(prefix="bci-record-bench-"))
    path = folder / f"bench-{tag}.xdf"
    ctx = mp.get_context("spawn")
    ctrl, msgs = ctx.Queue(), ctx.Queue()
    producer = ctx.Process(target=_producer, args=(tag, duration, ctrl, msgs), daemon=True)
    producer.start()
    report: dict[str, Any] = {"duration_s": duration, "warmup_s": warmup,
                              "mode": "subprocess" if subprocess_mode else "in-process",
                              "streams": [], "target_percent": TARGET_PERCENT}
    try:
        if not msgs.get(timeout=60.0).get("ready"):
            raise RuntimeError("the producer did not start")
        queries = [f"source_id={name}-{tag}" for name, *_ in STREAMS]
        if subprocess_mode:
            result = _record_subprocess(queries, path, msgs, ctrl, duration, warmup, progress)
        else:
            result = _record_inprocess(queries, path, msgs, ctrl, duration, warmup, progress)
        report.update(result)
        if verify:
            report["verified"] = _verify(path, result["pushed"]["bench-eeg256"])
        report["file_mib"] = round(path.stat().st_size / 2**20, 1)
    finally:
        producer.join(10.0)
        if producer.is_alive():
            producer.kill()
        if out_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def _window(msgs: Any, duration: float, warmup: float,
            sample: Any, progress: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """Wait for the producer's start; measure ``sample()`` over the steady-state window."""
    started = msgs.get(timeout=90.0)
    if not started.get("started"):
        raise RuntimeError(f"unexpected producer message {started}")
    t_start = started["wall"]
    time.sleep(max(0.0, t_start + warmup - time.monotonic()))
    a_wall, a = time.monotonic(), sample()
    if progress:
        print(f"measuring for {duration - warmup - 1:g} s ...", file=progress, flush=True)
    time.sleep(max(0.0, t_start + duration - 1.0 - time.monotonic()))
    b_wall, b = time.monotonic(), sample()
    done = msgs.get(timeout=60.0)
    return {"window_s": b_wall - a_wall, "a": a, "b": b}, done["pushed"]


def _record_inprocess(queries: list[str], path: Path, msgs: Any, ctrl: Any, duration: float,
                      warmup: float, progress: Any) -> dict[str, Any]:
    from bci_runtime.drivers.recorder import LslRecorder

    stop = threading.Event()
    box: dict[str, Any] = {}
    rec = LslRecorder(queries, path, stop=stop, resolve_timeout_s=30.0)

    def record() -> None:
        try:
            box["summary"] = rec.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=record, name="bench-recorder", daemon=True)
    thread.start()
    own = {threading.get_native_id()}

    def sample() -> tuple[float, dict[int, float], set[int]]:
        ids = {t.native_id for t in threading.enumerate() if t.name.startswith("record-")}
        return _cpu_self(), _thread_times(), ids

    win, pushed = _window(msgs, duration, warmup, sample, progress)
    time.sleep(0.5)  # let the last samples arrive
    stop.set()
    thread.join(30.0)
    ctrl.put("done")
    if "error" in box:
        raise box["error"]
    summary = box["summary"]
    (cpu_a, thr_a, ids_a), (cpu_b, thr_b, ids_b) = win["a"], win["b"]
    window = win["window_s"]
    py_ids = (ids_a | ids_b) - own
    py = sum(thr_b.get(t, 0.0) - thr_a.get(t, 0.0) for t in py_ids)
    other = sum(v - thr_a.get(t, 0.0) for t, v in thr_b.items()
                if t not in py_ids and t not in own)
    written = {s.name: s.samples for s in summary.streams}
    return {
        "cpu_percent": 100.0 * (cpu_b - cpu_a) / window,
        "cpu_python_threads_percent": 100.0 * py / window,
        "cpu_liblsl_threads_percent": 100.0 * other / window,
        "window_s": window,
        "pushed": pushed,
        "written": written,
        "gaps": len(summary.gaps),
        "stop_reason": summary.stop_reason,
        "streams": _rows(pushed, written),
    }


def _record_subprocess(queries: list[str], path: Path, msgs: Any, ctrl: Any,
                       duration: float, warmup: float, progress: Any) -> dict[str, Any]:
    import psutil

    argv = [sys.executable, "-m", "bci_runtime.cli", "record", "--out", str(path),
            "--resolve-timeout", "30", "--json"]
    for q in queries:
        argv += ["--stream", q]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)

    def sample() -> float:
        t = ps.cpu_times()
        return t.user + t.system

    try:
        win, pushed = _window(msgs, duration, warmup, sample, progress)
        time.sleep(0.5)
        proc.send_signal(2)  # Ctrl-C: clean stop, footers
        out, err = proc.communicate(timeout=30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ctrl.put("done")
    if proc.returncode != 0:
        raise RuntimeError(f"bci record failed ({proc.returncode}): {err}")
    summary = json.loads(out)
    written = {s["name"]: s["samples"] for s in summary["streams"]}
    return {
        "cpu_percent": 100.0 * (win["b"] - win["a"]) / win["window_s"],
        "window_s": win["window_s"],
        "pushed": pushed,
        "written": written,
        "gaps": sum(len(s["gaps"]) for s in summary["streams"]),
        "stop_reason": summary["stop_reason"],
        "streams": _rows(pushed, written),
    }


def _rows(pushed: dict[str, int], written: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for name, n_ch, srate, chunk, fmt in STREAMS:
        rows.append({"name": name, "channels": n_ch, "srate": srate, "chunk": chunk,
                     "format": fmt, "pushed": pushed.get(name, 0),
                     "written": written.get(name, 0),
                     "lost": pushed.get(name, 0) - written.get(name, 0)})
    return rows


def _verify(path: Path, n_pushed: int) -> bool:
    import numpy as np
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(path), select_streams=[{"name": "bench-eeg256"}],
                                synchronize_clocks=False, dejitter_timestamps=False)
    idx = np.asarray(streams[0]["time_series"])[:, 0].astype(np.int64)
    return bool(len(idx) == n_pushed and np.array_equal(idx, np.arange(n_pushed)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds the producer pushes (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds left out at the start of the window (default 5)")
    parser.add_argument("--subprocess", action="store_true",
                        help="measure a `bci record` process instead of an in-process recorder")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reloading the file with pyxdf")
    parser.add_argument("--out-dir", type=Path, help="keep the XDF file in this folder")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    progress = None if args.json else sys.stderr
    if progress:
        print(f"recording 5 streams (256 ch @ 2 kHz + 4) for {args.duration:g} s "
              f"({'bci record subprocess' if args.subprocess else 'in-process recorder'}), "
              f"{os.cpu_count()} CPUs ...", file=progress, flush=True)
    report = run_bench(args.duration, args.warmup, args.subprocess, args.verify, args.out_dir,
                       progress)
    report["ok"] = (report["cpu_percent"] <= TARGET_PERCENT
                    and all(r["lost"] == 0 for r in report["streams"])
                    and report.get("verified", True))
    if not args.json:
        print(f"{'stream':<15}{'ch':>5}{'rate':>9}{'chunk':>7}{'pushed':>10}{'written':>10}"
              f"{'lost':>7}")
        for r in report["streams"]:
            print(f"{r['name']:<15}{r['channels']:>5}{r['srate']:>9g}{r['chunk']:>7}"
                  f"{r['pushed']:>10}{r['written']:>10}{r['lost']:>7}")
        extra = ""
        if "cpu_python_threads_percent" in report:
            extra = (f" (Python recorder threads {report['cpu_python_threads_percent']:.2f} %, "
                     f"liblsl threads {report['cpu_liblsl_threads_percent']:.2f} %)")
        print(f"recorder CPU: {report['cpu_percent']:.2f} % of one core over "
              f"{report['window_s']:.1f} s{extra}; target <= {TARGET_PERCENT:g} %; "
              f"file {report['file_mib']} MiB"
              + (f"; index channel verified: {report['verified']}" if "verified" in report
                 else ""))
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
