"""The watchdog: trips once when not fed, at once when told, again only after a reset."""

from __future__ import annotations

import threading
import time

import pytest

from bci_runtime.errors import ConfigError
from bci_runtime.safety import PulseRequest, SafetySupervisor
from bci_runtime.stim_limits import StimulationLimits
from bci_runtime.watchdog import Watchdog, stale_timeout


def test_stale_timeout_is_three_periods_or_50_ms() -> None:
    assert stale_timeout(1000.0) == 0.05
    assert stale_timeout(10.0) == pytest.approx(0.3)
    assert stale_timeout(0.0) == 0.05


def test_a_fed_watchdog_does_not_trip_and_a_starved_one_trips_once() -> None:
    tripped = threading.Event()
    reasons: list[str] = []

    def on_trip(reason: str) -> None:
        reasons.append(reason)
        tripped.set()

    dog = Watchdog(0.5, on_trip, name="input")  # generous: a loaded CI machine stalls
    try:
        for _ in range(60):  # 0.6 s of feeding every 10 ms
            dog.feed()
            time.sleep(0.01)
        assert not reasons
        assert tripped.wait(2.0)  # starved
        time.sleep(0.6)
        assert len(reasons) == 1 and "input stale" in reasons[0]
        assert len(dog.late_s) == 1 and dog.late_s[0] >= 0
        dog.reset()  # watching again
        tripped.clear()
        assert tripped.wait(2.0) and len(reasons) == 2
    finally:
        dog.close()


def test_trip_is_immediate_and_reported_once() -> None:
    reasons: list[str] = []
    dog = Watchdog(10.0, reasons.append)
    try:
        dog.trip("NaN in the decoder output")
        dog.trip("decoder failed")
        assert reasons == ["NaN in the decoder output"] and dog.tripped == reasons[0]
    finally:
        dog.close()


def test_a_trip_puts_the_supervisor_in_the_safe_state() -> None:
    limits = StimulationLimits.model_validate({
        "contacts": [{"name": "E1", "area_cm2": 0.06, "max_current_ma": 3.0}],
        "max_total_current_ma": 3.0, "pulse_width_us": {"min": 60, "max": 200},
        "frequency_hz": {"min": 1, "max": 100}, "max_pulses_per_s": 100,
        "max_burst_pulses": 10})
    supervisor = SafetySupervisor(limits)
    supervisor.arm(0.0, by="test")
    dog = Watchdog(10.0, lambda reason: supervisor.disarm(2.0, reason=f"watchdog: {reason}"))
    try:
        request = PulseRequest("E1", 1.0, 100.0, 50.0, 5)
        assert supervisor.request(request, 1.5).action == "emit"
        dog.trip("stream reconnected with another channel count")
        decision = supervisor.request(request, 2.5)
        assert decision.action == "reject" and "not armed" in decision.reasons[0]
    finally:
        dog.close()


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        Watchdog(0.0, print)
