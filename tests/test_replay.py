"""``bci replay`` through pipelines: sessions reproduced exactly, files fed to pipelines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from session_helpers import run_json, streams_of

from bci_runtime.cli import demo_pipeline_path
from bci_runtime.cli import main as cli_main

pyxdf = pytest.importorskip("pyxdf")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EDF = DATA / "physionet_eegmmidb" / "S001" / "S001R04.edf"
needs_edf = pytest.mark.skipif(not EDF.is_file(), reason=f"real data missing: {EDF}")


def assert_same_stream(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert len(a["time_stamps"]) == len(b["time_stamps"]) > 0
    np.testing.assert_array_equal(a["time_stamps"], b["time_stamps"])
    if isinstance(a["time_series"], list):
        assert a["time_series"] == b["time_series"]
    else:
        np.testing.assert_array_equal(a["time_series"], b["time_series"])


def fast_demo_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, summary = run_json(capsys, "demo", "--fast", "--duration", "30",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0 and summary["decisions"] > 0
    return Path(summary["session_dir"])


def test_fast_replay_of_a_session_reproduces_every_recorded_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = fast_demo_session(tmp_path, capsys)
    code, summary = run_json(capsys, "replay", str(original), "--fast",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary
    replayed = Path(summary["session_dir"])
    assert replayed.parent == original.parent and replayed.name == "ses-02"
    assert summary["replay"]["reproduced"] is True
    compared = {s["name"] for s in summary["replay"]["streams"]}
    assert {"bandpass.filtered", "logvar.features", "decoder.decision"} <= compared
    assert summary["decisions"] > 0

    # checked again here, independently of the command's own comparison
    before, after = streams_of(original), streams_of(replayed)
    for name in ("eeg.signal", "eeg.markers", "bandpass.filtered", "logvar.features",
                 "decoder.decision"):
        assert_same_stream(before[name], after[name])
    manifest = json.loads((replayed / "manifest.json").read_text())
    assert manifest["replay_of"] == str(original) and manifest["status"] == "completed"
    assert yaml.safe_load((replayed / "config.yaml").read_text())["nodes"]["eeg"]["type"] == \
        "file_replay"


def test_fast_replay_of_a_live_session_reproduces_its_decisions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Recorded on the live clock (real time, chunks as they came), replayed as fast as possible.

    The decoder calibrates online: on the live clock its fit runs in the background and
    the model goes online at whichever chunk follows the fit, which the replay learns
    from the recorded ``decoder.model`` stream.
    """
    config = yaml.safe_load(demo_pipeline_path().read_text())
    config["duration"] = 9
    config["nodes"]["decoder"]["params"].update(calibration_s=4, min_windows=5)
    config["nodes"]["eeg"]["params"]["timing"].update(imagery_s=1.5, rest_s=0.5)
    config["nodes"]["feedback"]["params"]["lsl_name"] = f"test-replay-{tmp_path.name}"
    pipeline = tmp_path / "short_demo.yaml"
    pipeline.write_text(yaml.safe_dump(config))
    code, live = run_json(capsys, "run", str(pipeline), "--subject", "P1",
                          "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0 and live["decisions"] > 0, live
    before = streams_of(Path(live["session_dir"]))
    [[marker]] = before["decoder.model"]["time_series"]
    [went_online] = before["decoder.model"]["time_stamps"]
    info = json.loads(marker.split(" ", 1)[1])
    assert marker.startswith("model/online ") and info["version"] == 1
    # stamped with the first window the model served: the first decision
    assert went_online == before["decoder.decision"]["time_stamps"][0] == info["first_window"]
    code, summary = run_json(capsys, "replay", live["session_dir"], "--fast",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary
    assert summary["replay"]["reproduced"] is True
    assert Path(summary["session_dir"]).parent.name == "sub-P1"  # the subject is kept
    after = streams_of(Path(summary["session_dir"]))
    assert_same_stream(before["decoder.decision"], after["decoder.decision"])
    assert_same_stream(before["decoder.model"], after["decoder.model"])
    replayed = yaml.safe_load((Path(summary["session_dir"]) / "config.yaml").read_text())
    assert replayed["nodes"]["decoder"]["params"]["install_at"] == [went_online]


def test_replay_through_another_pipeline_reports_what_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = fast_demo_session(tmp_path, capsys)
    config = yaml.safe_load((original / "config.yaml").read_text())
    config["nodes"]["bandpass"]["params"]["low"] = 9
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    code, summary = run_json(capsys, "replay", str(original), "--fast", "--pipeline", str(other),
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary  # another pipeline is expected to differ: not an error
    by_name = {s["name"]: s for s in summary["replay"]["streams"]}
    assert by_name["bandpass.filtered"]["identical"] is False
    assert "differ" in by_name["bandpass.filtered"]["detail"]
    assert summary["replay"]["reproduced"] is False


def test_replaying_a_session_without_a_recording_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = fast_demo_session(tmp_path, capsys)
    manifest = json.loads((original / "manifest.json").read_text())
    (original / manifest["recording"]).unlink()
    assert cli_main(["replay", str(original), "--fast"]) == 2
    err = capsys.readouterr().err
    assert "its recording" in err and "is missing" in err


def test_missing_target_and_fast_without_pipeline_are_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["replay", str(tmp_path / "nope.edf")]) == 2
    assert "does not exist" in capsys.readouterr().err


MI_PIPELINE = """\
name: mi-live
clock: live
nodes:
  eeg:
    type: lsl_inlet
    params: {{type: EEG, channels: {channels}, srate: 160}}
  bandpass:
    type: bandpass
    params: {{low: 8, high: 30, order: 4}}
    inputs: {{signal: eeg.signal}}
  logvar:
    type: log_variance
    params: {{window_s: 1.0, step_s: 0.25}}
    inputs: {{signal: bandpass.filtered}}
"""


@needs_edf
def test_a_real_edf_feeds_a_live_pipeline_on_the_simulated_clock(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "mi.yaml"
    pipeline.write_text(MI_PIPELINE.format(channels=64))
    code, summary = run_json(capsys, "replay", str(EDF), "--pipeline", str(pipeline), "--fast",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary
    assert summary["samples"] == 20000  # 125 s at 160 Hz, every sample
    streams = streams_of(Path(summary["session_dir"]))
    assert streams["eeg.signal"]["time_series"].shape == (20000, 64)
    markers = [m[0] for m in streams["eeg.markers"]["time_series"]]
    assert set(markers) == {"T0", "T1", "T2"} and len(markers) == 30
    # features every 0.25 s once the first 1 s window is full
    assert abs(len(streams["logvar.features"]["time_stamps"]) - (125 - 1) / 0.25) <= 2


@needs_edf
def test_a_file_that_does_not_fit_the_pipeline_is_refused_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "mi.yaml"
    pipeline.write_text(MI_PIPELINE.format(channels=32))
    assert cli_main(["replay", str(EDF), "--pipeline", str(pipeline), "--fast",
                     "--sessions-root", str(tmp_path / "sessions")]) == 2
    err = capsys.readouterr().err
    assert "has 64 channels, the pipeline expects 32" in err
    assert not (tmp_path / "sessions").exists()  # nothing started, no session
