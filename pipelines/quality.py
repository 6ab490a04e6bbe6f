"""Per-channel signal quality for the calibration wizard's "signal check" step.

The wizard shows live traces and, for every channel, a clear pass or fail with
the reasons in plain language. This module does the computation; the web page
only displays it.

For each channel of a window of EEG (volts, ``(n_samples, n_channels)``):

* **missing** - NaN or infinite samples (the stream dropped data): bad;
* **railed** - the amplifier is saturated: a sizeable fraction of the samples
  sits at the window's extreme value (an ADC stuck at its maximum or minimum
  code), or beyond an absolute rail level;
* **flat** - no signal: a robust standard deviation far below any amplifier's
  noise floor, or the exact same value repeated for a long run. A channel held
  at its rail is reported as railed, not flat;
* **line noise** - power in the mains band (50 or 60 Hz, +- 1 Hz, and its
  harmonics below Nyquist) above the broadband floor beside it, over the EEG
  power in 1-40 Hz (Welch PSD, 1-s Hann segments); it fails when that ratio is
  high *and* the mains is more than a few microvolts;
* **amplitude** - the robust standard deviation (1.4826 x the median absolute
  deviation of the linearly detrended window) outside the range of EEG: too low
  means the electrode sees only amplifier noise (shorted, or bridged to the
  reference), too high means a loose electrode or movement. The robust estimate
  ignores a blink or two, and the detrend ignores the DC offset and slow drift
  of DC-coupled amplifiers;
* **impedance** - where the board reports it, above a limit is bad, above a
  lower warning level is a note.

A flat, railed or missing channel gets no line-noise or amplitude reason: those
would only restate the problem. Channels the clinician marks bad are bad with
that reason (:func:`mark_bad`). :func:`enough_good_channels` decides whether
the wizard may go on; the clinician may override it.

Online, :class:`QualityMonitor` keeps the last window in a ring buffer: the
acquisition side calls :meth:`QualityMonitor.update` with every chunk, the page
calls :meth:`QualityMonitor.assess` a few times per second.

Examples
--------
>>> monitor = QualityMonitor(250.0, ["C3", "Cz", "C4"])  # doctest: +SKIP
>>> monitor.update(chunk.data)                            # doctest: +SKIP
>>> qualities = monitor.assess()                          # doctest: +SKIP
>>> ok, message = enough_good_channels(qualities, 0.75)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import signal as sps

from bci_runtime.errors import ConfigError, SpecMismatchError
from bci_runtime.ringbuffer import RingBuffer

#: Length of a Welch segment (s): 1-Hz frequency resolution, so the assessed
#: window must be at least this long.
PSD_SEGMENT_S = 1.0
#: Mains frequencies that ``line_freq="auto"`` chooses between (Hz).
MAINS_FREQS = (50, 60)
_MAD_TO_STD = 1.4826  # MAD x this = standard deviation, for Gaussian data
_UV = 1e-6
_FLANK_HZ = 3.0  # the floor under a mains peak is the median PSD this far beyond its band


class QualityThresholds(BaseModel):
    """Pass/fail limits of the signal check, for scalp EEG in volts.

    The defaults were checked on real recordings in ``../shared/data``: over
    every 2-s window of PhysioNet EEGMMIDB subject 1 (14 runs, 64 channels), no
    channel is flat or railed, the line ratio stays below 0.13 and the robust
    standard deviation between 13 and 310 microvolts (above 200 only on frontal
    channels during eye movements, 0.1% of the channel-windows).

    Attributes
    ----------
    flat_std_uv : float
        Flat below this robust standard deviation (default 0.1 uV). Every
        amplifier's input noise is 0.5-1 uV RMS, so a channel below a tenth
        of that carries nothing: a lead that the driver zeroes, a channel that
        is switched off, a stuck value.
    flat_run_s : float or None
        Flat when the exact same value repeats for this long (default 0.5 s;
        None: off). Real EEG never repeats a sample for more than a few samples
        (5 at most in the PhysioNet runs); a long run means a stuck channel or
        a source that holds the last value during a dropout.
    min_std_uv : float
        Bad below this robust standard deviation (default 2 uV): resting EEG is
        5-50 uV RMS; 2 uV is the amplifier's noise alone, as when the electrode
        is shorted or bridged by gel to the reference.
    max_std_uv : float
        Bad above this robust standard deviation (default 200 uV): EEG, even
        frontal channels during eye movements, stays below it; a loose
        electrode, cable movement or muscle tension goes far above.
    rail_fraction : float
        Railed when at least this fraction of the window is at the rail
        (default 0.1). An amplifier rails by sticking at its maximum or minimum
        code: runs of identical samples at the window's extreme. Real EEG keeps
        under 0.05 (0.016 at most in PhysioNet windows); a tenth of the window
        (0.2 s of 2 s) stuck is saturation, not chance.
    rail_tolerance : float
        How close to the window's extreme a sample must be to count as at the
        rail, as a fraction of the window's peak-to-peak range (default 0.001).
        Only samples with a neighbour also at the extreme count, so a single
        peak does not.
    rail_abs_uv : float or None
        Any sample with ``|x|`` at or above this counts as at the rail (default
        150 000 uV = 150 mV; None: off). No EEG or electrode offset comes near it
        (wet electrodes: tens of mV), while the common 24-bit front end (ADS1299
        at gain 24: OpenBCI, and the simulator) rails at +-187.5 mV. It catches
        a channel held at the rail for the whole window, which the
        window-extreme test cannot tell from a dead channel. Set it to about 80%
        of your amplifier's input range.
    line_freq : {50, 60, "auto"} or None
        Mains frequency (Hz). ``"auto"`` (default) takes whichever of 50 and 60
        Hz carries more power over all channels of the window; None skips the
        line-noise check (for streams sampled too slowly to see the mains).
    line_bandwidth_hz : float
        Half-width of the mains band (default 1 Hz): mains wanders by less than
        0.1 Hz, and a 1-s Hann segment spreads a sine over +-1 bin.
    line_harmonics : int
        Multiples of the mains frequency counted, those below Nyquist (default
        2: the fundamental and the first harmonic, which rectified supplies and
        lamps add).
    eeg_band_hz : tuple of float
        Band whose power the line noise is compared with (default 1-40 Hz: the
        EEG that decoders use, below the lowest mains frequency).
    max_line_ratio : float
        Line noise fails when the mains power (above the broadband floor beside
        the mains band) exceeds this fraction of the EEG-band power (default
        0.25, i.e. mains RMS at half the EEG RMS: 10 uV of mains on 20 uV of
        EEG, clearly visible on the trace and the mark of a poor contact or an
        unshielded lead) ...
    min_line_uv : float
        ... and its RMS exceeds this (default 5 uV). A couple of microvolts of
        mains are harmless (any notch or band-pass removes them) even where the
        EEG is small, as on the simulator's frontal channels (ratio up to 0.55
        with 3 uV of mains). Clean recordings: ratio median 0.001, worst 0.12,
        mains at most 16 uV on PhysioNet; ratio median 0.01, worst 0.37, mains
        at most 6 uV on the SSVEP-Exo recordings.
    impedance_max_kohm : float or None
        Bad above this electrode impedance (default 25 kOhm; None: impedance is
        only shown). Modern high-input-impedance amplifiers and active electrodes
        tolerate up to about 25 kOhm before mains pickup and drift take over;
        raise it for dry electrodes.
    impedance_warn_kohm : float or None
        A note (not a failure) above this impedance (default 10 kOhm: the usual
        target for passive wet electrodes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flat_std_uv: float = Field(0.1, gt=0, description="flat below this robust std (uV)")
    flat_run_s: float | None = Field(0.5, gt=0, description="flat when one value repeats this "
                                     "long (s); None: off")
    min_std_uv: float = Field(2.0, ge=0, description="bad below this robust std (uV)")
    max_std_uv: float = Field(200.0, gt=0, description="bad above this robust std (uV)")
    rail_fraction: float = Field(0.1, gt=0, le=1, description="railed when this fraction of "
                                 "the window sits at the rail")
    rail_tolerance: float = Field(1e-3, ge=0, lt=0.5, description="'at the extreme' within this "
                                  "fraction of the window's peak-to-peak range")
    rail_abs_uv: float | None = Field(150_000.0, gt=0, description="|x| at or above this is at "
                                      "the rail (uV); None: off")
    line_freq: Literal[50, 60, "auto"] | None = Field("auto", description="mains frequency "
                                                      "(Hz), 'auto', or None to skip")
    line_bandwidth_hz: float = Field(1.0, gt=0, le=5, description="half-width of the mains "
                                     "band (Hz)")
    line_harmonics: int = Field(2, ge=1, le=5, description="multiples of the mains frequency "
                                "counted (below Nyquist)")
    eeg_band_hz: tuple[float, float] = Field((1.0, 40.0), description="EEG band the line "
                                             "noise is compared with (Hz)")
    max_line_ratio: float = Field(0.25, gt=0, description="bad above this line/EEG power ratio")
    min_line_uv: float = Field(5.0, ge=0, description="...and above this mains RMS (uV)")
    impedance_max_kohm: float | None = Field(25.0, gt=0, description="bad above this "
                                             "impedance (kOhm); None: no limit")
    impedance_warn_kohm: float | None = Field(10.0, gt=0, description="a note above this "
                                              "impedance (kOhm); None: no note")

    @model_validator(mode="after")
    def _consistent(self) -> QualityThresholds:
        if self.min_std_uv >= self.max_std_uv:
            raise ValueError(f"min_std_uv ({self.min_std_uv}) must be below max_std_uv "
                             f"({self.max_std_uv})")
        if self.min_std_uv > 0 and self.flat_std_uv > self.min_std_uv:
            raise ValueError(f"flat_std_uv ({self.flat_std_uv}) must not exceed min_std_uv "
                             f"({self.min_std_uv})")
        low, high = self.eeg_band_hz
        if not 0 <= low < high:
            raise ValueError(f"eeg_band_hz must be (low, high) with 0 <= low < high, "
                             f"got {self.eeg_band_hz}")
        lowest_mains = min(MAINS_FREQS) if self.line_freq in ("auto", None) else self.line_freq
        if high >= lowest_mains - self.line_bandwidth_hz:
            raise ValueError(f"eeg_band_hz upper edge {high:g} Hz overlaps the mains band "
                             f"({lowest_mains} +- {self.line_bandwidth_hz:g} Hz); lower it")
        if (self.impedance_warn_kohm is not None and self.impedance_max_kohm is not None
                and self.impedance_warn_kohm > self.impedance_max_kohm):
            raise ValueError(f"impedance_warn_kohm ({self.impedance_warn_kohm}) must not exceed "
                             f"impedance_max_kohm ({self.impedance_max_kohm})")
        return self


#: The default thresholds (immutable, safe as a default argument).
DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class ChannelQuality:
    """The signal check of one channel.

    Attributes
    ----------
    name : str
        Channel name.
    std_uv : float
        Robust standard deviation of the linearly detrended window (uV); NaN
        when samples are missing.
    line_ratio : float
        Mains-band power over EEG-band power; NaN when not measured (line check
        off, or samples missing), inf when there is mains and no EEG at all.
    flat : bool
        No signal (robust std below the flat limit, or a long run of one value).
    railed : bool
        The amplifier is saturated on this channel.
    impedance_kohm : float or None
        Electrode impedance when the board reports it.
    status : {"good", "bad"}
        The verdict.
    reasons : list of str
        Why the channel is bad, in plain language for the clinician (empty
        when good).
    line_freq_hz : float or None
        Mains frequency the line ratio refers to.
    line_uv : float
        RMS of the mains noise (uV), above the broadband floor; NaN when not
        measured.
    rail_fraction : float
        Fraction of the window at the rail.
    notes : list of str
        Advice that does not fail the channel (impedance above the warning
        level).
    """

    name: str
    std_uv: float
    line_ratio: float
    flat: bool
    railed: bool
    impedance_kohm: float | None
    status: Literal["good", "bad"]
    reasons: list[str] = field(default_factory=list)
    line_freq_hz: float | None = None
    line_uv: float = math.nan
    rail_fraction: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def good(self) -> bool:
        """True when the channel passed the check."""
        return self.status == "good"

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready mapping (NaN and infinity become None)."""
        def num(v: float | None) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        return {
            "name": self.name, "status": self.status, "reasons": list(self.reasons),
            "notes": list(self.notes), "std_uv": num(self.std_uv),
            "line_ratio": num(self.line_ratio), "line_uv": num(self.line_uv),
            "line_freq_hz": self.line_freq_hz,
            "flat": self.flat, "railed": self.railed, "rail_fraction": num(self.rail_fraction),
            "impedance_kohm": num(self.impedance_kohm),
        }


# -- validation -----------------------------------------------------------------------------
def _check_srate(srate: float) -> float:
    if isinstance(srate, bool) or not isinstance(srate, numbers.Real) or not (
            math.isfinite(srate) and srate > 0):
        raise SpecMismatchError(f"sampling rate must be a positive number of Hz, got {srate!r}",
                                hint="pass the stream's nominal rate (e.g. 250.0)")
    return float(srate)


def _check_names(channel_names: Sequence[str]) -> list[str]:
    if isinstance(channel_names, str):
        raise SpecMismatchError(f"channel_names must be a sequence of names, got the string "
                                f"{channel_names!r}", hint="pass a list, e.g. ['C3', 'Cz']")
    names = [str(n) for n in channel_names]
    if not names:
        raise SpecMismatchError("no channel names given", hint="pass one name per channel")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SpecMismatchError(f"duplicate channel names: {', '.join(dup)}",
                                hint="give every channel a unique name; the wizard marks "
                                     "channels by name")
    return names


def _check_shape(data: ArrayLike, n_channels: int, what: str) -> NDArray[np.float64]:
    arr = np.asarray(data)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SpecMismatchError(f"{what} must be real numbers, got dtype {arr.dtype}",
                                hint="pass the samples as a float array in volts")
    if arr.ndim != 2:
        raise SpecMismatchError(
            f"{what} must be 2-D (n_samples, n_channels), got shape {arr.shape}",
            hint=(f"one sample of {n_channels} channels is data.reshape(1, -1)"
                  if arr.ndim == 1 else "pass one window of one stream"))
    if arr.shape[1] != n_channels:
        transposed = arr.shape[0] == n_channels
        raise SpecMismatchError(
            f"{what} has {arr.shape[1]} channels (shape {arr.shape}) but {n_channels} "
            f"channel names were given",
            hint=("it looks transposed: MNE's get_data() gives (n_channels, n_times); pass "
                  "data.T" if transposed else "give one name per column"))
    return arr.astype(np.float64, copy=False)


def _check_impedance(impedance_kohm: ArrayLike | None, n_channels: int) -> NDArray | None:
    if impedance_kohm is None:
        return None
    z = np.asarray(impedance_kohm, dtype=np.float64)
    if z.shape != (n_channels,):
        raise SpecMismatchError(f"impedance_kohm must have shape ({n_channels},), one value per "
                                f"channel, got {z.shape}",
                                hint="use NaN for channels whose impedance is not measured")
    if np.any(z < 0):
        raise SpecMismatchError(f"impedance_kohm has negative values at channel(s) "
                                f"{np.flatnonzero(z < 0).tolist()}",
                                hint="impedances are in kOhm and >= 0; NaN means not measured")
    return z


def _segment_samples(srate: float) -> int:
    return max(8, int(round(PSD_SEGMENT_S * srate)))


def _line_candidates(t: QualityThresholds, srate: float) -> tuple[int, ...]:
    """Mains frequencies to measure, after checking the rate can show them."""
    if t.line_freq is None:
        return ()
    candidates = MAINS_FREQS if t.line_freq == "auto" else (t.line_freq,)
    nyquist = srate / 2
    for f0 in candidates:
        if f0 + t.line_bandwidth_hz >= nyquist:
            need = 2 * (f0 + t.line_bandwidth_hz)
            other = " or set line_freq to the local mains frequency" if t.line_freq == "auto" \
                else ""
            raise SpecMismatchError(
                f"a {srate:g} Hz stream cannot show {f0} Hz line noise: its Nyquist frequency "
                f"is {nyquist:g} Hz",
                hint=f"sample above {need:g} Hz{other}, or set line_freq=None in the quality "
                     f"thresholds to skip the line-noise check")
    return candidates


# -- measures (vectorised over channels) ----------------------------------------------------
def _robust_std(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1.4826 x median absolute deviation of the linearly detrended columns, shape (c,)."""
    d = sps.detrend(x, axis=0, type="linear")
    return _MAD_TO_STD * np.median(np.abs(d - np.median(d, axis=0)), axis=0)


def _longest_run(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """Longest run of identical consecutive samples in each column, shape (c,)."""
    same = x[1:] == x[:-1]  # (n - 1, c)
    counts = np.cumsum(same, axis=0)
    last_break = np.maximum.accumulate(np.where(same, 0, counts), axis=0)
    return (counts - last_break).max(axis=0, initial=0) + 1


def _rail(x: NDArray[np.float64], tolerance: float,
          rail_abs_v: float | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fraction of each column at the rail, and the rail value, both shape (c,)."""
    hi, lo = x.max(axis=0), x.min(axis=0)
    tol = tolerance * (hi - lo)
    varying = hi > lo
    at_hi = (x >= hi - tol) & varying
    at_lo = (x <= lo + tol) & varying
    held = at_hi | at_lo
    neighbour = np.zeros_like(held)
    neighbour[1:] |= held[:-1]
    neighbour[:-1] |= held[1:]
    held &= neighbour  # a stuck amplifier holds the value; a single peak does not count
    if rail_abs_v is not None:
        held |= np.abs(x) >= rail_abs_v
    value = np.where(at_hi.sum(axis=0) >= at_lo.sum(axis=0), hi, lo)
    return held.mean(axis=0), value


def _line_noise(x: NDArray[np.float64], srate: float, t: QualityThresholds,
                candidates: tuple[int, ...], usable: NDArray[np.bool_],
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Mains noise of each column: line-to-EEG power ratio and mains RMS (V), both
    shape (c,), and the mains frequency used.

    The mains power is what the mains bands hold above the broadband floor (the
    median PSD of the flanks beside each band), so that white noise or EMG do
    not count as line noise.
    """
    f, psd = sps.welch(x, fs=srate, nperseg=_segment_samples(srate), axis=0)  # (n_f, c)
    low, high = t.eeg_band_hz
    eeg = psd[(f >= low) & (f <= high)].sum(axis=0)
    nyquist = srate / 2
    bw = t.line_bandwidth_hz
    powers = []
    for f0 in candidates:
        line = np.zeros(psd.shape[1])
        for k in range(1, t.line_harmonics + 1):
            if k * f0 + bw >= nyquist:
                break
            offset = np.abs(f - k * f0)
            in_band = offset <= bw
            flank = (offset > bw) & (offset <= bw + _FLANK_HZ) & (f < nyquist)
            # the broadband floor under the peak (EEG, EMG, amplifier noise) is not mains
            floor = np.median(psd[flank], axis=0) * in_band.sum()
            line += np.maximum(psd[in_band].sum(axis=0) - floor, 0.0)
        powers.append(line)
    best = int(np.argmax([p[usable].sum() for p in powers])) if len(powers) > 1 else 0
    line = powers[best]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(eeg > 0, line / eeg, np.where(line > 0, np.inf, 0.0))
    return ratio, np.sqrt(line * (f[1] - f[0])), candidates[best]


# -- wording --------------------------------------------------------------------------------
def _volts(v: float) -> str:
    a = abs(v)
    if a >= 1.0:
        return f"{v:+.3g} V"
    if a >= 1e-3:
        return f"{v * 1e3:+.4g} mV"
    return f"{v * 1e6:+.4g} µV"


def _percent(ratio: float) -> str:
    return f"{ratio:.0%}" if ratio >= 0.01 else f"{ratio:.1%}"


# -- the check ------------------------------------------------------------------------------
def assess(data: NDArray, srate: float, channel_names: Sequence[str],
           thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
           impedance_kohm: ArrayLike | None = None, *,
           marked_bad: Collection[str] = ()) -> list[ChannelQuality]:
    """Check the quality of every channel of one window of EEG.

    Parameters
    ----------
    data : ndarray, shape (n_samples, n_channels)
        The window, in volts (LSL orientation; pass ``raw.get_data().T`` from
        MNE). At least :data:`PSD_SEGMENT_S` seconds; 2 s is a good length.
        NaN or infinite samples make their channel bad, not the call fail.
    srate : float
        Sampling rate (Hz).
    channel_names : sequence of str, length n_channels
        Unique channel names.
    thresholds : QualityThresholds
        Pass/fail limits.
    impedance_kohm : array-like, shape (n_channels,), optional
        Electrode impedances (kOhm) when the board reports them; NaN for a
        channel that is not measured.
    marked_bad : collection of str
        Channels the clinician marked bad (see :func:`mark_bad`).

    Returns
    -------
    list of ChannelQuality
        One per channel, in the order of ``channel_names``.

    Raises
    ------
    SpecMismatchError
        Data not 2-D, a channel count that does not match the names (with a hint
        when the data look transposed), duplicate names, a non-positive rate, a
        rate too low to see the mains frequency, a window shorter than
        :data:`PSD_SEGMENT_S`, impedances of the wrong shape or negative.
    ConfigError
        ``marked_bad`` names a channel that is not in ``channel_names``.
    """
    t = thresholds
    srate = _check_srate(srate)
    names = _check_names(channel_names)
    x = _check_shape(data, len(names), "data")
    n = x.shape[0]
    need = _segment_samples(srate)
    if n < need:
        raise SpecMismatchError(
            f"the window has {n} samples ({n / srate:.2f} s at {srate:g} Hz); the signal check "
            f"needs at least {need} ({PSD_SEGMENT_S:g} s) for its spectrum",
            hint="assess a longer window (2 s is a good length)")
    candidates = _line_candidates(t, srate)
    z = _check_impedance(impedance_kohm, len(names))

    finite = np.isfinite(x)
    n_missing = n - finite.sum(axis=0)
    missing = n_missing > 0
    if missing.any():
        x = np.where(finite, x, 0.0)

    std_uv = _robust_std(x) / _UV
    run_s = _longest_run(x) / srate
    rail_abs_v = None if t.rail_abs_uv is None else t.rail_abs_uv * _UV
    rail_frac, rail_value = _rail(x, t.rail_tolerance, rail_abs_v)
    railed = (rail_frac >= t.rail_fraction) & ~missing
    flat_std = std_uv < t.flat_std_uv
    flat_run = (run_s >= t.flat_run_s) if t.flat_run_s is not None else np.zeros_like(flat_std)
    flat = (flat_std | flat_run) & ~railed & ~missing
    if candidates:
        ratio, line_v, f0 = _line_noise(x, srate, t, candidates, ~missing)
        line_uv = line_v / _UV
        line_freq_hz: float | None = float(f0)
    else:
        ratio, line_uv, line_freq_hz = np.full(len(names), np.nan), np.full(len(names),
                                                                           np.nan), None
    std_uv[missing] = np.nan
    ratio[missing] = np.nan
    line_uv[missing] = np.nan
    line_bad = (ratio > t.max_line_ratio) & (line_uv > t.min_line_uv)

    low, high = t.eeg_band_hz
    out = []
    for i, name in enumerate(names):
        reasons: list[str] = []
        notes: list[str] = []
        if missing[i]:
            reasons.append(f"no signal: {n_missing[i]} of {n} samples are missing (NaN) — the "
                           "amplifier or the stream dropped data on this channel")
        elif railed[i]:
            reasons.append(f"railed: stuck at {_volts(rail_value[i])} for "
                           f"{_percent(rail_frac[i])} of the window — the amplifier input is "
                           "saturated; re-seat or re-gel the electrode and check its lead")
        elif flat[i]:
            if flat_std[i]:
                reasons.append(f"flat: {std_uv[i]:.2g} µV std — is the electrode connected?")
            else:
                reasons.append(f"flat: the signal did not change for {run_s[i]:.1f} s — is "
                               "the electrode connected?")
        else:
            if line_bad[i]:
                size = ("nothing but line noise" if np.isinf(ratio[i])
                        else f"line noise {_percent(ratio[i])} of the signal")
                reasons.append(f"{size} ({line_uv[i]:.0f} µV of {line_freq_hz:g} Hz mains "
                               f"against the {low:g}–{high:g} Hz EEG) — check the ground and "
                               "the cable")
            if std_uv[i] < t.min_std_uv:
                reasons.append(f"very small signal: {std_uv[i]:.2g} µV std (EEG is above "
                               f"{t.min_std_uv:g} µV) — is the electrode shorted or bridged "
                               "to the reference by gel?")
            elif std_uv[i] > t.max_std_uv:
                reasons.append(f"very large signal: {std_uv[i]:.0f} µV std (EEG stays below "
                               f"{t.max_std_uv:g} µV) — loose electrode or movement; check "
                               "the contact and ask the patient to relax")
        imp: float | None = None
        if z is not None and not np.isnan(z[i]):
            imp = float(z[i])
            if t.impedance_max_kohm is not None and imp > t.impedance_max_kohm:
                size = f"{imp:.0f} kΩ" if math.isfinite(imp) else "beyond measure (open lead?)"
                reasons.append(f"impedance {size} (limit {t.impedance_max_kohm:g} kΩ) — "
                               "re-gel or re-seat the electrode")
            elif t.impedance_warn_kohm is not None and imp > t.impedance_warn_kohm:
                notes.append(f"impedance {imp:.0f} kΩ is above {t.impedance_warn_kohm:g} kΩ — "
                             "acceptable, but lower is better")
        out.append(ChannelQuality(
            name=name, std_uv=float(std_uv[i]), line_ratio=float(ratio[i]),
            line_uv=float(line_uv[i]),
            flat=bool(flat[i]), railed=bool(railed[i]), impedance_kohm=imp,
            status="bad" if reasons else "good", reasons=reasons, line_freq_hz=line_freq_hz,
            rail_fraction=float(rail_frac[i]), notes=notes))
    return mark_bad(out, marked_bad) if marked_bad else out


def mark_bad(qualities: Sequence[ChannelQuality], names: Collection[str],
             reason: str = "marked bad by the clinician") -> list[ChannelQuality]:
    """Return the qualities with the named channels set bad.

    Parameters
    ----------
    qualities : sequence of ChannelQuality
        From :func:`assess`.
    names : collection of str
        Channels to mark.
    reason : str
        The reason shown for them.

    Returns
    -------
    list of ChannelQuality
        New objects for the marked channels, the others unchanged.

    Raises
    ------
    ConfigError
        A name that is not among the assessed channels.
    """
    known = {q.name for q in qualities}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigError(f"cannot mark unknown channel(s) bad: {', '.join(unknown)}",
                          hint=f"the channels are: {', '.join(q.name for q in qualities)}")
    wanted = set(names)
    return [replace(q, status="bad", reasons=[*q.reasons, reason]) if q.name in wanted else q
            for q in qualities]


def _required(minimum: int | float, n: int) -> int:
    if isinstance(minimum, bool) or not isinstance(minimum, numbers.Real):
        raise ConfigError(f"minimum must be a channel count (int) or a fraction (float), got "
                          f"{minimum!r}", hint="e.g. 6 channels, or 0.75 of the channels")
    if isinstance(minimum, numbers.Integral):
        count = int(minimum)
        if count < 1:
            raise ConfigError(f"minimum must be at least 1 good channel, got {count}")
        if count > n:
            raise ConfigError(f"minimum {count} good channels, but the montage has only {n}",
                              hint="lower the minimum, or give a fraction such as 0.75")
        return count
    fraction = float(minimum)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"a fraction of good channels must be within (0, 1], got {fraction}",
                          hint="give a count as an int (e.g. 6), a fraction as a float (0.75)")
    return max(1, math.ceil(fraction * n - 1e-9))


def enough_good_channels(qualities: Sequence[ChannelQuality],
                         minimum: int | float) -> tuple[bool, str]:
    """Decide whether enough channels passed for the wizard to go on.

    Parameters
    ----------
    qualities : sequence of ChannelQuality
        From :func:`assess` (after :func:`mark_bad`).
    minimum : int or float
        Good channels needed: a count (``int``, e.g. ``6``) or a fraction of the
        channels (``float`` in (0, 1], e.g. ``0.75``, rounded up).

    Returns
    -------
    ok : bool
        True when at least ``minimum`` channels are good.
    message : str
        For the clinician: how many are good, which are bad and why, and, when
        not enough, that they may override.

    Raises
    ------
    ConfigError
        No channels, or a minimum that is not a count in [1, n_channels] or a
        fraction in (0, 1].
    """
    n = len(qualities)
    if n == 0:
        raise ConfigError("no channels were assessed", hint="call assess() on a window first")
    need = _required(minimum, n)
    bad = [q for q in qualities if not q.good]
    n_good = n - len(bad)
    listed = "; ".join(f"{q.name} ({q.reasons[0].split(' — ')[0] if q.reasons else 'bad'})"
                       for q in bad)
    if n_good >= need:
        message = f"{n_good} of {n} channels are good (at least {need} needed)"
        return True, message + (f"; bad: {listed}" if bad else "")
    return False, (f"only {n_good} of {n} channels are good, at least {need} needed; fix: "
                   f"{listed} — or override to continue with fewer channels")


# -- online ---------------------------------------------------------------------------------
class QualityMonitor:
    """The signal check on the newest window of a live stream.

    The acquisition side calls :meth:`update` with each chunk; the wizard calls
    :meth:`assess` a few times per second. Both may run on different threads.

    Parameters
    ----------
    srate : float
        Sampling rate (Hz).
    channel_names : sequence of str
        Unique channel names, one per column of the chunks.
    window_s : float
        Length of the assessed window (s), at least :data:`PSD_SEGMENT_S`.
    thresholds : QualityThresholds
        Pass/fail limits.

    Raises
    ------
    SpecMismatchError
        A bad rate, names, or a rate too low for the mains frequency.
    ConfigError
        A window shorter than :data:`PSD_SEGMENT_S`.
    """

    def __init__(self, srate: float, channel_names: Sequence[str], window_s: float = 2.0,
                 thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> None:
        self.srate = _check_srate(srate)
        self.channel_names = tuple(_check_names(channel_names))
        self.thresholds = thresholds
        _line_candidates(thresholds, self.srate)  # a rate too low fails now, not at assess
        self.min_samples = _segment_samples(self.srate)
        real = isinstance(window_s, numbers.Real) and not isinstance(window_s, bool)
        capacity = int(round(window_s * self.srate)) if real and math.isfinite(window_s) else 0
        if capacity < self.min_samples:
            raise ConfigError(f"window_s={window_s!r} s is too short for the signal check",
                              hint=f"use at least {PSD_SEGMENT_S:g} s (2 s is a good length)")
        self.window_s = float(window_s)
        self._buffer = RingBuffer(capacity, len(self.channel_names), np.float64)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Samples in a full window."""
        return self._buffer.capacity

    @property
    def n_buffered(self) -> int:
        """Samples held now (at most :attr:`capacity`)."""
        return len(self._buffer)

    @property
    def ready(self) -> bool:
        """True once enough samples arrived for :meth:`assess` to give a result."""
        return self.n_buffered >= self.min_samples

    def update(self, data: NDArray, timestamps: NDArray[np.float64] | None = None) -> None:
        """Append a chunk.

        Parameters
        ----------
        data : ndarray, shape (n_samples, n_channels)
            New samples (V); NaN is kept and reported by :meth:`assess`.
        timestamps : ndarray, shape (n_samples,), optional
            Their timestamps (kept alongside; not used by the check).

        Raises
        ------
        SpecMismatchError
            A chunk that is not ``(n_samples, n_channels)``.
        """
        x = _check_shape(data, len(self.channel_names), "chunk")
        n = x.shape[0]
        if n == 0:
            return
        if timestamps is None:
            stamps: NDArray[np.float64] = np.broadcast_to(np.float64(0.0), (n,))
        else:
            stamps = np.asarray(timestamps, dtype=np.float64)
            if stamps.shape != (n,):
                raise SpecMismatchError(f"timestamps have shape {stamps.shape} for a chunk of "
                                        f"{n} samples", hint="give one timestamp per sample")
        with self._lock:
            self._buffer.write(x, stamps)

    def window(self) -> NDArray[np.float64] | None:
        """A copy of the newest window, shape (n, n_channels), or None before :attr:`ready`.

        The window is the last :attr:`capacity` samples, or all the samples held
        while the buffer fills.
        """
        with self._lock:
            n = len(self._buffer)
            if n < self.min_samples:
                return None
            data, _ = self._buffer.latest(n)
            return data.copy()

    def assess(self, impedance_kohm: ArrayLike | None = None, *,
               marked_bad: Collection[str] = ()) -> list[ChannelQuality] | None:
        """Check the newest window (see :func:`assess`).

        Parameters
        ----------
        impedance_kohm : array-like, shape (n_channels,), optional
            Electrode impedances (kOhm), NaN where not measured.
        marked_bad : collection of str
            Channels the clinician marked bad.

        Returns
        -------
        list of ChannelQuality or None
            None until :attr:`ready` (less than :data:`PSD_SEGMENT_S` of data).
        """
        data = self.window()
        if data is None:
            return None
        return assess(data, self.srate, self.channel_names, self.thresholds, impedance_kohm,
                      marked_bad=marked_bad)
