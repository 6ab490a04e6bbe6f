"""The wizard's calibration step over HTTP: cues, recording, interruptions, resuming.

A real server (uvicorn on 127.0.0.1), the simulator or a real LSL stream as the
patient, and the recorded XDF files read back with pyxdf.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyxdf
from wizard_helpers import Amplifier, serve

from bci_runtime.audit_log import read_audit_log
from bci_runtime.web.wizard.app import create_app
from bci_runtime.web.wizard.server import ServerThread
from bci_runtime.web.wizard.wizard import Wizard

PATIENT = {"subject": "P21", "paradigm": "mi", "classes": ["left", "right"],
           "source": {"kind": "simulator"}}
FAST = {"trials_per_class": 2, "fixation_s": 0.2, "cue_s": 1.0, "rest_s": 0.5}
WAIT_S = 60


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Wizard, httpx.Client, str]]:
    with serve(tmp_path / "sessions", min_good=0.1) as served:
        yield served


def to_calibration(client: httpx.Client, patient: dict[str, Any]) -> dict[str, Any]:
    state = client.post("/api/patient", json=patient).json()
    assert state.get("step") == "signal", state
    deadline = time.monotonic() + WAIT_S
    while not client.get("/api/quality").json()["channels"]:
        assert time.monotonic() < deadline, "no signal quality"
        time.sleep(0.2)
    state = client.post("/api/signal/done", json={}).json()
    assert state["step"] == "calibration", state
    return state


def wait_run_over(wizard: Wizard) -> None:
    deadline = time.monotonic() + WAIT_S
    while wizard.run is not None:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)


def cues_in(xdf: Path) -> list[str]:
    streams, _ = pyxdf.load_xdf(str(xdf), synchronize_clocks=False, dejitter_timestamps=False)
    markers = [s for s in streams if s["info"]["type"][0] == "Markers"]
    return [m[0] for s in markers for m in s["time_series"] if m[0].startswith("cue/")]


def test_a_calibration_run_cues_records_and_completes(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    from websockets.sync.client import connect

    wizard, client, url = served
    session = Path(to_calibration(client, PATIENT)["session_dir"])
    seen: list[dict[str, Any]] = []
    with connect(url.replace("http://", "ws://") + "ws/run") as feed:
        assert json.loads(feed.recv(timeout=10))["type"] == "state"  # where the page is
        state = client.post("/api/calibration/start", json=FAST).json()
        assert state["run"]["kind"] == "calibration" and state["run"]["expected"] == 4
        deadline = time.monotonic() + WAIT_S
        while not any(m["type"] == "run_ended" for m in seen):
            message = json.loads(feed.recv(timeout=WAIT_S))
            seen.append(message)
            if message["type"] == "cue":  # the page answers each cue it draws
                feed.send(json.dumps({"type": "shown", "t": message["t"]}))
            assert time.monotonic() < deadline
    wait_run_over(wizard)

    cues = [m for m in seen if m["type"] == "cue"]
    assert sorted(m["cue"] for m in cues) == ["left", "left", "right", "right"]
    assert [m["trial"] for m in cues] == [1, 2, 3, 4]
    # cues come at the schedule's pace: one trial every fixation + cue + rest seconds
    np.testing.assert_allclose(np.diff([m["t"] for m in cues]), 1.7, atol=0.01)
    progress = [m for m in seen if m["type"] == "progress"]
    assert [m["done"] for m in progress] == [1, 2, 3, 4]

    state = client.get("/api/state").json()
    assert state["recorded"] == {"left": 2, "right": 2}
    run = state["calibration_runs"][0]
    assert run["outcome"] == "completed" and run["folder"] == "calibration-01"
    xdf = next((session / "calibration-01").glob("*_recording.xdf"))
    assert sorted(cues_in(xdf)) == ["cue/left", "cue/left", "cue/right", "cue/right"]
    ended = [r for r in read_audit_log(session / "audit.jsonl")
             if r["event"] == "wizard_calibration_ended"]
    assert ended[0]["outcome"] == "completed"
    lag = ended[0]["cue_display_lag_ms"]
    assert lag["n"] == 4 and 0 <= lag["p50"] < 5000  # measured, from marker to the page


def test_stopped_early_the_trials_stay_and_another_run_adds_to_them(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    wizard, client, _ = served
    session = Path(to_calibration(client, PATIENT)["session_dir"])
    client.post("/api/calibration/start", json={**FAST, "trials_per_class": 20})
    deadline = time.monotonic() + WAIT_S
    while wizard.run.cues.done < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state = client.post("/api/calibration/stop", json={}).json()
    first = state["calibration_runs"][0]
    assert first["outcome"] == "stopped" and first["done"] >= 2
    assert state["run"] is None
    # a second calibration cannot start while one runs; after it, it may
    state = client.post("/api/calibration/start", json=FAST).json()
    assert client.post("/api/calibration/start", json=FAST).status_code == 400
    wait_run_over(wizard)
    state = client.get("/api/state").json()
    assert [r["folder"] for r in state["calibration_runs"]] == ["calibration-01",
                                                                "calibration-02"]
    assert sum(state["recorded"].values()) == first["done"] + 4
    for run in state["calibration_runs"]:  # both recordings are there, with their cues
        xdf = next((session / run["folder"]).glob("*_recording.xdf"))
        assert len(cues_in(xdf)) >= run["done"]


def test_bad_trial_settings_are_refused(served: tuple[Wizard, httpx.Client, str]) -> None:
    _, client, _ = served
    to_calibration(client, PATIENT)
    response = client.post("/api/calibration/start", json={**FAST, "trials_per_class": 0})
    assert response.status_code == 400 and "trials_per_class" in response.json()["error"]
    response = client.post("/api/calibration/stop", json={})
    assert response.status_code == 400 and "no calibration run" in response.json()["error"]
    response = client.post("/api/training/start", json={})
    assert response.status_code == 400 and "no calibration" in response.json()["error"]


@pytest.mark.lsl
def test_a_stream_lost_during_calibration_interrupts_keeps_the_trials_and_resumes(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    wizard, client, _ = served
    name, sid = f"wizard-amp-{uuid.uuid4().hex[:8]}", f"wizard-{uuid.uuid4().hex}"
    source = {"kind": "lsl", "name": name, "source_id": sid, "channels": 8, "srate": 250.0}
    amp = Amplifier(name, sid)
    try:
        session = Path(to_calibration(client, {**PATIENT, "source": source})["session_dir"])
        client.post("/api/calibration/start",
                    json={**FAST, "trials_per_class": 10}).raise_for_status()
        deadline = time.monotonic() + WAIT_S
        while wizard.run.cues.done < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        amp.close()
    wait_run_over(wizard)
    state = client.get("/api/state").json()
    run = state["calibration_runs"][0]
    assert run["outcome"] == "interrupted"
    assert "signal was lost" in run["message"] and "are saved" in run["message"]
    kept = run["done"]
    assert kept >= 2
    xdf = next((session / "calibration-01").glob("*_recording.xdf"))
    assert len(cues_in(xdf)) >= kept  # the cues of the complete trials are in the file
    records = read_audit_log(session / "audit.jsonl")
    assert any(r["event"] == "signal_stream_lost" for r in records)

    amp = Amplifier(name, sid)  # the amplifier is back: record what is missing
    try:
        client.post("/api/calibration/start", json=FAST).raise_for_status()
        wait_run_over(wizard)
    finally:
        amp.close()
    state = client.get("/api/state").json()
    assert state["calibration_runs"][1]["outcome"] == "completed"
    assert sum(state["recorded"].values()) == kept + 4


def test_a_session_left_mid_calibration_is_resumed_by_another_wizard(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    first = Wizard(root, min_good=0.1)
    server = ServerThread(create_app(first)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            session = Path(to_calibration(client, {**PATIENT, "subject": "P22"})["session_dir"])
            client.post("/api/channels/Pz", json={"bad": True})  # refused: past the check
            client.post("/api/calibration/start", json=FAST).raise_for_status()
            wait_run_over(first)
            kept = client.get("/api/state").json()["recorded"]
    finally:
        server.stop()
        first.close()  # the wizard was closed (or crashed) before training

    second = Wizard(root, min_good=0.1)
    server = ServerThread(create_app(second)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            listed = client.get("/api/unfinished", params={"subject": "P22"}).json()
            assert listed["sessions"] == [{"session": "ses-01", "step": "calibration",
                                           "paradigm": "mi", "recorded": kept,
                                           "in_use": False}]
            state = client.post("/api/resume", json={"subject": "P22",
                                                     "session": "ses-01"}).json()
            assert state["step"] == "signal"  # the electrodes are checked again
            assert state["session_dir"] == str(session)
            deadline = time.monotonic() + WAIT_S
            while not client.get("/api/quality").json()["channels"]:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            state = client.post("/api/signal/done", json={}).json()
            assert state["step"] == "calibration" and state["recorded"] == kept
            # a third wizard cannot take the session while this one has it
            assert client.get("/api/unfinished", params={"subject": "P22"}).json()[
                "sessions"][0]["in_use"] is True
            client.post("/api/calibration/start", json=FAST).raise_for_status()
            wait_run_over(second)
            state = client.get("/api/state").json()
            assert [r["folder"] for r in state["calibration_runs"]] == ["calibration-01",
                                                                        "calibration-02"]
            assert sum(state["recorded"].values()) == sum(kept.values()) + 4
            missing = client.post("/api/resume", json={"subject": "P22", "session": "ses-09"})
            assert missing.status_code == 409  # past step 1 already
    finally:
        server.stop()
        second.close()
    events = [r["event"] for r in read_audit_log(session / "audit.jsonl")]
    assert events.count("wizard_calibration_ended") == 2 and "wizard_resumed" in events


def test_sessions_that_cannot_be_resumed_say_why(tmp_path: Path) -> None:
    from bci_runtime.errors import ConfigError

    wizard = Wizard(tmp_path / "sessions")
    with pytest.raises(ConfigError, match="cannot be resumed"):
        wizard.resume("P23", "ses-01")
    done = tmp_path / "sessions" / "sub-P23" / "ses-02"
    done.mkdir(parents=True)
    (done / "wizard.json").write_text(json.dumps({"step": "done", "choice": PATIENT}))
    with pytest.raises(ConfigError, match="was finished"):
        wizard.resume("P23", "ses-02")
    assert wizard.unfinished_sessions("P23") == []
    with pytest.raises(ConfigError, match="BIDS label"):
        wizard.resume("P23", "../../etc")
    assert wizard.step == "patient"


def test_a_brainflow_board_is_calibrated_with_the_cue_schedule(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    pytest.importorskip("brainflow")
    wizard, client, _ = served
    patient = {**PATIENT, "subject": "P24",
               "source": {"kind": "brainflow", "name": "synthetic"}}  # BrainFlow's own code
    state = client.post("/api/patient", json=patient).json()
    assert state.get("step") == "signal", state
    deadline = time.monotonic() + WAIT_S
    while not client.get("/api/quality").json()["channels"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    state = client.post("/api/signal/done",
                        json={"override_reason": "synthetic board, a test"}).json()
    session = Path(state["session_dir"])
    client.post("/api/calibration/start", json=FAST).raise_for_status()
    wait_run_over(wizard)
    state = client.get("/api/state").json()
    assert state["calibration_runs"][0]["outcome"] == "completed"
    assert state["recorded"] == {"left": 2, "right": 2}
    xdf = next((session / "calibration-01").glob("*_recording.xdf"))
    streams, _ = pyxdf.load_xdf(str(xdf), synchronize_clocks=False, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    cues = [m[0] for m in by_name["cues.markers"]["time_series"] if m[0].startswith("cue/")]
    assert sorted(cues) == ["cue/left", "cue/left", "cue/right", "cue/right"]
    signal = by_name["eeg.signal"]
    # the board's samples span the cues (the trials' data are in the file)
    cue_t = by_name["cues.markers"]["time_stamps"]
    assert signal["time_stamps"][0] < cue_t.min() and signal["time_stamps"][-1] > cue_t.max()
