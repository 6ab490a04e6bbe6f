"""Where a cued run is: the current trial and cue, trials completed per class.

Fed the cue markers of a run (``trial/start``, ``cue/<class>``, ``end``,
``trial/end``, :mod:`bci_runtime.cued_trials`) as they are emitted; a trial counts
as completed at its ``trial/end``, once its whole cue period is in the recording.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import numpy as np

CUE_PREFIX = "cue/"


class CueProgress:
    """Counts the trials of a cued run as its markers arrive.

    Parameters
    ----------
    classes : list of str
        The classes cued (others are not counted).
    expected : int or None
        Trials the run is to complete (None: open-ended).
    """

    def __init__(self, classes: list[str], expected: int | None) -> None:
        self.classes = list(classes)
        self.expected = expected
        self.completed: Counter[str] = Counter()
        self.trial = 0  # trials started
        self.cue: str | None = None  # the class cued now (None between cues)
        self.cue_time: float | None = None
        self.completed_at: float | None = None  # the expected trials' last trial/end
        self._current: str | None = None  # the class of the trial under way
        self._lags: list[float] = []
        self._lock = threading.Lock()

    def update(self, marker: str, t: float) -> dict[str, Any] | None:
        """Take one marker at clock time ``t``; the page's message when something changed."""
        with self._lock:
            if marker == "trial/start":
                self.trial += 1
                self._current = None
                return {"type": "trial", "trial": self.trial, "expected": self.expected,
                        "t": t}
            if marker.startswith(CUE_PREFIX):
                label = marker[len(CUE_PREFIX):]
                if label not in self.classes:
                    return None
                self.cue, self.cue_time, self._current = label, t, label
                return {"type": "cue", "cue": label, "trial": self.trial,
                        "expected": self.expected, "t": t}
            if marker == "end":
                self.cue = None
                return {"type": "cue_end", "trial": self.trial, "t": t}
            if marker == "trial/end" and self._current is not None:
                self.completed[self._current] += 1
                self._current = None
                if self.expected is not None and self.done >= self.expected \
                        and self.completed_at is None:
                    self.completed_at = t
                return {"type": "progress", **self._progress()}
            return None

    @property
    def done(self) -> int:
        return sum(self.completed.values())

    def shown(self, lag_s: float) -> None:
        """The page drew a cue ``lag_s`` after its marker time."""
        with self._lock:
            if len(self._lags) < 100_000:
                self._lags.append(lag_s)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"cue": self.cue, "trial": self.trial, **self._progress()}

    def lags_ms(self) -> np.ndarray:
        """Every cue's display lag so far, ms, shape (n_cues_shown,)."""
        with self._lock:
            return np.asarray(self._lags, dtype=np.float64) * 1e3

    def display_lag_ms(self) -> dict[str, float] | None:
        """Percentiles of the cue display lag (marker time to the page's frame), ms."""
        lags = self.lags_ms()
        if not lags.size:
            return None
        p50, p95, p99, worst = np.percentile(lags, [50, 95, 99, 100])
        return {"n": int(lags.size), "p50": round(float(p50), 1), "p95": round(float(p95), 1),
                "p99": round(float(p99), 1), "max": round(float(worst), 1)}

    def _progress(self) -> dict[str, Any]:
        return {"done": self.done, "expected": self.expected,
                "per_class": {c: self.completed[c] for c in self.classes}}
