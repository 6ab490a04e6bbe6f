"""Recordings as binned features and kinematics, for the continuous decoders.

What ``bci evaluate --paradigm continuous`` evaluates on: one row per bin of
``bin_s`` seconds, the features of the neural signal in that bin and the
kinematics (the *target*: velocity, position, force...) at its end.

Target
    A numeric stream of the recording (an XDF stream named or typed like
    ``Velocity``, ``Position``, ``Kinematics``, ``Cursor``...) or named
    channels of any stream (``vx,vy``: e.g. misc channels of a FIF file, which
    are then left out of the features). Without a choice, the one stream that
    looks like kinematics; none or several is an error that lists the streams.
    The target is sampled at the end of each bin (the last target sample at or
    before it), so a bin never sees kinematics from its future; a bin whose
    last target sample is stale or NaN has no target (NaN row).
Features
    Strictly causal, computed as a stream would: the log band power of each
    channel in each bin after a Butterworth band-pass run forward from rest
    (:func:`scipy.signal.sosfilt`; high gamma 70-150 Hz for ECoG/sEEG, 8-30 Hz
    for EEG), or the mean of each bin for streams that are features already
    (binned spike counts, a rate too low for the band). Nothing is normalized:
    no statistics of later data reach an earlier bin.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal as sps

from bci_runtime.errors import ConfigError

__all__ = ["BIN_S", "Binned", "DEFAULT_BANDS", "KINEMATIC_WORDS", "bin_features", "load_binned",
           "parse_band", "sample_target"]

#: seconds per bin (features and target)
BIN_S = 0.05
#: streams whose name or type holds one of these are kinematics
KINEMATIC_WORDS = ("velocity", "position", "kinematic", "cursor", "mocap", "joystick",
                   "trajectory", "hand", "finger", "force")
#: default band (Hz) by kind of neural channel
DEFAULT_BANDS = {"ecog": (70.0, 150.0), "seeg": (70.0, 150.0), "dbs": (70.0, 150.0),
                 "eeg": (8.0, 30.0)}
NEURAL_STREAM_TYPES = ("eeg", "ecog", "seeg")
NEURAL_CHANNEL_TYPES = ("eeg", "ecog", "seeg", "dbs")
BUTTER_ORDER = 4


@dataclass
class Binned:
    """Features and target, one row per bin, of one or more recordings in time order.

    Attributes
    ----------
    X : ndarray, shape (n_bins, n_features)
        Features (log band power, or bin means), finite.
    Y : ndarray, shape (n_bins, n_outputs)
        Target at the end of each bin; NaN rows have none.
    t : ndarray, shape (n_bins,)
        End time of each bin on its recording's clock (s).
    dt : float
        Seconds per bin.
    feature_names : list of str, shape (n_features,)
    target_names : list of str, shape (n_outputs,)
    features : str
        How the features were made, e.g. ``log power 70-150 Hz`` or ``bin means``.
    sources : list of str
        The files.
    drift_onset : int or None
        First bin at or after a ``drift/<kind>/start`` marker of the recording
        (the simulator writes them), if any.
    """

    X: np.ndarray
    Y: np.ndarray
    t: np.ndarray
    dt: float
    feature_names: list[str]
    target_names: list[str]
    features: str
    sources: list[str] = field(default_factory=list)
    drift_onset: int | None = None

    @property
    def known(self) -> np.ndarray:
        """Bins with a target, bool of shape (n_bins,)."""
        return np.isfinite(self.Y).all(axis=1)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @classmethod
    def concatenate(cls, parts: list[Binned]) -> Binned:
        """Recordings one after the other; each must have the same features and target.

        Raises
        ------
        ConfigError
            When their channel or target counts differ (the message names the files).
        """
        first = parts[0]
        for p in parts[1:]:
            if p.X.shape[1] != first.X.shape[1]:
                raise ConfigError(
                    f"'{p.sources[0]}' gives {p.X.shape[1]} feature channels but "
                    f"'{first.sources[0]}' gives {first.X.shape[1]}",
                    hint="train and test on recordings of the same montage (the same "
                    "channels); the decoder reads one feature per channel")
            if p.Y.shape[1] != first.Y.shape[1]:
                raise ConfigError(
                    f"the target of '{p.sources[0]}' has {p.Y.shape[1]} columns "
                    f"({', '.join(p.target_names)}) but that of '{first.sources[0]}' has "
                    f"{first.Y.shape[1]} ({', '.join(first.target_names)})",
                    hint="choose the same kinematics in every file with --target")
            if abs(p.dt - first.dt) > 1e-9:
                raise ConfigError(f"'{p.sources[0]}' gives bins of {p.dt * 1000:.1f} ms but "
                                  f"'{first.sources[0]}' of {first.dt * 1000:.1f} ms",
                                  hint="use recordings of the same sampling rate")
        onset, offset = None, 0
        for p in parts:
            if onset is None and p.drift_onset is not None:
                onset = offset + p.drift_onset
            offset += len(p)
        return cls(np.concatenate([p.X for p in parts]), np.concatenate([p.Y for p in parts]),
                   np.concatenate([p.t for p in parts]), first.dt, first.feature_names,
                   first.target_names, first.features,
                   [s for p in parts for s in p.sources], onset)


def parse_band(text: str | None) -> tuple[float, float] | None | str:
    """``--band``: ``"LO,HI"`` (Hz), ``"none"`` (bin means) or None (by signal type).

    Returns
    -------
    (float, float), ``"none"`` or None
    """
    if text is None:
        return None
    if text.strip().lower() == "none":
        return "none"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--band '{text}' is not LO,HI in Hz nor 'none'",
                          hint="e.g. --band 70,150 (high gamma) or --band none (bin means, "
                          "for spike counts)") from None
    if not 0 < lo < hi:
        raise ConfigError(f"--band {text}: need 0 < LO < HI (Hz)", hint="e.g. --band 70,150")
    return lo, hi


def load_binned(path: Path, target: str | None = None,
                band: tuple[float, float] | str | None = None,
                bin_s: float = BIN_S) -> Binned:
    """A recording as binned features and target.

    Parameters
    ----------
    path : Path
        Anything :func:`~bci_runtime.drivers.recordings.load_recording` reads.
    target : str, optional
        A stream name, or channel names joined by commas (``--target``).
    band : (float, float), "none" or None
        Band of the log power features; ``"none"`` for bin means; None by type.
    bin_s : float
        Seconds per bin (rounded to whole samples).

    Raises
    ------
    ConfigError
        No target found or ambiguous (the message lists what the file holds), a
        target that matches nothing or holds only NaN, no signal besides the
        target, a band above the Nyquist frequency, or NaN in the signal.
    """
    from bci_runtime.drivers.recordings import load_recording

    rec = load_recording(path)
    for w in rec.warnings:
        print(f"bci: warning: {path.name}: {w}", file=sys.stderr)
    numeric = rec.signals()
    target_stream, target_cols = _find_target(rec, numeric, target, path)
    signal, columns = _find_signal(numeric, target_stream, target_cols, path)
    srate = float(signal.spec.srate) or _rate(signal)
    X, ends, how = bin_features(signal.data[:, columns], srate, _band_for(signal, columns, band,
                                                                          srate, path), bin_s)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X).all(axis=1)).sum())
        raise ConfigError(f"'{path}': {bad} of {X.shape[0]} bins of the signal "
                          f"'{signal.spec.name}' hold NaN or Inf",
                          hint="repair or crop the recording (a disconnected channel, a "
                          "gap filled with NaN?)")
    t = signal.timestamps[ends]
    tdata = np.asarray(target_stream.data[:, target_cols], dtype=np.float64)
    names = [target_stream.spec.channel_names[c] for c in target_cols]
    label = f"'{target_stream.spec.name}'" + (f" ({', '.join(names)})" if target else "")
    if not np.isfinite(tdata).any():
        raise ConfigError(f"'{path}': the target {label} holds only NaN",
                          hint="choose other kinematics with --target")
    max_age = 2.0 * max(bin_s, _period(target_stream))
    Y = sample_target(t, target_stream.timestamps, tdata, max_age)
    if not np.isfinite(Y).all(axis=1).any():
        raise ConfigError(f"'{path}': no bin has a target: {label} has no finite sample "
                          f"during the signal '{signal.spec.name}' (signal "
                          f"{signal.timestamps[0]:.3f}-{signal.timestamps[-1]:.3f} s, target "
                          f"{target_stream.timestamps[0]:.3f}-"
                          f"{target_stream.timestamps[-1]:.3f} s)",
                          hint="check that both streams were recorded together")
    dt = (ends[1] - ends[0]) / srate if len(ends) > 1 else bin_s
    return Binned(X, Y, t, float(dt), [signal.spec.channel_names[c] for c in columns], names,
                  how, [str(path)], _drift_onset(rec, t))


def bin_features(data: np.ndarray, srate: float, band: tuple[float, float] | None,
                 bin_s: float = BIN_S) -> tuple[np.ndarray, np.ndarray, str]:
    """Causal features per bin.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
    srate : float
        Hz.
    band : (float, float) or None
        Log band power in this band (Hz), after a causal Butterworth band-pass
        from rest; None: the mean of each bin.
    bin_s : float
        Seconds per bin; at least one sample.

    Returns
    -------
    X : ndarray, shape (n_bins, n_channels)
    ends : ndarray of int, shape (n_bins,)
        Index of each bin's last sample.
    how : str
        What the features are, in words.
    """
    per_bin = max(1, int(round(bin_s * srate)))
    n_bins = data.shape[0] // per_bin
    x = np.asarray(data[: n_bins * per_bin], dtype=np.float64)
    if band is None:
        X = x.reshape(n_bins, per_bin, -1).mean(axis=1)
        how = "bin means"
    else:
        sos = sps.butter(BUTTER_ORDER, band, btype="bandpass", fs=srate, output="sos")
        y = sps.sosfilt(sos, x, axis=0)  # forward only, from rest: what a stream computes
        X = np.log((y * y).reshape(n_bins, per_bin, -1).mean(axis=1) + 1e-30)
        how = f"log power {band[0]:g}-{band[1]:g} Hz"
    ends = np.arange(1, n_bins + 1) * per_bin - 1
    return X, ends, f"{how}, {per_bin / srate * 1000:g} ms bins"


def sample_target(t: np.ndarray, timestamps: np.ndarray, values: np.ndarray,
                  max_age: float) -> np.ndarray:
    """The last target sample at or before each time, NaN when none is recent enough.

    Parameters
    ----------
    t : ndarray, shape (n_bins,)
        Bin end times.
    timestamps : ndarray, shape (n_samples,)
        Target sample times, increasing.
    values : ndarray, shape (n_samples, n_outputs)
    max_age : float
        A sample older than this (s) at the bin's end labels nothing.

    Returns
    -------
    ndarray, shape (n_bins, n_outputs)
    """
    order = np.argsort(timestamps, kind="stable")
    ts, vals = timestamps[order], values[order]
    idx = np.searchsorted(ts, t + 1e-9, side="right") - 1  # tolerance: equal clocks round
    out = np.full((t.shape[0], vals.shape[1]), np.nan)
    ok = idx >= 0
    ok[ok] &= (t[ok] - ts[idx[ok]]) <= max_age
    out[ok] = vals[idx[ok]]
    return out


# -- what is in the file ------------------------------------------------------------------------
def _describe(streams: list[Any]) -> str:
    parts = []
    for s in streams:
        names = list(s.spec.channel_names)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        parts.append(f"'{s.spec.name}' ({s.spec.type}, {len(names)} ch: {shown})")
    return "; ".join(parts) or "no numeric stream"


def _find_target(rec: Any, numeric: list[Any], target: str | None,
                 path: Path) -> tuple[Any, list[int]]:
    """The target's stream and columns."""
    if target is None:
        found = [s for s in numeric if s.spec.type.lower() not in NEURAL_STREAM_TYPES
                 and any(w in f"{s.spec.name} {s.spec.type}".lower() for w in KINEMATIC_WORDS)]
        if len(found) == 1:
            return found[0], list(range(found[0].spec.n_channels))
        what = "no stream looks like" if not found else f"{len(found)} streams look like"
        raise ConfigError(f"'{path}': {what} kinematics to decode; it holds {_describe(numeric)}",
                          hint="name the target with --target STREAM (a stream name) or "
                          "--target CH1,CH2 (channel names, e.g. --target vx,vy)")
    wanted = target.strip()
    for s in numeric:
        if s.spec.name.lower() == wanted.lower():
            return s, list(range(s.spec.n_channels))
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    best: tuple[Any, list[int]] | None = None
    for s in numeric:
        lower = [c.lower() for c in s.spec.channel_names]
        cols = [lower.index(n.lower()) for n in names if n.lower() in lower]
        if len(cols) == len(names) and names:
            return s, cols
        if cols and (best is None or len(cols) > len(best[1])):
            best = (s, cols)
    if best is not None:
        have = {best[0].spec.channel_names[c].lower() for c in best[1]}
        missing = [n for n in names if n.lower() not in have]
        raise ConfigError(f"'{path}': --target {target}: stream '{best[0].spec.name}' has no "
                          f"channel {', '.join(repr(m) for m in missing)}; it holds "
                          f"{_describe(numeric)}",
                          hint="give channels of one stream, or a stream's name")
    raise ConfigError(f"'{path}': --target {target} matches no stream and no channel; it holds "
                      f"{_describe(numeric)}",
                      hint="give a stream's name (--target Velocity) or channel names joined "
                      "by commas (--target vx,vy)")


def _find_signal(numeric: list[Any], target_stream: Any, target_cols: list[int],
                 path: Path) -> tuple[Any, list[int]]:
    """The neural stream and the columns to compute features of (the target's left out)."""
    def columns(s: Any) -> list[int]:
        cols = [c for c in range(s.spec.n_channels)
                if not (s is target_stream and c in target_cols)]
        neural = [c for c in cols if s.spec.channel_types[c].lower() in NEURAL_CHANNEL_TYPES]
        return neural or cols

    candidates = [s for s in numeric if columns(s)]
    neural = [s for s in candidates if s.spec.type.lower() in NEURAL_STREAM_TYPES]
    others = [s for s in candidates if s is not target_stream and s not in neural]
    chosen = (neural or others or candidates or [None])[0]
    if chosen is None:
        raise ConfigError(f"'{path}': no signal to decode besides the target; it holds "
                          f"{_describe(numeric)}",
                          hint="the recording needs a neural stream (EEG, ECoG, spike counts) "
                          "besides the kinematics")
    return chosen, columns(chosen)


def _band_for(signal: Any, columns: list[int], band: tuple[float, float] | str | None,
              srate: float, path: Path) -> tuple[float, float] | None:
    """The band of the log power features, or None for bin means."""
    if band == "none":
        return None
    if band is None:
        kinds = {signal.spec.channel_types[c].lower() for c in columns}
        kinds.add(signal.spec.type.lower())
        default = next((DEFAULT_BANDS[k] for k in DEFAULT_BANDS if k in kinds), None)
        # spike counts, features, or a rate too low for the band: the bins' means
        return default if default is not None and srate > 2.2 * default[1] else None
    lo, hi = band  # type: ignore[misc]
    if hi >= srate / 2:
        raise ConfigError(f"'{path}': --band {lo:g},{hi:g} reaches the Nyquist frequency of "
                          f"'{signal.spec.name}' ({srate / 2:g} Hz at {srate:g} Hz)",
                          hint="choose a band below it, or --band none for bin means")
    return float(lo), float(hi)


def _rate(stream: Any) -> float:
    span = float(stream.timestamps[-1] - stream.timestamps[0])
    if stream.n_samples < 2 or span <= 0:
        raise ConfigError(f"stream '{stream.spec.name}' has no sampling rate and too few "
                          "samples to measure one")
    return (stream.n_samples - 1) / span


def _period(stream: Any) -> float:
    if stream.spec.srate > 0:
        return 1.0 / float(stream.spec.srate)
    gaps = np.diff(stream.timestamps)
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if gaps.size else 1.0


def _drift_onset(rec: Any, t: np.ndarray) -> int | None:
    """First bin at or after the recording's first ``drift/<kind>/start`` marker."""
    times = [float(ts) for m in rec.markers() for v, ts in zip(m.data[:, 0], m.timestamps)
             if str(v).startswith("drift/") and str(v).split(" ")[0].endswith("/start")]
    if not times:
        return None
    after = np.flatnonzero(t >= min(times))
    return int(after[0]) if after.size else None
