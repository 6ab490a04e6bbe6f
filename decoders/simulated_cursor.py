"""``bci evaluate --simulate PRESET --paradigm continuous``: the closed-loop cursor task, drifting.

The drift section of ``bench/clda_cursor.py`` as an evaluation. Each arm is its
own simulated session with the same seed (in closed loop the decoder moves the
cursor, so what the simulated user does next depends on the arm):

1. ``CALIBRATION_S`` of open-loop calibration (the cursor follows the user's
   intention), on which the decoder is fitted;
2. ``minutes`` of closed loop (:func:`~bci_runtime.decoders.cursor_loop.run_cursor_loop`):
   the decoded velocity moves the cursor, the user sees it and steers; the
   preset's drift starts 2/9 of the way in and ramps over 1/9 (at the default
   9 minutes: 2 minutes in, over one minute, as in the benchmark).

Arms:

* **static**: the calibrated decoder, never changed;
* **adaptive** (one per strategy): every ``update_s`` the bins just decoded are
  labelled by ReFIT (:func:`~bci_runtime.decoders.clda.refit_intention`: the
  decoded velocity turned toward the target shown, at the task's speed, zero on
  the target) and given to the CLDA strategy: only what the runtime could know;
* **oracle**: every ``update_s`` a decoder refitted from scratch on the most
  recent ``CALIBRATION_S`` of closed-loop bins, labelled with the user's *true*
  intended velocity (the simulator's ground truth, which no real task gives),
  topped up with the last calibration bins at first (:class:`Recalibration`):
  what a fresh supervised calibration on current data would give at every
  moment. A Kalman oracle keeps its filter state across refits.

Scores (decoded vs the intended velocity, both axes pooled; targets acquired
per minute) over the whole closed loop, before the onset and from it on; for
each adaptive arm, the recovery fraction of R² and of the target rate after
the onset, R² regret and tau90 (:mod:`~bci_runtime.decoders.evaluate_continuous`).

The population of cosine-tuned units (96 units, 50 ms bins of spike counts)
serves every preset except ``electrode-shift``, which moves electrodes and so
leaves single units alone: that one runs on a 64-channel ECoG grid (1 kHz,
causal high-gamma log power in 50 ms bins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bci_runtime.decoders import metrics
from bci_runtime.decoders.cursor_loop import (
    CursorLoopResult,
    HighGammaPower,
    record_open_loop,
    run_cursor_loop,
)
from bci_runtime.decoders.evaluate_continuous import (
    UPDATE_S,
    ContinuousArm,
    ContinuousEvaluation,
    drift_figures,
    make_continuous_strategy,
    resolve_continuous_strategies,
)
from bci_runtime.errors import ConfigError

__all__ = ["CALIBRATION_S", "MINUTES", "Recalibration", "TruthTap", "simulate_cursor"]

DT = 0.05  # 50 ms bins
CALIBRATION_S = 60.0
MINUTES = 9.0
TARGET_SIZE = 0.15  # the task's target radius
TASK_SPEED = 0.4  # the task's nominal cursor speed: the speed of the ReFIT labels
#: correlation of preferred directions across the simulated drift (0.5: about a week apart)
RHO = 0.5
#: presets whose drift only electrodes see: simulated on an ECoG grid
ELECTRODE_PRESETS = ("electrode-shift",)


class TruthTap:
    """A cursor generator that keeps the intended velocity of every bin it delivers.

    Parameters
    ----------
    generator : simulator generator
        A center-out cursor generator (``truth_names`` hold ``vx, vy``).

    Attributes
    ----------
    intended : list of ndarray, shape (2,)
        Mean intended velocity of each block delivered, in order.
    """

    def __init__(self, generator: Any) -> None:
        self._generator = generator
        self._iv = [list(generator.truth_names).index(n) for n in ("vx", "vy")]
        self.intended: list[np.ndarray] = []

    @property
    def srate(self) -> float:
        return float(self._generator.srate)

    @property
    def truth_names(self) -> tuple[str, ...]:
        return tuple(self._generator.truth_names)

    def next_block(self, n: int) -> Any:
        block = self._generator.next_block(n)
        self.intended.append(block.truth[:, self._iv].mean(axis=0))
        return block

    def feedback(self, t: float, values: Any) -> Any:
        return self._generator.feedback(t, values)


class Recalibration:
    """The oracle's "strategy": a fresh supervised fit on the latest bins, true labels.

    Used as a CLDA strategy by :func:`~bci_runtime.decoders.cursor_loop.run_cursor_loop`
    with ``intention="refit"``: each update gives the features of the bins
    decoded since the last one, which are the last blocks the tap delivered; the
    ReFIT labels it is given are ignored for the tap's ground truth.

    Parameters
    ----------
    make_decoder : callable
        New, unfitted decoders of the kind being evaluated.
    tap : TruthTap
    X, V : ndarray, shape (n_bins, n_features) and (n_bins, 2)
        The calibration bins, the first window.
    window : int
        Bins to refit on.
    """

    def __init__(self, make_decoder: Callable[[], Any], tap: TruthTap, X: np.ndarray,
                 V: np.ndarray, window: int) -> None:
        self.make_decoder = make_decoder
        self.tap = tap
        self.window = window
        self._X, self._V = X[-window:], V[-window:]
        self.n_refits_ = 0

    def update(self, X: Any, V: Any, decoder: Any, sample_weight: Any = None) -> bool:
        X = np.asarray(X, dtype=np.float64)
        truth = np.asarray(self.tap.intended[-X.shape[0]:])
        self._X = np.concatenate([self._X, X])[-self.window:]
        self._V = np.concatenate([self._V, truth])[-self.window:]
        if hasattr(decoder, "set_model"):  # keeps the filter's state: no jolt of the cursor
            fresh = self.make_decoder().fit(self._X, self._V)
            decoder.set_model(A=fresh.A_, W=fresh.W_, C=fresh.C_, d=fresh.d_, Q=fresh.Q_)
        else:  # in place: the loop holds this decoder
            decoder.fit(self._X, self._V)
        self.n_refits_ += 1
        return True


def _setup(preset: str, seed: int, onset_s: float,
           ramp_s: float) -> tuple[TruthTap, Any, int, str]:
    """A tapped generator, its features (None: the bins themselves) and samples per bin."""
    from bci_runtime.simulators.paradigms import make_generator

    drift = {"scenario": preset, "onset_s": onset_s, "ramp_s": ramp_s, "rho": RHO}
    if preset in ELECTRODE_PRESETS:
        gen = make_generator("ecog", {"n_channels": 64, "srate": 1000}, seed=seed, drift=drift)
        return TruthTap(gen), HighGammaPower(1000.0, 64), int(round(DT * 1000)), "ecog"
    gen = make_generator("population", {"n_channels": 96, "srate": 1 / DT}, seed=seed,
                         drift=drift)
    return TruthTap(gen), None, 1, "population"


def simulate_cursor(make_decoder: Callable[[], Any], adapt: str, preset: str, *,
                    seed: int = 1, minutes: float | None = None,
                    half_life: float | None = None,
                    update_s: float = UPDATE_S) -> tuple[ContinuousEvaluation, str,
                                                         dict[str, Any]]:
    """Run the static, adaptive and oracle arms of the cursor task under ``preset``.

    Parameters
    ----------
    make_decoder : callable
        New, unfitted continuous decoders.
    adapt : str
        ``--adapt``, as
        :func:`~bci_runtime.decoders.evaluate_continuous.resolve_continuous_strategies`
        takes it.
    preset : str
        A drift preset of :mod:`bci_runtime.simulators.drift`.
    seed : int
    minutes : float, optional
        Closed-loop minutes; :data:`MINUTES` by default.
    half_life : float, optional
        Strategies' half-life (s).
    update_s : float
        Seconds between two updates (and oracle refits).

    Returns
    -------
    evaluation : ContinuousEvaluation
    source : str
    extra : dict
        ``target``, ``simulation`` (timing) for the JSON output.
    """
    from bci_runtime.simulators.drift import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"--simulate {preset}: unknown drift preset",
                          hint=f"use one of: {', '.join(PRESETS)}")
    minutes = MINUTES if minutes is None else float(minutes)
    if not 1.0 <= minutes <= 600.0:
        raise ConfigError(f"--minutes {minutes:g}: the closed loop needs 1 to 600 minutes",
                          hint="e.g. --minutes 3 for a quick look; 9 by default")
    closed_s = minutes * 60.0
    onset_s = CALIBRATION_S + closed_s * 2.0 / 9.0  # stream time
    ramp_s = closed_s / 9.0

    def session() -> tuple[TruthTap, Any, int, np.ndarray, np.ndarray, str]:
        tap, features, bin_samples, kind = _setup(preset, seed, onset_s, ramp_s)
        X, V = record_open_loop(tap, CALIBRATION_S, bin_samples=bin_samples, features=features)
        return tap, features, bin_samples, X, V, kind

    def closed_loop(tap: TruthTap, decoder: Any, strategy: Any, features: Any,
                    bin_samples: int) -> CursorLoopResult:
        return run_cursor_loop(tap, decoder, closed_s, strategy=strategy,
                               target_radius=TARGET_SIZE, intended_speed=TASK_SPEED,
                               bin_samples=bin_samples, features=features, update_s=update_s)

    tap, features, bin_samples, X, V, kind = session()
    static = make_decoder().fit(X, V)
    names, skipped = resolve_continuous_strategies(adapt, static)
    results = {"static": closed_loop(tap, static, None, features, bin_samples)}
    for name in names:
        tap, features, bin_samples, X, V, _ = session()
        decoder = make_decoder().fit(X, V)
        strategy = make_continuous_strategy(name, decoder, DT, half_life)
        results[f"adaptive:{name}"] = closed_loop(tap, decoder, strategy, features, bin_samples)
    tap, features, bin_samples, X, V, _ = session()
    decoder = make_decoder().fit(X, V)
    oracle = Recalibration(make_decoder, tap, X, V, window=X.shape[0])
    results["oracle"] = closed_loop(tap, decoder, oracle, features, bin_samples)

    onset = int(round((onset_s - CALIBRATION_S) / DT))
    arms = {name: ContinuousArm(name, r.decoded, _scores(r, onset), truth=r.intended)
            for name, r in results.items()}
    known = np.ones(results["static"].n_bins, dtype=bool)
    drift_figures(arms, results["static"].intended, known, onset, DT)
    static_s, oracle_s = arms["static"].scores, arms["oracle"].scores
    for name in names:
        s = arms[f"adaptive:{name}"].scores
        s["recovery_fraction_targets"] = metrics.recovery_fraction(
            s["targets_per_min_after_onset"], static_s["targets_per_min_after_onset"],
            oracle_s["targets_per_min_after_onset"], min_gap=0.5)
    evaluation = ContinuousEvaluation(arms, names, int(X.shape[0]), results["static"].n_bins, DT,
                                      update_s, onset, round(onset_s - CALIBRATION_S, 3),
                                      skipped)
    units = "96 units" if kind == "population" else "64-channel ECoG, high gamma"
    source = f"simulator (continuous, {kind}, {preset}, seed {seed})"
    extra = {"target": ["vx", "vy"],
             "features": "spike counts" if kind == "population" else "log power 70-150 Hz",
             "simulation": {"signal": units, "calibration_s": CALIBRATION_S,
                            "closed_loop_s": closed_s,
                            "drift_onset_s": round(onset_s - CALIBRATION_S, 3),
                            "drift_ramp_s": round(ramp_s, 3), "rho": RHO,
                            "oracle": "refit every update on the last "
                            f"{CALIBRATION_S:g} s with the true intention"}}
    return evaluation, source, extra


def _scores(result: CursorLoopResult, onset: int) -> dict[str, Any]:
    """R², correlation and targets per minute: all, before ``onset`` (a bin), after."""
    out: dict[str, Any] = {}
    hits = np.array([b for b, _ in result.hits], dtype=np.int64)
    for part, sl in (("", slice(0, None)), ("_before_onset", slice(0, onset)),
                     ("_after_onset", slice(onset, None))):
        lo, hi, _ = sl.indices(result.n_bins)
        if hi - lo < 2:
            continue
        s = metrics.regression_scores(result.intended[sl], result.decoded[sl])
        out[f"r2{part}"], out[f"correlation{part}"] = s["r2"], s["correlation"]
        minutes = (hi - lo) * result.dt / 60.0
        out[f"targets_per_min{part}"] = round(float(((hits >= lo) & (hits < hi)).sum())
                                              / minutes, 2)
    return out
