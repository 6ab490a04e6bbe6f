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
from bci_runtime.safety import PulseRequest, SafetySupervisor
from bci_runtime.stim_limits import StimulationLimits, shannon_max_charge_uc

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
    for k in range(4):  # 4 x 50 pulses within one second: the rate limit is 200/s
        assert s.request(pulse(n_pulses=50), 2.0 + 0.1 * k).action == "emit"
    assert "rate" in s.request(pulse(n_pulses=1), 2.5).reasons[0]
    assert s.request(pulse(n_pulses=50), 3.5).action == "emit"  # a second later
    # the dose: 1 min of stimulation in all; trains of 50 pulses at 1 Hz last 50 s
    assert s.request(pulse(n_pulses=50, frequency_hz=1.0), 10.0).action == "emit"
    assert "dose" in s.request(pulse(n_pulses=50, frequency_hz=1.0), 100.0).reasons[0]


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
    t, armed_at, emitted = 0.0, None, []
    for command in [("arm", 0.0), *sequence]:  # armed first: most requests can get through
        t += command[1]
        if command[0] == "arm":
            if s.arm(t, by="property"):  # refused during a lockout
                armed_at = t
        elif command[0] == "stop":
            s.emergency_stop(t, source="property")
        else:
            d = s.request(command[2], t)
            if d.pulse is not None:
                emitted.append((t, d.pulse, armed_at))
    contacts = {c.name: c for c in lim.contacts}
    for t, p, armed_at in emitted:
        c = contacts[p.contact]
        assert all(math.isfinite(v) for v in (p.amplitude_ma, p.width_us, p.frequency_hz))
        assert 0 < p.amplitude_ma <= c.max_current_ma + 1e-9
        assert p.amplitude_ma <= lim.max_total_current_ma + 1e-9
        assert lim.pulse_width_us.min <= p.width_us <= lim.pulse_width_us.max
        assert lim.frequency_hz.min <= p.frequency_hz <= lim.frequency_hz.max
        assert 1 <= p.n_pulses <= lim.max_burst_pulses
        q = p.charge_uc
        assert q <= shannon_max_charge_uc(c.area_cm2, lim.shannon_k) * (1 + 1e-9)
        assert q / c.area_cm2 <= lim.max_charge_density_uc_cm2 * (1 + 1e-9)
        assert abs(q - p.phase2_charge_uc) <= lim.balance_tolerance * q
        assert p.amplitude_ma <= c.max_current_ma * min(1.0, (t - armed_at) / lim.ramp_s) \
            + 1e-9
    for t0 in {t for t, _, _ in emitted}:
        in_window = sum(p.n_pulses for t, p, _ in emitted if t0 - 1.0 < t <= t0)
        assert in_window <= lim.max_pulses_per_s
    assert sum(p.duration_s for _, p, _ in emitted) <= lim.dose.max_minutes * 60 + 1e-9


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
