"""A pseudo-online closed loop for continuous decoders: signal -> decoder -> cursor -> user.

One bin at a time, on the simulated clock and as fast as the CPU allows::

    generator.next_block(bin)  ->  features  ->  decoder.step  ->  generator.feedback(t, v)
          ^                                                              |
          +------ the simulated user sees the cursor move and intends ---+

Every ``update_s`` seconds the bins decoded since the last update are labelled
with the intended velocity (:func:`~bci_runtime.decoders.clda.refit_intention`,
from the target the task shows, or from :func:`~bci_runtime.decoders.clda.retrospective_targets`
when the reach's end names it) and given to a CLDA strategy. The user's true
intention (the generator's ground truth) is only recorded, to score the decoder.

The generator is duck-typed (``srate``, ``truth_names``, ``next_block(n)``,
``feedback(t, values)``; markers ``hit/<k>``, ``timeout/<k>``), so this module
does not depend on the simulator: in the runtime the same loop is a graph of a
source, a decoder node and a feedback node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy import signal as sps

from bci_runtime.decoders.clda import refit_intention, retrospective_targets
from bci_runtime.errors import DecoderError

__all__ = ["CursorLoopResult", "HighGammaPower", "r2_score", "record_open_loop",
           "run_cursor_loop"]


class _Features(Protocol):
    def __call__(self, data: np.ndarray) -> np.ndarray: ...


class HighGammaPower:
    """Causal band-power features of raw ECoG: one row of log power per bin.

    A Butterworth band-pass (second-order sections, :func:`scipy.signal.sosfilt`
    with its state kept across calls), squared and averaged over each bin.

    Parameters
    ----------
    srate : float
        Raw sampling rate (Hz).
    n_channels : int
    band : (float, float)
        Pass band (Hz), high gamma by default.
    order : int
        Butterworth order.
    """

    def __init__(self, srate: float, n_channels: int, band: tuple[float, float] = (70.0, 150.0),
                 order: int = 4) -> None:
        self.sos = sps.butter(order, band, btype="bandpass", fs=srate, output="sos")
        self._zi = np.zeros((self.sos.shape[0], 2, n_channels))

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Log band power of one bin.

        Parameters
        ----------
        data : ndarray, shape (n_samples, n_channels)

        Returns
        -------
        ndarray, shape (1, n_channels)
        """
        y, self._zi = sps.sosfilt(self.sos, data, axis=0, zi=self._zi)
        # log: power is skewed, its logarithm is closer to the Gaussian noise the decoders assume
        return np.log(np.mean(y * y, axis=0, keepdims=True) + 1e-30)


@dataclass
class CursorLoopResult:
    """What happened in a closed-loop run, one row per bin.

    Attributes
    ----------
    dt : float
        Seconds per bin.
    features : ndarray, shape (n_bins, n_features)
    decoded : ndarray, shape (n_bins, 2)
        Velocity the decoder output (and the cursor moved with).
    intended : ndarray, shape (n_bins, 2)
        Velocity the simulated user intended (ground truth, mean over the bin).
    labels : ndarray, shape (n_bins, 2)
        Intended velocity as estimated for adaptation (NaN where none was).
    cursor : ndarray, shape (n_bins, 2)
        Cursor position at the start of each bin.
    target : ndarray, shape (n_bins, 2)
        Target shown at the start of each bin.
    hits : list of (int, int)
        (bin, target index) of every acquisition; target 0 is the center.
    timeouts : list of (int, int)
        (bin, target index) of every timeout.
    update_s : list of float
        Wall-clock duration of every call of the strategy's update (s).
    n_changes : int
        Updates that changed the decoder.
    """

    dt: float
    features: np.ndarray
    decoded: np.ndarray
    intended: np.ndarray
    labels: np.ndarray
    cursor: np.ndarray
    target: np.ndarray
    hits: list[tuple[int, int]] = field(default_factory=list)
    timeouts: list[tuple[int, int]] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    n_changes: int = 0

    @property
    def n_bins(self) -> int:
        return int(self.decoded.shape[0])

    def targets_per_minute(self, outer_only: bool = False) -> np.ndarray:
        """Acquired targets in each whole minute of the run.

        Parameters
        ----------
        outer_only : bool
            Count only outer targets (center-out reaches), not the returns to
            the center.

        Returns
        -------
        ndarray of int, shape (n_minutes,)
        """
        per_min = int(round(60.0 / self.dt))
        n_min = self.n_bins // per_min
        bins = np.array([b for b, k in self.hits if not (outer_only and k == 0)], dtype=np.int64)
        counts = np.bincount(bins // per_min, minlength=n_min + 1) if bins.size else np.zeros(
            n_min + 1, np.int64)
        return counts[:n_min]

    def r2_per_minute(self) -> np.ndarray:
        """R² of decoded vs intended velocity in each whole minute (both axes pooled).

        Returns
        -------
        ndarray, shape (n_minutes,)
        """
        per_min = int(round(60.0 / self.dt))
        n_min = self.n_bins // per_min
        out = np.empty(n_min)
        for m in range(n_min):
            sl = slice(m * per_min, (m + 1) * per_min)
            out[m] = r2_score(self.intended[sl], self.decoded[sl])
        return out


def r2_score(truth: np.ndarray, decoded: np.ndarray) -> float:
    """Coefficient of determination, all columns pooled around their own means.

    Parameters
    ----------
    truth, decoded : ndarray, shape (n, k)
    """
    resid = ((truth - decoded) ** 2).sum()
    total = ((truth - truth.mean(axis=0)) ** 2).sum()
    return float(1.0 - resid / total) if total > 0 else float("nan")


def record_open_loop(generator: Any, seconds: float, *, bin_samples: int = 1,
                     features: _Features | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Record an open-loop block: no feedback, the cursor follows the user's intention.

    What a calibration block gives: the features and the velocity the cursor
    moved with (which, in open loop, is the intended one).

    Parameters
    ----------
    generator : simulator generator
        As for :func:`run_cursor_loop`.
    seconds : float
    bin_samples : int
        Raw samples per bin.
    features : callable, optional
        ``features(block.data) -> (1, n_features)``; default: the block's mean.

    Returns
    -------
    X : ndarray, shape (n_bins, n_features)
    V : ndarray, shape (n_bins, 2)
        Velocity of the cursor in each bin.
    """
    iv = [list(generator.truth_names).index(n) for n in ("vx", "vy")]
    n_bins = int(round(seconds * float(generator.srate) / bin_samples))
    rows, vel = [], np.empty((n_bins, 2))
    for i in range(n_bins):
        block = generator.next_block(bin_samples)
        rows.append(features(block.data) if features is not None
                    else block.data.mean(axis=0, keepdims=True))
        vel[i] = block.truth[:, iv].mean(axis=0)
    return np.vstack(rows), vel


def run_cursor_loop(generator: Any, decoder: Any, seconds: float, *, strategy: Any = None,
                    target_radius: float = 0.15,
                    intention: Literal["refit", "retrospective"] = "refit",
                    intended_speed: float | None = None, bin_samples: int = 1,
                    features: _Features | None = None, update_s: float = 1.0,
                    adapt_from_s: float = 0.0) -> CursorLoopResult:
    """Run a closed-loop cursor session, adapting the decoder as it goes.

    Parameters
    ----------
    generator : simulator generator
        A center-out cursor generator (population or ECoG), already built; its
        truth must name ``vx, vy, cursor_x, cursor_y, target_x, target_y``.
    decoder : estimator
        Fitted; decodes with ``step(x)`` (streaming, e.g.
        :class:`~bci_runtime.decoders.continuous.KalmanDecoder`) or else
        ``predict(x[None])``.
    seconds : float
        Simulated duration.
    strategy : CLDAStrategy, optional
        Already fitted on ``decoder``; None keeps the decoder static.
    target_radius : float
        Where the intention is zero (the task's target size).
    intention : {"refit", "retrospective"}
        Label with the target shown, or with the place where the reach ended
        in an acquisition (bins of a reach wait for its end).
    intended_speed : float, optional
        Speed of the intention labels instead of the decoded speed.
    bin_samples : int
        Raw samples per decoded bin (1 for binned spike counts).
    features : callable, optional
        ``features(block.data) -> (1, n_features)``; default: the block's mean.
    update_s : float
        Seconds between two strategy updates.
    adapt_from_s : float
        No adaptation before this time of the run.

    Returns
    -------
    CursorLoopResult
    """
    names = list(generator.truth_names)
    try:
        iv = [names.index("vx"), names.index("vy")]
        ic = [names.index("cursor_x"), names.index("cursor_y")]
        it = [names.index("target_x"), names.index("target_y")]
    except ValueError as exc:
        raise DecoderError(f"the generator's truth {names} is not a cursor task's",
                           hint="use a center-out cursor generator (ecog, population)") from exc
    if intention not in ("refit", "retrospective"):
        raise DecoderError(f"unknown intention estimate {intention!r}",
                           hint="use 'refit' or 'retrospective'")
    srate = float(generator.srate)
    dt = bin_samples / srate
    n_bins = int(round(seconds / dt))
    every = max(1, int(round(update_s / dt)))
    step = getattr(decoder, "step", None)
    predict = decoder.predict

    first = generator.next_block(bin_samples)
    x0 = features(first.data) if features is not None else first.data.mean(axis=0, keepdims=True)
    X = np.empty((n_bins, x0.shape[1]))
    decoded, intended = np.empty((n_bins, 2)), np.empty((n_bins, 2))
    cursor, target = np.empty((n_bins, 2)), np.empty((n_bins, 2))
    labels = np.full((n_bins, 2), np.nan)
    result = CursorLoopResult(dt, X, decoded, intended, labels, cursor, target)
    fed = 0  # bins before this one were given to the strategy (or dropped)
    last_end = np.zeros(2)  # cursor where the previous bin left it (it starts at the center)
    block = first
    for i in range(n_bins):
        if i:
            block = generator.next_block(bin_samples)
            X[i] = (features(block.data)[0] if features is not None
                    else block.data.mean(axis=0))
        else:
            X[i] = x0[0]
        v = step(X[i]) if step is not None else predict(X[i][None])[0]
        generator.feedback((block.start + block.n_samples) / srate, v)
        truth = block.truth
        decoded[i] = v[:2]
        intended[i] = truth[:, iv].mean(axis=0)
        cursor[i] = last_end
        target[i] = truth[0, it]
        last_end = truth[-1, ic]
        for label, _ in block.markers:
            kind, _, rest = label.partition("/")
            if kind in ("hit", "timeout"):
                k = int(rest.split()[0])
                (result.hits if kind == "hit" else result.timeouts).append((i, k))
        if strategy is not None and (i + 1) % every == 0 and (i + 1) * dt > adapt_from_s:
            fed = _adapt(result, strategy, decoder, fed, i + 1, intention, target_radius,
                         intended_speed, max(0, int(np.ceil(adapt_from_s / dt))))
    return result


def _adapt(result: CursorLoopResult, strategy: Any, decoder: Any, fed: int, now: int,
           intention: str, target_radius: float, intended_speed: float | None,
           first_bin: int) -> int:
    """Label bins ``fed`` .. ``now - 1`` and update; returns the first bin still pending."""
    fed = max(fed, first_bin)
    if intention == "refit":
        end = now
        goal = result.target[fed:end]
    else:
        # only reaches that ended (hit or timeout) can be labelled; later bins wait
        ends = [b for b, _ in result.hits + result.timeouts if fed <= b < now]
        if not ends:
            return fed
        end = max(ends) + 1
        acquired = [b - fed for b, _ in result.hits if fed <= b < end]
        failed = [b - fed for b, _ in result.timeouts if fed <= b < end]
        # where the cursor was when it acquired (it had dwelled there): the inferred target
        goal = retrospective_targets(result.cursor[fed:end], acquired, failed=failed)
    if end <= fed:
        return fed
    lab = refit_intention(result.decoded[fed:end], result.cursor[fed:end], goal,
                          target_radius=target_radius, speed=intended_speed)
    known = np.isfinite(lab).all(axis=1)
    result.labels[fed:end] = lab
    if known.any():
        t0 = time.perf_counter()
        changed = strategy.update(result.features[fed:end], np.where(known[:, None], lab, 0.0),
                                  decoder, sample_weight=known.astype(np.float64))
        result.update_s.append(time.perf_counter() - t0)
        result.n_changes += int(bool(changed))
    return end
