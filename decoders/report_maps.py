"""Scalp maps for the evaluation report: where the classes differ, and CSP patterns (MNE).

Both are computed on the training trials, in the sensorimotor band (8-30 Hz):

* **class maps**: for each class against the others, the signed r² of each
  channel's log band power (positive: more power in that class), the classic
  BCI screening map;
* **CSP patterns** (two classes): MNE's CSP fitted on the same trials, the
  patterns of its two extreme filters (what the decoder's sources look like on
  the scalp).

Electrode positions come from MNE's 10-05 montage (``colin27_1005``) by channel name;
recordings whose names it does not know (fewer than four matches) get no maps,
and the report says so.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy import signal as sps

BAND = (8.0, 30.0)
MIN_POSITIONS = 4


def _clean(name: str) -> str:
    """'Fc5.' (PhysioNet's EDF) -> 'Fc5'; 'EEG C3-REF' -> 'C3'."""
    name = re.sub(r"^(EEG|eeg)\s*", "", name.strip())
    return re.sub(r"[-_](REF|Ref|ref|LE|A1|A2|M1|M2)$", "", name).strip(".").strip()


def scalp_info(channel_names: tuple[str, ...], sfreq: float) -> tuple[Any, np.ndarray] | None:
    """MNE info of the channels that have a standard position, and their indices.

    Returns
    -------
    (mne.Info, ndarray of int) or None
        None when fewer than :data:`MIN_POSITIONS` channels have a position.
    """
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")  # was "standard_1005"
    known = {n.lower(): n for n in montage.ch_names}
    picks, names = [], []
    for i, raw in enumerate(channel_names):
        match = known.get(_clean(raw).lower())
        if match is not None and match not in names:
            picks.append(i)
            names.append(match)
    if len(picks) < MIN_POSITIONS:
        return None
    info = mne.create_info(names, sfreq, "eeg")
    info.set_montage(montage)
    return info, np.asarray(picks)


def band_log_power(X: np.ndarray, sfreq: float, band: tuple[float, float] = BAND) -> np.ndarray:
    """Log power of each channel in ``band`` (Welch), shape (n_trials, n_channels).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    """
    nperseg = min(X.shape[-1], int(sfreq))
    freqs, psd = sps.welch(X, fs=sfreq, nperseg=nperseg, axis=-1)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    return np.log(psd[..., keep].mean(axis=-1) + np.finfo(float).tiny)


def signed_r2(features: np.ndarray, is_class: np.ndarray) -> np.ndarray:
    """sign(r) r² of each feature with a class indicator, shape (n_features,).

    Parameters
    ----------
    features : ndarray, shape (n_trials, n_features)
    is_class : ndarray of bool, shape (n_trials,)
    """
    f = features - features.mean(axis=0)
    c = is_class.astype(float) - is_class.mean()
    denom = np.sqrt((f ** 2).sum(axis=0) * (c ** 2).sum())
    r = np.divide(f.T @ c, denom, out=np.zeros(f.shape[1]), where=denom > 0)
    return np.sign(r) * r ** 2


def scalp_figures(train: Any) -> tuple[list[tuple[str, Any]], str | None]:
    """Class maps and (two classes) CSP patterns of the training trials.

    Parameters
    ----------
    train : Trials

    Returns
    -------
    figures : list of (str, matplotlib.figure.Figure)
        Titles and figures (the caller closes them).
    note : str or None
        Why there are no maps, when there are none.
    """
    import matplotlib.pyplot as plt
    import mne

    found = scalp_info(train.channel_names, train.sfreq)
    if found is None:
        return [], ("no scalp maps: fewer than four channel names have a standard 10-05 "
                    "position")
    info, picks = found
    X = train.X[:, picks]
    classes = sorted(set(train.y.tolist()))
    power = band_log_power(X, train.sfreq)
    shown = classes[:1] if len(classes) == 2 else classes
    fig, axes = plt.subplots(1, len(shown), figsize=(2.8 * len(shown), 2.8), squeeze=False)
    for ax, label in zip(axes[0], shown):
        values = signed_r2(power, train.y == label)
        limit = float(np.abs(values).max()) or 1.0
        im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, cmap="RdBu_r",
                                     vlim=(-limit, limit))
        versus = classes[1] if len(classes) == 2 else "the others"
        ax.set_title(f"{label} vs {versus}", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.7, label="signed r²")
    figures = [(f"Where the classes differ: signed r² of {BAND[0]:g}-{BAND[1]:g} Hz log "
                "power (training trials)", fig)]
    if len(classes) == 2:
        figures.append(("CSP patterns (MNE, training trials, 8-30 Hz)",
                        _csp_patterns(X, train.y, train.sfreq, info, classes)))
    return figures, None


def _csp_patterns(X: np.ndarray, y: np.ndarray, sfreq: float, info: Any,
                  classes: list[str]) -> Any:
    import matplotlib.pyplot as plt
    import mne
    from mne.decoding import CSP

    sos = sps.butter(4, BAND, btype="bandpass", fs=sfreq, output="sos")
    filtered = sps.sosfiltfilt(sos, X, axis=-1)
    n = min(4, X.shape[1])
    # "alternate": the most discriminative filter of one class, then of the other, ...
    csp = CSP(n_components=n, reg="ledoit_wolf", log=True,
              component_order="alternate").fit(filtered, y)
    picks = list(range(n))
    fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.6), squeeze=False)
    for ax, k in zip(axes[0], picks):
        pattern = csp.patterns_[k]
        mne.viz.plot_topomap(pattern / np.abs(pattern).max(), info, axes=ax, show=False,
                             cmap="RdBu_r", vlim=(-1, 1))
        ax.set_title(f"pattern {k + 1}", fontsize=8)
    fig.suptitle(f"{classes[0]} vs {classes[1]}", fontsize=9)
    return fig
