"""A cortical population: cosine-tuned Poisson units binned at 20-50 ms (center-out task).

Each of ``n_channels`` units (96-192, one or two Utah arrays) fires as an
inhomogeneous Poisson process whose rate is cosine-tuned to the velocity ``v``
that the simulated user intends::

    rate_i = max(0, b_i * g_i + f * m_i * |v| / speed * cos(theta_v - PD_i - a_i))

with ``b_i`` the baseline rate (5-30 Hz), ``g_i`` the drift's ``rate_gain``,
``m_i`` the modulation depth at the user's intended ``speed`` (Hz), ``f`` the
drift's ``modulation`` (fatigue), ``PD_i`` the preferred direction and ``a_i``
the drift's ``pd_angle`` (tuning drift). The stream carries spike counts per bin
(``srate`` bins per second; units ``count``).

Other drift, as a threshold-crossing recording would see it: ``gain``
(impedance) multiplies the rate, extra ``noise_scale`` adds untuned crossings
(``noise_hz`` per unit of added noise), failed channels count nothing (flat),
saturate at 1 kHz (railed) or count untuned noise at 200 Hz (noisy). Electrode
shifts describe displaced caps and grids and do not affect the units.

The task, the user and the ground truth are those of
:class:`~bci_runtime.simulators.cursor_task.CursorTaskDriver`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bci_runtime.simulators.base import Block, require_low_high, require_within
from bci_runtime.simulators.cursor_task import CursorTaskGenerator
from bci_runtime.simulators.drift import Drift, DriftEffects
from bci_runtime.simulators.tasks import CenterOutParams
from bci_runtime.simulators.user import UserParams

N_UNITS_RANGE = (96, 192)
SRATE_RANGE = (20.0, 50.0)  # bins of 50 ms to 20 ms
RAILED_HZ = 1000.0  # a stuck threshold crossing: one count per refractory period
NOISY_HZ = 200.0  # a channel that only counts noise


class PopulationParams(BaseModel):
    """Units, bins, tuning, and the center-out task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_channels: int = Field(96, description="units (96-192)",
                            json_schema_extra={"minimum": N_UNITS_RANGE[0],
                                               "maximum": N_UNITS_RANGE[1]})
    srate: float = Field(50.0, description="bins per second: 20-50 Hz (bins of 20-50 ms)",
                         json_schema_extra={"minimum": SRATE_RANGE[0],
                                            "maximum": SRATE_RANGE[1]})
    task: CenterOutParams = Field(default_factory=CenterOutParams)
    baseline_hz: tuple[float, float] = Field((5.0, 30.0), description="range of the baseline "
                                             "rates (Hz)")
    depth_hz: tuple[float, float] = Field((5.0, 20.0), description="range of the modulation "
                                          "depths at the intended speed (Hz)")
    noise_hz: float = Field(2.0, ge=0, description="untuned crossings added per unit of extra "
                            "sensor noise (Hz)")
    feedback_hold_s: float = Field(0.5, gt=0, le=10, description="decoded feedback steers the "
                                   "cursor for this long; then the intention does again (s)")

    @field_validator("n_channels")
    @classmethod
    def _units_in_range(cls, n: int) -> int:
        return int(require_within(n, N_UNITS_RANGE, "n_channels must be within {lo}..{hi} "
                                  "(units of one or two arrays)"))

    @field_validator("srate")
    @classmethod
    def _bins(cls, srate: float) -> float:
        return require_within(srate, SRATE_RANGE, "srate must be within {lo}..{hi} Hz, i.e. bins "
                              "of 20-50 ms")

    @field_validator("baseline_hz", "depth_hz")
    @classmethod
    def _rate_range(cls, rates: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return require_low_high(rates, (0.0, 500.0), str(info.field_name), " Hz")


class PopulationGenerator(CursorTaskGenerator):
    """Spike counts of cosine-tuned units, with the center-out task's markers and kinematics.

    Parameters
    ----------
    params : PopulationParams
    seed : int
        Everything random (tuning, spikes, target order) derives from it.
    drift : Drift, optional
        Built with ``n_channels`` channels and as many units: :meth:`n_units_for`.
    user : UserParams, optional
        The simulated user (default: visual delay 200 ms, not learning).

    Raises
    ------
    ConfigError
        When the drift was built for another number of channels or units.
    """

    stream_type = "Spikes"

    def __init__(self, params: PopulationParams, seed: int = 0, drift: Drift | None = None,
                 user: UserParams | None = None) -> None:
        super().__init__(drift)
        self.params = p = params
        self.srate = float(p.srate)
        n = p.n_channels
        self.channel_names = tuple(f"U{i:03d}" for i in range(1, n + 1))
        self.channel_types, self.units = ("spikes",) * n, ("count",) * n
        subject, task, spikes = (np.random.default_rng(s)
                                 for s in np.random.SeedSequence(seed).spawn(3))
        self.baseline = subject.uniform(*p.baseline_hz, n)  # b_i (Hz)
        self.depth = subject.uniform(*p.depth_hz, n)  # m_i (Hz at the intended speed)
        self.pd = subject.uniform(-np.pi, np.pi, n)  # PD_i (rad)
        self._unit = np.c_[np.cos(self.pd), np.sin(self.pd)]  # (n, 2)
        self._rng = spikes
        self._start_task(p, user, task)

    def preferred_directions(self, t: float) -> np.ndarray:
        """True preferred direction of each unit at ``t``, after tuning drift.

        Parameters
        ----------
        t : float
            Seconds since the stream started.

        Returns
        -------
        ndarray, shape (n_units,)
            Radians, wrapped to [-pi, pi).
        """
        pd = self.pd + self._effects(t).pd_angle
        return (pd + np.pi) % (2 * np.pi) - np.pi

    def rates(self, velocity: np.ndarray, t: float) -> np.ndarray:
        """Firing rates for intended velocities at ``t``, before sensor effects.

        Parameters
        ----------
        velocity : ndarray, shape (n, 2)
            Intended velocities (workspace units/s).
        t : float
            Seconds since the stream started (the drift in effect).

        Returns
        -------
        ndarray, shape (n, n_units)
            Hz, non-negative.
        """
        return self._rates(np.atleast_2d(velocity), self._effects(t))

    def _rates(self, velocity: np.ndarray, effects: DriftEffects) -> np.ndarray:
        a = effects.pd_angle
        c, s = np.cos(a), np.sin(a)
        ux, uy = self._unit[:, 0], self._unit[:, 1]
        pd = np.vstack([c * ux - s * uy, s * ux + c * uy])  # (2, n): rotated unit PDs
        pd *= self.depth * (effects.modulation / self.driver.speed)
        rate = velocity @ pd
        rate += self.baseline * effects.rate_gain
        np.maximum(rate, 0.0, out=rate)
        return rate

    def generate(self, start: int, n: int) -> Block:
        effects = self._effects(start / self.srate)
        step = self.driver.step(start, n)
        rate = self._rates(step.truth[:, 0:2], effects)
        rate *= effects.gain
        extra = effects.noise_scale - 1.0
        if np.any(extra > 0):
            rate += self.params.noise_hz * np.maximum(extra, 0.0)
        dropout = effects.dropout
        if dropout.any():
            rate[:, dropout == 1] = 0.0
            rate[:, dropout == 3] = NOISY_HZ
        counts = self._rng.poisson(rate / self.srate).astype(np.float64)
        if dropout.any():
            counts[:, dropout == 2] = np.floor(RAILED_HZ / self.srate)
        return Block(counts, start, step.markers, step.truth)

