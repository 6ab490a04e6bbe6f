"""Continuous decoders: kinematics (cursor velocity) from feature windows.

Both take ``X`` of shape ``(n_samples, n_features)`` (band power or binned spike
counts, one row per bin) and decode ``Y`` of shape ``(n_samples, n_outputs)``:

:class:`RidgeDecoder`
    Ridge regression, kept as exponentially weighted sufficient statistics so
    that :meth:`RidgeDecoder.partial_fit` (supervised, e.g. with the intended
    velocity from the task) forgets old samples with a half-life.
:class:`KalmanDecoder`
    A velocity Kalman filter (Wu et al. 2006; Gilja et al. 2012): the state is
    the velocity, the features are a linear function of it plus Gaussian noise.
    :meth:`KalmanDecoder.step` is the causal streaming hot path;
    closed-loop decoder adaptation (:mod:`bci_runtime.decoders.clda`) replaces
    its observation model through :meth:`KalmanDecoder.set_model`.

Validation happens before any state changes: a bad call raises
:class:`~bci_runtime.errors.DecoderError` (or
:class:`~bci_runtime.errors.NotFittedError`) and the model keeps predicting
exactly as before.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.signal import lfilter
from sklearn.base import BaseEstimator, RegressorMixin

from bci_runtime.decoders.base import check_features, check_rate, rate_from_half_life
from bci_runtime.errors import DecoderError, NotFittedError

__all__ = ["KalmanDecoder", "RidgeDecoder", "check_targets", "check_weights",
           "fit_dynamics", "forgetting_weights", "observation_from_stats", "shrunk_covariance",
           "single_threaded_blas"]


_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict[str, Any] = {"controller": None, "limit": None, "depth": 0}


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run small linear algebra on one BLAS thread (re-entrant).

    The matrices of a Kalman update are small: waking OpenBLAS's other threads
    costs more than it saves, and on a loaded machine a thread that is not
    scheduled stalls a 2 x 2 solve for milliseconds. BLAS thread counts are
    process-wide, so nested and concurrent uses share one limit, lifted when
    the last one leaves.
    """
    with _BLAS_LOCK:
        state = _BLAS_STATE
        if state["depth"] == 0:
            if state["controller"] is None:
                from threadpoolctl import ThreadpoolController

                state["controller"] = ThreadpoolController()
            state["limit"] = state["controller"].limit(limits=1, user_api="blas")
        state["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            state["depth"] -= 1
            if state["depth"] == 0:
                state["limit"].restore_original_limits()
                state["limit"] = None


def check_targets(Y: Any, n: int, *, n_outputs: int | None = None,
                  who: str = "decoder") -> np.ndarray:
    """Validate kinematics: finite float64, shape ``(n, n_outputs)`` (a 1-D ``Y`` is one output).

    Parameters
    ----------
    Y : array-like, shape (n,) or (n, n_outputs)
    n : int
        Rows of the features they belong to.
    n_outputs : int, optional
        What the fitted model decodes.
    who : str
        Named in the error message.

    Returns
    -------
    ndarray of float64, shape (n, n_outputs)
    """
    arr = np.asarray(Y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DecoderError(f"{who}: need one row of kinematics per feature row ({n}), got an "
                           f"array of shape {np.shape(Y)}", hint="Y is (n_samples, n_outputs)")
    if n_outputs is not None and arr.shape[1] != n_outputs:
        raise DecoderError(f"{who}: fitted on {n_outputs} outputs, got {arr.shape[1]}",
                           hint="give the same kinematic variables as at calibration")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise DecoderError(f"{who}: {rows.size} of {n} kinematics rows hold NaN or Inf "
                           f"(first: {rows[0]})",
                           hint="give a weight of 0 to unlabelled samples instead; the model "
                           "was not changed")
    return arr


def check_weights(sample_weight: Any, n: int, *, who: str = "decoder") -> np.ndarray:
    """Per-sample weights: finite, >= 0, shape ``(n,)``; ``None`` gives ones."""
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise DecoderError(f"{who}: {n} samples but {w.shape[0]} sample weights")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise DecoderError(f"{who}: sample weights must be finite and >= 0",
                           hint="0 skips a sample, 1 is a full update")
    return w


def forgetting_weights(n: int, rate: float, sample_weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights of ``n`` new samples under per-sample exponential forgetting.

    Sample ``j`` of the batch (0-based) is followed by ``n - 1 - j`` newer ones, so
    it keeps ``(1 - rate) ** (n - 1 - j)`` of its weight; what was there before the
    batch keeps ``(1 - rate) ** n``.

    Returns
    -------
    weights : ndarray, shape (n,)
        ``sample_weight`` times the decay of each new sample.
    old : float
        Factor on the statistics accumulated before.
    """
    keep = 1.0 - rate
    if keep == 1.0:
        return sample_weight, 1.0
    if keep == 0.0:
        w = np.zeros(n)
        w[-1] = sample_weight[-1]
        return w, 0.0
    # keep ** (n-1-j), computed in log space so long batches do not underflow to garbage
    decay = np.exp(np.log(keep) * np.arange(n - 1, -1, -1, dtype=np.float64))
    return sample_weight * decay, keep ** n


def observation_from_stats(R: np.ndarray, S: np.ndarray, T: np.ndarray, n: float,
                           shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares observation model ``x = C v + d + q`` from sufficient statistics.

    With ``z = [v, 1]`` the augmented kinematics, the statistics are weighted
    sums over samples; the fit is ``[C, d] = S R^-1`` and the residual
    covariance ``Q = (T - S R^-1 S') / n``.

    Parameters
    ----------
    R : ndarray, shape (n_outputs + 1, n_outputs + 1)
        ``sum w z z'``.
    S : ndarray, shape (n_features, n_outputs + 1)
        ``sum w x z'``.
    T : ndarray, shape (n_features, n_features)
        ``sum w x x'``.
    n : float
        ``sum w`` (effective number of samples), > 0.
    shrinkage : float
        Pulls ``Q`` toward its diagonal: ``(1 - s) Q + s diag(Q)``; it keeps a
        covariance estimated from few samples invertible.

    Returns
    -------
    C : ndarray, shape (n_features, n_outputs)
    d : ndarray, shape (n_features,)
    Q : ndarray, shape (n_features, n_features)
        Symmetric positive definite (a small floor on the diagonal keeps a flat
        channel from making it singular).
    """
    if not n > 0:
        raise DecoderError("no weighted samples to fit the observation model on",
                           hint="feed samples with a weight > 0")
    try:  # R is small and positive definite when the kinematics varied
        G = sla.cho_solve(sla.cho_factor(R, check_finite=False), S.T, check_finite=False)
    except np.linalg.LinAlgError:
        # pinv: a batch whose intended velocity never varied (all zero) leaves C at 0, not NaN
        G = np.linalg.pinv(R, hermitian=True) @ S.T  # (n_outputs + 1, n_features): [C, d]'
    # T - S R^-1 S' in place, in as few passes over the n x n matrix as possible: this runs
    # on every RML update. Both terms are symmetric (up to rounding, which the Cholesky
    # factorization ignores: it reads one triangle), so Q is not symmetrized again.
    Q = S @ G
    np.subtract(T, Q, out=Q)
    diag = np.clip(np.diagonal(Q) / n, 0.0, None)  # a copy
    Q *= (1.0 - shrinkage) / n
    Q.flat[:: Q.shape[0] + 1] = diag + 1e-6 * max(float(diag.mean()), 1e-12)
    return G[:-1].T.copy(), G[-1].copy(), Q


def shrunk_covariance(cov: np.ndarray, shrinkage: float = 0.0, *,
                      inplace: bool = False) -> np.ndarray:
    """``(1 - s) cov + s diag(cov)``, symmetric, with a small floor on the diagonal.

    Parameters
    ----------
    cov : ndarray, shape (n, n)
    shrinkage : float
        ``s`` in [0, 1].
    inplace : bool
        Overwrite ``cov`` (a temporary) instead of copying it.

    Returns
    -------
    ndarray, shape (n, n)
        Positive definite even when a channel is flat (its variance is 0).
    """
    Q = cov if inplace else cov.copy()
    Q += Q.T  # numpy buffers the overlapping transpose
    diag = np.clip(np.diagonal(Q) * 0.5, 0.0, None)  # a copy
    Q *= 0.5 * (1.0 - shrinkage)
    floor = 1e-6 * max(float(diag.mean()), 1e-12)
    Q.flat[:: Q.shape[0] + 1] = diag + floor
    return Q


# -- ridge ----------------------------------------------------------------------------------------
class RidgeDecoder(RegressorMixin, BaseEstimator):
    """Ridge regression from features to kinematics, with a forgetting ``partial_fit``.

    The model is kept as sufficient statistics of the augmented features
    ``[x, 1]``; the intercept is not penalized, so :meth:`fit` gives the same
    coefficients as :class:`sklearn.linear_model.Ridge`. :meth:`partial_fit`
    discounts the statistics by ``(1 - rate)`` per new sample before adding it:
    a sample's weight halves after ``half_life`` newer samples.

    Parameters
    ----------
    alpha : float
        L2 penalty on the coefficients (on sums of squares, as scikit-learn).
    half_life : float
        Samples (bins) after which a sample's weight in :meth:`partial_fit`
        halves; ``inf`` never forgets (recursive least squares). At 20 bins/s,
        1200 is one minute.
    rate : float, optional
        The per-sample forgetting rate in [0, 1] directly; overrides ``half_life``.

    Attributes
    ----------
    coef_ : ndarray, shape (n_outputs, n_features)
    intercept_ : ndarray, shape (n_outputs,)
    n_features_in_ : int
    n_outputs_ : int
    n_samples_seen_ : float
        Effective (discounted, weighted) number of samples in the statistics.
    """

    def __init__(self, alpha: float = 1.0, half_life: float = math.inf,
                 rate: float | None = None) -> None:
        self.alpha = alpha
        self.half_life = half_life
        self.rate = rate

    def _rate(self) -> float:
        if self.rate is not None:
            return check_rate(self.rate, "RidgeDecoder rate")
        return rate_from_half_life(self.half_life)

    def _alpha(self) -> float:
        alpha = float(self.alpha)
        if not alpha >= 0:
            raise DecoderError(f"RidgeDecoder: alpha must be >= 0, got {self.alpha}")
        return alpha

    def fit(self, X: Any, Y: Any, sample_weight: Any = None) -> RidgeDecoder:
        """Fit on calibration data (forgets any earlier fit).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        Y : array-like, shape (n_samples, n_outputs) or (n_samples,)
        sample_weight : array-like, shape (n_samples,), optional
        """
        X = check_features(X, who="RidgeDecoder")
        Yc = check_targets(Y, X.shape[0], who="RidgeDecoder")
        w = check_weights(sample_weight, X.shape[0], who="RidgeDecoder")
        alpha = self._alpha()
        Xa = np.c_[X, np.ones(X.shape[0])]
        xx, xy, n = (Xa * w[:, None]).T @ Xa, (Xa * w[:, None]).T @ Yc, float(w.sum())
        coef, intercept = self._solve(xx, xy, alpha)
        self._xx, self._xy, self.n_samples_seen_ = xx, xy, n
        self.coef_, self.intercept_ = coef, intercept
        self.n_features_in_, self.n_outputs_ = X.shape[1], Yc.shape[1]
        self._y_1d = np.ndim(Y) == 1
        return self

    def partial_fit(self, X: Any, Y: Any, sample_weight: Any = None) -> RidgeDecoder:
        """Forget a little, learn the new samples (exponentially weighted least squares).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        Y : array-like, shape (n_samples, n_outputs)
            E.g. the velocity the user intended
            (:func:`~bci_runtime.decoders.clda.refit_intention`).
        sample_weight : array-like, shape (n_samples,), optional
            0 skips a sample (it does not age the others either), 1 is a full update.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        DecoderError
            Other feature or output counts, NaN/Inf, a rate outside [0, 1];
            the model is unchanged.
        """
        self._require_fitted("partial_fit")
        X = check_features(X, n_features=self.n_features_in_, who="RidgeDecoder")
        Yc = check_targets(Y, X.shape[0], n_outputs=self.n_outputs_, who="RidgeDecoder")
        w = check_weights(sample_weight, X.shape[0], who="RidgeDecoder")
        rate, alpha = self._rate(), self._alpha()
        keep = w > 0  # a skipped sample does not age the statistics
        X, Yc, w = X[keep], Yc[keep], w[keep]
        if X.shape[0] == 0:
            return self
        weights, old = forgetting_weights(X.shape[0], rate, w)
        Xa = np.c_[X, np.ones(X.shape[0])]
        Xw = Xa * weights[:, None]
        xx = old * self._xx + Xw.T @ Xa
        xy = old * self._xy + Xw.T @ Yc
        coef, intercept = self._solve(xx, xy, alpha)
        # everything computed: commit at once
        self._xx, self._xy = xx, xy
        self.n_samples_seen_ = old * self.n_samples_seen_ + float(weights.sum())
        self.coef_, self.intercept_ = coef, intercept
        return self

    @staticmethod
    def _solve(xx: np.ndarray, xy: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        penalty = np.full(xx.shape[0], alpha)
        penalty[-1] = 0.0  # the intercept is not shrunk
        a = xx + np.diag(penalty)
        with single_threaded_blas():
            try:
                b = sla.solve(a, xy, assume_a="pos", check_finite=False)
            except (np.linalg.LinAlgError, ValueError):
                b = np.linalg.lstsq(a, xy, rcond=None)[0]  # alpha = 0, collinear features
        return b[:-1].T.copy(), b[-1].copy()

    def predict(self, X: Any) -> np.ndarray:
        """Decoded kinematics.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples, n_outputs) (``(n_samples,)`` if fitted on a 1-D ``Y``)
        """
        self._require_fitted("predict")
        X = check_features(X, n_features=self.n_features_in_, who="RidgeDecoder")
        out = X @ self.coef_.T + self.intercept_
        return out[:, 0] if self._y_1d else out

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"RidgeDecoder: {what} before fit",
                                 hint="fit it on calibration data (features and kinematics) "
                                 "first")


# -- Kalman filter --------------------------------------------------------------------------------
class KalmanDecoder(BaseEstimator):
    """Velocity Kalman filter (Wu et al. 2006, Gilja et al. 2012).

    State ``v_t`` (the velocity, ``n_outputs`` values) and model::

        v_t = A v_{t-1} + w_t,        w_t ~ N(0, W)
        x_t = C v_t + d + q_t,        q_t ~ N(0, Q)

    The offset ``d`` plays the constant ``1`` of the state ``[v, 1]`` of Wu and
    Gilja, known exactly (no process noise), which keeps it out of the Riccati
    equation. Position is not a state: as in Gilja's ReFIT-KF, the user sees
    the cursor, so its position is known exactly and adds nothing to the
    velocity estimate (its columns of ``C`` would be zero); the display
    integrates the decoded velocity.

    ``A`` and ``W`` are least-squares fits of the kinematics on themselves, ``C``,
    ``d`` and ``Q`` of the features on the kinematics. The filter runs in
    information form: ``C' Q^-1`` (``n_outputs x n_features``) is computed once
    per model, so a step costs one small matrix-vector product whatever the
    number of features.

    Parameters
    ----------
    steady_state : bool
        Use the steady-state gain, the solution of the discrete algebraic
        Riccati equation (:func:`scipy.linalg.solve_discrete_are`), from the
        first step on (Malik et al. 2011; Dangi et al. 2014). Otherwise the
        gain follows the covariance from a known rest state; both converge to
        the same filter within a second or so.
    shrinkage : float
        In [0, 1]: pulls ``Q`` toward its diagonal when fitting it, so that a
        covariance estimated from few samples (an adaptation batch) stays
        invertible.

    Attributes
    ----------
    A_ : ndarray, shape (n_outputs, n_outputs)
    W_ : ndarray, shape (n_outputs, n_outputs)
    C_ : ndarray, shape (n_features, n_outputs)
    d_ : ndarray, shape (n_features,)
    Q_ : ndarray, shape (n_features, n_features)
    K_ : ndarray, shape (n_outputs, n_features)
        Steady-state Kalman gain.
    P_ : ndarray, shape (n_outputs, n_outputs)
        Steady-state covariance of the prediction (before the update).
    n_features_in_, n_outputs_ : int
    """

    def __init__(self, steady_state: bool = True, shrinkage: float = 0.0) -> None:
        self.steady_state = steady_state
        self.shrinkage = shrinkage

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any) -> KalmanDecoder:
        """Fit dynamics and observation model on calibration data (one continuous recording).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Features, one row per bin.
        Y : array-like, shape (n_samples, n_outputs)
            Velocity at each bin (what the user intended or the cursor did).
        """
        X = check_features(X, who="KalmanDecoder")
        Y = check_targets(Y, X.shape[0], who="KalmanDecoder")
        if X.shape[0] < Y.shape[1] + 2:
            raise DecoderError(f"KalmanDecoder: {X.shape[0]} samples are too few to fit",
                               hint="calibrate on at least a few seconds of data")
        A, W = fit_dynamics(Y)
        Z = np.c_[Y, np.ones(X.shape[0])]
        C, d, Q = observation_from_stats(Z.T @ Z, X.T @ Z, X.T @ X, float(X.shape[0]),
                                         self._shrinkage())
        return self._install({"A": A, "W": W, "C": C, "d": d, "Q": Q}, new=True)

    def set_model(self, *, A: Any = None, W: Any = None, C: Any = None, d: Any = None,
                  Q: Any = None) -> KalmanDecoder:
        """Replace some of the model's matrices, and recompute the gains.

        What is not given is kept (all are needed the first time). Everything is
        validated and computed before anything is replaced: on error the model
        and the streaming state are unchanged. The streaming state (the current
        velocity) is kept, so adaptation does not jolt the cursor.

        Parameters
        ----------
        A, W : array-like, shape (n_outputs, n_outputs)
        C : array-like, shape (n_features, n_outputs)
        d : array-like, shape (n_features,)
        Q : array-like, shape (n_features, n_features)
            Symmetric positive definite.

        Raises
        ------
        DecoderError
            Wrong shapes, NaN/Inf, ``Q`` or ``W`` not positive definite, or a
            model whose Riccati equation has no stabilizing solution.
        """
        return self._install({"A": A, "W": W, "C": C, "d": d, "Q": Q}, new=False)

    def _set_observation(self, C: np.ndarray, d: np.ndarray, Q: np.ndarray) -> None:
        """:meth:`set_model` for CLDA strategies: the matrices are theirs to give away.

        ``C`` (n_features, n_outputs), ``d`` (n_features,) and ``Q`` (symmetric) come
        from validated data through :func:`observation_from_stats`, in the fitted
        shapes; they are not copied nor checked again (the gains still are), which
        saves a few passes over ``Q`` per update.
        """
        if (C.shape != self.C_.shape or d.shape != self.d_.shape
                or Q.shape != self.Q_.shape):
            raise DecoderError("KalmanDecoder: observation model of the wrong shape",
                               hint="fit the strategy on this decoder")
        with single_threaded_blas():
            gains = _gains(self.A_, self.W_, C, d, Q, check_w=False)  # W checked at install
        self.C_, self.d_, self.Q_ = C, d, Q
        (self.P_, self.K_, self._F, self._Kd, self._CtQi, self._M) = gains

    def _install(self, given: dict[str, Any], new: bool) -> KalmanDecoder:
        """Validate, compute the gains, then commit; ``new`` accepts other shapes (a refit)."""
        fitted = hasattr(self, "K_") and not new
        if not fitted and any(v is None for v in given.values()):
            missing = [k for k, v in given.items() if v is None]
            raise NotFittedError(f"KalmanDecoder: set_model needs {missing} the first time",
                                 hint="fit it, or give every matrix")
        cur = {"A": getattr(self, "A_", None), "W": getattr(self, "W_", None),
               "C": getattr(self, "C_", None), "d": getattr(self, "d_", None),
               "Q": getattr(self, "Q_", None)}
        m = {k: (np.array(v, dtype=np.float64) if v is not None else cur[k])
             for k, v in given.items()}
        C = m["C"]
        if C.ndim != 2:
            raise DecoderError(f"KalmanDecoder: C must be (n_features, n_outputs), got shape "
                               f"{C.shape}")
        n_features, n_outputs = C.shape
        if fitted and (n_features, n_outputs) != (self.n_features_in_, self.n_outputs_):
            raise DecoderError(f"KalmanDecoder: the model decodes {self.n_outputs_} outputs "
                               f"from {self.n_features_in_} features; C has shape {C.shape}",
                               hint="fit a new decoder for other features")
        shapes = {"A": (n_outputs, n_outputs), "W": (n_outputs, n_outputs),
                  "d": (n_features,), "Q": (n_features, n_features)}
        for k, shape in shapes.items():
            if m[k].shape != shape:
                raise DecoderError(f"KalmanDecoder: {k} must have shape {shape}, got "
                                   f"{m[k].shape}")
        for k, v in m.items():
            if not np.isfinite(v).all():
                raise DecoderError(f"KalmanDecoder: {k} holds NaN or Inf",
                                   hint="the model was not changed")
        W, Q = 0.5 * (m["W"] + m["W"].T), m["Q"]
        if given["Q"] is not None:  # a kept Q is symmetric already
            Q += Q.T
            Q *= 0.5
        with single_threaded_blas():
            gains = _gains(m["A"], W, C, m["d"], Q)
        # commit
        self.A_, self.W_, self.C_, self.d_, self.Q_ = m["A"], W, C, m["d"], Q
        (self.P_, self.K_, self._F, self._Kd, self._CtQi, self._M) = gains
        self.n_features_in_, self.n_outputs_ = n_features, n_outputs
        if not fitted:
            self.reset()
        return self

    def _shrinkage(self) -> float:
        return check_rate(self.shrinkage, "KalmanDecoder shrinkage")

    # -- decoding -------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to rest: velocity 0, known exactly (before the first step of a run)."""
        self._require_fitted("reset")
        self._v = np.zeros(self.n_outputs_)
        self._P = np.zeros((self.n_outputs_, self.n_outputs_))  # posterior covariance

    def continue_from(self, other: KalmanDecoder) -> None:
        """Take over ``other``'s streaming state (its velocity and covariance).

        What a model update needs on the hot path: a new version, fitted off it,
        goes on filtering from where the serving one is, so the cursor does not
        jolt and nothing is recomputed.

        Raises
        ------
        DecoderError
            When the two decode different numbers of outputs.
        """
        self._require_fitted("continue_from")
        other._require_fitted("continue_from")
        if other.n_outputs_ != self.n_outputs_:
            raise DecoderError(f"KalmanDecoder: cannot continue from a filter of "
                               f"{other.n_outputs_} outputs, this one has {self.n_outputs_}")
        self._v = other._v.copy()
        self._P = other._P.copy()

    @property
    def velocity_(self) -> np.ndarray:
        """The current decoded velocity of the streaming filter, shape (n_outputs,)."""
        self._require_fitted("velocity_")
        return self._v.copy()

    def step(self, x: Any) -> np.ndarray:
        """Decode one bin, causally, keeping the state: the hot path.

        Parameters
        ----------
        x : array-like, shape (n_features,) or (1, n_features)

        Returns
        -------
        ndarray, shape (n_outputs,)
            The decoded velocity (a new array).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        DecoderError
            Wrong feature count or NaN/Inf; the state is unchanged.
        """
        if not hasattr(self, "K_"):
            self._require_fitted("step")
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n_features_in_,):
            if x.shape == (1, self.n_features_in_):
                x = x[0]
            else:
                raise DecoderError(f"KalmanDecoder: step takes one bin of "
                                   f"{self.n_features_in_} features, got shape {x.shape}",
                                   hint="compute the same features as at calibration")
        if not np.isfinite(x).all():
            raise DecoderError("KalmanDecoder: the bin holds NaN or Inf",
                               hint="drop or repair it (a disconnected channel?); the filter "
                               "state was not changed")
        if self.steady_state:
            v = self._F @ self._v + (self.K_ @ x - self._Kd)
        else:
            # information form: P+ = (P-^-1 + C'Q^-1C)^-1, v+ = v- + P+ (C'Q^-1 (x - d) - M v-)
            A = self.A_
            prior = A @ self._P @ A.T + self.W_
            post = np.linalg.solve(np.eye(self.n_outputs_) + prior @ self._M, prior)
            v_prior = A @ self._v
            v = v_prior + post @ (self._CtQi @ (x - self.d_) - self._M @ v_prior)
            self._P = post
        self._v = v
        return v.copy()

    def predict(self, X: Any) -> np.ndarray:
        """Filter a whole sequence, from rest; the streaming state is not touched.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Consecutive bins.

        Returns
        -------
        ndarray, shape (n_samples, n_outputs)
            Decoded velocity at each bin.
        """
        self._require_fitted("predict")
        X = check_features(X, n_features=self.n_features_in_, who="KalmanDecoder")
        k = self.n_outputs_
        v0 = np.zeros(k)
        out = np.empty((X.shape[0], k))
        start = 0
        if not self.steady_state:
            # the time-varying gain does not depend on the data: run it until it settles
            # (a few dozen bins), then the filter is the steady one
            P, A, W, M = np.zeros((k, k)), self.A_, self.W_, self._M
            while start < X.shape[0]:
                prior = A @ P @ A.T + W
                post = np.linalg.solve(np.eye(k) + prior @ M, prior)
                v_prior = A @ v0
                v0 = v_prior + post @ (self._CtQi @ (X[start] - self.d_) - M @ v_prior)
                out[start] = v0
                start += 1
                settled = np.abs(post - P).max() <= 1e-12 * max(np.abs(post).max(), 1e-300)
                P = post
                if settled:
                    break
        if start < X.shape[0]:
            out[start:] = _linear_recursion(self._F, X[start:] @ self.K_.T - self._Kd, v0)
        return out

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "K_"):
            raise NotFittedError(f"KalmanDecoder: {what} before fit",
                                 hint="fit it on calibration data (features and velocity), or "
                                 "give its matrices with set_model")


def fit_dynamics(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``v_t = A v_{t-1} + w_t`` from consecutive kinematics.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_outputs)

    Returns
    -------
    A : ndarray, shape (n_outputs, n_outputs)
    W : ndarray, shape (n_outputs, n_outputs)
        Covariance of the residuals, with a small floor so it stays positive definite.
    """
    prev, nxt = Y[:-1], Y[1:]
    At, *_ = np.linalg.lstsq(prev, nxt, rcond=None)
    resid = nxt - prev @ At
    W = resid.T @ resid / max(1, resid.shape[0])
    W += np.eye(W.shape[0]) * (1e-9 * max(float(np.trace(W)), 1e-12))
    return At.T.copy(), W


def _gains(A: np.ndarray, W: np.ndarray, C: np.ndarray, d: np.ndarray,
           Q: np.ndarray, check_w: bool = True) -> tuple[np.ndarray, ...]:
    """Information-form quantities and the steady-state gain of a model.

    Returns
    -------
    P : (k, k) steady prior covariance; K : (k, n) gain; F : (k, k) ``(I - K C) A``;
    Kd : (k,) ``K d``; CtQi : (k, n) ``C' Q^-1``; M : (k, k) ``C' Q^-1 C``.
    """
    k = A.shape[0]
    try:
        factor = sla.cho_factor(Q, lower=True, check_finite=False)
    except np.linalg.LinAlgError as exc:
        raise DecoderError("KalmanDecoder: Q is not positive definite",
                           hint="fit Q with shrinkage > 0, or drop constant features") from exc
    if check_w and np.any(np.linalg.eigvalsh(W) <= 0):
        raise DecoderError("KalmanDecoder: W is not positive definite",
                           hint="the kinematics must vary during calibration")
    CtQi = sla.cho_solve(factor, C, check_finite=False).T  # (k, n)
    M = CtQi @ C
    M = 0.5 * (M + M.T)
    # the n observations act on the state only through M = L L': a k-dimensional
    # observation with identity noise, so the Riccati equation is k x k whatever n is
    lam, U = np.linalg.eigh(M)
    L = U * np.sqrt(np.clip(lam, 0.0, None))
    P = post = None
    for balanced in (False, True):  # balancing costs a third more; needed when badly scaled
        try:
            P = sla.solve_discrete_are(A.T, L, W, np.eye(k), balanced=balanced)
        except (np.linalg.LinAlgError, ValueError) as exc:
            if balanced:
                raise DecoderError("KalmanDecoder: the Riccati equation has no stabilizing "
                                   f"solution ({exc})", hint="check that A is stable "
                                   "(|eigenvalues| < 1) or that the features observe the "
                                   "velocity") from exc
            continue
        P = 0.5 * (P + P.T)
        post = np.linalg.solve(np.eye(k) + P @ M, P)  # (P^-1 + M)^-1 without inverting P
        post = 0.5 * (post + post.T)
        # check the solution: P = A P+ A' + W
        residual = np.abs(A @ post @ A.T + W - P).max()
        if np.isfinite(residual) and residual <= 1e-9 * max(np.abs(P).max(), 1e-300):
            break
    K = post @ CtQi
    F = A - post @ M @ A
    if not (np.isfinite(K).all() and np.isfinite(F).all()):
        raise DecoderError("KalmanDecoder: the model gives a non-finite gain",
                           hint="the model was not changed; check the data it was fitted on")
    return P, K, F, K @ d, CtQi, M


def _linear_recursion(F: np.ndarray, U: np.ndarray, v0: np.ndarray) -> np.ndarray:
    """``v_t = F v_{t-1} + u_t`` for all ``t``, from ``v_{-1} = v0``, without a Python loop.

    In the eigenbasis of ``F`` the recursion decouples into first-order IIR
    filters, which :func:`scipy.signal.lfilter` runs in C.

    Parameters
    ----------
    F : ndarray, shape (k, k)
    U : ndarray, shape (n, k)
    v0 : ndarray, shape (k,)

    Returns
    -------
    ndarray, shape (n, k)
    """
    lam, V = np.linalg.eig(F)
    if np.linalg.cond(V) > 1e8:  # defective F (repeated eigenvalue): plain recursion
        out = np.empty_like(U)
        v = v0
        for t in range(U.shape[0]):
            v = F @ v + U[t]
            out[t] = v
        return out
    Vi = np.linalg.inv(V)
    Z = U @ Vi.T
    z0 = Vi @ v0
    for j in range(F.shape[0]):
        Z[:, j] = lfilter([1.0], [1.0, -lam[j]], Z[:, j], zi=[lam[j] * z0[j]])[0]
    return np.real(Z @ V.T)
