"""The safety supervisor: off until armed, ramp, clamp or reject, lockout, audit log.

The property test drives it with random request sequences (hypothesis) and checks
every emitted pulse against the limits; ``BCI_SAFETY_EXAMPLES`` sets how many
sequences (10^5 for the issue's figure, a few hundred in the suite).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bci_runtime.audit_log import AuditLog, read_audit_log
from bci_runtime.envelope_check import find_violations
from bci_runtime.safety import PulseRequest, SafetySupervisor
from bci_runtime.stim_limits import StimulationLimits

LIMITS = {
    "contacts": [{"name": "E1", "area_cm2": 0.06, "max_current_ma": 3.0},
                 {"name": "E2", "area_cm2": 0.02, "max_current_ma": 2.0}],
    "max_total_current_ma": 5.0, "pulse_width_us": {"min": 60, "max": 200},
    "frequency_hz": {"min": 1, "max": 185}, "max_pulses_per_s": 200, "max_burst_pulses": 50,
    "lockout_s": 5.0, "ramp_s": 1.0, "dose": {"max_current_ma": 4.0, "max_minutes": 1.0},
}


def limits(**changes) -> StimulationLimits:
    return StimulationLimits.model_validate({**LIMITS, **changes})


def pulse(amplitude: float = 1.0, **fields) -> PulseRequest:
    return PulseRequest(**{"contact": "E1", "amplitude_ma": amplitude, "width_us": 100.0,
                           "frequency_hz": 100.0, "n_pulses": 10, **fields})


def test_nothing_is_emitted_before_arming_and_the_amplitude_ramps_up() -> None:
    s = SafetySupervisor(limits())
    assert s.request(pulse(), 0.0).action == "reject"
    s.arm(10.0, by="test")
    ramping = s.request(pulse(2.0), 10.5)
    assert ramping.action == "clamp" and ramping.pulse.amplitude_ma == pytest.approx(1.5)
    assert any("ramp" in r for r in ramping.reasons)
    assert s.request(pulse(2.0), 11.5).action == "emit"


@pytest.mark.parametrize("mode, action", [("clamp", "clamp"), ("reject", "reject")])
def test_a_request_above_a_limit_is_clamped_or_rejected_and_a_rejection_locks_out(
        mode: str, action: str) -> None:
    s = SafetySupervisor(limits(on_violation=mode))
    s.arm(0.0, by="test")
    d = s.request(pulse(9.0, width_us=500.0), 2.0)  # above the cap, width above the range
    assert d.action == action
    if action == "clamp":
        assert d.pulse.amplitude_ma == pytest.approx(3.0) and d.pulse.width_us == 200.0
        assert s.request(pulse(), 2.1).action == "emit"  # a clamp does not lock out
    else:
        assert d.pulse is None and any("lockout" in r for r in d.reasons)
        assert s.request(pulse(), 2.1).action == "reject"  # locked out
        assert s.request(pulse(), 7.1).action == "emit"    # after the lockout


def test_what_cannot_be_clamped_is_always_rejected() -> None:
    s = SafetySupervisor(limits(on_violation="clamp", lockout_s=0.0))
    s.arm(0.0, by="test")
    for bad, why in [(pulse(math.nan), "non-finite"), (pulse(contact="E9"), "unknown contact"),
                     (pulse(phase2_amplitude_ma=0.5), "unbalanced"),
                     (pulse(-1.0), "must be > 0")]:
        d = s.request(bad, 5.0)
        assert d.action == "reject" and why in d.reasons[0]


def test_rate_and_dose_limits() -> None:
    s = SafetySupervisor(limits(lockout_s=0.0))
    s.arm(0.0, by="test")
    for k in range(4):  # 4 x 50 pulses back to back (0.27 s each): the limit is 200/s
        assert s.request(pulse(n_pulses=50, frequency_hz=185.0), 2.0 + 0.3 * k).action == "emit"
    assert "rate" in s.request(pulse(n_pulses=1, contact="E2"), 3.0).reasons[0]
    assert s.request(pulse(n_pulses=50), 4.0).action == "emit"  # a second later
    # the dose: 1 min of stimulation in all; trains of 50 pulses at 1 Hz last 50 s
    assert s.request(pulse(n_pulses=50, frequency_hz=1.0), 10.0).action == "emit"
    assert "dose" in s.request(pulse(n_pulses=50, frequency_hz=1.0), 100.0).reasons[0]


def test_a_train_replaces_the_one_running_on_its_contact() -> None:
    # continuous modulation: every 0.1 s a 0.2 s train at 100 Hz; each replaces the last,
    # so 100 pulses/s are delivered and the 200/s limit holds without refusing any
    s = SafetySupervisor(limits(lockout_s=0.0, ramp_s=0.1))
    s.arm(0.0, by="test")
    decisions = [s.request(pulse(n_pulses=20), 1.0 + 0.1 * k) for k in range(30)]
    assert [d.action for d in decisions] == ["emit"] * 30
    # the total current counts what other contacts draw while their trains run
    d = s.request(pulse(2.5, contact="E2", n_pulses=5), 3.95)
    assert d.action == "reject" and "running on other contacts" in d.reasons[0]
    s.disarm(4.0, reason="end")  # a disarm ends the running trains
    s.arm(4.0, by="test")
    assert s.request(pulse(1.9, contact="E2", n_pulses=5), 5.0).action == "emit"


def test_updates_faster_than_the_pulse_rate_keep_the_contact_pulse_clock() -> None:
    # a 250 Hz control stream re-sends a 130 Hz train every 4 ms: each new train starts
    # at the next pulse slot, so the pulses stay 1/130 s apart and none is refused
    s = SafetySupervisor(limits(lockout_s=0.0, ramp_s=0.1))
    s.arm(0.0, by="test")
    delivered = [("arm", 0.0)]
    for k in range(1250):  # 5 s
        t = 1.0 + k / 250
        d = s.request(pulse(n_pulses=7, frequency_hz=130.0), t)
        assert d.action == "emit", d.reasons
        delivered.append(("train", t, d.pulse))
    assert find_violations(limits(), delivered) == []


def test_emergency_stop_and_disarm_need_a_new_arm() -> None:
    s = SafetySupervisor(limits())
    s.arm(0.0, by="test")
    s.emergency_stop(2.0, source="key")
    assert s.request(pulse(), 2.0).action == "reject"
    s.arm(3.0, by="test")
    s.disarm(5.0, reason="end")
    assert s.request(pulse(), 5.0).reasons[0] == "not armed (disarmed)"


@st.composite
def requests(draw) -> PulseRequest:
    """Mostly plausible requests, a fifth beyond the limits, one in ten broken."""
    kind = draw(st.integers(0, 9))
    contact = "E3" if draw(st.integers(0, 19)) == 0 else draw(st.sampled_from(["E1", "E2"]))
    wide = kind in (1, 2)
    amplitude = draw(st.floats(0.01, 12 if wide else 6))
    width = draw(st.floats(20, 400) if wide else st.floats(60, 200))
    frequency = draw(st.floats(0.5, 400) if wide else st.floats(1, 60))
    n = draw(st.integers(1, 120) if wide else st.integers(1, 30))
    phase2 = {}
    if kind == 0:  # broken: a bad value or an unbalanced second phase
        field = draw(st.sampled_from(["amplitude", "width", "n", "phase2"]))
        if field == "amplitude":
            amplitude = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
        elif field == "width":
            width = draw(st.sampled_from([0.0, math.nan]))
        elif field == "n":
            n = 0
        else:
            phase2 = {"phase2_amplitude_ma": draw(st.floats(0, 12))}
    elif draw(st.booleans()):  # an explicit second phase that balances (width and current)
        phase2 = {"phase2_amplitude_ma": amplitude / 2, "phase2_width_us": width * 2}
    return PulseRequest(contact, amplitude, width, frequency, n, **phase2)


@st.composite
def commands(draw) -> tuple:
    kind = draw(st.integers(0, 13))
    if kind == 0:
        return ("arm", draw(st.floats(0, 2)))
    if kind == 1:
        return ("stop", draw(st.floats(0, 2)))
    return ("request", draw(st.floats(0, 0.5)), draw(requests()))


@settings(max_examples=int(os.environ.get("BCI_SAFETY_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands(), min_size=5, max_size=40), st.sampled_from(["clamp", "reject"]))
def test_no_sequence_of_requests_gets_a_pulse_outside_the_limits(sequence, mode) -> None:
    # a tight rate (60 pulses/s, bursts up to 50) so that the rate limit binds, and a small
    # contact whose declared cap is more than its area takes at long pulses (a configuration
    # `bci safety check` refuses): the supervisor must hold the charge limit by itself
    lim = limits(on_violation=mode, lockout_s=0.2, max_pulses_per_s=60,
                 frequency_hz={"min": 1, "max": 60},
                 contacts=[{"name": "E1", "area_cm2": 0.06, "max_current_ma": 3.0},
                           {"name": "E2", "area_cm2": 0.02, "max_current_ma": 5.0}])
    s = SafetySupervisor(lim)
    t, delivered = 0.0, []
    for command in [("arm", 0.0), *sequence]:  # armed first: most requests can get through
        t += command[1]
        if command[0] == "arm":
            if s.arm(t, by="property"):  # refused during a lockout
                delivered.append(("arm", t))
        elif command[0] == "stop":
            s.emergency_stop(t, source="property")
            delivered.append(("stop", t))
        else:
            d = s.request(command[2], t)
            if d.pulse is not None:
                delivered.append(("train", t, d.pulse))
    assert find_violations(lim, delivered) == []


def test_the_envelope_check_finds_what_breaks_the_limits() -> None:
    # the oracle of the property test must itself see each kind of violation
    # E3: a small contact whose cap is more than its area takes (`bci safety check` says so)
    lim = limits(contacts=[*LIMITS["contacts"],
                           {"name": "E3", "area_cm2": 0.01, "max_current_ma": 5.0}])
    ok = pulse(1.0, n_pulses=10)
    assert find_violations(lim, [("arm", 0.0), ("train", 2.0, ok)]) == []
    cases = {
        "not armed": [("train", 2.0, ok)],
        "above the cap": [("arm", 0.0), ("train", 2.0, pulse(3.5))],
        "pulse width": [("arm", 0.0), ("train", 2.0, pulse(width_us=250.0))],
        "frequency": [("arm", 0.0), ("train", 2.0, pulse(frequency_hz=190.0))],
        "in a burst": [("arm", 0.0), ("train", 2.0, pulse(n_pulses=60))],
        "Shannon": [("arm", 0.0), ("train", 2.0, pulse(3.9, contact="E3", width_us=200.0))],
        "µC/cm²": [("arm", 0.0), ("train", 2.0, pulse(3.9, contact="E3", width_us=200.0))],
        "unbalanced": [("arm", 0.0), ("train", 2.0, pulse(phase2_amplitude_ma=0.9))],
        "ramp": [("arm", 0.0), ("train", 0.5, pulse(2.0))],
        "drawn by all contacts": [("arm", 0.0), ("train", 2.0, pulse(3.0, n_pulses=50)),
                                  ("train", 2.1, pulse(2.5, contact="E2", n_pulses=5))],
        "in the second": [("arm", 0.0)] + [("train", 2.0 + 0.2 * k, pulse(
            n_pulses=50, frequency_hz=185.0, contact=("E1", "E2")[k % 2])) for k in range(6)],
        "dose": [("arm", 0.0), ("train", 2.0, pulse(n_pulses=50, frequency_hz=1.0)),
                 ("train", 60.0, pulse(n_pulses=20, frequency_hz=1.0))],
    }
    for words, events in cases.items():
        found = find_violations(lim, events)
        assert any(words in v for v in found), (words, found)
    # a stop cuts the running train: after it, the same trains are within the dose
    assert find_violations(lim, [("arm", 0.0), ("train", 2.0, pulse(n_pulses=50,
                           frequency_hz=1.0)), ("stop", 10.0), ("arm", 20.0),
                           ("train", 60.0, pulse(n_pulses=20, frequency_hz=1.0))]) == []


def test_every_decision_is_in_the_audit_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    s = SafetySupervisor(limits(), audit=log)
    s.request(pulse(), 0.0)
    s.arm(1.0, by="operator")
    s.request(pulse(9.0), 3.0)
    s.disarm(4.0, reason="done")
    log.close()
    records = read_audit_log(tmp_path / "audit.jsonl")
    assert [r["event"] for r in records] == ["reject", "arm", "reject", "disarm"]
    assert records[1]["by"] == "operator" and "lockout" in records[2]["reasons"][-1]
    assert all(a["t_mono"] <= b["t_mono"] for a, b in zip(records, records[1:]))


def test_the_audit_log_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    code = (f"from bci_runtime.audit_log import AuditLog\nimport sys, time\n"
            f"log = AuditLog({str(path)!r})\n"
            "for i in range(100):\n    log.write('request', i=i)\n"
            "print('written', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r["i"] for r in read_audit_log(path)] == list(range(100))
