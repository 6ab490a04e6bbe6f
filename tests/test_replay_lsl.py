"""Real recordings replayed over LSL by ``bci replay`` and recorded back by ``bci record``.

Both commands run as real processes. What comes back must be the same samples
(bit for bit), the same markers, and the timestamps the player gave them,
``t0 + (t - t_first) / speed``, within a millisecond.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from bci_runtime.drivers.recordings import load_recording

pyxdf = pytest.importorskip("pyxdf")
pytestmark = [pytest.mark.lsl, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_SCRIPT = Path(sys.executable).parent / "bci"
BCI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "bci_runtime.cli"]
WAIT_S = 30.0
TIMESTAMP_TOLERANCE_S = 1e-3

CASES = [
    pytest.param(DATA / "xdf" / "labrecorder_openbci_3class.xdf", 60.0, id="xdf-3class"),
    pytest.param(DATA / "xdf" / "labrecorder_openbci_dropouts.xdf", 120.0, id="xdf-dropouts"),
    pytest.param(DATA / "physionet_eegmmidb" / "S001" / "S001R04.edf", 20.0, id="edf-eegmmidb"),
    pytest.param(DATA / "ssvep_exo_kalunga2016" / "subject01"
                 / "record-[2012.07.06-19.02.16]_raw.fif", 50.0, id="fif-kalunga"),
]


@pytest.mark.parametrize(("path", "speed"), CASES)
def test_replay_then_record_gives_back_the_same_samples_and_markers(
        path: Path, speed: float, tmp_path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"real data missing: {path}")
    original = load_recording(path)
    prefix = f"test-roundtrip-{uuid.uuid4().hex}"
    out = tmp_path / "back.xdf"
    replay = subprocess.Popen(
        [*BCI, "replay", str(path), "--speed", str(speed), "--json",
         "--wait-for-consumers", str(WAIT_S), "--source-id-prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    queries = [a for s in original.streams
               for a in ("--stream", f"source_id={prefix}:{s.spec.name}")]
    record = subprocess.Popen([*BCI, "record", *queries, "--out", str(out), "--json",
                               "--resolve-timeout", str(WAIT_S)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        replay_out, replay_err = replay.communicate(timeout=WAIT_S + 60)
        assert replay.returncode == 0, replay_err
        record.send_signal(signal.SIGINT)  # the replay has ended: stop recording
        record_out, record_err = record.communicate(timeout=WAIT_S)
        assert record.returncode == 0, record_err
    finally:
        for proc in (replay, record):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    played = json.loads(replay_out.strip().splitlines()[-1])
    t0 = played["t0"]
    first = min(float(s.timestamps[0]) for s in original.streams)

    loaded, _ = pyxdf.load_xdf(str(out), dejitter_timestamps=False)
    back = {s["info"]["source_id"][0].split(":")[-1]: s for s in loaded}
    for stream in original.streams:
        got = back[stream.spec.name]
        assert len(got["time_stamps"]) == len(stream.timestamps), \
            f"{stream.spec.name}: {len(got['time_stamps'])} of {len(stream.timestamps)} samples"
        expected_ts = t0 + (stream.timestamps - first) / speed
        np.testing.assert_allclose(got["time_stamps"], expected_ts, rtol=0,
                                   atol=TIMESTAMP_TOLERANCE_S)
        if stream.is_markers:
            assert [m[0] for m in got["time_series"]] == list(stream.data[:, 0])
        else:
            assert got["info"]["channel_count"][0] == str(stream.spec.n_channels)
            np.testing.assert_array_equal(got["time_series"],
                                          stream.data.astype(got["time_series"].dtype))
            assert got["time_series"].dtype == stream.data.dtype  # no precision lost
            labels = [c["label"][0] for c in
                      got["info"]["desc"][0]["channels"][0]["channel"]]
            assert labels == list(stream.spec.channel_names)
