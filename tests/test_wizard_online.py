"""The wizard's training and online steps over HTTP, and a profile reloaded another day.

A real server, the simulator as the patient, real calibration runs on the live
clock, the real decoder training, the closed loop with a simulated stimulator
behind the safety envelope, and the session folders read back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyxdf
from wizard_helpers import feed, signal_checked, until
from wizard_helpers import serve as serve_wizard

from bci_runtime.audit_log import read_audit_log
from bci_runtime.web.wizard.profiles import load_profile
from bci_runtime.web.wizard.wizard import Wizard

PATIENT = {"subject": "P31", "paradigm": "mi", "classes": ["left", "right"],
           "source": {"kind": "simulator"}}
CALIBRATION = {"trials_per_class": 6, "fixation_s": 0.2, "cue_s": 2.5, "rest_s": 0.5}
FAST = {"trials_per_class": 2, "fixation_s": 0.2, "cue_s": 1.0, "rest_s": 0.5}

pytestmark = pytest.mark.slow


def serve(root: Path, **options: Any) -> Any:
    return serve_wizard(root, min_good=0.1, **options)


def calibrate(wizard: Wizard, client: httpx.Client, trials: dict[str, Any]) -> dict[str, Any]:
    client.post("/api/calibration/start", json=trials).raise_for_status()
    until(lambda: wizard.run is None, "the calibration's end")
    return client.get("/api/state").json()


def train(wizard: Wizard, client: httpx.Client) -> dict[str, Any]:
    state = client.post("/api/training/start", json={}).json()
    assert state.get("step") == "training", state
    until(lambda: wizard.training["state"] != "running", "the training's end")
    return client.get("/api/state").json()["training"]


def test_calibrate_train_go_online_and_continue_another_day(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    with serve(root) as (wizard, client, url):
        session = Path(signal_checked(client, PATIENT)["session_dir"])
        state = calibrate(wizard, client, CALIBRATION)
        assert state["recorded"] == {"left": 6, "right": 6}
        training = train(wizard, client)
        assert training["state"] == "done", training
        report = training["report"]
        assert report["good_enough"], report["reasons"]
        assert report["accuracy"] > report["chance_threshold"] > report["chance"] == 0.5
        assert sum(map(sum, report["confusion"]["matrix"])) == report["n_trials"] == 12
        titles = " ".join(p["title"] for p in report["patterns"])
        assert "signed r²" in titles and "CSP patterns" in titles
        profile = client.get("/api/state").json()["profile"]
        assert profile["origin"] == "training" and profile["decoder"] == "ts-lda"
        assert (session / training["folder"] / "report.json").is_file()

        state = client.post("/api/online/start", json={"stimulation": True}).json()
        assert state["step"] == "online" and state["run"]["kind"] == "online"
        said = feed(url, 6.0)
        decisions = [m for m in said if m["type"] == "decision"]
        assert decisions and decisions[-1]["classes"] == ["left", "right"]
        assert abs(sum(decisions[-1]["p"]) - 1.0) < 0.01
        statuses = [m for m in said if m["type"] == "status"]
        assert statuses and statuses[-1]["decoders"][0]["version"] == 1
        assert statuses[-1]["stimulators"][0]["state"] == "disarmed"  # off until armed

        assert client.post("/api/online/arm", json={}).json() == {"armed": {"stimulator": True}}
        until(lambda: client.get("/api/online/status").json()["status"]["stimulators"][0]
              ["state"] == "armed", "the stimulator armed")
        client.post("/api/online/estop", json={}).raise_for_status()
        until(lambda: client.get("/api/online/status").json()["status"]["stimulators"][0]
              ["state"] == "stopped", "the emergency stop")
        time.sleep(3)  # a few more cued trials, scored
        status = client.get("/api/online/status").json()["status"]
        assert status["feedback"][0]["decisions"] > 20
        assert status["feedback"][0]["accuracy"] > 0.6
        assert status["latency_ms"]["p50"] is not None

        state = client.post("/api/online/stop", json={}).json()
        assert state["step"] == "done"
        saved = state["saved_profile"]
        assert saved["origin"] == "online"
        events = [r["event"] for r in read_audit_log(session / "audit.jsonl")]
        for event in ("wizard_calibration_started", "wizard_calibration_ended",
                      "wizard_training_started", "wizard_trained", "wizard_online_started",
                      "wizard_arm", "armed", "wizard_emergency_stop", "emergency_stop",
                      "wizard_online_stop", "wizard_online_ended", "wizard_profile_saved",
                      "wizard_done"):
            assert event in events, event
        xdf = next((session / "online-01").glob("*_recording.xdf"))
        streams, _ = pyxdf.load_xdf(str(xdf), synchronize_clocks=False)
        names = {s["info"]["name"][0] for s in streams}
        assert {"decoder.decision", "decoder.model", "stimulator.safety"} <= names, sorted(names)

    # another day: the profile comes back, the loop starts without calibrating
    with serve(root) as (wizard, client, url):
        listed = client.get("/api/profiles", params={"subject": "P31"}).json()["profiles"]
        assert [p["id"] for p in listed][0] == saved["id"]  # newest first
        assert {p["origin"] for p in listed} == {"training", "online"}
        state = signal_checked(client, {**PATIENT, "profile": saved["id"]})
        assert state["step"] == "online" and state["profile_reused"]
        assert Path(state["session_dir"]).name == "ses-02"
        started = time.monotonic()
        client.post("/api/online/start", json={"stimulation": False}).raise_for_status()
        said = feed(url, 3.0)
        first = next(m for m in said if m["type"] == "decision")
        assert first and time.monotonic() - started < 10  # no calibration phase
        state = client.post("/api/online/stop", json={}).json()
        assert state["step"] == "done"
        events = [json.loads(line) for line in
                  (Path(state["session_dir"]) / "online-01" / "events.jsonl").read_text()
                  .splitlines()]
        online = next(e for e in events if e.get("event") == "model_online")
        assert online["source"] == "initial_model"
        # it started from the model the profile of the first day holds
        assert online["sha256"] == load_profile(root, "P31", saved["id"])["model"]["sha256"]


def test_too_few_trials_then_more_trials(tmp_path: Path) -> None:
    with serve(tmp_path / "sessions") as (wizard, client, _):
        signal_checked(client, {**PATIENT, "subject": "P32"})
        calibrate(wizard, client, FAST)
        training = train(wizard, client)
        assert training["state"] == "failed"
        assert "only 2 trials" in training["error"] and "kept" in training["hint"]
        refused = client.post("/api/online/start", json={"stimulation": False})
        assert refused.status_code == 400 and "no trained decoder" in refused.json()["error"]
        assert client.post("/api/training/more", json={}).json()["step"] == "calibration"
        state = calibrate(wizard, client, {**FAST, "trials_per_class": 3})
        assert state["recorded"] == {"left": 5, "right": 5}  # both runs count
        training = train(wizard, client)
        assert training["state"] == "done", training
        assert training["report"]["n_trials"] == 10
        assert len(training["report"]["recordings"]) == 2


def test_a_decoder_at_chance_goes_online_only_with_a_reason(tmp_path: Path) -> None:
    # a simulated patient whose rhythm does not change with the imagined movement
    with serve(tmp_path / "sessions", sim_params={"erd": 0.0}) as (wizard, client, _):
        session = Path(signal_checked(client, {**PATIENT, "subject": "P33"})["session_dir"])
        calibrate(wizard, client, {**FAST, "trials_per_class": 6})
        training = train(wizard, client)
        report = training["report"]
        assert not report["good_enough"]
        assert any("chance" in r for r in report["reasons"])
        refused = client.post("/api/online/start", json={"stimulation": False})
        assert refused.status_code == 400
        assert "not good enough" in refused.json()["error"]
        assert "with a reason" in refused.json()["hint"]
        state = client.post("/api/online/start", json={
            "stimulation": False, "override_reason": "to show the patient the feedback"}).json()
        assert state["step"] == "online"
        client.post("/api/online/stop", json={}).raise_for_status()
        override = [r for r in read_audit_log(session / "audit.jsonl")
                    if r["event"] == "wizard_online_override"]
        assert override[0]["reason"] == "to show the patient the feedback"


def test_ssvep_calibrates_trains_and_goes_online(tmp_path: Path) -> None:
    with serve(tmp_path / "sessions") as (wizard, client, url):
        state = signal_checked(client, {"subject": "P34", "paradigm": "ssvep",
                                        "freqs": [10.0, 15.0], "source": {"kind": "simulator"}})
        assert state["classes"] == ["10Hz", "15Hz"]
        state = calibrate(wizard, client, {"trials_per_class": 5, "fixation_s": 0.2,
                                           "cue_s": 2.0, "rest_s": 0.5})
        assert state["recorded"] == {"10Hz": 5, "15Hz": 5}
        training = train(wizard, client)
        assert training["state"] == "done", training
        report = training["report"]
        assert report["decoder"] == "ssvep-ensemble" and report["good_enough"], report
        assert report["freqs"] == {"10Hz": 10.0, "15Hz": 15.0}
        client.post("/api/online/start", json={"stimulation": False}).raise_for_status()
        decisions = [m for m in feed(url, 3.0) if m["type"] == "decision"]
        assert decisions and sorted(decisions[-1]["classes"]) == ["10Hz", "15Hz"]
        assert client.post("/api/online/stop", json={}).json()["step"] == "done"
