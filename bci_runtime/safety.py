"""The safety supervisor: every stimulation request passes it, or nothing is emitted.

A :class:`SafetySupervisor` holds the declared
:class:`~bci_runtime.stim_limits.StimulationLimits` and decides on each
:class:`PulseRequest`:

* nothing leaves it before the operator arms it, after a disarm, an emergency
  stop, a watchdog trip, or during the lockout that follows a violation;
* after arming, the amplitude allowed ramps up linearly over ``ramp_s``;
* each request is checked against the limits in a fixed order: finite values,
  known contact, biphasic balance, pulse width, frequency, burst length,
  amplitude (the contact's cap, the dose profile's current, the total cap less
  what the other contacts' running trains draw, the charge its area takes at
  this width, the ramp), the rate, the session's dose. A
  request that breaks a limit is **clamped** to it or **rejected**, as the
  limits say (``on_violation``); what cannot be clamped (non-finite values, an
  unknown contact, an unbalanced pulse, no rate or dose left) is always
  rejected. A rejection for a limit starts the lockout.
* every request, clamp, rejection, arm, disarm and stop goes to the audit log
  with its reason.

A train replaces the one still running on its contact (the driver contract):
the replaced train is accounted with the pulses it delivered before ``t``, and
the new one starts at the old one's next pulse slot (the contact's pulse clock
is kept); a disarm or stop ends every running train. The rate limit holds for every
1-s window of the real pulse times: a train is let through only if its pulses
plus all of every train still running within the last second stay within
``max_pulses_per_s`` (all of the trains that can share a window with it).

What it emits is within the limits by construction: the property tests drive
it with random request sequences and check every emitted pulse with
:func:`~bci_runtime.envelope_check.find_violations`, which replays the pulse
times independently.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from bci_runtime.stim_limits import StimulationLimits, shannon_max_charge_uc

Action = Literal["emit", "clamp", "reject"]
State = Literal["disarmed", "armed", "stopped"]


@dataclass(frozen=True)
class PulseRequest:
    """A train of ``n_pulses`` charge-balanced biphasic pulses on one contact.

    Attributes
    ----------
    contact : str
    amplitude_ma : float
        Current of the first phase (mA).
    width_us : float
        Width of the first phase (µs).
    frequency_hz : float
        Pulse rate of the train.
    n_pulses : int
    phase2_amplitude_ma, phase2_width_us : float, optional
        The second (charge-recovery) phase; the first phase's values when omitted.
    """

    contact: str
    amplitude_ma: float
    width_us: float
    frequency_hz: float
    n_pulses: int = 1
    phase2_amplitude_ma: float | None = None
    phase2_width_us: float | None = None

    @property
    def charge_uc(self) -> float:
        """Charge of the first phase (µC)."""
        return self.amplitude_ma * self.width_us / 1000.0

    @property
    def phase2_charge_uc(self) -> float:
        """Charge of the second phase (µC)."""
        amplitude = self.amplitude_ma if self.phase2_amplitude_ma is None \
            else self.phase2_amplitude_ma
        width = self.width_us if self.phase2_width_us is None else self.phase2_width_us
        return amplitude * width / 1000.0

    @property
    def duration_s(self) -> float:
        """How long the train lasts."""
        return self.n_pulses / self.frequency_hz


@dataclass(frozen=True)
class Decision:
    """What the supervisor made of one request.

    Attributes
    ----------
    action : {"emit", "clamp", "reject"}
    pulse : PulseRequest or None
        What may go to the driver (clamped when ``action`` is ``clamp``);
        None when rejected.
    reasons : tuple of str
        Every limit applied, empty for ``emit``.
    """

    action: Action
    pulse: PulseRequest | None
    reasons: tuple[str, ...] = ()


class _Train:
    """A train let through: when it starts, how many pulses, when its next pulse would be."""

    __slots__ = ("t", "n", "frequency_hz", "amplitude_ma", "end")

    def __init__(self, t: float, pulse: PulseRequest) -> None:
        self.t, self.n = t, pulse.n_pulses
        self.frequency_hz, self.amplitude_ma = pulse.frequency_hz, pulse.amplitude_ma
        self.end = t + pulse.duration_s  # one period after its last pulse: the next slot

    def delivered_by(self, t: float) -> int:
        """Pulses sent before ``t`` (at t0 + k/f, k = 0..n-1)."""
        return min(self.n, max(0, math.ceil((t - self.t) * self.frequency_hz - 1e-9)))

    def cut(self, t: float) -> float:
        """End the train at ``t`` (replaced or stopped); returns the on-time given back (s)."""
        if t >= self.end:
            return 0.0
        delivered = self.delivered_by(t)
        returned = (self.n - delivered) / self.frequency_hz
        self.n, self.end = delivered, self.t + delivered / self.frequency_hz
        return returned


class SafetySupervisor:
    """Enforces :class:`StimulationLimits` on requests; off until armed.

    Not thread-safe: the stimulator node calls it under its output lock.

    Parameters
    ----------
    limits : StimulationLimits
    audit : AuditLog, optional
        Where every decision is logged.
    """

    def __init__(self, limits: StimulationLimits, audit: Any = None) -> None:
        self.limits = limits
        self.audit = audit
        self.state: State = "disarmed"
        self._contacts = {c.name: c for c in limits.contacts}
        self._armed_at = math.inf
        self._lockout_until = -math.inf
        self._trains: deque[_Train] = deque()  # in request order, until 1 s after they end
        self._running: dict[str, _Train] = {}  # the newest train of each contact
        self._last: dict[str, _Train] = {}  # the same, kept across stops (pulse spacing)
        self._on_time_s = 0.0
        self.counts = {"requests": 0, "emitted": 0, "clamped": 0, "rejected": 0}

    # -- operator ---------------------------------------------------------------------

    def arm(self, t: float, by: str) -> bool:
        """Allow stimulation from ``t`` on, ramping up over ``ramp_s``; False when locked out."""
        if t < self._lockout_until:
            self._log("arm_refused", t, reason=f"locked out until {self._lockout_until:.3f}",
                      by=by)
            return False
        self.state, self._armed_at = "armed", t
        self._log("arm", t, by=by, ramp_s=self.limits.ramp_s)
        return True

    def disarm(self, t: float, reason: str) -> None:
        """Safe state; arming again is needed."""
        self.state = "disarmed"
        self._end_trains(t)
        self._log("disarm", t, reason=reason)

    def emergency_stop(self, t: float, source: str) -> None:
        """Safe state at once, from the CLI, the web page or a signal."""
        self.state = "stopped"
        self._end_trains(t)
        self._log("emergency_stop", t, source=source)

    def _end_trains(self, t: float) -> None:
        for train in self._running.values():
            self._on_time_s -= train.cut(t)
        self._running.clear()

    # -- requests ---------------------------------------------------------------------

    def request(self, req: PulseRequest, t: float, log: bool = True) -> Decision:
        """Decide on ``req`` at time ``t`` (seconds, monotonic).

        With ``log=False`` the caller logs the decision itself with
        :meth:`log_decision`, right after acting on it (the stimulator node hands the
        pulse to the driver first, then writes the audit line, under one lock).
        """
        self.counts["requests"] += 1
        decision = self._decide(req, t)
        self.counts[{"emit": "emitted", "clamp": "clamped", "reject": "rejected"}[
            decision.action]] += 1
        if decision.pulse is not None:
            replaced = self._running.get(req.contact)
            if replaced is not None:
                self._on_time_s -= replaced.cut(t)
            train = _Train(self._start_of(req.contact, t), decision.pulse)
            self._trains.append(train)
            self._running[req.contact] = self._last[req.contact] = train
            self._on_time_s += decision.pulse.duration_s
        if log:
            self.log_decision(req, decision, t)
        return decision

    def log_decision(self, req: PulseRequest, decision: Decision, t: float) -> None:
        """Write one decision to the audit log."""
        # vars(), not asdict(): the fields are plain numbers, and asdict's deep copy
        # costs more than the whole decision
        self._log(decision.action, t, request=vars(req), reasons=list(decision.reasons),
                  emitted=None if decision.pulse is None else vars(decision.pulse))

    def _decide(self, req: PulseRequest, t: float) -> Decision:
        lim = self.limits
        if self.state != "armed":
            return Decision("reject", None, (f"not armed ({self.state})",))
        if t < self._lockout_until:
            return Decision("reject", None, (f"locked out until {self._lockout_until:.3f}",))
        values = (req.amplitude_ma, req.width_us, req.frequency_hz, req.n_pulses,
                  req.phase2_amplitude_ma or 0.0, req.phase2_width_us or 0.0)
        if not all(math.isfinite(v) for v in values):
            return self._violation(t, "a non-finite value")
        if min(values[:4]) <= 0 or min(values[4:]) < 0:
            return self._violation(t, "amplitude, width, frequency and pulses must be > 0")
        contact = self._contacts.get(req.contact)
        if contact is None:
            return self._violation(t, f"unknown contact {req.contact!r}")
        q1, q2 = req.charge_uc, req.phase2_charge_uc
        if abs(q1 - q2) > lim.balance_tolerance * q1:
            return self._violation(t, f"unbalanced biphasic pulse: {q1:.4g} vs {q2:.4g} µC")
        reasons: list[str] = []
        width = min(max(req.width_us, lim.pulse_width_us.min), lim.pulse_width_us.max)
        if width != req.width_us:
            reasons.append(f"pulse width {req.width_us:g} µs outside "
                           f"[{lim.pulse_width_us.min:g}, {lim.pulse_width_us.max:g}]")
        freq = min(max(req.frequency_hz, lim.frequency_hz.min), lim.frequency_hz.max)
        if freq != req.frequency_hz:
            reasons.append(f"frequency {req.frequency_hz:g} Hz outside "
                           f"[{lim.frequency_hz.min:g}, {lim.frequency_hz.max:g}]")
        n = min(int(req.n_pulses), lim.max_burst_pulses)
        if n != req.n_pulses:
            reasons.append(f"burst of {req.n_pulses} above {lim.max_burst_pulses} pulses")
        charge = min(shannon_max_charge_uc(contact.area_cm2, lim.shannon_k),
                     lim.max_charge_density_uc_cm2 * contact.area_cm2)
        others = sum(train.amplitude_ma for name, train in self._running.items()
                     if name != req.contact and train.end > t)
        cap = min(contact.max_current_ma, lim.dose.max_current_ma,
                  lim.max_total_current_ma - others, charge * 1000.0 / width)
        amplitude = req.amplitude_ma
        if amplitude > cap:
            amplitude = cap
            reasons.append(f"amplitude {req.amplitude_ma:g} mA above {cap:.4g} mA (the "
                           f"contact's cap, the total less {others:.4g} mA running on other "
                           f"contacts, or the charge its area takes at {width:g} µs)")
        if reasons and lim.on_violation == "reject":
            return self._violation(t, "; ".join(reasons))
        # the ramp after arming is no violation: it always clamps
        ramp = max(0.0, min(1.0, (t - self._armed_at) / lim.ramp_s))
        if amplitude > cap * ramp:
            amplitude = cap * ramp
            reasons.append(f"ramp: {ramp:.0%} of {cap:.4g} mA {t - self._armed_at:.3f} s "
                           "after arming")
        if amplitude <= 0:
            return Decision("reject", None, tuple(reasons))
        left = lim.max_pulses_per_s - self._pulses_near(t, req.contact)
        if n > left:
            return self._violation(t, f"rate: {n} pulses with {max(left, 0):g} left in the "
                                   f"last second (max {lim.max_pulses_per_s:g}/s)")
        # phase 2 left out: what is emitted is balanced exactly
        out = PulseRequest(req.contact, amplitude, width, freq, n)
        replaced = self._running.get(req.contact)
        on_time = self._on_time_s
        if replaced is not None and replaced.end > t:  # what the replaced train will not send
            on_time -= (replaced.n - replaced.delivered_by(t)) / replaced.frequency_hz
        if on_time + out.duration_s > lim.dose.max_minutes * 60.0 + 1e-9:
            return self._violation(t, f"dose: {self._on_time_s / 60:.2f} of "
                                   f"{lim.dose.max_minutes:g} min used")
        return Decision("clamp" if reasons else "emit", out, tuple(reasons))

    def _start_of(self, contact: str, t: float) -> float:
        """When a train asked for at ``t`` starts: at the contact's next pulse slot.

        A train replacing (or following the stop of) one whose next pulse was due
        after ``t`` keeps that pulse clock, so pulses on a contact never come closer
        than the previous train's period, however fast the updates come.
        """
        last = self._last.get(contact)
        return t if last is None else max(t, last.end)

    def _pulses_near(self, t: float, contact: str) -> int:
        """Pulses of the trains that can share a 1-s window with a train starting at ``t``.

        Every train still running after ``t - 1`` counts whole, except the pulses the
        contact's running train will not deliver (a new train there replaces it).
        """
        trains = self._trains
        while trains and trains[0].end <= t - 1.0:
            trains.popleft()
        total = sum(train.n for train in trains if train.end > t - 1.0)
        replaced = self._running.get(contact)
        if replaced is not None and replaced.end > t:
            total -= replaced.n - replaced.delivered_by(t)
        return total

    def _violation(self, t: float, reason: str) -> Decision:
        self._lockout_until = t + self.limits.lockout_s
        return Decision("reject", None, (reason, f"lockout {self.limits.lockout_s:g} s"))

    def _log(self, event: str, t: float, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.write(event, t=t, **fields)
