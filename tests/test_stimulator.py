"""The stimulator node behind its supervisor: modes, watchdog, runtime faults, audit log.

Node-level tests drive it chunk by chunk on a simulated clock. Graph-level tests
run real graphs on the live clock with the decoder stand-in in a worker process
(killed with SIGKILL, or failing), and check that the stimulator went safe, why,
and that nothing was delivered after it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bci_runtime.audit_log import read_audit_log
from bci_runtime.chunk import Chunk
from bci_runtime.clock import SimulatedClock
from bci_runtime.drivers.stimulator import Stimulator
from bci_runtime.errors import ConfigError
from bci_runtime.graph import load_graph_text
from bci_runtime.node import NodeContext
from bci_runtime.runner import Runner
from bci_runtime.spec import StreamSpec
from bci_runtime.summary import build_summary

ROOT = Path(__file__).resolve().parents[1]
LIMITS = str(ROOT / "pipelines" / "limits" / "two_contacts.yaml")
BIOMARKER = StreamSpec("bio", "Biomarker", ("beta", "tremor"), 25.0)


def continuous(**changes: Any) -> dict[str, Any]:
    mod = {"channel": "beta", "contact": "E1", "width_us": 90, "frequency_hz": 130,
           "gain_ma": 1.0, "max_ma": 2.5, "slew_ma_per_s": 2.0, **changes}
    return {"limits": LIMITS, "mode": "continuous", "driver": {"type": "simulated", "lsl": False},
            "modulation": mod}


def triggered(**changes: Any) -> dict[str, Any]:
    trig = {"channel": "tremor", "threshold": 0.8, "refractory_s": 1.0, "contact": "E2",
            "amplitude_ma": 2.0, "width_us": 90, "frequency_hz": 130, "n_pulses": 20, **changes}
    return {"limits": LIMITS, "mode": "triggered", "driver": {"type": "simulated", "lsl": False},
            "trigger": trig}


def opened(params: dict[str, Any], tmp_path: Path) -> tuple[Stimulator, SimulatedClock]:
    node = Stimulator("stim", {**params, "audit_log": str(tmp_path / "audit.jsonl")})
    node.bind({"control": BIOMARKER})
    clock = SimulatedClock()
    node.open(NodeContext(name="stim", clock=clock))
    return node, clock


def feed(node: Stimulator, clock: SimulatedClock, t: float, beta: float, tremor: float = 0.0
         ) -> dict:
    clock.advance_to(t)
    return node.process("control", Chunk(np.array([[beta, tremor]]), np.array([t]), BIOMARKER)) \
        or {}


def test_continuous_mode_follows_the_biomarker_within_the_slew_rate(tmp_path: Path) -> None:
    node, clock = opened(continuous(), tmp_path)
    rows = []
    for k in range(300):  # 12 s at 25 Hz: target 2 mA, then 0.5 mA from 6 s on
        t = k / 25
        if k == 25:
            assert node.arm("test")
        out = feed(node, clock, t, 2.0 if t < 6 else 0.5)
        if "pulses" in out:
            rows.append((t, *out["pulses"].data[0]))
    node.close()
    t, amp = np.array([r[0] for r in rows]), np.array([r[2] for r in rows])
    assert t[0] > 1.0  # nothing before arming
    steps = np.abs(np.diff(amp)) / np.diff(t)
    assert steps.max() <= 2.0 + 1e-6  # the slew bound, both ways
    assert amp[(t > 3.0) & (t < 6.0)] == pytest.approx(2.0)
    assert amp[-1] == pytest.approx(0.5)
    summary = node.safety_summary()
    assert summary["emitted_outside_limits"] == 0 and summary["rejected"] == 0
    assert summary["requests"] == len(rows)


def test_triggered_mode_sends_one_burst_per_crossing_within_the_refractory(
        tmp_path: Path) -> None:
    node, clock = opened(triggered(), tmp_path)
    assert node.arm("test")
    tremor = np.zeros(200)
    tremor[[60, 62, 64, 120]] = 1.0  # crossings at 2.4, 2.48, 2.56 s (refractory) and 4.8 s
    bursts = []
    for k in range(200):
        out = feed(node, clock, k / 25, 0.0, tremor[k])
        if "pulses" in out:
            bursts.append((k / 25, out["pulses"].data[0]))
    node.close()
    assert [t for t, _ in bursts] == [2.4, 4.8]
    assert bursts[0][1][6] == 20 and bursts[0][1][1] == pytest.approx(2.0)  # n, mA


def test_stale_and_non_finite_input_force_the_safe_state_and_need_a_new_arm(
        tmp_path: Path) -> None:
    node, clock = opened(continuous(), tmp_path)
    feed(node, clock, 0.0, 2.0)
    assert node.arm("test")
    for k in range(1, 50):
        feed(node, clock, k / 25, 2.0)
    out = feed(node, clock, 2.5, 2.0)  # 540 ms without a sample: the deadline is 120 ms
    assert node.state == "disarmed" and "safe: input stale" in out["safety"].markers[0]
    assert "pulses" not in feed(node, clock, 2.54, 2.0)  # stays off until armed again
    assert node.arm("operator")
    feed(node, clock, 2.58, 2.0)
    out = feed(node, clock, 2.62, float("nan"))
    assert node.state == "disarmed" and "non-finite" in out["safety"].markers[0]
    node.close()
    s = node.safety_summary()
    assert s["stalls"] == 1 and s["non_finite_inputs"] == 1 and len(s["safe_state_ms"]) == 2
    events = [r["event"] for r in read_audit_log(tmp_path / "audit.jsonl")]
    assert events[0] == "open" and events.count("arm") == 2 and events.count("safe_state") == 2


def test_an_emergency_stop_stops_at_once(tmp_path: Path) -> None:
    node, clock = opened(continuous(), tmp_path)
    assert node.arm("test")
    for k in range(50):
        feed(node, clock, k / 25, 2.0)
    driver = node._driver
    assert driver.output_on
    node.emergency_stop("key")
    assert not driver.output_on and node.state == "stopped"
    assert "pulses" not in feed(node, clock, 2.0, 2.0)
    node.close()
    records = read_audit_log(tmp_path / "audit.jsonl")
    assert any(r["event"] == "emergency_stop" and r["source"] == "key" for r in records)


def test_the_watchdog_on_the_live_clock_trips_on_its_own(tmp_path: Path) -> None:
    from bci_runtime.clock import LslClock

    node = Stimulator("stim", {**continuous(), "audit_log": str(tmp_path / "audit.jsonl")})
    node.bind({"control": BIOMARKER})
    clock = LslClock()
    node.open(NodeContext(name="stim", clock=clock))
    tripped = threading.Event()
    node.context.emit_event = lambda kind, **f: tripped.set() if kind == "safe_state" else None
    for _ in range(3):
        now = clock.now()
        node.process("control", Chunk(np.array([[2.0, 0.0]]), np.array([now]), BIOMARKER))
    assert node.arm("test")
    node.process("control", Chunk(np.array([[2.0, 0.0]]), np.array([clock.now()]), BIOMARKER))
    assert tripped.wait(5.0)  # no more chunks: the watchdog's thread forces the safe state
    assert node.state == "disarmed" and node.stalls == 1
    assert not node.arm("test")  # refused while the input is stale
    node.close()


@pytest.mark.parametrize("change, field", [
    ({"limits": {"contacts": [{"name": "E1", "area_cm2": 0.06, "max_current_ma": 3}],
                 "max_total_current_ma": 5, "pulse_width_us": {"min": 60, "max": 200},
                 "frequency_hz": {"min": 1, "max": 185}, "max_pulses_per_s": 200,
                 "max_burst_pulses": 100, "shannon_k": 2.0}}, "shannon_k"),
    ({"modulation": {"contact": "E7", "width_us": 90, "frequency_hz": 130, "max_ma": 1}},
     "E7"),
    ({"limits": "no/such/limits.yaml"}, "not found"),
    ({"driver": {"type": "laser"}}, "unknown stimulator driver"),
    ({"driver": {"type": "simulated", "volume": 11}}, "volume"),
    ({"driver": {"type": "serial", "port": "/dev/ttyX", "baud": 9600}}, "baud"),
])
def test_bad_configuration_is_refused_before_anything_starts(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Stimulator("stim", {**continuous(), **change}).bind({"control": BIOMARKER})


# -- in a graph -----------------------------------------------------------------------------
def graph_text(tmp_path: Path, decoder: dict[str, Any], n_chunks: int = 400,
               **stim: Any) -> str:
    """100 Hz source -> decoder stand-in in its own process -> stimulator (main)."""
    config = {
        "name": "stim-faults", "clock": "live", "seed": 1,
        "nodes": {
            "src": {"type": "test_source", "params": {"n_chunks": n_chunks, "chunk_size": 1,
                                                       "srate": 100.0, "n_channels": 1}},
            "decoder": {"type": "test_recorder", "process": "decoder", "params": decoder,
                        "inputs": {"x": "src.signal"}},
            "stim": {"type": "stimulator", "params": {
                **continuous(channel="ch0", gain_ma=0.0, offset_ma=1.0),
                "audit_log": str(tmp_path / "audit.jsonl"), **stim},
                "inputs": {"control": "decoder.out"}},
        },
    }
    return yaml.safe_dump(config)


def run_and_arm(text: str, when_armed: Any = None) -> tuple[Runner, Any]:
    graph = load_graph_text(text)
    runner = Runner(graph)
    stim = graph.nodes["stim"]
    result: list = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stim.arm("test"):  # once data flow
        time.sleep(0.02)
    assert stim.state == "armed"
    while time.monotonic() < deadline and len(stim._driver.trains) < 5:
        time.sleep(0.01)
    if when_armed is not None:
        when_armed(runner)
    thread.join(60)
    return runner, result[0]


def delivered_after(stim: Stimulator, t: float) -> int:
    return sum(1 for when, _ in stim._driver.trains if when > t)


@pytest.mark.slow
def test_sigkill_of_the_decoder_process_makes_the_stimulator_safe(tmp_path: Path) -> None:
    killed: list[float] = []

    def kill(runner: Runner) -> None:
        killed.append(time.monotonic())
        os.kill(runner._workers["decoder"].pid, signal.SIGKILL)

    runner, result = run_and_arm(graph_text(tmp_path, {}, n_chunks=100000), kill)
    stim = runner.graph.nodes["stim"]
    assert result.status == "failed" and "decoder" in result.reason
    safe = [r for r in read_audit_log(tmp_path / "audit.jsonl") if r["event"] == "safe_state"]
    assert safe and ("died" in safe[0]["reason"] or "heartbeat" in safe[0]["reason"])
    assert safe[0]["t_mono"] >= killed[0]
    assert delivered_after(stim, safe[0]["t"]) == 0
    assert not stim._driver.output_on
    summary = build_summary(result, "stim-faults", None)["safety"]
    assert summary["emitted_outside_limits"] == 0 and summary["safe_states"] >= 1
    print(f"SIGKILL -> safe state {1000 * (safe[0]['t_mono'] - killed[0]):.2f} ms")


@pytest.mark.slow
def test_a_decoder_failure_makes_the_stimulator_safe(tmp_path: Path) -> None:
    runner, result = run_and_arm(graph_text(tmp_path, {"fail_on_call": 150}))
    stim = runner.graph.nodes["stim"]
    assert result.status == "failed"
    safe = [r for r in read_audit_log(tmp_path / "audit.jsonl") if r["event"] == "safe_state"]
    assert safe and "failure" in safe[0]["reason"]
    assert delivered_after(stim, safe[0]["t"]) == 0


@pytest.mark.slow
def test_a_nan_burst_from_the_decoder_makes_the_stimulator_safe(tmp_path: Path) -> None:
    rearmed: list[bool] = []

    def rearm_after_the_burst(runner: Runner) -> None:
        stim = runner.graph.nodes["stim"]
        deadline = time.monotonic() + 30
        while stim.non_finite == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the burst lasts 10 chunks at 100 Hz: finite data again after it
        rearmed.append(stim.arm("operator"))

    # calls 150-159 of the decoder stand-in (in its own process) put out NaN
    runner, result = run_and_arm(graph_text(tmp_path, {"nan_calls": list(range(150, 160))}),
                                 rearm_after_the_burst)
    stim = runner.graph.nodes["stim"]
    assert result.status == "completed"
    records = read_audit_log(tmp_path / "audit.jsonl")
    safe = [r for r in records if r["event"] == "safe_state"]
    assert "non-finite" in safe[0]["reason"] and stim.non_finite >= 1
    arms = [r for r in records if r["event"] == "arm"]
    assert len(arms) == 2 and rearmed == [True]  # armed again by hand once the data were finite
    off = [t for t, _ in stim._driver.trains if safe[0]["t"] < t < arms[1]["t"]]
    assert off == []  # nothing between the safe state and the new arm
    assert stim.safety_summary()["emitted_outside_limits"] == 0


@pytest.mark.slow
def test_a_stopped_worker_misses_its_heartbeat_and_the_stimulator_goes_safe(
        tmp_path: Path) -> None:
    stopped: list[float] = []

    def pause(runner: Runner) -> None:
        pid = runner._workers["decoder"].pid
        stopped.append(time.monotonic())
        os.kill(pid, signal.SIGSTOP)  # alive but silent: no death to see, only silence
        try:
            deadline = time.monotonic() + 5
            while runner.graph.nodes["stim"].state == "armed" and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            os.kill(pid, signal.SIGCONT)
        runner.request_stop("test done")

    # the input may be quiet for 500 ms here, so only the heartbeat (100 ms) can see it in time
    runner, result = run_and_arm(graph_text(tmp_path, {}, n_chunks=100000, stale_ms=500),
                                 pause)
    records = read_audit_log(tmp_path / "audit.jsonl")
    safe = [r for r in records if r["event"] == "safe_state"]
    assert safe and safe[0]["t_mono"] >= stopped[0]
    assert "heartbeat of process 'decoder'" in safe[0]["reason"]
    assert delivered_after(runner.graph.nodes["stim"], safe[0]["t"]) == 0


def test_control_faster_than_the_pulse_rate_is_not_refused(tmp_path: Path) -> None:
    # 250 Hz biomarker, 130 Hz stimulation: every update replaces the running train and
    # keeps its pulse clock, so the rate stays 130/s and nothing is refused for 5 s
    fast = StreamSpec("bio", "Biomarker", ("beta", "tremor"), 250.0)
    node = Stimulator("stim", {**continuous(), "audit_log": str(tmp_path / "audit.jsonl")})
    node.bind({"control": fast})
    clock = SimulatedClock()
    node.open(NodeContext(name="stim", clock=clock))
    assert node.arm("test")
    for k in range(1250):
        clock.advance_to(k / 250)
        node.process("control", Chunk(np.array([[2.0, 0.0]]), np.array([k / 250]), fast))
    node.close()
    s = node.safety_summary()
    assert s["rejected"] == 0 and s["requests"] > 1000 and s["emitted_outside_limits"] == 0


@pytest.mark.timeout(60)
def test_the_serial_driver_behind_the_node(tmp_path: Path) -> None:
    from bci_runtime.drivers.serial_emulator import EmulatedStimulator

    with EmulatedStimulator(n_contacts=2) as device:
        params = {**triggered(), "driver": {"type": "serial", "port": device.port}}
        node, clock = opened(params, tmp_path)
        assert node.arm("test")
        for k, tremor in enumerate([0.0] * 30 + [1.0] * 5 + [0.0] * 30):
            feed(node, clock, k / 25, 0.0, tremor)
        assert device.wait_until(lambda: len(device.trains) == 1, 5.0)
        train = device.trains[0]
        # E2 is the second contact; 1.2 s after arming the 1 s ramp is over: all of 2 mA
        assert (train.contact, train.amp_ua, train.width_us, train.freq_mhz,
                train.n_pulses) == (1, 2000, 90, 130000, 20)
        node.emergency_stop("key")
        assert device.wait_until(lambda: not device.output_on, 5.0)
        node.close()
