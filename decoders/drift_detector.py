"""Drift detection: when have the signals moved away from what the decoder was calibrated on?

:class:`CovarianceDrift` measures the Riemannian distance of each new trial's
spatial covariance to the reference (the Riemannian mean of the calibration
trials' covariances) and compares the mean over the last ``window`` trials with
the calibration trials' own distances: the detector fires when that mean is
``threshold`` standard errors above the calibration mean. An electrode shift, an
impedance change or a new day moves every covariance and fires it; the class
changes of a cued task do not, since the calibration spread already holds them.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pyriemann.estimation import Covariances
from pyriemann.geometry.distance import distance_riemann
from pyriemann.geometry.mean import mean_riemann

from bci_runtime.decoders.base import check_epochs
from bci_runtime.errors import DecoderError, NotFittedError


class CovarianceDrift:
    """Fires when recent trial covariances are far from the calibration reference.

    Parameters
    ----------
    window : int
        Recent trials averaged.
    threshold : float
        Standard errors above the calibration mean distance that count as drift.
    estimator : str
        pyRiemann covariance estimator (``oas`` is well conditioned on short trials).
    """

    def __init__(self, window: int = 10, threshold: float = 4.0,
                 estimator: str = "oas") -> None:
        if window < 2:
            raise DecoderError(f"drift window must be >= 2 trials, got {window}")
        if not threshold > 0:
            raise DecoderError(f"drift threshold must be > 0, got {threshold}")
        self.window = window
        self.threshold = threshold
        self.estimator = estimator

    def fit(self, X: np.ndarray) -> CovarianceDrift:
        """Take the reference from calibration trials.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
        """
        X = check_epochs(X, who="drift detector")
        covs = Covariances(self.estimator).transform(X)
        self.reference_ = mean_riemann(covs)
        d = distance_riemann(covs, self.reference_)
        self.mean_, self.std_ = float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0
        self.recent_: deque[float] = deque(maxlen=self.window)
        return self

    def score(self) -> float:
        """Standard errors of the recent mean distance above the calibration mean."""
        if len(self.recent_) < self.window:
            return 0.0
        error = max(self.std_, 1e-12) / np.sqrt(self.window)
        return (float(np.mean(self.recent_)) - self.mean_) / error

    def update(self, X: np.ndarray) -> bool:
        """Add trials; True when the recent ones have drifted.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
        """
        if not hasattr(self, "reference_"):
            raise NotFittedError("drift detector: update before fit")
        X = check_epochs(X, n_channels=self.reference_.shape[0], who="drift detector")
        covs = Covariances(self.estimator).transform(X)
        self.recent_.extend(np.atleast_1d(distance_riemann(covs, self.reference_)).tolist())
        return self.score() > self.threshold
