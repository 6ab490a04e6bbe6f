"""The built-in feedback display: HTTP page, WebSocket messages, coalescing, slow
clients, emergency stop; and the page itself in a real (headless) Chromium.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.web.feedback_display import FeedbackDisplay

TIMEOUT = 10.0


# ---- helpers ---------------------------------------------------------------------------

@pytest.fixture
def make_display() -> Iterator[Callable[..., FeedbackDisplay]]:
    """``make_display(**kwargs)``: a started display, closed after the test."""
    displays: list[FeedbackDisplay] = []

    def _make(**kwargs: Any) -> FeedbackDisplay:
        kwargs.setdefault("classes", ["left", "right"])
        display = FeedbackDisplay(**kwargs).start()
        displays.append(display)
        return display

    yield _make
    for display in displays:
        display.close()


def ws_url(display: FeedbackDisplay) -> str:
    return display.url.replace("http://", "ws://") + "ws"


def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws: ClientConnection, match: Callable[[dict[str, Any]], bool],
               timeout: float = TIMEOUT) -> tuple[dict[str, Any], int]:
    """Read messages until one matches; returns it and how many were read."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        message = recv_json(ws, max(0.01, deadline - time.monotonic()))
        n += 1
        if match(message):
            return message, n


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for a condition another thread makes true (server-side bookkeeping)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def raw_ws_client(display: FeedbackDisplay, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket client that completes the handshake and then reads nothing."""
    port = int(display.url.rsplit(":", 1)[1].strip("/"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


# ---- WebSocket messages ------------------------------------------------------------------

def test_hello_then_states(make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display(style="arrows", title="MI session")
    with connect(ws_url(display)) as ws:
        hello = recv_json(ws)
        assert hello == {"type": "hello", "version": 1, "classes": ["left", "right"],
                         "style": "arrows", "title": "MI session", "max_rate_hz": 60.0}
        display.show({"t": 1.5, "cue": "left", "scores": [0.7, 0.3], "decided": "left",
                      "armed": "stimulator armed"})
        state = recv_json(ws)
        assert state["type"] == "state"
        assert state["seq"] == 1
        assert state["t"] == 1.5 and state["cue"] == "left" and state["decided"] == "left"
        assert state["scores"] == [0.7, 0.3]
        assert state["cursor"] is None and state["safety"] is None
        assert state["armed"] == "stimulator armed"
        assert abs(state["shown_at"] - time.time()) < 60
        display.show({"t": 2.0, "cue": None, "scores": [0.1, 0.9], "cursor": [0.5, -0.25],
                      "safety": "SAFE: stale input"})
        state = recv_json(ws)
        assert state["seq"] == 2 and state["cue"] is None
        assert state["cursor"] == [0.5, -0.25] and state["safety"] == "SAFE: stale input"


def test_a_new_client_gets_hello_then_the_newest_state(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display()
    with connect(ws_url(display)) as first:
        recv_json(first)
        display.show({"t": 1.0, "cue": "left"})
        display.show({"t": 2.0, "cue": "right"})
        recv_until(first, lambda m: m.get("t") == 2.0)
        with connect(ws_url(display)) as second:
            assert recv_json(second)["type"] == "hello"
            assert recv_json(second)["t"] == 2.0


def test_values_are_made_json_safe(make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display(classes=["a", "b", "c"])
    with connect(ws_url(display)) as ws:
        recv_json(ws)
        display.show({"t": np.float64(3.0), "scores": np.array([0.2, math.nan, np.inf]),
                      "cursor": np.array([0.1, 0.2], dtype=np.float32), "armed": True,
                      "decided": np.str_("b"), "unknown": object()})
        state = recv_json(ws)
        assert state["t"] == 3.0
        assert state["scores"] == [0.2, None, None]
        assert state["cursor"] == pytest.approx([0.1, 0.2])
        assert state["armed"] == "armed" and state["decided"] == "b"
        assert "unknown" not in state


def test_a_state_that_cannot_be_shown_is_skipped(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display()
    with connect(ws_url(display)) as ws:
        recv_json(ws)
        display.show({"t": 1.0, "cursor": [1.0, 2.0, 3.0]})  # not [x, y]
        wait_until(lambda: display.stats()["states_invalid"] == 1)
        display.show({"t": 2.0, "scores": "not numbers"})
        wait_until(lambda: display.stats()["states_invalid"] == 2)
        display.show({"t": 3.0})
        assert recv_json(ws)["t"] == 3.0


def test_coalescing_sends_far_fewer_and_always_the_newest(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display(max_rate_hz=30.0)
    with connect(ws_url(display)) as ws:
        recv_json(ws)
        for i in range(1000):
            display.show({"t": float(i), "cue": "left" if i % 2 else "right",
                          "scores": [i / 1000, 1 - i / 1000]})
        last, n_received = recv_until(ws, lambda m: m.get("t") == 999.0)
        assert n_received < 100
        assert last["seq"] == 1000 and last["cue"] == "left"
        assert last["scores"] == [0.999, pytest.approx(0.001)]
        stats = display.stats()
        assert stats["states_shown"] == 1000
        assert stats["states_dropped"] > 900
        assert stats["states_broadcast"] + stats["states_dropped"] == 1000
        wait_until(lambda: display.stats()["messages_sent"] == 1 + n_received)  # hello + states
        with pytest.raises(TimeoutError):  # nothing after the newest
            ws.recv(timeout=0.2)


def test_a_client_that_reads_nothing_blocks_neither_show_nor_the_others(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display(send_timeout_s=1.0)
    big_cue = "x" * 200_000  # fills the socket buffers of the silent client fast
    with connect(ws_url(display), max_size=2**22) as good:
        recv_json(good)
        silent = raw_ws_client(display)
        try:
            wait_until(lambda: display.stats()["clients_connected"] == 2)
            deadline = time.monotonic() + 30.0
            i = 0
            while display.stats()["clients_dropped"] == 0:
                assert time.monotonic() < deadline, f"never dropped: {i} {display.stats()}"
                i += 1
                display.show({"t": float(i), "cue": big_cue})  # returns at once
                recv_until(good, lambda m, i=i: m.get("t") == float(i))
            assert i > 1
            display.show({"t": -1.0, "cue": "left"})
            assert recv_until(good, lambda m: m.get("t") == -1.0)[0]["cue"] == "left"
            wait_until(lambda: display.stats()["clients_connected"] == 1)
        finally:
            silent.close()


def test_close_does_not_wait_for_a_stuck_client() -> None:
    display = FeedbackDisplay(send_timeout_s=60.0).start()
    silent = raw_ws_client(display)
    try:
        wait_until(lambda: display.stats()["clients_connected"] == 1)
        big_cue = "x" * 500_000
        for i in range(40):  # more than the socket buffers hold; never waits on the client
            display.show({"t": float(i), "cue": big_cue})
            wait_until(lambda i=i: display.stats()["states_broadcast"] == i + 1)
        display.close()  # joins its threads although a send is stuck for up to 60 s
        assert display.stats()["clients_connected"] == 0
    finally:
        silent.close()
        display.close()


def test_emergency_stop_calls_back_and_tells_every_page(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    calls: list[tuple[str, str]] = []
    called = threading.Event()

    def on_stop(source: str) -> None:
        calls.append((source, threading.current_thread().name))
        called.set()

    display = make_display(on_emergency_stop=on_stop)
    with connect(ws_url(display)) as page, connect(ws_url(display)) as other:
        recv_json(page)
        recv_json(other)
        page.send(json.dumps({"type": "emergency_stop"}))
        assert called.wait(TIMEOUT)
        assert [source for source, _ in calls] == ["web page"]
        assert calls[0][1] != threading.current_thread().name
        for ws in (page, other):
            stopped = recv_json(ws)
            assert stopped["type"] == "emergency_stopped" and stopped["source"] == "web page"
    assert display.stats()["emergency_stops"] == 1


def test_the_emergency_stop_callback_may_close_the_display() -> None:
    display = FeedbackDisplay()
    called = threading.Event()

    def on_stop(source: str) -> None:  # e.g. the session ends on an emergency stop
        display.close()  # from a connection's thread: must not wait for itself
        called.set()

    display.on_emergency_stop = on_stop
    display.start()
    try:
        with connect(ws_url(display)) as ws:
            recv_json(ws)
            ws.send(json.dumps({"type": "emergency_stop"}))
            assert called.wait(TIMEOUT)
            closer = threading.Thread(target=display.close)  # waits for the background close
            closer.start()
            closer.join(TIMEOUT)
            assert not closer.is_alive()
            assert display.stats()["clients_connected"] == 0
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=TIMEOUT)
    finally:
        display.close()


@pytest.mark.parametrize("callback", [None, "raises"])
def test_a_stop_that_could_not_be_done_is_reported_to_the_page(
        make_display: Callable[..., FeedbackDisplay], callback: str | None) -> None:
    def broken(source: str) -> None:
        raise RuntimeError("stimulator unreachable")

    display = make_display(on_emergency_stop=broken if callback else None)
    with connect(ws_url(display)) as ws:
        recv_json(ws)
        ws.send(json.dumps({"type": "emergency_stop"}))
        reply = recv_json(ws)
        assert reply["type"] == "emergency_stop_failed"
        if callback:
            assert "stimulator unreachable" in reply["reason"]


def test_junk_messages_are_ignored(make_display: Callable[..., FeedbackDisplay],
                                   caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    display = make_display(on_emergency_stop=calls.append)
    with connect(ws_url(display)) as ws:
        recv_json(ws)
        for junk in ["not json {", json.dumps({"type": "launch"}), json.dumps([1, 2]),
                     b"\x00\x01"]:
            ws.send(junk)
        ws.send(json.dumps({"type": "emergency_stop"}))
        assert recv_json(ws)["type"] == "emergency_stopped"
        display.show({"t": 1.0})
        assert recv_json(ws)["t"] == 1.0
    assert calls == ["web page"]
    assert display.stats()["bad_messages"] == 4
    assert "ignored a message" in caplog.text


# ---- HTTP, ports, parameters -------------------------------------------------------------

def test_http_serves_the_page_and_404_elsewhere(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", display.url)
    with urllib.request.urlopen(display.url, timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    for element_id in ("cue", "status", "estop", "feedback"):
        assert f'id="{element_id}"' in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(display.url + "nope", timeout=TIMEOUT)
    assert err.value.code == 404


def test_a_websocket_from_a_foreign_page_is_refused(
        make_display: Callable[..., FeedbackDisplay]) -> None:
    display = make_display()
    with pytest.raises(InvalidStatus) as err:
        connect(ws_url(display), origin="http://evil.example", open_timeout=TIMEOUT)
    assert err.value.response.status_code == 403
    port = display.url.rsplit(":", 1)[1].strip("/")
    with connect(ws_url(display), origin=f"http://127.0.0.1:{port}") as ws:
        assert recv_json(ws)["type"] == "hello"


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        display = FeedbackDisplay(port=port)
        with pytest.raises(ConfigError, match=f"port {port}") as err:
            display.start()
        assert "port: 0" in str(err.value)
        display.close()


@pytest.mark.parametrize("kwargs", [
    {"port": -1}, {"port": 70000}, {"port": "80"}, {"max_rate_hz": 0},
    {"max_rate_hz": math.inf}, {"style": "pie"}, {"classes": "left"},
    {"classes": ["left", "left"]}, {"classes": ["left", ""]}, {"send_timeout_s": -1},
    {"host": ""},
])
def test_bad_parameters_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FeedbackDisplay(**kwargs)


def test_lifecycle() -> None:
    display = FeedbackDisplay()
    with pytest.raises(RunError):
        _ = display.url
    display.show({"t": 0.0})  # before start: kept, harmless
    with display:
        assert display.start() is display
        assert display.url.startswith("http://127.0.0.1:")
    display.close()
    with pytest.raises(RunError):
        display.start()


# ---- the page in a browser ---------------------------------------------------------------

@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[FeedbackDisplay], Any]]:
    """``open_page(display)``: a fresh page on the display; fails the test on page errors."""
    pages: list[Any] = []
    problems: list[str] = []

    def _open(display: FeedbackDisplay) -> Any:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if msg.type == "error" and "WebSocket connection" not in msg.text else None)
        port = display.url.rsplit(":", 1)[1].strip("/")
        page.on("request", lambda req: None if f"127.0.0.1:{port}" in req.url
                else problems.append(f"request elsewhere: {req.url}"))
        page.goto(display.url)
        pages.append(page)
        return page

    yield _open
    for page in pages:
        page.close()
    assert not problems


def style_has(prop: str, value: str) -> re.Pattern[str]:
    """Matches an inline ``style`` attribute that sets ``prop: value``."""
    return re.compile(rf"(^|;)\s*{prop}: {re.escape(value)};")


@pytest.mark.browser
def test_page_shows_cue_and_bars_and_stops(make_display: Callable[..., FeedbackDisplay],
                                           open_page: Callable[[FeedbackDisplay], Any]) -> None:
    from playwright.sync_api import expect

    calls: list[str] = []
    called = threading.Event()

    def on_stop(source: str) -> None:
        calls.append(source)
        called.set()

    display = make_display(style="bar", title="Motor imagery", on_emergency_stop=on_stop)
    page = open_page(display)
    expect(page.locator("#status-conn")).to_have_text("connected")
    expect(page).to_have_title("Motor imagery")
    expect(page.locator("#cue")).to_have_text("+")

    display.show({"t": 1.0, "cue": "left", "scores": [0.75, 0.25], "decided": "left",
                  "armed": "stimulator armed"})
    expect(page.locator("#cue")).to_have_text("left")
    expect(page.locator("#bar-left")).to_have_attribute("style", style_has("width", "75%"))
    expect(page.locator("#bar-right")).to_have_attribute("style", style_has("width", "25%"))
    expect(page.locator("#status")).to_contain_text("stimulator armed")
    expect(page.locator("#status")).to_contain_text(re.compile(r"latency \d+ ms"))

    display.show({"t": 2.0, "cue": None, "scores": [0.2, 0.8], "decided": "right",
                  "safety": "SAFE: stale input"})
    expect(page.locator("#cue")).to_have_text("+")
    expect(page.locator("#bar-left")).to_have_attribute("style", style_has("width", "20%"))
    expect(page.locator("#bar-right")).to_have_attribute("style", style_has("width", "80%"))
    expect(page.locator("#status")).to_contain_text("SAFE: stale input")

    page.click("#estop")
    assert called.wait(TIMEOUT)
    assert calls == ["web page"]
    expect(page.locator("#estop")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#estop")).to_have_text("STOPPED")


@pytest.mark.browser
def test_page_arrows_cursor_and_keyboard_stop(make_display: Callable[..., FeedbackDisplay],
                                              open_page: Callable[[FeedbackDisplay], Any]) -> None:
    from playwright.sync_api import expect

    calls: list[str] = []
    arrows = make_display(style="arrows", classes=["left", "right", "feet"],
                          on_emergency_stop=calls.append)
    page = open_page(arrows)
    arrows.show({"t": 1.0, "cue": "feet", "scores": [0.1, 0.2, 0.7], "decided": "feet"})
    expect(page.locator("#arrow-feet")).to_have_class(re.compile(r"\bon\b"))
    expect(page.locator("#arrow-left")).not_to_have_class(re.compile(r"\bon\b"))
    arrows.show({"t": 2.0, "cue": "right", "scores": [0.1, 0.8, 0.1], "decided": "right"})
    expect(page.locator("#arrow-right")).to_have_class(re.compile(r"\bon\b"))
    expect(page.locator("#arrow-feet")).not_to_have_class(re.compile(r"\bon\b"))
    page.keyboard.press("Escape")
    expect(page.locator("#estop")).to_have_attribute("data-state", "stopped")
    assert calls == ["web page"]

    cursor = make_display(style="cursor")  # no callback: the page must say so
    page = open_page(cursor)
    cursor.show({"t": 1.0, "cue": "right", "cursor": [1.0, 0.5]})
    dot = page.locator("#cursor")
    expect(dot).to_have_attribute("style", style_has("left", "100%"))
    expect(dot).to_have_attribute("style", style_has("top", "25%"))
    cursor.show({"t": 2.0, "cue": "left", "scores": [0.9, 0.1]})  # x from the score difference
    expect(dot).to_have_attribute("style", style_has("left", "10%"))
    expect(dot).to_have_attribute("style", style_has("top", "50%"))
    page.keyboard.press(" ")
    expect(page.locator("#estop")).to_have_attribute("data-state", "failed")
    expect(page.locator("#estop-note")).to_contain_text("hardware stop")


@pytest.mark.browser
def test_page_reconnects_after_the_server_restarts(
        open_page: Callable[[FeedbackDisplay], Any]) -> None:
    from playwright.sync_api import expect

    first = FeedbackDisplay(classes=["left", "right"]).start()
    port = int(first.url.rsplit(":", 1)[1].strip("/"))
    try:
        page = open_page(first)
        first.show({"t": 1.0, "cue": "left", "scores": [0.6, 0.4]})
        expect(page.locator("#cue")).to_have_text("left")
    finally:
        first.close()
    expect(page.locator("#status-conn")).to_have_text(re.compile("disconnected"))
    with FeedbackDisplay(port=port, classes=["left", "right"]) as second:
        expect(page.locator("#status-conn")).to_have_text("connected")
        second.show({"t": 2.0, "cue": "right", "scores": [0.3, 0.7]})
        expect(page.locator("#cue")).to_have_text("right")
