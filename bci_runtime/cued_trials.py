"""Cued trials: a balanced random order of classes on a fixed timing, and their markers.

The one schedule of the runtime's cued paradigms: the simulator's user follows it,
and the ``cue_schedule`` node cues a real subject with it. Markers::

    trial/start            fixation cross: a trial begins
    cue/<class>            the cue; imagery (or gazing at a flicker) starts
    end                    imagery stops (the labelled span closes)
    trial/end              the trial is over; rest follows
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

REST = -1  # class index while nothing is cued


class TrialTiming(BaseModel):
    """Timing of cued trials (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixation_s: float = Field(1.0, ge=0, description="fixation before the cue")
    imagery_s: float = Field(3.0, gt=0, description="imagery after the cue")
    rest_s: float = Field(1.5, gt=0, description="rest after the imagery")
    first_s: float = Field(1.0, ge=0, description="rest before the first trial")


class CuedTrials:
    """Cued trials of ``n_classes`` classes, in balanced blocks of random order.

    Parameters
    ----------
    classes : sequence of str
        Class names, used in the ``cue/<class>`` markers.
    timing : TrialTiming
    srate : float
        Sampling rate of the stream the markers are placed on (Hz).
    rng : numpy.random.Generator
        Draws the class order.
    """

    def __init__(self, classes: list[str], timing: TrialTiming, srate: float,
                 rng: np.random.Generator) -> None:
        self.classes = list(classes)
        self.timing, self.srate, self._rng = timing, srate, rng
        self.trial_s = timing.fixation_s + timing.imagery_s + timing.rest_s
        self._sequence = bytearray()  # class of every trial so far, one byte each

    def class_of_trial(self, k: int) -> int:
        """Class index of trial ``k`` (0-based)."""
        while len(self._sequence) <= k:
            block = np.arange(len(self.classes), dtype=np.uint8)
            self._rng.shuffle(block)
            self._sequence.extend(block.tobytes())
        return self._sequence[k]

    def _cue_time(self, k: np.ndarray | int) -> np.ndarray | float:
        return self.timing.first_s + k * self.trial_s + self.timing.fixation_s

    def class_at(self, t: np.ndarray) -> np.ndarray:
        """Cued class index at each time, :data:`REST` outside imagery.

        Parameters
        ----------
        t : ndarray, shape (n,)
            Seconds since the stream started.

        Returns
        -------
        ndarray of int, shape (n,)
        """
        rel = t - self.timing.first_s - self.timing.fixation_s
        k = np.floor((rel + self.timing.fixation_s) / self.trial_s).astype(np.int64)
        since_cue = rel - k * self.trial_s
        imagining = (k >= 0) & (since_cue >= 0) & (since_cue < self.timing.imagery_s)
        out = np.full(t.shape, REST, dtype=np.int64)
        for trial in np.unique(k[imagining]).tolist():  # one or two trials per block
            out[imagining & (k == trial)] = self.class_of_trial(trial)
        return out

    def markers(self, start: int, n: int) -> list[tuple[str, int]]:
        """Task markers falling on samples ``start`` .. ``start + n - 1``.

        Returns
        -------
        list of (str, int)
            Marker and sample index (the first sample at or after the event).
        """
        tm = self.timing
        t_from, t_to = start / self.srate, (start + n) / self.srate
        k0 = max(0, int(np.floor((t_from - tm.first_s) / self.trial_s)) - 1)
        out: list[tuple[str, int]] = []
        k = k0
        while tm.first_s + k * self.trial_s < t_to + self.trial_s:
            begin = tm.first_s + k * self.trial_s
            cue = begin + tm.fixation_s
            events = (("trial/start", begin), (f"cue/{self.classes[self.class_of_trial(k)]}", cue),
                      ("end", cue + tm.imagery_s), ("trial/end", cue + tm.imagery_s))
            for label, t in events:
                index = int(np.ceil(t * self.srate - 1e-9))
                if start <= index < start + n:
                    out.append((label, index))
            k += 1
        return sorted(out, key=lambda m: m[1])
