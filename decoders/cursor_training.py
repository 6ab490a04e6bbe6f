"""The training step of the calibration wizard for the continuous cursor.

:func:`train_cursor_from_recordings` is the cursor's counterpart of
:func:`~bci_runtime.decoders.calibration_training.train_from_recordings`: it
reads the XDF recordings of one calibration (several runs when it was
interrupted and resumed, taken in order) as binned features and cursor velocity
(:func:`~bci_runtime.decoders.continuous_recordings.load_binned`, target
``vx,vy``: the simulator's ground truth, or the kinematics of a ``center_out``
task), cross-validates a velocity Kalman filter on them, fits it on all of them,
saves it with its feature settings as a
:class:`~bci_runtime.decoders.cursor_model.CursorModel`, and returns a JSON-ready
report for the wizard's page:

* **cross-validation**: blocked k-fold (5 contiguous stretches of the
  calibration, not shuffled: neighbouring bins are alike and would leak across a
  random split); a fresh filter per fold, fitted on the other stretches, decodes
  its stretch from rest; the decoded velocities are pooled into one R²;
* **chance level**: the same cross-validation with the velocity circularly
  shifted against the signal by 10 s or more (so that the signal cannot predict
  it, but its statistics stay the same); the 95th percentile of these R² is the
  chance threshold;
* **verdict**: good enough when the R² is above the chance threshold *and*
  reaches ``min_r2``; the reasons say why in plain words, and what to do when
  it is not;
* **figures**: the decoded against the intended velocity over a held-out
  stretch, and how strongly each channel is tuned to the velocity (drawn on the
  grid when the channel names or count give one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.decoders.calibration_training import _names, _Progress
from bci_runtime.errors import ConfigError

__all__ = ["KALMAN_SHRINKAGE", "MIN_SECONDS", "train_cursor_from_recordings"]

#: seconds of calibration with a known cursor velocity needed to train (the wizard records
#: at least 20 s, of which its start-up may take a few hundred ms)
MIN_SECONDS = 15.0
#: the chance level's shifts move the velocity at least this far from the signal (s), or a
#: third of the recording when that is shorter (a reach lasts about 2.5 s)
MIN_SHIFT_S = 10.0
SIGNIFICANCE = 0.95
#: Q pulled a little toward its diagonal (as ``bci evaluate --paradigm continuous``)
KALMAN_SHRINKAGE = 0.05
#: seconds of decoded velocity drawn
TRACE_S = 20.0
#: one axis this much worse in R² than the other is pointed out
AXIS_GAP = 0.2
#: fold R² this far apart: the signal changed during the calibration
FOLD_SPREAD = 0.4
TARGET = "vx,vy"
AXES = ("vx", "vy")
AXIS_WORDS = {"vx": "left-right", "vy": "up-down"}
ADVICE = ("check the grid's contact with the cortex and the impedance of its electrodes, check "
          "that the patient follows the cursor with the intended movement (attempted or "
          "imagined) the whole time, and record a longer calibration (the recorded runs are "
          "kept)")
RECORD_LONGER = "record a longer calibration: the recorded runs are kept"
PATTERNS_NOTE = ("The decoded velocity against the one the cursor moved with, on a stretch of "
                 "the calibration the decoder was not trained on; and how strongly each "
                 "channel's signal follows the velocity (its tuning over its noise).")


def train_cursor_from_recordings(paths: Sequence[Path], *, model_path: Path,
                                 bad_channels: Sequence[str] = (),
                                 band: tuple[float, float] | None | str = "auto",
                                 bin_s: float = 0.05, adapt: str = "rml", min_r2: float = 0.3,
                                 n_folds: int = 5, n_shifts: int = 20, seed: int = 0,
                                 progress: Callable[[str, float], None] | None = None
                                 ) -> dict[str, Any]:
    """Train a cursor velocity decoder on calibration recordings; report whether it is good enough.

    Parameters
    ----------
    paths : sequence of Path
        XDF recordings of the calibration, in time order; their bins are
        concatenated. Each holds a neural signal and a stream with channels
        ``vx`` and ``vy`` (the cursor's velocity).
    model_path : Path
        Where the fitted :class:`~bci_runtime.decoders.cursor_model.CursorModel`
        is saved (:func:`~bci_runtime.decoders.model_store.save_model`).
    bad_channels : sequence of str
        Channels left out.
    band : (float, float), "auto", "none" or None
        Band (Hz) of the log power features; ``"auto"`` picks it by signal type
        (70-150 Hz high gamma for ECoG); ``"none"`` or None: the mean of each
        bin (spike counts).
    bin_s : float
        Seconds per bin (rounded to whole samples).
    adapt : {"rml", "smoothbatch", "none"}
        Co-adaptation strategy of the online decoder (reported for the
        profile; the saved model is the calibrated filter).
    min_r2 : float
        Cross-validated R² needed to be good enough.
    n_folds : int
        Contiguous folds of the cross-validation (2-20).
    n_shifts : int
        Circular shifts of the velocity that make the chance level (at least 5).
    seed : int
        Seed of the shifts.
    progress : callable, optional
        ``progress(stage, fraction)``, fraction non-decreasing in [0, 1].

    Returns
    -------
    dict
        JSON-ready: ``paradigm, decoder, adapt, channels, bad_channels, sfreq,
        band, features, bin_s, n_bins, seconds, recordings, r2, r2_per_axis {vx,
        vy}, correlation {vx, vy}, fold_r2, chance_r2, null_r2, min_r2,
        above_chance, good_enough, reasons, patterns [{title, png}],
        patterns_note, model {path, sha256}``. A value that cannot be computed
        (a correlation of a constant) is None.

    Raises
    ------
    ConfigError
        Bad options (band, bin length, adaptation, folds, shifts, an unknown bad
        channel), recordings without a signal or ``vx, vy``, recordings that do
        not go together, or less than 20 s of calibration with a known velocity.
    RecordingError
        A recording cannot be read.
    """
    from bci_runtime.decoders.cursor_model import CursorModel
    from bci_runtime.decoders.model_store import file_sha256, save_model

    advance = _Progress(progress)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no calibration recording was given",
                          hint="record the calibration first")
    adapt = _check_adapt(adapt)
    band_arg = _check_band(band)
    bin_s = _check_positive(bin_s, "bin_s", "seconds per bin, e.g. 0.05")
    n_folds = _check_int(n_folds, "n_folds", 2, 20)
    n_shifts = _check_int(n_shifts, "n_shifts", 5, 10000)
    min_r2 = _check_min_r2(min_r2)
    bad = [bad_channels] if isinstance(bad_channels, str) else [str(c) for c in bad_channels]

    binned, srate = _read_binned(paths, band_arg, bin_s, advance)
    model_band = _resolved_band(binned.features, band_arg)
    X, V, channels = _labelled(binned, bad, paths)
    seconds = X.shape[0] * binned.dt
    if seconds < MIN_SECONDS:
        raise ConfigError(f"only {seconds:.1f} s of calibration with a known cursor velocity "
                          f"were recorded in {_names(paths)} (at least {MIN_SECONDS:g} s are "
                          "needed to train)", hint=RECORD_LONGER)
    if not (np.ptp(V, axis=0) > 0).all():
        still = [a for a, moved in zip(AXES, np.ptp(V, axis=0) > 0) if not moved]
        raise ConfigError(f"the cursor velocity ({', '.join(still)}) never changed during the "
                          f"calibration in {_names(paths)}",
                          hint="record the calibration with the cursor moving to the targets")

    folds = _blocked_folds(X.shape[0], n_folds)
    decoded = _cross_validate(X, V, folds,
                              lambda i: advance(f"cross-validation: fold {i + 1} of {n_folds}",
                                                0.2 + 0.3 * i / n_folds))
    scores = _scores(V, decoded, folds)
    null = _null_r2(X, V, folds, _shifts(X.shape[0], binned.dt, n_shifts, seed), advance)
    chance = float(np.percentile(null, 100 * SIGNIFICANCE))
    above = scores["r2"] is not None and scores["r2"] > chance
    good = above and scores["r2"] >= min_r2
    reasons = _reasons(scores, chance, len(null), min_r2) + _advice(good, above)

    advance("fitting the decoder on the whole calibration", 0.85)
    decoder = _kalman().fit(X, V)
    advance("drawing the figures", 0.9)
    patterns, patterns_note = cursor_figures(V, decoded, folds, binned.dt, decoder, channels,
                                             bad)
    model = CursorModel(decoder, channels, srate,
                        "mean" if model_band is None else "band-power",
                        None if model_band is None else list(model_band), float(binned.dt))
    advance("saving the decoder", 0.95)
    save_model(model, model_path)
    advance("done", 1.0)
    return {
        "paradigm": "cursor", "decoder": "kalman", "adapt": adapt,
        "channels": channels, "bad_channels": bad, "sfreq": srate,
        "band": None if model_band is None else list(model_band),
        "features": binned.features, "bin_s": float(binned.dt),
        "n_bins": int(X.shape[0]), "seconds": float(seconds),
        "recordings": [str(p) for p in paths],
        "r2": scores["r2"], "r2_per_axis": scores["r2_per_axis"],
        "correlation": scores["correlation"], "fold_r2": scores["fold_r2"],
        "chance_r2": chance, "null_r2": [float(v) for v in null], "min_r2": min_r2,
        "above_chance": bool(above), "good_enough": bool(good), "reasons": reasons,
        "patterns": patterns, "patterns_note": patterns_note,
        "model": {"path": str(model_path), "sha256": file_sha256(model_path)},
    }


# -- options --------------------------------------------------------------------------------

def _adapt_choices() -> list[str]:
    """The continuous strategies that adapt a Kalman filter, and "none"."""
    from bci_runtime.decoders.evaluate_continuous import CONTINUOUS_STRATEGIES

    return [n for n, (_, kind, _) in CONTINUOUS_STRATEGIES.items() if kind == "kalman"] + ["none"]


def _check_adapt(adapt: Any) -> str:
    choices = _adapt_choices()
    name = str(adapt).strip().lower()
    if name not in choices:
        raise ConfigError(f"unknown adaptation '{adapt}' for the cursor's Kalman filter",
                          hint=f"choose one of: {', '.join(choices)}")
    return name


def _check_band(band: Any) -> tuple[float, float] | str:
    """``"auto"``, ``"none"`` or a checked ``(low, high)``."""
    if band is None:
        return "none"
    if isinstance(band, str):
        word = band.strip().lower()
        if word in ("auto", "none"):
            return word
        raise ConfigError(f"band '{band}' is not 'auto', 'none' nor [low, high] in Hz",
                          hint="e.g. [70, 150] (high gamma), 'auto' (by signal type) or "
                          "'none' (bin means, for spike counts)")
    try:
        low, high = (float(v) for v in band)
    except (TypeError, ValueError):
        raise ConfigError(f"band {band!r} is not [low, high] in Hz",
                          hint="e.g. [70, 150] (high gamma)") from None
    if not (math.isfinite(high) and 0 < low < high):
        raise ConfigError(f"band {low:g}-{high:g} Hz: need 0 < low < high",
                          hint="e.g. [70, 150] (high gamma)")
    return low, high


def _check_positive(value: Any, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{name} {value!r} is not a positive number", hint=hint)
    return number


def _check_min_r2(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number <= 1.0):
        raise ConfigError(f"min_r2 {value!r} is not an R² (a number up to 1)",
                          hint="e.g. 0.3: the decoded velocity explains 30 % of the intended")
    return number


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= int(value) <= high:
        raise ConfigError(f"{name} {value!r} is not a whole number in {low}..{high}")
    return int(value)


# -- data -----------------------------------------------------------------------------------

def _read_binned(paths: list[Path], band: tuple[float, float] | str, bin_s: float,
                 advance: _Progress) -> tuple[Any, float]:
    """Every recording binned, concatenated; and the sampling rate of their signal."""
    from bci_runtime.decoders.continuous_recordings import Binned, load_binned

    parts, rates = [], []
    for i, path in enumerate(paths):
        advance(f"reading {path.name}", 0.2 * i / len(paths))
        part = load_binned(path, target=TARGET, band=None if band == "auto" else band,
                           bin_s=bin_s)
        parts.append(part)
        rates.append(_signal_rate(path, part.feature_names))
    if len(set(rates)) > 1:
        listing = ", ".join(f"{p.name} {r:g} Hz" for p, r in zip(paths, rates))
        raise ConfigError(f"the calibration runs were sampled at different rates ({listing})",
                          hint="train on runs recorded with the same amplifier settings")
    for part, path in zip(parts[1:], paths[1:]):
        if part.feature_names != parts[0].feature_names:
            raise ConfigError(f"{path.name} has other channels than {paths[0].name}",
                              hint="train on runs recorded with the same grid and montage")
    advance("binning done", 0.2)
    return Binned.concatenate(parts), rates[0]


def _signal_rate(path: Path, feature_names: list[str]) -> float:
    """Sampling rate (Hz) of the stream whose channels the features were computed from.

    :func:`~bci_runtime.decoders.continuous_recordings.load_binned` does not
    return it; the model needs it, so that the online features are computed
    alike. The nominal rate, or the measured one of an irregular stream.
    """
    from bci_runtime.decoders.continuous_recordings import NEURAL_STREAM_TYPES
    from bci_runtime.drivers.recordings import load_recording

    wanted = set(feature_names)
    found = [s for s in load_recording(path).signals() if wanted <= set(s.spec.channel_names)]
    found.sort(key=lambda s: s.spec.type.lower() not in NEURAL_STREAM_TYPES)
    if not found:  # load_binned found it: cannot happen with the same file
        raise ConfigError(f"'{path}': no stream holds the channels "
                          f"{', '.join(feature_names[:6])}")
    stream = found[0]
    if stream.spec.srate > 0:
        return float(stream.spec.srate)
    span = float(stream.timestamps[-1] - stream.timestamps[0])
    return (stream.n_samples - 1) / span


def _resolved_band(features: str, band: tuple[float, float] | str) -> tuple[float, float] | None:
    """The band the features were computed in, None for bin means.

    ``"auto"`` was resolved by signal type inside ``load_binned``; its
    description (``log power 70-150 Hz, 50 ms bins`` or ``bin means, ...``)
    says which band it chose.
    """
    if band == "none" or features.startswith("bin means"):
        return None
    if not isinstance(band, str):
        return band
    found = re.match(r"log power ([0-9.e+-]+)-([0-9.e+-]+) Hz", features)
    if found is None:  # load_binned describes its features so
        raise ConfigError(f"cannot tell the band of the features '{features}'",
                          hint="give the band explicitly, e.g. [70, 150]")
    return float(found.group(1)), float(found.group(2))


def _labelled(binned: Any, bad: list[str], paths: list[Path]
              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of the good channels and velocity, of the bins with a known velocity.

    Returns
    -------
    X : ndarray, shape (n_bins, n_channels)
    V : ndarray, shape (n_bins, 2)
    channels : list of str, shape (n_channels,)
    """
    names = list(binned.feature_names)
    unknown = [c for c in bad if c not in names]
    if unknown:
        raise ConfigError(f"bad channel(s) {', '.join(map(repr, unknown))} not in "
                          f"{_names(paths)}", hint=f"its channels are: {', '.join(names)}")
    keep = [i for i, c in enumerate(names) if c not in set(bad)]
    if not keep:
        raise ConfigError(f"every channel of {_names(paths)} is marked bad",
                          hint="a decoder needs at least one good channel: fix electrodes")
    known = binned.known
    X = np.ascontiguousarray(binned.X[known][:, keep])
    return X, np.asarray(binned.Y[known], dtype=np.float64), [names[i] for i in keep]


# -- cross-validation and chance --------------------------------------------------------------

def _kalman() -> Any:
    from bci_runtime.decoders.continuous import KalmanDecoder

    return KalmanDecoder(shrinkage=KALMAN_SHRINKAGE)


def _blocked_folds(n: int, n_folds: int) -> list[np.ndarray]:
    """``n_folds`` contiguous stretches of ``n`` bins, in time order."""
    return np.array_split(np.arange(n), n_folds)


def _cross_validate(X: np.ndarray, V: np.ndarray, folds: list[np.ndarray],
                    on_fold: Callable[[int], None] | None = None) -> np.ndarray:
    """Decoded velocity of every bin by a filter fitted on the other folds.

    Returns
    -------
    ndarray, shape (n_bins, 2)
        Each fold filtered from rest.
    """
    decoded = np.empty_like(V)
    for i, test in enumerate(folds):
        if on_fold is not None:
            on_fold(i)
        train = np.ones(X.shape[0], dtype=bool)
        train[test] = False
        decoded[test] = _kalman().fit(X[train], V[train]).predict(X[test])
    return decoded


def _scores(V: np.ndarray, decoded: np.ndarray, folds: list[np.ndarray]) -> dict[str, Any]:
    from bci_runtime.decoders.cursor_loop import r2_score

    return {
        "r2": _plain(r2_score(V, decoded)),
        "r2_per_axis": {a: _plain(r2_score(V[:, [k]], decoded[:, [k]]))
                        for k, a in enumerate(AXES)},
        "correlation": {a: _correlation(V[:, k], decoded[:, k]) for k, a in enumerate(AXES)},
        "fold_r2": [_plain(r2_score(V[f], decoded[f])) for f in folds],
    }


def _shifts(n: int, dt: float, n_shifts: int, seed: int) -> np.ndarray:
    """Circular shifts (bins) between 10 s and the length minus 10 s, drawn with ``seed``."""
    low = int(math.ceil(min(MIN_SHIFT_S, n * dt / 3) / dt))
    high = max(low, n - low)
    rng = np.random.default_rng(seed)
    if high - low + 1 >= n_shifts:
        return np.sort(rng.choice(np.arange(low, high + 1), size=n_shifts, replace=False))
    return np.sort(rng.integers(low, high + 1, size=n_shifts))


def _null_r2(X: np.ndarray, V: np.ndarray, folds: list[np.ndarray], shifts: np.ndarray,
             advance: _Progress) -> np.ndarray:
    """Cross-validated R² with the velocity shifted against the signal, one per shift."""
    from bci_runtime.decoders.cursor_loop import r2_score

    null = np.empty(len(shifts))
    for i, shift in enumerate(shifts):
        advance(f"chance level: shift {i + 1} of {len(shifts)}", 0.5 + 0.3 * i / len(shifts))
        rolled = np.roll(V, int(shift), axis=0)
        null[i] = r2_score(rolled, _cross_validate(X, rolled, folds))
    advance("chance level done", 0.8)
    return null


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.std(a) == 0 or np.std(b) == 0:
        return None
    return _plain(np.corrcoef(a, b)[0, 1])


def _plain(value: float) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


# -- verdict --------------------------------------------------------------------------------

def _reasons(scores: dict[str, Any], chance: float, n_shifts: int,
             min_r2: float) -> list[str]:
    """Plain sentences on the R², chance, its axes and its stability."""
    r2 = scores["r2"]
    if r2 is None:
        return ["The decoded velocity could not be scored."]
    if r2 > 0:
        out = [f"The decoder explains {r2:.0%} of the variation of the cursor's velocity "
               f"(R² {r2:.2f}) on parts of the calibration it was not trained on."]
    else:
        out = [f"The decoded velocity is no closer to the cursor's velocity than its average "
               f"velocity would be (R² {r2:.2f}, on parts of the calibration it was not "
               "trained on)."]
    shifted = ("with the velocity shifted in time against the signal, so that the signal "
               "cannot predict it")
    if r2 > chance and chance < 0:
        out.append(f"That is above chance: {shifted}, the same decoder does worse than "
                   f"always decoding the average velocity (R² {chance:.2f} at best, in 95 % "
                   f"of {n_shifts} shifts).")
    elif r2 > chance:
        out.append(f"That is above chance: {shifted}, R² stays below {chance:.2f} (in 95 % "
                   f"of {n_shifts} shifts).")
    else:
        out.append(f"That is not above chance: {shifted}, the same decoder does as well or "
                   f"better (R² up to {chance:.2f}), so it is not reading the intended movement "
                   "from the signal.")
    if r2 >= min_r2:
        out.append(f"It reaches the {min_r2:.2f} needed for usable cursor control.")
    else:
        out.append(f"It is below the {min_r2:.2f} needed for usable cursor control.")
    if r2 <= chance:  # the axes and parts of a decoder at chance differ by chance
        return out
    per_axis = scores["r2_per_axis"]
    if None not in per_axis.values():
        worse, better = sorted(AXES, key=lambda a: per_axis[a])
        if per_axis[better] - per_axis[worse] >= AXIS_GAP:
            out.append(f"{AXIS_WORDS[worse].capitalize()} movement ({worse}, R² "
                       f"{per_axis[worse]:.2f}) is decoded much worse than "
                       f"{AXIS_WORDS[better]} movement ({better}, R² {per_axis[better]:.2f}).")
    folds = [f for f in scores["fold_r2"] if f is not None]
    if len(folds) > 1 and max(folds) - min(folds) >= FOLD_SPREAD:
        out.append(f"R² changed a lot between parts of the calibration ({min(folds):.2f} to "
                   f"{max(folds):.2f}): the signal may have changed on the way (a loosening "
                   "contact, tiredness).")
    return out


def _advice(good: bool, above: bool) -> list[str]:
    """What to do next."""
    if good:
        return ["Good enough to go on to the online session."]
    if above:
        return ["Not good enough yet: the signal does carry the intended movement, but not "
                f"well enough. {ADVICE[0].upper()}{ADVICE[1:]}."]
    return [f"Not good enough yet. {ADVICE[0].upper()}{ADVICE[1:]}."]


# -- figures --------------------------------------------------------------------------------

def tuning_strength(decoder: Any) -> np.ndarray:
    """How strongly each feature follows the velocity, over its noise.

    Parameters
    ----------
    decoder : KalmanDecoder
        Fitted; ``C_`` of shape (n_features, n_outputs), ``Q_`` (n_features, n_features).

    Returns
    -------
    ndarray, shape (n_features,)
        ``|C_i| / sqrt(Q_ii)``: change of the feature per unit of velocity, in
        standard deviations of its noise.
    """
    noise = np.sqrt(np.clip(np.diagonal(decoder.Q_), np.finfo(float).tiny, None))
    return np.linalg.norm(decoder.C_, axis=1) / noise


def grid_layout(channels: Sequence[str], bad: Sequence[str] = ()
                ) -> tuple[list[list[str | None]], bool] | None:
    """Where each channel sits on the grid, row by row, or None when there is no grid.

    Names with one prefix and numbers (``G01`` .. ``G64``) are numbered row by
    row on a square-ish grid (as the simulator and most grid montages number
    them), bad channels keeping their place; otherwise a perfect square count
    is laid out in order.

    Returns
    -------
    cells : list of list of str or None, shape (n_rows, n_cols)
        Channel name of each cell (None: empty).
    numbered : bool
        Whether the layout comes from the names' numbers.
    """
    names = list(channels) + [b for b in bad if b not in channels]
    parsed = [m for m in (re.fullmatch(r"([A-Za-z_]+)0*(\d+)", n) for n in names) if m]
    if names and len(parsed) == len(names) and len({m.group(1) for m in parsed}) == 1:
        numbers = [int(m.group(2)) for m in parsed]
        if min(numbers) >= 1 and len(set(numbers)) == len(numbers) and max(numbers) <= 1024:
            total = max(numbers)
            cols = int(math.ceil(math.sqrt(total)))
            rows = int(math.ceil(total / cols))
            cells: list[list[str | None]] = [[None] * cols for _ in range(rows)]
            for name, k in zip(names, numbers):
                cells[(k - 1) // cols][(k - 1) % cols] = name
            return cells, True
    side = math.isqrt(len(channels))
    if len(channels) > 1 and side * side == len(channels):
        return [list(channels[r * side:(r + 1) * side]) for r in range(side)], False
    return None


def cursor_figures(V: np.ndarray, decoded: np.ndarray, folds: list[np.ndarray], dt: float,
                   decoder: Any, channels: list[str], bad: Sequence[str] = ()
                   ) -> tuple[list[dict[str, str]], str | None]:
    """The decoded velocity and the channels' tuning, as base64 PNGs.

    Parameters
    ----------
    V, decoded : ndarray, shape (n_bins, 2)
        Intended and cross-validated decoded velocity.
    folds : list of ndarray
        Bin indices of each fold.
    dt : float
        Seconds per bin.
    decoder : KalmanDecoder
        Fitted on all bins.
    channels : list of str, shape (n_features,)
    bad : sequence of str
        Channels left out (marked on a grid).

    Returns
    -------
    patterns : list of {"title": str, "png": str}
    note : str or None
        What they show, or why they could not be drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bci_runtime.decoders.report import _png

    figures: list[tuple[str, Any]] = []
    try:
        figures.append(_trace_figure(V, decoded, folds, dt))
        figures.append(_tuning_figure(tuning_strength(decoder), channels, bad))
        patterns = [{"title": title, "png": _png(fig)} for title, fig in figures]
        note: str | None = PATTERNS_NOTE
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:  # figures only illustrate
        patterns, note = [], f"no figures: drawing them failed ({exc})"
    finally:
        for _, fig in figures:
            plt.close(fig)
    return patterns, note


def _trace_figure(V: np.ndarray, decoded: np.ndarray, folds: list[np.ndarray],
                  dt: float) -> tuple[str, Any]:
    """Up to :data:`TRACE_S` of held-out decoding, in the middle of the calibration.

    Every bin was decoded by the filter of its fold; the start of a fold (a
    filter starting from rest) is marked by a dotted line.
    """
    import matplotlib.pyplot as plt

    n = V.shape[0]
    width = min(n, int(round(TRACE_S / dt)))
    start = max(0, n // 2 - width // 2)
    shown = np.arange(start, start + width)
    t = shown * dt
    fig, axes = plt.subplots(2, 1, figsize=(7.0, 3.6), sharex=True)
    for k, (ax, axis) in enumerate(zip(axes, AXES)):
        ax.plot(t, V[shown, k], color="0.3", lw=1.2, label="intended (cursor)")
        ax.plot(t, decoded[shown, k], color="tab:blue", lw=1.2, label="decoded")
        for fold in folds[1:]:
            if start < fold[0] < start + width:
                ax.axvline(fold[0] * dt, color="0.6", lw=0.8, ls=":")
        ax.set_ylabel(f"{axis} ({AXIS_WORDS[axis]})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="upper right", frameon=False)
    axes[-1].set_xlabel("time in the calibration (s)", fontsize=8)
    title = (f"Decoded and intended cursor velocity, {t[0]:.0f}-{t[-1] + dt:.0f} s of the "
             "calibration, held out (each part decoded by a decoder trained on the others)")
    return title, fig


def _tuning_figure(strength: np.ndarray, channels: list[str],
                   bad: Sequence[str]) -> tuple[str, Any]:
    import matplotlib.pyplot as plt

    title = ("Tuning of each channel to the cursor velocity (change per unit of velocity over "
             "the channel's noise)")
    layout = grid_layout(channels, bad)
    if layout is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(channels) + 1.5), 2.8))
        ax.bar(np.arange(len(channels)), strength, color="tab:red")
        ax.set_xticks(np.arange(len(channels)))
        ax.set_xticklabels(channels, rotation=90, fontsize=6)
        ax.set_ylabel("tuning / noise", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        return title, fig
    cells, _ = layout
    value = dict(zip(channels, strength.tolist()))
    image = np.array([[value.get(c, np.nan) if c is not None else np.nan for c in row]
                      for row in cells])
    rows, cols = image.shape
    fig, ax = plt.subplots(figsize=(0.45 * cols + 1.6, 0.45 * rows + 0.6))
    im = ax.imshow(np.ma.masked_invalid(image), cmap="Reds", vmin=0.0,
                   vmax=max(float(np.nanmax(image)), 1e-12))
    if rows * cols <= 144:  # names stay legible
        for r, row in enumerate(cells):
            for c, name in enumerate(row):
                if name is not None:
                    label = f"{name}\nbad" if name in bad else name
                    dark = np.isfinite(image[r, c]) and image[r, c] > 0.6 * np.nanmax(image)
                    ax.text(c, r, label, ha="center", va="center", fontsize=5,
                            color="white" if dark else "0.2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8, label="tuning / noise")
    return title, fig
