"""Record LSL streams to one crash-safe XDF file: LabRecorder for the command line.

:class:`LslRecorder` (``bci record``) resolves the requested streams, writes the
file that pyxdf and LabRecorder users open, and keeps it readable whatever
happens to the process:

* **Selection.** A :class:`StreamQuery` picks one stream by ``name`` (plain
  text), ``type=...`` or ``source_id=...``. Every query is resolved before
  anything is written (within ``resolve_timeout_s``, shared by all queries); a
  query that matches nothing, or several streams, is a
  :class:`~bci_runtime.errors.ConfigError` listing the streams that are on the
  network (name, type, source_id). The same stream named twice is recorded once.
* **Headers.** Each stream's StreamHeader is the complete ``info.as_xml()`` of
  its inlet (full ``desc``: channels, acquisition, ...), as LabRecorder writes it.
* **Samples.** One pylsl inlet per stream (``max_buflen`` 360 s, ``recover=True``,
  ``processing_flags=0``: timestamps are recorded raw, as LabRecorder does; the
  ClockOffset chunks let pyxdf synchronise them later). One thread per stream
  blocks in ``pull_chunk`` until ``PULL_SPAN_S`` of signal (or one marker) is
  there, at most ``PULL_TIMEOUT_S``; numeric streams are pulled into a
  preallocated numpy buffer (``dest_obj``). Nothing polls or sleeps.
* **One writer.** Inlet threads only queue what they pulled; a single writer
  thread feeds the :class:`~bci_runtime.xdf_writer.XdfWriter`, which hands every
  chunk to the OS at once, fsyncs at least every second while writing (the
  writer thread also fsyncs after 0.5 s without anything to write) and writes a
  Boundary chunk every 10 s. After ``SIGKILL`` the file opens with pyxdf and
  what is lost is what was not pulled yet: at most ``PULL_TIMEOUT_S`` plus a
  write (well under 1 s).
* **Clock offsets.** Each inlet thread measures ``inlet.time_correction()`` when
  it starts, every ``CLOCK_OFFSET_INTERVAL_S`` (5 s) and when it stops, and
  queues a ClockOffset chunk (collection time in the stream's clock,
  ``local_clock() - offset``, as LabRecorder writes it). The writer never waits
  for a measurement.
* **Footers** (first/last timestamp, sample count, clock offsets) are written
  when the session stops: at the end of ``duration``, on ``stop`` (Ctrl-C,
  SIGTERM), on a full disk. Each inlet is drained first, so what it had
  received is recorded.
* **Free space.** Before anything is created, the file's folder must have at
  least ``min_free_bytes`` free. The default is what 10 minutes of the requested
  streams need (their nominal rate × sample size; irregular streams count as
  10 samples/s), capped at 1 GiB, and never below 32 MiB; ``min_free_bytes=0``
  skips the check. While recording, the writer stops the session cleanly when
  less than ``reserve_bytes`` (4 MiB) are left, so that the footers still fit;
  a write that fails with ``ENOSPC`` / ``EDQUOT`` also stops it cleanly (the
  XdfWriter rolls a partial chunk back, so the file stays readable). The
  summary then says the disk is full, how much was recorded, and whether the
  footers were written (if not: ``bci record repair FILE`` once there is space).
* **Gaps.** A stream that disappears is recovered by liblsl when its source
  comes back (same ``source_id``). Every stretch of more than
  ``max(3 sample periods, 1 s)`` without samples of a regular-rate stream is a
  :class:`RecordGap` in the summary (from the timestamps; a silence still
  running when the session stops counts by arrival time). A stream without a
  ``source_id`` cannot be recovered: it is reported as lost.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bci_runtime.disk_space import check_free_space, is_disk_full, required_free_bytes
from bci_runtime.errors import BciError, ConfigError, RunError
from bci_runtime.lsl import import_pylsl
from bci_runtime.xdf_writer import CHANNEL_FORMATS, XdfWriter

__all__ = [
    "CLOCK_OFFSET_INTERVAL_S", "LslRecorder", "RecordGap", "RecordSummary", "RecordedStream",
    "StreamQuery", "required_free_bytes",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

CLOCK_OFFSET_INTERVAL_S = 5.0  # as LabRecorder
PULL_SPAN_S = 0.1  # a pull returns as soon as this much signal is there...
PULL_TIMEOUT_S = 0.25  # ...or after this long (bounds time-to-disk and stop latency)
PULL_BUFFER_S = 1.0  # numeric pull buffer: this much signal (at least 4 pull spans)
IRREGULAR_MAX_SAMPLES = 1024  # per pull, for irregular-rate (marker) streams
SYNC_IDLE_S = 0.5  # the writer fsyncs after this long without anything to write
SPACE_CHECK_S = 2.0  # the writer looks at the free space this often
INLET_BUFLEN_S = 360  # liblsl buffers this much (s) while the writer catches up
TIME_CORRECTION_TIMEOUT_S = 2.0
FINAL_TIME_CORRECTION_TIMEOUT_S = 1.0
RESERVE_BYTES = 4 * MiB  # stop before the disk is completely full: footers must fit
GAP_MIN_S = 1.0

# liblsl channel formats (pylsl cf_*) -> XDF names
_LSL_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16",
                6: "int8", 7: "int64"}
_QUERY_KEYS = ("name", "type", "source_id")

StopReason = Literal["duration", "stopped", "disk_full", "error"]


# -- selection -------------------------------------------------------------------------------
def _xpath_literal(value: str) -> str:
    """``value`` as an XPath 1.0 string literal (XPath has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    parts = value.split("'")
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in parts) + ")"


@dataclass(frozen=True)
class StreamQuery:
    """Which stream to record: ``name``, ``type`` or ``source_id`` equal to ``value``.

    Parse the command-line form with :meth:`parse`: ``EEG`` or ``name=EEG``
    (by name), ``type=Markers``, ``source_id=abc``.
    """

    key: Literal["name", "type", "source_id"]
    value: str

    def __post_init__(self) -> None:
        if self.key not in _QUERY_KEYS:
            raise ConfigError(f"stream query: unknown key {self.key!r}",
                              hint="use name=..., type=... or source_id=...")
        if not isinstance(self.value, str) or not self.value:
            raise ConfigError(f"stream query {self.key}=: the value is empty",
                              hint=f"e.g. --stream {self.key}=EEG")

    @classmethod
    def parse(cls, text: str) -> StreamQuery:
        """``"EEG"`` / ``"name=EEG"`` / ``"type=Markers"`` / ``"source_id=abc"``.

        Text without ``=`` is a name; a name that contains ``=`` is written
        ``name=a=b``.

        Raises
        ------
        ConfigError
            Empty text, an unknown key or an empty value.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("--stream: empty stream selector",
                              hint="give a stream name, or name=..., type=..., source_id=...")
        key, sep, value = text.partition("=")
        if not sep:
            return cls("name", text)
        key = key.strip()
        if key not in _QUERY_KEYS:
            raise ConfigError(
                f"--stream {text!r}: unknown key {key!r}",
                hint="use name=..., type=... or source_id=...; a name containing '=' is "
                     f"written name={text}")
        return cls(key, value)  # type: ignore[arg-type]

    def predicate(self) -> str:
        """The XPath predicate liblsl resolves."""
        return f"{self.key}={_xpath_literal(self.value)}"

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def _describe_info(info: Any) -> str:
    rate = f"{info.nominal_srate():g} Hz" if info.nominal_srate() else "irregular"
    return (f"'{info.name()}' (type {info.type() or '-'}, source_id {info.source_id() or '-'}, "
            f"{info.channel_count()} ch @ {rate}, host {info.hostname()})")


# -- results ---------------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


@dataclass
class RecordGap:
    """A stretch without samples of one stream.

    Attributes
    ----------
    stream : str
        Stream name.
    after : float or None
        Timestamp (stream clock) of the last sample before the gap.
    before : float or None
        Timestamp of the first sample after it; None when no sample came back
        before the session stopped.
    seconds : float
        Length of the gap.
    """

    stream: str
    after: float | None
    before: float | None
    seconds: float

    def describe(self) -> str:
        if self.before is None:
            return (f"no data for the last {self.seconds:.2f} s of the session "
                    f"(after timestamp {self.after:.3f})")
        return (f"no data for {self.seconds:.2f} s (timestamps {self.after:.3f} -> "
                f"{self.before:.3f})")


@dataclass
class RecordedStream:
    """What was recorded of one stream."""

    name: str
    type: str
    source_id: str
    hostname: str
    channel_count: int
    srate: float
    channel_format: str
    stream_id: int = 0
    received: int = 0
    samples: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    clock_offsets: int = 0
    gaps: list[RecordGap] = field(default_factory=list)
    lost: bool = False
    error: str | None = None

    def describe(self) -> list[str]:
        rate = f"{self.srate:g} Hz" if self.srate else "irregular"
        sid = f"source_id {self.source_id}" if self.source_id else "no source_id"
        lines = [f"  {self.name} ({self.type or '-'}, {self.channel_count} ch @ {rate}, "
                 f"{self.channel_format}, {sid}): {self.samples} samples, "
                 f"{self.clock_offsets} clock offsets"]
        if self.received != self.samples:
            lines.append(f"    {self.received - self.samples} samples received but not "
                         "written (the session stopped on a write error)")
        lines += [f"    gap: {g.describe()}" for g in self.gaps]
        if self.lost:
            lines.append("    the stream was lost and cannot be recovered "
                         "(it has no source_id)")
        if self.error:
            lines.append(f"    error: {self.error}")
        return lines


@dataclass
class RecordSummary:
    """The outcome of a recording session (``bci record``).

    Attributes
    ----------
    path : str
        The XDF file.
    streams : list of RecordedStream
    started_at : str
        ISO 8601 time the recording started (UTC).
    duration_s : float
        Wall-clock length of the recording.
    stop_reason : {"duration", "stopped", "disk_full", "error"}
    message : str
        Why it stopped, in words.
    bytes : int
        Size of the file.
    footers_written : bool
        False when the session ended on a write error and the footers could not
        be written (the file is still readable; ``bci record repair`` adds them).
    error : str or None
        The write error, when there was one.
    """

    path: str
    streams: list[RecordedStream] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0
    stop_reason: StopReason = "stopped"
    message: str = ""
    bytes: int = 0
    footers_written: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the session ended as asked (duration or stop), footers written."""
        return self.stop_reason in ("duration", "stopped") and self.footers_written

    @property
    def gaps(self) -> list[RecordGap]:
        return [g for s in self.streams for g in s.gaps]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def describe(self) -> list[str]:
        """Human-readable lines."""
        size = _size(self.bytes)
        lines = [f"recorded {len(self.streams)} stream(s) to {self.path} ({size}, "
                 f"{self.duration_s:.1f} s): {self.message}"]
        for s in self.streams:
            lines += s.describe()
        if self.stop_reason == "disk_full":
            lines.append(f"  the disk is full: {size} were recorded up to that point; "
                         "the file is readable (pyxdf, LabRecorder tools)")
        elif self.stop_reason == "error":
            lines.append(f"  the recording stopped on an error; the {size} written "
                         "before it are readable")
        if self.footers_written:
            lines.append("  footers written")
        else:
            lines.append("  footers NOT written (the file still opens with pyxdf); once the "
                         f"problem is fixed, `bci record repair {self.path}` adds them")
        return lines


# -- the engine ------------------------------------------------------------------------------
class _Failure(Exception):
    """Stops the writer: what happened and whether it is a full disk."""

    def __init__(self, kind: StopReason, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Inlet:
    """One recorded stream: its inlet, its pulling thread, and its counters."""

    def __init__(self, rec: LslRecorder, inlet: Any, full: Any, record: RecordedStream) -> None:
        self.rec = rec
        self.inlet = inlet
        self.full = full
        self.record = record
        self.thread: threading.Thread | None = None
        srate = record.srate
        self.numeric = record.channel_format != "string"
        if srate > 0:
            self.min_samples = max(1, int(round(srate * PULL_SPAN_S)))
            self.max_samples = max(4 * self.min_samples, int(math.ceil(srate * PULL_BUFFER_S)))
            self.gap_s = max(3.0 / srate, GAP_MIN_S)
        else:
            self.min_samples = 1
            self.max_samples = IRREGULAR_MAX_SAMPLES
            self.gap_s = math.inf  # irregular streams have no expected rate
        self.buffer = (np.empty((self.max_samples, record.channel_count),
                                dtype=CHANNEL_FORMATS[record.channel_format])
                       if self.numeric else None)
        self.last_ts: float | None = None
        self.last_arrival: float | None = None  # time.monotonic() of the last data

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"record-{self.record.name}",
                                       daemon=True)
        self.thread.start()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        rec, stop = self.rec, self.rec.stop
        lost_error = rec._pylsl.util.LostError
        try:
            self._clock_offset(TIME_CORRECTION_TIMEOUT_S)
            next_offset = time.monotonic() + CLOCK_OFFSET_INTERVAL_S
            while not stop.is_set():
                self._pull(PULL_TIMEOUT_S)
                if time.monotonic() >= next_offset:
                    self._clock_offset(TIME_CORRECTION_TIMEOUT_S)
                    next_offset = time.monotonic() + CLOCK_OFFSET_INTERVAL_S
            # stopping: take everything the inlet already holds, then a last offset
            for _ in range(10_000):
                if not self._pull(0.0):
                    break
            self._clock_offset(FINAL_TIME_CORRECTION_TIMEOUT_S)
        except lost_error:
            self.record.lost = True
            log.warning("stream '%s' was lost and cannot be recovered (no source_id); "
                        "it is no longer recorded", self.record.name)
        except Exception as exc:  # noqa: BLE001 - reported in the summary, never crash
            self.record.error = f"{type(exc).__name__}: {exc}"
            log.error("stream '%s': %s", self.record.name, self.record.error)

    def _pull(self, timeout: float) -> int:
        """One blocking pull; queues what came. Returns the number of samples.

        Only ``timeout``, ``max_samples`` and ``dest_obj`` are passed for numeric
        streams (every pylsl >= 1.17 has them): liblsl's fixed-size pull returns
        once ``min_samples`` are there or at the timeout, then a second pull
        without waiting takes what else is already there, into the same buffer.
        """
        inlet = self.inlet
        if self.numeric:
            buf = self.buffer
            first = self.min_samples if timeout > 0 else self.max_samples
            _, ts = inlet.pull_chunk(timeout=timeout, max_samples=first, dest_obj=buf)
            n = len(ts)
            if not n:
                return 0
            ts = np.asarray(ts, dtype=np.float64)
            if n == first < self.max_samples:
                _, more = inlet.pull_chunk(timeout=0.0, max_samples=self.max_samples - n,
                                           dest_obj=buf[n:])
                if len(more):
                    ts = np.concatenate((ts, np.asarray(more, dtype=np.float64)))
                    n = len(ts)
            data = buf[:n].copy()  # the buffer is reused by the next pull
        else:
            data, ts = inlet.pull_chunk(timeout=timeout, max_samples=self.max_samples,
                                        **self.rec._first_sample_kw)
            n = len(ts)
            if not n:
                return 0
            ts = np.asarray(ts, dtype=np.float64)
        self.last_arrival = time.monotonic()
        if self.gap_s != math.inf:
            self._find_gaps(ts)
        self.last_ts = float(ts[-1])
        self.record.received += n
        self.rec._queue.put((self, data, ts))
        return n

    def _find_gaps(self, ts: np.ndarray) -> None:
        gap = self.gap_s
        if self.last_ts is not None and ts[0] - self.last_ts > gap:
            self._gap(self.last_ts, float(ts[0]))
        if len(ts) > 1:
            diffs = np.diff(ts)
            if diffs.max() > gap:
                for i in np.flatnonzero(diffs > gap).tolist():
                    self._gap(float(ts[i]), float(ts[i + 1]))

    def _gap(self, after: float | None, before: float | None, seconds: float | None = None
             ) -> None:
        seconds = seconds if seconds is not None else float(before - after)  # type: ignore
        g = RecordGap(self.record.name, after, before, seconds)
        self.record.gaps.append(g)
        log.warning("stream '%s': %s", self.record.name, g.describe())

    def _clock_offset(self, timeout: float) -> None:
        pylsl = self.rec._pylsl
        try:
            offset = self.inlet.time_correction(timeout=timeout)
        except pylsl.util.TimeoutError:
            log.warning("stream '%s': no clock offset within %g s", self.record.name, timeout)
            return
        now = pylsl.local_clock()
        # collection time in the stream's clock, as LabRecorder writes it
        self.rec._queue.put((self, now - offset, offset))

    def finish_gaps(self) -> None:
        """A silence still running at the end counts as a gap (by arrival time)."""
        if self.gap_s == math.inf or self.record.lost:
            return
        if self.last_arrival is None:
            return
        silent = time.monotonic() - self.last_arrival
        if silent > self.gap_s:
            self._gap(self.last_ts, None, silent)

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


class LslRecorder:
    """Record LSL streams to a new XDF file until a duration or a stop request.

    Parameters
    ----------
    streams : sequence of StreamQuery or str
        What to record; a str is parsed with :meth:`StreamQuery.parse`.
    out : path
        XDF file to create; it must not exist and its folder must.
    resolve_timeout_s : float
        How long to look for all the streams (shared by the queries).
    duration : float, optional
        Seconds to record after the recording started; None: until ``stop``.
    stop : threading.Event, optional
        Set it to stop (footers are written). The recorder also sets it when
        it stops by itself (disk full, write error, duration).
    min_free_bytes : int, optional
        Free space the folder needs before the session starts; default
        :func:`required_free_bytes` of the streams; 0 skips the check.
    reserve_bytes : int
        Stop cleanly (disk full) when less than this is left while recording.
    on_start : callable, optional
        Called with the summary (streams filled in) once recording started.

    Raises
    ------
    ConfigError
        From :meth:`run`: the file exists, its folder is missing, a stream was
        not found or is ambiguous, not enough free space (nothing was created).
    """

    def __init__(self, streams: Sequence[StreamQuery | str], out: str | os.PathLike[str], *,
                 resolve_timeout_s: float = 5.0, duration: float | None = None,
                 stop: threading.Event | None = None, min_free_bytes: int | None = None,
                 reserve_bytes: int = RESERVE_BYTES,
                 on_start: Callable[[RecordSummary], None] | None = None) -> None:
        queries = [s if isinstance(s, StreamQuery) else StreamQuery.parse(s) for s in streams]
        if not queries:
            raise ConfigError("no stream to record",
                              hint="name at least one: --stream NAME (or type=..., "
                                   "source_id=...)")
        if not (isinstance(resolve_timeout_s, (int, float)) and math.isfinite(resolve_timeout_s)
                and resolve_timeout_s > 0):
            raise ConfigError(f"--resolve-timeout must be a finite number of seconds above 0, "
                              f"got {resolve_timeout_s}", hint="e.g. --resolve-timeout 5")
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise ConfigError(f"--duration must be a finite number of seconds above 0, "
                              f"got {duration}",
                              hint="e.g. --duration 600, or leave it out to record until "
                                   "Ctrl-C")
        if min_free_bytes is not None and min_free_bytes < 0:
            raise ConfigError(f"min_free_bytes must be >= 0, got {min_free_bytes}",
                              hint="0 skips the free-space check")
        self.queries = queries
        self.out = Path(out)
        self.resolve_timeout_s = float(resolve_timeout_s)
        self.duration = duration
        self.stop = stop if stop is not None else threading.Event()
        self.min_free_bytes = min_free_bytes
        self.reserve_bytes = int(reserve_bytes)
        self.on_start = on_start
        self.summary = RecordSummary(path=str(self.out))
        self._stop_reason: tuple[StopReason, str] | None = None
        self._reason_lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: XdfWriter | None = None
        self._inlets: list[_Inlet] = []
        self._ran = False
        self._pylsl: Any = None
        self._first_sample_kw: dict[str, int] = {}

    # -- control ---------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop the session (thread-safe; the footers are written). ``reason`` is reported."""
        self._set_reason("stopped", f"stopped ({reason})")
        self.stop.set()

    def _set_reason(self, kind: StopReason, message: str) -> None:
        with self._reason_lock:
            if self._stop_reason is None:
                self._stop_reason = (kind, message)

    # -- setup -----------------------------------------------------------------------------
    def _check_out(self) -> None:
        out = self.out
        if out.exists() or out.is_symlink():
            raise ConfigError(f"'{out}' already exists; refusing to overwrite a recording",
                              hint="choose a new file name, or move the old file away")
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"the folder of '{out}' does not exist",
                              hint=f"create it first (mkdir -p {folder})")

    def _resolve(self) -> list[Any]:
        pylsl = self._pylsl
        deadline = time.monotonic() + self.resolve_timeout_s
        chosen: list[Any] = []
        seen_uids: set[str] = set()
        missing: list[StreamQuery] = []
        ambiguous: list[tuple[StreamQuery, list[Any]]] = []
        for q in self.queries:
            left = max(0.2, deadline - time.monotonic())
            found = pylsl.resolve_bypred(q.predicate(), 1, left)
            # the same stream can answer twice (several network interfaces)
            unique = list({i.uid(): i for i in found}.values())
            if not unique:
                missing.append(q)
            elif len(unique) > 1:
                ambiguous.append((q, unique))
            elif unique[0].uid() not in seen_uids:
                seen_uids.add(unique[0].uid())
                chosen.append(unique[0])
        if missing:
            seen = sorted(pylsl.resolve_streams(wait_time=1.0),
                          key=lambda i: (i.name(), i.source_id()))
            listing = "".join(f"\n    {_describe_info(i)}" for i in seen) or " none"
            which = ", ".join(str(q) for q in missing)
            raise ConfigError(
                f"no LSL stream matched {which} within {self.resolve_timeout_s:g} s; "
                f"streams on the network:{listing}",
                hint="start the device or its LSL app, fix the name (--stream NAME, "
                     "type=..., source_id=...), or wait longer (--resolve-timeout)")
        if ambiguous:
            q, found = ambiguous[0]
            listing = "".join(f"\n    {_describe_info(i)}" for i in found)
            raise ConfigError(f"{q} matches {len(found)} streams:{listing}",
                              hint="select one by its source_id: --stream source_id=...")
        return chosen

    def _check_space(self, infos: Sequence[Any]) -> None:
        need = self.min_free_bytes
        if need is None:
            need = required_free_bytes([
                (i.nominal_srate(), i.channel_count(),
                 _LSL_FORMATS.get(i.channel_format(), "float32")) for i in infos])
        if need <= 0:
            return
        folder = self.out.parent if str(self.out.parent) else Path(".")
        check_free_space(folder, need, f"'{self.out}'")

    def _open(self, infos: Sequence[Any]) -> list[_Inlet]:
        pylsl = self._pylsl
        timeout = max(self.resolve_timeout_s, 2.0)
        opened: list[_Inlet] = []
        try:
            for info in infos:
                fmt = _LSL_FORMATS.get(info.channel_format())
                if fmt is None:
                    raise ConfigError(f"stream {_describe_info(info)} has an unknown channel "
                                      f"format ({info.channel_format()})",
                                      hint="record it with LabRecorder, or fix its outlet")
                inlet = pylsl.StreamInlet(info, max_buflen=INLET_BUFLEN_S, max_chunklen=0,
                                          recover=True, processing_flags=0)
                if fmt != "string" and getattr(inlet, "do_pull_chunk", True) is None:
                    raise ConfigError(f"stream {_describe_info(info)}: this pylsl cannot pull "
                                      f"{fmt} chunks", hint="pip install -U pylsl")
                try:
                    inlet.open_stream(timeout=timeout)
                    full = inlet.info(timeout=timeout)
                except pylsl.util.TimeoutError:
                    raise RunError(f"stream {_describe_info(info)} did not answer within "
                                   f"{timeout:g} s", hint="check the network and the "
                                   "stream's app, then try again") from None
                record = RecordedStream(
                    name=full.name(), type=full.type(), source_id=full.source_id(),
                    hostname=full.hostname(), channel_count=full.channel_count(),
                    srate=float(full.nominal_srate()), channel_format=fmt)
                opened.append(_Inlet(self, inlet, full, record))
        except BaseException:
            for i in opened:
                i.close()
            raise
        return opened

    # -- the session -----------------------------------------------------------------------
    def run(self) -> RecordSummary:
        """Record until the duration is reached or a stop is requested.

        Returns
        -------
        RecordSummary
            Also when the session stopped on a full disk or a write error
            (``stop_reason`` says which; the file is readable).

        Raises
        ------
        ConfigError
            Before anything is recorded: see the class.
        RunError
            A stream could not be subscribed to.
        """
        if self._ran:
            raise RunError("LslRecorder.run() was already called",
                           hint="build a new LslRecorder for another session")
        self._ran = True
        self._pylsl = import_pylsl()
        # pylsl >= 1.18 can return a string chunk as soon as its first marker is there
        params = inspect.signature(self._pylsl.StreamInlet.pull_chunk).parameters
        self._first_sample_kw = {"min_samples": 1} if "min_samples" in params else {}
        self._check_out()
        infos = self._resolve()
        self._check_space(infos)
        self._inlets = self._open(infos)
        try:
            self._writer = XdfWriter(self.out)
            for inlet in self._inlets:
                r = inlet.record
                r.stream_id = self._writer.add_stream(
                    name=r.name or "(unnamed)", type=r.type, channel_count=r.channel_count,
                    srate=r.srate, channel_format=r.channel_format, source_id=r.source_id,
                    header_xml=inlet.full.as_xml())
        except BaseException:
            for inlet in self._inlets:
                inlet.close()
            if self._writer is not None:
                self._writer.close()
            raise
        self.summary.streams = [i.record for i in self._inlets]
        return self._record()

    def _record(self) -> RecordSummary:
        s = self.summary
        writer_thread = threading.Thread(target=self._write_loop, name="record-writer",
                                         daemon=True)
        writer_thread.start()
        for inlet in self._inlets:
            inlet.start()
        started = time.monotonic()
        s.started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        try:
            if self.on_start is not None:
                self.on_start(s)
            deadline = None if self.duration is None else started + self.duration
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._set_reason("duration", f"duration reached ({self.duration:g} s)")
                    self.stop.set()
                    break
                if self.stop.wait(left if left is not None else 3600.0):
                    break
        except BaseException:  # KeyboardInterrupt, a failing on_start: finish the file first
            self._set_reason("stopped", "interrupted")
            self.stop.set()
            s.duration_s = time.monotonic() - started
            self._finish(writer_thread)
            raise
        self._set_reason("stopped", "stopped")
        s.duration_s = time.monotonic() - started
        return self._finish(writer_thread)

    def _finish(self, writer_thread: threading.Thread) -> RecordSummary:
        """Stop the threads, drain everything, write the footers, fill in the summary."""
        s = self.summary
        # stop: the inlet threads drain their inlets, then the writer drains the queue
        for inlet in self._inlets:
            if inlet.thread is None:
                continue
            inlet.thread.join(PULL_TIMEOUT_S + FINAL_TIME_CORRECTION_TIMEOUT_S + 5.0)
            if inlet.thread.is_alive():
                log.warning("stream '%s': its thread did not stop in time", inlet.record.name)
            inlet.finish_gaps()
        self._queue.put(None)
        writer_thread.join()
        for inlet in self._inlets:
            inlet.close()
        try:
            if self._writer is not None:
                self._writer.close()
            s.footers_written = True
        except BciError as exc:
            first_line = str(exc).splitlines()[0]
            cause = exc.__cause__
            with self._reason_lock:  # a session that went well until the footers failed
                if self._stop_reason is None or self._stop_reason[0] in ("duration", "stopped"):
                    if is_disk_full(cause):
                        self._stop_reason = ("disk_full", "the disk is full: the footers "
                                             "could not be written")
                    else:
                        self._stop_reason = ("error", f"the footers could not be written: "
                                                      f"{first_line}")
            s.error = s.error or first_line
            log.info("footers could not be written: %s", first_line)
        kind, message = self._stop_reason or ("stopped", "stopped")
        s.stop_reason, s.message = kind, message
        try:
            s.bytes = self.out.stat().st_size
        except OSError:
            s.bytes = 0
        return s

    # -- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        q, writer = self._queue, self._writer
        if writer is None:
            return
        folder = self.out.parent if str(self.out.parent) else Path(".")
        failed = False
        dirty = False
        next_space_check = time.monotonic() + SPACE_CHECK_S
        while True:
            try:
                item = q.get(timeout=SYNC_IDLE_S)
            except queue.Empty:
                if dirty and not failed:
                    try:
                        writer.sync()
                    except BciError as exc:
                        failed = self._fail(exc)
                    dirty = False
                continue
            if item is None:
                return
            if failed:
                continue  # the session is stopping; what is still queued is not written
            inlet, a, b = item
            try:
                if isinstance(a, float):  # a clock offset: (collection time, offset)
                    writer.write_clock_offset(inlet.record.stream_id, a, b)
                    inlet.record.clock_offsets += 1
                else:
                    writer.write_samples(inlet.record.stream_id, a, b)
                    r = inlet.record
                    r.samples += len(b)
                    if r.first_timestamp is None:
                        r.first_timestamp = float(b[0])
                    r.last_timestamp = float(b[-1])
                dirty = True
                now = time.monotonic()
                if self.reserve_bytes > 0 and now >= next_space_check:
                    next_space_check = now + SPACE_CHECK_S
                    free = shutil.disk_usage(folder).free
                    if free < self.reserve_bytes:
                        raise _Failure("disk_full",
                                       f"the disk is full: only {free / MiB:.1f} MiB left on "
                                       f"{folder} (below the {self.reserve_bytes / MiB:g} MiB "
                                       "kept for the footers)")
            except _Failure as exc:
                failed = True
                self._set_reason(exc.kind, exc.message)
                self.stop.set()
            except BciError as exc:
                failed = self._fail(exc)
            except Exception as exc:  # noqa: BLE001 - never leave the session hanging
                failed = self._fail(RunError(f"writing '{self.out}' failed: {exc}"))

    def _fail(self, exc: BciError) -> bool:
        cause = exc.__cause__
        if isinstance(cause, OSError) and is_disk_full(cause):
            self._set_reason("disk_full", f"the disk is full ({os.strerror(cause.errno)} "
                                          f"writing '{self.out}')")
        else:
            self._set_reason("error", f"writing '{self.out}' failed: "
                                      f"{str(exc).splitlines()[0]}")
        self.summary.error = str(exc).splitlines()[0]
        log.info("recording stopped: %s", str(exc).splitlines()[0])
        self.stop.set()
        return True
