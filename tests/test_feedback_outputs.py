"""The feedback node's outputs in a closed loop: pyzmq publisher and the web display.

Both run the shipped demo pipeline (simulated user, drift-free) with the
output switched on; the browser test opens the page in Debian's Chromium while
the loop runs on the live clock, and presses the emergency stop.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from bci_runtime.graph import load_graph_text
from bci_runtime.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"


def demo_with(feedback: dict[str, Any], **top: Any) -> str:
    config = yaml.safe_load(DEMO.read_text())
    config["nodes"]["feedback"]["params"].update(feedback)
    config["nodes"]["decoder"]["params"]["calibration_s"] = 6
    config.update(top)
    return yaml.safe_dump(config)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_decisions_are_published_over_zmq() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    graph = load_graph_text(demo_with({"zmq_publish": address, "display": False, "lsl": False},
                                      clock="live", duration=14))
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"decision")
    sub.setsockopt(zmq.RCVTIMEO, 3000)
    sub.connect(address)  # before the publisher binds: zmq reconnects until it does
    runner = Runner(graph)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    messages = []
    try:
        while True:
            try:
                topic, body = sub.recv_multipart()
            except zmq.Again:  # nothing for 3 s: done once the run has ended
                if thread.is_alive():
                    continue
                break
            messages.append(json.loads(body))
    finally:
        thread.join(60)
        sub.close()
    assert result and result[0].status == "completed", result
    # a subscriber may miss the first messages (zmq's slow joiner), never the later ones
    decisions = graph.nodes["feedback"].decisions
    assert decisions >= 20 and decisions - 10 <= len(messages) <= decisions
    for m in messages:
        assert m["decided"] in ("left", "right") and sum(m["scores"]) == pytest.approx(1.0)
        assert m["cue"] in (None, "left", "right") and m["t"] > 0
    assert {m["cue"] for m in messages} >= {"left", "right"}


@pytest.mark.browser
@pytest.mark.slow
def test_the_demo_closes_the_loop_in_a_browser(browser: Any) -> None:
    from playwright.sync_api import expect

    graph = load_graph_text(demo_with({"display": True, "lsl": False, "console": False},
                                      clock="live", duration=25))
    runner = Runner(graph)
    stops: list[str] = []
    runner.runtime.on_emergency_stop = stops.append  # the page's button reaches the runtime
    result: list = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    try:
        assert runner.started.wait(60)
        url = graph.nodes["feedback"].display.url
        page = browser.new_page()
        page.set_default_timeout(20000)
        page.goto(url)
        expect(page.locator("#cue")).to_have_text("left", timeout=20000)  # the simulator's cues
        expect(page.locator("#cue")).to_have_text("right", timeout=20000)
        # once the decoder is calibrated (6 s), decisions move the bars
        expect(page.locator("#bar-left")).not_to_have_attribute("style", "width: 50%;")
        page.click("#estop")
        expect(page.locator("#estop")).to_have_attribute("data-state", "stopped")
        assert stops == ["web page"]
    finally:
        runner.request_stop("test done")
        thread.join(60)
    assert result[0].status in ("completed", "stopped")
    assert graph.nodes["feedback"].decisions > 0
