"""Non-stationarity: composable drift scenarios with onset, ramp and seed.

A scenario is a list of drift components. Each starts at ``onset_s`` (seconds
since the stream started), reaches its full size after ``ramp_s`` (0: a jump),
and draws whatever it needs (which channels, which direction) from its own
``seed``, so adding a component never changes what the others do. The
generators ask :meth:`Drift.effects_at` once per block and apply what concerns
them; every component announces itself as ground-truth markers::

    drift/electrode-shift/start {"ramp_s": 60.0, "shift_mm": 20.0}
    drift/electrode-shift/end {"ramp_s": 60.0, "shift_mm": 20.0}

Components
----------
electrode-shift
    The cap (or grid) moves by ``shift_mm``: the mixing matrix from sources to
    electrodes is recomputed at the displaced positions.
impedance
    A fraction of the channels change gain and get noisier.
channel-dropout
    Channels go flat, rail, or turn to noise, one after the other over the ramp.
tuning-drift
    Preferred directions rotate, PD_new = rho PD_old + sqrt(1 - rho^2) PD_perp,
    i.e. by arccos(rho) per simulated day in a random sense per unit, and
    baseline rates shift by about half of the mean on a fraction of units
    (Perge et al. 2013).
fatigue
    Modulation depth (ERD, tuning) shrinks and posterior alpha grows.
transport
    Timestamp jitter, dropped chunks, and a jump of the clock offset.

Presets compose these: see :data:`PRESETS` and :func:`preset`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bci_runtime.errors import ConfigError

# -- what the drift does at one moment ----------------------------------------------------


@dataclass
class ShiftEffect:
    """One electrode displacement, ``fraction`` of the way to ``shift_mm``."""

    key: int  # identifies the component, so generators can cache its mixing matrix
    shift_mm: float
    seed: int
    fraction: float


@dataclass
class DriftEffects:
    """The state of every drift at one time; neutral values mean no drift.

    Attributes
    ----------
    gain : ndarray, shape (n_channels,)
        Multiplies the signal of each channel (electrode impedance).
    noise_scale : ndarray, shape (n_channels,)
        Multiplies the sensor noise of each channel.
    dropout : ndarray of int8, shape (n_channels,)
        0 working, 1 flat, 2 railed, 3 noise only.
    shifts : list of ShiftEffect
        Electrode displacements in effect.
    pd_angle : ndarray, shape (n_units,)
        Rotation of each unit's (or electrode's) preferred direction (rad).
    rate_gain : ndarray, shape (n_units,)
        Multiplies each unit's baseline rate (or high-gamma power).
    modulation : float
        Multiplies the depth of task modulation (ERD, tuning); fatigue lowers it.
    alpha : float
        Multiplies the amplitude of resting posterior alpha.
    drop_prob : float
        Probability that a chunk is lost in transport.
    jitter_s : float
        Standard deviation of the timestamp jitter (s).
    clock_offset_s : float
        Offset added to the timestamps (a clock jump).
    """

    gain: np.ndarray
    noise_scale: np.ndarray
    dropout: np.ndarray
    pd_angle: np.ndarray
    rate_gain: np.ndarray
    shifts: list[ShiftEffect] = field(default_factory=list)
    modulation: float = 1.0
    alpha: float = 1.0
    drop_prob: float = 0.0
    jitter_s: float = 0.0
    clock_offset_s: float = 0.0

    @classmethod
    def neutral(cls, n_channels: int, n_units: int = 0) -> DriftEffects:
        return cls(gain=np.ones(n_channels), noise_scale=np.ones(n_channels),
                   dropout=np.zeros(n_channels, np.int8), pd_angle=np.zeros(n_units),
                   rate_gain=np.ones(n_units))


# -- components (configuration) -------------------------------------------------------------
class _Component(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    onset_s: float = Field(30.0, ge=0, description="when it starts (s after stream start)")
    ramp_s: float = Field(60.0, ge=0, description="time to reach full size (0: a jump)")
    seed: int = Field(0, ge=0, description="seed of its own random draws")

    def progress(self, t: float) -> float:
        """0 before the onset, rising linearly to 1 at the end of the ramp."""
        if t < self.onset_s:
            return 0.0
        if self.ramp_s == 0:
            return 1.0
        return min(1.0, (t - self.onset_s) / self.ramp_s)

    def details(self) -> dict[str, float | int | str]:
        """What changes and by how much (for the drift markers)."""
        return self.model_dump(exclude={"kind", "onset_s", "seed"})


class ElectrodeShift(_Component):
    kind: Literal["electrode-shift"] = "electrode-shift"
    shift_mm: float = Field(20.0, gt=0, le=50, description="displacement of the cap or grid")


class Impedance(_Component):
    kind: Literal["impedance"] = "impedance"
    fraction: float = Field(0.3, gt=0, le=1, description="fraction of channels affected")
    gain_change: float = Field(0.5, ge=0, lt=1, description="largest relative gain change")
    noise_increase: float = Field(8.0, ge=0, description="added noise, in units of the baseline "
                                  "sensor noise")


class ChannelDropout(_Component):
    kind: Literal["channel-dropout"] = "channel-dropout"
    fraction: float = Field(0.25, gt=0, le=1, description="fraction of channels lost")
    mode: Literal["flat", "railed", "noisy", "mixed"] = "mixed"


class TuningDrift(_Component):
    kind: Literal["tuning-drift"] = "tuning-drift"
    rho: float = Field(0.91, ge=0, le=1, description="PD correlation per simulated day")
    days: float = Field(1.0, gt=0, description="simulated days elapsed over the ramp")
    baseline_fraction: float = Field(0.84, ge=0, le=1,
                                     description="fraction of units whose baseline shifts")
    baseline_change: float = Field(0.5, ge=0, lt=1,
                                   description="baseline change, as a fraction of the mean")


class Fatigue(_Component):
    kind: Literal["fatigue"] = "fatigue"
    modulation_loss: float = Field(0.5, ge=0, le=1,
                                   description="fraction of the ERD/tuning depth lost")
    alpha_gain: float = Field(0.6, ge=0, description="relative growth of posterior alpha")


class Transport(_Component):
    kind: Literal["transport"] = "transport"
    jitter_ms: float = Field(2.0, ge=0, description="timestamp jitter (standard deviation)")
    drop_prob: float = Field(0.02, ge=0, lt=1, description="probability of losing a chunk")
    clock_jump_s: float = Field(0.0, description="offset added to timestamps after the onset")


DriftComponent = Annotated[ElectrodeShift | Impedance | ChannelDropout | TuningDrift | Fatigue
                           | Transport, Field(discriminator="kind")]


# -- presets ------------------------------------------------------------------------------
PRESETS = ("stationary", "electrode-shift", "impedance-drift", "channel-dropout", "tuning-drift",
           "fatigue", "session-jump", "day-to-day", "transport-faults")


def preset(name: str, onset_s: float = 30.0, ramp_s: float = 60.0, day_s: float = 120.0,
           days: int = 4, rho: float = 0.91, seed: int = 0,
           shift_mm: float = 20.0) -> list[DriftComponent]:
    """The drift components of a named scenario.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`.
    onset_s, ramp_s : float
        When the drift starts and how long it takes (s since the stream started).
    day_s : float
        Length of a simulated day (``session-jump`` jumps once at ``onset_s``;
        ``day-to-day`` jumps at every ``day_s``).
    days : int
        Number of simulated days for ``day-to-day``.
    rho : float
        Correlation of preferred directions from one day to the next.
    seed : int
        Seed of the scenario; each component derives its own.
    shift_mm : float
        Electrode displacement of ``electrode-shift``; the day jumps move the
        electrodes by a quarter to 60% of it.

    Raises
    ------
    ConfigError
        For an unknown name or an out-of-range value.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown drift scenario {name!r}",
                          hint=f"use one of: {', '.join(PRESETS)}")
    if not 0.0 <= rho <= 1.0:
        raise ConfigError(f"rho must be within [0, 1], got {rho}",
                          hint="rho is the correlation of preferred directions across one day, "
                               "e.g. 0.91")
    common = {"onset_s": onset_s, "ramp_s": ramp_s}
    if name == "stationary":
        return []
    if name == "electrode-shift":
        return [ElectrodeShift(**common, seed=seed, shift_mm=shift_mm)]
    if name == "impedance-drift":
        return [Impedance(**common, seed=seed)]
    if name == "channel-dropout":
        return [ChannelDropout(**common, seed=seed)]
    if name == "tuning-drift":
        return [TuningDrift(**common, seed=seed, rho=rho)]
    if name == "fatigue":
        return [Fatigue(**common, seed=seed)]
    if name == "transport-faults":
        return [Transport(**common, seed=seed, clock_jump_s=0.5)]
    if name == "session-jump":
        return _jump(onset_s, rho, seed, shift_mm)
    return [c for day in range(1, days + 1)
            for c in _jump(onset_s + (day - 1) * day_s, rho, seed + 101 * day, shift_mm)]


def _jump(at: float, rho: float, seed: int, shift_mm: float) -> list[DriftComponent]:
    """Everything changes at once, as between two recording days."""
    rng = np.random.default_rng(seed)
    return [
        ElectrodeShift(onset_s=at, ramp_s=0, seed=seed + 1,
                       shift_mm=float(rng.uniform(0.25, 0.6)) * shift_mm),
        Impedance(onset_s=at, ramp_s=0, seed=seed + 2, fraction=0.25, gain_change=0.3,
                  noise_increase=1.0),
        TuningDrift(onset_s=at, ramp_s=0, seed=seed + 3, rho=rho, days=1.0),
        Fatigue(onset_s=at, ramp_s=0, seed=seed + 4, modulation_loss=float(rng.uniform(0.0, 0.3)),
                alpha_gain=float(rng.uniform(0.0, 0.4))),
    ]


# -- the drift in effect -----------------------------------------------------------------
class Drift:
    """A scenario bound to a stream: what each component does to which channels.

    Parameters
    ----------
    components : sequence of DriftComponent
        The scenario.
    n_channels : int
        Channels of the stream.
    n_units : int
        Tuned units (population) or tuned electrodes (ECoG); 0 when nothing is tuned.
    """

    def __init__(self, components: Sequence[DriftComponent], n_channels: int,
                 n_units: int = 0) -> None:
        self.components = sorted(components, key=lambda c: c.onset_s)
        self.n_channels, self.n_units = n_channels, n_units
        self._draws = [self._draw(c) for c in self.components]
        self._details = [json.dumps(c.details(), sort_keys=True) for c in self.components]
        # (time, key, phase) of every marker still to announce, in time order
        self._due = sorted((t, order, key, phase) for key, c in enumerate(self.components)
                           for order, (phase, t) in enumerate((("start", c.onset_s),
                                                               ("end", c.onset_s + c.ramp_s))))

    def _draw(self, c: DriftComponent) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(np.random.SeedSequence([c.seed, hash_kind(c.kind)]))
        n, u = self.n_channels, self.n_units
        if isinstance(c, Impedance):
            hit = rng.permutation(n)[: max(1, round(c.fraction * n))]
            gain = np.zeros(n)
            gain[hit] = rng.uniform(-c.gain_change, c.gain_change, hit.size)
            noise = np.zeros(n)
            noise[hit] = c.noise_increase * rng.uniform(0.5, 1.0, hit.size)
            return {"gain": gain, "noise": noise}
        if isinstance(c, ChannelDropout):
            order = rng.permutation(n)[: max(1, round(c.fraction * n))]
            modes = {"flat": 1, "railed": 2, "noisy": 3}
            mode = (rng.integers(1, 4, order.size) if c.mode == "mixed"
                    else np.full(order.size, modes[c.mode]))
            # each channel fails at its own time within the ramp
            when = c.onset_s + c.ramp_s * np.arange(order.size) / max(1, order.size)
            return {"channels": order, "modes": mode.astype(np.int8), "when": when}
        if isinstance(c, TuningDrift):
            sense = rng.choice([-1.0, 1.0], u)
            shifted = rng.random(u) < c.baseline_fraction
            change = np.where(shifted, rng.choice([-1.0, 1.0], u) * c.baseline_change
                              * rng.uniform(0.6, 1.4, u), 0.0)
            return {"sense": sense, "baseline": np.clip(change, -0.9, None)}
        return {}

    def effects_at(self, t: float) -> DriftEffects:
        """The combined effect of every component at ``t`` (s since the stream started)."""
        e = DriftEffects.neutral(self.n_channels, self.n_units)
        for key, (c, draw) in enumerate(zip(self.components, self._draws)):
            p = c.progress(t)
            if p <= 0.0:
                continue
            if isinstance(c, ElectrodeShift):
                e.shifts.append(ShiftEffect(key, c.shift_mm, c.seed, p))
            elif isinstance(c, Impedance):
                e.gain = e.gain * (1.0 + p * draw["gain"])
                e.noise_scale = e.noise_scale + p * draw["noise"]
            elif isinstance(c, ChannelDropout):
                gone = draw["when"] <= t
                e.dropout[draw["channels"][gone]] = draw["modes"][gone]
            elif isinstance(c, TuningDrift):
                e.pd_angle = e.pd_angle + draw["sense"] * np.arccos(c.rho) * c.days * p
                e.rate_gain = e.rate_gain * (1.0 + p * draw["baseline"])
            elif isinstance(c, Fatigue):
                e.modulation *= 1.0 - p * c.modulation_loss
                e.alpha *= 1.0 + p * c.alpha_gain
            elif isinstance(c, Transport):
                e.drop_prob = 1.0 - (1.0 - e.drop_prob) * (1.0 - c.drop_prob)
                e.jitter_s = float(np.hypot(e.jitter_s, c.jitter_ms / 1000.0))
                e.clock_offset_s += c.clock_jump_s
        return e

    def markers_between(self, t_from: float, t_to: float) -> list[tuple[str, float]]:
        """Drift markers with times in ``[t_from, t_to)``, each announced once.

        Called with consecutive windows; a marker before ``t_from`` that was never
        asked for is skipped.

        Returns
        -------
        list of (str, float)
            ``drift/<kind>/start {json}`` at the onset and ``drift/<kind>/end {json}``
            when the ramp completes, with their times.
        """
        out = []
        while self._due and self._due[0][0] < t_to:
            t, _, key, phase = self._due.pop(0)
            if t >= t_from:
                kind = self.components[key].kind
                out.append((f"drift/{kind}/{phase} {self._details[key]}", t))
        return out

    @property
    def transport(self) -> bool:
        """Whether any component disturbs the transport."""
        return any(isinstance(c, Transport) for c in self.components)


def hash_kind(kind: str) -> int:
    """A stable small integer for a component kind (seeds must not depend on PYTHONHASHSEED)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(kind))


def rotate_2d(vectors: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate 2-D vectors by per-row angles.

    Parameters
    ----------
    vectors : ndarray, shape (n, 2)
    angles : ndarray, shape (n,)
        Radians, counter-clockwise.

    Returns
    -------
    ndarray, shape (n, 2)
    """
    c, s = np.cos(angles), np.sin(angles)
    x, y = vectors[:, 0], vectors[:, 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=1)
