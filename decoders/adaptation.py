"""Co-adaptation: strategies that keep a fitted decoder calibrated while signals drift.

A strategy acts at one *stage*:

``signal``
    transforms the epochs before the decoder sees them (re-centering, alignment);
    learns its reference at ``fit`` from the calibration trials and moves it with
    every trial it is shown.
``head``
    changes the decoder's head from its features (bias, normalization, class
    statistics) or calls the decoder's own ``partial_fit``. It sees the epochs
    after every signal strategy, and the decoder.

Each strategy has a rate with a half-life meaning: ``half_life`` is the number of
updates after which an observation's weight has halved (see
:func:`~bci_runtime.decoders.base.rate_from_half_life`). Unsupervised strategies
update without labels; supervised ones skip a trial without a label. Every update
takes a ``sample_weight`` so a task outcome or an error potential can weight it
(:class:`ErrorWeighted`).

:class:`CoAdaptiveDecoder` chains strategies around a decoder: it is what a
decoder node serves, what the lifecycle copies and versions, and what
``bci evaluate`` runs pseudo-online.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from bci_runtime.decoders.base import (
    check_epochs,
    check_labels,
    check_rate,
    rate_from_half_life,
)
from bci_runtime.errors import DecoderError, NotFittedError

Stage = Literal["signal", "head"]


class Strategy(BaseEstimator):
    """Base class of co-adaptation strategies.

    Parameters
    ----------
    half_life : float
        Updates after which an observation's weight halves; the rate is
        ``1 - 0.5 ** (1 / half_life)``.
    rate : float, optional
        The per-update rate in [0, 1] directly; overrides ``half_life``.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "head"
    supervised: ClassVar[bool] = False

    def __init__(self, half_life: float = 20.0, rate: float | None = None) -> None:
        self.half_life = half_life
        self.rate = rate

    @property
    def rate_(self) -> float:
        """The per-update rate in use."""
        if self.rate is not None:
            return check_rate(self.rate, f"{type(self).__name__} rate")
        return rate_from_half_life(self.half_life)

    def applies_to(self, decoder: Any) -> str | None:
        """Why this strategy cannot adapt ``decoder`` (None when it can)."""
        return None

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> Strategy:
        """Learn the reference from calibration data.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
            Calibration epochs (after the signal strategies before this one).
        y : ndarray, shape (n_trials,)
        decoder : estimator, optional
            The fitted decoder (``head`` stage).
        """
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``signal`` stage: the epochs the decoder should see; identity otherwise."""
        return X

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        """Adapt to new trials, after they were predicted.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
            The trials, as in :meth:`fit`.
        y : ndarray, shape (n_trials,), optional
            Labels, when the task knows them (supervised strategies are only
            called with labels).
        sample_weight : ndarray, shape (n_trials,), optional
            Per-trial weight in [0, 1] (1 when omitted); multiplies the rate.
        decoder : estimator, optional
            The decoder being adapted (``head`` stage).
        correct : ndarray of bool, shape (n_trials,), optional
            Whether each output was right (task outcome, error potential).
        """
        raise NotImplementedError

    def _weights(self, n: int, sample_weight: np.ndarray | None) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n)
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if w.shape[0] != n or not np.isfinite(w).all() or (w < 0).any() or (w > 1).any():
            raise DecoderError(f"{type(self).__name__}: sample_weight must hold {n} values in "
                               f"[0, 1], got {w.tolist()[:5]}")
        return w


def _linear_head(decoder: Any) -> Any:
    head = getattr(decoder, "head_", None)
    if head is None or not hasattr(head, "coef_") or not hasattr(head, "intercept_"):
        return None
    return head


def _require_linear_head(strategy: str, decoder: Any) -> Any:
    head = _linear_head(decoder)
    if head is None:
        raise DecoderError(f"{strategy} adapts a linear head; {type(decoder).__name__} has none",
                           hint="use a decoder with an LDA or logistic head")
    return head


class PooledMeanBias(Strategy):
    """Unsupervised adaptive LDA bias (Vidaurre et al. 2011, "pmean").

    Tracks the pooled mean of the features with an exponential moving average
    and shifts the linear head's intercept by how far that mean moved since
    calibration: ``b_k <- b_k0 - w_k . (mu - mu_0)``. A shift of every feature
    (an impedance change, a session jump) is undone without labels.
    """

    name = "lda-bias"
    stage = "head"

    def applies_to(self, decoder: Any) -> str | None:
        return None if _linear_head(decoder) is not None else "needs a linear head (coef_)"

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> PooledMeanBias:
        head = _require_linear_head("lda-bias", decoder)
        self.mean0_ = decoder.features(X).mean(axis=0)
        self.mean_ = self.mean0_.copy()
        self.intercept0_ = np.array(head.intercept_, dtype=np.float64, copy=True)
        return self

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("lda-bias: update before fit")
        rate, weights = self.rate_, self._weights(len(X), sample_weight)
        for x, w in zip(decoder.features(X), weights):
            self.mean_ += rate * w * (x - self.mean_)
        head = _linear_head(decoder)
        head.intercept_ = self.intercept0_ - np.atleast_2d(head.coef_) @ (self.mean_ - self.mean0_)


class FeatureNormalization(Strategy):
    """Unsupervised running z-scoring of the features, folded into a linear head.

    The head was fitted on raw features; this is the same as fitting it on
    features z-scored with the calibration mean and scale, then z-scoring new
    features with an exponentially weighted running mean and variance. Folding
    the scaling into ``coef_`` and ``intercept_`` keeps prediction one matrix
    product.
    """

    name = "normalize"
    stage = "head"

    def applies_to(self, decoder: Any) -> str | None:
        return None if _linear_head(decoder) is not None else "needs a linear head (coef_)"

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> FeatureNormalization:
        head = _require_linear_head("normalize", decoder)
        features = decoder.features(X)
        self.mean0_, self.scale0_ = features.mean(axis=0), features.std(axis=0) + 1e-12
        self.mean_, self.var_ = self.mean0_.copy(), self.scale0_ ** 2
        self.coef0_ = np.array(head.coef_, dtype=np.float64, copy=True)
        self.intercept0_ = np.array(head.intercept_, dtype=np.float64, copy=True)
        return self

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("normalize: update before fit")
        rate, weights = self.rate_, self._weights(len(X), sample_weight)
        for x, w in zip(decoder.features(X), weights):
            step = rate * w
            delta = x - self.mean_
            self.mean_ += step * delta
            self.var_ = (1 - step) * (self.var_ + step * delta ** 2)
        # w0 . (x - m0)/s0 on the calibration scale == coef . (x - m)/s now
        scale = self.scale0_ / np.sqrt(self.var_ + 1e-24)
        head = _linear_head(decoder)
        coef = np.atleast_2d(self.coef0_) * scale
        head.coef_ = coef.reshape(np.shape(self.coef0_))
        head.intercept_ = (self.intercept0_ + np.atleast_2d(self.coef0_) @ self.mean0_
                           - coef @ self.mean_)


class HeadPartialFit(Strategy):
    """Supervised: the decoder's own ``partial_fit`` on each labelled trial.

    What it updates depends on the decoder: an adaptive LDA head moves its class
    means and inverse covariance (Sherman-Morrison), a logistic head takes
    gradient steps, a torch model fine-tunes on the new trial mixed with replayed
    old ones.

    Parameters
    ----------
    half_life, rate : float, optional
        Given, they replace the forgetting rate of a head that has one (the
        adaptive LDA's, half-life 50 trials by default); a head without one
        keeps its own step size.
    """

    name = "partial-fit"
    stage = "head"
    supervised = True

    def __init__(self, half_life: float | None = None, rate: float | None = None) -> None:
        super().__init__(half_life=half_life, rate=rate)  # type: ignore[arg-type]

    @property
    def rate_(self) -> float:
        if self.half_life is None and self.rate is None:
            return 1.0  # the head's own rate applies
        return super().rate_

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> HeadPartialFit:
        head = getattr(decoder, "head_", None)
        if (self.half_life is not None or self.rate is not None) and head is not None \
                and hasattr(head, "rate") and hasattr(head, "half_life"):
            head.rate = self.rate_
        return self

    def applies_to(self, decoder: Any) -> str | None:
        if getattr(decoder, "supports_partial_fit", hasattr(decoder, "partial_fit")):
            return None
        return "cannot be updated online (no partial_fit for its head)"

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        if y is None:
            return
        weights = self._weights(len(X), sample_weight)
        keep = weights > 0
        if keep.any():
            decoder.partial_fit(X[keep], y[keep], sample_weight=weights[keep])


class ErrorWeighted(Strategy):
    """Error-driven weighting of another strategy's updates.

    A task outcome (hit or miss) or an error-related potential says whether the
    decoder's output was right. With a label, the trial's update is weighted by
    ``correct_weight`` or ``error_weight``; without one, a supervised inner
    strategy learns from the decoder's own prediction when the outcome was
    correct, and from the other class of a binary decoder when it was wrong.

    Parameters
    ----------
    inner : Strategy
        The strategy whose updates are weighted.
    correct_weight, error_weight : float
        Update weights in [0, 1] after a correct or an erroneous output.
    """

    name = "error-driven"

    def __init__(self, inner: Strategy | None = None, correct_weight: float = 1.0,
                 error_weight: float = 0.25) -> None:
        self.inner = inner
        self.correct_weight = correct_weight
        self.error_weight = error_weight

    @property
    def stage(self) -> Stage:  # type: ignore[override]
        return self._inner().stage

    @property
    def supervised(self) -> bool:  # type: ignore[override]
        return False  # the outcome stands in for the label

    def _inner(self) -> Strategy:
        return self.inner if self.inner is not None else HeadPartialFit()

    def applies_to(self, decoder: Any) -> str | None:
        return self._inner().applies_to(decoder)

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> ErrorWeighted:
        self.inner_ = clone(self._inner()).fit(X, y, decoder=decoder)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.inner_.transform(X)

    def weights_for(self, correct: np.ndarray) -> np.ndarray:
        """Per-trial update weights from the outcomes, shape (n_trials,)."""
        cw = check_rate(self.correct_weight, "correct_weight")
        ew = check_rate(self.error_weight, "error_weight")
        return np.where(np.asarray(correct, dtype=bool), cw, ew)

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        if correct is None:  # no outcome, nothing to weight by
            return
        weights = self.weights_for(correct)
        if sample_weight is not None:
            weights = weights * self._weights(len(X), sample_weight)
        labels = y
        if labels is None and self.inner_.supervised:
            labels = self._labels_from_outcome(X, correct, decoder)
            if labels is None:
                return
        self.inner_.update(X, labels, weights, decoder=decoder)

    def _labels_from_outcome(self, X: np.ndarray, correct: np.ndarray,
                             decoder: Any) -> np.ndarray | None:
        classes = decoder.classes_
        predicted = classes[np.argmax(decoder.predict_proba(X), axis=1)]
        if correct.all():
            return predicted
        if len(classes) != 2:
            return None  # a wrong multi-class output does not say which class was meant
        other = np.where(predicted == classes[0], classes[1], classes[0])
        return np.where(correct, predicted, other)


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy available to ``--adapt NAME`` and pipelines by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (PooledMeanBias, FeatureNormalization, HeadPartialFit):
    register_strategy(_cls)


def strategy_names() -> list[str]:
    """Names of the registered strategies."""
    _load_builtin()
    return sorted(_REGISTRY)


def make_strategy(name: str, **params: Any) -> Strategy:
    """A strategy by its registered name, or :class:`DecoderError` listing the names."""
    _load_builtin()
    if name not in _REGISTRY:
        raise DecoderError(f"unknown adaptation strategy '{name}'",
                           hint=f"choose one of {', '.join(sorted(_REGISTRY))}, 'none' or "
                           "'all'")
    return _REGISTRY[name](**params)


def make_strategies(name: str, **params: Any) -> list[Strategy]:
    """Strategies by a stacked name: ``recenter``, or several applied in order, ``a+b``.

    Stacked strategies act in order: typically one on the signal (re-centring)
    and one on the head (``partial-fit``). ``name@H`` sets that strategy's
    half-life to ``H`` trials (over ``params``).
    """
    strategies = []
    for part in name.split("+"):
        base, _, half_life = part.strip().partition("@")
        own = dict(params)
        if half_life:
            try:
                own["half_life"] = float(half_life)
            except ValueError:
                raise DecoderError(f"strategy '{part}': '{half_life}' is not a half-life",
                                   hint="write STRATEGY@TRIALS, e.g. partial-fit@60") from None
        strategies.append(make_strategy(base, **own))
    return strategies


def _load_builtin() -> None:
    """Import the modules that register the other built-in strategies."""
    import importlib

    for module in ("riemann_adaptation",):
        try:
            importlib.import_module(f"bci_runtime.decoders.{module}")
        except ModuleNotFoundError as exc:  # only a module still to be written may be missing
            if exc.name != f"bci_runtime.decoders.{module}":
                raise


class CoAdaptiveDecoder(ClassifierMixin, BaseEstimator):
    """A decoder with co-adaptation strategies around it.

    Parameters
    ----------
    decoder : estimator
        An epoch classifier (:class:`~bci_runtime.decoders.base.EpochClassifier`
        or anything with ``fit``/``predict_proba``/``features``).
    strategies : list of Strategy
        Applied in order: ``signal`` strategies transform the epochs before the
        decoder (and before ``head`` strategies see the features).

    Attributes
    ----------
    decoder_ : estimator
        The fitted copy of ``decoder`` being adapted.
    strategies_ : list of Strategy
        Fitted copies of ``strategies``.
    n_updates_ : int
        Trials adapted to since ``fit``.
    """

    def __init__(self, decoder: Any = None, strategies: list[Strategy] | tuple = ()) -> None:
        self.decoder = decoder
        self.strategies = strategies

    def fit(self, X: Any, y: Any) -> CoAdaptiveDecoder:
        """Fit signal strategies, then the decoder on their output, then head strategies.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        """
        if self.decoder is None:
            raise DecoderError("CoAdaptiveDecoder needs a decoder")
        X = check_epochs(X, who="CoAdaptiveDecoder")
        strategies = [clone(s) for s in self.strategies]
        decoder = clone(self.decoder)
        for s in strategies:
            reason = s.applies_to(decoder)
            if reason is not None and s.stage == "signal":
                raise DecoderError(f"strategy '{s.name}' cannot adapt "
                                   f"{type(decoder).__name__}: {reason}")
        Xs = X
        for s in strategies:
            if s.stage == "signal":
                Xs = s.fit(Xs, y).transform(Xs)
        decoder.fit(Xs, y)
        for s in strategies:
            if s.stage == "head":
                reason = s.applies_to(decoder)
                if reason is not None:
                    raise DecoderError(f"strategy '{s.name}' cannot adapt "
                                       f"{type(decoder).__name__}: {reason}")
                s.fit(Xs, np.asarray(y), decoder=decoder)
        self.decoder_, self.strategies_ = decoder, strategies
        self.classes_ = decoder.classes_
        self.n_updates_ = 0
        return self

    def _aligned(self, X: np.ndarray) -> np.ndarray:
        for s in self.strategies_:
            if s.stage == "signal":
                X = s.transform(X)
        return X

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "decoder_"):
            raise NotFittedError(f"CoAdaptiveDecoder: {what} before fit",
                                 hint="fit it on calibration trials first")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_trials, n_classes)."""
        self._require_fitted("predict")
        return self.decoder_.predict_proba(self._aligned(np.asarray(X, dtype=np.float64)))

    def decision_function(self, X: Any) -> np.ndarray:
        """The decoder's scores on the aligned epochs."""
        self._require_fitted("predict")
        return self.decoder_.decision_function(self._aligned(np.asarray(X, dtype=np.float64)))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class per trial, shape (n_trials,)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None,
                    sample_weight: Any = None, *, correct: Any = None) -> CoAdaptiveDecoder:
        """Adapt to trials that were just predicted.

        Validates everything first: a bad call changes nothing.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,), optional
            Labels; supervised strategies skip trials without them.
        classes : array-like, optional
            Accepted for scikit-learn's API.
        sample_weight : array-like, shape (n_trials,), optional
            Weights in [0, 1].
        correct : array-like of bool, shape (n_trials,), optional
            Whether each output was right (task outcome or error potential), for
            :class:`ErrorWeighted` strategies.
        """
        self._require_fitted("partial_fit")
        n_channels = getattr(self.decoder_, "n_channels_", None)
        X = check_epochs(X, n_channels=n_channels, who="CoAdaptiveDecoder")
        if y is not None:
            y = check_labels(y, self.classes_, X.shape[0], who="CoAdaptiveDecoder")
        if correct is not None:
            correct = np.asarray(correct, dtype=bool).reshape(-1)
            if correct.shape[0] != X.shape[0]:
                raise DecoderError(f"CoAdaptiveDecoder: {X.shape[0]} trials but "
                                   f"{correct.shape[0]} outcomes")
        Xs = X
        for s in self.strategies_:
            if s.stage == "signal" and not (s.supervised and y is None):
                s.update(Xs, y, sample_weight, correct=correct)
            if s.stage == "signal":
                Xs = s.transform(Xs)
        for s in self.strategies_:
            if s.stage == "head" and not (s.supervised and y is None):
                s.update(Xs, y, sample_weight, decoder=self.decoder_, correct=correct)
        self.n_updates_ += X.shape[0]
        return self

    def copy(self) -> CoAdaptiveDecoder:
        """An independent copy (what a background worker updates)."""
        return copy.deepcopy(self)
