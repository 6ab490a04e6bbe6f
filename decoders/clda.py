"""Closed-loop decoder adaptation (CLDA) for continuous decoders.

While the user controls a cursor with a decoder, the decoder is refitted on
what the user *intended*, as far as the task tells:

Intention estimation
    :func:`refit_intention` (ReFIT, Gilja et al. 2012): the decoded velocity
    rotated toward the target, its speed kept, zero while the cursor is on the
    target. :func:`retrospective_targets`: when the decoder does not know the
    target (a self-paced task), the place where a reach ended with an
    acquisition labels the whole reach, after the fact.

Strategies (the same spirit as :mod:`bci_runtime.decoders.adaptation`)
    Each has a ``half_life``: seconds of data (with ``dt`` seconds per sample;
    ``dt=1`` counts samples, i.e. updates) after which an observation's weight in
    the decoder has halved. ``rate`` gives the per-update rate in [0, 1] directly.

    :class:`SmoothBatch` (Orsborn et al. 2012)
        Refits ``C``, ``d`` and ``Q`` of a :class:`~bci_runtime.decoders.continuous.KalmanDecoder`
        on each batch of ``batch_s`` seconds and blends them with the current ones,
        ``theta <- (1 - r) theta + r theta_batch`` with ``r = 1 - 0.5 ** (batch_s / half_life)``.
    :class:`RML` (Dangi et al. 2014)
        Recursive maximum likelihood: sufficient statistics of the observation
        model, forgotten exponentially per sample, and ``C``, ``d``, ``Q`` re-solved
        from them after every update (every ``update_every`` samples).
    :class:`RidgePartialFit`
        Supervised :meth:`~bci_runtime.decoders.continuous.RidgeDecoder.partial_fit`
        with the intended velocity.

A strategy's :meth:`CLDAStrategy.update` validates everything before it
changes anything; on error the decoder keeps decoding exactly as before.
:func:`random_kalman_seed` builds a decoder that knows nothing of the user's
tuning, the hardest starting point for CLDA (Orsborn et al. 2012 started
SmoothBatch from seeds of several qualities, poor ones included).

In the runtime an update runs on a copy of the decoder in the background
worker, swapped in between two chunks; on the simulated clock
(:mod:`bci_runtime.decoders.cursor_loop`) it runs inline, deterministically.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.linalg as sla
from sklearn.base import BaseEstimator

from bci_runtime.decoders.base import check_features, check_rate, rate_from_half_life
from bci_runtime.decoders.continuous import (
    KalmanDecoder,
    check_targets,
    check_weights,
    forgetting_weights,
    observation_from_stats,
    shrunk_covariance,
    single_threaded_blas,
)
from bci_runtime.errors import DecoderError, NotFittedError

__all__ = ["CLDAStrategy", "RML", "RidgePartialFit", "SmoothBatch", "random_kalman_seed",
           "refit_intention", "retrospective_targets"]


# -- intention estimation -------------------------------------------------------------------------
def refit_intention(decoded: Any, cursor: Any, target: Any, *, target_radius: float = 0.0,
                    speed: float | None = None) -> np.ndarray:
    """The velocity the user intended, by ReFIT's rules (Gilja et al. 2012).

    The user wanted to go straight to the target: the decoded velocity is
    rotated to point at it (its speed kept, or ``speed``), and set to zero while
    the cursor is on the target (the user wants it to stay there).

    Parameters
    ----------
    decoded : array-like, shape (n, 2)
        Decoded velocity at each bin.
    cursor : array-like, shape (n, 2)
        Cursor position from which that velocity moved the cursor.
    target : array-like, shape (n, 2)
        Target shown at that time; rows holding NaN (no target known) give NaN.
    target_radius : float
        Within this distance of the target the intention is zero.
    speed : float, optional
        Intended speed instead of the decoded speed.

    Returns
    -------
    ndarray, shape (n, 2)

    Notes
    -----
    Keeping the decoded speed makes repeated refits (SmoothBatch, RML) drift
    slowly toward lower speeds: a Kalman filter's output is shrunk toward its
    prior, the labels inherit the shrunk speed, the refit observation model
    scales up, and so on. In the simulated cursor task the decoded speed falls
    by about a third over 13 minutes of RML and the target rate with it,
    slowly; labels at the task's nominal ``speed`` do not drift.
    """
    decoded = np.asarray(decoded, dtype=np.float64)
    to_target = np.asarray(target, dtype=np.float64) - np.asarray(cursor, dtype=np.float64)
    distance = np.hypot(to_target[:, 0], to_target[:, 1])
    norm = np.hypot(decoded[:, 0], decoded[:, 1]) if speed is None else np.full(len(decoded),
                                                                             float(speed))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(distance > target_radius, norm / np.maximum(distance, 1e-12), 0.0)
    scale[np.isnan(distance)] = np.nan
    return to_target * scale[:, None]


def retrospective_targets(cursor: Any, acquired: Any, *, positions: Any = None,
                          failed: Any = None) -> np.ndarray:
    """Infer each bin's target from where its reach ended (retrospective target inference).

    A reach runs from just after the previous acquisition (or failure) up to
    and including the next acquisition; the position the cursor acquired labels
    every bin of it. Bins of a failed reach (a timeout) and after the last
    acquisition get NaN: nothing says where the user was going.

    Parameters
    ----------
    cursor : array-like, shape (n, 2)
        Cursor position at each bin.
    acquired : array-like of int, shape (n_acquisitions,)
        Bins at which a target was acquired (a dwell completed, a selection made).
    positions : array-like, shape (n_acquisitions, 2), optional
        What was acquired (e.g. the selected key's center); default: the cursor
        position at the acquisition.
    failed : array-like of int, optional
        Bins at which a reach ended without an acquisition.

    Returns
    -------
    ndarray, shape (n, 2)
        Inferred target per bin, NaN where unknown.
    """
    cursor = np.asarray(cursor, dtype=np.float64)
    n = cursor.shape[0]
    acquired = np.asarray(acquired, dtype=np.int64).reshape(-1)
    failed = np.asarray([] if failed is None else failed, dtype=np.int64).reshape(-1)
    if acquired.size and (acquired.min() < 0 or acquired.max() >= n):
        raise DecoderError(f"acquisitions must be bins in 0..{n - 1}, got {acquired.tolist()}")
    goal = (cursor[acquired] if positions is None
            else np.asarray(positions, dtype=np.float64).reshape(acquired.size, -1))
    ends = np.concatenate([acquired, failed])
    labels = np.concatenate([goal, np.full((failed.size, goal.shape[1]), np.nan)])
    order = np.argsort(ends, kind="stable")
    ends, labels = ends[order], labels[order]
    out = np.full((n, goal.shape[1]), np.nan)
    if ends.size:
        # the reach a bin belongs to is the first end at or after it
        which = np.searchsorted(ends, np.arange(n), side="left")
        inside = which < ends.size
        out[inside] = labels[which[inside]]
    return out


# -- strategies -----------------------------------------------------------------------------------
class CLDAStrategy(BaseEstimator):
    """Base class of closed-loop adaptation strategies for continuous decoders.

    Parameters
    ----------
    half_life : float
        Seconds after which an observation's weight halves.
    dt : float
        Seconds per sample (bin); ``dt=1`` makes ``half_life`` count samples.
    rate : float, optional
        Per-update rate in [0, 1] (per sample or per batch, see the subclass);
        overrides ``half_life``.
    """

    name: ClassVar[str] = ""

    def __init__(self, half_life: float = 60.0, dt: float = 0.05,
                 rate: float | None = None) -> None:
        self.half_life = half_life
        self.dt = dt
        self.rate = rate

    def _dt(self) -> float:
        dt = float(self.dt)
        if not dt > 0:
            raise DecoderError(f"{type(self).__name__}: dt must be > 0 s per sample, got "
                               f"{self.dt}")
        return dt

    @property
    def rate_(self) -> float:
        """Per-sample rate: the weight of a sample halves after ``half_life`` seconds."""
        if self.rate is not None:
            return check_rate(self.rate, f"{type(self).__name__} rate")
        return rate_from_half_life(self.half_life / self._dt())

    def fit(self, decoder: Any) -> CLDAStrategy:
        """Start adapting ``decoder`` (fitted) from its current parameters."""
        raise NotImplementedError

    def update(self, X: Any, V: Any, decoder: Any, sample_weight: Any = None) -> bool:
        """Learn from bins that were decoded, labelled with the intended velocity.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Features of consecutive bins.
        V : array-like, shape (n_samples, n_outputs)
            Intended velocity at each bin (:func:`refit_intention`).
        decoder : estimator
            The decoder given to :meth:`fit` (or its copy), changed in place.
        sample_weight : array-like, shape (n_samples,), optional
            0 skips a bin (e.g. one without a known target).

        Returns
        -------
        bool
            Whether the decoder's parameters changed.
        """
        raise NotImplementedError

    def _checked(self, X: Any, V: Any, decoder: Any,
                 sample_weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        who = type(self).__name__
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{who}: update before fit",
                                 hint="call fit(decoder) with the seed decoder first")
        if getattr(decoder, "n_features_in_", None) != self.n_features_in_:
            raise DecoderError(f"{who}: fitted for a decoder of {self.n_features_in_} features, "
                               f"got one of {getattr(decoder, 'n_features_in_', None)}")
        X = check_features(X, n_features=self.n_features_in_, who=who)
        V = check_targets(V, X.shape[0], n_outputs=self.n_outputs_, who=who)
        w = check_weights(sample_weight, X.shape[0], who=who)
        return X, V, w


def _require_kalman(strategy: CLDAStrategy, decoder: Any) -> None:
    if not isinstance(decoder, KalmanDecoder):
        raise DecoderError(f"{type(strategy).__name__} adapts a KalmanDecoder, got "
                           f"{type(decoder).__name__}")
    if not hasattr(decoder, "K_"):
        raise NotFittedError(f"{type(strategy).__name__}: the decoder is not fitted",
                             hint="fit the seed decoder (or random_kalman_seed) first")


def _augmented_stats(X: np.ndarray, V: np.ndarray,
                     w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Weighted sums ``(Z'Z, X'Z, X'X, sum w)`` with ``Z = [V, 1]``."""
    Z = np.empty((V.shape[0], V.shape[1] + 1))  # np.c_ costs more than the products here
    Z[:, :-1] = V
    Z[:, -1] = 1.0
    Xw = X * w[:, None]
    return (Z * w[:, None]).T @ Z, Xw.T @ Z, Xw.T @ X, float(w.sum())


class SmoothBatch(CLDAStrategy):
    """Batch refit of the observation model, blended with the current one (Orsborn et al. 2012).

    Bins are gathered for ``batch_s`` seconds (as sufficient statistics, so the
    cost is spread over the bins); then ``C``, ``d`` and ``Q`` are fitted on the
    batch by least squares and blended::

        C <- (1 - r) C + r C_batch        (the same for d and Q)

    with ``r = 1 - 0.5 ** (batch_s / half_life)``: a batch counts half after
    ``half_life`` seconds. ``A`` and ``W`` (the cursor dynamics) are kept.

    Parameters
    ----------
    half_life : float
        Seconds after which a batch's weight halves (Orsborn et al. used
        minute-scale batches and half-lives; shorter ones converge faster from a
        poor seed).
    batch_s : float
        Seconds of data per batch.
    dt : float
        Seconds per bin.
    rate : float, optional
        Blending weight ``r`` of a new batch in [0, 1]; overrides ``half_life``.

    Attributes
    ----------
    n_batches_ : int
        Batches blended in so far.
    """

    name = "smoothbatch"

    def __init__(self, half_life: float = 60.0, batch_s: float = 20.0, dt: float = 0.05,
                 rate: float | None = None) -> None:
        super().__init__(half_life=half_life, dt=dt, rate=rate)
        self.batch_s = batch_s

    @property
    def rate_(self) -> float:
        """Blending weight of a batch."""
        if self.rate is not None:
            return check_rate(self.rate, "SmoothBatch rate")
        if not self.batch_s > 0:
            raise DecoderError(f"SmoothBatch: batch_s must be > 0 s, got {self.batch_s}")
        return rate_from_half_life(self.half_life / self.batch_s)

    def _batch_samples(self) -> int:
        return max(1, int(round(float(self.batch_s) / self._dt())))

    def fit(self, decoder: Any) -> SmoothBatch:
        _require_kalman(self, decoder)
        _ = self.rate_, self._batch_samples()  # validates half_life, rate, batch_s, dt now
        self.n_features_in_, self.n_outputs_ = decoder.n_features_in_, decoder.n_outputs_
        self.n_batches_ = 0
        self._clear()
        return self

    def _clear(self) -> None:
        # None: the next chunk's statistics start the batch (no n x n zeros to add to)
        self._R = self._S = self._T = None
        self._n, self._count = 0.0, 0

    def update(self, X: Any, V: Any, decoder: Any, sample_weight: Any = None) -> bool:
        X, V, w = self._checked(X, V, decoder, sample_weight)
        with single_threaded_blas():
            return self._update(X, V, w, decoder)

    def _update(self, X: np.ndarray, V: np.ndarray, w: np.ndarray, decoder: KalmanDecoder
                ) -> bool:
        rate, batch = self.rate_, self._batch_samples()
        dR, dS, dT, dn = _augmented_stats(X, V, w)
        if self._T is None:  # fresh arrays from this chunk: nothing to copy
            R, S, T = dR, dS, dT
        else:
            R, S, T = self._R + dR, self._S + dS, self._T + dT
        n = self._n + dn
        count = self._count + X.shape[0]
        if count < batch or n <= 0:
            self._R, self._S, self._T, self._n, self._count = R, S, T, n, count
            return False
        Cb, db, Qb = observation_from_stats(R, S, T, n, decoder._shrinkage())
        Qb *= rate  # blend in place: Q is the largest matrix
        Qb += (1.0 - rate) * decoder.Q_
        decoder._set_observation((1.0 - rate) * decoder.C_ + rate * Cb,
                                 (1.0 - rate) * decoder.d_ + rate * db, Qb)
        self.n_batches_ += 1
        self._clear()
        return True


class RML(CLDAStrategy):
    """Recursive maximum likelihood of the observation model (Dangi et al. 2014).

    Keeps the sufficient statistics of ``x = C v + d + q``::

        R = sum l^a [v,1][v,1]',  S = sum l^a x [v,1]',  T = sum l^a x x',  N = sum l^a

    with ``l = 1 - rate`` and ``a`` a sample's age in samples, and re-solves
    ``[C, d] = S R^-1``, ``Q = (T - S R^-1 S') / N`` from them. The seed decoder
    enters as ``prior_s`` seconds of pseudo-data that reproduce its parameters,
    so it fades with the same half-life as real data.

    Parameters
    ----------
    half_life : float
        Seconds after which a bin's weight halves.
    dt : float
        Seconds per bin.
    rate : float, optional
        Per-bin forgetting rate in [0, 1]; overrides ``half_life``.
    update_every : int
        Re-solve the parameters (and the Kalman gain) once per this many bins;
        the statistics take in every bin.
    prior_s : float, optional
        Seconds of data the seed decoder is worth; default: the whole memory
        (``1 / rate`` bins).

    Attributes
    ----------
    n_updates_ : int
        Times the decoder's parameters were replaced.
    """

    name = "rml"

    def __init__(self, half_life: float = 60.0, dt: float = 0.05, rate: float | None = None,
                 update_every: int = 1, prior_s: float | None = None) -> None:
        super().__init__(half_life=half_life, dt=dt, rate=rate)
        self.update_every = update_every
        self.prior_s = prior_s

    def fit(self, decoder: Any) -> RML:
        _require_kalman(self, decoder)
        rate, dt = self.rate_, self._dt()
        if int(self.update_every) < 1:
            raise DecoderError(f"RML: update_every must be >= 1 bins, got {self.update_every}")
        if self.prior_s is not None:
            if not self.prior_s >= 0:
                raise DecoderError(f"RML: prior_s must be >= 0 s, got {self.prior_s}")
            n0 = float(self.prior_s) / dt
        else:
            n0 = 1.0 / rate if rate > 0 else 1.0 / dt * 60.0  # never forgetting: a minute
        k = decoder.n_outputs_
        try:  # the seed's velocity covariance: stationary under its own dynamics
            cov = sla.solve_discrete_lyapunov(decoder.A_, decoder.W_)
            if not np.isfinite(cov).all() or np.any(np.linalg.eigvalsh(cov) <= 0):
                raise np.linalg.LinAlgError("not positive definite")
        except (np.linalg.LinAlgError, ValueError):
            cov = decoder.W_ * 10.0
        Ez = np.zeros((k + 1, k + 1))
        Ez[:k, :k], Ez[k, k] = cov, 1.0
        B = np.c_[decoder.C_, decoder.d_]
        self._R = n0 * Ez
        self._S = B @ self._R
        self._T = n0 * decoder.Q_ + B @ self._R @ B.T
        self._n = n0
        self._since = 0
        self.n_features_in_, self.n_outputs_ = decoder.n_features_in_, k
        self.n_updates_ = 0
        return self

    def update(self, X: Any, V: Any, decoder: Any, sample_weight: Any = None) -> bool:
        if not hasattr(self, "_R"):
            raise NotFittedError("RML: update before fit",
                                 hint="call fit(decoder) with the seed decoder first")
        X, V, w = self._checked(X, V, decoder, sample_weight)
        with single_threaded_blas():
            return self._update(X, V, w, decoder)

    def _update(self, X: np.ndarray, V: np.ndarray, w: np.ndarray, decoder: KalmanDecoder
                ) -> bool:
        rate = self.rate_
        keep = w > 0  # a skipped bin does not age the statistics
        X, V, w = X[keep], V[keep], w[keep]
        if X.shape[0] == 0:
            return False
        weights, old = forgetting_weights(X.shape[0], rate, w)
        dR, dS, dT, dn = _augmented_stats(X, V, weights)
        R, S = old * self._R + dR, old * self._S + dS
        T, n = np.multiply(self._T, old), old * self._n + dn  # new arrays: commit at the end
        T += dT
        since = self._since + X.shape[0]
        changed = since >= int(self.update_every)
        if changed:
            C, d, Q = observation_from_stats(R, S, T, n, decoder._shrinkage())
            decoder._set_observation(C, d, Q)  # raises before changing anything
            since = 0
            self.n_updates_ += 1
        self._R, self._S, self._T, self._n, self._since = R, S, T, n, since
        return changed


class RidgePartialFit(CLDAStrategy):
    """Supervised exponentially weighted least squares of a :class:`RidgeDecoder`.

    Calls the decoder's ``partial_fit`` with the intended velocity; a bin's
    weight halves after ``half_life`` seconds.
    """

    name = "ridge-partial-fit"

    def fit(self, decoder: Any) -> RidgePartialFit:
        if not hasattr(decoder, "partial_fit") or not hasattr(decoder, "coef_"):
            raise NotFittedError(f"RidgePartialFit: needs a fitted decoder with partial_fit, "
                                 f"got {type(decoder).__name__}")
        _ = self.rate_  # validates half_life, rate and dt now
        self.n_features_in_, self.n_outputs_ = decoder.n_features_in_, decoder.n_outputs_
        return self

    def update(self, X: Any, V: Any, decoder: Any, sample_weight: Any = None) -> bool:
        X, V, w = self._checked(X, V, decoder, sample_weight)
        rate = self.rate_
        previous = decoder.rate
        decoder.rate = rate
        try:
            decoder.partial_fit(X, V, sample_weight=w)
        finally:
            decoder.rate = previous
        return bool((w > 0).any())


# -- seeds ----------------------------------------------------------------------------------------
def random_kalman_seed(X: Any, *, speed: float, dt: float, rng: np.random.Generator,
                       n_outputs: int = 2, tau_s: float = 0.5,
                       shrinkage: float = 0.1) -> KalmanDecoder:
    """A Kalman decoder with a random observation model: it knows nothing of the tuning.

    Only the features' statistics are used, no kinematics: ``d`` is their mean
    and ``Q`` their covariance (over ``X``, e.g. half a minute of activity). ``C``
    is Gaussian at random, scaled so that the decoded speed on ``X`` is as close
    to ``speed`` as it can be (the cursor moves, in directions unrelated to the
    intention). To such a model the features look like noise, so the filter
    trusts them little: the largest reachable speed is often about half of
    ``speed``.
    The dynamics are those of a smooth cursor: ``A = exp(-dt / tau_s) I`` and
    ``W`` such that the stationary speed is ``speed``.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
    speed : float
        RMS cursor speed of the seed (workspace units/s).
    dt : float
        Seconds per bin.
    rng : numpy.random.Generator
    n_outputs : int
    tau_s : float
        Time constant of the velocity (s).
    shrinkage : float
        Of ``Q`` toward its diagonal (and the decoder's for later refits).

    Returns
    -------
    KalmanDecoder
        Fitted, steady state.
    """
    X = check_features(X, who="random_kalman_seed")
    if not (speed > 0 and dt > 0 and tau_s > 0):
        raise DecoderError("random_kalman_seed: speed, dt and tau_s must be > 0")
    n = X.shape[0]
    mean = X.mean(axis=0)
    Xc = X - mean
    Q = shrunk_covariance(Xc.T @ Xc / n, shrinkage)
    a = math.exp(-dt / tau_s)
    A = a * np.eye(n_outputs)
    W = (1.0 - a * a) * speed ** 2 / n_outputs * np.eye(n_outputs)
    G = rng.standard_normal((X.shape[1], n_outputs))
    G *= np.sqrt(np.diag(Q))[:, None]  # in units of each feature's spread
    decoder = KalmanDecoder(steady_state=True, shrinkage=shrinkage)

    def rms_speed(scale: float) -> float:
        decoder.set_model(A=A, W=W, C=G * scale, d=mean, Q=Q)
        v = decoder.predict(X)
        return float(np.sqrt(np.mean(np.sum(v ** 2, axis=1))))

    # the decoded speed rises with the scale of C (the filter trusts the features more),
    # then falls (a larger C means a smaller velocity explains the same features):
    # take the smallest scale that reaches the speed, or the best one
    scales = np.geomspace(1e-3, 1e2, 26)
    speeds = np.array([rms_speed(s) for s in scales])
    above = np.flatnonzero(speeds >= speed)
    if above.size == 0:
        best = float(scales[np.argmax(speeds)])
    else:
        i = int(above[0])
        lo, hi = (float(scales[i - 1]), float(scales[i])) if i > 0 else (scales[0], scales[0])
        for _ in range(30):  # bisection in log scale
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if rms_speed(mid) < speed else (lo, mid)
        best = hi
    decoder.set_model(A=A, W=W, C=G * best, d=mean, Q=Q)
    decoder.reset()
    return decoder
