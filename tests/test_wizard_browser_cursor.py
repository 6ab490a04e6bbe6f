"""The wizard's continuous-cursor paradigm in a real browser, against the simulated ECoG patient.

Debian's Chromium (headless, through Playwright) on a laptop screen: the paradigm
picked by keyboard, the signal check of the 32-contact grid, a 20 s open-loop
calibration drawn live on the cursor canvas, the training's R² report, a few
seconds of the closed loop with the decoder adapting, and the saved profile. At
each step the checks of ``test_wizard_browser.py`` (script errors, named fields,
focus on the step's heading, no horizontal scroll). Screenshots are kept in
``test-artifacts/wizard/cursor-*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_wizard_browser import ARTIFACTS, RUN_MS, SHORT_MS, VIEWPORT, check_page, open_page
from wizard_helpers import serve

from bci_runtime.web.wizard.wizard import Wizard

CALIBRATION_S = 20
ONLINE_S = 8.0

# what the cursor canvas shows: its white cursor and amber (or green) target pixels
CANVAS_INK = """() => {
  const canvas = document.getElementById("cursor-canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let cursor = 0, target = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 200 && r > 240 && g > 240 && b > 240) cursor++;
    else if (a > 200 && ((r > 220 && g > 140 && b < 40) ||  // amber, or green: dwelling
                         (r < 80 && g > 150 && b < 110))) target++;
  }
  return {cursor, target, width: canvas.width, height: canvas.height};
}"""

# how often the screen reader's cursor status changes: counted for a while
COUNT_SAID = """() => {
  window.cursorSaidChanges = 0;
  new MutationObserver(() => { window.cursorSaidChanges++; }).observe(
    document.getElementById("cursor-said"), {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Wizard, str]]:
    with serve(tmp_path / "sessions", min_good=0.1) as (wizard, _, url):
        yield wizard, url


def shot(page: Any, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"cursor-{name}.png"), full_page=full_page)


def canvas_drawn(page: Any) -> dict[str, int]:
    ink = page.evaluate(CANVAS_INK)
    assert ink["width"] == ink["height"] > 0 and ink["cursor"] > 0 and ink["target"] > 0, ink
    return ink


def hits(page: Any) -> int:
    return int(page.locator("#cursor-status strong").inner_text())


@pytest.mark.browser
@pytest.mark.slow
def test_the_continuous_cursor_in_a_browser(served: tuple[Wizard, str], browser: Any) -> None:
    from playwright.sync_api import expect

    wizard, url = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, problems = open_page(browser)
    try:
        # -- 1. patient: the subject typed, the paradigm picked with the arrow keys ------
        page.goto(url)
        check_page(page, problems, "patient", focused=False)
        page.get_by_label("Subject id").click()
        page.keyboard.type("C07")
        page.keyboard.press("Tab")
        expect(page.get_by_label("Motor imagery")).to_be_focused()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        cursor_radio = page.get_by_role("radio", name="Continuous cursor")
        expect(cursor_radio).to_be_focused()
        expect(cursor_radio).to_be_checked()
        expect(page.locator("#classes-field")).to_be_hidden()  # no classes, no frequencies
        expect(page.locator("#freqs-field")).to_be_hidden()
        expect(page.locator("#cursor-help")).to_be_visible()
        check_page(page, problems, "patient", focused=False)
        page.keyboard.press("Enter")  # submits the form from the radio button

        # -- 2. signal check of the ECoG grid ------------------------------------------
        check_page(page, problems, "signal")
        expect(page.locator("#quality tbody tr")).to_have_count(32)
        expect(page.locator("#status-G01")).to_have_text(re.compile(r"^(good|bad)$"))
        check_page(page, problems, "signal")
        assert wizard.choice is not None and wizard.choice.paradigm == "cursor"
        page.get_by_role("button", name="Continue to calibration").click()

        # -- 3. calibration: its length, the canvas live, the progress ------------------
        check_page(page, problems, "calibration")
        length = page.get_by_label("Calibration length (s)")
        expect(length).to_have_value("60")  # the default, from the wizard's state
        expect(page.locator("#trials-per-class")).to_be_hidden()
        length.fill(str(CALIBRATION_S))
        page.get_by_role("button", name="Start the calibration").click()
        expect(page.locator("#cursor-canvas")).to_be_visible()
        expect(page.locator("#stage")).to_be_hidden()
        page.evaluate(COUNT_SAID)
        status = page.locator("#cursor-status")
        expect(status).to_have_text(re.compile(r"^\d+ targets? reached in \d+ s"))
        first = status.inner_text()
        ink = canvas_drawn(page)
        expect(status).not_to_have_text(first)  # it follows the run
        expect(status).to_have_text(re.compile(r"^[1-9]\d* targets? reached"))  # the open loop
        assert page.evaluate(CANVAS_INK) != ink  # the cursor moved on the canvas
        progress = page.get_by_role("progressbar")
        so_far = re.compile(rf"^\d+ of {CALIBRATION_S} s recorded$")
        expect(progress).to_have_accessible_name(so_far)
        expect(progress).to_have_attribute("aria-valuetext", so_far)
        assert progress.evaluate("p => p.max") == CALIBRATION_S
        assert 0 < progress.evaluate("p => p.value") <= CALIBRATION_S
        expect(page.locator("#cursor-said")).to_have_text(
            re.compile(rf"^\d+ targets? reached; \d+ of {CALIBRATION_S} seconds recorded\.$"))
        expect(page.locator("#recorded")).to_have_text(
            re.compile(r"^Recorded so far: \d+ s of cursor calibration, \d+ targets? reached\.$"))
        expect(length).to_be_disabled()
        check_page(page, problems, "calibration", focused=False)
        shot(page, "calibration")
        seen_for = time.monotonic()
        said = page.evaluate("() => window.cursorSaidChanges")

        expect(page.get_by_role("button", name="Train the decoder")).to_be_visible(timeout=RUN_MS)
        said_s = time.monotonic() - seen_for
        said = page.evaluate("() => window.cursorSaidChanges") - said
        assert said <= said_s + 1, (said, said_s)  # not at every message: once a second at most
        run = wizard.calibration_runs[-1]
        assert run["outcome"] == "completed" and run["cursor"]["hits"] >= 4, run
        expect(page.locator("#recorded")).to_have_text(re.compile(
            rf"^Recorded so far: {CALIBRATION_S} s of cursor calibration, "
            rf"{run['cursor']['hits']} targets reached\.$"))
        expect(page.locator("#stage-box")).to_be_hidden()
        check_page(page, problems, "calibration", focused=False)

        # -- 4. training: R² against chance and the minimum, per axis, the figures ------
        page.get_by_role("button", name="Train the decoder").click()
        check_page(page, problems, "training")
        verdict = page.locator("#verdict")
        expect(verdict).to_have_text(re.compile(
            r"^Good enough to go online: R² (-?\d\.\d\d) "
            r"\(chance (-?\d\.\d\d), 0\.30 needed\)\.$"),
            timeout=RUN_MS)
        r2, chance = map(float, re.findall(r"-?\d\.\d\d", verdict.inner_text())[:2])
        assert r2 > max(chance, 0.3), (r2, chance)
        expect(page.locator("#accuracy-chart")).to_have_accessible_name(
            re.compile(rf"^Cross-validated R² {r2:.2f} on a scale from -1 to 1; chance"))
        expect(page.locator("#confusion")).to_be_hidden()
        assert page.locator("#axes tbody th").all_text_contents() == [
            "Left-right (vx)", "Up-down (vy)"]
        for cell in page.locator("#axes tbody td").all_text_contents():
            assert re.fullmatch(r"-?\d\.\d\d", cell), cell
        page.wait_for_function("""() => {
          const imgs = [...document.querySelectorAll("#patterns img")];
          return imgs.length === 2 && imgs.every((img) => img.complete && img.naturalWidth > 0);
        }""")
        for img in page.locator("#patterns img").all():
            assert (img.get_attribute("alt") or "").strip()
        expect(page.get_by_role("button", name="Record more calibration")).to_be_visible()
        check_page(page, problems, "training")
        shot(page, "training", full_page=True)

        # -- 5. online: the cursor decoded, the decoder adapting ----------------------
        page.get_by_role("button", name="Go online").click()
        check_page(page, problems, "online")
        expect(page.locator("#cursor-canvas")).to_be_visible()
        expect(page.locator("#decision")).to_be_hidden()
        expect(page.locator("#fig-version")).to_have_text(re.compile(r"^v\d+$"))
        expect(page.locator("#fig-adaptation")).to_have_text(re.compile(r"^\d+ updates "))
        started = time.monotonic()
        version = int(page.locator("#fig-version").inner_text()[1:])
        updates = int(page.locator("#fig-adaptation").inner_text().split()[0])
        expect(page.locator("#fig-targets")).to_have_text(
            re.compile(r"^\d+ in \d+ s, \d+ in the last minute"))
        expect(page.locator("#run-progress-label")).to_have_text(
            re.compile(r"^\d+ s in the closed loop$"))
        expect(page.locator("#run-progress")).to_be_hidden()
        expect(page.locator("#fig-r2")).to_have_text(re.compile(
            r"^R² -?\d\.\d\d over the last minute \(simulator only"), timeout=SHORT_MS)
        expect(page.get_by_text("Decoded vs intended velocity")).to_be_visible()
        page.wait_for_timeout(max(0.0, ONLINE_S - (time.monotonic() - started)) * 1000)
        assert int(page.locator("#fig-version").inner_text()[1:]) > version
        assert int(page.locator("#fig-adaptation").inner_text().split()[0]) > updates
        expect(page.locator("#cursor-status")).to_have_text(
            re.compile(r"^\d+ targets? reached in \d+ s"))
        canvas_drawn(page)
        expect(page.locator("#cursor-said")).to_have_text(
            re.compile(r"^\d+ targets? reached; \d+ seconds in the closed loop\.$"))
        expect(page.locator("#fig-signal")).to_contain_text("Hz")
        check_page(page, problems, "online", focused=False)
        stop = page.get_by_role("button", name="Stop and save").bounding_box()
        assert stop is not None and stop["y"] + stop["height"] <= VIEWPORT["height"]
        shot(page, "online")

        page.get_by_role("button", name="Stop and save").click()
        check_page(page, problems, "done")
        saved = wizard.saved_profile
        assert saved is not None and saved["paradigm"] == "cursor"
        expect(page.locator("#done-text")).to_contain_text(f"profile {saved['id']}")
        assert problems == []
    finally:
        context.close()
