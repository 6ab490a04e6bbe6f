"""The simulated user: sees the feedback late, intends toward the cue, and may learn.

Two learners meet in a closed loop: the decoder adapts to the user, and this
user adapts to the decoder. The user sees what the runtime decoded after a
visual delay (about 200 ms) and changes its own encoding with its own learning
rate:

* discrete feedback (motor imagery, SSVEP): when the feedback shows a wrong
  class while class ``c`` is cued, the user tries harder at ``c`` (its
  modulation depth grows toward ``max_effort``); a right answer lets the effort
  relax slowly toward 1;
* continuous feedback (cursor): the user notices the angle between the
  direction it intended and the direction the cursor actually moved, and
  re-aims to cancel it (as in visuomotor adaptation).

With ``learning_rate = 0`` the user is a fixed encoder.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class UserParams(BaseModel):
    """How the simulated user perceives and learns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: float = Field(0.2, ge=0, le=2, description="visual delay before feedback is seen")
    learning_rate: float = Field(0.0, ge=0, le=1, description="0: the user does not adapt")
    max_effort: float = Field(1.6, ge=1, le=3, description="largest modulation-depth multiplier")
    speed: float = Field(0.4, gt=0, description="intended cursor speed (workspace units/s)")


class SimulatedUser:
    """A user who closes the loop.

    Parameters
    ----------
    params : UserParams
    n_classes : int
        Classes of a discrete task (0 for a continuous task).
    classes : list of str
        Their names (as the decoder outputs them).
    """

    def __init__(self, params: UserParams, n_classes: int = 0,
                 classes: list[str] | None = None) -> None:
        self.params = params
        self.classes = list(classes or [])
        self.effort = np.ones(max(n_classes, 1))  # modulation depth per class
        self.aim_correction = 0.0  # radians added to the intended direction
        self._seen: deque[tuple[float, object]] = deque()
        self.feedback_seen = 0

    def show(self, t: float, value: np.ndarray | str) -> None:
        """Put feedback on the screen at ``t``; the user sees it ``delay_s`` later."""
        self._seen.append((t + self.params.delay_s, value))

    def perceive(self, t: float, cued: int, intended: np.ndarray | None = None) -> None:
        """Take in everything visible by ``t`` and learn from it.

        Parameters
        ----------
        t : float
            Now (s since the stream started).
        cued : int
            Class cued now (-1 at rest); discrete tasks.
        intended : ndarray, shape (2,), optional
            Velocity the user intended; continuous tasks.
        """
        lr = self.params.learning_rate
        while self._seen and self._seen[0][0] <= t:
            _, value = self._seen.popleft()
            self.feedback_seen += 1
            if lr == 0.0:
                continue
            if isinstance(value, str) and cued >= 0 and value in self.classes:
                if value != self.classes[cued]:
                    self.effort[cued] += lr * (self.params.max_effort - self.effort[cued])
                else:
                    self.effort[cued] += 0.1 * lr * (1.0 - self.effort[cued])
            elif intended is not None and not isinstance(value, str):
                moved = np.asarray(value, dtype=float)[:2]
                if np.hypot(*moved) > 1e-9 and np.hypot(*intended) > 1e-9:
                    error = np.arctan2(moved[1], moved[0]) - np.arctan2(intended[1], intended[0])
                    error = (error + np.pi) % (2 * np.pi) - np.pi
                    self.aim_correction -= lr * error

    def last_seen(self) -> object | None:
        """The newest feedback still waiting to be seen, if any (for tests)."""
        return self._seen[-1][1] if self._seen else None

    def modulation(self, cued: np.ndarray) -> np.ndarray:
        """Modulation-depth multiplier at each sample.

        Parameters
        ----------
        cued : ndarray of int, shape (n,)
            Cued class per sample, -1 at rest.

        Returns
        -------
        ndarray, shape (n,)
        """
        out = np.ones(cued.shape)
        active = cued >= 0
        out[active] = self.effort[cued[active]]
        return out

    def intend(self, cursor: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Intended velocity toward ``target`` from ``cursor``, shape (2,)."""
        to_target = target - cursor
        distance = float(np.hypot(*to_target))
        if distance < 1e-9:
            return np.zeros(2)
        # slow down near the target so that the cursor can dwell on it
        speed = self.params.speed * min(1.0, distance / 0.2)
        angle = np.arctan2(to_target[1], to_target[0]) + self.aim_correction
        return speed * np.array([np.cos(angle), np.sin(angle)])
