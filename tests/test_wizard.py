"""The calibration wizard's first steps over HTTP, and in a real browser.

The wizard runs its real server (uvicorn on 127.0.0.1) with the simulator as the
patient; requests go through httpx, live traces through a WebSocket client, and
the browser test walks the steps in Debian's Chromium, keeping a screenshot of
each step under ``test-artifacts/wizard/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wizard_helpers import serve

from bci_runtime.audit_log import read_audit_log
from bci_runtime.errors import ConfigError
from bci_runtime.web.wizard.session_lock import SessionLock
from bci_runtime.web.wizard.wizard import Wizard

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "wizard"
PATIENT = {"subject": "P07", "paradigm": "mi", "classes": ["left", "right"],
           "source": {"kind": "simulator"}}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Wizard, httpx.Client, str]]:
    with serve(tmp_path / "sessions", min_good=0.75) as served:
        yield served


def quality_when_ready(client: httpx.Client) -> dict[str, Any]:
    """The first quality verdict once the monitor has a full window of signal."""
    deadline = time.monotonic() + 30
    while True:
        q = client.get("/api/quality").json()
        if q["channels"] and all(c["std_uv"] is not None for c in q["channels"]):
            return q
        if time.monotonic() > deadline:
            raise AssertionError(f"no quality after 30 s: {q}")
        time.sleep(0.2)


def test_patient_then_signal_check_then_on(served: tuple[Wizard, httpx.Client, str]) -> None:
    wizard, client, _ = served
    assert client.get("/api/state").json()["step"] == "patient"
    state = client.post("/api/patient", json=PATIENT).json()
    assert state["step"] == "signal" and len(state["channels"]) == 8
    session = Path(state["session_dir"])
    assert session.name == "ses-01" and session.parent.name == "sub-P07"

    q = quality_when_ready(client)
    assert q["enough"], q  # the simulator's electrodes are all on
    assert {c["status"] for c in q["channels"]} == {"good"}
    client.post("/api/channels/Pz", json={"bad": True}).raise_for_status()
    q = client.get("/api/quality").json()
    assert [c["name"] for c in q["channels"] if not c["usable"]] == ["Pz"]
    state = client.post("/api/signal/done", json={}).json()
    assert state["step"] == "calibration" and state["bad_channels"] == ["Pz"]
    # the page, reloaded, finds the wizard where it is
    assert client.get("/api/state").json()["step"] == "calibration"

    events = [r["event"] for r in read_audit_log(session / "audit.jsonl")]
    assert events == ["wizard_patient", "wizard_mark_channel", "wizard_signal_checked"]


def test_live_traces_come_over_the_websocket(served: tuple[Wizard, httpx.Client, str]) -> None:
    from websockets.sync.client import connect

    wizard, client, url = served
    client.post("/api/patient", json=PATIENT).raise_for_status()
    with connect(url.replace("http://", "ws://") + "ws/signal") as socket:
        deadline = time.monotonic() + 30
        while True:
            message = json.loads(socket.recv(timeout=10))
            if message["uv"] and len(message["uv"][0]) > 100:
                break
            assert time.monotonic() < deadline
    assert message["type"] == "traces" and message["channels"][0] == "C3"
    assert len(message["uv"]) == 8 and message["srate"] == 250.0
    # simulated EEG in µV: tens of µV, not volts and not zero
    assert 1.0 < max(abs(v) for v in message["uv"][0]) < 500.0


@pytest.mark.parametrize("change, words", [
    ({"subject": "John Smith"}, "pseudonymous"),
    ({"classes": ["left"]}, "2 to 4 distinct classes"),
    ({"classes": ["left", "elbow"]}, "2 to 4 distinct classes"),
    ({"source": {"kind": "lsl"}}, "name, channel count and rate"),
    ({"paradigm": "p300"}, "paradigm"),
])
def test_bad_choices_get_a_clear_message(served: tuple[Wizard, httpx.Client, str],
                                         change: dict, words: str) -> None:
    _, client, _ = served
    response = client.post("/api/patient", json={**PATIENT, **change})
    assert response.status_code == 400 and words in response.json()["error"]
    assert client.get("/api/state").json()["step"] == "patient"  # nothing was started


def test_too_few_good_channels_stop_unless_overridden_with_a_reason(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    wizard, client, _ = served
    state = client.post("/api/patient", json=PATIENT).json()
    quality_when_ready(client)
    for name in ("C3", "C4", "Cz"):  # 5 of 8 left: below 75 %
        client.post(f"/api/channels/{name}", json={"bad": True}).raise_for_status()
    refused = client.post("/api/signal/done", json={})
    assert refused.status_code == 400 and "only 5 of 8" in refused.json()["error"]
    assert "override" in refused.json()["hint"]
    ok = client.post("/api/signal/done", json={"override_reason": "C3/C4 gel bridged, "
                                                                   "research session"})
    assert ok.json()["step"] == "calibration"
    records = read_audit_log(Path(state["session_dir"]) / "audit.jsonl")
    override = [r for r in records if r["event"] == "wizard_override"]
    assert override and override[0]["reason"].startswith("C3/C4 gel")


def test_a_step_out_of_order_is_refused(served: tuple[Wizard, httpx.Client, str]) -> None:
    _, client, _ = served
    response = client.get("/api/quality")
    assert response.status_code == 409 and "step 'patient'" in response.json()["error"]


def test_two_wizards_cannot_open_one_session(tmp_path: Path) -> None:
    lock = SessionLock(tmp_path)
    try:
        with pytest.raises(ConfigError, match="another calibration wizard"):
            SessionLock(tmp_path)
    finally:
        lock.release()
    SessionLock(tmp_path).release()  # free again once released


def test_requests_from_another_host_name_are_refused(
        served: tuple[Wizard, httpx.Client, str]) -> None:
    _, client, _ = served
    response = client.get("/api/state", headers={"Host": "evil.example:80"})
    assert response.status_code == 400


@pytest.mark.browser
@pytest.mark.slow
def test_the_wizard_in_a_browser(served: tuple[Wizard, httpx.Client, str], browser: Any) -> None:
    from playwright.sync_api import expect

    wizard, client, url = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.set_default_timeout(30000)
    page.goto(url)
    expect(page.locator("#step-patient")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "1-patient.png"))

    # keyboard only: the subject id, then Enter submits the form
    page.get_by_label("Subject id").fill("Jane Doe")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("pseudonymous")
    page.get_by_label("Subject id").fill("P12")
    page.get_by_label("Feet").check()
    page.get_by_role("button", name="Start the signal check").click()
    expect(page.locator("#step-signal")).to_be_visible()
    expect(page.locator("#step-patient")).to_be_hidden()  # one step on screen at a time
    expect(page.locator("#status-C3")).to_have_text("good")
    expect(page.locator("#signal-verdict")).to_contain_text("8 of 8 channels are good")
    page.screenshot(path=str(ARTIFACTS / "2-signal-check.png"))

    page.reload()  # the browser closed and opened again: the wizard is where it was
    expect(page.locator("#step-signal")).to_be_visible()
    for name in ("C3", "C4", "Cz"):
        page.get_by_label(f"Leave out {name}").check()
    expect(page.locator("#signal-verdict")).to_contain_text("only 5 of 8")
    page.get_by_role("button", name="Continue to calibration").click()
    expect(page.locator("#message")).to_contain_text("only 5 of 8")
    page.get_by_label("Go on anyway: why?").fill("bridged gel on C3/C4, research session")
    page.get_by_role("button", name="Continue to calibration").click()
    expect(page.locator("#step-calibration")).to_be_visible()
    expect(page.locator('#steps li[data-step="calibration"]')).to_have_attribute(
        "aria-current", "step")
    page.screenshot(path=str(ARTIFACTS / "3-calibration.png"))
    assert problems == []
    assert wizard.choice.classes == ["left", "right", "feet"]
    assert wizard.override == "bridged gel on C3/C4, research session"


def test_bci_calibrate_serves_until_ctrl_c(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    bci = Path(sys.executable).with_name("bci")
    proc = subprocess.Popen([str(bci), "calibrate", "--json", "--sessions-root",
                             str(tmp_path), "--sim-param", "erd=0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
        assert started["url"].startswith("http://127.0.0.1:")
        state = httpx.get(started["url"] + "api/state", timeout=10).json()
        assert state["step"] == "patient"
        page = httpx.get(started["url"], timeout=10)
        assert "Calibration wizard" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("args, words", [
    (["--sim-param", "erd"], "not KEY=VALUE"),
    (["--sim-param", "erd=5"], "less than or equal to 0.9"),
    (["--sim-param", "elbow=1"], "unknown key 'elbow'"),
    (["--stim-limits", "/nonexistent.yaml"], "no such file"),
])
def test_bci_calibrate_refuses_bad_options_before_serving(tmp_path: Path, args: list[str],
                                                          words: str) -> None:
    import subprocess
    import sys

    bci = Path(sys.executable).with_name("bci")
    done = subprocess.run([str(bci), "calibrate", "--json", "--sessions-root", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and '"url"' not in done.stdout  # it never served
    assert words in done.stdout + done.stderr  # with --json the error is JSON on stdout
