"""Shrinkage LDA whose class means and pooled covariance follow the user online.

:class:`AdaptiveLDA` is a plain scikit-learn classifier on feature vectors
``(n_samples, n_features)``: fitted like scikit-learn's
``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``, then updated
trial by trial with :meth:`AdaptiveLDA.partial_fit`. An update is a rank-one
change of the pooled covariance, so its inverse is updated by Sherman-Morrison
in ``O(n_features ** 2)`` instead of re-inverted (Vidaurre et al. 2010,
"Toward unsupervised adaptation of LDA for brain-computer interfaces").

The model is a set of exponentially weighted sufficient statistics: every
update multiplies the weight of everything seen so far by ``1 - rate`` and gives
the new trial the weight ``rate`` (times its ``sample_weight``). The state after
any sequence of updates is exactly a weighted refit on the calibration data and
the new trials (see :meth:`AdaptiveLDA.partial_fit`), which the tests check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from bci_runtime.decoders.base import (
    check_labels,
    check_rate,
    check_update_classes,
    rate_from_half_life,
)
from bci_runtime.errors import DecoderError, NotFittedError

__all__ = ["AdaptiveLDA", "UnfittedError", "atomic"]

F = TypeVar("F", bound=Callable[..., Any])


def atomic(method: F) -> F:
    """Make a fitting method all-or-nothing: on any error the object is restored.

    A failed refit of a serving model (bad data, bad parameters, a singular
    covariance found half-way) must leave the model that was serving. What the
    libraries underneath raise (a ``ValueError`` from pyRiemann for a matrix
    that is not positive definite, a ``LinAlgError``) becomes a
    :class:`DecoderError` naming the estimator.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException as exc:
            self.__dict__.clear()
            self.__dict__.update(saved)
            if isinstance(exc, (ValueError, np.linalg.LinAlgError)) and not isinstance(
                    exc, DecoderError):
                raise DecoderError(f"{type(self).__name__}: {method.__name__} failed: {exc}",
                                   hint="flat, bridged or duplicated channels, or too few "
                                   "trials? the model was not changed") from exc
            raise

    return wrapper  # type: ignore[return-value]


class UnfittedError(NotFittedError, SklearnNotFittedError):
    """Used before ``fit``: our :class:`NotFittedError` that scikit-learn recognises too.

    scikit-learn's tools (``check_is_fitted``, its estimator checks, meta-estimators)
    look for :class:`sklearn.exceptions.NotFittedError`.
    """


def _as_decoder_error(exc: ValueError, who: str) -> DecoderError:
    """scikit-learn's validation message (which its checks match) as our error type."""
    if isinstance(exc, DecoderError):
        return exc
    return DecoderError(f"{who}: {exc}", hint="the model was not changed")


class AdaptiveLDA(ClassifierMixin, BaseEstimator):
    """Shrinkage linear discriminant analysis with online updates.

    Parameters
    ----------
    shrinkage : "auto", float in [0, 1] or None
        Covariance shrinkage towards a scaled identity at ``fit``: ``"auto"``
        uses the Ledoit-Wolf estimate (on the class-centred features), a float
        fixes it, None (or 0) does not shrink. Online updates then forget the
        calibration covariance, shrinkage included, at the update rate.
    half_life : float
        Updates (trials) after which an observation's weight in the model halves;
        used when ``rate`` is None. ``inf`` never adapts.
    rate : float in [0, 1], optional
        The per-update forgetting rate directly; overrides ``half_life``.
    priors : array-like, shape (n_classes,), optional
        Fixed class priors (in sorted class order). By default they are the
        (weighted, and online exponentially weighted) class proportions.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    means_ : ndarray, shape (n_classes, n_features)
        Class means.
    covariance_ : ndarray, shape (n_features, n_features)
        Pooled within-class covariance (shrunk at ``fit``).
    precision_ : ndarray, shape (n_features, n_features)
        Its inverse, kept up to date by Sherman-Morrison.
    class_weights_ : ndarray, shape (n_classes,)
        Weight of each class in the statistics; sums to 1.
    priors_ : ndarray, shape (n_classes,)
    shrinkage_ : float
        The shrinkage used at ``fit``.
    coef_ : ndarray, shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray, shape (1,) for two classes, else (n_classes,)
    n_features_in_ : int
    n_updates_ : int
        Trials added by :meth:`partial_fit` since ``fit``.
    """

    def __init__(self, shrinkage: str | float | None = "auto", half_life: float = 50.0,
                 rate: float | None = None, priors: Any = None) -> None:
        self.shrinkage = shrinkage
        self.half_life = half_life
        self.rate = rate
        self.priors = priors

    # -- fitting --------------------------------------------------------------------

    @atomic
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> AdaptiveLDA:
        """Fit class means and the shrunk pooled covariance.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,)
        sample_weight : array-like, shape (n_samples,), optional
            Non-negative weights; the statistics are weighted averages.

        Returns
        -------
        self : AdaptiveLDA
        """
        who = type(self).__name__
        try:
            X, y = validate_data(self, X, y, reset=True, dtype=np.float64,
                                 ensure_min_samples=2)
            check_classification_targets(y)
        except DecoderError:
            raise
        except ValueError as exc:
            raise _as_decoder_error(exc, who) from exc
        classes, y_idx = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise DecoderError(f"{who}: need samples of at least 2 classes, got "
                               f"{classes.tolist()}")
        w = self._checked_weights(sample_weight, X.shape[0], allow_zero_sum=False)
        self._check_params(classes.size)
        n_eff = w.sum()  # weights count as repetitions (scikit-learn's convention)
        w = w / n_eff

        class_w = np.bincount(y_idx, weights=w, minlength=classes.size)
        if (class_w <= 0).any():
            missing = classes[class_w <= 0].tolist()
            raise DecoderError(f"{who}: class(es) {missing} have zero total weight")
        means = (np.eye(classes.size)[y_idx] * w[:, None]).T @ X / class_w[:, None]
        centred = X - means[y_idx]
        cov = (centred * w[:, None]).T @ centred  # weighted, biased (weights sum to 1)
        shrinkage = self._shrinkage_value(centred, w, n_eff)
        if shrinkage > 0:
            # towards the diagonal, as scikit-learn's LDA(shrinkage="auto") does: the
            # correlation matrix is shrunk towards the identity, scales are kept
            cov = (1.0 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
        # a ridge at the rounding level keeps a constant feature from making the
        # covariance singular; it changes nothing measurable otherwise
        cov.flat[:: cov.shape[0] + 1] += 1e-10 * np.trace(cov) / cov.shape[0]
        precision = self._inverse(cov)

        self.classes_ = classes
        self.means_ = means
        self.covariance_ = cov
        self.precision_ = precision
        self.class_weights_ = class_w
        self.shrinkage_ = shrinkage
        self.n_updates_ = 0
        self._refresh()
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> AdaptiveLDA:
        """Move the model towards labelled samples, one rank-one update per sample.

        For a sample ``x`` of class ``k`` and step ``s = rate * sample_weight``,
        every weight so far is multiplied by ``1 - s`` and ``x`` gets ``s``; with
        ``a = (1 - s) * n_k`` and ``n_k`` the class weight before the step::

            d      = x - mean_k
            mean_k <- mean_k + s / (a + s) * d
            Sigma  <- (1 - s) * Sigma + a * s / (a + s) * d d^T

        which is exactly the weighted within-class covariance of all samples
        seen (calibration samples weighted ``(1 - s) ** t`` overall). The
        precision follows by Sherman-Morrison. Samples are applied in order.

        Called before :meth:`fit`, it fits on the batch when ``classes`` is
        given (scikit-learn's convention) and every class has a sample.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,)
        classes : array-like, optional
            Needed on a first call before ``fit``; later it must equal ``classes_``.
        sample_weight : array-like, shape (n_samples,), optional
            Weights in [0, 1] multiplying the rate (an uncertain label, a
            detected error potential); 1 when omitted.

        Returns
        -------
        self : AdaptiveLDA
        """
        who = type(self).__name__
        if not hasattr(self, "precision_"):
            if classes is None:
                raise UnfittedError(f"{who}: partial_fit before fit",
                                    hint="fit on calibration data first, or give "
                                    "classes=... on the first partial_fit call")
            present = np.unique(np.asarray(y))
            wanted = np.unique(np.asarray(classes))
            if set(present.tolist()) != set(wanted.tolist()):
                raise DecoderError(f"{who}: the first partial_fit needs samples of every "
                                   f"class {wanted.tolist()}, got {present.tolist()}",
                                   hint="fit on calibration data of every class first")
            return self.fit(X, y, sample_weight=sample_weight)

        # validate everything before any state changes: a bad call changes nothing
        try:
            X = validate_data(self, X, reset=False, dtype=np.float64)
        except DecoderError:
            raise
        except ValueError as exc:
            raise _as_decoder_error(exc, who) from exc
        y = check_labels(y, self.classes_, X.shape[0], who=who)
        check_update_classes(classes, self.classes_, who=who)
        w = self._checked_weights(sample_weight, X.shape[0], allow_zero_sum=True)
        if (w > 1).any():
            raise DecoderError(f"{who}: partial_fit sample_weight must be in [0, 1], got "
                               f"max {w.max()}", hint="it multiplies the update rate")
        rate = self._rate()
        steps = rate * w
        if not (steps > 0).any():
            return self

        means, cov = self.means_.copy(), self.covariance_.copy()
        prec, cw = self.precision_.copy(), self.class_weights_.copy()
        idx = np.searchsorted(self.classes_, y)
        # one rank-one update per sample: the order matters with forgetting, and a
        # trial arrives alone online, so this loop is one iteration on the hot path
        for x, k, s in zip(X, idx, steps):
            if s <= 0:
                continue
            a = (1.0 - s) * cw[k]
            gain = s / (a + s)
            d = x - means[k]
            c = a * gain  # weight of d d^T
            means[k] += gain * d
            cw *= 1.0 - s
            cw[k] += s
            cov *= 1.0 - s
            cov += c * np.outer(d, d)
            if s >= 1.0:  # everything but this sample forgotten: rank one, re-invert
                prec = self._inverse(cov)
                continue
            # (A + c d d^T)^-1 with A = (1 - s) Sigma_old
            pd = prec @ d / (1.0 - s)
            prec = prec / (1.0 - s) - np.outer(pd, pd) * (c / (1.0 + c * (d @ pd)))
            prec = (prec + prec.T) / 2.0  # rounding asymmetry grows under forgetting
        if not (np.isfinite(prec).all() and np.isfinite(means).all()):
            raise DecoderError(f"{who}: the update made the covariance singular; the model "
                               "was not changed",
                               hint="use a longer half_life (or more shrinkage at fit)")
        self.means_, self.covariance_, self.precision_ = means, cov, prec
        self.class_weights_ = cw
        self.n_updates_ += int((steps > 0).sum())
        self._refresh()
        return self

    # -- prediction -----------------------------------------------------------------

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear scores.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples,) for two classes (positive means ``classes_[1]``),
        else (n_samples, n_classes)
        """
        X = self._checked(X)
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if self.classes_.size == 2 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior class probabilities under the Gaussian model.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples, n_classes), in ``classes_`` order
        """
        scores = self.decision_function(X)
        if self.classes_.size == 2:
            p1 = expit(scores)
            return np.column_stack([1.0 - p1, p1])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, shape (n_samples, n_classes)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class, shape (n_samples,)."""
        scores = self.decision_function(X)
        if self.classes_.size == 2:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    # -- internals ------------------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def _checked(self, X: Any) -> np.ndarray:
        who = type(self).__name__
        if not hasattr(self, "coef_"):
            raise UnfittedError(f"{who}: predict before fit",
                                hint="fit it on calibration data first")
        try:
            return validate_data(self, X, reset=False, dtype=np.float64)
        except DecoderError:
            raise
        except ValueError as exc:
            raise _as_decoder_error(exc, who) from exc

    def _rate(self) -> float:
        if self.rate is not None:
            return check_rate(self.rate, f"{type(self).__name__} rate")
        return rate_from_half_life(self.half_life)

    def _check_params(self, n_classes: int) -> None:
        who = type(self).__name__
        self._rate()  # a bad rate or half-life fails at fit, not at the first update
        s = self.shrinkage
        if not (s is None or s == "auto" or (isinstance(s, (int, float))
                                             and not isinstance(s, bool) and 0 <= s <= 1)):
            raise DecoderError(f"{who}: shrinkage must be 'auto', None or in [0, 1], got {s!r}")
        if self.priors is not None:
            p = np.asarray(self.priors, dtype=np.float64)
            if p.shape != (n_classes,) or (p <= 0).any() or not np.isclose(p.sum(), 1.0):
                raise DecoderError(f"{who}: priors must be {n_classes} positive values "
                                   f"summing to 1, got {self.priors}")

    def _checked_weights(self, sample_weight: Any, n: int, *, allow_zero_sum: bool
                         ) -> np.ndarray:
        who = type(self).__name__
        if sample_weight is None:
            return np.ones(n)
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise DecoderError(f"{who}: sample_weight must hold {n} finite non-negative "
                               f"values, got shape {w.shape}")
        if not allow_zero_sum and w.sum() <= 0:
            raise DecoderError(f"{who}: every sample_weight is zero",
                               hint="give some samples a positive weight")
        return w

    def _shrinkage_value(self, centred: np.ndarray, w: np.ndarray, n_eff: float) -> float:
        """The shrinkage intensity: fixed, or Ledoit-Wolf on the standardised features.

        The Ledoit-Wolf formula of :func:`sklearn.covariance.ledoit_wolf_shrinkage`
        with each sample weighted by ``w`` (normalised) and ``n_eff`` samples, so
        integer weights give what repeating the samples would.
        """
        if self.shrinkage is None:
            return 0.0
        if self.shrinkage != "auto":
            return float(self.shrinkage)
        n_features = centred.shape[1]
        if n_features == 1:
            return 0.0
        scale = np.sqrt(np.einsum("i,ij,ij->j", w, centred, centred))
        z = centred / np.where(scale > 0, scale, 1.0)
        emp = (z * w[:, None]).T @ z
        mu = np.trace(emp) / n_features
        delta_ = np.sum(emp ** 2)
        beta_ = np.sum(w * np.einsum("ij,ij->i", z, z) ** 2)
        beta = (beta_ - delta_) / (n_features * n_eff)
        delta = (delta_ - 2.0 * mu * np.trace(emp) + n_features * mu ** 2) / n_features
        beta = min(beta, delta)
        return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)

    def _inverse(self, cov: np.ndarray) -> np.ndarray:
        try:
            prec = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            prec = None
        if prec is None or not np.isfinite(prec).all() or np.linalg.cond(cov) > 1e12:
            raise DecoderError(f"{type(self).__name__}: the pooled covariance is singular "
                               f"({cov.shape[0]} features)",
                               hint="use shrinkage='auto' or more trials per feature")
        return prec

    def _refresh(self) -> None:
        """Recompute the linear rule from means, precision and priors."""
        priors = (self.class_weights_ if self.priors is None
                  else np.asarray(self.priors, dtype=np.float64))
        self.priors_ = priors
        coef = self.means_ @ self.precision_  # precision is symmetric
        # floor: a class unseen for thousands of updates keeps a finite (tiny) prior
        intercept = (-0.5 * np.einsum("kf,kf->k", coef, self.means_)
                     + np.log(np.maximum(priors, 1e-300)))
        if self.classes_.size == 2:
            self.coef_ = (coef[1] - coef[0])[np.newaxis, :]
            self.intercept_ = np.array([intercept[1] - intercept[0]])
        else:
            self.coef_, self.intercept_ = coef, intercept
