"""The whole calibration wizard in a real browser, against the simulated patient.

Debian's Chromium (headless, through Playwright) on a laptop screen walks every
step: patient (partly by keyboard), signal check, a calibration run with the
page reloaded in its middle, training and its report, the closed loop with the
stimulator armed and stopped by the Escape key, and the saved profile. At each
step the page is checked for script errors, unnamed form fields, the focus on
the new step's heading and a horizontal scroll bar. Screenshots are kept in
``test-artifacts/wizard/e2e-*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wizard_helpers import serve

from bci_runtime.audit_log import read_audit_log
from bci_runtime.web.wizard.choices import PatientChoice
from bci_runtime.web.wizard.wizard import Wizard

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "wizard"
VIEWPORT = {"width": 1366, "height": 768}  # a laptop screen
CALIBRATION = {"trials-per-class": "6", "fixation-s": "0.2", "cue-s": "2.5", "rest-s": "0.5"}
SHORT_MS = 15_000
RUN_MS = 90_000  # a calibration run (12 trials of 3.2 s) or the training, on a busy machine
ARROWS = {"\u2190": "Left hand", "\u2192": "Right hand"}

# what a page must be at every step: run in the page, returns the problems it sees
PAGE_PROBLEMS = """() => {
  const problems = [];
  const visible = (el) => el.getClientRects().length > 0 &&
    getComputedStyle(el).visibility !== "hidden";
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (!visible(el) || el.type === "hidden") continue;
    const labelled = [...(el.labels || [])].some((l) => l.textContent.trim()) ||
      (el.getAttribute("aria-label") || "").trim() ||
      (el.getAttribute("aria-labelledby") || "").split(/\\s+/).some(
        (id) => id && document.getElementById(id) &&
                document.getElementById(id).textContent.trim());
    if (!labelled) problems.push(`no accessible name: ${el.outerHTML.slice(0, 120)}`);
  }
  const slip = document.body.innerText.match(/\\b(undefined|NaN|null)\\b|\\[object /);
  if (slip) problems.push(`"${slip[0]}" on the page`);
  const width = window.innerWidth;
  if (document.documentElement.scrollWidth > width) {
    problems.push(`horizontal scroll: ${document.documentElement.scrollWidth} > ${width}`);
  }
  for (const el of document.body.querySelectorAll("*")) {
    if (!visible(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1) {
      problems.push(`wider than the screen: <${el.tagName.toLowerCase()} id="${el.id}"> ` +
                    `${box.left.toFixed(0)}..${box.right.toFixed(0)}`);
    }
  }
  return problems;
}"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Wizard, str]]:
    with serve(tmp_path / "sessions", min_good=0.1) as (wizard, _, url):
        yield wizard, url


def open_page(browser: Any) -> tuple[Any, Any, list[str]]:
    """A laptop-sized page whose script errors, console errors and failed requests are kept."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.set_default_timeout(SHORT_MS)
    return context, page, problems


def check_page(page: Any, problems: list[str], step: str, *, focused: bool = True) -> None:
    """The checks of every step: no script error, named fields, focus, no horizontal scroll."""
    from playwright.sync_api import expect

    expect(page.locator("#message")).to_be_empty()  # where the page says what went wrong
    expect(page.locator(f"#step-{step}")).to_be_visible()
    if focused:  # a screen reader hears the new step's title
        expect(page.locator(f"#{step}-title")).to_be_focused()
    seen = page.evaluate(PAGE_PROBLEMS)
    assert seen == [], f"at step {step}: {seen}"
    assert problems == [], f"at step {step}: {problems}"


def cue_on_stage(page: Any) -> tuple[str, str]:
    """Wait for an arrow on the stage; it and what the screen reader is told."""
    found = page.wait_for_function(
        """() => {
          const arrow = document.getElementById("stage").textContent.trim();
          const said = document.getElementById("cue-text").textContent;
          return /^[\\u2190\\u2192]$/.test(arrow) && said !== "Rest" ? [arrow, said] : null;
        }""", timeout=SHORT_MS).json_value()
    return found[0], found[1]


def shot(page: Any, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"e2e-{name}.png"), full_page=full_page)


@pytest.mark.browser
@pytest.mark.slow
def test_every_step_of_the_wizard_in_a_browser(served: tuple[Wizard, str],
                                               browser: Any) -> None:
    from playwright.sync_api import expect

    wizard, url = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, problems = open_page(browser)
    try:
        # -- 1. patient: typed, a class ticked and unticked by keyboard, Enter submits --
        page.goto(url)
        check_page(page, problems, "patient", focused=False)
        page.get_by_label("Subject id").click()
        page.keyboard.type("P41")
        for _ in range(4):  # the paradigm, then Left hand, Right hand, Feet
            page.keyboard.press("Tab")
        expect(page.get_by_label("Feet")).to_be_focused()
        page.keyboard.press("Space")
        expect(page.get_by_label("Feet")).to_be_checked()
        page.keyboard.press("Space")  # two classes after all
        expect(page.get_by_label("Feet")).not_to_be_checked()
        expect(page.get_by_label("Left hand")).to_be_checked()
        expect(page.get_by_label("Right hand")).to_be_checked()
        shot(page, "1-patient")
        page.get_by_label("Subject id").press("Enter")
        expect(page.locator("#step-signal")).to_be_visible()

        # -- 2. signal check ---------------------------------------------------------
        expect(page.locator("#quality tbody tr")).to_have_count(8)
        for status in page.locator("#quality tbody td[id^=status-]").all():
            expect(status).to_have_text(re.compile(r"^(good|bad)$"))
        expect(page.locator("#signal-verdict")).to_contain_text("channels")
        check_page(page, problems, "signal")
        shot(page, "2-signal")
        assert wizard.choice is not None and wizard.choice.classes == ["left", "right"]
        page.get_by_role("button", name="Continue to calibration").click()

        # -- 3. calibration, the page reloaded in the middle of the run ----------------
        check_page(page, problems, "calibration")
        for field, value in CALIBRATION.items():
            page.locator(f"#{field}").fill(value)
        shot(page, "3-calibration")
        page.get_by_role("button", name="Start the calibration").click()
        expect(page.locator("#stage-box")).to_be_visible()
        arrow, said = cue_on_stage(page)
        assert said == ARROWS[arrow], (arrow, said)
        assert page.locator("#stage").get_attribute("aria-label") == said
        shot(page, "3b-cue")
        check_page(page, problems, "calibration", focused=False)
        expect(page.locator("#run-progress-label")).to_have_text(
            re.compile(r"^[1-9]\d* of 12 trials recorded$"), timeout=SHORT_MS)
        # the trials recorded so far follow the run, not only its end
        expect(page.locator("#recorded")).to_have_text(
            re.compile(r"^Trials recorded so far: left \d, right \d\.$"))
        assert sum(map(int, re.findall(r"\d", page.locator("#recorded").inner_text()))) > 0
        arrow, _ = cue_on_stage(page)  # the next trial's cue, just drawn
        cue_seen = time.monotonic()
        done_before = wizard.run.cues.done  # type: ignore[union-attr]
        assert 0 < done_before < 12

        page.reload()  # the browser closed and opened again mid-run: nothing is lost
        expect(page.locator("#stage-box")).to_be_visible()
        if time.monotonic() - cue_seen < 2.0:  # the 2.5 s cue is still on: drawn at once
            assert page.locator("#stage").inner_text().strip() == arrow
        check_page(page, problems, "calibration")
        expect(page.locator("#calibration-stop")).to_be_visible()
        expect(page.get_by_role("button", name="Start the calibration")).to_be_hidden()
        expect(page.locator("#run-progress-label")).to_have_text(
            re.compile(r"^\d+ of 12 trials recorded$"))
        label = page.locator("#run-progress-label").text_content() or ""
        assert int(label.split()[0]) >= done_before, label
        assert page.locator("#run-progress").evaluate("p => p.max") == 12
        expect(page.locator("#stage")).to_have_text(re.compile("^[\u2190\u2192+]$"))
        for field, value in CALIBRATION.items():  # the settings of the run under way
            expect(page.locator(f"#{field}")).to_have_value(value)
            expect(page.locator(f"#{field}")).to_be_disabled()
        shot(page, "3c-reloaded")

        expect(page.get_by_role("button", name="Train the decoder")).to_be_visible(
            timeout=RUN_MS)
        assert wizard.recorded_trials() == {"left": 6, "right": 6}
        assert wizard.calibration_runs[-1]["outcome"] == "completed"
        expect(page.locator("#recorded")).to_have_text(
            "Trials recorded so far: left 6, right 6.")
        expect(page.locator("#stage-box")).to_be_hidden()
        check_page(page, problems, "calibration", focused=False)
        shot(page, "3d-calibrated")

        # -- 4. training -------------------------------------------------------------
        page.get_by_role("button", name="Train the decoder").click()
        check_page(page, problems, "training")
        expect(page.locator("#verdict")).to_contain_text("Good enough to go online",
                                                         timeout=RUN_MS)
        heads = page.locator("#confusion thead th").all_text_contents()
        assert heads[1:] == ["left", "right"], heads
        assert page.locator("#confusion tbody th").all_text_contents() == ["left", "right"]
        counts = [int(n) for n in page.locator("#confusion tbody td").all_text_contents()]
        assert len(counts) == 4 and sum(counts) == 12, counts
        page.wait_for_function("""() => [...document.querySelectorAll("#patterns img")]
                                  .some((img) => img.complete && img.naturalWidth > 0)""")
        for img in page.locator("#patterns img").all():
            assert (img.get_attribute("alt") or "").strip()
        check_page(page, problems, "training")
        shot(page, "4-training", full_page=True)

        # -- 5. online: stimulation ticked, armed, stopped by Escape, saved ------------
        page.get_by_role("checkbox", name=re.compile("^Closed-loop stimulation")).check()
        page.get_by_role("button", name="Go online").click()
        check_page(page, problems, "online")
        expect(page.locator("#decision .class-row")).to_have_count(2)
        for c in ("left", "right"):
            expect(page.locator(f"#pv-{c}")).to_have_text(re.compile(r"^\d+%$"))
        expect(page.locator("#fig-version")).to_have_text(re.compile(r"^v1\b"))
        expect(page.locator("#fig-latency")).to_have_text(
            re.compile(r"^p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms"))
        expect(page.locator("#fig-signal")).to_contain_text("Hz")
        expect(page.locator("#fig-stim")).to_have_text(re.compile("^disarmed"))
        expect(page.locator("#fig-accuracy")).to_have_text(
            re.compile(r"^\d+% of \d+ decisions$"), timeout=SHORT_MS * 2)
        check_page(page, problems, "online")
        # on a laptop screen the emergency stop is in sight, the cues under the step's title
        estop = page.get_by_role("button", name="Emergency stop (Esc)").bounding_box()
        assert estop is not None and estop["y"] + estop["height"] <= VIEWPORT["height"]
        title = page.locator("#online-title").bounding_box()
        stage = page.locator("#stage").bounding_box()
        assert title is not None and stage is not None and title["y"] < stage["y"]
        meter = page.locator("#p-left").bounding_box()
        assert meter is not None and meter["width"] > 300, meter  # a meter one can read
        shot(page, "5-online")

        page.get_by_role("button", name="Arm stimulation").click()
        expect(page.locator("#fig-stim")).to_have_text(re.compile("^armed;"))
        expect(page.get_by_role("button", name="Arm stimulation")).to_be_hidden()
        shot(page, "5b-armed")
        page.keyboard.press("Escape")  # the emergency stop, as on the operator console
        expect(page.locator("#fig-stim")).to_have_text(re.compile("^stopped;"))
        status = wizard.online_status()
        assert status is not None and status["stimulators"][0]["state"] == "stopped"
        check_page(page, problems, "online", focused=False)
        shot(page, "5c-stopped")
        # the loop goes on without stimulation: a few cued trials, scored
        expect(page.locator("#fig-accuracy")).to_have_text(
            re.compile(r"^\d+% of ([4-9]\d|\d{3,}) decisions$"), timeout=SHORT_MS * 2)

        page.get_by_role("button", name="Stop and save").click()
        check_page(page, problems, "done")
        saved = wizard.saved_profile
        assert saved is not None and saved["origin"] == "online"
        expect(page.locator("#done-text")).to_contain_text(f"profile {saved['id']}")
        expect(page.locator('#steps li[data-step="done"]')).to_have_attribute(
            "aria-current", "step")
        shot(page, "6-done")
        assert problems == []
    finally:
        context.close()

    # -- 7. every step in the session's audit trail ----------------------------------
    assert wizard.session_dir is not None
    events = [r["event"] for r in read_audit_log(wizard.session_dir / "audit.jsonl")]
    for event in ("wizard_patient", "wizard_signal_checked", "wizard_calibration_started",
                  "wizard_calibration_ended", "wizard_trained", "wizard_online_started",
                  "wizard_arm", "wizard_emergency_stop", "wizard_done"):
        assert event in events, event
    order = [events.index(e) for e in ("wizard_patient", "wizard_signal_checked",
                                       "wizard_calibration_started", "wizard_trained",
                                       "wizard_online_started", "wizard_arm",
                                       "wizard_emergency_stop", "wizard_done")]
    assert order == sorted(order), events


@pytest.mark.browser
def test_a_session_left_open_is_resumed_from_the_first_page(tmp_path: Path,
                                                            browser: Any) -> None:
    from playwright.sync_api import expect

    root = tmp_path / "sessions"
    first = Wizard(root, min_good=0.1)  # a wizard closed at the calibration step
    try:
        first.choose_patient(PatientChoice(subject="P42", paradigm="mi",
                                           source={"kind": "simulator"}))
        deadline = time.monotonic() + 30
        while not first.quality()["channels"]:
            assert time.monotonic() < deadline, "no signal quality"
            time.sleep(0.2)
        first.mark_channel("Pz", True)
        first.finish_signal_check()
    finally:
        first.close()

    with serve(root, min_good=0.1) as (_, _, url):
        page = browser.new_page(viewport=VIEWPORT)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.set_default_timeout(SHORT_MS)
        page.goto(url)
        page.get_by_label("Subject id").fill("P42")
        resume = page.get_by_role("button", name="Resume ses-01")
        expect(resume).to_be_visible()
        expect(page.locator("#unfinished-list")).to_contain_text("left at calibration")
        shot(page, "resume-1-offered")
        resume.click()
        check_page(page, problems, "signal")  # the electrodes are checked again
        expect(page.get_by_label("Leave out Pz")).to_be_checked()  # the marks are kept
        page.get_by_role("button", name="Continue to calibration").click()
        check_page(page, problems, "calibration")
        shot(page, "resume-2-calibration")
        page.close()
    session = root / "sub-P42" / "ses-01"
    events = [r["event"] for r in read_audit_log(session / "audit.jsonl")]
    assert events.count("wizard_signal_checked") == 2 and "wizard_resumed" in events
    assert not (root / "sub-P42" / "ses-02").exists()  # the same session, not a new one
