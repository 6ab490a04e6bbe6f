"""Scores of a decoder over time: accuracy, kappa, ITR, and what drift costs.

The drift figures compare an arm to the others trial by trial after a known
drift onset:

* **τ90**: trials after the onset until the arm's rolling accuracy stays at or
  above 0.9 × its accuracy before the onset for the rest of the run;
* **recovery fraction**: ``(adaptive − static) / (oracle − static)`` after the
  onset, 1 when adapting does as well as recalibrating on current data;
* **regret**: trials the arm got wrong that the oracle got right, net, after
  the onset.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import cohen_kappa_score


def wolpaw_itr(accuracy: float, n_classes: int, trial_s: float) -> float:
    """Wolpaw information transfer rate, bits per minute.

    ``B = log2 N + P log2 P + (1 - P) log2((1 - P) / (N - 1))`` bits per trial,
    taken as 0 at or below chance.

    Parameters
    ----------
    accuracy : float
    n_classes : int
    trial_s : float
        Seconds per selection (trial onset to the next).
    """
    n, p = n_classes, accuracy
    if n < 2 or trial_s <= 0 or p <= 1.0 / n:
        return 0.0
    bits = math.log2(n) + p * math.log2(p)
    if p < 1.0:
        bits += (1 - p) * math.log2((1 - p) / (n - 1))
    return bits * 60.0 / trial_s


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                          trial_s: float) -> dict[str, float]:
    """Accuracy, Cohen's kappa and Wolpaw ITR (bits/min).

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (n_trials,)
    n_classes : int
    trial_s : float
        Seconds per trial, for the ITR.
    """
    accuracy = float(np.mean(y_true == y_pred))
    kappa = float(cohen_kappa_score(y_true, y_pred)) if len(np.unique(
        np.r_[y_true, y_pred])) > 1 else 0.0
    return {"accuracy": round(accuracy, 4), "kappa": round(kappa, 4),
            "itr_bits_min": round(wolpaw_itr(accuracy, n_classes, trial_s), 3)}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² (variance explained, summed over outputs) and mean Pearson correlation.

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (n_samples, n_outputs)
    """
    y_true, y_pred = np.atleast_2d(y_true.T).T, np.atleast_2d(y_pred.T).T
    residual = ((y_true - y_pred) ** 2).sum(axis=0)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - residual.sum() / total.sum()
    corr = [np.corrcoef(y_true[:, k], y_pred[:, k])[0, 1] for k in range(y_true.shape[1])]
    return {"r2": round(float(r2), 4), "correlation": round(float(np.nanmean(corr)), 4)}


def rolling_accuracy(correct: np.ndarray, window: int) -> np.ndarray:
    """Accuracy over the last ``window`` trials (fewer at the start), shape (n_trials,)."""
    c = np.cumsum(np.asarray(correct, dtype=np.float64))
    n = np.arange(1, len(c) + 1)
    lagged = np.r_[np.zeros(window), c[:-window]] if len(c) > window else np.zeros(len(c))
    return (c - lagged[: len(c)]) / np.minimum(n, window)


def tau90(correct: np.ndarray, onset: int, window: int = 20) -> int | None:
    """Trials after ``onset`` until rolling accuracy stays ≥ 0.9 × pre-onset accuracy.

    Parameters
    ----------
    correct : ndarray of bool or float, shape (n_trials,)
        Whether each trial was right; or the fraction of runs in which it was
        (several seeds of one simulated session: τ90 of the mean learning curve).
    onset : int
        Index of the first trial after the drift onset; needs trials before it.
    window : int
        Rolling window, trials.

    Returns
    -------
    int or None
        None when there is no trial before the onset, or the arm never recovers.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if onset <= 0 or onset >= len(correct):
        return None
    target = 0.9 * float(correct[:onset].mean())
    after = rolling_accuracy(correct, window)[onset:]
    below = np.flatnonzero(after < target)
    if below.size == 0:
        return 0
    k = int(below[-1]) + 1
    return k if k < len(after) else None


def recovery_fraction(adaptive: float, static: float, oracle: float,
                      min_gap: float = 0.02) -> float | None:
    """``(adaptive − static) / (oracle − static)``; None when the oracle gains < ``min_gap``."""
    gap = oracle - static
    if gap < min_gap:
        return None
    return round((adaptive - static) / gap, 3)


def regret(correct: np.ndarray, oracle_correct: np.ndarray, onset: int) -> int:
    """Net trials the oracle got right and the arm got wrong, from ``onset`` on."""
    a = np.asarray(correct, dtype=int)[onset:]
    o = np.asarray(oracle_correct, dtype=int)[onset:]
    return int(o.sum() - a.sum())
