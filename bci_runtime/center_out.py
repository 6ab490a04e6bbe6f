"""The 2-D center-out task: targets on a circle and back to the center, dwell to acquire.

One task for the runtime's cursor paradigms: the simulated user plays it (its
generator), and the ``center_out`` node runs it for a real subject. Markers::

    target/<k> {"x": .., "y": ..}   target k appears (k = 0 is the center)
    hit/<k>                the cursor dwelled on target k long enough
    timeout/<k>            target k was not acquired in time
"""

from __future__ import annotations

import json

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class CenterOutParams(BaseModel):
    """The 2-D center-out task (positions in workspace units, radius 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_targets: int = Field(8, ge=2, le=32, description="outer targets on the circle")
    radius: float = Field(0.8, gt=0, le=1, description="distance of outer targets from center")
    target_size: float = Field(0.15, gt=0, description="target radius")
    dwell_s: float = Field(0.5, gt=0, description="time inside a target to acquire it")
    timeout_s: float = Field(10.0, gt=0, description="time allowed per target")


class CenterOut:
    """Center-out-and-back: an outer target, then the center, and so on.

    The cursor moves with the decoded velocity when feedback arrives, and with the
    user's intended velocity when it does not (an open-loop calibration block,
    where the user watches the cursor move perfectly).

    Parameters
    ----------
    params : CenterOutParams
    rng : numpy.random.Generator
        Draws the order of the outer targets.
    """

    def __init__(self, params: CenterOutParams, rng: np.random.Generator) -> None:
        self.params, self._rng = params, rng
        angles = 2 * np.pi * np.arange(params.n_targets) / params.n_targets
        outer = params.radius * np.c_[np.cos(angles), np.sin(angles)]
        self.targets = np.vstack([[0.0, 0.0], outer])
        self.cursor = np.zeros(2)
        self._order: list[int] = []
        self.target_index = self._next_outer()
        self._target_since: float = 0.0
        self._inside_since: float | None = None
        self._pending: list[tuple[str, float]] = [(self._target_marker(), 0.0)]
        self.hits = self.timeouts = 0

    @property
    def target(self) -> np.ndarray:
        """Position of the current target, shape (2,)."""
        return self.targets[self.target_index]

    def _next_outer(self) -> int:
        if not self._order:
            self._order = (1 + self._rng.permutation(self.params.n_targets)).tolist()
        return self._order.pop()

    def _target_marker(self) -> str:
        x, y = self.target
        return f"target/{self.target_index} " + json.dumps({"x": round(float(x), 4),
                                                           "y": round(float(y), 4)})

    def advance(self, t: float, velocity: np.ndarray, dt: float) -> None:
        """Move the cursor by ``velocity * dt`` and update the target state at ``t``.

        Parameters
        ----------
        t : float
            Time after the move (s since the stream started).
        velocity : ndarray, shape (2,)
            Cursor velocity (workspace units per second).
        dt : float
            Duration of the move (s).
        """
        p = self.params
        self.cursor = np.clip(self.cursor + velocity * dt, -1.5, 1.5)
        inside = np.hypot(*(self.cursor - self.target)) <= p.target_size
        if inside:
            self._inside_since = t if self._inside_since is None else self._inside_since
            if t - self._inside_since >= p.dwell_s:
                self.hits += 1
                self._switch(t, f"hit/{self.target_index}")
                return
        else:
            self._inside_since = None
        if t - self._target_since >= p.timeout_s:
            self.timeouts += 1
            self._switch(t, f"timeout/{self.target_index}")

    def _switch(self, t: float, outcome: str) -> None:
        self._pending.append((outcome, t))
        self.target_index = self._next_outer() if self.target_index == 0 else 0
        self._target_since, self._inside_since = t, None
        self._pending.append((self._target_marker(), t))

    def take_markers(self) -> list[tuple[str, float]]:
        """Markers since the last call, with their times (s since the stream started)."""
        out, self._pending = self._pending, []
        return out
