"""Steady-state visually evoked potentials (SSVEP) through a spherical head model.

The simulated user gazes at one of several flickering targets after each cue
(or at a blank target for the ``rest`` class). The visual cortex follows the
flicker: a sinusoidal response at the stimulus frequency and its harmonics,
phase-locked to the stimulus, over the occipital electrodes.

Sources (current dipoles in an MNE sphere head model, see
:mod:`~bci_runtime.simulators.head_model`):

* SSVEP: three dipoles below O1, Oz and O2 (primary visual cortex, Oz the
  strongest) carrying the response. For a stimulus that starts at the cue ``t_c``
  and flickers at ``f``, source ``j`` carries::

      env(t - t_c - L) * sum_h a_h sin(2 pi h f (t - t_c - L - d_j) + phi_h)

  where ``L`` is the subject's latency (80-160 ms, so the response starts ``L``
  after the cue and its phase lags by ``2 pi h f L``), ``d_j`` a small per-source
  delay, ``a_h`` amplitudes decaying with the harmonic, ``phi_h`` the subject's
  phase per harmonic and frequency, and ``env`` a raised-cosine ramp up over
  ``ramp_s`` after the onset and down over ``ramp_s`` after the flicker ends.
  Amplitude, phases and latency are drawn per subject from the seed; each trial
  adds a little amplitude and phase jitter;
* parieto-occipital alpha below PO3 and PO4 (it shares the band of 8-12 Hz
  stimuli), partly blocked while a flicker is seen (``alpha_block``);
* 1/f background from dipoles spread over the cortex.

Sensor-level additions shared with motor imagery
(:mod:`~bci_runtime.simulators.scalp`): amplifier noise, line noise, eye
blinks and EMG bursts (``artifact/blink``, ``artifact/emg/<side>`` markers),
impedance gains, channel dropout. Fatigue
(:attr:`DriftEffects.modulation`) scales the SSVEP amplitude and
:attr:`DriftEffects.alpha` the occipital alpha; a simulated user who learns
attends harder (a larger response) to a target after wrong feedback.

Classes are named after their frequency (``"8.57Hz"``, ``"10Hz"``...) plus
``"rest"`` (no flicker); markers are ``cue/<class>`` ... ``end``, and the truth
column ``class`` holds the class index during the flicker (``rest`` has its own
index, the last) and -1 between trials. Output in volts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator, model_validator

from bci_runtime.simulators.base import Block, Generator
from bci_runtime.simulators.drift import Drift, DriftEffects
from bci_runtime.simulators.head_model import HeadModel
from bci_runtime.simulators.noise import BandNoise, PinkNoise
from bci_runtime.simulators.scalp import (
    N_BACKGROUND,
    ScalpEegParams,
    SensorArtifacts,
    SensorNoise,
    ShiftableMixing,
    background_dipoles,
    jittered_dipoles,
)
from bci_runtime.simulators.tasks import CuedTrials
from bci_runtime.simulators.user import SimulatedUser, UserParams

# electrodes chosen first: occipital and parieto-occipital, then parietal
OCCIPITAL_FOCUS = ("O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8", "Pz", "Iz", "P3", "P4",
                   "PO9", "PO10", "P1", "P2", "P5", "P6", "P7", "P8")
REST_CLASS = "rest"
FREQ_RANGE = (4.0, 40.0)  # Hz
MAX_FREQS = 12
LATENCY_RANGE_S = (0.080, 0.160)
# (electrode, depth, relative strength range): V1 below Oz, flanked below O1/O2
_SSVEP = (("Oz", 0.3, (1.0, 1.0)), ("O1", 0.3, (0.4, 0.8)), ("O2", 0.3, (0.4, 0.8)))
_ALPHA = (("PO3", 0.25), ("PO4", 0.25))  # parieto-occipital alpha


def class_name(freq: float) -> str:
    """Class name of a stimulus frequency: ``8.57`` → ``"8.57Hz"``, ``10.0`` → ``"10Hz"``."""
    return f"{round(float(freq), 2):g}Hz"


class SsvepParams(ScalpEegParams):
    """SSVEP EEG: montage, stimuli, response, artifacts and trial timing."""

    channel_focus: ClassVar[tuple[str, ...]] = OCCIPITAL_FOCUS

    n_channels: int = Field(8, ge=8, le=128, description="electrodes (10-05 positions)")
    freqs: list[float] = Field([8.57, 10.0, 12.0, 15.0],
                               description="stimulus frequencies, 1-12 distinct values in 4-40 Hz")
    rest_class: bool = Field(True, description="add a 'rest' class (cued, no flicker)")
    harmonics: int = Field(3, ge=1, le=5, description="harmonics in the response (1: only f)")
    harmonic_decay: float = Field(0.55, gt=0, le=1, description="amplitude ratio of each "
                                  "harmonic to the previous one")
    ssvep_uv: float = Field(3.0, ge=0, description="amplitude of the fundamental at its "
                            "strongest electrode (uV); 1-5 is typical")
    ramp_s: float = Field(0.3, gt=0, le=2, description="build-up and decay time of the "
                          "response after the flicker starts and stops (s)")
    alpha_uv: float = Field(5.0, ge=0, description="posterior alpha amplitude, eyes open and "
                            "fixating (uV)")
    alpha_block: float = Field(0.5, ge=0, le=1, description="fraction of the alpha blocked "
                               "while a flicker is seen")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(unknown)}; valid fields: "
                                 f"{', '.join(cls.model_fields)}")
        return data

    @field_validator("freqs")
    @classmethod
    def _valid_freqs(cls, freqs: list[float]) -> list[float]:
        lo, hi = FREQ_RANGE
        if not 1 <= len(freqs) <= MAX_FREQS:
            raise ValueError(f"give 1 to {MAX_FREQS} stimulus frequencies, got {len(freqs)}")
        bad = [f for f in freqs if not lo <= f <= hi]
        if bad:
            raise ValueError(f"stimulus frequencies must be within {lo:g}-{hi:g} Hz, got "
                             f"{bad}")
        names = [class_name(f) for f in freqs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stimulus frequencies must be distinct (to 0.01 Hz); "
                             f"{', '.join(dupes)} given more than once in {freqs}")
        return [float(f) for f in freqs]

    @model_validator(mode="after")
    def _consistent(self) -> SsvepParams:
        limit = self.srate / 2 / self.harmonics
        high = [f for f in self.freqs if f >= limit]
        if high:
            raise ValueError(
                f"frequencies {high} with {self.harmonics} harmonic(s) reach the Nyquist "
                f"frequency ({self.srate / 2:g} Hz at srate {self.srate:g}); valid frequencies "
                f"are {FREQ_RANGE[0]:g} Hz to below {min(limit, FREQ_RANGE[1]):.4g} Hz: lower "
                f"the frequencies or harmonics, or raise srate")
        if len(self.freqs) + self.rest_class < 2:
            raise ValueError(f"a single class ({class_name(self.freqs[0])}) cannot be decoded: "
                             f"give 2 to {MAX_FREQS} frequencies, or keep rest_class true")
        return self

    def class_names(self) -> list[str]:
        """``"<f>Hz"`` for each stimulus frequency, then ``"rest"`` if there is a rest class."""
        return [class_name(f) for f in self.freqs] + ([REST_CLASS] if self.rest_class else [])


class SsvepEeg(Generator):
    """Cued SSVEP: EEG (V), task and artifact markers, the cued class as truth.

    Parameters
    ----------
    params : SsvepParams
    seed : int
        Everything random (subject, trial order, noise) derives from it.
    drift : Drift, optional
    user : UserParams, optional
        The simulated user (default: visual delay 200 ms, not learning).

    Attributes
    ----------
    classes : list of str
        Class names; index ``i < len(freqs)`` flickers at ``freqs[i]``.
    freqs : ndarray, shape (n_freqs,)
        Stimulus frequencies (Hz).
    latency_s : float
        The subject's response latency (s after the cue).
    amplitudes : ndarray, shape (n_freqs, harmonics)
        Amplitude of each harmonic at the strongest electrode (uV), before
        fatigue, effort and trial jitter.
    phases : ndarray, shape (n_freqs, harmonics)
        Phase of each harmonic relative to the latency-delayed stimulus (rad).
    """

    stream_type = "EEG"
    truth_names = ("class",)

    def __init__(self, params: SsvepParams, seed: int = 0, drift: Drift | None = None,
                 user: UserParams | None = None) -> None:
        super().__init__(drift)
        self.params = p = params
        self.srate = p.srate
        self.channel_names = p.channel_names()
        n = len(self.channel_names)
        self.channel_types, self.units = ("eeg",) * n, ("V",) * n
        self.classes = p.class_names()
        self.freqs = np.array(p.freqs)
        ss = np.random.SeedSequence(seed)
        subject, task, sig, art = (np.random.default_rng(s) for s in ss.spawn(4))
        subject = p.subject_rng(subject)
        self.task = CuedTrials(self.classes, p.timing, p.srate, task)
        self.user = SimulatedUser(user or UserParams(), len(self.classes), self.classes)
        self.head = HeadModel(self.channel_names)
        self._build_sources(subject, drift)
        self._build_response(subject)
        self._build_rhythms(subject, sig)
        self._artifacts = SensorArtifacts(
            self.head.positions, p.srate, art, blink_rate_hz=p.blink_rate_hz,
            blink_uv=p.blink_uv, emg_rate_hz=p.emg_rate_hz, emg_uv=p.emg_uv)

    # -- construction ---------------------------------------------------------------------
    def _build_sources(self, rng: np.random.Generator, drift: Drift | None) -> None:
        named = [(e, d) for e, d, _ in _SSVEP] + list(_ALPHA)
        points, orient = jittered_dipoles(self.head, named, rng)
        bg_points, bg_orient = background_dipoles(self.head, rng, N_BACKGROUND)
        self._mixing = ShiftableMixing(self.head, np.vstack([points, bg_points]),
                                       np.vstack([orient, bg_orient]), drift)
        self._bg_amp = self.params.background_uv / self._mixing.unit_rms(
            slice(-N_BACKGROUND, None))

    def _build_response(self, rng: np.random.Generator) -> None:
        p = self.params
        n_f, n_h, n_src = len(p.freqs), p.harmonics, len(_SSVEP)
        self.latency_s = float(rng.uniform(*LATENCY_RANGE_S))
        self._src_delay = rng.normal(0.0, 0.004, n_src)  # s, per source
        self._src_delay[0] = 0.0
        weights = np.array([rng.uniform(*r) for _, _, r in _SSVEP])
        # scale the sources so that, in phase, the fundamental peaks at 1 uV per unit amplitude
        pattern = self._mixing.base[:, :n_src] @ weights
        self._src_weight = weights / np.abs(pattern).max()
        h = np.arange(1, n_h + 1)
        # the response weakens slowly with the frequency; each subject has its own profile
        per_freq = (10.0 / self.freqs) ** 0.3 * rng.uniform(0.85, 1.15, n_f)
        per_harm = p.harmonic_decay ** (h - 1) * rng.uniform(0.8, 1.2, n_h)
        per_harm[0] = 1.0
        self.amplitudes = p.ssvep_uv * per_freq[:, None] * per_harm[None, :]
        self.phases = (rng.uniform(0, 2 * np.pi, n_h)[None, :]
                       + rng.normal(0.0, 0.3, (n_f, n_h))) % (2 * np.pi)
        self._trial_seed = int(rng.integers(2**31))
        self._trial_cache: dict[int, tuple[float, float]] = {}

    def _build_rhythms(self, subject: np.random.Generator, rng: np.random.Generator) -> None:
        p, fs = self.params, self.params.srate
        alpha_peak = subject.uniform(9.0, 11.0)
        self._alpha = BandNoise(alpha_peak - 1.0, alpha_peak + 1.0, fs, len(_ALPHA), rng)
        self._background = PinkNoise(N_BACKGROUND, rng)
        self._sensor = SensorNoise(len(self.channel_names), fs, subject, rng,
                                   line_freq=p.line_freq, line_uv=p.line_uv,
                                   sensor_noise_uv=p.sensor_noise_uv)

    # -- the response -----------------------------------------------------------------------
    def _trial_jitter(self, k: int) -> tuple[float, float]:
        """Amplitude factor and phase offset (rad) of trial ``k``, the same whichever block."""
        if k not in self._trial_cache:
            rng = np.random.default_rng([self._trial_seed, k])
            self._trial_cache = {j: v for j, v in self._trial_cache.items() if j >= k - 4}
            self._trial_cache[k] = (float(np.exp(rng.normal(0.0, 0.15))),
                                    float(rng.normal(0.0, 0.2)))
        return self._trial_cache[k]

    def envelope(self, tau: np.ndarray) -> np.ndarray:
        """Response envelope at ``tau`` seconds after the response onset (cue + latency).

        Parameters
        ----------
        tau : ndarray, shape (n,)

        Returns
        -------
        ndarray, shape (n,)
            0 before the onset, a raised-cosine rise to 1 over ``ramp_s``, 1 while
            the flicker lasts (``timing.imagery_s``), then a raised-cosine decay.
        """
        ramp, dur = self.params.ramp_s, self.params.timing.imagery_s
        up = 0.5 - 0.5 * np.cos(np.pi * np.clip(tau / ramp, 0.0, 1.0))
        down = 0.5 + 0.5 * np.cos(np.pi * np.clip((tau - dur) / ramp, 0.0, 1.0))
        return up * down

    def _response(self, t: np.ndarray, modulation: float) -> tuple[np.ndarray, np.ndarray]:
        """SSVEP at times ``t``: source signals (n, n_ssvep_sources) in uV, and envelope (n,)."""
        out = np.zeros((t.size, len(_SSVEP)))
        drive = np.zeros(t.size)
        tm, n_freqs, trial_s = self.params.timing, len(self.freqs), self.task.trial_s
        span = tm.imagery_s + self.params.ramp_s  # the response lasts this long after its onset
        onset0 = tm.first_s + tm.fixation_s + self.latency_s  # response onset of trial 0
        k_first = max(0, int(np.floor((t[0] - onset0 - span) / trial_s)))
        k_last = int(np.floor((t[-1] - onset0) / trial_s))
        h = np.arange(1, self.amplitudes.shape[1] + 1)
        for k in range(k_first, k_last + 1):
            c = self.task.class_of_trial(k)
            if c >= n_freqs:  # rest: no flicker
                continue
            onset = onset0 + k * trial_s
            lo, hi = np.searchsorted(t, (onset, onset + span), side="right")
            if lo >= hi:
                continue
            tau = t[lo:hi] - onset
            amp, jitter = self._trial_jitter(k)
            tt = tau[:, None, None] - self._src_delay[None, None, :]  # (m, 1, src)
            arg = (2 * np.pi * self.freqs[c] * h[None, :, None] * tt
                   + (self.phases[c] + h * jitter)[None, :, None])  # (m, h, src)
            wave = np.einsum("mhs,h->ms", np.sin(arg), self.amplitudes[c])
            env = self.envelope(tau)
            drive[lo:hi] = np.maximum(drive[lo:hi], env)
            scale = env * (amp * modulation * self.user.effort[c])
            out[lo:hi] += wave * scale[:, None] * self._src_weight[None, :]
        return out, drive

    # -- generation -------------------------------------------------------------------------
    def generate(self, start: int, n: int) -> Block:
        p = self.params
        t = self.times(start, n)
        effects = (self.drift.effects_at(float(t[0])) if self.drift is not None
                   else DriftEffects.neutral(self.n_channels))
        cued = self.task.class_at(t)
        self.user.perceive(float(t[0]), int(cued[0]))
        ssvep, drive = self._response(t, effects.modulation)
        alpha_gain = p.alpha_uv * effects.alpha * (1.0 - p.alpha_block * drive)
        alpha = self._alpha(n) * alpha_gain[:, None]
        background = self._background(n) * self._bg_amp
        sources = np.concatenate([ssvep, alpha, background], axis=1)
        eeg = sources @ self._mixing.matrix(effects).T  # (n, n_channels), uV
        markers = self.task.markers(start, n) + self._artifacts.apply(eeg, start, n)
        volts = self._sensor.apply(eeg, start, n, effects)
        markers.sort(key=lambda m: m[1])
        return Block(volts, start, markers, cued[:, None].astype(np.float64))

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        self.user.show(t, values)

