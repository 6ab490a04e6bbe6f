"""The wizard's continuous-cursor paradigm over HTTP: calibrate, train, co-adapt online, reload.

A real server, the simulated ECoG patient on the live clock: an open-loop
calibration (the cursor follows the patient's intention), the continuous
decoder's training (blocked cross-validated R² against shifted-label chance),
the closed loop where the decoded velocity moves the cursor and CLDA updates
the decoder every second, and the co-adapted model reloaded another day.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyxdf
from wizard_helpers import Amplifier, feed, signal_checked, until
from wizard_helpers import serve as serve_wizard

from bci_runtime.audit_log import read_audit_log
from bci_runtime.web.wizard.wizard import Wizard

PATIENT = {"subject": "C07", "paradigm": "cursor", "source": {"kind": "simulator"}}
CALIBRATION = {"cursor_s": 20}

pytestmark = pytest.mark.slow


def calibrate_and_train(wizard: Wizard, client: httpx.Client, url: str
                        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    state = client.post("/api/calibration/start", json=CALIBRATION).json()
    assert state["run"]["kind"] == "calibration", state
    said = feed(url, 3.0)
    until(lambda: wizard.run is None, "the calibration's end")
    state = client.post("/api/training/start", json={}).json()
    assert state.get("step") == "training", state
    until(lambda: wizard.training["state"] != "running", "the training's end")
    return said, client.get("/api/state").json()


def test_cursor_calibrate_train_co_adapt_online_and_continue_another_day(
        tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    with serve_wizard(root, min_good=0.1) as (wizard, client, url):
        session = Path(signal_checked(client, PATIENT)["session_dir"])
        said, state = calibrate_and_train(wizard, client, url)
        # the page follows the cursor and its target while the calibration records
        cursor = [m for m in said if m["type"] == "cursor"]
        assert len(cursor) > 30 and all(len(m["cursor"]) == 2 for m in cursor)
        assert max(m["seconds"] for m in cursor) > 1.0
        run = state["calibration_runs"][0]
        assert run["outcome"] == "completed" and run["cursor"]["seconds"] >= 19.0
        assert run["cursor"]["hits"] >= 4  # open loop: the cursor goes to each target
        assert state["recorded_cursor"]["seconds"] >= 19.0
        streams, _ = pyxdf.load_xdf(run["recording"])
        names = {s["info"]["name"][0] for s in streams}
        assert {"eeg.signal", "eeg.truth", "eeg.markers"} <= names

        training = state["training"]
        assert training["state"] == "done", training
        report = training["report"]
        assert report["paradigm"] == "cursor" and report["good_enough"], report["reasons"]
        assert report["r2"] > max(report["chance_r2"], 0.3)
        assert {p["title"] for p in report["patterns"]}
        profile = state["profile"]
        assert profile["paradigm"] == "cursor" and profile["decoder"] == "kalman"
        assert profile["adapt"] == "rml"

        state = client.post("/api/online/start", json={}).json()
        assert state["step"] == "online" and state["run"]["kind"] == "online"
        said = feed(url, 12.0)
        cursor = [m for m in said if m["type"] == "cursor"]
        assert cursor, [m["type"] for m in said]
        status = client.get("/api/online/status").json()
        decoder = status["status"]["decoders"][0]
        assert decoder["version"] > 5 and decoder["updates"] > 5  # CLDA: about one a second
        live = status["status"]["run"]["cursor"]
        assert live["hits"] >= 2  # the decoded velocity reaches targets
        assert live["r2_last_minute"] is not None and live["r2_last_minute"] > 0.3
        assert status["status"]["latency_ms"]["p50"] is not None  # where the velocity leaves
        state = client.post("/api/online/stop", json={}).json()
        assert state["step"] == "done"
        saved = state["saved_profile"]
        assert saved["origin"] == "online" and saved["paradigm"] == "cursor"
        online_dir = session / state["online_runs"][0]["folder"]
        events = [json.loads(line) for line in
                  (online_dir / "events.jsonl").read_text().splitlines()]
        online = next(e for e in events if e["event"] == "model_online")
        assert online["source"] == "initial_model" and online["sha256"] == \
            profile_sha(root, "C07", profile["id"])
        last = [e["version"] for e in events if e["event"] == "model_update"][-1]
        manifest = json.loads((online_dir / "models" / "decoder" / "models.json").read_text())
        assert str(last) in manifest["versions"]  # the saved profile is the last served
        audit = [e["event"] for e in read_audit_log(session / "audit.jsonl")]
        assert "wizard_trained" in audit and "wizard_profile_saved" in audit

    # another day: the co-adapted profile goes straight online, adaptation goes on from it
    with serve_wizard(root, min_good=0.1) as (wizard, client, url):
        state = signal_checked(client, {**PATIENT, "profile": saved["id"]})
        assert state["step"] == "online", state["step"]
        state = client.post("/api/online/start", json={}).json()
        time.sleep(6.0)
        status = client.get("/api/online/status").json()
        assert status["status"]["decoders"][0]["updates"] >= 2
        state = client.post("/api/online/stop", json={}).json()
        events = [json.loads(line) for line in (Path(state["session_dir"]) / state[
            "online_runs"][0]["folder"] / "events.jsonl").read_text().splitlines()]
        online = next(e for e in events if e["event"] == "model_online")
        assert online["sha256"] == saved_sha(root, "C07", saved["id"])


def profile_sha(root: Path, subject: str, profile_id: str) -> str:
    path = root / f"sub-{subject}" / "profiles" / profile_id / "profile.json"
    return json.loads(path.read_text())["model"]["sha256"]


saved_sha = profile_sha


def test_a_cursor_decoder_at_chance_needs_a_reason_to_go_online(tmp_path: Path) -> None:
    untuned = {"tuned_fraction": 0.0, "lfp_uv": 0.0}
    with serve_wizard(tmp_path / "sessions", min_good=0.1, sim_params=untuned) as (
            wizard, client, url):
        signal_checked(client, PATIENT)
        _, state = calibrate_and_train(wizard, client, url)
        report = state["training"]["report"]
        assert not report["good_enough"] and not report["above_chance"]
        assert any("chance" in r for r in report["reasons"])
        refused = client.post("/api/online/start", json={})
        assert refused.status_code == 400 and "not good enough" in refused.json()["error"]
        state = client.post("/api/online/start", json={
            "override_reason": "trying the loop to train the patient"}).json()
        assert state["step"] == "online"
        client.post("/api/online/stop", json={}).raise_for_status()


@pytest.mark.lsl
def test_a_real_stream_is_calibrated_with_the_center_out_task_then_steers_it(
        tmp_path: Path) -> None:
    """A real patient's path: the center_out task moves the cursor, then the decoder does.

    The amplifier streams noise, so the decoder is at chance and goes online only
    with a reason; what is checked is the wiring a real ECoG patient goes through.
    """
    name, sid = f"wizard-ecog-{uuid.uuid4().hex[:8]}", f"wizard-{uuid.uuid4().hex}"
    source = {"kind": "lsl", "name": name, "source_id": sid, "channels": 8, "srate": 500.0}
    amp = Amplifier(name, sid, kind="ECoG", srate=500.0)
    try:
        with serve_wizard(tmp_path / "sessions", min_good=0.1) as (wizard, client, url):
            signal_checked(client, {**PATIENT, "source": source})
            _, state = calibrate_and_train(wizard, client, url)
            run = state["calibration_runs"][0]
            assert run["cursor"]["hits"] >= 4  # the task moved the cursor to each target
            streams, _ = pyxdf.load_xdf(run["recording"])
            task = next(s for s in streams if s["info"]["name"][0] == "task.cursor")
            labels = [c["label"][0] for c in
                      task["info"]["desc"][0]["channels"][0]["channel"]]
            assert labels[-2:] == ["vx", "vy"]
            assert state["training"]["state"] == "done", state["training"]
            report = state["training"]["report"]
            assert report["features"].startswith("log power 70-150 Hz")  # ECoG: high gamma
            assert not report["good_enough"]
            state = client.post("/api/online/start", json={
                "override_reason": "noise amplifier: checking the wiring"}).json()
            assert state["step"] == "online"
            time.sleep(6.0)
            status = client.get("/api/online/status").json()["status"]
            assert status["decoders"][0]["updates"] >= 2  # ReFIT labels from the task
            assert status["run"]["cursor"]["r2_last_minute"] is None  # intention unknown
            state = client.post("/api/online/stop", json={}).json()
            assert state["step"] == "done" and state["saved_profile"]["paradigm"] == "cursor"
    finally:
        amp.close()
