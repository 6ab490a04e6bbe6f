"""Cue timing of the calibration wizard: from a cue's marker time to the page showing it.

A simulated amplifier streams over real LSL (``run_simulation`` of
:mod:`bci_runtime.simulators.lsl_mode`),
the wizard calibrates on that stream (so the cues come from the ``cue_schedule`` node,
as with a real amplifier), and Debian's Chromium (headless, through Playwright) shows
the page. For every cue the page answers, two animation frames after drawing it (the
frame with the cue is then on its way to the screen), and the wizard measures

    lag = runtime clock at the answer - the cue marker's time in the recording

which bounds from above the time from the recorded cue to its display: it includes
the node's wake-up, the WebSocket to the page, the frame and the answer's way back.

Run::

    .venv/bin/python bench/wizard_cue_timing.py               # 40 cues, ~1 minute
    .venv/bin/python bench/wizard_cue_timing.py --trials 50 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bci_runtime.simulators.lsl_mode import run_simulation
from bci_runtime.web.wizard.app import create_app
from bci_runtime.web.wizard.server import ServerThread
from bci_runtime.web.wizard.wizard import Wizard

CHROMIUM = "/usr/bin/chromium"
RESULTS = Path(__file__).resolve().parent / "results" / "wizard_cue_timing.json"
TRIALS = {"fixation_s": 0.3, "cue_s": 1.0, "rest_s": 0.5}


def wait(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(trials_per_class: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    name, sid = f"cue-bench-{uuid.uuid4().hex[:6]}", f"cue-bench-{uuid.uuid4().hex}"
    stop = threading.Event()
    amp = threading.Thread(target=run_simulation, kwargs=dict(
        paradigm="mi", channels=8, name=name, source_id=sid, stop=stop), daemon=True)
    amp.start()
    root = Path(tempfile.mkdtemp(prefix="cue-bench-"))
    wizard = Wizard(root / "sessions", min_good=0.1)
    server = ServerThread(create_app(wizard)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as api, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(server.url)
            source = {"kind": "lsl", "name": name, "source_id": sid, "channels": 8,
                      "srate": 250.0}
            state = api.post("/api/patient", json={"subject": "BENCH", "paradigm": "mi",
                                                   "source": source}).json()
            if state.get("step") != "signal":
                raise SystemExit(f"the wizard refused the stream: {state}")
            wait(lambda: api.get("/api/quality").json()["channels"], "signal quality")
            api.post("/api/signal/done", json={}).raise_for_status()
            page.reload()  # the page shows the calibration step and opens the run feed
            page.wait_for_selector("#calibration-start", state="visible")
            api.post("/api/calibration/start",
                     json={"trials_per_class": trials_per_class, **TRIALS}).raise_for_status()
            run = wizard.run
            wait(lambda: wizard.run is None, "the calibration's end",
                 timeout=30 + 2 * trials_per_class * sum(TRIALS.values()) * 2)
            browser.close()
        lags = run.cues.lags_ms()
    finally:
        server.stop()
        wizard.close()
        stop.set()
        amp.join(10)
    q = np.percentile(lags, [50, 95, 99]) if lags.size else [np.nan] * 3
    return {"cues": int(lags.size), "expected": 2 * trials_per_class,
            "lag_ms": {"p50": round(float(q[0]), 2), "p95": round(float(q[1]), 2),
                       "p99": round(float(q[2]), 2),
                       "max": round(float(lags.max()), 2) if lags.size else None},
            "host": platform.platform(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per class (2 classes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.trials)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        lag = result["lag_ms"]
        print(f"cue marker -> drawn in the page and answered: {result['cues']} of "
              f"{result['expected']} cues; p50 {lag['p50']} ms, p95 {lag['p95']} ms, "
              f"p99 {lag['p99']} ms, max {lag['max']} ms")
    return 0 if result["cues"] == result["expected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
