"""The training step of the calibration wizard: a decoder from the session's calibration runs.

:func:`train_from_recordings` reads the XDF recordings of one calibration (an
interrupted and resumed calibration has several runs, taken in order), cuts a
trial after every ``cue/<class>`` marker (causal band-pass, window of the
paradigm, as ``bci evaluate`` does: :mod:`bci_runtime.decoders.trials`),
cross-validates the catalog decoder on them, fits the co-adaptive decoder the
online node will serve on all of them, saves it, and returns a JSON-ready report
for the wizard's page:

* **cross-validation**: stratified k-fold (5 folds, fewer with few trials), not
  shuffled, so each fold is a stretch of the calibration in time and adjacent
  trials do not end up on both sides; a fresh decoder per fold;
* **verdict**: good enough when the accuracy is above the 95 % significance
  threshold of chance for that number of trials (binomial, Combrisson & Jerbi
  2015) *and* reaches ``min_accuracy``; the reasons say why in plain words, and
  what to do when it is not;
* **scalp maps**: motor imagery gets the class maps and CSP patterns of
  :func:`~bci_runtime.decoders.report_maps.scalp_figures`; SSVEP gets one map
  per stimulation frequency of the signal-to-noise ratio at that frequency
  (power in its bin over the mean of the neighbouring bins) in the trials of
  its class, where the visual response is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.decoders.ssvep import stimulus_frequencies
from bci_runtime.errors import ConfigError

MIN_TRIALS_PER_CLASS = 5
MAX_FOLDS = 5
SIGNIFICANCE = 0.95
# the same cue in two marker streams (a cue schedule and its echo) is one trial
DUPLICATE_CUE_S = 0.1
# SNR maps: neighbours within this distance of the stimulation frequency (Hz)
SNR_NEIGHBOURS_HZ = 1.0
ADVICE = {
    "mi": ("check the electrodes over the motor areas (C3, Cz, C4: impedance, gel) and that "
           "the patient imagines the cued movement during the whole cue"),
    "ssvep": ("check the electrodes over the back of the head (O1, Oz, O2: impedance, gel) "
              "and that the patient looks straight at the flickering target"),
}
RECORD_MORE = "record more calibration trials: the ones recorded are kept"

Progress = Callable[[str, float], None]


def train_from_recordings(paths: Sequence[Path], *, paradigm: str, classes: Sequence[str],
                          model_path: Path, decoder: str | None = None,
                          adapt: Sequence[str] = (), bad_channels: Sequence[str] = (),
                          tmin: float | None = None, tmax: float | None = None,
                          freqs: Sequence[float] | None = None, seed: int = 0,
                          min_accuracy: float | None = None,
                          progress: Callable[[str, float], None] | None = None
                          ) -> dict[str, Any]:
    """Train a decoder on calibration recordings; report whether it is good enough.

    Parameters
    ----------
    paths : sequence of Path
        XDF recordings of the calibration, in time order; their trials are
        concatenated.
    paradigm : {"mi", "ssvep"}
    classes : sequence of str
        Classes to train, as cued (``cue/<class>`` markers); other cues are ignored.
    model_path : Path
        Where the fitted :class:`~bci_runtime.decoders.adaptation.CoAdaptiveDecoder`
        is saved (:func:`~bci_runtime.decoders.model_store.save_model`).
    decoder : str, optional
        Catalog name; default :func:`~bci_runtime.decoders.catalog.default_decoder`.
    adapt : sequence of str
        Co-adaptation strategies of the online decoder, as
        :func:`~bci_runtime.decoders.adaptation.make_strategies` takes them
        (``"ts-recenter"``, ``"recenter+partial-fit@200"``); ``"none"`` is skipped.
    bad_channels : sequence of str
        Channels left out.
    tmin, tmax : float, optional
        Trial window after each cue (s); defaults from ``PARADIGM_WINDOWS``.
    freqs : sequence of float, optional
        SSVEP: stimulation frequency (Hz) of each class but ``rest``, in
        ``classes`` order; default: read from the class names (``"8.57Hz"``).
    seed : int
        Decoder seed.
    min_accuracy : float, optional
        Accuracy needed to be good enough; default ``1/k + 0.4 (1 - 1/k)`` for
        ``k`` classes (0.70 for two, 0.55 for four).
    progress : callable, optional
        ``progress(stage, fraction)``, fraction non-decreasing in [0, 1].

    Returns
    -------
    dict
        JSON-ready: ``paradigm, decoder, adapt, classes, freqs, channels,
        bad_channels, sfreq, tmin, tmax, band, n_trials, trials_per_class,
        recordings, accuracy, fold_accuracies, chance, chance_threshold,
        min_accuracy, confusion {labels, matrix}, good_enough, reasons, patterns
        [{title, png}], patterns_note, model {path, sha256}``.

    Raises
    ------
    ConfigError
        Bad options (paradigm, classes, window, frequencies, an unknown decoder
        or bad channel), recordings without cue markers, or too few trials of a
        class (fewer than 5).
    DecoderError
        An unknown adaptation strategy, or one that cannot adapt the decoder.
    RecordingError
        A recording cannot be read.
    """
    from bci_runtime.decoders import catalog
    from bci_runtime.decoders.adaptation import CoAdaptiveDecoder
    from bci_runtime.decoders.model_store import file_sha256, save_model
    from bci_runtime.decoders.trials import PARADIGM_BANDS, PARADIGM_WINDOWS

    advance = _Progress(progress)
    classes = _check_classes(classes)
    if paradigm not in ("mi", "ssvep"):
        raise ConfigError(f"paradigm '{paradigm}' cannot be calibrated with cued trials",
                          hint="use 'mi' (motor imagery) or 'ssvep'")
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no calibration recording was given",
                          hint="record the calibration first")
    entry = catalog.get(decoder or catalog.default_decoder(paradigm), paradigm)
    adapt = [adapt] if isinstance(adapt, str) else [str(a) for a in adapt]
    strategies = _strategies(adapt)
    bad = [bad_channels] if isinstance(bad_channels, str) else [str(c) for c in bad_channels]
    class_freqs = stimulus_frequencies(classes, freqs) if paradigm == "ssvep" else {}
    if paradigm != "ssvep" and freqs is not None:
        raise ConfigError("freqs (stimulation frequencies) only apply to paradigm 'ssvep'")
    window = PARADIGM_WINDOWS[paradigm]
    tmin = float(window[0] if tmin is None else tmin)
    tmax = float(window[1] if tmax is None else tmax)
    if not (math.isfinite(tmin) and math.isfinite(tmax) and tmax > tmin):
        raise ConfigError(f"the trial window [{tmin:g}, {tmax:g}] s is empty",
                          hint="tmax must come after tmin (seconds after the cue)")
    k = len(classes)
    chance = 1.0 / k
    min_acc = chance + 0.4 * (1 - chance) if min_accuracy is None else float(min_accuracy)
    if not 0.0 <= min_acc <= 1.0:
        raise ConfigError(f"min_accuracy {min_accuracy} is not in [0, 1]")
    band = PARADIGM_BANDS[paradigm]

    trials, notes = _read_trials(paths, classes, bad, tmin, tmax, band, advance)
    context = catalog.DecoderContext(
        sfreq=trials.sfreq, classes=list(classes), seed=seed, n_channels=trials.X.shape[1],
        freqs=[f for f in class_freqs.values() if f is not None])
    scores = _cross_validate(lambda: entry.make(context), trials, classes, advance)
    n = len(trials)
    threshold = _chance_threshold(n, k)
    good = scores["accuracy"] > threshold and scores["accuracy"] >= min_acc
    reasons = (notes + _reasons(scores, classes, n, chance, threshold, min_acc)
               + _advice(good, scores["accuracy"], min_acc, paradigm))

    advance("drawing scalp maps", 0.85)
    patterns, patterns_note = scalp_patterns(trials, paradigm, class_freqs)

    advance("fitting the decoder on all trials", 0.9)
    model = CoAdaptiveDecoder(entry.make(context), strategies).fit(trials.X, trials.y)
    save_model(model, model_path)
    advance("done", 1.0)
    counts = Counter(trials.y.tolist())
    return {
        "paradigm": paradigm, "decoder": entry.name, "adapt": adapt,
        "classes": list(classes), "freqs": class_freqs,
        # the order of the model's decision columns (an online node takes its classes so)
        "model_classes": [str(c) for c in model.classes_],
        "channels": list(trials.channel_names), "bad_channels": bad,
        "sfreq": float(trials.sfreq), "tmin": tmin, "tmax": tmax,
        "band": [float(band[0]), float(band[1])], "n_trials": n,
        "trials_per_class": {c: int(counts[c]) for c in classes},
        "recordings": [str(p) for p in paths],
        "accuracy": scores["accuracy"], "fold_accuracies": scores["fold_accuracies"],
        "chance": chance, "chance_threshold": threshold, "min_accuracy": min_acc,
        "confusion": {"labels": list(classes), "matrix": scores["matrix"]},
        "good_enough": bool(good), "reasons": reasons,
        "patterns": patterns, "patterns_note": patterns_note,
        "model": {"path": str(model_path), "sha256": file_sha256(model_path)},
    }


class _Progress:
    """Calls ``progress(stage, fraction)`` with fractions that never go back."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback, self.last = callback, 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        self.last = min(1.0, max(self.last, float(fraction)))
        if self.callback is not None:
            self.callback(stage, self.last)


# -- options --------------------------------------------------------------------------------

def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise ConfigError(f"classes must be a list of class names, got the string {classes!r}",
                          hint="e.g. ['left', 'right']")
    names = [str(c).strip() for c in classes]
    if len(names) < 2 or "" in names:
        raise ConfigError(f"a decoder needs at least two named classes, got {list(classes)}",
                          hint="e.g. ['left', 'right']")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ConfigError(f"class(es) {', '.join(twice)} given more than once")
    return names


def _strategies(adapt: list[str]) -> list[Any]:
    """The strategies of every name (a name may stack several: ``a+b``); "none" adds none."""
    from bci_runtime.decoders.adaptation import make_strategies

    return [s for name in adapt if name.strip() not in ("", "none")
            for s in make_strategies(name.strip())]


# -- trials ---------------------------------------------------------------------------------

def _read_trials(paths: list[Path], classes: list[str], bad_channels: Sequence[str],
                 tmin: float, tmax: float, band: tuple[float, float], advance: _Progress
                 ) -> tuple[Any, list[str]]:
    """The trials of every recording, concatenated; and notes on what was left out."""
    from bci_runtime.decoders.trials import Trials, cut_trials, event_code, load_continuous

    events = {f"cue/{c}": c for c in classes}
    parts, notes, markers_seen = [], [], Counter()
    for i, path in enumerate(paths):
        advance(f"reading {path.name}", 0.25 * i / len(paths))
        continuous, warnings = load_continuous(path)
        notes += [f"{path.name}: {w}" for w in warnings]
        rec = _without_channels(_one_cue_per_trial(continuous), bad_channels)
        codes = [event_code(m) for m in rec.markers]
        markers_seen.update(codes)
        cued = sum(c in events for c in codes)
        advance(f"cutting trials of {path.name}", 0.25 * (i + 0.5) / len(paths))
        if not cued:
            continue
        try:
            part = cut_trials(rec, events, tmin, tmax, band)
        except ConfigError:  # every window runs past the end: a run stopped at once
            part = None
        kept = 0 if part is None else len(part)
        if kept < cued:
            notes.append(f"{cued - kept} cued trial(s) of {path.name} were left out: the "
                         "recording stopped before their window ended.")
        if part is not None:
            parts.append(part)
    advance("checking the trials", 0.25)
    if not any(m.startswith("cue/") for m in markers_seen):
        listing = ", ".join(f"'{m}' ×{n}" for m, n in markers_seen.most_common(12)) or "none"
        raise ConfigError(
            f"{_names(paths)}: no cue markers (cue/<class>) were recorded (markers found: "
            f"{listing})", hint="record the calibration with its cued trials (the cue "
            "schedule or the simulator writes cue/<class> markers)")
    trials = Trials.concatenate(parts) if parts else None
    counts = Counter([] if trials is None else trials.y.tolist())
    _check_counts(classes, counts, markers_seen)
    return trials, notes


def _one_cue_per_trial(rec: Any) -> Any:
    """``rec`` without a cue repeated within :data:`DUPLICATE_CUE_S` (two marker streams)."""
    keep, last = [], {}
    for i, (m, t) in enumerate(zip(rec.markers, rec.marker_times.tolist())):
        if m.startswith("cue/") and m in last and t - last[m] < DUPLICATE_CUE_S:
            continue
        last[m] = t
        keep.append(i)
    if len(keep) == len(rec.markers):
        return rec
    return replace(rec, markers=[rec.markers[i] for i in keep],
                   marker_times=rec.marker_times[keep])


def _without_channels(rec: Any, bad_channels: Sequence[str]) -> Any:
    """``rec`` without the bad channels; ConfigError naming its channels for unknown ones."""
    if not bad_channels:
        return rec
    unknown = [c for c in bad_channels if c not in rec.channel_names]
    if unknown:
        raise ConfigError(f"bad channel(s) {', '.join(map(repr, unknown))} not in "
                          f"{Path(rec.source).name}",
                          hint=f"its channels are: {', '.join(rec.channel_names)}")
    keep = [i for i, c in enumerate(rec.channel_names) if c not in set(bad_channels)]
    if len(keep) < 2:
        raise ConfigError(f"{len(keep)} channel(s) left once {len(set(bad_channels))} are "
                          f"marked bad in {Path(rec.source).name}",
                          hint="a decoder needs at least two good channels: fix electrodes")
    return replace(rec, data=rec.data[:, keep],
                   channel_names=tuple(rec.channel_names[i] for i in keep))


def _check_counts(classes: list[str], counts: Counter, markers_seen: Counter) -> None:
    missing = [c for c in classes if counts[c] == 0]
    if missing:
        cued = ", ".join(f"'{m[4:]}' ×{n}" for m, n in markers_seen.items()
                         if m.startswith("cue/")) or "none"
        raise ConfigError(f"no complete trial of {_quoted(missing)} was recorded (cues recorded: "
                          f"{cued})", hint=f"{RECORD_MORE}; or leave {_quoted(missing)} out "
                                           "of the classes")
    few = [c for c in classes if counts[c] < MIN_TRIALS_PER_CLASS]
    if few:
        listing = " and ".join(f"{counts[c]} of '{c}'" for c in few)
        listing = listing.replace(" of ", " trials of ", 1)
        raise ConfigError(f"only {listing} were recorded (at least {MIN_TRIALS_PER_CLASS} "
                          "per class are needed to train)", hint=RECORD_MORE)


def _quoted(names: list[str]) -> str:
    return " or ".join(f"'{n}'" for n in names)


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths)


# -- cross-validation and verdict -----------------------------------------------------------

def _cross_validate(make: Callable[[], Any], trials: Any, classes: list[str],
                    advance: _Progress) -> dict[str, Any]:
    """Stratified k-fold in time order (no shuffling), a fresh decoder per fold."""
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedKFold

    n_folds = min(MAX_FOLDS, min(Counter(trials.y.tolist()).values()))
    folds = list(StratifiedKFold(n_splits=n_folds).split(trials.X, trials.y))
    predicted = np.empty(len(trials), dtype=object)
    fold_accuracies = []
    for i, (train, test) in enumerate(folds):
        advance(f"cross-validation: fold {i + 1} of {n_folds}", 0.25 + 0.55 * i / n_folds)
        model = make().fit(trials.X[train], trials.y[train])
        predicted[test] = [str(p) for p in model.predict(trials.X[test])]
        fold_accuracies.append(float(np.mean(predicted[test] == trials.y[test])))
    advance("cross-validation done", 0.8)
    truth = trials.y.astype(str)
    matrix = confusion_matrix(truth, predicted.astype(str), labels=classes)
    return {"accuracy": float(np.trace(matrix) / matrix.sum()),
            "fold_accuracies": fold_accuracies,
            "matrix": [[int(v) for v in row] for row in matrix]}


def _chance_threshold(n: int, k: int) -> float:
    """Accuracy that ``n`` trials of ``k`` classes exceed by chance with 5 % probability."""
    from scipy.stats import binom

    return float(binom.ppf(SIGNIFICANCE, n, 1.0 / k) / n)


def _reasons(scores: dict[str, Any], classes: list[str], n: int, chance: float,
             threshold: float, min_acc: float) -> list[str]:
    """Plain sentences on the accuracy, its classes and its stability."""
    acc = scores["accuracy"]
    if acc > threshold:
        out = [f"Accuracy {acc:.2f} is above chance ({chance:.2f}; {threshold:.2f} needed to "
               f"be sure with {n} trials)."]
    else:
        out = [f"Accuracy {acc:.2f} is not clearly above chance ({chance:.2f}): with {n} "
               f"trials, more than {threshold:.2f} is needed to be sure the decoder is not "
               "guessing."]
    if acc >= min_acc:
        out.append(f"It reaches the {min_acc:.2f} needed for reliable control.")
    else:
        out.append(f"It is below the {min_acc:.2f} needed for reliable control.")
    matrix = np.asarray(scores["matrix"])
    for i, label in enumerate(classes):
        row = matrix[i]
        if row.sum() == 0 or row[i] / row.sum() >= min_acc:
            continue
        errors = row.copy()
        errors[i] = -1
        j = int(np.argmax(errors))
        if errors[j] > 0:
            out.append(f"{label} is often taken for {classes[j]} ({errors[j]} of "
                       f"{row.sum()}).")
    folds = scores["fold_accuracies"]
    if len(folds) > 1 and max(folds) - min(folds) >= 0.4:
        out.append(f"Accuracy changed a lot between parts of the calibration ({min(folds):.2f} "
                   f"to {max(folds):.2f}): the signal may have changed on the way (electrodes, "
                   "tiredness).")
    return out


def _advice(good: bool, acc: float, min_acc: float, paradigm: str) -> list[str]:
    """What to do next."""
    if good:
        return ["Good enough to go on to the online session."]
    if acc >= min_acc:  # accurate, but too few trials to be sure
        return ["Not good enough yet: too few trials to be sure. Record more calibration "
                "trials (the ones recorded are kept)."]
    return ["Not good enough yet. Record more calibration trials (the ones recorded are "
            f"kept), and {ADVICE[paradigm]}."]


# -- scalp maps -----------------------------------------------------------------------------

def scalp_patterns(trials: Any, paradigm: str, class_freqs: dict[str, float | None]
                   ) -> tuple[list[dict[str, str]], str | None]:
    """Scalp maps of the calibration trials as base64 PNGs, or why there are none.

    Parameters
    ----------
    trials : Trials
        X of shape (n_trials, n_channels, n_times).
    paradigm : {"mi", "ssvep"}
    class_freqs : dict of str to float or None
        SSVEP: the stimulation frequency of each class.

    Returns
    -------
    patterns : list of {"title": str, "png": str}
    note : str or None
        Why there are no (or fewer) maps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mne

    from bci_runtime.decoders.report import _png
    from bci_runtime.decoders.report_maps import scalp_figures

    figures: list[tuple[str, Any]] = []
    try:
        with mne.utils.use_log_level("error"):
            if paradigm == "ssvep":
                figures, note = _snr_figures(trials, class_freqs)
            else:
                figures, note = scalp_figures(trials)
                if figures and len(set(trials.y.tolist())) != 2:
                    note = "CSP patterns are drawn for two classes only."
        patterns = [{"title": title, "png": _png(fig)} for title, fig in figures]
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:  # maps only illustrate
        patterns, note = [], f"no scalp maps: drawing them failed ({exc})"
    finally:
        for _, fig in figures:
            plt.close(fig)
    return patterns, note


def snr_at(X: np.ndarray, sfreq: float, freq: float) -> np.ndarray:
    """Signal-to-noise ratio of each channel at ``freq``, averaged over trials.

    Power in the frequency's bin (Hann-windowed FFT) over the mean power of the
    bins within :data:`SNR_NEIGHBOURS_HZ` around it, leaving out the two bins
    next to it (the window spreads the response into them).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    sfreq : float
    freq : float
        Hz.

    Returns
    -------
    ndarray, shape (n_channels,)
        1 where there is no response.
    """
    n_times = X.shape[-1]
    power = np.abs(np.fft.rfft(X * np.hanning(n_times), axis=-1)) ** 2
    bins = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    k = int(np.argmin(np.abs(bins - freq)))
    width = max(2, int(round(SNR_NEIGHBOURS_HZ / bins[1])))
    distance = np.abs(np.arange(bins.size) - k)
    neighbours = (distance >= 2) & (distance <= width + 1)
    noise = power[..., neighbours].mean(axis=-1)
    snr = power[..., k] / np.maximum(noise, np.finfo(float).tiny)
    return snr.mean(axis=0)


def _snr_figures(trials: Any, class_freqs: dict[str, float | None]
                 ) -> tuple[list[tuple[str, Any]], str | None]:
    import matplotlib.pyplot as plt
    import mne

    from bci_runtime.decoders.report_maps import scalp_info

    found = scalp_info(trials.channel_names, trials.sfreq)
    if found is None:
        return [], ("no scalp maps: fewer than four channel names have a standard 10-05 "
                    "position")
    info, picks = found
    shown = [(c, f) for c, f in class_freqs.items() if f is not None]
    maps = [snr_at(trials.X[trials.y == c][:, picks], trials.sfreq, f) for c, f in shown]
    top = max(2.0, float(max(m.max() for m in maps)))
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.8), squeeze=False)
    for ax, (label, f), values in zip(axes[0], shown, maps):
        # "local": no colour far from the electrodes (an SSVEP montage is occipital only)
        im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, cmap="Reds",
                                     vlim=(1.0, top), extrapolate="local")
        ax.set_title(f"{f:g} Hz ({label} trials)", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.7, label="SNR")
    title = ("SSVEP response: signal-to-noise ratio at each stimulation frequency (power over "
             "the neighbouring frequencies, trials of that class)")
    return [(title, fig)], None
