"""Small decoders and data for the tests of the co-adaptation and evaluation machinery."""

from __future__ import annotations

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from bci_runtime.decoders.base import EpochClassifier


class LogVarLDA(EpochClassifier):
    """Log-variance per channel + scikit-learn LDA: the simplest epoch classifier."""

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._features(X)

    def _features(self, X: np.ndarray) -> np.ndarray:
        return np.log(X.var(axis=2))

    def _make_head(self) -> LinearDiscriminantAnalysis:
        return LinearDiscriminantAnalysis()


def two_class_epochs(rng: np.random.Generator, n: int, gain: float | np.ndarray = 1.0,
                     n_channels: int = 4, n_times: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Trials whose class doubles the amplitude of channel 0 ('a') or 1 ('b').

    ``gain`` scales the channels (an impedance change), a scalar or one value
    per channel: the log-variance features shift by ``2 log(gain)``.

    Returns
    -------
    X : ndarray, shape (n, n_channels, n_times)
    y : ndarray of str, shape (n,)
    """
    y = np.where(rng.random(n) < 0.5, "a", "b")
    X = rng.normal(size=(n, n_channels, n_times))
    X[y == "a", 0] *= 2.0
    X[y == "b", 1] *= 2.0
    return X * np.reshape(gain, (-1, 1)), y
