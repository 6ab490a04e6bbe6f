"""Riemannian epoch classifiers for motor imagery: tangent space + logistic regression, MDM.

Both band-pass each epoch internally, estimate one spatial covariance matrix per
epoch and classify on the manifold of symmetric positive-definite (SPD) matrices:

* :class:`TangentSpaceLR` maps the covariances to the tangent space at their
  Riemannian mean (:class:`pyriemann.tangentspace.TangentSpace`) and fits a
  logistic regression there; with several ``bands`` it is the filter-bank
  variant (one tangent space per band, vectors concatenated). Its reference
  can follow the user without labels (:meth:`TangentSpaceLR.update_reference`,
  the ``"ts-recenter"`` strategy).
* :class:`MDM` is pyRiemann's minimum distance to mean; its :meth:`MDM.partial_fit`
  moves a class mean a geodesic step towards each new labelled trial.

Fitting is pyRiemann's (covariance estimators, Riemannian means, tangent space,
MDM). The per-trial hot path (one trial, 64 channels, every window) keeps what
does not change between trials: the band-pass and sample covariance are one
matrix product (:func:`band_scm_operator`), the references' inverse square roots
are computed once, and the few lines of OAS shrinkage, logarithmic map and
Riemannian distance are applied with them. The tests check these give
pyRiemann's numbers.

The filtering inside an epoch only uses that epoch (zero-phase by default), so
the decoders are causal at the epoch level: a prediction needs nothing but the
window it is given.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from pyriemann.classification import MDM as _PyriemannMDM
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from scipy import signal as sps
from scipy.linalg.lapack import ssyevd as _ssyevd
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets

from bci_runtime.decoders.base import (
    EpochClassifier,
    check_rate,
    rate_from_half_life,
)
from bci_runtime.decoders.lda import AdaptiveLDA, UnfittedError, atomic
from bci_runtime.errors import DecoderError

__all__ = ["MDM", "TangentSpaceLR", "band_covariances", "band_pass_epochs",
           "band_scm_operator", "check_bands", "geodesic_step", "spd_roots"]

Phase = Literal["zero", "causal"]

#: covariance estimators of pyRiemann's Covariances accepted here
ESTIMATORS = ("oas", "lwf", "scm", "cov", "sch", "mcd", "corr")
#: computed from the sample covariance without pyRiemann on the hot path
_FAST_ESTIMATORS = ("scm", "oas", "cov")


# -- validation -----------------------------------------------------------------------

def check_bands(bands: Any, sfreq: Any, who: str) -> list[tuple[float, float]]:
    """Validate pass bands against the sampling rate.

    Parameters
    ----------
    bands : sequence of (low, high) in Hz
    sfreq : float
        Sampling rate of the epochs in Hz.
    who : str
        Named in the error message.

    Returns
    -------
    list of (float, float)
    """
    if isinstance(sfreq, bool) or not (isinstance(sfreq, (int, float, np.number))
                                       and np.isfinite(sfreq) and sfreq > 0):
        raise DecoderError(f"{who}: sfreq must be a positive rate in Hz, got {sfreq!r}",
                           hint="give the sampling rate of the epochs, e.g. sfreq=160.0")
    try:
        out = [(float(lo), float(hi)) for lo, hi in bands]
    except (TypeError, ValueError) as exc:
        raise DecoderError(f"{who}: bands must be (low, high) pairs in Hz, got {bands!r}"
                           ) from exc
    if not out:
        raise DecoderError(f"{who}: no band given")
    for lo, hi in out:
        if not 0 < lo < hi < sfreq / 2:
            raise DecoderError(f"{who}: band ({lo}, {hi}) Hz must satisfy 0 < low < high "
                               f"< Nyquist ({sfreq / 2} Hz)")
    return out


def _check_filter(order: Any, phase: Any, who: str) -> None:
    if isinstance(order, bool) or not (isinstance(order, (int, np.integer)) and 1 <= order <= 8):
        raise DecoderError(f"{who}: filter_order must be an integer in [1, 8], got {order!r}")
    if phase not in ("zero", "causal"):
        raise DecoderError(f"{who}: phase must be 'zero' or 'causal', got {phase!r}")


def check_class_targets(y: np.ndarray, who: str) -> None:
    """Refuse a regression target (floats with many values) as class labels.

    The base class accepts any labels; a continuous ``y`` would silently make
    one class per trial.
    """
    try:
        check_classification_targets(y)
    except ValueError as exc:
        raise DecoderError(f"{who}: {exc}", hint="give class labels, e.g. 'left'/'right'"
                           ) from exc


def check_not_flat(X: np.ndarray, who: str) -> None:
    """Refuse calibration epochs with a channel that never moves (its covariances are singular).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    """
    flat = np.flatnonzero(np.ptp(X, axis=2).max(axis=0) == 0)
    if flat.size:
        raise DecoderError(f"{who}: channel(s) {flat.tolist()} are flat in every calibration "
                           "trial", hint="drop disconnected channels before calibrating")


def check_estimator_name(estimator: Any, who: str) -> str:
    """A pyRiemann covariance estimator name, or :class:`DecoderError`."""
    if estimator not in ESTIMATORS:
        raise DecoderError(f"{who}: unknown covariance estimator {estimator!r}",
                           hint=f"one of {', '.join(ESTIMATORS)}; 'oas' (shrunk) suits 64 "
                           "channels")
    return estimator


# -- filtering and covariances ----------------------------------------------------------

def _sos(sfreq: float, band: tuple[float, float], order: int) -> np.ndarray:
    return sps.butter(order, band, btype="bandpass", fs=sfreq, output="sos")


def band_pass_epochs(X: np.ndarray, sos: np.ndarray, phase: Phase = "zero") -> np.ndarray:
    """Band-pass every epoch on its own (nothing leaks between epochs).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    sos : ndarray, shape (n_sections, 6)
        Butterworth second-order sections (:func:`scipy.signal.butter`).
    phase : {"zero", "causal"}
        ``"zero"``: forward-backward (:func:`scipy.signal.sosfiltfilt`), no phase
        shift, possible because the whole window is there; ``"causal"``: forward
        only (:func:`scipy.signal.sosfilt`).

    Returns
    -------
    ndarray, shape (n_trials, n_channels, n_times)
    """
    if phase == "causal":
        return sps.sosfilt(sos, X, axis=-1)
    return sps.sosfiltfilt(sos, X, axis=-1)


def band_scm_operator(sos: np.ndarray, n_times: int, phase: Phase = "zero",
                      rtol: float = 1e-9, dtype: Any = np.float32) -> np.ndarray:
    """A factor ``U`` with ``(X @ U) @ (X @ U).T`` = the SCM of the band-passed epoch.

    Band-pass filtering a window of fixed length is a linear map on time,
    ``Xf = X @ H.T`` (``H`` is the filter applied to the identity, padding
    included), and so is removing the mean, ``J``. The sample covariance of the
    filtered epoch is then ``X G X.T`` with ``G = H.T J H / n_times``, symmetric
    positive semi-definite; ``U`` is ``G``'s square root restricted to the
    eigenvalues above ``rtol`` times the largest (what the stop band leaves),
    so filter and covariance cost one matrix product per epoch instead of a
    filter pass per channel and a product. Exact up to ``rtol`` relative to the
    band's power.

    In float32 by default: that product is most of a covariance decoder's
    prediction time, float32 halves it, and :func:`band_covariances` removes
    each channel's mean in float64 first (zero phase: the band-pass maps a
    constant to zero), so the covariances keep a relative error of about 1e-7,
    far below what separates two trials.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    n_times : int
    phase : {"zero", "causal"}
        As :func:`band_pass_epochs`.
    rtol : float
    dtype : numpy dtype
        Of the operator, and of the product with it.

    Returns
    -------
    ndarray, shape (n_times, rank)
    """
    # row s of the filtered identity is the response to an impulse at s: H[:, s]
    H = band_pass_epochs(np.eye(n_times)[np.newaxis], sos, phase)[0].T
    Hc = H - H.mean(axis=0, keepdims=True)  # J H: centring over time
    vals, vecs = np.linalg.eigh(Hc.T @ Hc / n_times)
    keep = vals > rtol * vals.max()
    return (vecs[:, keep] * np.sqrt(vals[keep])).astype(dtype)


def _shrink(scm: np.ndarray, estimator: str, n_times: int) -> np.ndarray:
    """pyRiemann's ``scm``, ``cov`` or ``oas`` (scikit-learn's formula) from sample covariances.

    Parameters
    ----------
    scm : ndarray, shape (n_trials, n_channels, n_channels)
        Centred sample covariances, divided by ``n_times``.
    """
    if estimator == "scm":
        return scm
    if estimator == "cov":
        return scm * (n_times / (n_times - 1.0))
    # sklearn.covariance.oas (Chen et al. 2010, eq. 23 without the 2/p factor)
    n_channels = scm.shape[-1]
    alpha = np.mean(scm ** 2, axis=(-2, -1))
    mu = np.trace(scm, axis1=-2, axis2=-1) / n_channels
    num = alpha + mu ** 2
    den = (n_times + 1.0) * (alpha - mu ** 2 / n_channels)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrinkage = np.where(den == 0, 1.0, np.minimum(num / den, 1.0))
    out = (1.0 - shrinkage)[:, None, None] * scm
    diag = np.arange(n_channels)
    out[:, diag, diag] += (shrinkage * mu)[:, None]
    return out


def band_covariances(X: np.ndarray, estimator: str, sos: np.ndarray | None = None,
                     operator: np.ndarray | None = None, phase: Phase = "zero") -> np.ndarray:
    """Covariance of each (band-passed) epoch, as pyRiemann's ``Covariances(estimator)``.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    estimator : str
        pyRiemann estimator name.
    sos : ndarray, optional
        Band-pass applied first (None: the epochs as they are).
    operator : ndarray, shape (n_times, rank), optional
        :func:`band_scm_operator` of ``sos``: ``scm``, ``cov`` and ``oas`` then
        cost one matrix product.
    phase : {"zero", "causal"}

    Returns
    -------
    ndarray, shape (n_trials, n_channels, n_channels)
    """
    n_times = X.shape[-1]
    if estimator in _FAST_ESTIMATORS and (operator is not None or sos is None):
        if operator is not None:
            if phase == "zero":
                # the mean goes first, in float64: a DC offset would eat float32's precision
                # (a zero-phase band-pass maps a constant to 0: nothing else changes)
                X = X - X.mean(axis=-1, keepdims=True)
            Y = X.astype(operator.dtype, copy=False) @ operator
            scm = (Y @ Y.transpose(0, 2, 1)).astype(np.float64)
        else:
            Y = X - X.mean(axis=-1, keepdims=True)
            scm = Y @ Y.transpose(0, 2, 1) / n_times
        return _shrink(scm, estimator, n_times)
    if sos is not None:
        X = band_pass_epochs(X, sos, phase)
    return Covariances(estimator=estimator).transform(X)


# -- SPD helpers ------------------------------------------------------------------------

def _eigh(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(C)
    if not (np.isfinite(vals).all() and vals.min() > 0):
        raise DecoderError("a covariance matrix is not positive definite",
                           hint="a flat or bridged channel? drop it, or use a shrunk "
                           "estimator ('oas', 'lwf'); the model was not changed")
    return vals, vecs


#: a float32 eigendecomposition is trusted down to this ratio of smallest to largest eigenvalue
FLOAT32_RESOLVES = 1e-3


def log_spd(S: np.ndarray) -> np.ndarray:
    """Matrix logarithm of SPD matrices, shape (n, c, c) -> (n, c, c).

    The eigendecomposition runs in float32 (LAPACK ``ssyevd``, a fifth faster
    than float64 at 64 channels, where it is half of a tangent-space
    prediction). Its eigenvalues are exact to about 1e-7 of the largest, so
    ``log`` of one at least :data:`FLOAT32_RESOLVES` of it errs by at most
    ~1e-4; a matrix with a wider spectrum is decomposed in float64.

    Raises
    ------
    DecoderError
        A matrix is not positive definite.
    """
    out = np.empty(S.shape, dtype=np.float64)
    for k, matrix in enumerate(S):
        vals, vecs, info = _ssyevd(matrix.astype(np.float32), compute_v=1, lower=1)
        if info != 0 or not vals[0] > FLOAT32_RESOLVES * vals[-1]:
            vals, vecs = _eigh(matrix[np.newaxis])
            vals, vecs = vals[0], vecs[0]
        out[k] = (vecs * np.log(vals)) @ vecs.T
    return out


def log_eigenvalues(S: np.ndarray) -> np.ndarray:
    """Logarithms of the eigenvalues of SPD matrices, shape (n, c, c) -> (n, c).

    In float32 with a float64 fallback, as :func:`log_spd`.

    Raises
    ------
    DecoderError
        A matrix is not positive definite.
    """
    out = np.empty(S.shape[:2], dtype=np.float64)
    for k, matrix in enumerate(S):
        vals, _, info = _ssyevd(matrix.astype(np.float32), compute_v=0, lower=1)
        if info != 0 or not vals[0] > FLOAT32_RESOLVES * vals[-1]:
            vals = _eigh(matrix[np.newaxis])[0][0]
        out[k] = np.log(vals)
    return out


def spd_roots(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``C ** 1/2`` and ``C ** -1/2`` of an SPD matrix from one eigendecomposition.

    Parameters
    ----------
    C : ndarray, shape (n, n)

    Returns
    -------
    sqrt, invsqrt : ndarray, shape (n, n)
    """
    vals, vecs = _eigh(C)
    root = np.sqrt(vals)
    return (vecs * root) @ vecs.T, (vecs / root) @ vecs.T


def geodesic_step(sqrt: np.ndarray, invsqrt: np.ndarray, C: np.ndarray,
                  step: float) -> np.ndarray:
    """The point at ``step`` on the affine-invariant geodesic from ``M`` to ``C``.

    ``M ** 1/2 (M ** -1/2 C M ** -1/2) ** step M ** 1/2``, what
    :func:`pyriemann.geometry.geodesic.geodesic_riemann` computes, given the
    roots of ``M`` that an online reference keeps anyway (two of its three
    eigendecompositions saved per update).

    Parameters
    ----------
    sqrt, invsqrt : ndarray, shape (n, n)
        ``M ** 1/2`` and ``M ** -1/2``.
    C : ndarray, shape (n, n)
    step : float in [0, 1]

    Returns
    -------
    ndarray, shape (n, n)
    """
    vals, vecs = _eigh(invsqrt @ C @ invsqrt)
    inner = (vecs * vals ** step) @ vecs.T
    out = sqrt @ inner @ sqrt
    return (out + out.T) / 2.0  # keep it exactly symmetric over many updates


def _upper_index(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of :func:`pyriemann.geometry.tangentspace.upper`."""
    rows, cols = np.triu_indices(n)
    return rows, cols, np.where(rows == cols, 1.0, np.sqrt(2.0))


# -- shared parameters ------------------------------------------------------------------

class _BandCovariances:
    """Shared parameters, checks and band covariances of the covariance decoders (a mixin)."""

    sfreq: float
    estimator: str
    filter_order: int
    phase: Phase

    def _bands(self) -> list[tuple[float, float]]:
        raise NotImplementedError

    def _check_common(self, y: np.ndarray) -> list[tuple[float, float]]:
        who = type(self).__name__
        check_class_targets(y, who)
        bands = check_bands(self._bands(), self.sfreq, who)
        _check_filter(self.filter_order, self.phase, who)
        check_estimator_name(self.estimator, who)
        return bands

    def _prepare_bands(self, bands: list[tuple[float, float]], n_times: int) -> None:
        self.sos_ = [_sos(self.sfreq, b, self.filter_order) for b in bands]
        self.operators_ = [band_scm_operator(sos, n_times, self.phase)
                           if self.estimator in _FAST_ESTIMATORS else None
                           for sos in self.sos_]

    def _band_covariances(self, X: np.ndarray) -> list[np.ndarray]:
        """One covariance stack per band, each (n_trials, n_channels, n_channels)."""
        return [band_covariances(X, self.estimator, sos, op, self.phase)
                for sos, op in zip(self.sos_, self.operators_)]

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "head_"):
            raise UnfittedError(f"{type(self).__name__}: {what} before fit",
                                hint="fit it on calibration trials first")

    @atomic
    def fit(self, X: Any, y: Any) -> Any:
        """Fit the feature extractor, then the head; a failed fit changes nothing.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        """
        return super().fit(X, y)  # type: ignore[misc]

    def _sample_weights(self, sample_weight: Any, n: int) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n)
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if w.shape[0] != n or not np.isfinite(w).all() or (w < 0).any() or (w > 1).any():
            raise DecoderError(f"{type(self).__name__}: sample_weight must hold {n} values "
                               "in [0, 1]")
        return w


# -- tangent space ------------------------------------------------------------------------

class TangentSpaceLR(_BandCovariances, EpochClassifier):
    """Band-passed covariances, Riemannian tangent space, logistic regression.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the epochs in Hz (needed by the band-pass).
    bands : sequence of (low, high), optional
        Pass bands in Hz; one tangent space per band, concatenated (a filter
        bank). Default: one band from ``l_freq`` to ``h_freq``.
    l_freq, h_freq : float
        The band when ``bands`` is None; 8-30 Hz covers mu and beta rhythms.
    estimator : str
        pyRiemann covariance estimator; ``"oas"`` (shrunk) keeps 64-channel
        covariances of short windows well conditioned.
    C : float
        Inverse L2 regularization of the logistic regression.
    head : {"logreg", "lda"}
        ``"lda"`` uses :class:`~bci_runtime.decoders.lda.AdaptiveLDA`, whose
        ``partial_fit`` updates online; logistic regression has none.
    filter_order : int
        Butterworth order of the band-pass.
    phase : {"zero", "causal"}
        Filtering inside each epoch (see :func:`band_pass_epochs`).

    Attributes
    ----------
    ts_ : list of TangentSpace
        One fitted tangent space per band; ``reference_`` starts at the
        Riemannian mean of the calibration covariances.
    whiteners_, sqrts_ : ndarray, shape (n_bands, n_channels, n_channels)
        ``reference ** -1/2`` and ``reference ** 1/2`` of each band.
    sos_ : list of ndarray
        The band-pass filters.
    operators_ : list of ndarray or None
        :func:`band_scm_operator` per band (for ``scm``, ``cov``, ``oas``).
    n_reference_updates_ : int
        Trials :meth:`update_reference` moved the references with.

    Notes
    -----
    The default motor-imagery decoder (``ts-lr``). On PhysioNet EEGMMIDB S001
    with the harness's protocol (causal 1-40 Hz, epochs 0.5-2.5 s), the default
    parameters give 0.867 (left/right fist, train R04+R08, test R12) and 0.933
    (fists/feet, R06+R10 -> R14) with a fixed model, and 0.933 on both
    pseudo-online with the unsupervised ``"ts-recenter"`` strategy (half-life 20
    trials), which moves the tangent-space reference with every trial.
    """

    def __init__(self, sfreq: float = 160.0, bands: Sequence[tuple[float, float]] | None = None,
                 l_freq: float = 8.0, h_freq: float = 30.0, estimator: str = "oas",
                 C: float = 1.0, head: Literal["logreg", "lda"] = "logreg",
                 filter_order: int = 4, phase: Phase = "zero") -> None:
        self.sfreq = sfreq
        self.bands = bands
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.estimator = estimator
        self.C = C
        self.head = head
        self.filter_order = filter_order
        self.phase = phase

    def _bands(self) -> list[tuple[float, float]]:
        return list(self.bands) if self.bands is not None else [(self.l_freq, self.h_freq)]

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        who = type(self).__name__
        bands = self._check_common(y)
        check_not_flat(X, who)
        if self.head not in ("logreg", "lda"):
            raise DecoderError(f"{who}: head must be 'logreg' or 'lda', got {self.head!r}")
        if isinstance(self.C, bool) or not (isinstance(self.C, (int, float)) and self.C > 0):
            raise DecoderError(f"{who}: C must be > 0, got {self.C!r}")
        self._prepare_bands(bands, X.shape[-1])
        covs = self._band_covariances(X)
        self.ts_ = [TangentSpace(metric="riemann").fit(c) for c in covs]
        roots = [spd_roots(ts.reference_) for ts in self.ts_]
        self.sqrts_ = np.stack([r[0] for r in roots])
        self.whiteners_ = np.stack([r[1] for r in roots])
        self._upper = _upper_index(X.shape[1])
        self.n_reference_updates_ = 0
        return self._tangent(covs)

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self._tangent(self._band_covariances(X))

    def _tangent(self, covs: list[np.ndarray]) -> np.ndarray:
        """``TangentSpace.transform`` of each band, shape (n_trials, n_bands * n_ts).

        ``upper(logm(W C W))`` with the whitener ``W`` kept from fit (pyRiemann
        recomputes it at every call): one eigendecomposition per trial and band.
        """
        rows, cols, coeffs = self._upper
        out = []
        for w, c in zip(self.whiteners_, covs):
            logs = log_spd(w @ c @ w)
            out.append(logs[:, rows, cols] * coeffs)
        return np.hstack(out) if len(out) > 1 else out[0]

    # the logistic head in one matrix product (scikit-learn's predict_proba validates
    # its input again, which costs more than the product on one trial)

    def decision_function(self, X: Any) -> np.ndarray:
        """Head scores, shape (n_trials,) for two classes, else (n_trials, n_classes)."""
        features = self.features(X)
        if isinstance(self.head_, LogisticRegression):
            scores = features @ self.head_.coef_.T + self.head_.intercept_
            return scores[:, 0] if scores.shape[1] == 1 else scores
        return self.head_.decision_function(features)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_trials, n_classes), in ``classes_`` order."""
        if not isinstance(getattr(self, "head_", None), LogisticRegression):
            return super().predict_proba(X)
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p1 = expit(scores)
            return np.column_stack([1.0 - p1, p1])
        return softmax(scores, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class per trial, shape (n_trials,)."""
        if not isinstance(getattr(self, "head_", None), LogisticRegression):
            return super().predict(X)
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def update_reference(self, X: Any, sample_weight: Any = None, *,
                         rate: float = 0.05) -> TangentSpaceLR:
        """Move each band's tangent-space reference a geodesic step towards each trial.

        Unsupervised re-centring in the covariance domain (Zanini et al. 2018):
        the tangent space at ``M`` of a covariance ``C`` is the tangent space at
        the identity of ``M ** -1/2 C M ** -1/2``, so moving ``M`` with the data
        re-centres the trials the head sees. The step of trial ``i`` is
        ``rate * sample_weight[i]``; trials are taken in order. Driven online by
        the ``"ts-recenter"`` strategy. Everything is validated and computed
        before the model changes.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        sample_weight : array-like, shape (n_trials,), optional
            Weights in [0, 1]; 1 when omitted.
        rate : float in [0, 1]
            Geodesic step per trial.
        """
        self._require_fitted("update_reference")
        X = self._checked(X)
        rate = check_rate(rate, f"{type(self).__name__} rate")
        steps = rate * self._sample_weights(sample_weight, X.shape[0])
        keep = steps > 0
        if not keep.any():
            return self
        sqrts, whiteners = self.sqrts_.copy(), self.whiteners_.copy()
        refs = [ts.reference_ for ts in self.ts_]
        for b, covs in enumerate(self._band_covariances(X[keep])):
            for c, s in zip(covs, steps[keep]):  # a trial arrives alone online
                refs[b] = geodesic_step(sqrts[b], whiteners[b], c, s)
                sqrts[b], whiteners[b] = spd_roots(refs[b])
        for ts, ref in zip(self.ts_, refs):
            ts.reference_ = ref
        self.sqrts_, self.whiteners_ = sqrts, whiteners
        self.n_reference_updates_ += int(keep.sum())
        return self

    def _make_head(self) -> Any:
        if self.head == "lda":
            return AdaptiveLDA(shrinkage="auto")
        return LogisticRegression(C=self.C, max_iter=1000)


# -- minimum distance to mean ----------------------------------------------------------

class _NearestMeanHead(ClassifierMixin, BaseEstimator):
    """The MDM decision on distances to the class means (the MDM's features).

    ``X`` holds the Riemannian distance of each trial to each class mean,
    shape (n_trials, n_classes); the nearest mean wins and the probabilities
    are pyRiemann's softmax of minus the squared distances.
    """

    def fit(self, X: np.ndarray, y: np.ndarray) -> _NearestMeanHead:
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Shape (n_trials,) for two classes (positive: ``classes_[1]`` nearer), else
        (n_trials, n_classes) of minus squared distances."""
        scores = -np.asarray(X) ** 2
        return scores[:, 1] - scores[:, 0] if self.classes_.size == 2 else scores

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(-np.asarray(X) ** 2, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmin(X, axis=1)]


class MDM(_BandCovariances, EpochClassifier):
    """Minimum distance to the Riemannian class means of band-passed covariances.

    Fitted by pyRiemann's :class:`pyriemann.classification.MDM`. The features
    are the affine-invariant distances of a trial to each class mean, shape
    (n_trials, n_classes) (``mdm_.transform``), and the head picks the nearest.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the epochs in Hz.
    l_freq, h_freq : float
        Pass band in Hz.
    estimator : str
        pyRiemann covariance estimator.
    half_life : float
        :meth:`partial_fit`: labelled trials of a class after which a trial's
        pull on its class mean has halved; ``rate`` overrides it.
    rate : float in [0, 1], optional
        Geodesic step of a class mean towards each new trial of that class.
    filter_order : int
    phase : {"zero", "causal"}

    Attributes
    ----------
    mdm_ : pyriemann.classification.MDM
        Its ``covmeans_`` (n_classes, n_channels, n_channels) move with
        :meth:`partial_fit`.
    mean_sqrts_, mean_whiteners_ : ndarray, shape (n_classes, n_channels, n_channels)
        Square roots and inverse square roots of the class means.
    """

    def __init__(self, sfreq: float = 160.0, l_freq: float = 8.0, h_freq: float = 30.0,
                 estimator: str = "oas", half_life: float = 20.0, rate: float | None = None,
                 filter_order: int = 4, phase: Phase = "zero") -> None:
        self.sfreq = sfreq
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.estimator = estimator
        self.half_life = half_life
        self.rate = rate
        self.filter_order = filter_order
        self.phase = phase

    def _bands(self) -> list[tuple[float, float]]:
        return [(self.l_freq, self.h_freq)]

    def _rate(self) -> float:
        if self.rate is not None:
            return check_rate(self.rate, f"{type(self).__name__} rate")
        return rate_from_half_life(self.half_life)

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        bands = self._check_common(y)
        check_not_flat(X, type(self).__name__)
        self._rate()
        self._prepare_bands(bands, X.shape[-1])
        covs = self._band_covariances(X)[0]
        self.mdm_ = _PyriemannMDM(metric="riemann").fit(covs, y)
        self._set_roots(self.mdm_.covmeans_)
        return self._distances(covs)

    def _set_roots(self, means: np.ndarray) -> None:
        roots = [spd_roots(m) for m in means]
        self.mean_sqrts_ = np.stack([r[0] for r in roots])
        self.mean_whiteners_ = np.stack([r[1] for r in roots])

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self._distances(self._band_covariances(X)[0])

    def _distances(self, covs: np.ndarray) -> np.ndarray:
        """``mdm_.transform(covs)``: ``||log eig(M_k^-1/2 C M_k^-1/2)||`` per class mean,
        with the inverse square roots kept (pyRiemann solves a generalized
        eigenproblem per call). Shape (n_trials, n_classes)."""
        out = np.empty((covs.shape[0], self.mean_whiteners_.shape[0]))
        for k, w in enumerate(self.mean_whiteners_):
            out[:, k] = np.sqrt(np.sum(log_eigenvalues(w @ covs @ w) ** 2, axis=-1))
        return out

    def _make_head(self) -> Any:
        return _NearestMeanHead()

    @property
    def supports_partial_fit(self) -> bool:
        """Whether :meth:`partial_fit` can update it: once fitted (it moves the class means)."""
        return hasattr(self, "mdm_")

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> MDM:
        """Move each trial's class mean a geodesic step towards the trial's covariance.

        ``M_k <- M_k #_s C`` (the point at ``s = rate * sample_weight`` on the
        affine-invariant geodesic from ``M_k`` to ``C``), trial by trial in order,
        so a trial's pull on its class mean halves after ``half_life`` more
        trials of that class. Validated and computed before the model changes.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        classes : array-like, optional
            Must be the fitted classes.
        sample_weight : array-like, shape (n_trials,), optional
            Weights in [0, 1] multiplying the rate.
        """
        X, y = self._update_inputs(X, y, classes)
        steps = self._rate() * self._sample_weights(sample_weight, X.shape[0])
        keep = steps > 0
        if not keep.any():
            return self
        covs = self._band_covariances(X[keep])[0]
        means = self.mdm_.covmeans_.copy()
        sqrts, whiteners = self.mean_sqrts_.copy(), self.mean_whiteners_.copy()
        idx = np.searchsorted(self.mdm_.classes_, y[keep])
        for c, k, s in zip(covs, idx, steps[keep]):  # in order: later trials pull last
            means[k] = geodesic_step(sqrts[k], whiteners[k], c, s)
            sqrts[k], whiteners[k] = spd_roots(means[k])
        self.mdm_.covmeans_ = means
        self.mean_sqrts_, self.mean_whiteners_ = sqrts, whiteners
        return self
