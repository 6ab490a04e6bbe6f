"""Chunks: the unit of data that flows along the graph's edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
from numpy.typing import NDArray

from bci_runtime.spec import StreamSpec


@dataclass(frozen=True, slots=True)
class Chunk:
    """A block of consecutive samples of one numeric stream.

    Arrays are never modified after a chunk is emitted: nodes build new arrays
    (or views of arrays they will not touch again) for what they emit.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
        Samples, LSL orientation, float32 or float64.
    timestamps : ndarray, shape (n_samples,)
        Sample times in the runtime clock (seconds, float64), increasing.
    spec : StreamSpec
        The stream this chunk belongs to.
    """

    data: NDArray[np.floating]
    timestamps: NDArray[np.float64]
    spec: StreamSpec

    @property
    def n_samples(self) -> int:
        """Number of samples in the chunk."""
        return self.timestamps.shape[0]

    @property
    def newest(self) -> float:
        """Timestamp of the newest sample."""
        return float(self.timestamps[-1])

    def problem(self) -> str | None:
        """Describe what is wrong with the chunk's shape or values, or None.

        Checks the channel count against the spec, matching sample counts and
        finiteness; meant for sources, the edge of the graph.
        """
        data, ts = self.data, self.timestamps
        if data.ndim != 2:
            return f"data has {data.ndim} dimensions, expected (n_samples, n_channels)"
        if data.shape[1] != self.spec.n_channels:
            return (
                f"chunk has {data.shape[1]} channels but stream '{self.spec.name}' "
                f"declares {self.spec.n_channels}"
            )
        if ts.ndim != 1 or ts.shape[0] != data.shape[0]:
            return f"{data.shape[0]} samples but {ts.shape} timestamps"
        if data.shape[0] == 0:
            return "empty chunk"
        if not np.isfinite(data).all():
            bad = int(np.count_nonzero(~np.isfinite(data)))
            return f"{bad} NaN/Inf value(s) in the data"
        if not np.isfinite(ts).all():
            return "NaN/Inf timestamps"
        return None


@dataclass(frozen=True, slots=True)
class EventChunk:
    """A block of string events (markers, cues, labels) with timestamps.

    Parameters
    ----------
    markers : tuple of str, shape (n_events,)
        Event labels.
    timestamps : ndarray, shape (n_events,)
        Event times in the runtime clock.
    spec : StreamSpec
        The event stream (dtype ``string``).
    """

    markers: tuple[str, ...]
    timestamps: NDArray[np.float64]
    spec: StreamSpec

    @property
    def n_samples(self) -> int:
        """Number of events in the chunk."""
        return len(self.markers)

    @property
    def newest(self) -> float:
        """Timestamp of the newest event."""
        return float(self.timestamps[-1])

    def problem(self) -> str | None:
        """Describe what is wrong with the chunk, or None."""
        if len(self.markers) != self.timestamps.shape[0]:
            return f"{len(self.markers)} markers but {self.timestamps.shape[0]} timestamps"
        if len(self.markers) == 0:
            return "empty event chunk"
        if not np.isfinite(self.timestamps).all():
            return "NaN/Inf timestamps"
        return None

    @classmethod
    def single(cls, marker: str, timestamp: float, spec: StreamSpec) -> EventChunk:
        """An event chunk holding one marker."""
        return cls((marker,), np.array([timestamp], dtype=np.float64), spec)


AnyChunk = Union[Chunk, EventChunk]
