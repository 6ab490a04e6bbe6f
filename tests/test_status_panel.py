"""The live status panel of ``bci run``: snapshots of a running graph, and their drawing.

The demo pipeline runs once on the live clock (module fixture) with the panel
drawing into a string and the test taking snapshots meanwhile; smaller graphs of
test nodes inject bad chunks and drive a stimulator. Rates are checked against
the nominal rate (behaviour: the measurement is right), never for speed.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from bci_runtime.errors import ConfigError
from bci_runtime.graph import load_graph_text
from bci_runtime.run_status import RunStatus, chain_events
from bci_runtime.runner import Runner
from bci_runtime.status_panel import StatusPanel, render_status, should_show

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"
LIMITS = str(ROOT / "pipelines" / "limits" / "two_contacts.yaml")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """Terminal output without its escape sequences."""
    return ANSI.sub("", text)


def drawn(snapshot: dict[str, Any]) -> str:
    """A snapshot drawn as the panel, as plain text 120 columns wide."""
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=True).print(render_status(snapshot))
    return plain(buf.getvalue())


def start(runner: Runner) -> tuple[threading.Thread, list]:
    """Run ``runner`` in a thread; returns it and the list its result goes to."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), name="test-run")
    thread.start()
    return thread, result


def wait_for(condition: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def demo_text(duration: float) -> str:
    config = yaml.safe_load(DEMO.read_text())
    config["duration"] = duration
    config["nodes"]["feedback"]["params"].update(lsl=False, console=False, display=False)
    config["nodes"]["decoder"]["params"]["calibration_s"] = 6
    return yaml.safe_dump(config)


@pytest.fixture(scope="module")
def demo_run() -> Iterator[dict[str, Any]]:
    """The demo on the live clock for 12 s with the panel; snapshots every 0.5 s."""
    graph = load_graph_text(demo_text(12.0))
    status = RunStatus()
    seen: list[tuple[str, dict]] = []
    runner = Runner(graph, emit_event=chain_events(
        lambda kind, **fields: seen.append((kind, fields)), status.on_event))
    status.attach(runner)
    screen = io.StringIO()
    panel = StatusPanel(status, Console(file=screen, width=120, force_terminal=True),
                        refresh_hz=10)
    snapshots: list[dict[str, Any]] = []
    real_stderr = sys.stderr
    thread, result = start(runner)
    with panel:
        assert sys.stderr is panel.out  # writes queue above the panel while it runs
        print("a line written while the panel runs", file=sys.stderr, flush=True)
        while thread.is_alive():
            snapshots.append(status.snapshot())
            time.sleep(0.5)
        thread.join()
    assert sys.stderr is real_stderr
    yield {"snapshots": snapshots, "final": status.snapshot(), "screen": plain(screen.getvalue()),
           "result": result[0], "events": seen, "panel": panel}


def test_a_running_demo_shows_rate_samples_decisions_and_latency(
        demo_run: dict[str, Any]) -> None:
    snapshots = demo_run["snapshots"]
    running = [s for s in snapshots if s["status"] == "running"]
    assert len(running) >= 15
    streams = [s["streams"][0] for s in running]
    assert {r["name"] for r in streams} == {"eeg"} and streams[0]["nominal_hz"] == 250.0
    # the measured rate follows the nominal one once a whole window has passed
    settled = [r for s, r in zip(running, streams) if s["elapsed_s"] >= 3.0]
    assert settled and all(r["window_s"] >= 1.5 for r in settled)
    for r in settled:
        assert r["measured_hz"] == pytest.approx(250.0, rel=0.2), r
        assert r["state"] == "ok"
    counts = [r["samples"] for r in streams if r["samples"] is not None]
    assert all(b > a for a, b in zip(counts, counts[1:]))  # samples keep coming
    deciding = [s for s in running if s["feedback"][0]["decisions"]]
    assert deciding, "no feedback decisions while running"
    for s in deciding:
        lat = s["latency_ms"]
        assert all(isinstance(lat[k], float) for k in ("p50", "p99", "max"))
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] and lat["count"] >= 1
        assert s["decoders"][0]["state"] == "serving" and s["decoders"][0]["version"] == 1
        assert s["decoders"][0]["calibrated"] is True
    assert [s["decoders"][0]["state"] for s in running[:3]] == ["calibrating"] * 3
    decisions = [s["feedback"][0]["decisions"] for s in deciding]
    assert decisions == sorted(decisions) and decisions[-1] > decisions[0]
    remaining = [s["remaining_s"] for s in running]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] <= 12.0
    for s in snapshots:
        json.dumps(s, allow_nan=False)  # JSON-ready


def test_the_final_snapshot_counts_what_happened(demo_run: dict[str, Any]) -> None:
    final, result = demo_run["final"], demo_run["result"]
    assert final["status"] == "completed" == result.status
    assert final["streams"][0]["samples"] == result.samples
    assert final["streams"][0]["state"] == "ended"
    assert final["feedback"][0]["decisions"] == result.summaries["feedback"]["decisions"]
    assert final["events"]["run_started"] == final["events"]["run_ended"] == 1
    assert final["events"]["decoder_trained"] == 1
    kinds = [e["kind"] for e in final["last_events"]]
    assert kinds[0] == "run_started" and kinds[-1] == "run_ended"
    assert "decoder_trained" in kinds
    trained = next(e for e in final["last_events"] if e["kind"] == "decoder_trained")
    assert trained["node"] == "decoder" and trained["text"].startswith("v1 online")
    assert final["remaining_s"] is None and final["elapsed_s"] == pytest.approx(12.0, abs=1.0)


def test_the_panel_shows_the_stream_its_rate_and_the_accuracy(
        demo_run: dict[str, Any]) -> None:
    scored = [s for s in demo_run["snapshots"]
              if s["feedback"][0]["accuracy"] is not None and s["status"] == "running"]
    assert scored, "no scored decision while running"
    s = scored[-1]
    text = drawn(s)
    stream = s["streams"][0]
    assert "eeg" in text and "eeg-eeg" in text
    assert f"250 / {stream['measured_hz']:.1f}" in text
    assert f"{s['feedback'][0]['accuracy']:.2f}" in text
    assert "serving" in text and "v1" in text
    assert f"{s['latency_ms']['p99']:.2f}" in text
    assert "Ctrl-C stops" in text and "emergency stop" not in text  # no actuator here
    # the panel drawn by StatusPanel during the run: the last frame stays on screen
    screen = demo_run["screen"]
    assert "bci run · demo" in screen and "eeg-eeg" in screen and "completed" in screen
    assert "a line written while the panel runs" in screen  # printed above the panel


def test_bad_chunks_are_counted_per_stream_and_listed_once(make_graph: Any) -> None:
    graph = make_graph("""
        name: bad-chunks
        clock: live
        nodes:
          src:
            type: test_source
            on_bad_chunk: drop
            params: {n_chunks: 80, chunk_size: 5, srate: 100, nan_at: [10, 11, 12],
                     bad_channels_at: [40]}
          sink: {type: test_collector, inputs: {signal: src.signal}}
    """)
    status = RunStatus()
    runner = Runner(graph, emit_event=status.on_event)
    status.attach(runner)
    thread, result = start(runner)
    snapshots = []
    while thread.is_alive():
        snapshots.append(status.snapshot())
        time.sleep(0.25)
    thread.join()
    final = status.snapshot()
    row = final["streams"][0]
    assert row["bad_chunks"] == 4 and final["events"]["bad_chunks"] == 4
    assert row["samples"] == result[0].samples == (80 - 4) * 5
    bad = [e for e in final["last_events"] if e["kind"] == "bad_chunk"]
    assert len(bad) == 1 and bad[0]["repeat"] == 4 and bad[0]["level"] == "warning"
    assert bad[0]["node"] == "src" and "dropped" in bad[0]["text"]
    measured = [s["streams"][0]["measured_hz"] for s in snapshots
                if s["status"] == "running" and (s["streams"][0]["window_s"] or 0) >= 1.9]
    assert measured and all(m == pytest.approx(100.0, rel=0.2) for m in measured[1:])
    text = drawn(final)
    assert "bad_chunk ×4" in text and "bad chunks 4" in text


def test_stream_faults_from_events_set_the_state_and_the_counts(make_graph: Any) -> None:
    graph = make_graph("""
        name: faults
        clock: live
        nodes:
          src: {type: test_source, params: {n_chunks: 5}}
          sink: {type: test_collector, inputs: {signal: src.signal}}
    """)
    status = RunStatus(Runner(graph))
    status.on_event("run_started", clock="live", duration=None)
    status.on_event("stream_stalled", node="src", silent_ms=412.0, threshold_ms=250.0)
    status.on_event("samples_dropped", node="src", count=17, at=1.0)
    status.on_event("samples_dropped", node="src", count=3, at=2.0)
    s = status.snapshot()
    row = s["streams"][0]
    assert row["state"] == "stalled" and row["stalls"] == 1 and row["dropped"] == 20
    assert s["events"]["stalls"] == 1 and s["events"]["dropped"] == 20
    assert [(e["kind"], e["repeat"]) for e in s["last_events"]] == [
        ("run_started", 1), ("stream_stalled", 1), ("samples_dropped", 2)]
    assert "no data for 412.0 ms" in drawn(s) and "stalled" in drawn(s)
    status.on_event("stream_resumed", node="src", gap_ms=500.0)
    status.on_event("stream_lost", node="src", process="acq")
    assert status.snapshot()["streams"][0]["state"] == "lost"
    status.on_event("stream_reconnected", node="src", down_ms=800.0)
    row = status.snapshot()["streams"][0]
    assert row["state"] != "lost" and row["reconnects"] == 1
    status.on_event("model_shadow", node="dec", version=2, serving=1)
    status.on_event("model_rollback", node="dec", version=2, serving=1)
    status.on_event("failure", error="node 'dec' failed\ntraceback...", node="dec")
    s = status.snapshot()
    assert s["events"]["rollbacks"] == 1 and s["events"]["failures"] == 1
    assert s["last_events"][-1]["text"] == "node 'dec' failed"
    assert s["last_events"][-1]["level"] == "error"


def stim_graph(tmp_path: Path) -> str:
    """100 Hz source -> pass-through -> stimulator, all in the main process."""
    config = {
        "name": "stim-panel", "clock": "live", "seed": 1,
        "nodes": {
            "src": {"type": "test_source", "params": {"n_chunks": 2000, "chunk_size": 1,
                                                       "srate": 100.0, "n_channels": 1}},
            "decoder": {"type": "test_recorder", "inputs": {"x": "src.signal"}},
            "stim": {"type": "stimulator", "params": {
                "limits": LIMITS, "mode": "continuous",
                "driver": {"type": "simulated", "lsl": False},
                "modulation": {"channel": "ch0", "contact": "E1", "width_us": 90,
                               "frequency_hz": 130, "gain_ma": 0.0, "offset_ma": 1.0,
                               "max_ma": 2.5, "slew_ma_per_s": 2.0},
                "audit_log": str(tmp_path / "audit.jsonl")},
                "inputs": {"control": "decoder.out"}},
        },
    }
    return yaml.safe_dump(config)


def test_the_stimulation_row_shows_disarmed_then_armed_then_stopped(tmp_path: Path) -> None:
    graph = load_graph_text(stim_graph(tmp_path))
    status = RunStatus()
    runner = Runner(graph, emit_event=status.on_event)
    status.attach(runner)
    stim = graph.nodes["stim"]
    thread, result = start(runner)
    try:
        assert runner.started.wait(30)
        assert wait_for(lambda: (status.snapshot()["streams"][0]["samples"] or 0) > 20)
        s = status.snapshot()
        row = s["stimulators"][0]
        assert row["name"] == "stim" and row["state"] == "disarmed" and row["requests"] == 0
        assert s["has_actuators"]
        text = drawn(s)
        assert "disarmed" in text and "Ctrl-C stops · e/space emergency stop · a arm" in text
        assert wait_for(lambda: stim.arm("test"))
        assert wait_for(lambda: (status.snapshot()["stimulators"][0]["requests"] or 0) > 5)
        s = status.snapshot()
        assert s["stimulators"][0]["state"] == "armed"
        assert "ARMED" in drawn(s)
        assert any(e["kind"] == "armed" and e["text"] == "armed by test"
                   for e in s["last_events"])
        runner.emergency_stop("test")
        s = status.snapshot()
        assert s["stimulators"][0]["state"] == "stopped"
        assert s["events"]["emergency_stops"] == 1
        assert "stopped" in drawn(s)
    finally:
        runner.request_stop("test over")
        thread.join(30)
    assert result and result[0].status == "stopped"
    assert status.snapshot()["status"] == "stopped"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_panel_is_shown_on_a_terminal_without_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert should_show(False, _Tty())
    assert not should_show(True, _Tty())
    assert not should_show(False, io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not should_show(False, _Tty())


def test_a_panel_that_was_never_started_stops_quietly(make_graph: Any) -> None:
    graph = make_graph("""
        name: idle
        nodes:
          src: {type: test_source, params: {n_chunks: 5}}
          sink: {type: test_collector, inputs: {signal: src.signal}}
    """)
    status = RunStatus(Runner(graph))
    panel = StatusPanel(status, Console(file=io.StringIO()))
    panel.stop()
    assert panel.last_snapshot is None
    s = status.snapshot()
    assert s["status"] == "starting" and s["streams"][0]["state"] == "waiting"
    assert "starting" in drawn(s)
    # started and stopped before the run: stderr is given back, the frame stays
    before = sys.stderr
    screen = io.StringIO()
    with StatusPanel(status, Console(file=screen, width=120, force_terminal=True)) as panel:
        assert sys.stderr is panel.out
        print("partial line", end="", file=sys.stderr)
    assert sys.stderr is before
    assert "starting" in plain(screen.getvalue())
    with pytest.raises(ConfigError, match="refresh_hz"):
        StatusPanel(status, refresh_hz=0)


def test_the_latency_quantiles_match_numpy() -> None:
    from bci_runtime.run_status import _quantile

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 4096):
        values = np.sort(rng.exponential(1e-3, n))
        for q in (0.5, 0.99):
            assert _quantile(values, q) == pytest.approx(np.percentile(values, 100 * q))
