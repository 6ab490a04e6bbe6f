"""What every signal generator of the simulator shares.

A generator is plain numpy, independent of the runtime: it is asked for the next
``n`` samples and returns a :class:`Block` with the signal, the ground-truth
markers (cues, trial boundaries, drift events) and the continuous ground truth
(intended kinematics, cursor). Sample times are relative to the stream start
(``index / srate``); the runtime node and the LSL mode add the clock.

Generators are driven in order, one block after the other; a generator is
deterministic given its seed and the sequence of block sizes and feedback it
receives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bci_runtime.simulators.drift import Drift


@dataclass
class Block:
    """The next samples of a simulated stream and what was true meanwhile.

    Attributes
    ----------
    data : ndarray, shape (n_samples, n_channels)
        The signal, float64, in the stream's units.
    start : int
        Index of the first sample since the stream started.
    markers : list of (str, int)
        Ground-truth markers and the index of the sample they belong to
        (``start <= index < start + n_samples``), in time order.
    truth : ndarray, shape (n_samples, n_truth) or None
        Continuous ground truth (e.g. intended velocity, cursor position), one
        row per sample; columns named by the generator's ``truth_names``.
    """

    data: np.ndarray
    start: int
    markers: list[tuple[str, int]] = field(default_factory=list)
    truth: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])


class Generator(ABC):
    """Base class of the simulator's signal generators.

    Subclasses set the stream description in ``__init__`` and implement
    :meth:`generate`.

    Attributes
    ----------
    srate : float
        Sampling rate (Hz).
    channel_names, channel_types, units : tuple of str
        One entry per channel (LSL conventions: types ``eeg``, ``ecog``,
        ``spikes``...; units ``V`` or ``count``).
    stream_type : str
        LSL stream type (``EEG``, ``ECoG``, ``Spikes``...).
    truth_names : tuple of str
        Names of the columns of :attr:`Block.truth` (empty when there is none).
    default_shift_mm : float
        Electrode displacement of the ``electrode-shift`` presets for this kind of
        recording.
    """

    srate: float
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    units: tuple[str, ...]
    stream_type: str = "EEG"
    truth_names: tuple[str, ...] = ()
    default_shift_mm: float = 20.0  # electrode-shift presets: a cap moves more than a grid

    def __init__(self, drift: Drift | None = None) -> None:
        self._next = 0  # index of the next sample
        self.drift = drift

    @classmethod
    def n_channels_for(cls, params: Any) -> int:
        """Channels the generator will have with ``params`` (before building it)."""
        return int(params.n_channels)

    @classmethod
    def n_units_for(cls, params: Any) -> int:
        """Tuned units or electrodes (what tuning drift rotates); 0 when nothing is tuned."""
        return 0

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def samples_generated(self) -> int:
        return self._next

    def next_block(self, n: int) -> Block:
        """Generate the next ``n`` samples.

        Parameters
        ----------
        n : int
            Number of samples, at least 1.

        Returns
        -------
        Block
        """
        start = self._next
        block = self.generate(start, n)
        self._next = start + n
        if self.drift is not None:
            drift_markers = self.drift.markers_between(start / self.srate, (start + n) / self.srate)
            if drift_markers:
                block.markers.extend(
                    (label, min(start + n - 1, int(np.ceil(t * self.srate - 1e-9))))
                    for label, t in drift_markers)
                block.markers.sort(key=lambda m: m[1])
        return block

    @abstractmethod
    def generate(self, start: int, n: int) -> Block:
        """Generate samples ``start`` to ``start + n - 1`` (always called in order)."""

    def feedback(self, t: float, values: np.ndarray | str) -> None:
        """Show the simulated user what the runtime decoded.

        Parameters
        ----------
        t : float
            Time (s since the stream started) at which the feedback was shown.
        values : ndarray, shape (n_values,), or str
            A decoded class name, or a decoded control signal (e.g. cursor velocity).
        """

    def times(self, start: int, n: int) -> np.ndarray:
        """Times of samples ``start`` .. ``start + n - 1`` since the stream start, shape (n,)."""
        return np.arange(start, start + n, dtype=np.float64) / self.srate


def require_within(value: float, bounds: tuple[float, float], message: str) -> float:
    """Return ``value`` when it lies within ``bounds``, else raise a ValueError.

    ``message`` may use ``{lo}`` and ``{hi}``; the offending value is appended.
    """
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ValueError(message.format(lo=f"{lo:g}", hi=f"{hi:g}") + f", got {value:g}")
    return value


def require_low_high(pair: tuple[float, float], bounds: tuple[float, float], name: str,
                     unit: str = "", low_open: bool = False) -> tuple[float, float]:
    """Return a ``(low, high)`` range when ``bounds[0] <= low <= high <= bounds[1]``.

    With ``low_open`` the lower bound is exclusive. Raises a ValueError naming the
    field, the valid range and what was given.
    """
    lo, hi = pair
    floor, ceiling = bounds
    low_ok = floor < lo if low_open else floor <= lo
    if not (low_ok and lo <= hi <= ceiling):
        sign = "<" if low_open else "<="
        raise ValueError(f"{name} must be (low, high) with {floor:g} {sign} low <= high <= "
                         f"{ceiling:g}{unit}, got {list(pair)}")
    return pair
