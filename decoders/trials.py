"""Cut labelled trials out of a continuous recording, causally.

What ``bci evaluate`` feeds its decoders, whatever the recording came from (a
file, a session, the simulator): the continuous signal is band-passed with a
causal filter (``sosfilt`` forward only, state carried over the whole
recording, as online), then each event named in the ``--events`` mapping cuts
one epoch ``[onset + tmin, onset + tmax)``. Nothing is normalized here, so no
statistic of the future can leak into a trial.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal as sps

from bci_runtime.errors import ConfigError

# the causal band-pass each paradigm's recordings get before epoching (Hz)
PARADIGM_BANDS = {"mi": (1.0, 40.0), "ssvep": (3.0, 45.0)}
# epoch window after each event (s)
PARADIGM_WINDOWS = {"mi": (0.5, 2.5), "ssvep": (2.0, 5.0)}


@dataclass
class Continuous:
    """A continuous recording and its events.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
    times : ndarray, shape (n_samples,)
        Sample times, seconds (a recording with dropouts has gaps).
    sfreq : float
        Nominal rate.
    channel_names : tuple of str, shape (n_channels,)
    markers : list of str, shape (n_events,)
    marker_times : ndarray, shape (n_events,)
        Seconds, on the clock of ``times``.
    source : str
        Where it came from (a path, ``simulator:<preset>``), for messages.
    truth_markers : list of (str, float)
        Ground truth that is not an event to classify (drift onsets...).
    """

    data: np.ndarray
    times: np.ndarray
    sfreq: float
    channel_names: tuple[str, ...]
    markers: list[str]
    marker_times: np.ndarray
    source: str
    truth_markers: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Trials:
    """Labelled epochs in time order.

    Attributes
    ----------
    X : ndarray, shape (n_trials, n_channels, n_times)
    y : ndarray of str, shape (n_trials,)
    onsets : ndarray, shape (n_trials,)
        Event times, seconds from the recording's first sample (recordings given
        one after the other keep counting).
    sfreq : float
    channel_names : tuple of str
    sources : list of str
        Recording of each trial, shape (n_trials,).
    """

    X: np.ndarray
    y: np.ndarray
    onsets: np.ndarray
    sfreq: float
    channel_names: tuple[str, ...]
    sources: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def concatenate(parts: Sequence[Trials]) -> Trials:
        """Trials of several recordings, one after the other (channels must agree)."""
        first = parts[0]
        for p in parts[1:]:
            if p.channel_names != first.channel_names or p.sfreq != first.sfreq:
                raise ConfigError(
                    f"'{p.sources[0]}' has {len(p.channel_names)} channels at {p.sfreq:g} Hz "
                    f"({', '.join(p.channel_names[:4])}...), but '{first.sources[0]}' has "
                    f"{len(first.channel_names)} at {first.sfreq:g} Hz",
                    hint="train and test on recordings with the same montage and rate")
        onsets, offset = [], 0.0
        for p in parts:  # one timeline: each recording starts one trial after the last
            onsets.append(p.onsets + offset)
            gaps = np.diff(p.onsets)
            offset = float(onsets[-1][-1]) + (float(np.median(gaps)) if gaps.size else 1.0)
        return Trials(np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                      np.concatenate(onsets), first.sfreq,
                      first.channel_names, [s for p in parts for s in p.sources])


def load_continuous(path: Path) -> tuple[Continuous, list[str]]:
    """A recording file (XDF, FIF, EDF...) as its signal and events, and its warnings.

    The signal is the first EEG/ECoG/SEEG stream (else the first signal stream);
    the events are every marker stream's, in time order.

    Raises
    ------
    ConfigError
        The file cannot be read, or holds no signal stream.
    """
    from bci_runtime.drivers.recordings import load_recording

    rec = load_recording(path)
    signals = [s for s in rec.signals() if s.spec.type.upper() in ("EEG", "ECOG", "SEEG")] \
        or rec.signals()
    if not signals:
        raise ConfigError(f"'{path}' holds no signal stream", hint="give an EEG recording")
    signal = signals[0]
    markers: list[str] = []
    times: list[float] = []
    for m in rec.markers():
        markers += [str(v) for v in m.data[:, 0]]
        times += m.timestamps.tolist()
    order = np.argsort(times, kind="stable")
    rate = signal.spec.srate or float((signal.n_samples - 1) / max(signal.duration_s, 1e-9))
    return (Continuous(signal.data, signal.timestamps, rate, signal.spec.channel_names,
                       [markers[i] for i in order], np.asarray(times)[order], str(path)),
            list(rec.warnings))


def event_code(marker: str) -> str:
    """A marker as an event code: numeric codes compare as integers (``"1.000"`` is ``"1"``)."""
    text = marker.strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else text


def parse_events(text: str) -> dict[str, str]:
    """``"T1=left,T2=right"`` -> ``{"T1": "left", "T2": "right"}``.

    Several codes may share a label (``"2=13Hz,5=13Hz"``). Numeric codes match
    markers written as floats (XDF marker streams often hold ``"1.0000"``).
    """
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        code, sep, label = item.partition("=")
        if not sep or not code.strip() or not label.strip():
            raise ConfigError(f"--events: '{item}' is not CODE=LABEL",
                              hint="e.g. --events T1=left,T2=right")
        if code.strip() in mapping:
            raise ConfigError(f"--events: code '{code.strip()}' is mapped twice")
        mapping[event_code(code)] = label.strip()
    if len(set(mapping.values())) < 2:
        raise ConfigError(f"--events '{text}' names fewer than 2 classes",
                          hint="map event codes onto at least two labels: T1=left,T2=right")
    return mapping


def causal_bandpass(data: np.ndarray, sfreq: float, band: tuple[float, float],
                    order: int = 4) -> np.ndarray:
    """Butterworth band-pass run forward only, as an online filter would.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)

    Returns
    -------
    ndarray, shape (n_samples, n_channels)
    """
    low, high = band
    high = min(high, 0.45 * sfreq)
    sos = sps.butter(order, [low, high], btype="bandpass", fs=sfreq, output="sos")
    return sps.sosfilt(sos, data, axis=0)


def cut_trials(rec: Continuous, events: dict[str, str], tmin: float, tmax: float,
               band: tuple[float, float] | None) -> Trials:
    """Epochs of every event of ``rec`` that ``events`` maps onto a label.

    Parameters
    ----------
    rec : Continuous
    events : dict of str to str
        Event code (a marker string) -> class label.
    tmin, tmax : float
        Window after each event, seconds.
    band : (float, float) or None
        Causal band-pass first, or none.

    Raises
    ------
    ConfigError
        If no event matches (the message lists the codes the recording has), or
        the window is empty.
    """
    if not tmax > tmin:
        raise ConfigError(f"--tmin {tmin} must be before --tmax {tmax}")
    codes = [event_code(m) for m in rec.markers]
    hits = [(events[c], t) for c, t in zip(codes, rec.marker_times.tolist()) if c in events]
    if not hits:
        found = Counter(codes).most_common(12)
        listing = ", ".join(f"{code!r} ×{n}" for code, n in found) or "none"
        raise ConfigError(
            f"{rec.source}: none of the events {sorted(events)} occurs in the recording "
            f"(its event codes: {listing})",
            hint="map the codes the recording has, e.g. --events "
            + ",".join(f"{code}=label{i}" for i, (code, _) in enumerate(found[:2])))
    data = causal_bandpass(rec.data, rec.sfreq, band) if band is not None else rec.data
    n_times = int(round((tmax - tmin) * rec.sfreq))
    onsets = np.array([t for _, t in hits])
    # the sample at or after onset + tmin, by timestamp: gaps (dropouts) are not assumed away
    first = np.searchsorted(rec.times, onsets + tmin - 0.5 / rec.sfreq)
    inside = (onsets + tmin >= rec.times[0]) & (first + n_times <= data.shape[0])
    if not inside.any():
        raise ConfigError(f"{rec.source}: no event has a full window [{tmin}, {tmax}) s "
                          "inside the recording", hint="shorten --tmin/--tmax")
    idx = first[inside][:, None] + np.arange(n_times)
    X = np.ascontiguousarray(data[idx].transpose(0, 2, 1))  # (trials, channels, times)
    y = np.array([label for (label, _), keep in zip(hits, inside) if keep])
    return Trials(X, y, onsets[inside] - rec.times[0], rec.sfreq, rec.channel_names,
                  [rec.source] * int(inside.sum()))
