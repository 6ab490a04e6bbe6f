"""What the scalp-EEG generators share: background sources, mixing, artifacts, amplifier.

The motor-imagery (:mod:`~bci_runtime.simulators.motor_imagery`) and SSVEP
(:mod:`~bci_runtime.simulators.ssvep`) generators differ in their task sources
and share everything around them:

* :func:`jittered_dipoles` and :func:`background_dipoles` place the current
  dipoles of one simulated subject in the sphere head model;
* :class:`ShiftableMixing` maps source amplitudes to electrodes and follows the
  ``electrode-shift`` drift;
* :class:`SensorArtifacts` adds eye blinks over the frontal electrodes and EMG
  bursts over the temporal ones, and names them in markers;
* :class:`SensorNoise` is the amplifier's side: line noise, sensor noise, the
  gain of each electrode, failed channels (:func:`apply_dropout`), and the
  conversion from microvolts to volts.

The random draws of each piece happen in a fixed order, from the generators the
caller passes, so that a seed gives the same data whichever generator uses them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bci_runtime.simulators.drift import Drift, DriftEffects
from bci_runtime.simulators.head_model import (
    PRIORITY,
    HeadModel,
    choose_channels,
    electrode_positions,
)
from bci_runtime.simulators.noise import BurstTrain, HighNoise, sinusoids
from bci_runtime.simulators.tasks import TrialTiming


class ScalpEegParams(BaseModel):
    """Montage, rate, trial timing, background, amplifier and artifacts of a scalp EEG.

    Paradigms add their own sources; ``channel_focus`` says which electrodes a
    default montage takes first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    channel_focus: ClassVar[tuple[str, ...]] = PRIORITY

    n_channels: int = Field(16, ge=8, le=128, description="electrodes (10-05 positions)")
    channels: list[str] | None = Field(None, description="electrode names; default: chosen "
                                       "for the count, the paradigm's region first")
    srate: float = Field(250.0, ge=125, le=2000, description="sampling rate (Hz)")
    timing: TrialTiming = Field(default_factory=TrialTiming,
                                description="fixation, cue period and rest durations (s)")
    background_uv: float = Field(8.0, ge=0, description="1/f background, scalp RMS (uV)")
    sensor_noise_uv: float = Field(1.5, ge=0, description="amplifier noise RMS (uV)")
    line_freq: Literal[50, 60] = Field(50, description="mains frequency (Hz)")
    line_uv: float = Field(2.0, ge=0, description="line noise amplitude (uV)")
    blink_rate_hz: float = Field(0.15, ge=0, description="eye blinks per second")
    blink_uv: float = Field(80.0, ge=0, description="blink amplitude at Fp1/Fp2 (uV)")
    emg_rate_hz: float = Field(0.03, ge=0, description="muscle bursts per second")
    emg_uv: float = Field(15.0, ge=0, description="EMG burst RMS at temporal sites (uV)")
    subject_seed: int | None = Field(None, ge=0, description="seed of the simulated subject "
                                     "alone (head, sources, rhythm peaks): the same subject "
                                     "in runs of other seeds; default: from the run's seed")

    def subject_rng(self, spawned: np.random.Generator) -> np.random.Generator:
        """The subject's generator: from ``subject_seed`` if given, else ``spawned``."""
        if self.subject_seed is None:
            return spawned
        return np.random.default_rng(np.random.SeedSequence([self.subject_seed, 0x5B]))

    @model_validator(mode="after")
    def _channel_list(self) -> ScalpEegParams:
        if self.channels is not None:
            if len(self.channels) != self.n_channels:
                raise ValueError(f"channels lists {len(self.channels)} names but n_channels is "
                                 f"{self.n_channels}; give one name per channel")
            electrode_positions(tuple(self.channels))  # unknown names are errors now
        return self

    def channel_names(self) -> tuple[str, ...]:
        """The electrodes: ``channels``, or ``n_channels`` chosen around ``channel_focus``."""
        if self.channels:
            return tuple(self.channels)
        return choose_channels(self.n_channels, focus=self.channel_focus)

N_BACKGROUND = 24  # background dipoles of the 1/f activity
RAIL_V = 0.1875  # ±187.5 mV: full scale of a 24-bit ADS1299 front end at gain 24

# blinks: the eyes sit in front of and below Fpz; the weight falls off with distance
_EYES_FROM_FPZ = np.array([0.0, 0.01, -0.03])  # m
_BLINK_FALLOFF_M = 0.035
_BLINK_DURATION_S = (0.2, 0.4)
# EMG: left and right temporalis, below T7 and T8
_TEMPORALIS_FROM_T7_T8 = np.array([0.0, 0.01, -0.02])  # m
_EMG_FALLOFF_M = 0.03
_EMG_DURATION_S = (0.3, 1.5)
_EMG_SIDES = ("left", "right")


# -- sources --------------------------------------------------------------------------------
def jittered_dipoles(head: HeadModel, named: list[tuple[str, float]],
                     rng: np.random.Generator,
                     jitter_m: float = 0.003) -> tuple[np.ndarray, np.ndarray]:
    """Radial dipoles below named electrodes, each moved a few mm at random.

    Every simulated subject is a little different: each dipole is displaced by
    a normal draw of standard deviation ``jitter_m`` along each axis.

    Parameters
    ----------
    head : HeadModel
    named : list of (str, float)
        Electrode above each dipole and its depth (fraction of the way to the
        head's center, see :meth:`HeadModel.point_under`).
    rng : numpy.random.Generator
        Draws the jitter, ``(n_sources, 3)`` normal values.
    jitter_m : float
        Standard deviation of the displacement (m).

    Returns
    -------
    positions : ndarray, shape (n_sources, 3)
        Dipole positions (m, head frame).
    orientations : ndarray, shape (n_sources, 3)
        Unit vectors pointing away from the head's center.
    """
    points = np.array([head.point_under(e, d) for e, d in named])
    points += rng.normal(0, jitter_m, points.shape)
    return points, head.radial(points)


def background_dipoles(head: HeadModel, rng: np.random.Generator,
                       n: int = N_BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """Radial dipoles below random points of the upper head (the 1/f background).

    Parameters
    ----------
    head : HeadModel
    rng : numpy.random.Generator
        Draws, in this order, ``n`` azimuths, ``n`` elevations and ``n`` depths.
    n : int
        Number of dipoles.

    Returns
    -------
    positions : ndarray, shape (n, 3)
        Dipole positions (m, head frame), 20-45% of the way from the scalp to
        the center, above the level of the ears.
    orientations : ndarray, shape (n, 3)
        Unit vectors pointing away from the head's center.
    """
    theta = rng.uniform(0, 2 * np.pi, n)
    elev = rng.uniform(0.15, 1.0, n)  # sin of the elevation above the ears
    dirs = np.c_[np.sqrt(1 - elev**2) * np.cos(theta), np.sqrt(1 - elev**2) * np.sin(theta),
                 elev]
    depth = rng.uniform(0.2, 0.45, n)
    points = head.center + head.radius * (1 - depth)[:, None] * dirs
    return points, head.radial(points)


# -- mixing -------------------------------------------------------------------------------
class ShiftableMixing:
    """Mixing from source amplitudes (uV) to electrodes, under electrode shifts.

    Each source is scaled so that a unit amplitude peaks at 1 uV on the scalp.
    The mixing of the cap displaced by each ``electrode-shift`` component of the
    drift is computed at construction (a forward solution takes a while: not
    mid-run) and blended with the base mixing by the component's progress.

    Parameters
    ----------
    head : HeadModel
    positions : ndarray, shape (n_sources, 3)
        Dipole positions (m, head frame).
    orientations : ndarray, shape (n_sources, 3)
        Unit dipole orientations.
    drift : Drift, optional
        The drift whose electrode shifts to prepare for.

    Attributes
    ----------
    base : ndarray, shape (n_channels, n_sources)
        The mixing with the cap in place.
    norm : ndarray, shape (n_sources,)
        Scale from a unit source amplitude to the head model's gain.
    """

    def __init__(self, head: HeadModel, positions: np.ndarray, orientations: np.ndarray,
                 drift: Drift | None = None) -> None:
        self.head, self.positions, self.orientations = head, positions, orientations
        gain = head.gain(positions, orientations)
        self.norm = 1.0 / np.abs(gain).max(axis=0)
        self.base = gain * self.norm
        self._delta: dict[int, np.ndarray] = {}  # component key -> shifted - base
        self._key: tuple = ()
        self._current = self.base
        if drift is not None:
            for key, c in enumerate(drift.components):  # keys as in Drift.effects_at
                if c.kind == "electrode-shift":
                    self._delta[key] = self.shifted(c.shift_mm, c.seed) - self.base

    def shifted(self, shift_mm: float, seed: int) -> np.ndarray:
        """The mixing with the cap moved by ``shift_mm`` (direction drawn from ``seed``).

        Returns
        -------
        ndarray, shape (n_channels, n_sources)
        """
        gain = self.head.gain(self.positions, self.orientations, shift_mm=shift_mm,
                              shift_seed=seed)
        return gain * self.norm

    def matrix(self, effects: DriftEffects) -> np.ndarray:
        """The mixing under the electrode shifts in effect.

        Recomputed only when a shift's progress changes by 1e-4 or more.

        Parameters
        ----------
        effects : DriftEffects

        Returns
        -------
        ndarray, shape (n_channels, n_sources)
            Read only: shared between calls.
        """
        key = tuple((s.key, round(s.fraction, 4)) for s in effects.shifts)
        if key != self._key:
            m = self.base.copy()
            for s in effects.shifts:
                delta = self._delta.get(s.key)
                if delta is None:  # a shift that was not announced at construction
                    delta = self._delta[s.key] = self.shifted(s.shift_mm, s.seed) - self.base
                m += s.fraction * delta
            self._current, self._key = m, key
        return self._current

    def unit_rms(self, sources: slice) -> float:
        """Scalp RMS (uV, mean over electrodes) of independent unit-variance ``sources``."""
        return float(np.sqrt((self.base[:, sources] ** 2).sum(axis=1)).mean())


# -- artifacts ------------------------------------------------------------------------------
class SensorArtifacts:
    """Eye blinks over the frontal electrodes and EMG bursts over the temporal ones.

    Blinks are raised-cosine bursts of 0.2-0.4 s whose weight is 1 at Fp1/Fp2
    and falls off with the distance from the eyes; EMG bursts are 0.3-1.5 s of
    broadband noise (above 30 Hz, or a fifth of the rate) from the left or
    right temporalis, with weight 1 at T7/T8.

    Parameters
    ----------
    positions : ndarray, shape (n_channels, 3)
        Electrode positions (m, head frame).
    srate : float
        Sampling rate (Hz).
    rng : numpy.random.Generator
        Draws the blink times, then the left and right EMG times, then the EMG
        noise (also at construction, to warm up its filter).
    blink_rate_hz, emg_rate_hz : float
        Mean blinks and EMG bursts (both sides together) per second.
    blink_uv, emg_uv : float
        Blink amplitude at Fp1/Fp2 and EMG RMS at T7/T8 (uV).

    Attributes
    ----------
    blink_weights : ndarray, shape (n_channels,)
    emg_weights : ndarray, shape (2, n_channels)
        Left, then right temporalis.
    """

    def __init__(self, positions: np.ndarray, srate: float, rng: np.random.Generator, *,
                 blink_rate_hz: float, blink_uv: float, emg_rate_hz: float,
                 emg_uv: float) -> None:
        self.blink_uv, self.emg_uv = blink_uv, emg_uv
        eyes = electrode_positions(("Fpz",))[0] + _EYES_FROM_FPZ
        reference = np.linalg.norm(electrode_positions(("Fp1",))[0] - eyes)  # weight 1 at Fp1
        self.blink_weights = np.minimum(
            1.0, np.exp(-(np.linalg.norm(positions - eyes, axis=1) - reference)
                        / _BLINK_FALLOFF_M))
        self._blinks = BurstTrain(blink_rate_hz, _BLINK_DURATION_S, srate, rng, "hann")
        temporal = electrode_positions(("T7", "T8")) + _TEMPORALIS_FROM_T7_T8
        d = np.linalg.norm(positions[:, None, :] - temporal[None], axis=-1)  # (n_ch, 2)
        reference = np.linalg.norm(_TEMPORALIS_FROM_T7_T8)  # weight 1 at T7/T8
        self.emg_weights = np.minimum(1.0, np.exp(-(d - reference) / _EMG_FALLOFF_M)).T
        self._emg = [BurstTrain(emg_rate_hz / 2, _EMG_DURATION_S, srate, rng, "box")
                     for _ in _EMG_SIDES]
        self._emg_noise = HighNoise(min(30.0, 0.2 * srate), srate, len(_EMG_SIDES), rng)

    def apply(self, eeg_uv: np.ndarray, start: int, n: int) -> list[tuple[str, int]]:
        """Add the artifacts of samples ``start`` .. ``start + n - 1`` in place.

        Parameters
        ----------
        eeg_uv : ndarray, shape (n, n_channels)
            The EEG (uV) of those samples; modified in place.
        start, n : int

        Returns
        -------
        list of (str, int)
            ``artifact/blink`` and ``artifact/emg/<left|right>`` at the sample
            where each burst begins (blinks first, not sorted).
        """
        blink_env, blink_onsets = self._blinks.envelope(start, n)
        if blink_onsets or blink_env.any():
            eeg_uv += np.outer(blink_env * self.blink_uv, self.blink_weights)
        markers = [("artifact/blink", i) for i in blink_onsets]
        envelopes = []
        for side, train in zip(_EMG_SIDES, self._emg):
            env, onsets = train.envelope(start, n)
            envelopes.append(env)
            markers += [(f"artifact/emg/{side}", i) for i in onsets]
        emg = self._emg_noise(n)  # keep the noise stream in step even without bursts
        env2 = np.stack(envelopes, axis=1)
        if env2.any():
            eeg_uv += (emg * env2 * self.emg_uv) @ self.emg_weights
        return markers


# -- the amplifier --------------------------------------------------------------------------
class SensorNoise:
    """What the electrodes and the amplifier add: line noise, noise, gains, failures.

    Parameters
    ----------
    n_channels : int
    srate : float
        Sampling rate (Hz).
    subject : numpy.random.Generator
        Draws, at construction, the line-noise phase then its amplitude factor
        (0.3-1.5) on each channel.
    rng : numpy.random.Generator
        Draws the sensor noise of each block, then the signal of channels that
        failed to noise (:func:`apply_dropout`).
    line_freq : float
        Mains frequency (Hz).
    line_uv : float
        Line-noise amplitude (uV) before the per-channel factor; 0 for none.
    sensor_noise_uv : float
        Amplifier noise RMS (uV) before :attr:`DriftEffects.noise_scale`.
    """

    def __init__(self, n_channels: int, srate: float, subject: np.random.Generator,
                 rng: np.random.Generator, *, line_freq: float, line_uv: float,
                 sensor_noise_uv: float) -> None:
        self.n_channels, self.srate, self.rng = n_channels, srate, rng
        self.line_uv, self.sensor_noise_uv = line_uv, sensor_noise_uv
        self._line_freqs = np.full(n_channels, float(line_freq))
        self._line_phase = subject.uniform(0, 2 * np.pi, n_channels)
        self._line_amp = line_uv * subject.uniform(0.3, 1.5, n_channels)

    def apply(self, eeg_uv: np.ndarray, start: int, n: int, effects: DriftEffects) -> np.ndarray:
        """Add line and sensor noise, apply the channel gains and failures, convert to volts.

        Parameters
        ----------
        eeg_uv : ndarray, shape (n, n_channels)
            The EEG (uV) of samples ``start`` .. ``start + n - 1``; modified in
            place (noise added, gains applied).
        start, n : int
        effects : DriftEffects
            Its ``noise_scale``, ``gain`` and ``dropout`` apply.

        Returns
        -------
        ndarray, shape (n, n_channels)
            The signal in volts, a new array.
        """
        if self.line_uv:
            eeg_uv += (sinusoids(start, n, self.srate, self._line_freqs, self._line_phase)
                       * self._line_amp)
        noise = self.rng.standard_normal((n, self.n_channels))
        eeg_uv += noise * (self.sensor_noise_uv * effects.noise_scale)
        eeg_uv *= effects.gain
        volts = eeg_uv * 1e-6
        apply_dropout(volts, effects.dropout, self.rng)
        return volts


def apply_dropout(data: np.ndarray, dropout: np.ndarray, rng: np.random.Generator,
                  rail: float = RAIL_V, noise: float = 50e-6) -> None:
    """Replace failed channels in place: 1 flat, 2 railed, 3 noise only.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
    dropout : ndarray of int8, shape (n_channels,)
    rng : numpy.random.Generator
        Draws the signal of noisy channels, ``(n_samples, n_noisy)`` values.
    rail : float
        Value of a railed channel.
    noise : float
        RMS of a noisy channel.
    """
    if not dropout.any():
        return
    data[:, dropout == 1] = 0.0
    data[:, dropout == 2] = rail
    noisy = np.flatnonzero(dropout == 3)
    if noisy.size:
        data[:, noisy] = rng.standard_normal((data.shape[0], noisy.size)) * noise
