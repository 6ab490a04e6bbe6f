"""The co-adaptive decoder node in a closed loop: calibration, versions, events, exact replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from session_helpers import run_json, streams_of

PIPELINE = """\
name: coadaptive
seed: 5
clock: {clock}
duration: {duration}
nodes:
  eeg:
    type: simulated_eeg
    params:
      n_channels: 8
      channels: [C3, C4, Cz, FC3, FC4, CP3, CP4, Pz]
      srate: 250
      chunk_size: 10
      classes: [left, right]
      timing: {{fixation_s: 0.5, imagery_s: 2.5, rest_s: 0.5, first_s: 0.5}}
      erd: 0.5
      mu_uv: 16
      background_uv: 5
      drift: {{scenario: {scenario}, onset_s: {onset}, ramp_s: 10}}
  bandpass:
    type: bandpass
    params: {{low: 8, high: 30, order: 4}}
    inputs: {{signal: eeg.signal}}
  decoder:
    type: coadaptive_decoder
    params:
      decoder: ts-lr
      classes: [left, right]
      adapt: [lda-bias]
      tmin: 0.5
      tmax: 2.5
      step_s: 0.2
      calibration_trials: {calibration}
      shadow_trials: 4
      drift_window: 6
    inputs: {{signal: bandpass.filtered, labels: eeg.markers}}
  feedback:
    type: feedback
    params: {{lsl_name: {lsl_name}}}
    inputs: {{decision: decoder.decision, truth: eeg.markers}}
"""


def model_events(streams: dict[str, dict[str, Any]]) -> list[tuple[str, dict]]:
    return [(m.split(" ", 1)[0][6:], json.loads(m.split(" ", 1)[1]))
            for [m] in streams["decoder.model"]["time_series"]]


def write_pipeline(tmp_path: Path, **fields: Any) -> Path:
    values = {"clock": "simulated", "duration": 200, "scenario": "session-jump", "onset": 100,
              "calibration": 8, "lsl_name": f"test-coadaptive-{tmp_path.name}", **fields}
    path = tmp_path / "coadaptive.yaml"
    path.write_text(PIPELINE.format(**values))
    return path


@pytest.mark.slow
def test_the_node_calibrates_adapts_versions_and_detects_drift(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = run_json(capsys, "run", str(write_pipeline(tmp_path)),
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary
    assert summary["decisions"] > 0 and summary["accuracy"] > 0.7
    life = summary["training"]["decoder"]
    assert life["versions"] > 2 and life["serving_version"] > 1
    streams = streams_of(Path(summary["session_dir"]))
    events = model_events(streams)
    kinds = [k for k, _ in events]
    assert kinds[0] == "online" and events[0][1]["reason"] == "calibration"
    assert "shadow" in kinds and ("swap" in kinds or "rollback" in kinds)
    assert "drift" in kinds  # the session jump moved every covariance
    drift_at = next(d["at"] for k, d in events if k == "drift")
    assert drift_at > streams["decoder.model"]["time_stamps"][0]
    recal = [d for k, d in events if d.get("reason") == "recalibration"]
    assert recal, "a drift triggers a recalibration candidate"
    # the first decision is the first window the calibrated version served
    assert streams["decoder.decision"]["time_stamps"][0] == events[0][1]["first_window"]
    # the model stream's timestamps never go back
    assert np.all(np.diff(streams["decoder.model"]["time_stamps"]) >= 0)


@pytest.mark.slow
def test_a_live_session_with_background_updates_replays_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write_pipeline(tmp_path, clock="live", duration=25, calibration=2,
                              scenario="stationary", onset=1000)
    code, live = run_json(capsys, "run", str(pipeline), "--sessions-root",
                          str(tmp_path / "sessions"))
    assert code == 0, live
    before = streams_of(Path(live["session_dir"]))
    assert len(model_events(before)) >= 2  # online, then at least one update installed
    code, summary = run_json(capsys, "replay", live["session_dir"], "--fast",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0 and summary["replay"]["reproduced"] is True, summary
    after = streams_of(Path(summary["session_dir"]))
    for name in ("decoder.decision", "decoder.model"):
        np.testing.assert_array_equal(before[name]["time_stamps"], after[name]["time_stamps"])
    assert model_events(before) == model_events(after)
    np.testing.assert_array_equal(before["decoder.decision"]["time_series"],
                                  after["decoder.decision"]["time_series"])
    replayed = yaml.safe_load((Path(summary["session_dir"]) / "config.yaml").read_text())
    installs = [d["first_window"] for _, d in model_events(before) if "first_window" in d]
    assert replayed["nodes"]["decoder"]["params"]["install_at"] == installs


@pytest.mark.slow
def test_the_shipped_coadaptive_pipeline_decodes_through_its_session_jump(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "coadaptive.yaml"
    code, summary = run_json(capsys, "run", str(pipeline), "--clock", "simulated",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0, summary
    assert summary["status"] == "completed" and summary["accuracy"] > 0.8
    life = summary["training"]["decoder"]
    assert life["versions"] > 10 and life["swaps"] > 0  # updated, shadowed, swapped in
    events = model_events(streams_of(Path(summary["session_dir"])))
    after_jump = [d for k, d in events if k == "swap" and d["at"] > 150.0]
    assert after_jump, "versions learned after the session jump serve"
