"""Motor-imagery EEG through a spherical head model, with artifacts and drift.

Sources (current dipoles in an MNE sphere head model, see
:mod:`~bci_runtime.simulators.head_model`):

* sensorimotor: left and right hand areas (below C3 and C4), the feet area
  (deep, below Cz) and both tongue areas (below C5 and C6), each carrying a mu
  (8-13 Hz) and a beta (15-30 Hz) rhythm at subject-specific peak frequencies;
  imagining a class lowers them (event-related desynchronisation, ERD) over the
  contralateral hand area, the feet area, or both tongue areas;
* posterior alpha below O1 and O2;
* 1/f background from dipoles spread over the cortex.

Sensor-level additions (:mod:`~bci_runtime.simulators.scalp`): amplifier noise,
line noise (50 or 60 Hz) with a phase per channel, eye blinks over the frontal
electrodes and EMG bursts over the temporal ones, each announced as a marker
(``artifact/blink``, ``artifact/emg/<side>``), impedance gains, channel dropout.
Output in volts.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

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
from bci_runtime.simulators.tasks import REST, CuedTrials
from bci_runtime.simulators.user import SimulatedUser, UserParams

# how much each sensorimotor source (index into _SENSORIMOTOR) desynchronises for each
# class: hand imagery desynchronises the whole contralateral strip, most at the hand area
CLASS_SOURCES = {"left": {1: 1.0, 4: 0.6}, "right": {0: 1.0, 3: 0.6}, "feet": {2: 1.0},
                 "tongue": {3: 1.0, 4: 1.0}}
# (electrode above, depth, relative rhythm strength): hand, hand, feet, tongue, tongue
_SENSORIMOTOR = (("C3", 0.25, 1.0), ("C4", 0.25, 1.0), ("Cz", 0.45, 0.7), ("C5", 0.3, 0.6),
                 ("C6", 0.3, 0.6))
_ALPHA = (("O1", 0.25), ("O2", 0.25))


class MotorImageryParams(ScalpEegParams):
    """Motor-imagery EEG: montage, rhythms, artifacts and trial timing."""

    classes: list[str] = Field(["left", "right"], description="2-4 of left, right, feet, tongue")
    erd: float = Field(0.3, ge=0, le=0.9, description="drop of mu/beta amplitude while "
                       "imagining (0.2-0.4 is typical)")
    mu_uv: float = Field(10.0, ge=0, description="mu amplitude at its strongest electrode (uV)")
    beta_uv: float = Field(5.0, ge=0, description="beta amplitude (uV)")
    alpha_uv: float = Field(8.0, ge=0, description="posterior alpha amplitude (uV)")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, classes: list[str]) -> list[str]:
        valid = ", ".join(CLASS_SOURCES)
        unknown = [c for c in classes if c not in CLASS_SOURCES]
        if unknown:
            raise ValueError(f"unknown class(es) {', '.join(unknown)}; valid classes: {valid}")
        if len(classes) > len(CLASS_SOURCES):
            raise ValueError(f"{len(classes)} classes requested, but the simulator has sources "
                             f"for {len(CLASS_SOURCES)}: {valid}")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be 2 to {len(CLASS_SOURCES)} distinct names among "
                             f"{valid}, got {classes}")
        return classes


class MotorImageryEeg(Generator):
    """Cued motor imagery: EEG (V), task and artifact markers, the cued class as truth.

    Parameters
    ----------
    params : MotorImageryParams
    seed : int
        Everything random (subject, trial order, noise) derives from it.
    drift : Drift, optional
    user : UserParams, optional
        The simulated user (default: visual delay 200 ms, not learning).
    """

    stream_type = "EEG"
    truth_names = ("class",)

    def __init__(self, params: MotorImageryParams, seed: int = 0, drift: Drift | None = None,
                 user: UserParams | None = None) -> None:
        super().__init__(drift)
        self.params = p = params
        self.srate = p.srate
        self.channel_names = p.channel_names()
        n = len(self.channel_names)
        self.channel_types, self.units = ("eeg",) * n, ("V",) * n
        self.classes = list(p.classes)
        ss = np.random.SeedSequence(seed)
        subject, task, sig, art = (np.random.default_rng(s) for s in ss.spawn(4))
        subject = p.subject_rng(subject)
        self.task = CuedTrials(self.classes, p.timing, p.srate, task)
        self.user = SimulatedUser(user or UserParams(), len(self.classes), self.classes)
        self.head = HeadModel(self.channel_names)
        self._build_sources(subject, drift)
        self._build_rhythms(subject, sig)
        self._artifacts = SensorArtifacts(
            self.head.positions, p.srate, art, blink_rate_hz=p.blink_rate_hz,
            blink_uv=p.blink_uv, emg_rate_hz=p.emg_rate_hz, emg_uv=p.emg_uv)
        self._class_erd = np.zeros((len(self.classes), len(_SENSORIMOTOR)))
        for i, c in enumerate(self.classes):
            for source, depth in CLASS_SOURCES[c].items():
                self._class_erd[i, source] = depth

    # -- construction ---------------------------------------------------------------------
    def _build_sources(self, rng: np.random.Generator, drift: Drift | None) -> None:
        named = [(e, d) for e, d, _ in _SENSORIMOTOR] + list(_ALPHA)
        points, orient = jittered_dipoles(self.head, named, rng)
        bg_points, bg_orient = background_dipoles(self.head, rng, N_BACKGROUND)
        self._mixing = ShiftableMixing(self.head, np.vstack([points, bg_points]),
                                       np.vstack([orient, bg_orient]), drift)
        self._bg_amp = self.params.background_uv / self._mixing.unit_rms(
            slice(-N_BACKGROUND, None))

    def _build_rhythms(self, subject: np.random.Generator, rng: np.random.Generator) -> None:
        p, fs = self.params, self.params.srate
        n_sm = len(_SENSORIMOTOR)
        mu_peak = subject.uniform(9.5, 11.5)
        beta_peak = subject.uniform(18.0, 24.0)
        alpha_peak = subject.uniform(9.0, 11.0)
        self._mu = BandNoise(mu_peak - 2.0, mu_peak + 2.0, fs, n_sm, rng)
        self._beta = BandNoise(beta_peak - 4.0, beta_peak + 4.0, fs, n_sm, rng)
        self._alpha = BandNoise(alpha_peak - 1.0, alpha_peak + 1.0, fs, len(_ALPHA), rng)
        self._background = PinkNoise(N_BACKGROUND, rng)
        self._sensor = SensorNoise(len(self.channel_names), fs, subject, rng,
                                   line_freq=p.line_freq, line_uv=p.line_uv,
                                   sensor_noise_uv=p.sensor_noise_uv)
        # per-subject strength of each sensorimotor rhythm
        strength = np.array([s for _, _, s in _SENSORIMOTOR])
        self._mu_amp = p.mu_uv * strength * subject.uniform(0.8, 1.2, n_sm)
        self._beta_amp = p.beta_uv * strength * subject.uniform(0.8, 1.2, n_sm)

    # -- generation -------------------------------------------------------------------------
    def generate(self, start: int, n: int) -> Block:
        p = self.params
        t = self.times(start, n)
        effects = (self.drift.effects_at(float(t[0])) if self.drift is not None
                   else DriftEffects.neutral(self.n_channels))
        cued = self.task.class_at(t)
        self.user.perceive(float(t[0]), int(cued[0]))
        depth = p.erd * effects.modulation * self.user.modulation(cued)  # (n,)
        erd_map = np.zeros((n, len(_SENSORIMOTOR)))
        active = cued != REST
        erd_map[active] = self._class_erd[cued[active]]
        sm_gain = np.clip(1.0 - depth[:, None] * erd_map, 0.05, None)
        sm = (self._mu(n) * self._mu_amp + self._beta(n) * self._beta_amp) * sm_gain
        alpha = self._alpha(n) * (p.alpha_uv * effects.alpha)
        background = self._background(n) * self._bg_amp
        sources = np.concatenate([sm, alpha, background], axis=1)
        eeg = sources @ self._mixing.matrix(effects).T  # (n, n_channels), uV
        markers = self.task.markers(start, n) + self._artifacts.apply(eeg, start, n)
        volts = self._sensor.apply(eeg, start, n, effects)
        markers.sort(key=lambda m: m[1])
        return Block(volts, start, markers, cued[:, None].astype(np.float64))

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        self.user.show(t, values)

