"""Stimulation in whole sessions: the shipped pipeline from the command line, LSL edges.

* ``bci run pipelines/closed_loop_stim.yaml --arm`` with "arm" piped in: the
  session folder holds the audit log and the delivered trains in its XDF, and
  ``--json`` carries the ``safety`` block;
* without ``--arm`` nothing is delivered;
* a driving stream that comes back over LSL with another channel count is
  blocked by the inlet: the stimulator goes safe and cannot be armed again;
* the ``lsl_markers`` driver tells an external stimulator what to do over LSL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
import yaml

from bci_runtime.audit_log import read_audit_log
from bci_runtime.graph import load_graph_text
from bci_runtime.runner import Runner
from tests.session_helpers import streams_of

pylsl = pytest.importorskip("pylsl")

ROOT = Path(__file__).resolve().parents[1]
STIM_PIPELINE = ROOT / "pipelines" / "closed_loop_stim.yaml"
LIMITS = str(ROOT / "pipelines" / "limits" / "two_contacts.yaml")


def bci_run(session: Path, answer: str | None) -> tuple[int, dict[str, Any], str]:
    argv = [sys.executable, "-c", "from bci_runtime.cli import main; raise SystemExit(main())",
            "run", str(STIM_PIPELINE), "--clock",
            "simulated", "--duration", "40", "--json", "--session-dir", str(session)]
    if answer is not None:
        argv.append("--arm")
    proc = subprocess.run(argv, input=answer or "", capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


@pytest.mark.slow
def test_an_armed_session_records_its_trains_and_audit_log(tmp_path: Path) -> None:
    code, summary, err = bci_run(tmp_path / "armed", "arm\n")
    assert code == 0, err
    assert "type \"arm\"" in err and "stimulator 'burst'" in err  # the limits were shown
    safety = summary["safety"]
    assert safety["requests"] > 0 and safety["emitted_outside_limits"] == 0
    records = read_audit_log(tmp_path / "armed" / "audit.jsonl")
    arms = [r for r in records if r["event"] == "arm"]
    assert {r["by"] for r in arms} == {"operator (cli)"} and len(arms) == 2
    emitted = [r for r in records if r["event"] in ("emit", "clamp")]
    assert len(emitted) == safety["requests"] - safety["rejected"]
    streams = streams_of(tmp_path / "armed")
    trains = sum(len(streams[f"{n}.pulses"]["time_stamps"]) for n in ("burst", "adaptive"))
    assert trains == len(emitted)
    pulses = streams["adaptive.pulses"]["time_series"]
    assert np.all(pulses[:, 1] <= 2.0 + 1e-9)  # the modulation's max_ma


@pytest.mark.slow
def test_without_arming_nothing_is_delivered(tmp_path: Path) -> None:
    code, summary, err = bci_run(tmp_path / "off", "no\n")
    assert code == 0, err
    assert "not armed" in err and summary["safety"]["requests"] == 0
    records = read_audit_log(tmp_path / "off" / "audit.jsonl")
    assert not [r for r in records if r["event"] in ("arm", "emit", "clamp")]
    streams = streams_of(tmp_path / "off")
    for n in ("burst", "adaptive"):
        assert len(streams.get(f"{n}.pulses", {"time_stamps": []})["time_stamps"]) == 0


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate`` (state of another thread that sends no event) until true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Producer:
    """An LSL outlet pushing a constant biomarker at 100 Hz from its own thread."""

    def __init__(self, name: str, source_id: str, channels: int) -> None:
        info = pylsl.StreamInfo(name, "Biomarker", channels, 100.0, "float32", source_id)
        self.outlet = pylsl.StreamOutlet(info)
        self.channels = channels
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._push, daemon=True)
        self.thread.start()

    def _push(self) -> None:
        start, k = time.monotonic(), 0
        while not self.stop.is_set():
            self.outlet.push_sample(np.full(self.channels, 2.0, np.float32))
            k += 1
            self.stop.wait(max(0.0, start + k / 100.0 - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        del self.outlet


@pytest.mark.lsl
@pytest.mark.slow
def test_a_stream_back_with_another_channel_count_keeps_the_stimulator_safe(
        tmp_path: Path) -> None:
    name, sid = f"biomarker-{uuid4().hex[:8]}", f"stim-test-{uuid4().hex}"
    producer = Producer(name, sid, 1)
    config = {"name": "reconnect", "clock": "live", "seed": 1, "nodes": {
        "inlet": {"type": "lsl_inlet", "params": {"name": name, "source_id": sid, "channels": 1,
                                                  "srate": 100.0}},
        "stim": {"type": "stimulator", "params": {
            "limits": LIMITS, "mode": "continuous", "audit_log": str(tmp_path / "audit.jsonl"),
            "driver": {"type": "simulated", "lsl": False},
            "modulation": {"contact": "E1", "width_us": 90, "frequency_hz": 130, "gain_ma": 0.5,
                           "max_ma": 2.0, "slew_ma_per_s": 5.0}},
            "inputs": {"control": "inlet.signal"}}}}
    events: list[tuple[str, dict]] = []
    seen = threading.Condition()

    def emit(kind: str, **fields: Any) -> None:
        with seen:
            events.append((kind, fields))
            seen.notify_all()

    graph = load_graph_text(yaml.safe_dump(config))
    runner = Runner(graph, emit_event=emit)
    stim = graph.nodes["stim"]
    thread = threading.Thread(target=runner.run)
    thread.start()
    replacement = None
    try:
        assert wait_until(lambda: getattr(stim, "_watchdog", None) is not None, 30)  # data
        assert stim.arm("test")
        assert wait_until(lambda: len(stim._driver.trains) >= 5, 30)
        producer.close()
        replacement = Producer(name, sid, 2)  # the same stream, now with 2 channels
        with seen:
            assert seen.wait_for(lambda: any(k == "stream_blocked" for k, _ in events), 60)
        assert stim.state == "disarmed"
        assert not stim.arm("test")  # nothing arrives from a blocked stream: still stale
    finally:
        runner.request_stop("test done")
        thread.join(30)
        if replacement is not None:
            replacement.close()
    safe = [r for r in read_audit_log(tmp_path / "audit.jsonl") if r["event"] == "safe_state"]
    assert safe and "stale" in safe[0]["reason"]
    assert not [t for t, _ in stim._driver.trains if t > safe[0]["t"]]


@pytest.mark.lsl
def test_the_lsl_marker_driver_tells_an_external_stimulator(tmp_path: Path) -> None:
    from bci_runtime.chunk import Chunk
    from bci_runtime.clock import SimulatedClock
    from bci_runtime.drivers.stimulator import Stimulator
    from bci_runtime.node import NodeContext
    from bci_runtime.spec import StreamSpec

    spec = StreamSpec("bio", "Biomarker", ("state",), 25.0)
    node = Stimulator(f"ext{uuid4().hex[:8]}", {
        "limits": LIMITS, "mode": "triggered", "driver": {"type": "lsl_markers"},
        "audit_log": str(tmp_path / "audit.jsonl"),
        "trigger": {"threshold": 0.5, "contact": "E1", "amplitude_ma": 1.0, "width_us": 90,
                    "frequency_hz": 130, "n_pulses": 10}})
    node.bind({"control": spec})
    clock = SimulatedClock()
    node.open(NodeContext(name=node.name, clock=clock, seed=3))
    streams = pylsl.resolve_byprop("name", f"{node.name}-commands", timeout=10)
    assert streams
    inlet = pylsl.StreamInlet(streams[0])
    inlet.open_stream(timeout=10)
    try:
        assert node.arm("test")
        for k, x in enumerate([0.0] * 40 + [1.0] * 3):
            clock.advance_to(k / 25)
            node.process("control", Chunk(np.array([[x]]), np.array([k / 25]), spec))
        node.emergency_stop("key")
        commands = []
        while len(commands) < 2:
            sample, _ = inlet.pull_sample(timeout=10)
            assert sample is not None, commands
            command = json.loads(sample[0])
            # the stop sent when it opened may reach the inlet or not; what follows must
            if command != {"cmd": "stop", "reason": "open"}:
                commands.append(command)
    finally:
        node.close()
    assert commands[0] == {"cmd": "train", "contact": "E1", "amplitude_ma": 1.0,
                           "width_us": 90.0, "phase2_amplitude_ma": 1.0,
                           "phase2_width_us": 90.0, "frequency_hz": 130.0, "n_pulses": 10}
    assert commands[1] == {"cmd": "stop", "reason": "key"}


def stim_config(**feedback: Any) -> str:
    config = yaml.safe_load(STIM_PIPELINE.read_text())
    for name in ("burst", "adaptive"):
        config["nodes"][name]["params"]["limits"] = LIMITS
        config["nodes"][name]["params"]["driver"] = {"type": "simulated", "lsl": False}
    config["nodes"]["feedback"]["params"].update({"lsl": False, "console": False, **feedback})
    config["duration"] = 20
    return yaml.safe_dump(config)


@pytest.mark.slow
def test_the_feedback_page_button_stops_every_stimulator(tmp_path: Path) -> None:
    from websockets.sync.client import connect

    graph = load_graph_text(stim_config(display=True))
    runner = Runner(graph, session_dir=tmp_path)
    runner.arm_when_started = "test"
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert runner.started.wait(60)
        stims = [graph.nodes["burst"], graph.nodes["adaptive"]]
        assert [s.state for s in stims] == ["armed", "armed"]
        url = graph.nodes["feedback"].display.url.replace("http://", "ws://") + "ws"
        with connect(url) as page:
            assert json.loads(page.recv(timeout=10))["type"] == "hello"
            page.send(json.dumps({"type": "emergency_stop"}))
            while json.loads(page.recv(timeout=10))["type"] != "emergency_stopped":
                pass
        assert [s.state for s in stims] == ["stopped", "stopped"]
        assert not stims[1]._driver.output_on
    finally:
        runner.request_stop("test done")
        thread.join(60)
    stops = [r for r in read_audit_log(tmp_path / "audit.jsonl")
             if r["event"] == "emergency_stop"]
    assert sorted(r["source"] for r in stops) == ["web page", "web page"]


def run_in_terminal(session: Path, keys: list[bytes], signal_after: int | None = None
                    ) -> list[dict[str, Any]]:
    """``bci run ... --arm`` on a pseudo-terminal; type ``arm``, then ``keys``; the audit log."""
    import os
    import signal as signals

    master, slave = os.openpty()
    argv = [sys.executable, "-c", "from bci_runtime.cli import main; raise SystemExit(main())",
            "run", str(STIM_PIPELINE), "--duration", "8", "--arm", "--session-dir",
            str(session)]
    proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT)
    os.close(slave)
    seen = b""

    def read_until(text: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text not in seen:
            import select
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"{text!r} not seen in: {seen.decode(errors='replace')}")
            seen += os.read(master, 4096)

    def drain() -> None:  # a terminal reads what the status panel draws, or it blocks
        import select
        while proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    return

    try:
        read_until(b'type "arm"')
        os.write(master, b"arm\n")
        read_until(b"keys:")  # the run has started and listens to single keys
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        if signal_after is not None:
            proc.send_signal(signals.SIGUSR1)
        for key in keys:
            os.write(master, key)
        proc.wait(60)
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return read_audit_log(session / "audit.jsonl")


@pytest.mark.slow
def test_the_e_key_on_the_terminal_is_an_emergency_stop(tmp_path: Path) -> None:
    records = run_in_terminal(tmp_path / "key", [b"e"])
    arms = [r for r in records if r["event"] == "arm"]
    stops = [r for r in records if r["event"] == "emergency_stop"]
    assert len(arms) == 2 and sorted(r["source"] for r in stops) == ["key", "key"]
    assert stops[0]["t_mono"] > arms[-1]["t_mono"]


@pytest.mark.slow
def test_sigusr1_is_an_emergency_stop(tmp_path: Path) -> None:
    records = run_in_terminal(tmp_path / "usr1", [], signal_after=0)
    stops = [r for r in records if r["event"] == "emergency_stop"]
    assert sorted(r["source"] for r in stops) == ["signal SIGUSR1"] * 2
