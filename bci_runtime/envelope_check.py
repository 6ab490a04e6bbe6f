"""Check what reached a stimulator against its limits, after the fact and independently.

The supervisor decides request by request; this module replays what it let
through (the trains sent to the driver, with the arms and stops between them)
as real pulse times, the way the driver contract says a device delivers them: a
train runs ``n_pulses`` at ``frequency_hz`` from the contact's next pulse slot,
until a newer train on its contact or a stop cuts it. Then every limit is
checked on those times: per-pulse values, charge, balance, the ramp after
arming, the current drawn by all contacts at once, every 1-s window of pulses,
the session's dose.

It is the oracle of the property tests and gives the run summary its
``emitted_outside_limits``, so a supervisor bug shows up as a number, not as a
claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from bci_runtime.safety import PulseRequest
from bci_runtime.stim_limits import StimulationLimits, shannon_max_charge_uc

#: relative slack for floating-point comparisons
_EPS = 1e-9


def find_violations(limits: StimulationLimits,
                    events: Iterable[tuple[Any, ...]]) -> list[str]:
    """Every limit broken by what was delivered.

    Parameters
    ----------
    limits : StimulationLimits
    events : iterable of tuple
        In time order: ``("arm", t)``, ``("stop", t)`` (a disarm, an emergency
        stop, a watchdog trip: every output off) and ``("train", t, pulse)`` for
        each :class:`~bci_runtime.safety.PulseRequest` sent to the driver.

    Returns
    -------
    list of str
        One line per violation; empty when everything stayed inside the limits.
    """
    contacts = {c.name: c for c in limits.contacts}
    problems: list[str] = []
    trains: list[list[Any]] = []  # [start, pulse, delivered pulses, next pulse slot]
    running: dict[str, list[Any]] = {}
    last: dict[str, list[Any]] = {}  # kept across stops: a contact's pulse clock
    armed_at: float | None = None

    def cut(train: list[Any], t: float) -> None:
        start, pulse = train[0], train[1]
        n = min(pulse.n_pulses, max(0, math.ceil((t - start) * pulse.frequency_hz - _EPS)))
        train[2], train[3] = n, start + n / pulse.frequency_hz

    for event in events:
        kind, t = event[0], event[1]
        if kind == "arm":
            armed_at = t
            continue
        if kind == "stop":
            armed_at = None
            for train in running.values():
                if train[3] > t:
                    cut(train, t)
            running.clear()
            continue
        pulse: PulseRequest = event[2]
        where = f"train at {t:.6f} s on {pulse.contact!r}"
        if armed_at is None:
            problems.append(f"{where}: delivered while not armed")
        problems.extend(f"{where}: {p}" for p in _pulse_problems(limits, contacts, pulse))
        contact = contacts.get(pulse.contact)
        if contact is not None and armed_at is not None:
            ramp = max(0.0, min(1.0, (t - armed_at) / limits.ramp_s))
            if pulse.amplitude_ma > contact.max_current_ma * ramp * (1 + _EPS):
                problems.append(f"{where}: {pulse.amplitude_ma:g} mA above the ramp "
                                f"({ramp:.0%} of {contact.max_current_ma:g} mA)")
        previous = running.get(pulse.contact)
        if previous is not None and previous[3] > t:
            cut(previous, t)
        drawn = pulse.amplitude_ma + sum(tr[1].amplitude_ma for name, tr in running.items()
                                         if name != pulse.contact and tr[0] <= t < tr[3])
        if drawn > limits.max_total_current_ma * (1 + _EPS):
            problems.append(f"{where}: {drawn:g} mA drawn by all contacts, above "
                            f"{limits.max_total_current_ma:g} mA")
        n = max(0, int(pulse.n_pulses)) if math.isfinite(pulse.n_pulses) else 0
        freq = pulse.frequency_hz if pulse.frequency_hz > 0 else math.inf
        before = last.get(pulse.contact)
        start = t if before is None else max(t, before[3])  # the driver contract
        train = [start, pulse, n, start + n / freq]
        trains.append(train)
        running[pulse.contact] = last[pulse.contact] = train
    problems.extend(_rate_and_dose_problems(limits, trains))
    return problems


def _pulse_problems(limits: StimulationLimits, contacts: dict, pulse: PulseRequest) -> list[str]:
    values = (pulse.amplitude_ma, pulse.width_us, pulse.frequency_hz, pulse.n_pulses)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        return [f"a value that is not finite and > 0: {values}"]
    contact = contacts.get(pulse.contact)
    if contact is None:
        return ["an unknown contact"]
    out = []
    cap = min(contact.max_current_ma, limits.dose.max_current_ma)
    if pulse.amplitude_ma > cap * (1 + _EPS):
        out.append(f"{pulse.amplitude_ma:g} mA above the cap {cap:g} mA")
    w, f = limits.pulse_width_us, limits.frequency_hz
    if not w.min <= pulse.width_us <= w.max:
        out.append(f"pulse width {pulse.width_us:g} µs outside [{w.min:g}, {w.max:g}]")
    if not f.min <= pulse.frequency_hz <= f.max:
        out.append(f"frequency {pulse.frequency_hz:g} Hz outside [{f.min:g}, {f.max:g}]")
    if not 1 <= pulse.n_pulses <= limits.max_burst_pulses:
        out.append(f"{pulse.n_pulses} pulses in a burst (max {limits.max_burst_pulses})")
    q = pulse.charge_uc
    shannon = shannon_max_charge_uc(contact.area_cm2, limits.shannon_k)
    if q > shannon * (1 + _EPS):
        out.append(f"{q:.4g} µC per phase above Shannon's k={limits.shannon_k:g} "
                   f"({shannon:.4g} µC)")
    if q / contact.area_cm2 > limits.max_charge_density_uc_cm2 * (1 + _EPS):
        out.append(f"{q / contact.area_cm2:.4g} µC/cm² above "
                   f"{limits.max_charge_density_uc_cm2:g}")
    if abs(q - pulse.phase2_charge_uc) > limits.balance_tolerance * q * (1 + _EPS):
        out.append(f"unbalanced: {q:.4g} vs {pulse.phase2_charge_uc:.4g} µC")
    return out


def _rate_and_dose_problems(limits: StimulationLimits, trains: list[list[Any]]) -> list[str]:
    kept = [(t, p, n) for t, p, n, _ in trains if n > 0 and p.frequency_hz > 0]
    if not kept:
        return []
    out = []
    times = np.sort(np.concatenate([t + np.arange(n) / p.frequency_hz for t, p, n in kept]))
    # pulses in the window (p - 1 s, p] ending at each pulse p: the most any window holds
    in_window = np.arange(1, len(times) + 1) - np.searchsorted(times, times - 1.0, side="right")
    worst = int(in_window.max())
    if worst > limits.max_pulses_per_s:
        at = float(times[int(in_window.argmax())])
        out.append(f"{worst} pulses in the second before {at:.6f} s "
                   f"(max {limits.max_pulses_per_s:g}/s)")
    on_time = sum(n / p.frequency_hz for _, p, n in kept)
    if on_time > limits.dose.max_minutes * 60.0 * (1 + _EPS):
        out.append(f"dose: {on_time / 60:.3f} min of stimulation "
                   f"(max {limits.dose.max_minutes:g} min)")
    return out
