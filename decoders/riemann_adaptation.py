"""Signal-stage co-adaptation: re-centring (whitening) of the epochs as the signals drift.

A slow change of the mixing between sources and electrodes (impedances, a cap
that moves, a new session) multiplies every trial's covariance by the same
congruence: ``C -> A C A^T``. Whitening each epoch by the inverse square root of
a reference covariance that follows the data undoes such a change without labels:

* :class:`RiemannianRecentering` (``"recenter"``, Zanini et al. 2018): the
  reference is the Riemannian mean of the calibration covariances, and each new
  trial moves it a geodesic step towards its covariance;
* :class:`RiemannianProcrustes` (``"recenter-rotate"``, Rodrigues et al. 2019):
  re-centring, plus a rotation that matches the class means of the labelled
  online trials to those of the calibration (Riemannian Procrustes analysis,
  by the descent of pyRiemann's :class:`~pyriemann.transfer.TLRotate`);
* :class:`EuclideanAlignment` (``"euclidean"``, He & Wu 2019): the reference is
  the arithmetic mean of the covariances, updated as an exponential moving
  average;
* :class:`TangentSpaceRecentering` (``"ts-recenter"``, stage ``head``): the same
  re-centring in the covariance domain of a tangent-space decoder, by moving
  its tangent-space reference (no whitening of the epochs).

The ``signal`` ones take raw epochs ``(n_trials, n_channels, n_times)`` and return whitened
epochs of the same shape, so they work in front of any epoch decoder: the decoder
is trained on whitened calibration epochs and sees whitened epochs online. With
``l_freq``/``h_freq`` the reference is estimated on band-passed copies (the band
the decoder uses), while the epochs handed on stay broadband.

This module registers them; :func:`bci_runtime.decoders.adaptation.make_strategy`
imports it on first use.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pyriemann.geometry.mean import mean_riemann

from bci_runtime.decoders.adaptation import Strategy, register_strategy
from bci_runtime.decoders.base import check_epochs, check_labels
from bci_runtime.decoders.lda import atomic
from bci_runtime.decoders.riemann import (
    _FAST_ESTIMATORS,
    _sos,
    band_covariances,
    band_scm_operator,
    check_bands,
    check_estimator_name,
    check_not_flat,
    geodesic_step,
    spd_roots,
)
from bci_runtime.errors import DecoderError, NotFittedError

__all__ = ["EuclideanAlignment", "RiemannianProcrustes", "RiemannianRecentering",
           "TangentSpaceRecentering"]


#: diagonal load, relative to the mean variance, of trials with a dead channel
DIAGONAL_LOAD = 1e-6


class _Whitening(Strategy):
    """Common machinery: a reference covariance, its whitener, and per-trial updates."""

    stage = "signal"
    supervised = False

    def __init__(self, half_life: float = 20.0, rate: float | None = None,
                 estimator: str = "scm", sfreq: float | None = None,
                 l_freq: float | None = None, h_freq: float | None = None) -> None:
        super().__init__(half_life=half_life, rate=rate)
        self.estimator = estimator
        self.sfreq = sfreq
        self.l_freq = l_freq
        self.h_freq = h_freq

    # -- scikit-learn / Strategy API --------------------------------------------------

    @atomic
    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> _Whitening:
        """Reference = mean covariance of the calibration epochs.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
        y : ndarray, shape (n_trials,)
            Unused by the re-centring itself.
        decoder : estimator, optional
            Unused.
        """
        who = self._who()
        X = check_epochs(X, who=who)
        check_not_flat(X, who)
        self.rate_  # noqa: B018 -- a bad rate or half-life fails at fit, not online
        self._check_estimator()
        if (self.l_freq is None) != (self.h_freq is None):
            raise DecoderError(f"{who}: give both l_freq and h_freq, or neither")
        if self.l_freq is not None:
            if self.sfreq is None:
                raise DecoderError(f"{who}: a reference band needs sfreq",
                                   hint="give the sampling rate of the epochs")
            band = check_bands([(self.l_freq, self.h_freq)], self.sfreq, who)[0]
            self.sos_ = _sos(self.sfreq, band, 4)
            self.operator_ = (band_scm_operator(self.sos_, X.shape[-1])
                              if self.estimator in _FAST_ESTIMATORS else None)
        else:
            self.sos_ = self.operator_ = None
        self.n_times_ = X.shape[-1]
        covs = self._covariances(X)
        reference = self._mean(covs)
        # labels are not needed, but those given later must be calibrated classes
        self.classes_ = np.unique(check_labels(y, None, X.shape[0], who=who))
        self.reference_ = reference
        self.sqrt_, self.whitener_ = self._roots(reference)
        self.n_channels_ = X.shape[1]
        self.n_updates_ = 0
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Whitened epochs ``W @ X`` with ``W = reference ** -1/2``.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)

        Returns
        -------
        ndarray, shape (n_trials, n_channels, n_times)
        """
        self._require_fitted("transform")
        X = check_epochs(X, n_channels=self.n_channels_, who=self._who())
        return self.whitener_ @ X

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        """Move the reference towards each trial's covariance, in order (no labels needed).

        The step of trial ``i`` is ``rate * sample_weight[i]``: a trial's weight in
        the reference halves after ``half_life`` more trials. Everything is
        validated and computed before the state changes, so a bad call leaves
        the strategy as it was.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_channels, n_times)
            Raw (not yet whitened) epochs, as given to :meth:`fit`.
        y : ndarray, shape (n_trials,), optional
            Not needed; :class:`RiemannianProcrustes` uses it.
        sample_weight : ndarray, shape (n_trials,), optional
            Weights in [0, 1]; 1 when omitted.
        decoder, correct
            Unused.
        """
        self._require_fitted("update")
        who = self._who()
        X = check_epochs(X, n_channels=self.n_channels_, who=who)
        steps = self.rate_ * self._weights(X.shape[0], sample_weight)
        self._extra_checks(X, y)
        if not (steps > 0).any():
            return
        covs = self._covariances(X[steps > 0])
        reference, sq, wh = self.reference_, self.sqrt_, self.whitener_
        # a trial arrives alone online: this loop is one iteration on the hot path
        for c, s in zip(covs, steps[steps > 0]):
            reference = self._step(reference, sq, wh, c, s)
            sq, wh = self._roots(reference)
        state = self._extra_update(X, y, steps, covs)
        self.reference_, self.sqrt_, self.whitener_ = reference, sq, wh
        self._commit(state)
        self.n_updates_ += int((steps > 0).sum())

    # -- internals --------------------------------------------------------------------

    def _who(self) -> str:
        return f"{type(self).__name__} ('{self.name}')"

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "whitener_"):
            raise NotFittedError(f"{self._who()}: {what} before fit",
                                 hint="fit it on the calibration epochs first")

    def _check_estimator(self) -> None:
        check_estimator_name(self.estimator, self._who())

    def _covariances(self, X: np.ndarray) -> np.ndarray:
        if self.operator_ is not None and X.shape[-1] != self.n_times_:
            raise DecoderError(f"{self._who()}: fitted on windows of {self.n_times_} samples, "
                               f"got {X.shape[-1]}",
                               hint="use the window length of the calibration")
        covs = band_covariances(X, self.estimator, self.sos_, self.operator_)
        # a dead (flat or railed) channel makes a sample covariance singular: a load of
        # 1e-6 of the mean variance keeps those invertible; healthy trials are left exact
        diag = np.diagonal(covs, axis1=-2, axis2=-1)
        level = diag.mean(axis=-1)
        dead = (diag < DIAGONAL_LOAD * level[:, None]).any(axis=-1)
        if dead.any():
            covs[dead] += DIAGONAL_LOAD * level[dead, None, None] * np.eye(covs.shape[-1])
        return covs

    def _roots(self, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return spd_roots(reference)
        except DecoderError as exc:
            raise DecoderError(f"{self._who()}: {exc.message}", hint=exc.hint) from None

    def _mean(self, covs: np.ndarray) -> np.ndarray:
        return mean_riemann(covs)

    def _step(self, reference: np.ndarray, sq: np.ndarray, wh: np.ndarray, c: np.ndarray,
              s: float) -> np.ndarray:
        # the affine-invariant geodesic from the reference towards C, reusing its roots
        return geodesic_step(sq, wh, c, s)

    def _extra_checks(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if y is not None:
            check_labels(y, self.classes_, X.shape[0], who=self._who())

    def _extra_update(self, X: np.ndarray, y: np.ndarray | None, steps: np.ndarray,
                      covs: np.ndarray) -> Any:
        return None

    def _commit(self, state: Any) -> None:
        return None


@register_strategy
class RiemannianRecentering(_Whitening):
    """Unsupervised Riemannian re-centring (Zanini et al. 2018), updated trial by trial.

    At ``fit`` the reference is the Riemannian mean of the calibration
    covariances, so the decoder is trained on epochs whose covariances are
    centred at the identity. Each new trial moves the reference a geodesic step
    of the half-life rate towards its covariance (no label needed), and later
    epochs are whitened by the moved reference: a drift of the mixing is undone
    as the reference follows it.

    With ``rotate=True`` (registered as ``"recenter-rotate"``,
    :class:`RiemannianProcrustes`) it adds the Riemannian Procrustes rotation of
    Rodrigues et al. 2019: after re-centring, a new session's covariances may
    still be rotated relative to the calibration's. It keeps, at the
    identity-centred level, the calibration class means ``M_k`` and running
    class means ``T_k`` of the labelled online trials (a geodesic step of the
    rate per trial of that class, starting from ``M_k``), and the rotation ``U``
    minimising ``sum_k ||U T_k U^T - M_k||``, by pyRiemann's Procrustes descent
    (that of :class:`~pyriemann.transfer.TLRotate`) warm-started at the previous
    rotation; epochs are then mapped by ``U @ W``.
    Unlabelled trials only move the reference; the rotation waits for labels.

    Parameters
    ----------
    half_life : float
        Trials after which a trial's weight in the reference has halved.
    rate : float in [0, 1], optional
        The geodesic step per trial directly; overrides ``half_life``.
    estimator : str
        pyRiemann covariance estimator of the trials. ``"scm"`` (the default) is
        equivariant, ``cov(A X) = A cov(X) A^T``, so a mixing change moves the
        reference exactly as it moves the trials; a shrunk estimator (``"oas"``)
        shrinks towards the identity of the raw channels, which a mixing change
        does not carry along, and the re-centred trials keep a residual
        distortion.
    sfreq, l_freq, h_freq : float, optional
        Estimate the reference on this band (Hz; needs ``sfreq``): the band the
        decoder uses. The epochs themselves are whitened whole.
    rotate : bool
        Add the Procrustes rotation from labelled online trials.
    rotate_iter : int
        Descent steps of the rotation per labelled update (warm-started).

    Attributes
    ----------
    reference_ : ndarray, shape (n_channels, n_channels)
    whitener_ : ndarray, shape (n_channels, n_channels)
        ``reference_ ** -1/2``.
    sqrt_ : ndarray, shape (n_channels, n_channels)
        ``reference_ ** 1/2``.
    rotation_ : ndarray, shape (n_channels, n_channels)
        Orthogonal; the identity without ``rotate`` or until labelled trials came.
    class_means_ : ndarray, shape (n_classes, n_channels, n_channels)
        With ``rotate``: calibration class means after re-centring.
    online_means_ : ndarray, shape (n_classes, n_channels, n_channels)
        With ``rotate``: running class means of the labelled online trials.
    """

    name = "recenter"

    def __init__(self, half_life: float = 20.0, rate: float | None = None,
                 estimator: str = "scm", sfreq: float | None = None,
                 l_freq: float | None = None, h_freq: float | None = None,
                 rotate: bool = False, rotate_iter: int = 20) -> None:
        super().__init__(half_life=half_life, rate=rate, estimator=estimator, sfreq=sfreq,
                         l_freq=l_freq, h_freq=h_freq)
        self.rotate = rotate
        self.rotate_iter = rotate_iter

    @atomic
    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> RiemannianRecentering:
        if isinstance(self.rotate_iter, bool) or not (
                isinstance(self.rotate_iter, (int, np.integer)) and self.rotate_iter >= 1):
            raise DecoderError(f"{self._who()}: rotate_iter must be a positive integer, got "
                               f"{self.rotate_iter!r}")
        super().fit(X, y)
        self.rotation_ = np.eye(self.n_channels_)
        if self.rotate:
            X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
            centred = self.whitener_ @ self._covariances(X) @ self.whitener_
            self.class_means_ = np.stack([mean_riemann(centred[y == k])
                                          for k in self.classes_])
            self.online_means_ = self.class_means_.copy()
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        whitened = super().transform(X)
        return self.rotation_ @ whitened if self.rotate else whitened

    def _extra_update(self, X: np.ndarray, y: np.ndarray | None, steps: np.ndarray,
                      covs: np.ndarray) -> Any:
        if y is None or not self.rotate:
            return None
        y = np.asarray(y)[steps > 0]
        means = self.online_means_.copy()
        # centred with the whitener in use when the trials were predicted (before this
        # update moves it): the level at which the decoder saw them
        centred = self.whitener_ @ covs @ self.whitener_
        for c, k, s in zip(centred, np.searchsorted(self.classes_, y), steps[steps > 0]):
            means[k] = self._step(means[k], *spd_roots(means[k]), c, s)
        return means, self._rotation(means)

    def _commit(self, state: Any) -> None:
        if state is not None:
            self.online_means_, self.rotation_ = state

    def _rotation(self, online_means: np.ndarray) -> np.ndarray:
        """``U`` with ``U T_k U^T`` close to ``M_k``, warm-started at the current rotation.

        pyRiemann's Procrustes descent on orthogonal matrices (what
        :class:`~pyriemann.transfer.TLRotate` runs, Euclidean loss), started from
        the rotation in use and limited to ``rotate_iter`` steps: the class means
        move a little per trial, so a few steps track them. TLRotate itself
        restarts from an eigenvector guess every time, which costs seconds at 64
        channels and can jump to a far rotation (eigenvector signs) when nothing
        has changed.
        """
        from pyriemann.optimization.grassmann import _run_minimization

        n = len(self.classes_)
        with warnings.catch_warnings():  # "Convergence not reached": expected, few steps
            warnings.simplefilter("ignore", UserWarning)
            rotation, _ = _run_minimization(self.rotation_, online_means, self.class_means_,
                                            np.full(n, 1.0 / n), metric="euclid",
                                            maxiter=self.rotate_iter)
        return rotation


@register_strategy
class RiemannianProcrustes(RiemannianRecentering):
    """:class:`RiemannianRecentering` with ``rotate=True`` by default (``"recenter-rotate"``).

    Riemannian Procrustes analysis (Rodrigues et al. 2019): re-centring, plus a
    rotation matching the labelled online class means to the calibration's.
    """

    name = "recenter-rotate"

    def __init__(self, half_life: float = 20.0, rate: float | None = None,
                 estimator: str = "scm", sfreq: float | None = None,
                 l_freq: float | None = None, h_freq: float | None = None,
                 rotate: bool = True, rotate_iter: int = 20) -> None:
        super().__init__(half_life=half_life, rate=rate, estimator=estimator, sfreq=sfreq,
                         l_freq=l_freq, h_freq=h_freq, rotate=rotate, rotate_iter=rotate_iter)


@register_strategy
class EuclideanAlignment(_Whitening):
    """Euclidean alignment (He & Wu 2019) with a running reference.

    The reference is the arithmetic mean of the trial covariances; each new
    trial moves it by ``R <- (1 - s) R + s C`` (``s = rate * sample_weight``).
    Cheaper than the Riemannian mean and close to it when the covariances are
    not too spread.

    Parameters
    ----------
    half_life, rate, estimator, sfreq, l_freq, h_freq
        As :class:`RiemannianRecentering` (``estimator="scm"`` is He & Wu's).

    Attributes
    ----------
    reference_, whitener_, sqrt_ : ndarray, shape (n_channels, n_channels)
    """

    name = "euclidean"

    def __init__(self, half_life: float = 20.0, rate: float | None = None,
                 estimator: str = "scm", sfreq: float | None = None,
                 l_freq: float | None = None, h_freq: float | None = None) -> None:
        super().__init__(half_life=half_life, rate=rate, estimator=estimator, sfreq=sfreq,
                         l_freq=l_freq, h_freq=h_freq)

    def _mean(self, covs: np.ndarray) -> np.ndarray:
        return covs.mean(axis=0)

    def _step(self, reference: np.ndarray, sq: np.ndarray, wh: np.ndarray, c: np.ndarray,
              s: float) -> np.ndarray:
        return (1.0 - s) * reference + s * c


@register_strategy
class TangentSpaceRecentering(Strategy):
    """Unsupervised re-centring of a tangent-space decoder in the covariance domain.

    The same idea as :class:`RiemannianRecentering` (Zanini et al. 2018), applied
    where the decoder estimates its covariances: each new trial moves the
    decoder's tangent-space reference (per band) a geodesic step of the
    half-life rate towards the trial's covariance
    (:meth:`~bci_runtime.decoders.riemann.TangentSpaceLR.update_reference`).
    The decoder's shrunk covariance estimate is then re-centred exactly as at
    calibration, which whitening the epochs in front of a shrinkage estimator
    (``"recenter"``) only approximates.

    Parameters
    ----------
    half_life : float
        Trials after which a trial's weight in the reference has halved.
    rate : float in [0, 1], optional
        Overrides ``half_life``.
    """

    name = "ts-recenter"
    stage = "head"
    supervised = False

    def applies_to(self, decoder: Any) -> str | None:
        return (None if hasattr(decoder, "update_reference")
                else "needs a tangent-space decoder (update_reference)")

    def fit(self, X: np.ndarray, y: np.ndarray, decoder: Any = None) -> TangentSpaceRecentering:
        reason = self.applies_to(decoder)
        if reason is not None:
            raise DecoderError(f"ts-recenter cannot adapt {type(decoder).__name__}: {reason}",
                               hint="use 'recenter' (signal stage) in front of other decoders")
        self.rate_  # noqa: B018 -- a bad rate or half-life fails at fit, not online
        self.fitted_ = True
        return self

    def update(self, X: np.ndarray, y: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, decoder: Any = None,
               correct: np.ndarray | None = None) -> None:
        if not hasattr(self, "fitted_"):
            raise NotFittedError("ts-recenter: update before fit")
        weights = self._weights(len(X), sample_weight)
        decoder.update_reference(X, sample_weight=weights, rate=self.rate_)
