"""``bci evaluate --paradigm continuous``: pseudo-online evaluation of the continuous decoders.

On recordings (``--train FILE... --test FILE...``), binned by
:mod:`~bci_runtime.decoders.continuous_recordings` (causal features per bin, the
target at each bin's end), three kinds of arms decode the test bins in time
order:

* **static**: fitted once on the training bins;
* **adaptive** (one per strategy): the same fit, then the test bins are decoded
  in periods of ``update_s`` seconds, each with the model of that moment, and
  only then given to the strategy with their true target (supervised CLDA:
  :class:`~bci_runtime.decoders.clda.SmoothBatch`, :class:`~bci_runtime.decoders.clda.RML`
  for the Kalman filter, :class:`~bci_runtime.decoders.clda.RidgePartialFit`
  for ridge);
* **oracle**: before each period, refitted from scratch on the most recent
  labelled bins (test bins first, topped up with the last training bins), as
  many as the static arm was trained on. A Kalman oracle keeps its filter
  state across refits (:meth:`~bci_runtime.decoders.continuous.KalmanDecoder.set_model`).

Nothing is fitted on a bin before it was decoded. Scores: R² (variance
explained, outputs pooled) and the mean correlation of decoded vs true target
(:func:`~bci_runtime.decoders.metrics.regression_scores`) over the test bins that
have a target. When the test recording holds a drift onset (a
``drift/<kind>/start`` marker, as the simulator writes), the same after it, and
for each adaptive arm the recovery fraction ``(adaptive - static) / (oracle -
static)`` of R² after the onset, the R² it lost to the oracle there
(``regret_r2``) and ``tau90_s``: seconds after the onset until its R² over the
last 30 s stays at or above 0.9 of its R² before the onset.

``--simulate PRESET`` runs the closed-loop cursor task instead:
:mod:`~bci_runtime.decoders.simulated_cursor`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bci_runtime.decoders import metrics
from bci_runtime.decoders.continuous_recordings import BIN_S, Binned, load_binned, parse_band
from bci_runtime.errors import ConfigError, DecoderError

__all__ = ["CONTINUOUS_STRATEGIES", "DECODER_PARAMS", "MIN_TRAIN_BINS", "ContinuousArm",
           "ContinuousEvaluation", "evaluate_binned", "make_continuous_strategy",
           "resolve_continuous_strategies", "run"]

#: seconds of test data between two updates of the adaptive arms (and refits of the oracle)
UPDATE_S = 1.0
#: default half-life of the strategies (s)
HALF_LIFE_S = 60.0
#: fewer training bins with a target than this are refused (5 s of 50 ms bins)
MIN_TRAIN_BINS = 100
#: seconds of labelled bins a part (before / after a drift onset) needs to be scored
MIN_PART_S = 5.0
#: window of the rolling R² of tau90 (s)
ROLLING_S = 30.0
#: the evaluation's settings of the catalog's continuous decoders (as bench/clda_cursor.py):
#: a little shrinkage keeps Q invertible with many channels, ridge is penalized
DECODER_PARAMS = {"kalman": {"shrinkage": 0.05}, "ridge": {"alpha": 100.0}}
#: strategy -> (module:class under bci_runtime.decoders, what it adapts, extra parameters);
#: ``--adapt all`` runs them in this order, the first is the JSON's "adaptive" arm
CONTINUOUS_STRATEGIES = {
    "rml": ("clda:RML", "kalman", {}),
    "smoothbatch": ("clda:SmoothBatch", "kalman", {"batch_s": 20.0}),
    "ridge-partial-fit": ("clda:RidgePartialFit", "ridge", {}),
}
_ALIASES = {"partial-fit": "ridge-partial-fit", "smooth-batch": "smoothbatch"}


@dataclass
class ContinuousArm:
    """What one arm decoded.

    Attributes
    ----------
    name : str
    decoded : ndarray, shape (n_bins, n_outputs)
    scores : dict
    failed_updates : list of str
        Updates the decoder refused (which bins and why); it kept decoding.
    truth : ndarray, shape (n_bins, n_outputs), optional
        This arm's own truth, when the arms do not share one (in closed loop,
        what the user intends depends on what the decoder did).
    """

    name: str
    decoded: np.ndarray
    scores: dict[str, Any] = field(default_factory=dict)
    failed_updates: list[str] = field(default_factory=list)
    truth: np.ndarray | None = None


@dataclass
class ContinuousEvaluation:
    """The outcome of :func:`evaluate_binned` (or of a simulated cursor session).

    Attributes
    ----------
    arms : dict of ContinuousArm
        ``static``, ``adaptive:<strategy>``... and ``oracle``, in that order.
    adaptive : list of str
        The strategies, one adaptive arm each.
    n_train, n_test : int
        Bins trained on and scored (bins with a target).
    dt : float
        Seconds per bin.
    update_s : float
        Seconds between two updates of the adaptive arms and refits of the oracle.
    drift_onset : int, optional
        First test bin of the drift.
    drift_onset_s : float, optional
        Its time (the test recording's clock; in a simulation, since the closed
        loop started).
    skipped : dict of str
        Strategies ``--adapt all`` left out, and why.
    """

    arms: dict[str, ContinuousArm]
    adaptive: list[str]
    n_train: int
    n_test: int
    dt: float
    update_s: float
    drift_onset: int | None = None
    drift_onset_s: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form, shaped as the classification paradigms'."""
        out: dict[str, Any] = {"arms": {"static": dict(self.arms["static"].scores)},
                               "n_train": self.n_train, "n_test": self.n_test,
                               "bin_s": round(self.dt, 6), "update_s": self.update_s}
        drift_keys = ("recovery_fraction", "recovery_fraction_targets", "tau90_s", "regret_r2")
        if self.adaptive:
            first = self.arms[f"adaptive:{self.adaptive[0]}"].scores
            out["arms"]["adaptive"] = {"strategy": self.adaptive[0],
                                       **{k: v for k, v in first.items()
                                          if k not in drift_keys}}
            for k in drift_keys:
                if k in first:
                    out[k] = first[k]
        out["arms"]["oracle"] = dict(self.arms["oracle"].scores)
        out["strategies"] = {name: self.arms[f"adaptive:{name}"].scores
                             for name in self.adaptive}
        if self.skipped:
            out["strategies_skipped"] = self.skipped
        if self.drift_onset is not None:
            out["drift_onset_bin"] = self.drift_onset
            out["drift_onset_s"] = self.drift_onset_s
            out["static_after_onset"] = self.arms["static"].scores.get("r2_after_onset")
            out["oracle_after_onset"] = self.arms["oracle"].scores.get("r2_after_onset")
        return out


# -- strategies ---------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def _applies(name: str, decoder: Any) -> str | None:
    """Why strategy ``name`` cannot adapt ``decoder``; None when it can."""
    from bci_runtime.decoders.continuous import KalmanDecoder

    kind = CONTINUOUS_STRATEGIES[name][1]
    if kind == "kalman" and not isinstance(decoder, KalmanDecoder):
        return f"it adapts a Kalman filter's observation model, not {type(decoder).__name__}"
    if kind == "ridge" and not hasattr(decoder, "partial_fit"):
        return f"{type(decoder).__name__} has no partial_fit"
    return None


def resolve_continuous_strategies(adapt: str, decoder: Any) -> tuple[list[str], dict[str, str]]:
    """``--adapt`` -> the strategies to run (one arm each) and those ``all`` left out.

    Parameters
    ----------
    adapt : str
        ``none``, ``all``, a strategy or several joined by commas; ``name@S``
        sets its half-life to ``S`` seconds.
    decoder : estimator
        The fitted decoder, to check that each strategy applies.

    Raises
    ------
    ConfigError
        An unknown strategy (the message lists the continuous ones), a malformed
        half-life, a stack ``a+b``, or a strategy that cannot adapt the decoder.
    """
    if adapt == "none":
        return [], {}
    if adapt == "all":
        names, skipped = [], {}
        for name in CONTINUOUS_STRATEGIES:
            reason = _applies(name, decoder)
            if reason is None:
                names.append(name)
            else:
                skipped[name] = reason
        return names, skipped
    names = [a.strip() for a in adapt.split(",") if a.strip()]
    known = ", ".join(CONTINUOUS_STRATEGIES)
    for item in names:
        if "+" in item:
            raise ConfigError(f"--adapt {item}: continuous decoders take one strategy per arm",
                              hint=f"give them as separate arms, e.g. --adapt smoothbatch,rml "
                              f"(strategies: {known})")
        base, _, half_life = item.partition("@")
        if _canonical(base) not in CONTINUOUS_STRATEGIES:
            raise ConfigError(f"--adapt {item}: unknown strategy '{base}' for --paradigm "
                              "continuous",
                              hint=f"choose {known}, 'all' or 'none' (the classification "
                              "strategies do not adapt a continuous decoder)")
        if half_life:
            _half_life(item, half_life)
        reason = _applies(_canonical(base), decoder)
        if reason is not None:
            raise ConfigError(f"--adapt {item}: {base} cannot adapt this decoder: {reason}",
                              hint="--adapt all picks the strategies that apply "
                              "(smoothbatch, rml: kalman; ridge-partial-fit: ridge)")
    return names, {}


def _half_life(item: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ConfigError(f"--adapt {item}: '{text}' is not a half-life in seconds",
                          hint="write STRATEGY@SECONDS, e.g. rml@30")
    return value


def make_continuous_strategy(item: str, decoder: Any, dt: float,
                             half_life: float | None = None) -> Any:
    """A CLDA strategy, fitted on ``decoder``.

    Parameters
    ----------
    item : str
        A strategy name, optionally ``name@S`` (half-life ``S`` seconds, over ``half_life``).
    decoder : estimator
        The fitted decoder it will adapt.
    dt : float
        Seconds per bin.
    half_life : float, optional
        Seconds; :data:`HALF_LIFE_S` by default.
    """
    import importlib

    base, _, own = item.partition("@")
    target, _, extra = CONTINUOUS_STRATEGIES[_canonical(base)]
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(f"bci_runtime.decoders.{module}"), cls_name)
    seconds = _half_life(item, own) if own else (half_life or HALF_LIFE_S)
    return cls(half_life=seconds, dt=dt, **extra).fit(decoder)


def make_decoder_factory(entry: Any, context: Any) -> Callable[[], Any]:
    """New, unfitted decoders of a catalog entry with the evaluation's settings."""
    params = {} if entry.params else DECODER_PARAMS.get(entry.name, {})

    def make() -> Any:
        decoder = entry.make(context)
        return decoder.set_params(**params) if params else decoder
    return make


# -- the arms -----------------------------------------------------------------------------------
def evaluate_binned(make_decoder: Callable[[], Any], train: Binned, test: Binned,
                    adapt: str = "all", *, update_s: float = UPDATE_S,
                    half_life: float | None = None,
                    oracle_window: int | None = None) -> ContinuousEvaluation:
    """Run the static, adaptive and oracle arms over ``test``, in time order.

    Parameters
    ----------
    make_decoder : callable
        Returns a new, unfitted continuous decoder (``fit(X, Y)``, ``predict``;
        ``step`` for a streaming one).
    train, test : Binned
    adapt : str
        See :func:`resolve_continuous_strategies`.
    update_s : float
        Seconds of test data between two updates (and oracle refits).
    half_life : float, optional
        Overrides each strategy's half-life (s).
    oracle_window : int, optional
        Bins the oracle refits on; the static arm's training bins by default.

    Raises
    ------
    ConfigError
        Too few training bins with a target, none in the test data, or a
        different number of channels or target columns in train and test.
    """
    Binned.concatenate([train, test])  # the same channels, target and bins: or say which differ
    tk, sk = train.known, test.known
    if int(tk.sum()) < MIN_TRAIN_BINS:
        raise ConfigError(f"only {int(tk.sum())} training bins have a target "
                          f"({', '.join(train.sources)}); at least {MIN_TRAIN_BINS} are needed "
                          f"({MIN_TRAIN_BINS * train.dt:g} s of {train.dt * 1000:g} ms bins)",
                          hint="train on longer recordings, or give more --train files")
    if int(sk.sum()) < 2:
        raise ConfigError(f"the test recordings ({', '.join(test.sources)}) have "
                          f"{int(sk.sum())} bins with a target: nothing to score",
                          hint="test on a recording that holds the kinematics")
    static = make_decoder().fit(train.X[tk], train.Y[tk])
    names, skipped = resolve_continuous_strategies(adapt, static)
    every = max(1, int(round(update_s / test.dt)))
    arms = {"static": ContinuousArm("static", _as_2d(static.predict(test.X)))}
    for name in names:
        decoder = copy.deepcopy(static)
        strategy = make_continuous_strategy(name, decoder, test.dt, half_life)

        def learn(model: Any, start: int, end: int, strategy: Any = strategy) -> None:
            k = sk[start:end]
            if k.any():
                strategy.update(test.X[start:end], np.where(k[:, None], test.Y[start:end], 0.0),
                                model, sample_weight=k.astype(np.float64))
        arms[f"adaptive:{name}"] = _pseudo_online(f"adaptive:{name}", decoder, test.X, every,
                                                  learn)
    arms["oracle"] = _oracle(make_decoder, static, train, test, every,
                             oracle_window or int(tk.sum()))
    onset = test.drift_onset
    for arm in arms.values():
        arm.scores = _scores(test.Y, arm.decoded, sk, onset, int(round(MIN_PART_S / test.dt)))
        if arm.failed_updates:
            arm.scores["updates_failed"] = len(arm.failed_updates)
            arm.scores["first_failure"] = arm.failed_updates[0]
    if onset is not None:
        drift_figures(arms, test.Y, sk, onset, test.dt)
    return ContinuousEvaluation(arms, names, int(tk.sum()), int(sk.sum()), test.dt, update_s,
                                onset,
                                None if onset is None else round(float(test.t[onset]), 3),
                                skipped)


def _as_2d(y: Any) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y


def _pseudo_online(name: str, decoder: Any, X: np.ndarray, every: int,
                   learn: Callable[[Any, int, int], None]) -> ContinuousArm:
    """Decode ``X`` in periods of ``every`` bins; after each, ``learn(decoder, start, end)``."""
    n = X.shape[0]
    streaming = hasattr(decoder, "step")
    if streaming:
        decoder.reset()
    out: np.ndarray | None = None
    failed: list[str] = []
    for start in range(0, n, every):
        end = min(n, start + every)
        if streaming:
            chunk = np.stack([decoder.step(X[i]) for i in range(start, end)])
        else:
            chunk = _as_2d(decoder.predict(X[start:end]))
        if out is None:
            out = np.empty((n, chunk.shape[1]))
        out[start:end] = chunk
        if end < n:
            try:
                learn(decoder, start, end)
            except DecoderError as exc:  # as online: the serving model stays as it was
                failed.append(f"bins {start}-{end - 1}: {exc.message}")
    arm = ContinuousArm(name, out if out is not None else np.empty((0, 0)))
    arm.failed_updates = failed
    return arm


def _oracle(make_decoder: Callable[[], Any], static: Any, train: Binned, test: Binned,
            every: int, window: int) -> ContinuousArm:
    """Refit on the ``window`` most recent labelled bins before each period."""
    tk, sk = train.known, test.known
    pool_X = np.concatenate([train.X[tk], test.X[sk]])
    pool_Y = np.concatenate([train.Y[tk], test.Y[sk]])
    before = np.concatenate([[0], np.cumsum(sk)])  # labelled test bins before each bin
    n_train = int(tk.sum())

    def refit(model: Any, start: int, end: int) -> None:
        stop = n_train + int(before[end])
        Xw, Yw = pool_X[max(0, stop - window):stop], pool_Y[max(0, stop - window):stop]
        if hasattr(model, "set_model"):  # a new model, the filter's state kept
            fresh = make_decoder().fit(Xw, Yw)
            model.set_model(A=fresh.A_, W=fresh.W_, C=fresh.C_, d=fresh.d_, Q=fresh.Q_)
        else:
            model.fit(Xw, Yw)
    return _pseudo_online("oracle", copy.deepcopy(static), test.X, every, refit)


# -- scores -------------------------------------------------------------------------------------
def _scores(Y: np.ndarray, decoded: np.ndarray, known: np.ndarray,
            onset: int | None, min_bins: int) -> dict[str, Any]:
    """R² and correlation over the labelled bins; before and after ``onset`` too.

    A part with fewer than ``min_bins`` labelled bins is not scored (a second
    of data says nothing of a decoder).
    """
    scores: dict[str, Any] = dict(metrics.regression_scores(Y[known], decoded[known]))
    if onset is not None:
        for part, sl in (("before_onset", slice(0, onset)), ("after_onset", slice(onset, None))):
            k = known[sl]
            if k.sum() >= min_bins:
                s = metrics.regression_scores(Y[sl][k], decoded[sl][k])
                scores[f"r2_{part}"] = s["r2"]
                scores[f"correlation_{part}"] = s["correlation"]
    return scores


def drift_figures(arms: dict[str, ContinuousArm], Y: np.ndarray, known: np.ndarray,
                  onset: int, dt: float) -> None:
    """Recovery fraction, R² regret and tau90 of each adaptive arm (in its scores).

    Parameters
    ----------
    arms : dict of ContinuousArm
        ``static``, ``oracle`` and ``adaptive:<name>`` arms, scored already
        (``r2_after_onset``).
    Y : ndarray, shape (n_bins, n_outputs)
        The truth, for arms that have none of their own.
    known : ndarray of bool, shape (n_bins,)
    onset : int
        First bin of the drift.
    dt : float
        Seconds per bin.
    """
    static, oracle = arms["static"].scores, arms["oracle"].scores
    if "r2_after_onset" not in static:
        return
    window = max(2, int(round(ROLLING_S / dt)))
    for name, arm in arms.items():
        if not name.startswith("adaptive:"):
            continue
        s = arm.scores
        s["recovery_fraction"] = metrics.recovery_fraction(
            s["r2_after_onset"], static["r2_after_onset"], oracle["r2_after_onset"])
        s["regret_r2"] = round(oracle["r2_after_onset"] - s["r2_after_onset"], 4)
        truth = Y if arm.truth is None else arm.truth
        s["tau90_s"] = tau90_seconds(truth, arm.decoded, known, onset, window, dt)


def rolling_r2(Y: np.ndarray, decoded: np.ndarray, known: np.ndarray,
               window: int) -> np.ndarray:
    """R² over the last ``window`` bins (fewer at the start), outputs pooled.

    Parameters
    ----------
    Y, decoded : ndarray, shape (n_bins, n_outputs)
    known : ndarray of bool, shape (n_bins,)
        Bins that count.
    window : int

    Returns
    -------
    ndarray, shape (n_bins,)
        NaN where the window holds fewer than two labelled bins or no variance.
    """
    w = known.astype(np.float64)
    y = np.where(known[:, None], Y, 0.0)
    e = np.where(known[:, None], Y - decoded, 0.0)

    def windowed(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.concatenate([np.zeros((1,) + a.shape[1:]), a]), axis=0)
        lo = np.maximum(np.arange(1, a.shape[0] + 1) - window, 0)
        return c[1:] - c[lo]

    n = windowed(w)
    sy, syy, see = windowed(y), windowed(y * y), windowed(e * e)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = (syy - sy * sy / np.maximum(n, 1)[:, None]).sum(axis=1)
        r2 = 1.0 - see.sum(axis=1) / total
    r2[(n < 2) | ~(total > 0)] = np.nan
    return r2


def tau90_seconds(Y: np.ndarray, decoded: np.ndarray, known: np.ndarray, onset: int,
                  window: int, dt: float) -> float | None:
    """Seconds after ``onset`` until the rolling R² stays at or above 0.9 x its R² before.

    Parameters
    ----------
    Y, decoded : ndarray, shape (n_bins, n_outputs)
    known : ndarray of bool, shape (n_bins,)
    onset : int
    window : int
        Bins of the rolling R² (:func:`rolling_r2`).
    dt : float
        Seconds per bin.

    Returns
    -------
    float or None
        None when fewer than half a window of labelled bins precede the onset,
        the R² before it is not positive, or the arm never recovers.
    """
    k = known[:onset]
    if onset <= 0 or k.sum() < window // 2 or onset >= len(known):
        return None
    before = metrics.regression_scores(Y[:onset][k], decoded[:onset][k])["r2"]
    if not before > 0:
        return None
    after = rolling_r2(Y, decoded, known, window)[onset:]
    below = np.flatnonzero(~(after >= 0.9 * before) & np.isfinite(after))
    if below.size == 0:
        return 0.0
    last = int(below[-1]) + 1
    return round(last * dt, 2) if last < len(after) else None


# -- the command --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """``bci evaluate --paradigm continuous``: on files or ``--simulate``; the exit code."""
    from bci_runtime.decoders import catalog
    from bci_runtime.decoders.simulated_trials import recommended

    for option, flag in (("events", "--events"), ("freqs", "--freqs"), ("tmin", "--tmin"),
                         ("tmax", "--tmax"), ("report", "--report")):
        if getattr(args, option, None) is not None:
            raise ConfigError(f"{flag} does not apply to --paradigm continuous",
                              hint="continuous decoding has no trials: it decodes every "
                              "bin; name the kinematics with --target")
    if args.simulate:
        if args.train or args.test:
            raise ConfigError("--simulate replaces --train/--test",
                              hint="give either --simulate PRESET or --train/--test files")
        # the recommended decoder and strategy, unless asked otherwise; another decoder gets
        # every strategy that adapts it
        best_decoder, best_adapt = recommended("continuous")
        decoder_name = args.decoder or best_decoder
        adapt = args.adapt or (best_adapt if decoder_name == best_decoder else "all")
    else:
        decoder_name = args.decoder or catalog.default_decoder("continuous")
        adapt = args.adapt or "all"
    entry = catalog.get(decoder_name, "continuous")  # an unknown name fails before any loading
    make = make_decoder_factory(entry, catalog.DecoderContext(sfreq=1.0 / BIN_S, classes=[],
                                                              seed=args.seed))
    half_life = getattr(args, "half_life", None)
    if half_life is not None and not half_life > 0:
        raise ConfigError(f"--half-life {half_life}: must be > 0 seconds")
    if args.simulate:
        from bci_runtime.decoders.simulated_cursor import simulate_cursor

        minutes = getattr(args, "minutes", None)
        result, source, extra = simulate_cursor(make, adapt, args.simulate, seed=args.seed,
                                                minutes=minutes, half_life=half_life)
    else:
        if getattr(args, "minutes", None) is not None:
            raise ConfigError("--minutes sets the length of --simulate; recordings are "
                              "evaluated whole")
        train, test = _file_bins(args)
        result = evaluate_binned(make, train, test, adapt, half_life=half_life)
        source = "files"
        extra = {"target": train.target_names, "features": train.features}
    out = {"ok": True, "paradigm": "continuous", "decoder": entry.name, "source": source,
           **extra, **result.as_dict()}
    if args.json:
        print(json.dumps(out))
    else:
        print_table(out, result)
    return 0


def _file_bins(args: argparse.Namespace) -> tuple[Binned, Binned]:
    if not args.train or not args.test:
        raise ConfigError("give --train FILE... and --test FILE... (or --simulate PRESET)",
                          hint="e.g. bci evaluate --paradigm continuous --train day1.xdf "
                          "--test day2.xdf --target vx,vy")
    band = parse_band(getattr(args, "band", None))
    target = getattr(args, "target", None)
    parts = {role: [load_binned(p, target, band) for p in files]
             for role, files in (("train", args.train), ("test", args.test))}
    return Binned.concatenate(parts["train"]), Binned.concatenate(parts["test"])


def print_table(out: dict[str, Any], result: ContinuousEvaluation) -> None:
    """The evaluation as a few readable lines."""
    what = f"target {', '.join(out['target'])}; " if "target" in out else ""
    print(f"{out['decoder']} on {out['source']}: {out['n_train']} training bins, "
          f"{out['n_test']} test bins of {result.dt * 1000:g} ms; {what}"
          f"{out.get('features', '')}".rstrip("; "))
    onset = result.drift_onset is not None
    sim = "targets_per_min" in result.arms["static"].scores
    head = f"  {'arm':26s} {'R2':>7s} {'corr':>6s}"
    if onset:
        head += f" {'R2 before':>9s} {'after':>6s}"
    if sim:
        head += f" {'targets/min':>11s}" + (f" {'before':>6s} {'after':>6s}" if onset else "")
    print(head)
    for name, arm in result.arms.items():
        s = arm.scores
        line = f"  {name:26s} {s['r2']:7.3f} {s['correlation']:6.3f}"
        if onset:
            line += f" {s.get('r2_before_onset', math.nan):9.3f} " \
                    f"{s.get('r2_after_onset', math.nan):6.3f}"
        if sim:
            line += f" {s['targets_per_min']:11.1f}"
            if onset:
                line += f" {s.get('targets_per_min_before_onset', math.nan):6.1f} " \
                        f"{s.get('targets_per_min_after_onset', math.nan):6.1f}"
        if "recovery_fraction" in s:
            tau = "-" if s["tau90_s"] is None else f"{s['tau90_s']:g} s"
            line += (f"   recovery {s['recovery_fraction']}  tau90 {tau}  "
                     f"regret R2 {s['regret_r2']}")
        print(line)
    if onset:
        print(f"  (drift onset at {result.drift_onset_s} s; recovery = (adaptive - static) / "
              "(oracle - static) of R2 after it)")
    for name, arm in result.arms.items():
        if arm.failed_updates:
            print(f"  ({name}: {len(arm.failed_updates)} update(s) refused, the model kept "
                  f"decoding; first: {arm.failed_updates[0]})")
    for name, why in out.get("strategies_skipped", {}).items():
        print(f"  (skipped {name}: {why})")
