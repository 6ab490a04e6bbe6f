"""A preallocated ring buffer whose newest samples are always a contiguous view."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike, NDArray

from bci_runtime.errors import SpecMismatchError


class RingBuffer:
    """Fixed-capacity buffer of ``(n_samples, n_channels)`` samples.

    Storage is allocated once. Every sample is written twice, at ``i`` and
    ``i + capacity``, so that the newest ``n <= capacity`` samples are always one
    contiguous slice: :meth:`latest` returns a view, never a copy, and a write
    never reallocates.

    Parameters
    ----------
    capacity : int
        Number of samples kept.
    n_channels : int
        Number of channels.
    dtype : dtype-like
        Sample type.
    """

    def __init__(self, capacity: int, n_channels: int, dtype: DTypeLike = np.float64) -> None:
        if capacity < 1 or n_channels < 1:
            raise ValueError(f"capacity and n_channels must be >= 1, got {capacity}, {n_channels}")
        self.capacity = int(capacity)
        self.n_channels = int(n_channels)
        self._data = np.zeros((2 * self.capacity, self.n_channels), dtype=dtype)
        self._times = np.zeros(2 * self.capacity, dtype=np.float64)
        self._head = 0  # index of the next write, in [0, capacity)
        self.count = 0  # samples written in total (saturating reads at capacity)

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def write(self, data: NDArray, timestamps: NDArray[np.float64]) -> None:
        """Append samples.

        Parameters
        ----------
        data : ndarray, shape (n_samples, n_channels)
            New samples; only the newest ``capacity`` are kept if more arrive.
        timestamps : ndarray, shape (n_samples,)
            Their timestamps.
        """
        if data.ndim != 2 or data.shape[1] != self.n_channels:
            raise SpecMismatchError(
                f"ring buffer holds {self.n_channels} channels, got data of shape {data.shape}"
            )
        n = data.shape[0]
        if n > self.capacity:
            data, timestamps = data[-self.capacity :], timestamps[-self.capacity :]
            self.count += n - self.capacity
            n = self.capacity
        cap, head = self.capacity, self._head
        first = min(n, cap - head)
        rest = n - first
        for offset in (0, cap):  # the mirror keeps windows contiguous
            self._data[head + offset : head + offset + first] = data[:first]
            self._times[head + offset : head + offset + first] = timestamps[:first]
            if rest:
                self._data[offset : offset + rest] = data[first:]
                self._times[offset : offset + rest] = timestamps[first:]
        self._head = (head + n) % cap
        self.count += n

    def latest(self, n: int) -> tuple[NDArray, NDArray[np.float64]]:
        """Return views of the newest ``n`` samples.

        Parameters
        ----------
        n : int
            Number of samples, at most ``len(self)``.

        Returns
        -------
        data : ndarray, shape (n, n_channels)
            View into the buffer: valid until ``capacity - n`` more samples are written.
        timestamps : ndarray, shape (n,)
            View of their timestamps.
        """
        if not 0 < n <= len(self):
            raise ValueError(f"asked for {n} samples, buffer holds {len(self)}")
        end = self._head + self.capacity
        return self._data[end - n : end], self._times[end - n : end]
