"""The center-out cursor task with its simulated user, shared by the continuous generators.

The ECoG and cortical-population generators both encode the velocity that the
simulated user intends, while the user steers a cursor through the center-out
task (:class:`~bci_runtime.simulators.tasks.CenterOut`). This module holds that
plumbing, once per block:

1. the user perceives the feedback that has become visible (after its visual
   delay) and learns from it, comparing the direction the cursor moved with the
   direction it wanted to go (toward the target, without its aim correction, so
   that the correction converges to the opposite of a decoder's rotation); it
   judges only movements of a reach, not those while homing in on the target
   (where the direction to it turns fast) nor what it still sees of the previous
   reach just after the target changed;
2. the user intends a velocity toward the target (with its learned aim
   correction); the generator encodes it in the neural signal;
3. the cursor moves with the newest decoded velocity if the runtime fed one back
   recently (closed loop), otherwise with the intended velocity (an open-loop
   calibration block, where the user watches the cursor move perfectly);
4. the task's markers become sample indices.

Ground truth, one row per sample (:data:`TRUTH_NAMES`): the intended velocity
(block-constant), the cursor position (moving linearly within the block) and the
current target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.simulators.base import Generator
from bci_runtime.simulators.drift import Drift, DriftEffects
from bci_runtime.simulators.tasks import REST, CenterOut, CenterOutParams
from bci_runtime.simulators.user import SimulatedUser, UserParams

_JUDGE_DISTANCE = 0.3  # the user judges movements farther than this (x radius) from the target
_JUDGE_AFTER_S = 0.1  # ... and from this long after it has seen the new target (plus its delay)

TRUTH_NAMES = ("vx", "vy", "cursor_x", "cursor_y", "target_x", "target_y")


@dataclass
class CursorStep:
    """What the task did during one block.

    Attributes
    ----------
    intended : ndarray, shape (2,)
        Velocity the user intended (and the neural signal encodes), workspace units/s.
    moved : ndarray, shape (2,)
        Velocity the cursor actually moved with (decoded or intended).
    closed_loop : bool
        Whether the cursor followed decoded feedback.
    markers : list of (str, int)
        Task markers and their sample indices, in time order.
    truth : ndarray, shape (n_samples, 6)
        Columns :data:`TRUTH_NAMES`.
    """

    intended: np.ndarray
    moved: np.ndarray
    closed_loop: bool
    markers: list[tuple[str, int]] = field(default_factory=list)
    truth: np.ndarray = field(default_factory=lambda: np.zeros((0, len(TRUTH_NAMES))))


class CursorTaskDriver:
    """Runs the center-out task and the simulated user block by block.

    Parameters
    ----------
    params : CenterOutParams
        The task.
    user : SimulatedUser
        The user who intends and learns.
    srate : float
        Sampling rate of the stream the markers and truth belong to (Hz).
    rng : numpy.random.Generator
        Draws the order of the targets.
    hold_s : float
        Decoded feedback steers the cursor for this long after it was received;
        with no feedback for longer the cursor follows the intention again.
    """

    truth_names = TRUTH_NAMES

    def __init__(self, params: CenterOutParams, user: SimulatedUser, srate: float,
                 rng: np.random.Generator, hold_s: float = 0.5) -> None:
        self.task = CenterOut(params, rng)
        self.user = user
        self.srate, self.hold_s = float(srate), float(hold_s)
        self._decoded: np.ndarray | None = None  # newest decoded velocity, shape (2,)
        self._decoded_t = -np.inf
        self.intended = np.zeros(2)
        self._target_t = 0.0  # when the current target appeared

    @property
    def speed(self) -> float:
        """The user's intended cursor speed (workspace units/s)."""
        return float(self.user.params.speed)

    def goal(self) -> np.ndarray:
        """Direction the user wants the cursor to go, toward the target, shape (2,).

        Unlike :meth:`SimulatedUser.intend`, without the user's aim correction: the
        user judges the feedback against where it wants to go, so that its
        correction converges to the opposite of the decoder's rotation.
        """
        return self.task.target - self.task.cursor

    def step(self, start: int, n: int) -> CursorStep:
        """Advance the task over samples ``start`` .. ``start + n - 1``.

        Parameters
        ----------
        start, n : int
            First sample and number of samples of the block.

        Returns
        -------
        CursorStep
        """
        fs = self.srate
        t0, t1 = start / fs, (start + n) / fs
        # the user learns only from movements it can judge: while reaching (not while homing in
        # on or dwelling inside the target, where the direction to it changes fast) and not
        # from what it sees of the previous reach just after the target changed
        goal = self.goal()
        judging = (np.hypot(*goal) > _JUDGE_DISTANCE * self.task.params.radius
                   and t0 - self._target_t > self.user.params.delay_s + _JUDGE_AFTER_S)
        self.user.perceive(t0, REST, goal if judging else None)
        intended = self.user.intend(self.task.cursor, self.task.target)
        self.intended = intended
        closed = self._decoded is not None and t0 - self._decoded_t <= self.hold_s
        moved = self._decoded if closed else intended
        cursor0, target = self.task.cursor.copy(), self.task.target.copy()

        truth = np.empty((n, len(TRUTH_NAMES)))
        truth[:, 0:2] = intended
        steps = np.arange(1, n + 1, dtype=np.float64)[:, None] / fs
        truth[:, 2:4] = np.clip(cursor0 + steps * moved, -1.5, 1.5)
        truth[:, 4:6] = target

        target_index = self.task.target_index
        self.task.advance(t1, moved, n / fs)
        if self.task.target_index != target_index:
            self._target_t = t1
        last = start + n - 1
        markers = [(label, min(last, max(start, int(np.ceil(t * fs - 1e-9)))))
                   for label, t in self.task.take_markers()]
        markers.sort(key=lambda m: m[1])
        return CursorStep(intended, np.array(moved, dtype=float), bool(closed), markers, truth)

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        """The runtime decoded ``values`` and showed them at ``t``.

        Parameters
        ----------
        t : float
            Time the feedback was shown (s since the stream started).
        values : ndarray, shape (n_values,) with n_values >= 2, or str
            Decoded control signal; its first two values are the cursor velocity
            (workspace units/s). A string (a decoded class) is shown to the user
            but does not move the cursor.

        Raises
        ------
        RunError
            When fewer than two values or non-finite values are fed back.
        """
        if isinstance(values, str):
            self.user.show(t, values)
            return
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size < 2 or not np.all(np.isfinite(v[:2])):
            raise RunError(f"cursor feedback needs two finite values (vx, vy), got {v[:4]!r}",
                           hint="feed the decoder's 2-D velocity output back to the simulator")
        self._decoded = v[:2].copy()
        self._decoded_t = float(t)
        self.user.show(t, self._decoded)


def check_drift(drift: Drift | None, n_channels: int, n_units: int) -> None:
    """Check that ``drift`` was built for the generator's channels and tuned units.

    Raises
    ------
    ConfigError
        When the counts differ (the hint says how to build it).
    """
    if drift is not None and (drift.n_channels != n_channels or drift.n_units != n_units):
        raise ConfigError(
            f"the drift was built for {drift.n_channels} channels and {drift.n_units} units, "
            f"the generator has {n_channels} channels and {n_units} units",
            hint=f"build it as Drift(components, {n_channels}, {n_units}), or through "
                 "make_generator()")


class CursorTaskGenerator(Generator):
    """Base of the generators that encode intended cursor velocity (ECoG, population).

    Every channel is a tuned unit (what tuning drift rotates); subclasses call
    :meth:`_start_task` in ``__init__`` and use ``self.driver`` per block.
    """

    truth_names = TRUTH_NAMES

    @classmethod
    def n_units_for(cls, params: Any) -> int:
        """Every channel is tuned to the intended velocity."""
        return int(params.n_channels)

    def _start_task(self, params: Any, user: UserParams | None,
                    rng: np.random.Generator) -> None:
        """Check the drift, and set up the simulated user and the center-out task.

        ``params`` needs ``n_channels``, ``srate``, ``task`` and ``feedback_hold_s``.
        """
        n = int(params.n_channels)
        check_drift(self.drift, n, n)
        self.user = SimulatedUser(user or UserParams())
        self.driver = CursorTaskDriver(params.task, self.user, params.srate, rng,
                                       params.feedback_hold_s)
        self._neutral = DriftEffects.neutral(n, n)

    @property
    def task(self) -> CenterOut:
        """The center-out task (cursor, target, hits, timeouts)."""
        return self.driver.task

    def _effects(self, t: float) -> DriftEffects:
        return self.drift.effects_at(t) if self.drift is not None else self._neutral

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        """Decoded cursor velocity (``values[:2]``): moves the cursor, is shown to the user."""
        self.driver.feedback(t, values)
