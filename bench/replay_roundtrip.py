"""Replay -> record round trip over LSL: 64 ch at 1 kHz at 10x speed, nothing lost.

The issue's target: replaying 64 channels at 1 kHz at ten times real time and
recording it back loses no sample.

The recording is real: PhysioNet EEG Motor Movement/Imagery S001R04 (64 ch,
160 Hz, 125 s, from ``../shared/data``), resampled to 1 kHz with MNE and saved as
FIF in a temporary folder (the repository never holds data). Then, as real
processes, ``bci replay FILE --speed 10`` publishes it (64 ch at an effective
10 kHz, plus its markers) and ``bci record`` records it back. The bench reports

- samples and markers recorded / sent (must be equal), and whether every value
  is bit-identical,
- the timestamp error of what was recorded against the player's schedule,
  ``t0 + (t - t_first) / speed`` (percentiles),
- the player's wall time against the expected 12.5 s.

Run::

    .venv/bin/python bench/replay_roundtrip.py            # 10x, ~15 s
    .venv/bin/python bench/replay_roundtrip.py --speed 20 --json

Prints a short report, then one JSON line (``--json``: only the JSON line).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EDF = REPO.parent / "shared" / "data" / "physionet_eegmmidb" / "S001" / "S001R04.edf"
_SCRIPT = Path(sys.executable).parent / "bci"
BCI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "bci_runtime.cli"]


def make_recording(folder: Path, srate: float) -> Path:
    """The real EDF resampled to ``srate`` and saved as FIF; returns its path."""
    import mne

    raw = mne.io.read_raw_edf(EDF, preload=True, verbose="error")
    raw.resample(srate, verbose="error")
    path = folder / f"S001R04_{int(srate)}hz_raw.fif"
    raw.save(path, verbose="error")
    return path


def round_trip(path: Path, speed: float, out: Path) -> dict[str, Any]:
    """Replay ``path`` at ``speed`` and record it back to ``out``; returns the figures."""
    import pyxdf

    from bci_runtime.drivers.recordings import load_recording

    original = load_recording(path)
    prefix = f"bench-roundtrip-{uuid.uuid4().hex[:8]}"
    queries = [a for s in original.streams
               for a in ("--stream", f"source_id={prefix}:{s.spec.name}")]
    record = subprocess.Popen([*BCI, "record", *queries, "--out", str(out), "--json",
                               "--resolve-timeout", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    replay = subprocess.run([*BCI, "replay", str(path), "--speed", str(speed), "--json",
                             "--wait-for-consumers", "30", "--source-id-prefix", prefix],
                            capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    record.send_signal(signal.SIGINT)
    record.communicate(timeout=60)
    if replay.returncode != 0 or record.returncode != 0:
        raise SystemExit(f"replay exit {replay.returncode}: {replay.stderr}\n"
                         f"record exit {record.returncode}")
    played = json.loads(replay.stdout.strip().splitlines()[-1])
    first = min(float(s.timestamps[0]) for s in original.streams)
    loaded, _ = pyxdf.load_xdf(str(out), dejitter_timestamps=False)
    back = {s["info"]["source_id"][0].split(":")[-1]: s for s in loaded}
    streams = []
    for s in original.streams:
        got = back[s.spec.name]
        n = min(len(got["time_stamps"]), len(s.timestamps))
        expected = played["t0"] + (s.timestamps[:n] - first) / speed
        err_ms = np.abs(got["time_stamps"][:n] - expected) * 1e3
        if s.is_markers:
            same = [m[0] for m in got["time_series"]] == list(s.data[:, 0])
        else:
            same = bool(len(got["time_stamps"]) == len(s.timestamps)
                        and np.array_equal(got["time_series"], s.data))
        streams.append({
            "name": s.spec.name, "channels": s.spec.n_channels, "srate": s.spec.srate,
            "sent": len(s.timestamps), "recorded": len(got["time_stamps"]),
            "lost": len(s.timestamps) - len(got["time_stamps"]), "identical": same,
            "timestamp_error_ms": {"p50": float(np.percentile(err_ms, 50)),
                                   "p99": float(np.percentile(err_ms, 99)),
                                   "max": float(err_ms.max())}})
    return {"speed": speed, "duration_s": original.signals()[0].duration_s,
            "expected_wall_s": original.signals()[0].duration_s / speed,
            "wall_s": wall, "streams": streams,
            "lossless": all(st["lost"] == 0 and st["identical"] for st in streams)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--srate", type=float, default=1000.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not EDF.is_file():
        raise SystemExit(f"the real recording is missing: {EDF}")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_recording(Path(tmp), args.srate)
        report = round_trip(path, args.speed, Path(tmp) / "back.xdf")
    if not args.json:
        print(f"replay -> record, {report['duration_s']:.1f} s of 64 ch @ {args.srate:g} Hz at "
              f"{args.speed:g}x: wall {report['wall_s']:.1f} s "
              f"(expected {report['expected_wall_s']:.1f} s + start-up)")
        for s in report["streams"]:
            e = s["timestamp_error_ms"]
            print(f"  {s['name']:<28} sent {s['sent']:>7}  recorded {s['recorded']:>7}  "
                  f"lost {s['lost']}  identical {s['identical']}  timestamp error ms "
                  f"p50 {e['p50']:.4f} p99 {e['p99']:.4f} max {e['max']:.4f}")
        print(f"  lossless: {report['lossless']}")
    print(json.dumps(report))
    return 0 if report["lossless"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
