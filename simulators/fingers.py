"""Cued finger flexion for the ECoG simulator: the task, the movements and the somatotopy.

The ``fingers`` kinematics of :class:`~bci_runtime.simulators.ecog.EcogGenerator`
(after the BCI Competition IV ECoG finger data and Miller's *fingerflex*): cued
trials of the five fingers (:class:`~bci_runtime.simulators.tasks.CuedTrials`,
markers ``trial/start``, ``cue/<finger>``, ``end``, ``trial/end``, balanced
random order). After a reaction time the cued finger flexes over and over until
the ``end`` marker: smooth raised-cosine cycles at 1-2 Hz whose rate and peak
flexion vary from one movement to the next; its neighbours flex along a little
(about 15 %), the other fingers stay at rest. Flexion is 0 (extended) to 1
(fully flexed), per sample (:data:`FINGERS`, the ground truth's columns).

The movements of trial ``k`` are drawn from a generator seeded by ``k``, and the
flexion is a function of the sample time, so the stream does not depend on how
it is cut into blocks.

:class:`Somatotopy` places each finger's cortical spot under the grid: Gaussian
spots from thumb to little along one axis, ``spacing_mm`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bci_runtime.simulators.base import require_low_high
from bci_runtime.simulators.tasks import CuedTrials, TrialTiming

FINGERS = ("thumb", "index", "middle", "ring", "little")
REACTION_S = (0.15, 0.35)  # from the cue to the first flexion
_PAUSE = (0.0, 0.15)  # pause after a flexion cycle, as a fraction of the cycle
_COMOVE_SPREAD = (0.6, 1.4)  # co-movement of a neighbour, relative to ``comovement``
_AXIS_TILT = np.pi / 8  # the thumb-to-little axis is within this of the grid's x axis
_LFP_WIDTH = 1.5  # the slow potential's map is this much wider than the high-gamma spot


def _finger_timing() -> TrialTiming:
    return TrialTiming(fixation_s=0.5, imagery_s=2.0, rest_s=1.5, first_s=1.0)


class FingerTaskParams(BaseModel):
    """The cued finger-flexion task and the fingers' cortical map (ECoG ``fingers`` mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timing: TrialTiming = Field(default_factory=_finger_timing,
                                description="fixation, flexing period after the cue "
                                "(imagery_s) and rest (s)")
    rate_hz: tuple[float, float] = Field((1.0, 2.0), description="range of the flexion "
                                         "cycles per second (drawn per movement)")
    amplitude: tuple[float, float] = Field((0.5, 1.0), description="range of the peak flexion "
                                           "of one movement (0-1, drawn per movement)")
    comovement: float = Field(0.15, ge=0, le=0.5, description="neighbouring fingers flex "
                              "along by about this fraction of the cued finger's flexion")
    depth: tuple[float, float] = Field((1.0, 2.0), description="range of the high-gamma "
                                       "amplitude increase at a finger's spot while it flexes "
                                       "at a typical speed (relative to rest, per finger, 0-3)")
    spacing_mm: float = Field(6.0, gt=0, le=20, description="distance between the cortical "
                              "spots of neighbouring fingers (mm)")
    spot_mm: float = Field(4.0, gt=0, le=20, description="width of a finger's cortical spot "
                           "(Gaussian sigma, mm)")

    @field_validator("rate_hz")
    @classmethod
    def _rate_range(cls, rate: tuple[float, float]) -> tuple[float, float]:
        return require_low_high(rate, (0.2, 5.0), "rate_hz", " Hz")

    @field_validator("amplitude")
    @classmethod
    def _amplitude_range(cls, amp: tuple[float, float]) -> tuple[float, float]:
        return require_low_high(amp, (0.0, 1.0), "amplitude", low_open=True)

    @field_validator("depth")
    @classmethod
    def _depth_range(cls, depth: tuple[float, float]) -> tuple[float, float]:
        return require_low_high(depth, (0.0, 3.0), "depth")

    @model_validator(mode="after")
    def _one_flexion_fits(self) -> FingerTaskParams:
        need = REACTION_S[1] + 1.0 / self.rate_hz[0]
        if self.timing.imagery_s < need:
            raise ValueError(f"timing.imagery_s ({self.timing.imagery_s:g} s) is too short for "
                             f"one flexion: it needs at least {need:g} s (reaction "
                             f"{REACTION_S[1]:g} s + one cycle at {self.rate_hz[0]:g} Hz)")
        return self


@dataclass
class FingerStep:
    """What the fingers did during one block.

    Attributes
    ----------
    cued : ndarray of int, shape (n_samples,)
        Cued finger (index into :data:`FINGERS`), -1 outside the flexing period.
    flexion : ndarray, shape (n_samples, 5)
        Flexion of each finger, 0-1.
    speed : ndarray, shape (n_samples, 5)
        ``|d flexion / dt|`` of each finger (1/s).
    markers : list of (str, int)
        Task markers and their sample indices, in time order.
    """

    cued: np.ndarray
    flexion: np.ndarray
    speed: np.ndarray
    markers: list[tuple[str, int]]


class FingerTask:
    """Cued trials of the five fingers and the flexion they produce.

    Parameters
    ----------
    params : FingerTaskParams
    srate : float
        Sampling rate of the stream (Hz).
    order_rng : numpy.random.Generator
        Draws the order of the cues.
    movement_rng : numpy.random.Generator
        Draws the key from which each trial's movements are seeded.
    """

    def __init__(self, params: FingerTaskParams, srate: float, order_rng: np.random.Generator,
                 movement_rng: np.random.Generator) -> None:
        self.params = params
        self.srate = float(srate)
        self.trials = CuedTrials(list(FINGERS), params.timing, self.srate, order_rng)
        self._key = int(movement_rng.integers(2**63 - 1))
        # mean |d flexion/dt| of a typical movement: a raised cosine of peak A over a cycle
        # of D seconds moves 2 A in D seconds
        self.typical_speed = 2.0 * float(np.mean(params.amplitude)) * float(np.mean(params.rate_hz))
        self._movements: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def movements(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flexions of trial ``k``.

        Returns
        -------
        onsets : ndarray, shape (m,)
            Start of each flexion cycle (s since the stream started).
        durations : ndarray, shape (m,)
            Length of each cycle (s).
        peaks : ndarray, shape (m, 5)
            Peak flexion of every finger during each cycle (the cued finger's and
            its neighbours' co-movement).
        """
        if k not in self._movements:
            self._movements[k] = self._draw(k)
        return self._movements[k]

    def _draw(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, tm = self.params, self.params.timing
        rng = np.random.default_rng([self._key, k])
        finger = self.trials.class_of_trial(k)
        cue = tm.first_s + k * self.trials.trial_s + tm.fixation_s
        end = cue + tm.imagery_s
        neighbours = [j for j in (finger - 1, finger + 1) if 0 <= j < len(FINGERS)]
        t = cue + rng.uniform(*REACTION_S)
        onsets, durations, peaks = [], [], []
        while True:
            d = 1.0 / rng.uniform(*p.rate_hz)
            if t + d > end:
                break
            peak = np.zeros(len(FINGERS))
            peak[finger] = rng.uniform(*p.amplitude)
            peak[neighbours] = peak[finger] * p.comovement * rng.uniform(*_COMOVE_SPREAD,
                                                                          len(neighbours))
            onsets.append(t)
            durations.append(d)
            peaks.append(peak)
            t += d * (1.0 + rng.uniform(*_PAUSE))
        return (np.array(onsets), np.array(durations),
                np.array(peaks).reshape(len(onsets), len(FINGERS)))

    def step(self, start: int, n: int) -> FingerStep:
        """Cues, flexion and markers of samples ``start`` .. ``start + n - 1``."""
        tm, trial_s = self.params.timing, self.trials.trial_s
        t = np.arange(start, start + n, dtype=np.float64) / self.srate
        cued = self.trials.class_at(t)
        first = max(0, int(np.floor((t[0] - tm.first_s) / trial_s)))
        last = int(np.floor((t[-1] - tm.first_s) / trial_s))
        for old in [k for k in self._movements if k < first]:
            del self._movements[old]
        drawn = [self.movements(k) for k in range(first, last + 1)]
        flexion = np.zeros((n, len(FINGERS)))
        speed = np.zeros((n, len(FINGERS)))
        if drawn:
            onsets = np.concatenate([d[0] for d in drawn])
            if onsets.size:
                durations = np.concatenate([d[1] for d in drawn])
                peaks = np.concatenate([d[2] for d in drawn])
                i = np.searchsorted(onsets, t, side="right") - 1
                ok = i >= 0
                u = np.zeros(n)
                u[ok] = (t[ok] - onsets[i[ok]]) / durations[i[ok]]
                moving = np.flatnonzero(ok & (u < 1.0))
                if moving.size:
                    j, phase = i[moving], 2.0 * np.pi * u[moving]
                    peak = peaks[j]
                    flexion[moving] = peak * (0.5 - 0.5 * np.cos(phase))[:, None]
                    speed[moving] = peak * (np.pi * np.abs(np.sin(phase)) / durations[j])[:, None]
        return FingerStep(cued, flexion, speed, self.trials.markers(start, n))


class Somatotopy:
    """The fingers' cortical spots under the grid.

    Thumb to little lie along an axis tilted by up to 22.5 degrees from the
    grid's x axis, about ``spacing_mm`` apart, centered within 2 mm of the grid's
    center. Each finger's high gamma rises under a Gaussian spot whose peak (the
    modulation depth) is drawn from ``depth``; its slow potential follows a
    wider map with a sign of its own.

    Parameters
    ----------
    rng : numpy.random.Generator
    spacing_mm, spot_mm : float
        Distance between neighbouring spots and width (sigma) of a spot (mm).
    depth : (float, float)
        Range of the high-gamma modulation depth at a spot's center.
    """

    def __init__(self, rng: np.random.Generator, spacing_mm: float, spot_mm: float,
                 depth: tuple[float, float]) -> None:
        tilt = rng.uniform(-_AXIS_TILT, _AXIS_TILT)
        axis = np.array([np.cos(tilt), np.sin(tilt)])
        steps = np.r_[0.0, np.cumsum(spacing_mm * rng.uniform(0.85, 1.15, len(FINGERS) - 1))]
        center = rng.uniform(-2.0, 2.0, 2)
        self.spots = center + (steps - steps.mean())[:, None] * axis  # (5, 2) mm
        self.spot_mm = float(spot_mm)
        self.depth = rng.uniform(*depth, len(FINGERS))
        self.lfp_sign = rng.choice([-1.0, 1.0], len(FINGERS)) * rng.uniform(0.5, 1.0,
                                                                             len(FINGERS))

    def _gauss(self, xy: np.ndarray, sigma: float) -> np.ndarray:
        d2 = np.sum((xy[:, None, :] - self.spots[None]) ** 2, axis=-1)
        return np.exp(-d2 / (2.0 * sigma ** 2))  # (n, 5)

    def at(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights of each finger at cortical positions ``xy`` (mm), shape (n, 2).

        Returns
        -------
        hg : ndarray, shape (n, 5)
            High-gamma modulation depth of each finger's movement.
        lfp : ndarray, shape (n, 5)
            Slow-potential weight of each finger's flexion (signed, at most 1).
        """
        return (self._gauss(xy, self.spot_mm) * self.depth,
                self._gauss(xy, _LFP_WIDTH * self.spot_mm) * self.lfp_sign)
