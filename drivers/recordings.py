"""Load any recording into one in-memory model, for file replay.

:func:`load_recording` reads an XDF file (pyxdf) or anything ``mne.io.read_raw``
reads (FIF, EDF, BDF, GDF, BrainVision, EEGLAB, Persyst...) into a
:class:`Recording`: a list of :class:`RecordedStream`, each a
:class:`~bci_runtime.spec.StreamSpec` with its samples in LSL's orientation
``(n_samples, n_channels)`` and their timestamps on the recording's clock. A
replay player (LSL outlets) and the in-process replay source node both play
from this model.

* **XDF.** Every stream with samples becomes a :class:`RecordedStream`, with its
  timestamps clock-offset corrected by pyxdf (``synchronize_clocks=True``,
  ``handle_clock_resets=True``) and not dejittered. Numeric samples keep their
  format (``float32`` stays ``float32``; ``double64`` and integers become
  ``float64``); string streams become marker streams. Channel labels, types and
  units come from the header's ``desc/channels/channel`` when present (else
  ``ch1``..., the stream type, ``a.u.``). Streams without samples are left out,
  with a warning. Compressed XDF (``.xdfz``, ``.xdf.gz``) is decompressed to a
  temporary file first.
* **MNE formats.** The non-stim channels become one numeric stream (``float64``,
  SI units as MNE gives them: ``V`` for EEG/ECoG/sEEG); its timestamps are
  ``(first_samp + arange(n_times)) / sfreq``, i.e. ``raw.times + first_time``.
  Annotations (their onsets are on that same clock), stim-channel events
  (``mne.find_events``) and an MNE events file beside the recording
  (``X_raw.fif`` -> ``X-eve.fif``, ``X_raw-eve.fif``...) or given as
  ``events_file`` become one marker stream ``<stem>-markers`` (event codes as
  strings, e.g. ``"2"``).
* **Checks** (:mod:`bci_runtime.drivers.file_checks`) run before parsing: a
  missing, empty, pointer (Git-LFS, git-annex) or unknown file is a
  :class:`~bci_runtime.errors.RecordingError` that says how to fix it; a
  truncated or oversized EDF/BDF, a corrupted or cut-short XDF, NaN/Inf values,
  an effective rate far from the nominal one are recovered from and described in
  :attr:`Recording.warnings`.

The arrays are plain, writable numpy arrays shared by whoever holds the
:class:`Recording`: players must not modify them in place.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.drivers.file_checks import (
    check_companions,
    check_edf,
    check_file,
    check_pointer,
    decompress_gzip,
    nonfinite_warning,
    open_ranges,
    order_warning,
    rate_warning,
    recording_suffix,
    scan_xdf,
)
from bci_runtime.errors import ConfigError, RecordingError, SpecMismatchError
from bci_runtime.spec import EVENT_DTYPE, StreamSpec

__all__ = ["RecordedStream", "Recording", "load_recording"]

PYXDF_LOGGER = "pyxdf.pyxdf"
#: What pyxdf's recovery messages mean, in plain words.
PYXDF_EXPLAINED = {
    "Error reading chunk length": "a damaged chunk made pyxdf lose its place in the file",
    "got zero-length chunk": "the samples up to that boundary chunk are lost",
    "found likely XDF file corruption": "the samples up to the next boundary chunk are lost",
}
#: MNE channel types counted as neural data when naming the stream type.
NEURAL_TYPES = ("eeg", "ecog", "seeg", "dbs")
#: Stream-type names by the kinds of neural channels present (no eeg among them).
INTRACRANIAL_TYPES = {"ecog": "ECoG", "seeg": "sEEG", "dbs": "sEEG"}
#: XDF channel types taken from the stream type when the header lists none.
KNOWN_CHANNEL_TYPES = ("eeg", "ecog", "seeg", "emg", "eog", "ecg", "meg", "nirs", "dbs")
#: Spellings of units in XDF headers -> the short names the runtime uses.
UNIT_ALIASES = {
    "microvolts": "uV", "microvolt": "uV", "uv": "uV", "µv": "uV", "μv": "uV",
    "millivolts": "mV", "millivolt": "mV", "mv": "mV",
    "nanovolts": "nV", "nanovolt": "nV", "nv": "nV",
    "volts": "V", "volt": "V", "v": "V",
}
#: MNE events files looked for beside a recording ``<base>_raw.fif``/``<stem>.<ext>``.
EVENTS_SUFFIXES = ("-eve.fif", "_eve.fif", "-eve.fif.gz", "_eve.fif.gz")
#: Extensions read by several MNE readers: the format is named after the reader.
AMBIGUOUS_SUFFIXES = (".cnt", ".dat", ".eeg")


# -- model ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RecordedStream:
    """One recorded stream: its spec, samples and timestamps.

    Parameters
    ----------
    spec : StreamSpec
        Name, type, channels, units, nominal rate (0: irregular), dtype and source id.
    data : ndarray, shape (n_samples, n_channels)
        Numeric streams: float32 or float64 (as ``spec.dtype``), C-contiguous.
        Marker streams: object array of str (``n_channels`` is 1 for markers).
    timestamps : ndarray of float64, shape (n_samples,)
        Sample times in seconds on the recording's clock.

    Raises
    ------
    SpecMismatchError
        If the shapes or dtypes do not agree with each other or with ``spec``.
    """

    spec: StreamSpec
    data: np.ndarray
    timestamps: np.ndarray

    def __post_init__(self) -> None:
        name = self.spec.name
        if self.data.ndim != 2 or self.timestamps.ndim != 1:
            raise SpecMismatchError(
                f"recorded stream '{name}': data must be (n_samples, n_channels) and "
                f"timestamps (n_samples,), got {self.data.shape} and {self.timestamps.shape}")
        if self.data.shape[0] != self.timestamps.shape[0]:
            raise SpecMismatchError(
                f"recorded stream '{name}': {self.data.shape[0]} samples but "
                f"{self.timestamps.shape[0]} timestamps")
        if self.data.shape[1] != self.spec.n_channels:
            raise SpecMismatchError(
                f"recorded stream '{name}': {self.data.shape[1]} data columns but "
                f"{self.spec.n_channels} channels in its spec")
        expected = np.dtype(object) if self.spec.is_events else np.dtype(self.spec.dtype)
        if self.data.dtype != expected or self.timestamps.dtype != np.float64:
            raise SpecMismatchError(
                f"recorded stream '{name}': data {self.data.dtype} / timestamps "
                f"{self.timestamps.dtype}, expected {expected} / float64")

    @property
    def is_markers(self) -> bool:
        """True for string (marker/event) streams."""
        return self.spec.is_events

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.timestamps.shape[0])

    @property
    def duration_s(self) -> float:
        """Time covered in seconds; 0 when empty.

        Last minus first timestamp, plus one sample period for regular streams
        (a 125 s EDF at 160 Hz gives 125.0).
        """
        if self.n_samples == 0:
            return 0.0
        span = float(self.timestamps[-1] - self.timestamps[0])
        return span + (1.0 / self.spec.srate if self.spec.srate > 0 else 0.0)


@dataclass
class Recording:
    """A loaded recording.

    Attributes
    ----------
    path : Path
        The file read.
    format : str
        What it was read as: ``xdf``, ``fif``, ``edf``, ``bdf``, ``gdf``,
        ``brainvision``, ``eeglab``, ``persyst``...
    streams : list of RecordedStream
        Numeric streams first, then marker streams, each group in file order.
    warnings : list of str
        What was recovered, lost or odd, in plain words; empty when clean.
    """

    path: Path
    format: str
    streams: list[RecordedStream]
    warnings: list[str] = field(default_factory=list)

    def signals(self) -> list[RecordedStream]:
        """Return the numeric streams."""
        return [s for s in self.streams if not s.is_markers]

    def markers(self) -> list[RecordedStream]:
        """Return the marker (string) streams."""
        return [s for s in self.streams if s.is_markers]

    def stream(self, name: str) -> RecordedStream:
        """Return the stream called ``name``.

        Raises
        ------
        ConfigError
            If there is none; the message lists the streams there are.
        """
        for s in self.streams:
            if s.spec.name == name:
                return s
        names = ", ".join(f"'{s.spec.name}'" for s in self.streams)
        raise ConfigError(f"recording '{self.path}' has no stream '{name}'",
                          hint=f"its streams are: {names}")

    @property
    def start(self) -> float:
        """Earliest timestamp over all streams (s, recording clock); NaN without samples."""
        return min((float(s.timestamps.min()) for s in self.streams if s.n_samples),
                   default=math.nan)


# -- entry point ----------------------------------------------------------------------------
def load_recording(path: str | Path, *, events_file: Path | None = None) -> Recording:
    """Read a recording file into memory, checking it first.

    Parameters
    ----------
    path : str or Path
        An XDF file or any file ``mne.io.read_raw`` reads.
    events_file : Path, optional
        An MNE events file (``*-eve.fif``) whose events become markers; by
        default one beside the recording is used when there is one. MNE formats only.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        If the file cannot be read (missing, empty, a pointer, unknown extension,
        not the format it claims, damaged beyond recovery), ``events_file`` is
        missing or unreadable, or the file holds no samples.
    """
    path = Path(path)
    fmt = check_file(path)
    warnings: list[str] = []
    if fmt == "xdf":
        if events_file is not None:
            raise RecordingError(
                f"events_file '{events_file}' was given for the XDF file '{path}'",
                hint="XDF files carry their markers as streams; drop events_file")
        streams = _load_xdf(path, warnings)
    else:
        check_companions(path, fmt)
        fmt, streams = _load_mne(path, fmt, events_file, warnings)
    if not streams:
        why = f" ({'; '.join(warnings)})" if warnings else ""
        raise RecordingError(f"'{path}' holds no samples in any stream{why}",
                             hint="nothing can be replayed from it; check that the right "
                                  "file was given")
    for s in streams:
        warnings.extend(filter(None, _data_warnings(s)))
    names = [s.spec.name for s in streams]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        warnings.append(f"several streams share a name ({', '.join(twice)}): "
                        "Recording.stream() returns the first; tell them apart by source_id")
    streams.sort(key=lambda s: s.is_markers)  # stable: numeric first, file order kept
    return Recording(path=path, format=fmt, streams=streams, warnings=warnings)


def _data_warnings(stream: RecordedStream) -> list[str | None]:
    spec = stream.spec
    found = [order_warning(spec.name, stream.timestamps)]
    if not stream.is_markers:
        found.append(nonfinite_warning(spec.name, stream.data, spec.channel_names))
        found.append(rate_warning(spec.name, stream.timestamps, spec.srate))
    return found


def _stem(path: Path) -> str:
    """File name without its recording extension (``X.fif.gz`` -> ``X``)."""
    suffix = recording_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)]


# -- XDF ------------------------------------------------------------------------------------
class _Collect(logging.Handler):
    """Keeps the messages of warning level and above, in order, once each."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def _captured(name: str) -> Iterator[_Collect]:
    """Collect a logger's warnings and errors while the block runs."""
    logger = logging.getLogger(name)
    handler = _Collect()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)  # so that warnings reach the handler
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _load_xdf(path: Path, warnings: list[str]) -> list[RecordedStream]:
    """Read every stream of an XDF file (see the module docstring)."""
    import pyxdf

    with _captured(PYXDF_LOGGER) as log, contextlib.ExitStack() as stack:
        plain = path
        if recording_suffix(path) in (".xdfz", ".xdf.gz"):
            # decompressed to a temporary file, so that the same checks and recovery apply
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bci-xdf-")))
            plain = folder / "decompressed.xdf"
            cut = decompress_gzip(path, plain)
            warnings.extend([cut] if cut else [])
        scan = scan_xdf(plain, shown=path)
        where = " (byte offsets in the decompressed data)" if plain != path else ""
        warnings.extend(w + where if w.startswith(("chunk at", "file ends")) else w
                        for w in scan.warnings)
        source: Any = str(plain)
        if not scan.clean:  # read through a view that leaves the bad bytes out
            source = stack.enter_context(open_ranges(plain, scan.ranges))
        try:
            raw_streams, _ = pyxdf.load_xdf(source, synchronize_clocks=True,
                                            dejitter_timestamps=False,
                                            handle_clock_resets=True)
        except Exception as exc:
            raise RecordingError(
                f"'{path}' could not be read as XDF: {type(exc).__name__}: {exc}",
                hint="the file is damaged beyond what can be recovered; try "
                     "`pyxdf.load_xdf` on it for details, or get an intact copy") from exc
    warnings.extend(_pyxdf_messages(log.messages, raw_streams))
    streams: list[RecordedStream] = []
    empty: list[str] = []
    for raw_stream in raw_streams:
        lost = _footer_loss(raw_stream)
        if lost:
            warnings.append(lost)
        recorded = _xdf_stream(path, raw_stream, warnings)
        if recorded is None:
            empty.append(f"'{_first(raw_stream['info'], 'name')}'")
        else:
            streams.append(recorded)
    if empty:
        warnings.append(f"streams without samples were left out: {', '.join(empty)}")
    return streams


def _pyxdf_messages(messages: Sequence[str], streams: Sequence[dict[str, Any]]) -> list[str]:
    """pyxdf's log messages, explained; streams without clock offsets said plainly."""
    unsynced = {s["info"]["stream_id"]: _first(s["info"], "name") for s in streams
                if len(s["time_stamps"]) and not s["clock_times"]}
    out = []
    for message in messages:
        found = re.match(r"Stream (\d+): Segments and clock-segments differ", message)
        if found and int(found.group(1)) in unsynced:
            continue  # pyxdf's way of saying there was no clock offset: said below
        meaning = next((m for k, m in PYXDF_EXPLAINED.items() if message.startswith(k)), None)
        out.append(f"pyxdf: {message}" + (f" ({meaning})" if meaning else ""))
    out.extend(f"stream '{name}' has no clock offsets: its timestamps are kept as recorded, "
               "not synchronised to the recorder's clock" for name in unsynced.values())
    return out


def _footer_loss(stream: dict[str, Any]) -> str | None:
    """Say how many samples are missing against the count the stream's footer records."""
    footer = (stream.get("footer") or {}).get("info") or {}
    try:
        declared = int(_first(footer, "sample_count", -1))
    except (TypeError, ValueError):
        return None
    loaded = len(stream["time_stamps"])
    if declared <= loaded:  # LabRecorder's footer often counts one sample less
        return None
    return (f"stream '{_first(stream['info'], 'name')}': {declared - loaded} of the "
            f"{declared} samples its footer records could not be read (damaged chunks)")


def _first(mapping: dict[str, Any], key: str, default: Any = None) -> Any:
    """First value of a pyxdf header entry (pyxdf wraps every value in a list)."""
    value = mapping.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        value = value.strip()
    return default if value in (None, "") else value


def _xdf_channels(info: dict[str, Any], n_channels: int, stream_type: str,
                  warnings: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Channel labels, types and units from ``desc/channels/channel``, else defaults."""
    desc = _first(info, "desc")
    channels: list[dict[str, Any]] = []
    if isinstance(desc, dict):
        block = _first(desc, "channels")
        if isinstance(block, dict):
            channels = [c if isinstance(c, dict) else {} for c in block.get("channel") or []]
    if channels and len(channels) != n_channels:
        warnings.append(f"stream '{_first(info, 'name')}': its header describes "
                        f"{len(channels)} channels but it has {n_channels}; channel "
                        "descriptions ignored")
        channels = []
    channels = channels or [{} for _ in range(n_channels)]
    kind = stream_type.lower() if stream_type.lower() in KNOWN_CHANNEL_TYPES else "misc"
    labels = [str(_first(c, "label", f"ch{i + 1}")) for i, c in enumerate(channels)]
    types = [str(_first(c, "type", kind)).lower() for c in channels]
    units = [str(_first(c, "unit", "a.u.")) for c in channels]
    return labels, types, [UNIT_ALIASES.get(u.lower(), u) for u in units]


def _xdf_stream(path: Path, stream: dict[str, Any],
                warnings: list[str]) -> RecordedStream | None:
    """One pyxdf stream as a RecordedStream; None when it has no samples."""
    info = stream["info"]
    timestamps = np.asarray(stream["time_stamps"], dtype=np.float64)
    if timestamps.shape[0] == 0:
        return None
    name = str(_first(info, "name", f"stream{info.get('stream_id')}"))
    fmt = str(_first(info, "channel_format", "float32"))
    n_channels = int(_first(info, "channel_count", 1))
    stream_type = str(_first(info, "type", "Markers" if fmt == "string" else "misc"))
    labels, types, units = _xdf_channels(info, n_channels, stream_type, warnings)
    source_id = str(_first(info, "source_id", f"file:{path.name}#{info.get('stream_id')}"))
    srate = float(_first(info, "nominal_srate", 0.0))
    if fmt == "string":
        data = np.empty((timestamps.shape[0], n_channels), dtype=object)
        data[:] = stream["time_series"]
        spec = StreamSpec(
            name=name, type=stream_type,
            channel_names=("marker",) if labels == ["ch1"] else tuple(labels), srate=srate,
            dtype=EVENT_DTYPE, channel_types=("stim",) * n_channels, units=("",) * n_channels,
            source_id=source_id)
        return RecordedStream(spec, data, timestamps)
    dtype = np.float32 if fmt == "float32" else np.float64
    data = np.ascontiguousarray(stream["time_series"], dtype=dtype)
    spec = StreamSpec(name=name, type=stream_type, channel_names=tuple(labels), srate=srate,
                      dtype="float32" if dtype is np.float32 else "float64",
                      channel_types=tuple(types), units=tuple(units), source_id=source_id)
    return RecordedStream(spec, data, timestamps)


# -- MNE formats ----------------------------------------------------------------------------
def _read_raw(path: Path, fmt: str) -> Any:
    """``mne.io.read_raw`` with failures turned into RecordingError."""
    import mne

    try:
        # some readers print (Persyst: "Unable to process birthdate"); keep stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            return mne.io.read_raw(path, preload=True, verbose="error")
    except FileNotFoundError as exc:
        missing = exc.filename or exc
        raise RecordingError(f"'{path}' refers to a file that is missing: {missing}",
                             hint="copy the files that belong with it next to it") from exc
    except Exception as exc:
        hint = (f"check that '{path.name}' is complete and really a {fmt} file; "
                "mne.io.read_raw on it shows the full error")
        if "-eve." in path.name or "_eve." in path.name:
            hint = ("this looks like an MNE events file; load the recording it belongs to "
                    "(its events are picked up from this file)")
        raise RecordingError(f"'{path}' could not be read as {fmt}: "
                             f"{type(exc).__name__}: {exc}", hint=hint) from exc


def _load_mne(path: Path, fmt: str, events_file: Path | None,
              warnings: list[str]) -> tuple[str, list[RecordedStream]]:
    """Read a file MNE reads: one numeric stream and one marker stream."""
    keep_records: int | None = None
    record_s = 0.0
    if fmt in ("edf", "bdf"):
        edf = check_edf(path, fmt)
        warnings.extend(edf.warnings)
        keep_records, record_s = edf.keep_records, edf.layout.record_duration_s
    raw = _read_raw(path, fmt)
    if keep_records is not None and record_s > 0:
        # MNE reads every whole record in the file; keep the ones the header declares
        raw.crop(tmax=keep_records * record_s, include_tmax=False)
    if recording_suffix(path) in AMBIGUOUS_SUFFIXES:
        fmt = type(raw).__name__.removeprefix("Raw").lower() or fmt
    stem = _stem(path)
    streams = [s for s in (_mne_signal(path, stem, raw, warnings),
                           _mne_markers(path, stem, raw, events_file, warnings)) if s]
    return fmt, streams


def _unit_names() -> dict[int, str]:
    from mne.io.constants import FIFF

    return {FIFF.FIFF_UNIT_V: "V", FIFF.FIFF_UNIT_T: "T", FIFF.FIFF_UNIT_T_M: "T/m",
            FIFF.FIFF_UNIT_AM: "Am", FIFF.FIFF_UNIT_MOL: "M", FIFF.FIFF_UNIT_CEL: "°C",
            FIFF.FIFF_UNIT_PX: "px", FIFF.FIFF_UNIT_RAD: "rad", FIFF.FIFF_UNIT_SEC: "s",
            FIFF.FIFF_UNIT_HZ: "Hz", FIFF.FIFF_UNIT_OHM: "Ohm", FIFF.FIFF_UNIT_A: "A"}


def _stream_type(channel_types: Sequence[str]) -> str:
    """``EEG``, or ``ECoG``/``sEEG`` when the neural channels are all intracranial.

    A mix of ECoG and sEEG without scalp EEG (an implanted patient) is ``ECoG``:
    grids and strips are what BCIs decode; the per-channel types keep the split.
    """
    neural = {t for t in channel_types if t in NEURAL_TYPES}
    if not neural or "eeg" in neural:
        return "EEG"
    if "ecog" in neural:
        return "ECoG"
    return "sEEG"


def _mne_signal(path: Path, stem: str, raw: Any,
                warnings: list[str]) -> RecordedStream | None:
    """The non-stim channels of ``raw`` as one float64 stream (SI units)."""
    types = raw.get_channel_types()
    picks = [i for i, t in enumerate(types) if t != "stim"]
    if not picks:
        return None
    units = _unit_names()
    chs = raw.info["chs"]
    spec = StreamSpec(
        name=stem, type=_stream_type([types[i] for i in picks]),
        channel_names=tuple(raw.ch_names[i] for i in picks), srate=float(raw.info["sfreq"]),
        dtype="float64", channel_types=tuple(types[i] for i in picks),
        units=tuple(units.get(int(chs[i]["unit"]), "a.u.") for i in picks),
        source_id=f"file:{path.name}")
    # MNE holds (n_channels, n_times); the runtime is (n_samples, n_channels)
    data = np.ascontiguousarray(raw.get_data(picks=picks).T, dtype=np.float64)
    timestamps = (raw.first_samp + np.arange(raw.n_times, dtype=np.float64)) / raw.info["sfreq"]
    if raw.info["bads"]:
        warnings.append(f"channels marked bad in the file (kept): {', '.join(raw.info['bads'])}")
    return RecordedStream(spec, data, timestamps)


def _events_beside(path: Path) -> Path | None:
    """The MNE events file that goes with ``path``, if there is one."""
    stem = _stem(path)
    bases = [stem]
    for tail in ("_raw", "-raw"):
        if stem.endswith(tail):
            bases.insert(0, stem[: -len(tail)])
    for base in bases:
        for suffix in EVENTS_SUFFIXES:
            candidate = path.with_name(base + suffix)
            if candidate.is_file():
                return candidate
    return None


def _read_events(events_file: Path) -> np.ndarray:
    """Read an MNE events file -> int array (n_events, 3)."""
    import mne

    if not events_file.is_file():
        raise RecordingError(f"events file '{events_file}' not found",
                             hint="give the path of an existing *-eve.fif file, or none")
    check_pointer(events_file)
    try:
        return mne.read_events(events_file, verbose="error")
    except Exception as exc:
        raise RecordingError(
            f"events file '{events_file}' could not be read: {type(exc).__name__}: {exc}",
            hint="give an MNE events file (written by mne.write_events), or none") from exc


def _stim_events(raw: Any, warnings: list[str]) -> np.ndarray:
    """Events of the stim channels -> int array (n_events, 3)."""
    import mne

    stim = [name for name, t in zip(raw.ch_names, raw.get_channel_types()) if t == "stim"]
    if not stim:
        return np.zeros((0, 3), dtype=np.int64)
    try:
        # every change to a non-zero value is an event, even a one-sample pulse
        return mne.find_events(raw, stim_channel=stim, consecutive=True, shortest_event=1,
                               initial_event=True, verbose="error")
    except Exception as exc:
        warnings.append(f"stim channels {', '.join(stim)} could not be decoded into events "
                        f"({type(exc).__name__}: {exc}); they are left out")
        return np.zeros((0, 3), dtype=np.int64)


def _mne_markers(path: Path, stem: str, raw: Any, events_file: Path | None,
                 warnings: list[str]) -> RecordedStream | None:
    """Annotations, stim events and events-file events as one marker stream."""
    sfreq = float(raw.info["sfreq"])
    events = [_stim_events(raw, warnings)]
    events_file = events_file if events_file is not None else _events_beside(path)
    if events_file is not None:
        events.append(_read_events(Path(events_file)))
    coded = np.concatenate(events).astype(np.int64)
    pairs, first = np.unique(coded[:, [0, 2]], axis=0, return_index=True)
    if pairs.shape[0] < coded.shape[0]:
        warnings.append(f"{coded.shape[0] - pairs.shape[0]} events are both in the stim "
                        "channels and in the events file; each was kept once")
    coded = coded[np.sort(first)]
    outside = (coded[:, 0] < raw.first_samp) | (coded[:, 0] >= raw.first_samp + raw.n_times)
    if outside.any():
        warnings.append(f"{int(outside.sum())} events fall outside the recorded samples; "
                        "kept")
    # raw.annotations onsets are seconds on the clock where absolute sample k is at k/sfreq
    # (first_samp included, whether or not orig_time is set): the signal's clock
    onsets = np.asarray(raw.annotations.onset, dtype=np.float64)
    timestamps = np.concatenate([onsets, coded[:, 0] / sfreq])
    labels = np.concatenate([np.asarray(raw.annotations.description, dtype=object),
                             coded[:, 2].astype(str).astype(object)])
    if timestamps.shape[0] == 0:
        return None
    order = np.argsort(timestamps, kind="stable")
    spec = StreamSpec.events(f"{stem}-markers", source_id=f"file:{path.name}#markers")
    return RecordedStream(spec, labels[order].reshape(-1, 1).astype(object),
                          np.ascontiguousarray(timestamps[order]))
