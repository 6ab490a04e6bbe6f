"""Streaming noise and rhythm generators: block by block, state kept, vectorized.

Each generator produces ``(n, k)`` arrays for ``k`` independent signals and
keeps its filter state between blocks, so consecutive blocks join without a
seam.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

# A 3-pole/3-zero filter whose magnitude follows 1/sqrt(f) (pink, 1/f power) over
# about three decades of normalized frequency (J. O. Smith, "Spectral Audio
# Signal Processing", the pink-noise example).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_PINK_SOS = sps.tf2sos(_PINK_B, _PINK_A)


class _Filtered:
    """White noise through an SOS filter, with kept state; unit variance output."""

    def __init__(self, sos: np.ndarray, k: int, rng: np.random.Generator) -> None:
        self.sos, self.k, self.rng = sos, k, rng
        self.zi = np.zeros((sos.shape[0], 2, k))
        impulse = sps.sosfilt(sos, np.r_[1.0, np.zeros(8191)])
        self.gain = 1.0 / np.sqrt(np.sum(impulse ** 2))  # white → unit variance
        self.warm_up()

    def warm_up(self, n: int = 4096) -> None:
        """Run the filter a little so that the first block is in steady state."""
        self(n)

    def __call__(self, n: int) -> np.ndarray:
        """The next ``n`` samples of the ``k`` signals, shape (n, k)."""
        white = self.rng.standard_normal((n, self.k))
        out, self.zi = sps.sosfilt(self.sos, white, axis=0, zi=self.zi)
        out *= self.gain
        return out


class PinkNoise(_Filtered):
    """``k`` independent unit-variance 1/f noise signals."""

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        super().__init__(_PINK_SOS, k, rng)


class BandNoise(_Filtered):
    """``k`` independent unit-variance narrow-band rhythms (band-passed noise).

    Parameters
    ----------
    low, high : float
        Band edges (Hz).
    srate : float
        Sampling rate (Hz).
    """

    def __init__(self, low: float, high: float, srate: float, k: int,
                 rng: np.random.Generator, order: int = 2) -> None:
        sos = sps.butter(order, [low, min(high, 0.45 * srate)], btype="bandpass", fs=srate,
                         output="sos")
        super().__init__(sos, k, rng)


class HighNoise(_Filtered):
    """``k`` independent unit-variance broadband signals above ``low`` Hz (EMG-like)."""

    def __init__(self, low: float, srate: float, k: int, rng: np.random.Generator) -> None:
        sos = sps.butter(4, low, btype="highpass", fs=srate, output="sos")
        super().__init__(sos, k, rng)


def sinusoids(start: int, n: int, srate: float, freqs: np.ndarray,
              phases: np.ndarray) -> np.ndarray:
    """Phase-continuous sinusoids, a function of the absolute sample index.

    Parameters
    ----------
    start, n : int
        Samples ``start`` .. ``start + n - 1``.
    freqs, phases : ndarray, shape (k,)
        Frequency (Hz) and phase (rad) of each sinusoid.

    Returns
    -------
    ndarray, shape (n, k)
    """
    t = np.arange(start, start + n, dtype=np.float64)[:, None] / srate
    return np.sin(2 * np.pi * freqs[None, :] * t + phases[None, :])


class BurstTrain:
    """Random bursts (blinks, EMG) as a Poisson process: an envelope per sample.

    Parameters
    ----------
    rate_hz : float
        Mean bursts per second.
    duration_s : tuple of float
        Range of burst durations (s), drawn uniformly.
    srate : float
    rng : numpy.random.Generator
    shape : {"hann", "box"}
        Envelope of one burst: a raised cosine (blinks) or a flat top with short
        ramps (muscle).
    """

    def __init__(self, rate_hz: float, duration_s: tuple[float, float], srate: float,
                 rng: np.random.Generator, shape: str = "hann") -> None:
        self.rate, self.duration, self.srate, self.rng, self.shape = (
            rate_hz, duration_s, srate, rng, shape)
        self._active: list[tuple[int, int, float]] = []  # (onset index, length, amplitude)
        self._next_onset = self._draw_gap(0)

    def _draw_gap(self, after: int) -> int:
        if self.rate <= 0:
            return np.iinfo(np.int64).max
        return after + max(1, int(self.rng.exponential(1.0 / self.rate) * self.srate))

    def envelope(self, start: int, n: int) -> tuple[np.ndarray, list[int]]:
        """Envelope of samples ``start`` .. ``start + n - 1`` and the burst onsets among them.

        Returns
        -------
        envelope : ndarray, shape (n,)
            0 outside bursts, up to the burst's amplitude (about 1) inside.
        onsets : list of int
            Sample indices where a burst began.
        """
        end = start + n
        onsets = []
        while self._next_onset < end:
            length = max(2, int(self.rng.uniform(*self.duration) * self.srate))
            self._active.append((self._next_onset, length, float(self.rng.uniform(0.6, 1.4))))
            onsets.append(self._next_onset)
            self._next_onset = self._draw_gap(self._next_onset + length)
        env = np.zeros(n)
        keep = []
        for onset, length, amp in self._active:
            lo, hi = max(onset, start), min(onset + length, end)
            if lo < hi:
                phase = (np.arange(lo, hi) - onset) / length
                if self.shape == "hann":
                    shape = 0.5 - 0.5 * np.cos(2 * np.pi * phase)
                else:
                    shape = np.clip(np.minimum(phase, 1 - phase) * 10, 0, 1)
                env[lo - start:hi - start] += amp * shape
            if onset + length > end:
                keep.append((onset, length, amp))
        self._active = keep
        return env, onsets
