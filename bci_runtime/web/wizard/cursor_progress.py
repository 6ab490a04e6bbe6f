"""Where a continuous-cursor run is: the cursor, the target, targets reached, decoding quality.

Fed the task's stream (the simulator's ground truth, or the ``center_out`` node's
cursor: both name ``cursor_x, cursor_y, target_x, target_y, vx, vy``), its
``hit/<k>`` and ``timeout/<k>`` markers, and the decoded velocity, as a run's
chunks pass. When the task stream is the simulator's truth, its ``vx, vy`` are
what the simulated patient intended: the decoded velocity is scored against
them (R² over the last minute). A real patient's intention is not known; only
the targets reached say how well the cursor is controlled.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

#: cursor positions sent to the page per second, at most
CURSOR_HZ = 30.0
#: seconds of decoded and intended velocity the running R² is computed on
R2_WINDOW_S = 60.0
_POSITION = ("cursor_x", "cursor_y", "target_x", "target_y")
_VELOCITY = ("vx", "vy")


class CursorProgress:
    """Follows one run of the center-out task.

    Parameters
    ----------
    intended : bool
        The task stream's ``vx, vy`` are the patient's intention (the simulator's
        ground truth), so the decoder can be scored against them.
    """

    def __init__(self, intended: bool) -> None:
        self.intended = intended
        self.hits = 0
        self.timeouts = 0
        self.first: float | None = None  # the task stream's first and newest times
        self.newest: float | None = None
        self.cursor = (0.0, 0.0)
        self.target = (0.0, 0.0)
        self._cols: np.ndarray | None = None
        self._velocity = np.zeros(2)  # the newest intended velocity
        self._hit_times: deque[float] = deque()
        self._pairs: deque[tuple[float, float, float, float, float]] = deque()
        self._next_message = 0.0
        self._lock = threading.Lock()

    def update_task(self, names: tuple[str, ...], rows: np.ndarray, times: np.ndarray,
                    now: float) -> dict[str, Any] | None:
        """Take a chunk of the task stream; the page's message when one is due.

        Parameters
        ----------
        names : tuple of str
            The stream's channel names.
        rows : ndarray, shape (n_samples, n_channels)
        times : ndarray, shape (n_samples,)
        now : float
            The runtime clock (messages are at most ``CURSOR_HZ`` a second).
        """
        with self._lock:
            if self._cols is None:
                self._cols = np.array([names.index(c) for c in _POSITION + _VELOCITY],
                                      dtype=np.intp)
            last = rows[-1, self._cols]
            self.cursor, self.target = (float(last[0]), float(last[1])), (float(last[2]),
                                                                          float(last[3]))
            self._velocity = last[4:6].astype(np.float64)
            if self.first is None:
                self.first = float(times[0])
            self.newest = float(times[-1])
            if now < self._next_message:
                return None
            self._next_message = now + 1.0 / CURSOR_HZ
            return {"type": "cursor", "t": self.newest, **self._counts()}

    def update_markers(self, labels: tuple[str, ...], times: np.ndarray) -> None:
        """Count ``hit/<k>`` and ``timeout/<k>`` markers."""
        with self._lock:
            for label, t in zip(labels, times.tolist()):
                kind = label.partition("/")[0]
                if kind == "hit":
                    self.hits += 1
                    self._hit_times.append(t)
                elif kind == "timeout":
                    self.timeouts += 1

    def update_decoded(self, decoded: np.ndarray, times: np.ndarray) -> None:
        """Pair the newest decoded velocity with the newest intended one (simulator only).

        Parameters
        ----------
        decoded : ndarray, shape (n_bins, 2)
        times : ndarray, shape (n_bins,)
        """
        if not self.intended or not len(times):
            return
        with self._lock:
            vx, vy = self._velocity
            self._pairs.append((float(times[-1]), float(decoded[-1, 0]), float(decoded[-1, 1]),
                                float(vx), float(vy)))
            while self._pairs and self._pairs[0][0] < times[-1] - R2_WINDOW_S:
                self._pairs.popleft()

    def snapshot(self) -> dict[str, Any]:
        """The run as the page and the audit trail show it."""
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, Any]:
        seconds = 0.0 if self.first is None else self.newest - self.first  # type: ignore[operator]
        while self._hit_times and self.newest is not None \
                and self._hit_times[0] < self.newest - 60.0:
            self._hit_times.popleft()
        return {"cursor": list(self.cursor), "target": list(self.target), "hits": self.hits,
                "timeouts": self.timeouts, "seconds": round(seconds, 1),
                "hits_last_minute": len(self._hit_times), "r2_last_minute": self._r2()}

    def _r2(self) -> float | None:
        if len(self._pairs) < 100:  # a few seconds of bins at least
            return None
        pairs = np.asarray(self._pairs)
        decoded, intended = pairs[:, 1:3], pairs[:, 3:5]
        total = ((intended - intended.mean(axis=0)) ** 2).sum()
        if total <= 0:
            return None
        return round(float(1.0 - ((intended - decoded) ** 2).sum() / total), 3)
