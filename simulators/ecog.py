"""ECoG from a subdural grid while the simulated user steers a cursor or flexes fingers.

The grid: ``n_channels`` electrodes (16-256) on a square-ish grid with a pitch of
``pitch_mm`` (4 mm by default), named ``G01``, ``G02``... row by row; positions
in mm, centered on the grid (:attr:`EcogGenerator.positions`).

What each electrode records (µV, output in volts):

* high gamma (70-150 Hz): band-limited noise whose amplitude follows cosine
  tuning to the intended 2-D cursor velocity ``v``::

      amp_i = b_i * g_i * (1 + f * m_i * |v| / speed * cos(theta_v - PD_i))

  with ``b_i`` the resting amplitude, ``g_i`` the drift's ``rate_gain``, ``f``
  the drift's ``modulation`` (fatigue), ``m_i`` the modulation depth (0.3-0.8 on
  about 60 % of the electrodes, 0 elsewhere) and ``PD_i`` the preferred
  direction, rotated by the drift's ``pd_angle``;
* a slow potential (below 5 Hz) linear in the intended velocity, weakly tuned;
* spatially correlated 1/f background: pink-noise sources under the electrodes
  mixed with a Gaussian kernel over the grid (``background_sigma_mm``, 5 mm);
* line noise (50 or 60 Hz), and amplifier noise scaled by the drift's
  ``noise_scale``; the drift's ``gain`` multiplies everything and failed
  channels (``dropout``) go flat, rail or turn to noise.

The tuning lives on the cortex, not on the electrodes: preferred direction,
depth and slow-potential tuning are smooth fields over the cortical surface
(sums of random 2-D Gaussian bumps, :class:`CortexTuning`) sampled at the
electrode positions. An ``electrode-shift`` drift moves the grid by
``shift_mm`` in a direction drawn from its seed, so every electrode samples the
fields somewhere else and sees another tuning (blended with the ramp's fraction).

The task, the user and the ground truth are those of
:class:`~bci_runtime.simulators.cursor_task.CursorTaskDriver`.

Finger flexion (``kinematics="fingers"``)
-----------------------------------------
The user flexes the cued finger (:mod:`~bci_runtime.simulators.fingers`: cues
``cue/thumb`` .. ``cue/little``, truth = the flexion of the five fingers, 0-1).
Each finger has a Gaussian spot on the cortex (:class:`Somatotopy`, thumb to
little along one axis); an electrode's high gamma follows how fast the fingers
near it move, not where they are::

    amp_i = b_i * g_i * (1 + f * sum_j W_ij * a_j(t))

with ``W_ij`` finger ``j``'s spot at electrode ``i`` (its peak, the depth, drawn
from ``fingers.depth``), and ``a_j`` the finger's speed ``|d flexion_j / dt|``, relative
to that of a typical movement and times the user's effort for the cued finger,
smoothed over 100 ms. A slow potential follows each finger's flexion (low-passed
at about 3 Hz) through a wider map of random sign. Background, line and sensor
noise, gain, noise scale, dropout, ``rate_gain`` (the high-gamma baseline) and
fatigue (``f``) act as in the cursor mode; an electrode shift moves the grid
over the spots. Tuning drift's rotation of preferred directions (``pd_angle``)
has no meaning for fingers and is ignored. Decoded feedback is a finger's name
(or five scores, one per finger, in :data:`FINGERS` order): when the user sees a
wrong finger it tries harder, as in motor imagery (:class:`SimulatedUser`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import signal as sps

from bci_runtime.errors import RunError
from bci_runtime.simulators.base import Block, require_low_high, require_within
from bci_runtime.simulators.cursor_task import CursorTaskGenerator, check_drift
from bci_runtime.simulators.drift import Drift, DriftEffects, hash_kind, rotate_2d
from bci_runtime.simulators.fingers import FINGERS, FingerTask, FingerTaskParams, Somatotopy
from bci_runtime.simulators.noise import BandNoise, PinkNoise
from bci_runtime.simulators.scalp import apply_dropout
from bci_runtime.simulators.tasks import CenterOut, CenterOutParams, CuedTrials
from bci_runtime.simulators.user import SimulatedUser, UserParams

N_CHANNELS_RANGE = (16, 256)
SRATE_RANGE = (500.0, 2000.0)
HIGH_GAMMA_HZ = (70.0, 150.0)
_HG_TAU_S = 0.02  # time constant of the high-gamma envelope following the intention
_LFP_TAU_S = 0.05  # slow potential: first-order low-pass at about 3 Hz
_FINGER_HG_TAU_S = 0.1  # high gamma follows the fingers' speed smoothed over this
KINEMATICS = ("cursor", "fingers")
_MARGIN_MM = 60.0  # cortex modelled beyond the grid, so that shifted grids still see tuning
_BUMP_MM = 8.0  # width of the bumps that make the tuning fields
_BUMP_AREA_MM2 = 12.0 ** 2  # one bump of each field per this much cortex
_BUFFER_S = 0.25  # the noise streams are drawn this much at a time


class EcogParams(BaseModel):
    """ECoG grid, signal components, and the task (center-out cursor or finger flexion)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_channels: int = Field(64, description="electrodes of the grid (16-256)",
                            json_schema_extra={"minimum": N_CHANNELS_RANGE[0],
                                               "maximum": N_CHANNELS_RANGE[1]})
    srate: float = Field(1000.0, description="sampling rate (500-2000 Hz)",
                         json_schema_extra={"minimum": SRATE_RANGE[0],
                                            "maximum": SRATE_RANGE[1]})
    pitch_mm: float = Field(4.0, gt=0, le=10, description="distance between electrodes (mm)")
    kinematics: Literal["cursor", "fingers"] = Field(
        "cursor", description="what high gamma encodes: 'cursor' (2-D velocity, center-out "
        "task; truth vx, vy, cursor, target) or 'fingers' (cued finger flexion; truth the "
        "flexion 0-1 of thumb, index, middle, ring, little)")
    task: CenterOutParams = Field(default_factory=CenterOutParams,
                                  description="the center-out task (cursor kinematics)")
    fingers: FingerTaskParams = Field(default_factory=FingerTaskParams,
                                      description="the cued finger-flexion task and the "
                                      "fingers' cortical spots (fingers kinematics)")
    tuned_fraction: float = Field(0.6, ge=0, le=1, description="fraction of electrodes whose "
                                  "high gamma is tuned (cursor kinematics)")
    depth: tuple[float, float] = Field((0.3, 0.8), description="range of the high-gamma "
                                       "modulation depth of tuned electrodes (0-1; cursor "
                                       "kinematics, see fingers.depth for fingers)")
    hg_uv: float = Field(5.0, ge=0, description="high-gamma (70-150 Hz) amplitude at rest "
                         "(uV RMS)")
    lfp_uv: float = Field(8.0, ge=0, description="velocity-tuned slow potential at the "
                          "intended speed, or at full flexion of a finger (uV)")
    background_uv: float = Field(20.0, ge=0, description="1/f background (uV RMS)")
    background_sigma_mm: float = Field(5.0, gt=0, le=50, description="spatial correlation of "
                                       "the background (Gaussian kernel width, mm)")
    sensor_noise_uv: float = Field(2.0, ge=0, description="amplifier noise RMS (uV)")
    line_freq: Literal[50, 60] = Field(50, description="mains frequency (Hz)")
    line_uv: float = Field(5.0, ge=0, description="line noise amplitude (uV)")
    feedback_hold_s: float = Field(0.5, gt=0, le=10, description="decoded feedback steers the "
                                   "cursor for this long; then the intention does again (s; "
                                   "cursor kinematics)")
    subject_seed: int | None = Field(None, ge=0, description="seed of the simulated patient "
                                     "alone (cortical tuning, amplitudes, line coupling): the "
                                     "same patient in runs of other seeds; default: from the "
                                     "run's seed")

    @field_validator("n_channels")
    @classmethod
    def _channels_in_range(cls, n: int) -> int:
        return int(require_within(n, N_CHANNELS_RANGE, "n_channels must be within {lo}..{hi} "
                                  "(electrodes of the ECoG grid)"))

    @field_validator("srate")
    @classmethod
    def _srate_in_range(cls, srate: float) -> float:
        return require_within(srate, SRATE_RANGE, "srate must be within {lo}..{hi} Hz (ECoG is "
                              "sampled at 0.5-2 kHz to resolve high gamma)")

    @field_validator("depth")
    @classmethod
    def _depth_range(cls, depth: tuple[float, float]) -> tuple[float, float]:
        return require_low_high(depth, (0.0, 1.0), "depth")


def grid_positions(n: int, pitch_mm: float) -> np.ndarray:
    """Positions of ``n`` electrodes on a square-ish grid, row by row, centered (mm).

    Returns
    -------
    ndarray, shape (n, 2)
    """
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    k = np.arange(n)
    xy = np.c_[k % cols - (cols - 1) / 2.0, k // cols - (rows - 1) / 2.0]
    return xy * pitch_mm


def channel_names(n: int) -> tuple[str, ...]:
    """``G01`` .. ``G64`` (three digits from 100 electrodes on)."""
    width = max(2, len(str(n)))
    return tuple(f"G{i:0{width}d}" for i in range(1, n + 1))


def shift_offset(shift_mm: float, seed: int) -> np.ndarray:
    """Displacement of the grid for an electrode shift, in a direction drawn from ``seed`` (mm).

    Returns
    -------
    ndarray, shape (2,)
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, hash_kind("electrode-shift")]))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return shift_mm * np.array([np.cos(angle), np.sin(angle)])


class CortexTuning:
    """Smooth tuning maps of the cortex under a grid.

    Three fields, each a sum of random 2-D Gaussian bumps over the grid's area and
    a wide margin: a vector field whose angle is the high-gamma preferred
    direction, a positive field that decides where (and how deeply) high gamma is
    tuned, and a vector field for the tuning of the slow potential.

    Parameters
    ----------
    positions : ndarray, shape (n_electrodes, 2)
        Electrode positions without any shift (mm); they set the area and the
        thresholds (``tuned_fraction`` of them are tuned).
    rng : numpy.random.Generator
    tuned_fraction : float
    depth : (float, float)
        Range of the modulation depth of tuned sites.
    """

    def __init__(self, positions: np.ndarray, rng: np.random.Generator, tuned_fraction: float,
                 depth: tuple[float, float]) -> None:
        lo = positions.min(axis=0) - _MARGIN_MM
        hi = positions.max(axis=0) + _MARGIN_MM
        k = max(8, int(np.prod(hi - lo) / _BUMP_AREA_MM2))
        self._pd_centers = rng.uniform(lo, hi, (k, 2))
        angle = rng.uniform(0, 2 * np.pi, k)
        self._pd_vectors = np.c_[np.cos(angle), np.sin(angle)]
        self._depth_centers = rng.uniform(lo, hi, (k, 2))
        self._depth_weights = rng.uniform(0.5, 1.0, k)
        self._lfp_centers = rng.uniform(lo, hi, (k, 2))
        angle = rng.uniform(0, 2 * np.pi, k)
        self._lfp_vectors = np.c_[np.cos(angle), np.sin(angle)]
        self.depth_range = depth
        d = self._depth_field(positions)
        if tuned_fraction <= 0.0:
            self._threshold = np.inf
        elif tuned_fraction >= 1.0:
            self._threshold = float(d.min()) - 1e-12
        else:
            self._threshold = float(np.quantile(d, 1.0 - tuned_fraction))
        self._depth_top = max(float(d.max()), self._threshold + 1e-12)
        self._lfp_rms = float(np.sqrt(np.mean(np.sum(self._lfp_field(positions) ** 2, axis=1))))

    @staticmethod
    def _bumps(xy: np.ndarray, centers: np.ndarray) -> np.ndarray:
        d2 = np.sum((xy[:, None, :] - centers[None]) ** 2, axis=-1)
        return np.exp(-d2 / (2 * _BUMP_MM ** 2))  # (n, k)

    def _depth_field(self, xy: np.ndarray) -> np.ndarray:
        return self._bumps(xy, self._depth_centers) @ self._depth_weights

    def _lfp_field(self, xy: np.ndarray) -> np.ndarray:
        return self._bumps(xy, self._lfp_centers) @ self._lfp_vectors

    def at(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tuning seen at cortical positions ``xy``.

        Parameters
        ----------
        xy : ndarray, shape (n, 2)
            Positions (mm).

        Returns
        -------
        hg : ndarray, shape (n, 2)
            High-gamma tuning vectors ``m * (cos PD, sin PD)`` (0 where untuned).
        lfp : ndarray, shape (n, 2)
            Slow-potential tuning vectors (RMS length 1 over the unshifted grid).
        """
        field = self._bumps(xy, self._pd_centers) @ self._pd_vectors
        norm = np.hypot(field[:, 0], field[:, 1])
        unit = field / np.maximum(norm, 1e-12)[:, None]
        d = self._depth_field(xy)
        lo, hi = self.depth_range
        rel = np.clip((d - self._threshold) / (self._depth_top - self._threshold), 0.0, 1.0)
        m = np.where(d > self._threshold, lo + (hi - lo) * rel, 0.0)
        return unit * m[:, None], self._lfp_field(xy) / max(self._lfp_rms, 1e-12)


class _Buffered:
    """Serves a noise stream in blocks of any size, drawing it ``chunk`` samples at a time.

    Parameters
    ----------
    draw : callable
        ``draw(n)`` returns the next ``n`` samples, shape (n, k).
    chunk : int
        Samples drawn per call of ``draw``.
    """

    def __init__(self, draw: Callable[[int], np.ndarray], chunk: int) -> None:
        self._draw, self._chunk = draw, chunk
        self._buf = draw(chunk)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples, shape (n, k) (a fresh array)."""
        parts = []
        while n > 0:
            if self._pos == self._buf.shape[0]:
                self._buf, self._pos = self._draw(max(self._chunk, n)), 0
            m = min(n, self._buf.shape[0] - self._pos)
            parts.append(self._buf[self._pos:self._pos + m])
            self._pos += m
            n -= m
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


class EcogGenerator(CursorTaskGenerator):
    """ECoG (V) encoding cursor velocity or finger flexion, with the task's markers and truth.

    Parameters
    ----------
    params : EcogParams
    seed : int
        Everything random (cortex, grid noise, target or cue order, movements)
        derives from it.
    drift : Drift, optional
        Built with ``n_channels`` channels and as many units (tuned electrodes):
        :meth:`n_units_for`.
    user : UserParams, optional
        The simulated user (default: visual delay 200 ms, not learning).

    Attributes
    ----------
    truth_names : tuple of str
        ``vx, vy, cursor_x, cursor_y, target_x, target_y`` (cursor) or
        :data:`FINGERS` (fingers).
    classes : list of str
        The fingers (fingers mode; decoded class scores named after them are
        fed back as the winning finger), empty in cursor mode.

    Raises
    ------
    ConfigError
        When the drift was built for another number of channels or units.
    """

    stream_type = "ECoG"
    default_shift_mm = 2.0  # an implanted grid moves little

    def __init__(self, params: EcogParams, seed: int = 0, drift: Drift | None = None,
                 user: UserParams | None = None) -> None:
        super().__init__(drift)
        self.params = p = params
        self.srate = float(p.srate)
        n = p.n_channels
        self.channel_names = channel_names(n)
        self.channel_types, self.units = ("ecog",) * n, ("V",) * n
        ss = np.random.SeedSequence(seed)
        # the seventh child (finger movements and map) leaves the first six as they were
        subject, task, bg_rng, hg_rng, sensor_rng, fail_rng, finger_ss = (
            np.random.default_rng(s) if i < 6 else s for i, s in enumerate(ss.spawn(7)))
        if p.subject_seed is not None:  # the same patient whatever the run's seed
            subject = np.random.default_rng(np.random.SeedSequence([p.subject_seed, 0xEC]))
        self.positions = grid_positions(n, p.pitch_mm)
        self.cortex = CortexTuning(self.positions, subject, p.tuned_fraction, p.depth)
        self._hg_base, self._lfp_base = self.cortex.at(self.positions)
        self._hg_amp = p.hg_uv * subject.uniform(0.7, 1.3, n)  # b_i
        self._lfp_amp = p.lfp_uv
        self._line_coef = _line_coefficients(subject, n, p.line_uv)  # (2, n)
        self._build_noise(bg_rng, hg_rng, sensor_rng)
        self._fail_rng = fail_rng
        self.fingers_mode = p.kinematics == "fingers"
        if self.fingers_mode:
            self._start_fingers(p, user, task, finger_ss)
        else:
            self.classes: list[str] = []
            self._start_task(p, user, task)
        self._v_hg = np.zeros(2)  # smoothed intended velocity (envelope, slow potential)
        self._v_lfp = np.zeros(2)
        self._shifted: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}
        self._tuning_key: tuple = ()
        self._tuning = (self._hg_base, self._lfp_base)
        if drift is not None:  # sample the shifted tuning now, not mid-run
            for c in drift.components:
                if c.kind == "electrode-shift":
                    self._shifted_tuning(c.shift_mm, c.seed)

    # -- construction ---------------------------------------------------------------------
    def _start_fingers(self, p: EcogParams, user: UserParams | None,
                       order_rng: np.random.Generator, finger_ss: np.random.SeedSequence) -> None:
        """The finger task, the fingers' spots and a user with one effort per finger."""
        n = p.n_channels
        check_drift(self.drift, n, n)
        movement_rng, map_rng = (np.random.default_rng(s) for s in finger_ss.spawn(2))
        self.truth_names = FINGERS
        self.classes = list(FINGERS)
        self.user = SimulatedUser(user or UserParams(), len(FINGERS), self.classes)
        self.driver = None  # type: ignore[assignment]
        self.finger_task = FingerTask(p.fingers, p.srate, order_rng, movement_rng)
        self.somatotopy = Somatotopy(map_rng, p.fingers.spacing_mm, p.fingers.spot_mm,
                                     p.fingers.depth)
        self._neutral = DriftEffects.neutral(n, n)
        self._finger_key: tuple = ()
        self._finger_maps = self.somatotopy.at(self.positions)
        self._finger_filters = tuple(
            (np.array([1.0 - a]), np.array([1.0, -a]))
            for a in (np.exp(-1.0 / (_FINGER_HG_TAU_S * self.srate)),
                      np.exp(-1.0 / (_LFP_TAU_S * self.srate))))
        self._finger_zi = [np.zeros((1, len(FINGERS))), np.zeros((1, len(FINGERS)))]

    def _build_noise(self, bg_rng: np.random.Generator, hg_rng: np.random.Generator,
                     sensor_rng: np.random.Generator) -> None:
        p, n, fs = self.params, self.params.n_channels, self.srate
        chunk = max(64, int(_BUFFER_S * fs))
        # sources under every node of the full rows x cols grid, mixed by a separable Gaussian
        # kernel (rows, then columns): O(n (rows + cols)) per sample instead of O(n^2)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        kr, kc = (_gaussian_kernel(k, p.pitch_mm, p.background_sigma_mm) for k in (rows, cols))
        kr *= p.background_uv
        pink = PinkNoise(rows * cols, bg_rng)

        def background(k: int) -> np.ndarray:
            s = pink(k).reshape(k, rows, cols) @ kc.T  # mix along each row
            return (kr @ s).reshape(k, rows * cols)[:, :n]  # then along each column

        self._background = _Buffered(background, chunk)
        carrier = BandNoise(*HIGH_GAMMA_HZ, fs, n, hg_rng)
        self._carrier = _Buffered(carrier, chunk)
        self._sensor = _Buffered(lambda k: sensor_rng.standard_normal((k, n)), chunk)

    @property
    def task(self) -> CenterOut | CuedTrials:  # type: ignore[override]
        """The center-out task (cursor), or the cued finger trials (fingers)."""
        return self.finger_task.trials if self.fingers_mode else self.driver.task

    # -- tuning under drift ---------------------------------------------------------------
    def _shifted_tuning(self, shift_mm: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        key = (float(shift_mm), int(seed))
        if key not in self._shifted:
            self._shifted[key] = self.cortex.at(self.positions + shift_offset(shift_mm, seed))
        return self._shifted[key]

    def _tuning_for(self, effects: DriftEffects) -> tuple[np.ndarray, np.ndarray]:
        """High-gamma and slow-potential tuning vectors, each shape (n_channels, 2)."""
        key = tuple((s.key, round(s.fraction, 4)) for s in effects.shifts)
        if key != self._tuning_key:
            hg, lfp = self._hg_base.copy(), self._lfp_base.copy()
            for s in effects.shifts:
                hg_s, lfp_s = self._shifted_tuning(s.shift_mm, s.seed)
                hg += s.fraction * (hg_s - self._hg_base)
                lfp += s.fraction * (lfp_s - self._lfp_base)
            self._tuning, self._tuning_key = (hg, lfp), key
        hg, lfp = self._tuning
        if effects.pd_angle.size and effects.pd_angle.any():
            hg, lfp = rotate_2d(hg, effects.pd_angle), rotate_2d(lfp, effects.pd_angle)
        return hg, lfp

    def _fingers_for(self, effects: DriftEffects) -> tuple[np.ndarray, np.ndarray]:
        """Each finger's high-gamma depth and slow-potential weight per electrode, (n, 5) each.

        An electrode shift moves the grid over the spots by its fraction of the
        displacement; ``pd_angle`` is ignored.
        """
        key = tuple((s.key, round(s.fraction, 4)) for s in effects.shifts)
        if key != self._finger_key:
            offset = np.zeros(2)
            for s in effects.shifts:
                offset += s.fraction * shift_offset(s.shift_mm, s.seed)
            self._finger_maps = self.somatotopy.at(self.positions + offset)
            self._finger_key = key
        return self._finger_maps

    def finger_weights(self, t: float) -> np.ndarray:
        """High-gamma modulation depth of each finger at each electrode at ``t`` (fingers).

        Parameters
        ----------
        t : float
            Seconds since the stream started (an electrode shift moves the grid).

        Returns
        -------
        ndarray, shape (n_channels, 5)
            Columns in :data:`FINGERS` order; fatigue and effort not included.

        Raises
        ------
        RunError
            In cursor mode.
        """
        if not self.fingers_mode:
            raise RunError("finger_weights() needs kinematics='fingers'",
                           hint="in cursor mode use tuning_vectors() or preferred_directions()")
        return self._fingers_for(self._effects(t))[0].copy()

    def tuning_vectors(self, t: float) -> np.ndarray:
        """High-gamma tuning ``m_i (cos PD_i, sin PD_i)`` at ``t`` (after drift; cursor).

        Parameters
        ----------
        t : float
            Seconds since the stream started.

        Returns
        -------
        ndarray, shape (n_channels, 2)
            Zero rows for untuned electrodes; fatigue not included.

        Raises
        ------
        RunError
            In fingers mode (nothing is tuned to a direction; see :meth:`finger_weights`).
        """
        if self.fingers_mode:
            raise RunError("tuning_vectors() and preferred_directions() need "
                           "kinematics='cursor'",
                           hint="in fingers mode use finger_weights() or somatotopy.spots")
        return self._tuning_for(self._effects(t))[0].copy()

    def preferred_directions(self, t: float) -> np.ndarray:
        """Preferred direction of each electrode's high gamma at ``t`` (rad, in (-pi, pi]).

        Returns
        -------
        ndarray, shape (n_channels,)
            NaN for untuned electrodes.
        """
        v = self.tuning_vectors(t)
        pd = np.arctan2(v[:, 1], v[:, 0])
        pd[np.hypot(v[:, 0], v[:, 1]) < 1e-12] = np.nan
        return pd

    # -- generation -------------------------------------------------------------------------
    def generate(self, start: int, n: int) -> Block:
        effects = self._effects(start / self.srate)
        if self.fingers_mode:
            amp, slow, markers, truth = self._encode_fingers(start, n, effects)
        else:
            amp, slow, markers, truth = self._encode_cursor(start, n, effects)
        np.maximum(amp, 0.0, out=amp)
        x = self._carrier.take(n)
        x *= amp
        x += self._background.take(n)
        x += slow
        if self.params.line_uv:
            phase = 2 * np.pi * self.params.line_freq * np.arange(start, start + n) / self.srate
            x += np.c_[np.sin(phase), np.cos(phase)] @ self._line_coef
        noise = self._sensor.take(n)
        noise *= self.params.sensor_noise_uv * effects.noise_scale
        x += noise
        x *= effects.gain * 1e-6  # uV -> V
        apply_dropout(x, effects.dropout, self._fail_rng)
        return Block(x, start, markers, truth)

    def _encode_cursor(self, start: int, n: int, effects: DriftEffects
                       ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]], np.ndarray]:
        """High-gamma amplitude and slow potential (uV), each (n, n_channels), markers, truth."""
        fs = self.srate
        step = self.driver.step(start, n)
        hg_tuning, lfp_tuning = self._tuning_for(effects)
        scale = effects.modulation / self.driver.speed
        k = np.arange(1, n + 1, dtype=np.float64)[:, None]
        v_hg = _smooth(self._v_hg, step.intended, k, np.exp(-1.0 / (_HG_TAU_S * fs)))
        v_lfp = _smooth(self._v_lfp, step.intended, k, np.exp(-1.0 / (_LFP_TAU_S * fs)))
        self._v_hg, self._v_lfp = v_hg[-1].copy(), v_lfp[-1].copy()

        amp = v_hg @ (hg_tuning.T * scale)  # (n, n_channels): m cos(theta - PD) |v| / speed
        amp += 1.0
        amp *= self._hg_amp * effects.rate_gain
        slow = v_lfp @ (lfp_tuning.T * (scale * self._lfp_amp))
        return amp, slow, step.markers, step.truth

    def _encode_fingers(self, start: int, n: int, effects: DriftEffects
                        ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]], np.ndarray]:
        """Like :meth:`_encode_cursor`, from the fingers' speed and flexion; truth (n, 5)."""
        step = self.finger_task.step(start, n)
        self.user.perceive(start / self.srate, int(step.cued[0]))
        # speed relative to a typical flexion's, times the user's effort for the cued finger
        scale = self.user.modulation(step.cued) / self.finger_task.typical_speed
        activity = step.speed * scale[:, None]  # (n, 5), about 1 on average while flexing
        (b_hg, a_hg), (b_lfp, a_lfp) = self._finger_filters
        zi = self._finger_zi
        activity, zi[0] = sps.lfilter(b_hg, a_hg, activity, axis=0, zi=zi[0])
        flexion, zi[1] = sps.lfilter(b_lfp, a_lfp, step.flexion, axis=0, zi=zi[1])
        hg_map, lfp_map = self._fingers_for(effects)
        amp = activity @ (hg_map.T * effects.modulation)  # (n, n_channels)
        amp += 1.0
        amp *= self._hg_amp * effects.rate_gain
        slow = flexion @ (lfp_map.T * (effects.modulation * self._lfp_amp))
        return amp, slow, step.markers, step.flexion

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        """Show the user what was decoded at ``t`` (s since the stream started).

        Cursor: the decoded velocity (``values[:2]``) moves the cursor and is
        shown. Fingers: a finger's name, or five scores (one per finger, in
        :data:`FINGERS` order) shown as the highest-scoring finger; a wrong
        finger makes the user try harder at the cued one (with a learning rate).

        Raises
        ------
        RunError
            For numeric feedback of the wrong size or with non-finite values.
        """
        if not self.fingers_mode:
            self.driver.feedback(t, values)
            return
        if isinstance(values, str):
            self.user.show(t, values)
            return
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size != len(FINGERS) or not np.all(np.isfinite(v)):
            raise RunError(f"finger feedback needs a finger's name or {len(FINGERS)} finite "
                           f"scores ({', '.join(FINGERS)}), got {v[:6]!r}",
                           hint="feed the decoder's class scores back, with channels named "
                                "after the fingers")
        self.user.show(t, FINGERS[int(np.argmax(v))])


def _gaussian_kernel(k: int, pitch_mm: float, sigma_mm: float) -> np.ndarray:
    """Gaussian mixing along one grid axis, rows of unit norm, shape (k, k)."""
    x = np.arange(k) * pitch_mm
    kernel = np.exp(-((x[:, None] - x[None]) ** 2) / (2 * sigma_mm ** 2))
    return kernel / np.sqrt(np.sum(kernel ** 2, axis=1, keepdims=True))


def _smooth(state: np.ndarray, target: np.ndarray, k: np.ndarray, a: float) -> np.ndarray:
    """First-order low-pass of a block-constant 2-D input, exactly per sample, shape (n, 2)."""
    return target + (state - target) * a ** k


def _line_coefficients(rng: np.random.Generator, n: int, line_uv: float) -> np.ndarray:
    """Line noise ``a_i sin(wt + phi_i)`` as coefficients of (sin wt, cos wt), shape (2, n)."""
    amp = line_uv * rng.uniform(0.3, 1.5, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    return np.vstack([amp * np.cos(phase), amp * np.sin(phase)])

