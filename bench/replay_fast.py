"""``bci replay --fast`` of a full motor-imagery pipeline: how many times real time.

The issue's target: at least 100x real time.

Two cases, each replayed ``--repeats`` times (default 5) through ``bci replay
--fast`` (in this process, through the command's own entry point):

1. **real data**: PhysioNet EEG Motor Movement/Imagery S001R04 (64 ch, 160 Hz,
   125 s, imagined left/right fist, ``../shared/data``) through band-pass 8-30 Hz
   -> sliding log-variance (1 s window, 0.1 s step) -> LDA calibrated online on
   the first 60 s of cued trials (T1/T2 cues, T0 rest) -> feedback (scored
   decisions);
2. **a recorded session**: the demo's closed loop (simulated motor imagery, a
   simulated user, LDA, feedback) at 64 ch and 1 kHz, recorded for 60 s on the
   simulated clock, then replayed through its own pipeline (every chunk as
   recorded; the replay also checks that it reproduces the decisions exactly).

Real-time factor = recorded seconds / wall seconds of the run (the graph from
its first to its last chunk, as the summary's ``wall_s`` reports), and also for
the whole command (loading the file, writing the new session, comparing).
Percentiles over the repeats.

Run::

    .venv/bin/python bench/replay_fast.py
    .venv/bin/python bench/replay_fast.py --repeats 10 --json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bci_runtime.cli import demo_pipeline_path
from bci_runtime.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
EDF = REPO.parent / "shared" / "data" / "physionet_eegmmidb" / "S001" / "S001R04.edf"
TARGET = 100.0

MI_PIPELINE = {
    "name": "mi-physionet",
    "clock": "live",
    "nodes": {
        "eeg": {"type": "lsl_inlet", "params": {"type": "EEG", "channels": 64, "srate": 160}},
        "bandpass": {"type": "bandpass", "params": {"low": 8, "high": 30, "order": 4},
                     "inputs": {"signal": "eeg.signal"}},
        "logvar": {"type": "log_variance", "params": {"window_s": 1.0, "step_s": 0.1},
                   "inputs": {"signal": "bandpass.filtered"}},
        "decoder": {"type": "linear_classifier",
                    "params": {"classes": ["T1", "T2"], "label_prefix": "", "end_marker": "T0",
                               "label_delay_s": 0.5, "calibration_s": 60, "min_windows": 10},
                    "inputs": {"features": "logvar.features", "labels": "eeg.markers"}},
        "feedback": {"type": "feedback",
                     "params": {"console": False, "lsl": False, "label_prefix": "",
                                "end_marker": "T0"},
                     "inputs": {"decision": "decoder.decision", "truth": "eeg.markers"}},
    },
}


def run_quiet(argv: list[str]) -> dict[str, Any]:
    """Run ``bci ARGV --json``; returns its summary and the command's wall time."""
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main([*argv, "--json"])
    wall = time.perf_counter() - started
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"bci {' '.join(argv)} failed: {summary}")
    summary["command_wall_s"] = wall
    return summary


def record_session(root: Path, seconds: float) -> Path:
    config = yaml.safe_load(demo_pipeline_path().read_text())
    config["clock"], config["duration"] = "simulated", seconds
    eeg = config["nodes"]["eeg"]["params"]
    eeg.update(n_channels=64, srate=1000, chunk_size=20)
    eeg.pop("channels", None)
    path = root / "demo64.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = run_quiet(["run", str(path), "--sessions-root", str(root / "sessions")])
    return Path(summary["session_dir"])


def measure(name: str, argv: list[str], seconds: float, repeats: int) -> dict[str, Any]:
    factors, command_factors, decisions, reproduced = [], [], [], []
    for _ in range(repeats):
        s = run_quiet(argv)
        factors.append(seconds / s["wall_s"])
        command_factors.append(seconds / s["command_wall_s"])
        decisions.append(s["decisions"])
        reproduced.append((s.get("replay") or {}).get("reproduced"))
    f, c = np.array(factors), np.array(command_factors)
    return {"case": name, "recorded_s": seconds, "repeats": repeats,
            "realtime_factor": {"p10": float(np.percentile(f, 10)),
                                "p50": float(np.percentile(f, 50)), "min": float(f.min())},
            "command_realtime_factor": {"p50": float(np.percentile(c, 50)),
                                        "min": float(c.min())},
            "decisions": decisions[-1], "reproduced": reproduced[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--session-s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if EDF.is_file():
            pipeline = root / "mi.yaml"
            pipeline.write_text(yaml.safe_dump(MI_PIPELINE))
            results.append(measure(
                "physionet S001R04, 64 ch @ 160 Hz, 125 s",
                ["replay", str(EDF), "--pipeline", str(pipeline), "--fast",
                 "--sessions-root", str(root / "sessions")], 125.0, args.repeats))
        session = record_session(root, args.session_s)
        results.append(measure(
            f"recorded demo session, 64 ch @ 1 kHz, {args.session_s:g} s",
            ["replay", str(session), "--fast", "--sessions-root", str(root / "sessions")],
            args.session_s, args.repeats))
    ok = all(r["realtime_factor"]["min"] >= TARGET for r in results)
    if not args.json:
        for r in results:
            f, c = r["realtime_factor"], r["command_realtime_factor"]
            print(f"{r['case']}: run {f['p50']:.0f}x real time (p10 {f['p10']:.0f}x, min "
                  f"{f['min']:.0f}x), whole command {c['p50']:.0f}x; {r['decisions']} "
                  f"decisions" + (f", reproduced: {r['reproduced']}"
                                  if r["reproduced"] is not None else ""))
        print(f"target >= {TARGET:g}x: {'met' if ok else 'NOT met'}")
    print(json.dumps({"target": TARGET, "met": ok, "results": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
