"""SSVEP decoders: CCA, filter-bank CCA, Riemannian filter-bank covariances, and their ensemble.

Steady-state visually evoked potentials (SSVEP) answer a light flickering at a
frequency with brain activity at that frequency and its harmonics. Every decoder
here takes epochs ``X`` of shape ``(n_trials, n_channels, n_times)`` and is an
:class:`~bci_runtime.decoders.base.EpochClassifier` (a feature extractor and a
head), so the co-adaptation strategies of
:mod:`bci_runtime.decoders.adaptation` apply to it.

* :class:`CCA`: canonical correlation of the trial with sine/cosine references
  at each frequency and its harmonics (Lin et al. 2006);
* :class:`FilterBankCCA`: the same in sub-bands, weighted and summed (Chen et
  al. 2015);
* :class:`BlockCovTS`: covariances of narrow bands around each frequency and
  harmonic (Kalunga et al. 2016) -> tangent space -> logistic regression;
* :class:`SSVEPEnsemble`: both feature sets, one logistic regression each, their
  probabilities averaged. The most accurate here: 0.865 mean accuracy across
  sessions on the Kalunga 2016 exoskeleton data set (4 classes with rest),
  where FBCCA with a learned rest threshold gets 0.78 and :class:`BlockCovTS` 0.76.

CCA and FBCCA are training-free with ``head="argmax"``: the class of the
best-scoring frequency, a rest class (no flicker) winning when every score is
below a threshold, given or learned at ``fit`` from rest trials.
``head="logistic"`` trains a logistic regression on the scores instead (a trained
rest detector).

**Stimulation frequencies.** ``freqs`` is either a mapping ``{label: Hz or
None}`` (None marks the rest class) or a sequence. The argmax head must know the
frequency of each class; from a sequence it matches labels that name a
frequency (``"13Hz"``, ``13``), the one unmatched label being rest, so
``freqs=[13, 21, 17]`` works with labels ``rest, 13Hz, 21Hz, 17Hz``; otherwise a
sequence as long as the classes is read in sorted-label order. Trained heads only
need the set of frequencies.

**Phase.** None of these features assumes the flicker is phase-locked to the
trial onset (CCA takes sine and cosine, covariances are phase-blind), so they
work with free-running stimuli such as LEDs. Template methods (TRCA) average
phase-locked trials; in the Kalunga data the response's phase at the stimulation
frequency is nearly random from trial to trial (phase-locking value 0.1-0.4).

**Online updates.** ``partial_fit`` keeps the feature extractor and refits the
head on the ``memory`` most recent labelled trials (calibration first, then the
new ones, weighted by ``sample_weight``); the swap happens only after the refit
succeeded, so a bad call leaves the serving model unchanged.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import sklearn
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from scipy.signal import butter, sosfilt
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression

from bci_runtime.decoders.base import EpochClassifier, check_epochs, check_labels
from bci_runtime.errors import ConfigError, DecoderError

Freqs = Mapping[Any, "float | None"] | Sequence["float | None"]
Head = Literal["argmax", "logistic"]

# Chen et al. 2015, method M3: sub-band n passes [n * 8 Hz, 88 Hz]
_CHEN_BASE_HZ, _CHEN_HIGH_HZ = 8.0, 88.0
# filters never reach closer to Nyquist than this (as bci_runtime.decoders.trials)
_MAX_EDGE = 0.45


# -- validation -------------------------------------------------------------------------


def _check_sfreq(sfreq: Any, who: str) -> float:
    try:
        value = float(sfreq)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DecoderError(f"{who}: sfreq must be a positive rate in Hz, got {sfreq!r}",
                           hint="pass the sampling rate of the epochs, e.g. sfreq=256")
    return value


def _as_freq(value: Any, who: str) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if not (math.isfinite(f) and f > 0):
        raise DecoderError(f"{who}: stimulation frequencies must be positive numbers (Hz) or "
                           f"None for a rest class, got {value!r}")
    return f


def _stim_freqs(freqs: Any, sfreq: float, who: str) -> list[float]:
    """The distinct stimulation frequencies of ``freqs``, in the order given."""
    if freqs is None or isinstance(freqs, (str, bytes)):
        raise DecoderError(f"{who}: freqs must list the stimulation frequencies, got "
                           f"{freqs!r}", hint="e.g. freqs=[13, 21, 17] or "
                           "freqs={'13Hz': 13, '21Hz': 21, '17Hz': 17, 'rest': None}")
    values = list(freqs.values()) if isinstance(freqs, Mapping) else list(freqs)
    out: list[float] = []
    for v in values:
        f = _as_freq(v, who)
        if f is not None and f not in out:
            out.append(f)
    if not out:
        raise DecoderError(f"{who}: freqs names no stimulation frequency ({values!r})",
                           hint="give at least one frequency in Hz")
    nyquist = sfreq / 2
    if max(out) >= _MAX_EDGE * sfreq:
        raise DecoderError(f"{who}: stimulation frequency {max(out):g} Hz is too close to "
                           f"Nyquist ({nyquist:g} Hz at sfreq={sfreq:g})",
                           hint="check sfreq and freqs")
    return out


def _label_frequency(label: Any) -> float | None:
    """The frequency a class label names (``"13Hz"`` -> 13.0, ``17`` -> 17.0), if any."""
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        return float(label)
    match = re.search(r"\d+(?:\.\d+)?", str(label))
    return float(match.group()) if match else None


def class_frequencies(freqs: Any, classes: np.ndarray, *, who: str = "decoder"
                      ) -> list[float | None]:
    """The stimulation frequency of each class (None for the rest class).

    Parameters
    ----------
    freqs : mapping or sequence
        ``{label: Hz or None}``, or a sequence: labels naming a frequency are
        matched by value (at most one label left over, the rest class); failing
        that, a sequence as long as ``classes`` is read in ``classes`` order.
    classes : ndarray, shape (n_classes,)
        Sorted class labels.
    who : str
        Named in error messages.

    Returns
    -------
    list of float or None, shape (n_classes,)

    Raises
    ------
    DecoderError
        If a class has no frequency, or several classes share one, or more than
        one class is rest.
    """
    labels = classes.tolist()
    if isinstance(freqs, Mapping):
        missing = [c for c in labels if c not in freqs]
        if missing:
            raise DecoderError(f"{who}: freqs has no entry for class(es) {missing}",
                               hint="map every label to its frequency, or to None for rest")
        out = [_as_freq(freqs[c], who) for c in labels]
    else:
        seq = [_as_freq(v, who) for v in freqs]
        stim = [f for f in seq if f is not None]
        named = [_label_frequency(c) for c in labels]
        by_value = [next((f for f in stim if n is not None and abs(n - f) < 1e-6), None)
                    for n in named]
        matched = [f for f in by_value if f is not None]
        if sorted(matched) == sorted(stim) and len(labels) - len(matched) <= 1:
            out = by_value
        elif len(seq) == len(labels):
            out = seq
        else:
            raise DecoderError(
                f"{who}: cannot tell which of the classes {labels} flickers at which of "
                f"{stim} Hz", hint="pass freqs as a mapping {label: Hz, rest_label: None}, "
                "or name the classes by their frequency ('13Hz')")
    stim_out = [f for f in out if f is not None]
    if len(set(stim_out)) != len(stim_out):
        raise DecoderError(f"{who}: several classes share a frequency ({dict(zip(labels, out))})")
    if len(out) - len(stim_out) > 1:
        raise DecoderError(f"{who}: more than one rest class ({dict(zip(labels, out))})",
                           hint="the argmax head tells one rest class from the flickers; use "
                           "head='logistic' for several")
    return out


def _check_weights(sample_weight: Any, n: int, who: str, *, all_zero: bool = False
                   ) -> np.ndarray:
    """Per-trial weights, shape (n,): ones when None; ``all_zero`` allows a zero sum."""
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != n or not np.isfinite(w).all() or (w < 0).any() or not (
            all_zero or w.sum() > 0):
        raise DecoderError(f"{who}: sample_weight must hold {n} finite values >= 0"
                           f"{'' if all_zero else ' (not all 0)'}, got {w.tolist()[:5]}")
    return w


def _check_choice(value: Any, choices: tuple[str, ...], name: str, who: str) -> str:
    if value not in choices:
        raise DecoderError(f"{who}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_positive(value: Any, name: str, who: str, *, integer: bool = False) -> Any:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(
        value, (int, float, np.integer, np.floating))
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise DecoderError(f"{who}: {name} must be {kind}, got {value!r}")
    return value


# -- features ---------------------------------------------------------------------------


def reference_signals(freqs: Sequence[float], sfreq: float, n_times: int,
                      n_harmonics: int) -> np.ndarray:
    """Sine and cosine references of each frequency and its harmonics.

    Parameters
    ----------
    freqs : sequence of float, shape (n_freqs,)
    sfreq : float
    n_times : int
    n_harmonics : int

    Returns
    -------
    ndarray, shape (n_freqs, n_times, 2 * n_harmonics)
    """
    t = np.arange(n_times) / sfreq
    h = np.arange(1, n_harmonics + 1)
    phase = 2 * np.pi * np.asarray(freqs, dtype=np.float64)[:, None, None] * h * t[:, None]
    return np.concatenate([np.sin(phase), np.cos(phase)], axis=2)


def _orthonormal_basis(A: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the centred columns of each ``A``; shape kept.

    SVD, not QR: a rank-deficient trial (a flat channel, an average reference)
    gets zero columns instead of arbitrary directions that would inflate the
    correlations.

    Parameters
    ----------
    A : ndarray, shape (..., n_times, k)
    """
    A = A - A.mean(axis=-2, keepdims=True)
    u, s, _ = np.linalg.svd(A, full_matrices=False)
    keep = s > s[..., :1] * 1e-10 if s.shape[-1] else s > 0
    return u * keep[..., None, :]


def canonical_correlations(X: np.ndarray, ref_basis: np.ndarray) -> np.ndarray:
    """Largest canonical correlation between each trial and each reference set.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    ref_basis : ndarray, shape (n_freqs, n_times, n_refs)
        :func:`_orthonormal_basis` of :func:`reference_signals`.

    Returns
    -------
    ndarray, shape (n_trials, n_freqs)
        In [0, 1]; unchanged by any invertible mixing of the channels.
    """
    basis = _orthonormal_basis(X.transpose(0, 2, 1))  # (n_trials, n_times, n_channels)
    cross = np.einsum("ntc,ftk->nfck", basis, ref_basis)
    return np.clip(np.linalg.svd(cross, compute_uv=False)[..., 0], 0.0, 1.0)


def chen_bands(freqs: Sequence[float], sfreq: float, n_bands: int = 5
               ) -> list[tuple[float, float]]:
    """Chen et al. 2015 (M3) sub-bands ``[n * base, 88 Hz]``, ``n = 1..n_bands``.

    ``base`` is 8 Hz as in the paper, lowered to 2 Hz below the lowest
    stimulation frequency when that is under 10 Hz, so the first band passes every
    fundamental. The upper edge is kept below ``0.45 * sfreq``; bands narrower
    than 4 Hz are left out.

    Returns
    -------
    list of (low, high) in Hz
    """
    base = min(_CHEN_BASE_HZ, max(1.0, min(freqs) - 2.0))
    high = min(_CHEN_HIGH_HZ, _MAX_EDGE * sfreq)
    return [(n * base, high) for n in range(1, n_bands + 1) if high - n * base >= 4.0]


def _resolve_bands(bands: Any, stim: list[float], sfreq: float, who: str
                   ) -> list[tuple[float, float]]:
    """The sub-bands given, or Chen's; at least one, each a (low, high) pair."""
    if bands is None:
        out = chen_bands(stim, sfreq)
    else:
        try:
            out = [(float(lo), float(hi)) for lo, hi in bands]
        except (TypeError, ValueError):
            raise DecoderError(f"{who}: bands must be (low, high) pairs in Hz, got {bands!r}"
                               ) from None
    if not out:
        raise DecoderError(f"{who}: no sub-band (bands={bands!r}, sfreq={sfreq:g})",
                           hint="give bands=[(low, high), ...] below Nyquist")
    return out


def _bandpass_sos(band: tuple[float, float], sfreq: float, order: int, who: str) -> np.ndarray:
    low, high = float(band[0]), float(band[1])
    if not (0 < low < high < sfreq / 2):
        raise DecoderError(f"{who}: band ({low:g}, {high:g}) Hz must satisfy 0 < low < high "
                           f"< Nyquist ({sfreq / 2:g} Hz)")
    return butter(order, [low, high], btype="bandpass", fs=sfreq, output="sos")


class _CcaScorer:
    """Fitted (filter-bank) CCA feature extractor; see :class:`FilterBankCCA`."""

    def __init__(self, stim: list[float], sfreq: float, n_times: int, n_harmonics: int,
                 bands: list[tuple[float, float]] | None, a: float, b: float,
                 order: int, who: str) -> None:
        if max(stim) * n_harmonics >= sfreq / 2:
            raise DecoderError(f"{who}: harmonic {n_harmonics} of {max(stim):g} Hz is at or "
                               f"above Nyquist ({sfreq / 2:g} Hz)",
                               hint="lower n_harmonics")
        self.ref_basis = _orthonormal_basis(reference_signals(stim, sfreq, n_times,
                                                              n_harmonics))
        self.sos = None if bands is None else [_bandpass_sos(bd, sfreq, order, who)
                                               for bd in bands]
        n = 1 if bands is None else len(bands)
        self.weights = np.arange(1, n + 1, dtype=np.float64) ** -a + b

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Scores, shape (n_trials, n_freqs): rho (CCA) or sum_k w_k rho_k^2 (filter bank)."""
        if self.sos is None:
            return canonical_correlations(X, self.ref_basis)
        score = np.zeros((X.shape[0], self.ref_basis.shape[0]))
        for w, sos in zip(self.weights, self.sos):
            # forward-only filter of the epoch: what the same code does online
            rho = canonical_correlations(sosfilt(sos, X, axis=-1), self.ref_basis)
            score += w * rho ** 2
        return score


class _BlockTangent:
    """Fitted narrow-band covariances -> per-band tangent space; see :class:`BlockCovTS`."""

    def __init__(self, stim: list[float], sfreq: float, n_harmonics: int, bandwidth: float,
                 estimator: str, order: int, who: str) -> None:
        centers = sorted({round(h * f, 6) for f in stim for h in range(1, n_harmonics + 1)
                          if h * f + bandwidth < _MAX_EDGE * sfreq and h * f - bandwidth > 0})
        self.centers = centers
        self.sos = [_bandpass_sos((c - bandwidth, c + bandwidth), sfreq, order, who)
                    for c in centers]
        self.cov = Covariances(estimator=estimator)
        self.tangent: list[TangentSpace] = []

    def _covariances(self, X: np.ndarray) -> np.ndarray:
        """Shape (n_bands, n_trials, n_channels, n_channels)."""
        # pyRiemann's shrinkage goes through scikit-learn, whose per-call parameter checks
        # cost more than the 8x8 estimate itself; the input was validated at the edge
        with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
            return np.stack([self.cov.transform(sosfilt(sos, X, axis=-1))
                             for sos in self.sos])

    def fit(self, X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
        """Learn each band's reference; training features, shape (n_trials, n_features)."""
        covs = self._covariances(X)
        with warnings.catch_warnings():  # the mean's iteration cap on near-equal matrices
            warnings.filterwarnings("ignore", message="Convergence not reached")
            self.tangent = [TangentSpace(metric="riemann").fit(c, sample_weight=sample_weight)
                            for c in covs]
        return self._map(covs)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Features of epochs (n_trials, n_channels, n_times), shape (n_trials, n_features)."""
        return self._map(self._covariances(X))

    def _map(self, covs: np.ndarray) -> np.ndarray:
        """Tangent vectors of every band side by side, shape (n_trials, n_bands * c(c+1)/2)."""
        return np.concatenate([ts.transform(c) for ts, c in zip(self.tangent, covs)], axis=1)


# -- heads ------------------------------------------------------------------------------


class ArgmaxRestHead(ClassifierMixin, BaseEstimator):
    """The class of the best-scoring frequency, or rest when every score is low.

    A linear classifier in disguise: ``decision = X @ coef_.T + intercept_`` with
    one-hot rows of ``coef_`` for the flickering classes and a zero row whose
    intercept is the threshold for the rest class. Linear co-adaptation strategies
    (``lda-bias``, ``normalize``) therefore apply.

    Parameters
    ----------
    columns : sequence of int, shape (n_classes,)
        Feature column of each class (sorted-label order), -1 for rest.
    rest_threshold : float, optional
        Score under which every trial is rest; learned from rest trials when None.
    classes : sequence, shape (n_classes,), optional
        The class labels, sorted; those of ``y`` when None.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    coef_ : ndarray, shape (n_classes, n_features)
    intercept_ : ndarray, shape (n_classes,)
    threshold_ : float or None
    temperature_ : float
        Spread of the training scores; ``predict_proba`` is a softmax of the
        decision divided by it: monotone, not calibrated.
    """

    def __init__(self, columns: Sequence[int] = (), rest_threshold: float | None = None,
                 classes: Sequence[Any] | None = None) -> None:
        self.columns = columns
        self.rest_threshold = rest_threshold
        self.classes = classes

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> ArgmaxRestHead:
        """Set the linear form and learn the rest threshold.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_features)
            Per-frequency scores.
        y : ndarray, shape (n_trials,)
        sample_weight : ndarray, shape (n_trials,), optional
        """
        classes = np.asarray(self.classes) if self.classes is not None else np.unique(y)
        columns = np.asarray(self.columns, dtype=int)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        coef = np.zeros((classes.size, X.shape[1]))
        flicker = columns >= 0
        coef[np.flatnonzero(flicker), columns[flicker]] = 1.0
        intercept = np.zeros(classes.size)
        threshold = None
        if not flicker.all():
            rest = np.flatnonzero(~flicker)[0]
            threshold = (float(self.rest_threshold) if self.rest_threshold is not None
                         else self._learn_threshold(X, y, w, classes, columns, rest))
            intercept[rest] = threshold
        self.classes_, self.coef_, self.intercept_ = classes, coef, intercept
        self.threshold_ = threshold
        self.temperature_ = float(np.std(X)) or 1.0
        return self

    @staticmethod
    def _learn_threshold(X: np.ndarray, y: np.ndarray, w: np.ndarray, classes: np.ndarray,
                         columns: np.ndarray, rest: int) -> float:
        """Threshold with the best weighted training accuracy (middle of the ties)."""
        if not np.any(y == classes[rest]):
            raise DecoderError(f"the rest class {classes[rest]!r} has no training trial to "
                               "learn its threshold from",
                               hint="give rest trials at fit, or rest_threshold=<score>")
        flicker_cols = columns[columns >= 0]
        col_class = {c: classes[i] for i, c in enumerate(columns) if c >= 0}
        best_col = flicker_cols[np.argmax(X[:, flicker_cols], axis=1)]
        top = X[:, flicker_cols].max(axis=1)
        flicker_guess = np.array([col_class[c] for c in best_col], dtype=object)
        edges = np.unique(top)
        candidates = np.concatenate([[edges[0] - 1e-9], (edges[1:] + edges[:-1]) / 2,
                                     [edges[-1] + 1e-9]])
        y_obj = np.asarray(y, dtype=object)
        right_rest = y_obj == classes[rest]
        right_flicker = flicker_guess == y_obj
        acc = np.array([np.sum(w * np.where(top < t, right_rest, right_flicker))
                        for t in candidates])
        ties = np.flatnonzero(acc >= acc.max() - 1e-12)
        return float(candidates[ties[len(ties) // 2]])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores, shape (n_trials, n_classes) ((n_trials,) for two classes)."""
        d = X @ self.coef_.T + self.intercept_
        return d[:, 1] - d[:, 0] if d.shape[1] == 2 else d

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax of the scores, shape (n_trials, n_classes) (not calibrated)."""
        return softmax((X @ self.coef_.T + self.intercept_) / self.temperature_, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Best class per trial, shape (n_trials,)."""
        return self.classes_[np.argmax(X @ self.coef_.T + self.intercept_, axis=1)]


class SoftVoteHead(ClassifierMixin, BaseEstimator):
    """Average of the class probabilities of one classifier per block of feature columns.

    scikit-learn's ``VotingClassifier`` with column-selecting pipelines does the
    same, but cannot pass ``sample_weight`` through the pipelines without the
    global metadata-routing switch; this head can, for weighted online refits.

    Parameters
    ----------
    blocks : sequence of (int, int)
        ``[start, stop)`` feature columns of each member.
    estimator : classifier
        Cloned once per block.
    """

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), estimator: Any = None) -> None:
        self.blocks = blocks
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> SoftVoteHead:
        """Fit one clone of ``estimator`` per block.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_features)
        y : ndarray, shape (n_trials,)
        sample_weight : ndarray, shape (n_trials,), optional
        """
        self.estimators_ = [clone(self.estimator).fit(X[:, a:b], y, sample_weight=sample_weight)
                            for a, b in self.blocks]
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean class probabilities, shape (n_trials, n_classes)."""
        return np.mean([est.predict_proba(X[:, a:b])
                        for est, (a, b) in zip(self.estimators_, self.blocks)], axis=0)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log of the mean probabilities ((n_trials,) log-odds for two classes)."""
        logp = np.log(np.clip(self.predict_proba(X), 1e-300, None))
        return logp[:, 1] - logp[:, 0] if logp.shape[1] == 2 else logp

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class of highest mean probability, shape (n_trials,)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# -- decoders ---------------------------------------------------------------------------


def _logistic(C: float) -> LogisticRegression:
    # newton-cg: on these few trials it converges in a handful of steps and is ~10x
    # faster than lbfgs, which matters for online refits
    return LogisticRegression(C=C, solver="newton-cg", max_iter=200)


class _SSVEPDecoder(EpochClassifier):
    """Shared fit / online refit of the SSVEP decoders.

    Subclasses implement ``_build(X, y, w, classes)`` -> (extractor state dict,
    training features, unfitted head) without touching ``self``; ``fit`` assigns
    it all at once, so a failed fit or refit leaves the fitted model serving.
    """

    memory: int

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _SSVEPDecoder:
        """Learn the feature extractor (if any) and the head.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        sample_weight : array-like, shape (n_trials,), optional

        Returns
        -------
        self
        """
        who = type(self).__name__
        X = check_epochs(X, who=who)
        y = check_labels(y, None, X.shape[0], who=who)
        w = _check_weights(sample_weight, X.shape[0], who)
        _check_positive(self.memory, "memory", who, integer=True)
        classes = self._classes(y)
        if classes.size < 2:
            raise DecoderError(f"{who}: need trials of at least 2 classes, got "
                               f"{classes.tolist()}")
        state, features, head = self._build(X, y, w, classes)
        head.fit(features, y, sample_weight=w)
        for key, value in state.items():
            setattr(self, key, value)
        self.classes_, self.head_ = classes, head
        self.n_channels_, self.n_times_ = X.shape[1], X.shape[2]
        self.n_features_in_ = X.shape[1]
        keep = slice(-self.memory, None)
        self.memory_ = (features[keep], y[keep], w[keep])
        return self

    def _classes(self, y: np.ndarray) -> np.ndarray:
        return np.unique(y)

    def _build(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, classes: np.ndarray
               ) -> tuple[dict[str, Any], np.ndarray, Any]:
        raise NotImplementedError

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> _SSVEPDecoder:
        """Refit the head on the ``memory`` most recent labelled trials.

        The feature extractor stays as fitted. Everything is validated and the new
        head is fitted before it replaces the old one.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        classes : array-like, optional
            Accepted for scikit-learn's API; must be the fitted classes.
        sample_weight : array-like, shape (n_trials,), optional
            Weight of each new trial (>= 0; 1 when omitted).

        Returns
        -------
        self
        """
        who = type(self).__name__
        X, y = self._update_inputs(X, y, classes)
        w = _check_weights(sample_weight, X.shape[0], who, all_zero=True)
        F_old, y_old, w_old = self.memory_
        F = np.concatenate([F_old, self._features(X)])[-self.memory:]
        yy = np.concatenate([y_old, y])[-self.memory:]
        ww = np.concatenate([w_old, w])[-self.memory:]
        head = self._refit_head(F, yy, ww) if w.any() else None
        if head is not None:
            self.head_ = head
        self.memory_ = (F, yy, ww)
        return self

    @property
    def supports_partial_fit(self) -> bool:
        """True once fitted: every head here is refitted from the memory."""
        return hasattr(self, "head_")

    def _refit_head(self, F: np.ndarray, y: np.ndarray, w: np.ndarray) -> Any:
        """A new head fitted on the memory, or None to keep the one serving."""
        seen = set(y[w > 0].tolist())
        if isinstance(self.head_, ArgmaxRestHead):
            head = clone(self.head_)
            rest = [c for c, col in zip(self.classes_, self.head_.columns) if col < 0]
            if rest and rest[0] not in seen:  # no rest trial left to learn from: keep it
                head.set_params(rest_threshold=self.head_.threshold_)
            return head.fit(F, y, sample_weight=w)
        if not set(self.classes_.tolist()) <= seen:
            return None  # a class fell out of the memory: its boundary cannot be refitted
        return clone(self.head_).fit(F, y, sample_weight=w)


class CCA(_SSVEPDecoder):
    """Canonical correlation analysis with sine/cosine references (Lin et al. 2006).

    The score of a frequency is the largest canonical correlation between the
    trial's channels and sine/cosine references at that frequency and its
    harmonics. Training-free with ``head="argmax"``: ``fit`` records the classes
    and, if there is a rest class, learns its threshold (or takes
    ``rest_threshold``).

    Parameters
    ----------
    freqs : mapping or sequence
        Stimulation frequency (Hz) of each class, None for a rest class; see
        the module docstring for how labels are matched.
    sfreq : float
        Sampling rate of the epochs (Hz).
    n_harmonics : int
        Harmonics in the references (1 = the fundamental only).
    head : {"argmax", "logistic"}
        ``argmax`` of the scores with a rest threshold (training-free), or a
        logistic regression on the z-scored scores (trained; also learns rest).
    rest_threshold : float, optional
        Score under which a trial is rest (argmax head); learned when None.
    C : float
        Inverse regularization of the logistic head.
    memory : int
        Labelled trials kept for online refits of the head.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    freqs_ : list of float, shape (n_freqs,)
        The stimulation frequencies, one feature column each.
    class_freqs_ : list of float or None, shape (n_classes,)
        Frequency of each class (argmax head), None for rest.
    head_ : ArgmaxRestHead or LogisticRegression

    Examples
    --------
    >>> clf = CCA(freqs=[13, 21, 17], sfreq=256).fit(X_cal, y_cal)  # doctest: +SKIP
    >>> clf.predict(X_new)                                          # doctest: +SKIP
    """

    def __init__(self, freqs: Freqs, sfreq: float, n_harmonics: int = 3,
                 head: Head = "argmax", rest_threshold: float | None = None, C: float = 1.0,
                 memory: int = 200) -> None:
        self.freqs = freqs
        self.sfreq = sfreq
        self.n_harmonics = n_harmonics
        self.head = head
        self.rest_threshold = rest_threshold
        self.C = C
        self.memory = memory

    def _bands(self, stim: list[float], sfreq: float, who: str
               ) -> list[tuple[float, float]] | None:
        return None

    def _classes(self, y: np.ndarray) -> np.ndarray:
        if self.head == "argmax" and isinstance(self.freqs, Mapping):
            # the mapping names every class, even those without calibration trials
            keys = np.unique(np.asarray(list(self.freqs.keys())))
            check_labels(y, keys, y.shape[0], who=type(self).__name__)
            return keys
        return np.unique(y)

    def _build(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, classes: np.ndarray
               ) -> tuple[dict[str, Any], np.ndarray, Any]:
        who = type(self).__name__
        sfreq = _check_sfreq(self.sfreq, who)
        head_kind = _check_choice(self.head, ("argmax", "logistic"), "head", who)
        n_harmonics = _check_positive(self.n_harmonics, "n_harmonics", who, integer=True)
        stim = _stim_freqs(self.freqs, sfreq, who)
        bands = self._bands(stim, sfreq, who)
        scorer = _CcaScorer(stim, sfreq, X.shape[2], n_harmonics, bands,
                            *self._chen_weights(who), order=4, who=who)
        raw = scorer(X)
        state: dict[str, Any] = {"freqs_": stim, "scorer_": scorer, "class_freqs_": None,
                                 "bands_": bands}
        if head_kind == "argmax":
            if self.rest_threshold is not None:
                _check_positive(self.rest_threshold, "rest_threshold", who)
            class_freqs = class_frequencies(self.freqs, classes, who=who)
            columns = [-1 if f is None else stim.index(f) for f in class_freqs]
            head: Any = ArgmaxRestHead(columns, self.rest_threshold, classes)
            state.update(class_freqs_=class_freqs, loc_=np.zeros(len(stim)),
                         scale_=np.ones(len(stim)))
            return state, raw, head
        _check_positive(self.C, "C", who)
        # z-scored with calibration statistics in the extractor, so the head is a plain
        # linear model that lda-bias / normalize can adapt
        loc, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-12
        state.update(loc_=loc, scale_=scale)
        return state, (raw - loc) / scale, _logistic(self.C)

    def _chen_weights(self, who: str) -> tuple[float, float]:
        return 1.25, 0.25  # unused with a single band

    def _features(self, X: np.ndarray) -> np.ndarray:
        return (self.scorer_(X) - self.loc_) / self.scale_


class FilterBankCCA(CCA):
    """Filter-bank CCA (Chen et al. 2015).

    Each trial is band-passed into sub-bands (forward Butterworth, order 4, so
    the same code runs online); the score of a frequency is
    ``sum_n w_n * rho_n ** 2`` with ``w_n = n ** -a + b`` over sub-bands
    ``n = 1..N``, where ``rho_n`` is the CCA correlation in sub-band ``n``.
    Higher sub-bands hold only harmonics, so their evidence counts without the
    fundamental's noise.

    Parameters
    ----------
    freqs, sfreq, n_harmonics, head, rest_threshold, C, memory
        As :class:`CCA`.
    bands : sequence of (float, float), optional
        Sub-bands in Hz; default :func:`chen_bands` (Chen's M3 design:
        ``[8n, 88]`` Hz, ``n = 1..5``, clipped below ``0.45 * sfreq``).
    a, b : float
        Sub-band weights ``n ** -a + b`` (Chen et al.: 1.25 and 0.25).

    Attributes
    ----------
    bands_ : list of (float, float)
    """

    def __init__(self, freqs: Freqs, sfreq: float, n_harmonics: int = 3,
                 bands: Sequence[tuple[float, float]] | None = None, a: float = 1.25,
                 b: float = 0.25, head: Head = "argmax", rest_threshold: float | None = None,
                 C: float = 1.0, memory: int = 200) -> None:
        super().__init__(freqs=freqs, sfreq=sfreq, n_harmonics=n_harmonics, head=head,
                         rest_threshold=rest_threshold, C=C, memory=memory)
        self.bands = bands
        self.a = a
        self.b = b

    def _bands(self, stim: list[float], sfreq: float, who: str) -> list[tuple[float, float]]:
        return _resolve_bands(self.bands, stim, sfreq, who)

    def _chen_weights(self, who: str) -> tuple[float, float]:
        for name, v in (("a", self.a), ("b", self.b)):
            if not (isinstance(v, (int, float, np.integer, np.floating))
                    and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise DecoderError(f"{who}: {name} must be a number >= 0, got {v!r}")
        return float(self.a), float(self.b)


class BlockCovTS(_SSVEPDecoder):
    """Filter-bank covariances per stimulation frequency -> tangent space -> logistic regression.

    After Kalunga et al. 2016: each trial is band-passed around every stimulation
    frequency and harmonic (``h * f +- bandwidth``, forward Butterworth, order
    4); each band's spatial covariance (pyRiemann ``Covariances``) is mapped to the
    tangent space at the band's Riemannian mean over the calibration trials
    (pyRiemann ``TangentSpace``); the vectors of all bands feed scikit-learn's
    ``LogisticRegression``. Phase-blind, and the rest class is one more class.

    Parameters
    ----------
    freqs : mapping or sequence
        Stimulation frequencies (only their set matters here).
    sfreq : float
    n_harmonics : int
        Harmonics with a band (1 = fundamentals only); bands reaching past
        ``0.45 * sfreq`` are left out.
    bandwidth : float
        Half-width of each band (Hz).
    estimator : str
        Covariance estimator (pyRiemann): ``"lwf"`` (Ledoit-Wolf shrinkage) keeps
        narrow-band covariances well conditioned.
    C : float
        Inverse regularization of the logistic regression.
    memory : int
        Labelled trials kept for online refits of the head.

    Attributes
    ----------
    freqs_ : list of float
    centers_ : list of float
        Band centres (Hz), one block of ``n_channels * (n_channels + 1) / 2``
        features each.
    head_ : LogisticRegression
    """

    def __init__(self, freqs: Freqs, sfreq: float, n_harmonics: int = 2,
                 bandwidth: float = 1.0, estimator: str = "lwf", C: float = 1.0,
                 memory: int = 200) -> None:
        self.freqs = freqs
        self.sfreq = sfreq
        self.n_harmonics = n_harmonics
        self.bandwidth = bandwidth
        self.estimator = estimator
        self.C = C
        self.memory = memory

    def _tangent(self, X: np.ndarray, w: np.ndarray, who: str
                 ) -> tuple[list[float], _BlockTangent, np.ndarray]:
        sfreq = _check_sfreq(self.sfreq, who)
        n_harmonics = _check_positive(self.n_harmonics, "n_harmonics", who, integer=True)
        bandwidth = _check_positive(self.bandwidth, "bandwidth", who)
        stim = _stim_freqs(self.freqs, sfreq, who)
        block = _BlockTangent(stim, sfreq, n_harmonics, float(bandwidth), self.estimator,
                              order=4, who=who)
        if not block.centers:
            raise DecoderError(f"{who}: no band fits below {_MAX_EDGE * sfreq:g} Hz",
                               hint="lower bandwidth or check sfreq")
        try:
            features = block.fit(X, w)
        except ValueError as exc:  # pyRiemann's message on an unknown estimator
            raise DecoderError(f"{who}: {exc}", hint="estimator='lwf', 'oas' or 'scm'") from exc
        return stim, block, features

    def _build(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, classes: np.ndarray
               ) -> tuple[dict[str, Any], np.ndarray, Any]:
        who = type(self).__name__
        _check_positive(self.C, "C", who)
        stim, block, features = self._tangent(X, w, who)
        state = {"freqs_": stim, "block_": block, "centers_": block.centers}
        return state, features, _logistic(self.C)

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self.block_(X)


class SSVEPEnsemble(BlockCovTS):
    """Filter-bank CCA scores and filter-bank covariances, one logistic regression each, averaged.

    The two views fail differently: FBCCA scores are few, scale-free and immune to
    any mixing of the channels; tangent vectors of narrow-band covariances see
    the spatial pattern of each response and of rest. The head averages the class
    probabilities of one logistic regression per view (:class:`SoftVoteHead`).

    Parameters
    ----------
    freqs : mapping or sequence
        Stimulation frequencies (only their set matters here).
    sfreq : float
    n_harmonics : int
        Harmonics with a covariance band (:class:`BlockCovTS`).
    cca_harmonics : int
        Harmonics in the CCA references (:class:`FilterBankCCA`).
    bands : sequence of (float, float), optional
        FBCCA sub-bands; default :func:`chen_bands`.
    bandwidth, estimator, C, memory
        As :class:`BlockCovTS` (``C`` for both logistic regressions).

    Attributes
    ----------
    n_cca_ : int
        The first ``n_cca_`` feature columns are z-scored FBCCA scores, the rest
        tangent vectors.
    head_ : SoftVoteHead
    """

    def __init__(self, freqs: Freqs, sfreq: float, n_harmonics: int = 2,
                 cca_harmonics: int = 3, bands: Sequence[tuple[float, float]] | None = None,
                 bandwidth: float = 1.0, estimator: str = "lwf", C: float = 1.0,
                 memory: int = 200) -> None:
        super().__init__(freqs=freqs, sfreq=sfreq, n_harmonics=n_harmonics,
                         bandwidth=bandwidth, estimator=estimator, C=C, memory=memory)
        self.cca_harmonics = cca_harmonics
        self.bands = bands

    def _build(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, classes: np.ndarray
               ) -> tuple[dict[str, Any], np.ndarray, Any]:
        who = type(self).__name__
        _check_positive(self.C, "C", who)
        stim, block, tangent = self._tangent(X, w, who)
        cca_harmonics = _check_positive(self.cca_harmonics, "cca_harmonics", who, integer=True)
        bands = _resolve_bands(self.bands, stim, float(self.sfreq), who)
        scorer = _CcaScorer(stim, float(self.sfreq), X.shape[2], cca_harmonics, bands,
                            1.25, 0.25, order=4, who=who)
        raw = scorer(X)
        loc, scale = raw.mean(axis=0), raw.std(axis=0) + 1e-12
        n_cca = len(stim)
        features = np.concatenate([(raw - loc) / scale, tangent], axis=1)
        head = SoftVoteHead([(0, n_cca), (n_cca, features.shape[1])],
                            _logistic(self.C))
        state = {"freqs_": stim, "block_": block, "centers_": block.centers,
                 "scorer_": scorer, "loc_": loc, "scale_": scale, "n_cca_": n_cca,
                 "bands_": bands}
        return state, features, head

    def _features(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([(self.scorer_(X) - self.loc_) / self.scale_, self.block_(X)],
                              axis=1)


#: the SSVEP class with no flicker
REST_CLASS = "rest"


def stimulus_frequencies(classes: Sequence[str], freqs: Sequence[float] | None = None
                         ) -> dict[str, float | None]:
    """The stimulation frequency of each SSVEP class, None for ``rest``.

    Parameters
    ----------
    classes : sequence of str
        Class names, e.g. ``["8.57Hz", "10Hz", "rest"]``.
    freqs : sequence of float, optional
        One frequency (Hz) per class but ``rest``, in ``classes`` order; default:
        each class names its frequency (``"8.57Hz"``, ``"10 Hz"``, ``"12"``).

    Returns
    -------
    dict of str to float or None, in ``classes`` order

    Raises
    ------
    ConfigError
        If a class names no frequency and none is given, the counts differ, or a
        frequency is not positive or given twice.
    """
    flickering = [c for c in classes if c.lower() != REST_CLASS]
    if freqs is None:
        unnamed = [c for c in flickering if _named_frequency(c) is None]
        if unnamed:
            raise ConfigError(f"SSVEP class(es) {unnamed} do not name a stimulation frequency",
                              hint="name the classes by their frequency ('10Hz'), or give "
                                   "freqs, one per class but 'rest'")
        values = [_named_frequency(c) for c in flickering]
    else:
        try:
            values = [float(f) for f in freqs]
        except (TypeError, ValueError):
            raise ConfigError(f"freqs {list(freqs)!r} are not numbers (Hz)") from None
        if len(values) != len(flickering):
            raise ConfigError(f"{len(values)} stimulation frequencies for the "
                              f"{len(flickering)} flickering class(es) {flickering}",
                              hint="give one frequency per class but 'rest', in class order")
    if any(not (math.isfinite(f) and f > 0) for f in values):  # type: ignore[operator]
        raise ConfigError(f"stimulation frequencies must be positive (Hz), got {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"several classes share a stimulation frequency: "
                          f"{dict(zip(flickering, values))}")
    by_class = dict(zip(flickering, values))
    return {c: by_class.get(c) for c in classes}


def _named_frequency(label: str) -> float | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:hz)?\s*", label, flags=re.IGNORECASE)
    return float(match.group(1)) if match else None
