"""A continuous cursor decoder as it is saved and served: the filter and how its features are made.

:class:`CursorModel` keeps, next to the fitted
:class:`~bci_runtime.decoders.continuous.KalmanDecoder`, everything the features
it was fitted on depend on (channels, rate, band, bin length), so that the
online ``cursor_decoder`` node refuses a model whose features it would compute
differently. It is what the wizard's cursor profile and the node's archived
versions hold (:func:`~bci_runtime.decoders.model_store.save_model`).

:class:`BinnedFeatureStream` computes those features on a stream, chunk by
chunk, exactly as :func:`~bci_runtime.decoders.continuous_recordings.bin_features`
does on a whole recording: the same causal band-pass from rest, the same bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal as sps

from bci_runtime.decoders.continuous_recordings import BUTTER_ORDER
from bci_runtime.errors import ConfigError

__all__ = ["BinnedFeatureStream", "CursorModel", "FEATURES"]

#: how features are made: log band power after a band-pass, or the mean of each bin
FEATURES = ("band-power", "mean")


@dataclass
class CursorModel:
    """A fitted continuous decoder and the settings of its features.

    Attributes
    ----------
    decoder : KalmanDecoder
        Fitted; ``n_features_in_ == len(channels)``, two outputs (vx, vy).
    channels : list of str
        Input channels, in the decoder's feature order.
    srate : float
        Sampling rate of the signal it was fitted on (Hz).
    features : {"band-power", "mean"}
    band : list of float or None
        ``[low, high]`` (Hz) of the band power; None for bin means.
    bin_s : float
        Seconds per bin (a whole number of samples).
    """

    decoder: Any
    channels: list[str]
    srate: float
    features: str
    band: list[float] | None
    bin_s: float

    @property
    def per_bin(self) -> int:
        """Samples per bin."""
        return samples_per_bin(self.bin_s, self.srate)

    def describe(self) -> str:
        """The features in words, e.g. ``log power 70-150 Hz, 50 ms bins``."""
        how = ("bin means" if self.band is None
               else f"log power {self.band[0]:g}-{self.band[1]:g} Hz")
        return f"{how}, {self.per_bin / self.srate * 1000:g} ms bins"


def samples_per_bin(bin_s: float, srate: float) -> int:
    """Whole samples per bin of ``bin_s`` seconds (at least one)."""
    return max(1, int(round(float(bin_s) * float(srate))))


def check_band(band: Any, srate: float, where: str) -> tuple[float, float] | None:
    """A band under the Nyquist frequency, or None (bin means).

    Raises
    ------
    ConfigError
        A band that is not ``0 < low < high < srate / 2``.
    """
    if band is None:
        return None
    low, high = float(band[0]), float(band[1])
    if not 0 < low < high < srate / 2:
        raise ConfigError(f"{where}: band {low:g}-{high:g} Hz does not fit a signal sampled "
                          f"at {srate:g} Hz (need 0 < low < high < {srate / 2:g})",
                          hint="lower the band, or use features 'mean' for a signal that is "
                          "already binned (spike counts)")
    return low, high


class BinnedFeatureStream:
    """Causal features of a stream, one row per completed bin, whatever the chunk sizes.

    The band-pass keeps its state across chunks; a bin that a chunk leaves
    incomplete is carried (as a running sum of ``n_channels`` values) into the
    next. Everything is vectorised over the chunk.

    Parameters
    ----------
    srate : float
        Hz.
    n_channels : int
    band : (float, float) or None
        Log band power in this band; None: the mean of each bin.
    per_bin : int
        Samples per bin.
    """

    def __init__(self, srate: float, n_channels: int, band: tuple[float, float] | None,
                 per_bin: int) -> None:
        self.per_bin = int(per_bin)
        self.sos = (None if band is None else
                    sps.butter(BUTTER_ORDER, band, btype="bandpass", fs=srate, output="sos"))
        self._zi = None if self.sos is None else np.zeros((self.sos.shape[0], 2, n_channels))
        self._carry = np.zeros(n_channels)
        self._count = 0

    def push(self, x: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take a chunk; return the bins it completes.

        Parameters
        ----------
        x : ndarray, shape (n_samples, n_channels)
        timestamps : ndarray, shape (n_samples,)

        Returns
        -------
        X : ndarray, shape (n_bins, n_channels)
            Features of each completed bin.
        t : ndarray, shape (n_bins,)
            Timestamp of each bin's last sample.
        """
        if self.sos is not None:
            y, self._zi = sps.sosfilt(self.sos, x, axis=0, zi=self._zi)
            y *= y
        else:
            y = np.asarray(x, dtype=np.float64)
        n, per = y.shape[0], self.per_bin
        need = per - self._count  # samples that complete the carried bin
        if n < need:
            self._carry += y.sum(axis=0)
            self._count += n
            return np.empty((0, y.shape[1])), np.empty(0)
        full = (n - need) // per
        X = np.empty((full + 1, y.shape[1]))
        X[0] = self._carry + y[:need].sum(axis=0)
        rest = y[need:need + full * per]
        if full:
            X[1:] = rest.reshape(full, per, -1).sum(axis=1)
        X /= per
        tail = y[need + full * per:]
        self._carry = tail.sum(axis=0)
        self._count = tail.shape[0]
        ends = need - 1 + per * np.arange(full + 1)
        if self.sos is not None:
            # log: power is skewed, its logarithm is closer to the Gaussian noise the filter
            # assumes (the offline bin_features adds the same floor)
            np.log(X + 1e-30, out=X)
        return X, timestamps[ends]
