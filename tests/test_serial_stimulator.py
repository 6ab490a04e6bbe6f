"""The ``serial`` stimulator driver against an emulated device on a real pty.

No mocks: each test starts a fresh :class:`EmulatedStimulator` (a pseudo-terminal
and a thread speaking the protocol) and the driver opens its slave side with
pyserial, as it would a USB serial port. What the device received and did is
read from the emulator's state.
"""

from __future__ import annotations

import functools
import json
import operator
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial

from bci_runtime.drivers.serial_emulator import EmulatedStimulator
from bci_runtime.drivers.serial_stimulator import SerialStimulator
from bci_runtime.drivers.stimulator_driver import DriverContext
from bci_runtime.errors import ConfigError, StimulatorError
from bci_runtime.safety import PulseRequest
from bci_runtime.stim_limits import StimulationLimits

LIMITS: dict[str, Any] = {
    "contacts": [
        {"name": "E1", "area_cm2": 0.06, "max_current_ma": 3.0},
        {"name": "E2", "area_cm2": 0.06, "max_current_ma": 3.0},
    ],
    "max_total_current_ma": 5.0,
    "pulse_width_us": {"min": 60, "max": 200},
    "frequency_hz": {"min": 1, "max": 185},
    "max_pulses_per_s": 200,
    "max_burst_pulses": 100,
}
WAIT_S = 5.0  # upper bound of every wait for the device; the waits end as soon as it acts
LONG_TRAIN = PulseRequest("E1", 1.0, 100.0, 10.0, 100)  # 10 s: still running when checked


class Events:
    """An ``emit_event`` that keeps what it is given and can be waited on."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, **fields: Any) -> None:
        with self._cond:
            self.items.append((kind, fields))
            self._cond.notify_all()

    def wait(self, kind: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        with self._cond:
            found = self._cond.wait_for(lambda: any(k == kind for k, _ in self.items), timeout_s)
        assert found, f"no {kind!r} event within {timeout_s} s"
        return next(f for k, f in self.items if k == kind)


@pytest.fixture
def device() -> Iterator[EmulatedStimulator]:
    with EmulatedStimulator(n_contacts=4) as emulator:
        yield emulator


@pytest.fixture
def open_driver(device: EmulatedStimulator) -> Iterator[Callable[..., tuple[SerialStimulator,
                                                                           Events]]]:
    """``open_driver(**params)``: a driver opened on ``device``, and its events."""
    drivers: list[SerialStimulator] = []

    def _open(**params: Any) -> tuple[SerialStimulator, Events]:
        # a loaded test machine must not fail a healthy device: generous reply timeout
        driver = SerialStimulator({"port": device.port, "reply_timeout_s": 0.5, **params})
        events = Events()
        driver.open(DriverContext(name="stim", limits=StimulationLimits.model_validate(LIMITS),
                                  emit_event=events))
        drivers.append(driver)
        return driver, events

    yield _open
    for driver in drivers:
        driver.close()


def _xor(body: bytes) -> int:
    return functools.reduce(operator.xor, body, 0)


def _read_line(port: serial.Serial) -> bytes:
    line = port.readline()
    assert line.endswith(b"\n"), f"no complete reply, got {line!r}"
    return line


@pytest.mark.timeout(20)
def test_handshake_and_trains_arrive_with_exact_integer_fields(device, open_driver):
    driver, events = open_driver()
    assert driver.device == {"model": "EMU-STIM", "firmware": "1.0", "n_contacts": 4}
    assert device.commands[:3] == ["HELLO*42", "STOP*18", "WDT 100*56"]
    assert device.watchdog_ms == 100
    assert not device.output_on

    driver.deliver(PulseRequest("E2", 1.5, 90.0, 130.0, 13), 0.0)
    driver.deliver(PulseRequest("E1", 2.0, 100.0, 20.0, 50, phase2_amplitude_ma=0.5,
                                phase2_width_us=400.0), 0.1)
    driver.deliver(PulseRequest("E1", 0.0126, 60.4, 7.5, 3), 0.2)  # rounded to µA, µs, mHz
    assert device.wait_until(lambda: len(device.trains) == 3, WAIT_S)

    fields = [(t.seq, t.contact, t.amp_ua, t.width_us, t.freq_mhz, t.n_pulses, t.phase2_amp_ua,
               t.phase2_width_us) for t in device.trains]
    assert fields == [
        (1, 1, 1500, 90, 130000, 13, 1500, 90),  # E2 is contact 1; phase 2 defaults to phase 1
        (2, 0, 2000, 100, 20000, 50, 500, 400),
        (3, 0, 13, 60, 7500, 3, 13, 60),
    ]
    assert "TRAIN 1 1500 90 130000 13 1500 90*51" in device.commands

    driver.close()  # waits for the STOP's reply: every reply has been read
    summary = driver.summary()
    assert summary["trains_sent"] == 3
    assert summary["errors"] == 0 and summary["error"] is None
    assert summary["replies"] >= 4  # three trains and the closing STOP, pings maybe
    assert 0 < summary["reply_rtt_mean_ms"] <= summary["reply_rtt_max_ms"]
    assert not device.output_on
    assert events.items == []


@pytest.mark.timeout(20)
def test_a_new_train_on_a_contact_replaces_the_running_one(device, open_driver):
    driver, _ = open_driver()
    driver.deliver(LONG_TRAIN, 0.0)
    driver.deliver(PulseRequest("E2", 1.0, 100.0, 10.0, 100), 0.0)
    driver.deliver(PulseRequest("E1", 2.5, 100.0, 10.0, 100), 0.1)
    assert device.wait_until(lambda: len(device.trains) == 3, WAIT_S)

    active = device.active_trains()
    assert sorted(active) == [0, 1]
    assert active[0].amp_ua == 2500 and active[0].seq == 3  # the first E1 train is gone
    assert active[1].seq == 2
    assert device.output_on


@pytest.mark.timeout(20)
def test_a_replacing_train_keeps_the_contact_pulse_clock(device, open_driver):
    # 2 Hz trains: a replacement sent at once starts at the first pulse the old one had
    # left (0.5 s after it started), and so does a train sent right after a STOP
    driver, _ = open_driver()
    slow = PulseRequest("E1", 1.0, 100.0, 2.0, 10)
    driver.deliver(slow, 0.0)
    driver.deliver(slow, 0.0)
    assert device.wait_until(lambda: len(device.trains) == 2, WAIT_S)
    first, second = device.trains
    assert second.t_start == pytest.approx(first.t_start + 0.5)
    driver.safe_state("test")
    assert device.wait_until(lambda: not device.output_on, WAIT_S)
    driver.deliver(slow, 0.0)
    assert device.wait_until(lambda: len(device.trains) == 3, WAIT_S)
    # stopped before its first pulse: the third train starts at that same slot
    assert device.stops[-1].t < second.t_start
    assert device.trains[2].t_start == pytest.approx(second.t_start)


@pytest.mark.timeout(20)
def test_safe_state_turns_the_output_off_from_any_thread_and_is_idempotent(device, open_driver):
    driver, events = open_driver()
    driver.deliver(LONG_TRAIN, 0.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    n_stops = len(device.stops)

    worker = threading.Thread(target=driver.safe_state, args=("watchdog of the test",))
    worker.start()
    worker.join(WAIT_S)
    assert device.wait_until(lambda: not device.output_on, WAIT_S)
    assert device.stops[n_stops].cause == "command"

    driver.safe_state("again")
    driver.safe_state("and again")
    assert device.wait_until(lambda: len(device.stops) == n_stops + 3, WAIT_S)
    assert not device.output_on
    assert driver.error is None  # a stop is not a failure: the driver keeps working
    driver.deliver(LONG_TRAIN, 1.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    assert events.items == []


@pytest.mark.timeout(20)
def test_safe_state_never_raises_once_the_device_is_gone(device, open_driver):
    driver, events = open_driver()
    device.close()  # the cable is pulled
    assert "lost the device" in events.wait("stimulator_error")["message"]
    driver.safe_state("after the device vanished")
    with pytest.raises(StimulatorError, match="lost the device"):
        driver.deliver(LONG_TRAIN, 0.0)
    driver.close()
    driver.safe_state("after close")


@pytest.mark.timeout(20)
def test_device_err_forces_stop_and_the_next_deliver_raises_its_message(device, open_driver):
    driver, events = open_driver()
    driver.deliver(LONG_TRAIN, 0.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    device.fail_next(4, "compliance voltage exceeded")
    driver.deliver(PulseRequest("E2", 1.0, 100.0, 10.0, 100), 0.1)

    # the driver answers the ERR with a STOP, which turns the E1 train off
    assert device.wait_until(lambda: len(device.stops) == 2, WAIT_S)
    assert device.stops[1].cause == "command"
    assert not device.output_on
    assert len(device.trains) == 1  # the refused train never started

    with pytest.raises(StimulatorError, match="ERR 4 compliance voltage exceeded") as info:
        driver.deliver(LONG_TRAIN, 0.2)
    assert "TRAIN 1 1000 100 10000 100 1000 100" in str(info.value)  # which command it was
    assert "compliance voltage exceeded" in events.wait("stimulator_error")["message"]
    with pytest.raises(StimulatorError):  # and it stays failed
        driver.deliver(LONG_TRAIN, 0.3)
    assert sum(c.startswith("TRAIN") for c in device.commands) == 2
    assert driver.summary()["errors"] >= 1


@pytest.mark.timeout(20)
def test_a_silent_device_fails_within_a_bounded_time_after_stopping_output(device, open_driver):
    driver, events = open_driver(reply_timeout_s=0.1)
    driver.deliver(LONG_TRAIN, 0.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    device.go_silent()  # still receives and obeys, answers nothing: a broken TX wire
    t_silent = time.monotonic()

    assert device.wait_until(lambda: len(device.stops) == 2, WAIT_S), "no STOP was sent"
    assert device.stops[1].cause == "command"
    assert device.stops[1].t - t_silent < 3.0  # ping period + reply timeout, and then some
    assert not device.output_on
    assert "no answer" in events.wait("stimulator_error")["message"]
    with pytest.raises(StimulatorError, match="no answer from the device"):
        driver.deliver(LONG_TRAIN, 0.5)


@pytest.mark.timeout(20)
def test_a_reply_with_a_bad_checksum_is_an_error(device, open_driver):
    driver, events = open_driver()
    driver.deliver(LONG_TRAIN, 0.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    device.corrupt_next_reply()  # the next ping's reply comes back with a wrong checksum

    assert "bad checksum" in events.wait("stimulator_error")["message"]
    assert device.wait_until(lambda: len(device.stops) == 2, WAIT_S)
    assert not device.output_on
    with pytest.raises(StimulatorError, match="bad checksum"):
        driver.deliver(LONG_TRAIN, 0.1)


@pytest.mark.timeout(20)
def test_the_emulator_checks_what_the_host_sends(device):
    with serial.Serial(device.port, timeout=WAIT_S) as port:
        port.write(b"PING*10\n")
        assert _read_line(port) == b"OK*04\n"
        port.write(b"PING*11\n")  # one bit of noise in the checksum
        assert _read_line(port) == b"ERR 1 checksum*79\n"
        port.write(b"PINH*10\n")  # ... or in the body
        assert _read_line(port) == b"ERR 1 checksum*79\n"
        port.write(b"PING\n")  # no checksum at all
        assert _read_line(port) == b"ERR 1 checksum*79\n"
        port.write(b"ping*%02x\r\n" % _xor(b"ping"))  # lowercase hex, CRLF: valid, unknown
        assert _read_line(port).startswith(b"ERR 2 unknown command")
        body = b"TRAIN 7 1000 100 10000 5 1000 100"
        port.write(b"%s*%02X\n" % (body, _xor(body)))
        reply = _read_line(port)
        assert reply.startswith(b"ERR 3 ")
        assert _xor(reply[:-4]) == int(reply[-3:-1], 16)  # the device's replies carry checksums
        body = b"TRAIN 0 1000 100"
        port.write(b"%s*%02X\n" % (body, _xor(body)))
        assert _read_line(port).startswith(b"ERR 2 ")
        body = b"TRAIN 0 1000 100 10000 -5 1000 100"
        port.write(b"%s*%02X\n" % (body, _xor(body)))
        assert _read_line(port).startswith(b"ERR 2 bad n_pulses")
    assert device.trains == []
    assert device.commands[:2] == ["PING*10", "PING*11"]


_KILLED_HOST = textwrap.dedent("""
    import json, sys, time
    from bci_runtime.drivers.serial_stimulator import SerialStimulator
    from bci_runtime.drivers.stimulator_driver import DriverContext
    from bci_runtime.safety import PulseRequest
    from bci_runtime.stim_limits import StimulationLimits

    limits = StimulationLimits.model_validate(json.loads(sys.argv[2]))
    driver = SerialStimulator({"port": sys.argv[1], "device_watchdog_ms": 100,
                               "reply_timeout_s": 1.0})
    driver.open(DriverContext(name="stim", limits=limits))
    driver.deliver(PulseRequest("E1", 1.0, 100.0, 10.0, 100), 0.0)
    print("delivered", flush=True)
    time.sleep(120)
""")


@pytest.mark.timeout(60)
def test_the_device_watchdog_stops_the_output_when_the_host_is_killed(device):
    host = subprocess.Popen([sys.executable, "-c", _KILLED_HOST, device.port, json.dumps(LIMITS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = host.stdout.readline()
        assert line.strip() == "delivered", host.stderr.read() if host.poll() is not None else line
        assert device.wait_until(lambda: len(device.trains) == 1, WAIT_S)
        assert device.watchdog_ms == 100
        host.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        host.wait(WAIT_S)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        host.stdout.close()
        host.stderr.close()

    def watchdog_stops() -> list:
        return [s for s in device.stops if s.cause == "watchdog"]

    assert device.wait_until(lambda: bool(watchdog_stops()), 0.1 + WAIT_S)
    stop = watchdog_stops()[0]
    assert not device.output_on
    assert stop.t < device.trains[0].t_end  # cut short: the 10 s train was not over
    assert stop.t - t_kill < 0.1 + WAIT_S
    assert not device.commands[-1].startswith("STOP")  # nobody sent a STOP: the device did it


@pytest.mark.timeout(20)
def test_pings_keep_the_device_watchdog_fed_while_the_host_lives(device, open_driver):
    driver, _ = open_driver(device_watchdog_ms=1000, ping_s=0.05)
    driver.deliver(LONG_TRAIN, 0.0)
    assert device.wait_until(lambda: device.output_on, WAIT_S)
    # 1.5 s without a command from the host, 1.5 times the watchdog period
    tripped = device.wait_until(lambda: any(s.cause == "watchdog" for s in device.stops), 1.5)
    assert not tripped
    assert device.output_on
    assert device.commands.count("PING*10") >= 5
    assert driver.summary()["pings_sent"] >= 5


@pytest.mark.timeout(20)
def test_a_port_that_does_not_exist_is_named_with_a_hint():
    driver = SerialStimulator({"port": "/dev/ttyBCI-NO-SUCH-PORT"})
    context = DriverContext(name="stim", limits=StimulationLimits.model_validate(LIMITS))
    with pytest.raises(StimulatorError, match="/dev/ttyBCI-NO-SUCH-PORT") as info:
        driver.open(context)
    assert "serial_emulator" in str(info.value)
    driver.safe_state("never opened")  # still never raises


@pytest.mark.timeout(20)
def test_a_device_with_fewer_contacts_than_the_limits_is_a_config_error():
    with EmulatedStimulator(n_contacts=1) as small:
        driver = SerialStimulator({"port": small.port})
        context = DriverContext(name="stim", limits=StimulationLimits.model_validate(LIMITS))
        with pytest.raises(ConfigError, match="has 1 contacts but the limits declare 2"):
            driver.open(context)
        with serial.Serial(small.port, exclusive=True):  # the driver released the port
            pass


@pytest.mark.timeout(20)
def test_a_device_that_never_answers_hello(device):
    device.go_silent()
    driver = SerialStimulator({"port": device.port})
    driver.handshake_timeout_s = 0.3
    context = DriverContext(name="stim", limits=StimulationLimits.model_validate(LIMITS))
    with pytest.raises(StimulatorError, match="no answer from"):
        driver.open(context)
    assert device.commands[0] == "HELLO*42"


@pytest.mark.parametrize("params, field", [
    ({"port": "/dev/ttyACM0", "baud": 9600}, "baud"),
    ({"port": "/dev/ttyACM0", "device_watchdog_ms": 10}, "device_watchdog_ms"),
    ({"port": "/dev/ttyACM0", "device_watchdog_ms": 100, "ping_s": 0.08}, "ping_s"),
    ({}, "port"),
])
def test_bad_parameters_are_config_errors(params, field):
    with pytest.raises(ConfigError, match=field):
        SerialStimulator(params)
