"""What every decoder of :mod:`bci_runtime.decoders` shares.

Shapes follow scikit-learn, MNE and pyRiemann at the estimator boundary:

* epoch decoders take ``X`` of shape ``(n_trials, n_channels, n_times)``;
* feature and continuous decoders take ``X`` of shape ``(n_samples, n_features)``.

Every epoch classifier is a feature extractor followed by a *head* (a
classifier on ``(n_trials, n_features)``). Co-adaptation strategies
(:mod:`bci_runtime.decoders.adaptation`) act on the signal before the decoder,
on the features, or on the head, through :meth:`EpochClassifier.features` and
``head_``; they never need to know which decoder they adapt.

Validation happens here, before any state changes, so a bad call leaves the
fitted model as it was: a serving model keeps serving.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from bci_runtime.errors import DecoderError, NotFittedError


def rate_from_half_life(half_life: float) -> float:
    """The per-update rate whose exponential forgetting halves a weight in ``half_life`` updates.

    An exponentially weighted update ``m <- (1 - rate) * m + rate * x`` leaves an
    observation with weight ``(1 - rate) ** k`` after ``k`` more updates; this returns
    the rate for which that weight is 1/2 after ``half_life`` updates.

    Parameters
    ----------
    half_life : float
        Updates (trials, windows or batches) after which an observation counts half; > 0.
        ``inf`` gives 0 (never adapt).
    """
    if not half_life > 0:  # also catches NaN
        raise DecoderError(f"half_life must be > 0 updates, got {half_life}",
                           hint="e.g. half_life=20: a trial counts half after 20 more trials")
    return 0.0 if math.isinf(half_life) else 1.0 - 0.5 ** (1.0 / half_life)


def half_life_from_rate(rate: float) -> float:
    """Inverse of :func:`rate_from_half_life` (``inf`` for a rate of 0)."""
    rate = check_rate(rate)
    if rate == 0.0:
        return math.inf
    if rate == 1.0:
        return 0.0
    return math.log(0.5) / math.log1p(-rate)


def check_rate(rate: float, name: str = "rate") -> float:
    """A rate in [0, 1], or :class:`DecoderError` naming ``name``."""
    value = float(rate)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DecoderError(f"{name} must be in [0, 1], got {rate}",
                           hint="0 never adapts, 1 forgets everything but the newest update; "
                           "or give a half-life in updates instead")
    return value


def check_epochs(X: Any, *, n_channels: int | None = None, n_times: int | None = None,
                 who: str = "decoder") -> np.ndarray:
    """Validate epochs: finite float64, shape ``(n_trials, n_channels, n_times)``.

    Parameters
    ----------
    X : array-like, shape (n_trials, n_channels, n_times)
    n_channels, n_times : int, optional
        What the fitted model expects.
    who : str
        Named in the error message.

    Returns
    -------
    ndarray of float64, shape (n_trials, n_channels, n_times)
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 3:
        raise DecoderError(f"{who}: epochs must be (n_trials, n_channels, n_times), got an "
                           f"array of shape {arr.shape}",
                           hint="one trial still needs the leading axis: X[np.newaxis]")
    if arr.shape[0] == 0:
        raise DecoderError(f"{who}: no trials (X has shape {arr.shape})")
    if n_channels is not None and arr.shape[1] != n_channels:
        raise DecoderError(f"{who}: fitted on {n_channels} channels, got {arr.shape[1]}",
                           hint="pick the channels the model was calibrated on, in that order")
    if n_times is not None and arr.shape[2] != n_times:
        raise DecoderError(f"{who}: fitted on windows of {n_times} samples, got {arr.shape[2]}",
                           hint="use the window length and rate of the calibration")
    _check_finite(arr, who)
    return arr


def check_features(X: Any, *, n_features: int | None = None,
                   who: str = "decoder") -> np.ndarray:
    """Validate feature windows: finite float64, shape ``(n_samples, n_features)``."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise DecoderError(f"{who}: features must be (n_samples, n_features), got an array of "
                           f"shape {arr.shape}", hint="one window still needs the leading axis")
    if arr.shape[0] == 0:
        raise DecoderError(f"{who}: no samples (X has shape {arr.shape})")
    if n_features is not None and arr.shape[1] != n_features:
        raise DecoderError(f"{who}: fitted on {n_features} features, got {arr.shape[1]}",
                           hint="compute the same features as at calibration")
    _check_finite(arr, who)
    return arr


def _check_finite(arr: np.ndarray, who: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        rows = np.flatnonzero(~finite.reshape(arr.shape[0], -1).all(axis=1))
        raise DecoderError(f"{who}: {rows.size} of {arr.shape[0]} input rows hold NaN or Inf "
                           f"(first: {rows[0]})",
                           hint="drop or repair those windows (a flat or disconnected "
                           "channel?); the model was not changed")


def check_labels(y: Any, classes: np.ndarray | None, n: int, *,
                 who: str = "decoder") -> np.ndarray:
    """Validate labels against the known classes.

    Parameters
    ----------
    y : array-like, shape (n,)
    classes : ndarray or None
        The fitted classes; None accepts any labels (at ``fit``).
    n : int
        Number of trials they label.
    """
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DecoderError(f"{who}: need one label per trial ({n}), got shape {arr.shape}")
    if classes is not None:
        unknown = sorted({str(v) for v in np.setdiff1d(arr, classes)})
        if unknown:
            raise DecoderError(f"{who}: unknown class label(s) {unknown}; the model knows "
                               f"{[str(c) for c in classes]}",
                               hint="map the labels onto the calibrated classes, or fit a new "
                               "model with the new class")
    return arr


def check_update_classes(classes: Any, fitted: np.ndarray, *, who: str) -> None:
    """``partial_fit(..., classes=...)`` must name the fitted classes (scikit-learn's API)."""
    if classes is not None and set(np.asarray(classes).tolist()) != set(fitted.tolist()):
        raise DecoderError(f"{who}: partial_fit classes {np.asarray(classes).tolist()} "
                           f"differ from the fitted {fitted.tolist()}",
                           hint="refit to add or remove a class")


class EpochClassifier(ClassifierMixin, BaseEstimator):
    """Base of epoch classifiers: a feature extractor and a head.

    Subclasses implement :meth:`_fit_features` (learn the extractor, return the
    training features), :meth:`_features` (apply it) and :meth:`_make_head` (an
    unfitted classifier on ``(n_trials, n_features)``). ``partial_fit`` updates the
    head with labelled trials (the extractor stays as fitted), when the head has
    ``partial_fit``; subclasses may override it to update more.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    n_channels_, n_times_ : int
        The epoch shape the model was fitted on.
    head_ : classifier
        Fitted on the training features.
    """

    def fit(self, X: Any, y: Any) -> EpochClassifier:
        """Fit the feature extractor, then the head.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        """
        X = check_epochs(X, who=type(self).__name__)
        y = check_labels(y, None, X.shape[0], who=type(self).__name__)
        classes = np.unique(y)
        if classes.size < 2:
            raise DecoderError(f"{type(self).__name__}: need trials of at least 2 classes, "
                               f"got {classes.tolist()}")
        features = self._fit_features(X, y)
        head = self._make_head().fit(features, y)
        self.classes_, self.head_ = classes, head
        self.n_channels_, self.n_times_ = X.shape[1], X.shape[2]
        self.n_features_in_ = X.shape[1]
        return self

    def features(self, X: Any) -> np.ndarray:
        """Features of epochs, what the head sees.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)

        Returns
        -------
        ndarray, shape (n_trials, n_features)
        """
        return self._features(self._checked(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Head scores, shape (n_trials,) for two classes, else (n_trials, n_classes)."""
        features = self.features(X)  # checks it was fitted first
        return self.head_.decision_function(features)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_trials, n_classes), in ``classes_`` order."""
        features = self.features(X)  # checks it was fitted first
        return self.head_.predict_proba(features)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class per trial, shape (n_trials,)."""
        features = self.features(X)  # checks it was fitted first
        return self.head_.predict(features)

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> EpochClassifier:
        """Update the head with labelled trials (the feature extractor is kept).

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        classes : array-like, optional
            Accepted for scikit-learn's API; must be the fitted classes.
        sample_weight : array-like, shape (n_trials,), optional
        """
        X, y = self._update_inputs(X, y, classes)
        if not hasattr(self.head_, "partial_fit"):
            raise DecoderError(f"{type(self).__name__}: its head "
                               f"({type(self.head_).__name__}) cannot be updated online",
                               hint="choose a head with partial_fit (e.g. adaptive LDA)")
        self.head_.partial_fit(self._features(X), y, sample_weight=sample_weight)
        return self

    @property
    def supports_partial_fit(self) -> bool:
        """Whether :meth:`partial_fit` can update this (fitted) decoder."""
        return hasattr(getattr(self, "head_", None), "partial_fit")

    # -- for subclasses -------------------------------------------------------------

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _features(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _make_head(self) -> Any:
        raise NotImplementedError

    def _update_inputs(self, X: Any, y: Any, classes: Any) -> tuple[np.ndarray, np.ndarray]:
        """What every ``partial_fit`` checks first: fitted, epochs, labels, classes."""
        self._require_fitted("partial_fit")
        X = self._checked(X)
        who = type(self).__name__
        y = check_labels(y, self.classes_, X.shape[0], who=who)
        check_update_classes(classes, self.classes_, who=who)
        return X, y

    def _checked(self, X: Any) -> np.ndarray:
        self._require_fitted("predict")
        return check_epochs(X, n_channels=self.n_channels_, n_times=self.n_times_,
                            who=type(self).__name__)

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError(f"{type(self).__name__}: {what} before fit",
                                 hint="fit it on calibration trials first")
