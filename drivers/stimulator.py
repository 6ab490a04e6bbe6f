"""The stimulator node: decoder output -> stimulation requests -> supervisor -> driver.

Two modes:

* ``triggered``: when a channel of the control stream (a class probability, a
  detector's output) rises through ``threshold``, one burst is requested
  (``n_pulses`` at ``frequency_hz``), at most once per ``refractory_s``;
* ``continuous``: adaptive-DBS-like amplitude modulation. The newest value of a
  biomarker channel maps to a target amplitude ``offset_ma + gain_ma * x``
  within ``[min_ma, max_ma]``; the amplitude moves toward it at most
  ``slew_ma_per_s``, and each control chunk sends a train that lasts until the
  watchdog's deadline, so output ends by itself when updates stop.

Every request passes the :class:`~bci_runtime.safety.SafetySupervisor` and only
what it lets through reaches the driver, under one lock. The node is off when
it opens and after every safe state: the operator arms it (``bci run --arm``, a
key, the calibration wizard). Its watchdog forces the safe state when the
control stream goes stale (no sample for max(3 sample periods, 50 ms), or
``stale_ms``) or carries NaN/Inf; the runtime does the same on a node failure
anywhere, a lost worker process and an emergency stop. Everything goes to the
append-only audit log (``audit.jsonl`` in the session folder).

Outputs: ``pulses``, one row per train delivered (see
:mod:`.simulated_stimulator`), and ``safety``, markers of arms, safe states and
refusals; both are recorded in the session.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bci_runtime.actuator import Actuator
from bci_runtime.audit_log import AuditLog
from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.drivers.simulated_stimulator import pulse_row, pulse_spec
from bci_runtime.drivers.stimulator_driver import DriverContext, StimulatorDriver
from bci_runtime.envelope_check import find_violations
from bci_runtime.errors import ConfigError
from bci_runtime.node import Emitted, Input, NodeContext, NodeParams, Output
from bci_runtime.safety import PulseRequest, SafetySupervisor
from bci_runtime.spec import StreamSpec
from bci_runtime.stim_limits import StimulationLimits, check_limits, load_limits, parse_limits
from bci_runtime.watchdog import Watchdog, stale_timeout


class TriggerParams(NodeParams):
    """A burst when the control channel rises through a threshold."""

    channel: str | int = Field(0, description="control channel (name or index)")
    threshold: float = Field(description="rising through it triggers a burst")
    refractory_s: float = Field(1.0, ge=0, description="no new burst this soon after one")
    contact: str
    amplitude_ma: float = Field(gt=0)
    width_us: float = Field(gt=0)
    frequency_hz: float = Field(gt=0)
    n_pulses: int = Field(ge=1)


class ModulationParams(NodeParams):
    """Amplitude that follows a biomarker with a bounded slew rate."""

    channel: str | int = Field(0, description="biomarker channel (name or index)")
    contact: str
    width_us: float = Field(gt=0)
    frequency_hz: float = Field(gt=0)
    gain_ma: float = Field(1.0, description="mA per unit of the biomarker")
    offset_ma: float = Field(0.0, description="amplitude at a biomarker of 0")
    min_ma: float = Field(0.0, ge=0)
    max_ma: float = Field(gt=0)
    slew_ma_per_s: float = Field(1.0, gt=0, description="fastest amplitude change")

    @model_validator(mode="after")
    def _ordered(self) -> ModulationParams:
        if self.min_ma > self.max_ma:
            raise ValueError(f"min_ma {self.min_ma} is above max_ma {self.max_ma}")
        return self


class StimulatorParams(NodeParams):
    limits: str | dict[str, Any] = Field(
        description="stimulation limits: a YAML file (`bci safety check` it) or inline")
    driver: dict[str, Any] = Field(
        default_factory=lambda: {"type": "simulated"},
        description="{type: simulated | serial | lsl_markers, ...its options}")
    mode: Literal["triggered", "continuous"]
    trigger: TriggerParams | None = None
    modulation: ModulationParams | None = None
    stale_ms: float | None = Field(None, gt=0, description="watchdog deadline (default "
                                   "max(3 sample periods, 50 ms) of the control stream)")
    audit_log: str | None = Field(None, description="audit log path (default "
                                  "audit.jsonl in the session folder)")

    @model_validator(mode="after")
    def _mode_has_its_settings(self) -> StimulatorParams:
        if self.mode == "triggered" and self.trigger is None:
            raise ValueError("mode 'triggered' needs a 'trigger:' section")
        if self.mode == "continuous" and self.modulation is None:
            raise ValueError("mode 'continuous' needs a 'modulation:' section")
        return self


def make_driver(config: dict[str, Any]) -> StimulatorDriver:
    """A driver from its configuration (``{type: ..., options}``); nothing is opened."""
    options = dict(config)
    kind = options.pop("type", None)
    if kind == "serial":
        from bci_runtime.drivers.serial_stimulator import SerialStimulator
        return SerialStimulator(options)  # validates its options, naming the field
    if kind == "simulated":
        from bci_runtime.drivers.simulated_stimulator import SimulatedStimulator as driver
    elif kind == "lsl_markers":
        from bci_runtime.drivers.lsl_marker_stimulator import LslMarkerStimulator as driver
    else:
        raise ConfigError(f"driver.type: unknown stimulator driver {kind!r}",
                          hint="use simulated, serial or lsl_markers")
    try:
        return driver(**options)
    except TypeError:
        raise ConfigError(f"driver: {kind} takes no option(s) {sorted(options)}",
                          hint="simulated takes `lsl: true|false`; lsl_markers takes none") \
            from None


class Stimulator(Actuator):
    """Drives a stimulator from decoder output, behind the safety supervisor."""

    type_name = "stimulator"
    Params = StimulatorParams
    control = Input("signal", doc="decoder output or biomarker driving the stimulation")
    pulses = Output("signal", doc="(n, 8) trains delivered: contact, mA, µs, ..., µC")
    safety = Output("events", doc="arms, safe states, refusals")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        p = self.params
        self.limits = self._load_limits()
        check_limits(self.limits)
        make_driver(p.driver)  # its options are checked with the rest of the pipeline
        settings = p.trigger if p.mode == "triggered" else p.modulation
        names = [c.name for c in self.limits.contacts]
        if settings.contact not in names:
            raise ConfigError(f"node '{self.name}': {p.mode} contact {settings.contact!r} is "
                              f"not in the limits' contacts {names}")
        spec = inputs.get("control")
        if spec is not None:
            self._channel = self._channel_index(spec, settings.channel)
            self._stale_s = (p.stale_ms / 1000.0 if p.stale_ms is not None
                             else stale_timeout(spec.srate) if spec.srate > 0 else None)
            if self._stale_s is None:
                raise self.spec_error("control", "the control stream has no nominal rate, "
                                      "so the watchdog has no deadline",
                                      hint="set the node's stale_ms")
            if p.mode == "continuous":
                n = math.ceil(p.modulation.frequency_hz * self._stale_s)
                if n > self.limits.max_burst_pulses:
                    raise ConfigError(
                        f"node '{self.name}': modulation.frequency_hz "
                        f"{p.modulation.frequency_hz:g} Hz over the {self._stale_s * 1000:g} ms "
                        f"a train lasts is {n} pulses, above max_burst_pulses "
                        f"{self.limits.max_burst_pulses}",
                        hint="lower stale_ms or the frequency, or raise max_burst_pulses")
        return {"pulses": pulse_spec(f"{self.name}-pulses"),
                "safety": StreamSpec(name=f"{self.name}-safety", type="Markers",
                                     channel_names=("event",), srate=0.0, dtype="string")}

    def _load_limits(self) -> StimulationLimits:
        limits = self.params.limits
        if isinstance(limits, dict):
            return parse_limits(limits, f"node '{self.name}' limits")
        path = Path(limits)
        if not path.is_file():
            raise ConfigError(f"node '{self.name}': limits file '{limits}' not found "
                              f"(from {Path.cwd()})",
                              hint="give a path relative to where you run bci, or absolute")
        return load_limits(path)

    def _channel_index(self, spec: StreamSpec, channel: str | int) -> int:
        if isinstance(channel, int):
            if not 0 <= channel < spec.n_channels:
                raise self.spec_error("control", f"channel {channel} out of range: the stream "
                                      f"has {spec.n_channels} channel(s)")
            return channel
        if channel not in spec.channel_names:
            raise self.spec_error("control", f"no channel {channel!r}; it has "
                                  f"{list(spec.channel_names)}")
        return spec.channel_names.index(channel)

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, context: NodeContext) -> None:
        super().open(context)
        p = self.params
        self._clock = context.clock
        self._simulated = bool(getattr(context.clock, "simulated", False))
        self._lock = threading.Lock()
        path = (Path(p.audit_log) if p.audit_log else
                context.session_dir / "audit.jsonl" if context.session_dir else None)
        self._audit = AuditLog(path) if path is not None else None
        self._supervisor = SafetySupervisor(self.limits, self._audit)
        self._contact_index = {c.name: i for i, c in enumerate(self.limits.contacts)}
        self._watchdog: Watchdog | None = None
        self._last_t: float | None = None  # newest control sample (simulated-clock watchdog)
        self._stale = False
        self._pending: list[str] = []  # safety markers to emit with the next chunk
        self._delivered: list[tuple[Any, ...]] = []  # for the envelope check at the end
        self._safe_ms: list[float] = []
        self.stalls = 0
        self.non_finite = 0
        self.emergency_stops = 0
        self._above = False
        self._last_trigger = -math.inf
        self._amplitude = 0.0
        self._last_update: float | None = None
        self._driver: StimulatorDriver | None = None
        driver = make_driver(p.driver)
        driver.open(DriverContext(name=self.name, limits=self.limits,
                                  emit_event=context.emit_event, session_dir=context.session_dir,
                                  source_id=f"{self.name}-{context.seed}-{id(self):x}"))
        self._driver = driver
        self._log("open", mode=p.mode, driver=p.driver.get("type"),
                  limits=self.limits.model_dump(), stale_ms=self._stale_s * 1000.0)

    def close(self) -> None:
        driver = getattr(self, "_driver", None)
        if driver is not None:
            with self._lock:
                t = self._clock.now()
                self._supervisor.disarm(t, "run ended")
                self._delivered.append(("stop", t))
                driver.close()
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.close()
        if getattr(self, "_audit", None) is not None:
            self._audit.close()

    # -- hot path ------------------------------------------------------------------------
    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if isinstance(chunk, EventChunk) or not len(chunk.timestamps):
            return self._flush([])
        self._watch(chunk)
        data = chunk.data
        if not np.isfinite(data).all():
            self.non_finite += 1
            self.go_safe(f"non-finite input on '{port}' at t={chunk.timestamps[-1]:.3f}")
            return self._flush([])
        if self._supervisor.state != "armed":
            self._track_disarmed(chunk)
            return self._flush([])
        now = self._clock.now()
        rows = (self._triggered(chunk, now) if self.params.mode == "triggered"
                else self._modulated(chunk, now))
        return self._flush(rows)

    def _watch(self, chunk: Chunk) -> None:
        """Feed the watchdog: a thread on the live clock, the timestamps on a simulated one."""
        if self._simulated:
            newest = float(chunk.timestamps[-1])
            if self._last_t is not None and newest - self._last_t > self._stale_s:
                gap = newest - self._last_t
                self._on_stale(f"input stale: nothing for {gap * 1000:.1f} ms (limit "
                               f"{self._stale_s * 1000:.1f} ms)", time.monotonic())
            self._last_t = newest
            return
        dog = self._watchdog
        if dog is None:  # watch from the first sample on
            self._watchdog = Watchdog(self._stale_s, self._on_stale_trip, name="input")
            return
        if dog.tripped is not None:
            dog.reset()
            self._pending.append("input resumed")
        dog.feed()

    def _triggered(self, chunk: Chunk, now: float) -> list[list[float]]:
        trig = self.params.trigger
        above = chunk.data[:, self._channel] >= trig.threshold
        rising = np.flatnonzero(above & ~np.concatenate(([self._above], above[:-1])))
        self._above = bool(above[-1])
        rows = []
        for i in rising.tolist():  # crossings, not samples: rare
            ts = float(chunk.timestamps[i])
            if ts - self._last_trigger < trig.refractory_s:
                continue
            self._last_trigger = ts
            row = self._request(PulseRequest(trig.contact, trig.amplitude_ma, trig.width_us,
                                             trig.frequency_hz, trig.n_pulses), now)
            if row is not None:
                rows.append(row)
        return rows

    def _modulated(self, chunk: Chunk, now: float) -> list[list[float]]:
        mod = self.params.modulation
        x = float(chunk.data[-1, self._channel])
        target = min(max(mod.offset_ma + mod.gain_ma * x, mod.min_ma), mod.max_ma)
        dt = 0.0 if self._last_update is None else max(0.0, now - self._last_update)
        self._last_update = now
        step = mod.slew_ma_per_s * dt
        amplitude = self._amplitude + min(max(target - self._amplitude, -step), step)
        if amplitude <= 1e-6:  # off: the running train ends by itself at its deadline
            self._amplitude = 0.0
            return []
        n = math.ceil(mod.frequency_hz * self._stale_s)
        row = self._request(PulseRequest(mod.contact, amplitude, mod.width_us,
                                         mod.frequency_hz, n), now)
        # the slew continues from what was delivered (a ramp or a clamp may have cut it)
        self._amplitude = row[1] if row is not None else 0.0
        return [row] if row is not None else []

    def _request(self, req: PulseRequest, now: float) -> list[float] | None:
        """The only way to the driver: the supervisor's decision, under the output lock."""
        with self._lock:
            decision = self._supervisor.request(req, now, log=False)
            pulse = decision.pulse
            if pulse is not None:  # the output first, its audit line right after it
                self._driver.deliver(pulse, now)  # type: ignore[union-attr]
            self._supervisor.log_decision(req, decision, now)
            if pulse is None:
                self._pending.append(f"reject: {'; '.join(decision.reasons)}")
                return None
            self._delivered.append(("train", now, pulse))
        limits_hit = [r for r in decision.reasons if not r.startswith("ramp")]
        if limits_hit:  # the ramp after arming is expected, not news
            self._pending.append(f"clamp: {'; '.join(limits_hit)}")
        return pulse_row(pulse, self._contact_index[pulse.contact])

    def _track_disarmed(self, chunk: Chunk) -> None:
        """Keep the mode's state current while off, so arming starts from now."""
        if self.params.mode == "triggered":
            self._above = bool(chunk.data[-1, self._channel] >= self.params.trigger.threshold)
        else:
            self._amplitude, self._last_update = 0.0, None

    def _flush(self, rows: list[list[float]]) -> Emitted:
        out: dict[str, AnyChunk] = {}
        now = self._clock.now()
        if rows:
            out["pulses"] = Chunk(np.asarray(rows, dtype=np.float64),
                                  np.full(len(rows), now), self.output_specs["pulses"])
        if self._pending:
            with self._lock:
                markers, self._pending = tuple(self._pending), []
            out["safety"] = EventChunk(markers, np.full(len(markers), now),
                                       self.output_specs["safety"])
        return out or None

    # -- safety --------------------------------------------------------------------------
    def _on_stale_trip(self, reason: str) -> None:
        dog = self._watchdog
        self._on_stale(reason, dog.trip_deadline if dog is not None else None)

    def _on_stale(self, reason: str, detected_at: float | None) -> None:
        self.stalls += 1
        self.go_safe(reason, detected_at)

    def go_safe(self, reason: str, detected_at: float | None = None) -> None:
        self._stop(reason, detected_at, emergency=False)

    def emergency_stop(self, source: str) -> None:
        self.emergency_stops += 1
        self._stop(source, None, emergency=True)

    def _stop(self, reason: str, detected_at: float | None, emergency: bool) -> None:
        driver = getattr(self, "_driver", None)
        if driver is None:
            return
        detected_at = time.monotonic() if detected_at is None else detected_at
        # the output lock keeps a decision and its delivery together; should the hot path
        # hang inside the driver, the output is stopped without waiting for it
        if not self._lock.acquire(timeout=0.005):
            driver.safe_state(reason)
            self._lock.acquire()
        try:
            t = self._clock.now()
            if emergency:
                self._supervisor.emergency_stop(t, reason)
            else:
                self._supervisor.disarm(t, reason)
            driver.safe_state(reason)
            self._delivered.append(("stop", t))
            ms = (time.monotonic() - detected_at) * 1000.0
            self._safe_ms.append(ms)
            self._pending.append(f"{'emergency stop' if emergency else 'safe'}: {reason}")
        finally:
            self._lock.release()
        self._log("safe_state", reason=reason, emergency=emergency, safe_ms=round(ms, 4))
        if self.context is not None:
            self.context.emit_event("emergency_stop" if emergency else "safe_state",
                                    node=self.name, reason=reason, safe_ms=round(ms, 4))

    def arm(self, by: str) -> bool:
        driver = getattr(self, "_driver", None)
        if driver is None:
            return False
        dog = self._watchdog
        if dog is not None and dog.tripped is not None:
            self._log("arm_refused", by=by, reason=f"the control input is stale ({dog.tripped})")
            return False
        with self._lock:
            t = self._clock.now()
            armed = self._supervisor.arm(t, by)
            if armed:
                self._delivered.append(("arm", t))
                self._pending.append(f"armed by {by}")
        if self.context is not None:
            self.context.emit_event("armed" if armed else "arm_refused", node=self.name, by=by)
        return armed

    @property
    def state(self) -> str:
        """``disarmed``, ``armed`` or ``stopped`` (an emergency stop)."""
        supervisor = getattr(self, "_supervisor", None)
        return supervisor.state if supervisor is not None else "disarmed"

    def arming_summary(self) -> str:
        rows = check_limits(self.limits)
        p = self.params
        settings = p.trigger if p.mode == "triggered" else p.modulation
        caps = ", ".join(f"{r['contact']} ≤ {r['current_cap_ma']:g} mA / "
                         f"{r['max_charge_uc']:g} µC" for r in rows)
        return (f"stimulator '{self.name}' ({p.driver.get('type')}, {p.mode} on "
                f"{settings.contact}): {caps}; ramp {self.limits.ramp_s:g} s, "
                f"{self.limits.on_violation} on violation")

    def _log(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.write(event, t=self._clock.now(), node=self.name, **fields)

    # -- results -------------------------------------------------------------------------
    def safety_summary(self) -> dict[str, Any]:
        supervisor = getattr(self, "_supervisor", None)
        if supervisor is None:
            return {}
        counts = supervisor.counts
        return {"stalls": self.stalls, "safe_state_ms": list(self._safe_ms),
                "requests": counts["requests"], "clamped": counts["clamped"],
                "rejected": counts["rejected"],
                "emitted_outside_limits": len(find_violations(self.limits, self._delivered)),
                "non_finite_inputs": self.non_finite, "emergency_stops": self.emergency_stops}

    def summary(self) -> dict[str, Any]:
        driver = getattr(self, "_driver", None)
        return {"safety": self.safety_summary(), "state": self.state,
                "driver": driver.summary() if driver is not None else {}}
