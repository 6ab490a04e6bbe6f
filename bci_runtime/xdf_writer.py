"""A streaming, crash-safe writer of XDF 1.0 files (what LabRecorder writes, pyxdf reads).

Layout of an XDF 1.0 file (https://github.com/sccn/xdf/wiki/Specifications)::

    "XDF:"                                  magic
    chunk*                                  chunks, in write order

    chunk    = varlen(len(tag + content)) + tag (uint16) + content
    varlen   = 0x01 + uint8 | 0x04 + uint32 | 0x08 + uint64      (little endian)

    tag 1  FileHeader    XML <info><version>1.0</version>...</info>
    tag 2  StreamHeader  uint32 stream id + XML <info>...</info>
    tag 3  Samples       uint32 stream id + varlen(n) + n samples, each
                         0x08 + float64 timestamp + values
                         (numeric: channel_count little-endian values;
                         string: per channel varlen(len(utf-8)) + utf-8 bytes)
    tag 4  ClockOffset   uint32 stream id + float64 collection time + float64 offset
    tag 5  Boundary      16-byte UUID, lets readers resync after corruption
    tag 6  StreamFooter  uint32 stream id + XML <info>...</info>

Crash safety: the file is opened with ``O_EXCL`` (never overwrites), every chunk
goes to the operating system in one unbuffered ``os.write`` as soon as it is
built, ``os.fsync`` runs at least every ``fsync_interval_s`` (checked on each
write) and on :meth:`XdfWriter.sync` and :meth:`XdfWriter.close`, and a
Boundary chunk is written every ``boundary_interval_s``. After the process is
killed, the file holds every complete chunk that reached the OS; pyxdf opens it
without footers (it skips or scans past a trailing partial Samples chunk; a
header or ClockOffset chunk cut short, which needs a kill inside that one small
``write`` call, is not handled by pyxdf and would need truncating). Inputs
are validated before any byte is written, so a rejected call never corrupts the
file; a failed ``write`` (disk full) is rolled back by truncating to the end of
the last complete chunk.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bci_runtime.errors import ConfigError, RunError

__all__ = ["BOUNDARY_UUID", "CHANNEL_FORMATS", "XdfWriter"]

#: The 16 bytes of a Boundary chunk, fixed by the XDF specification.
BOUNDARY_UUID = bytes(
    [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F,
     0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4]
)

#: XDF channel formats and their little-endian numpy dtypes (None: strings).
CHANNEL_FORMATS: dict[str, np.dtype | None] = {
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "string": None,
}

_TAG_FILE_HEADER = 1
_TAG_STREAM_HEADER = 2
_TAG_SAMPLES = 3
_TAG_CLOCK_OFFSET = 4
_TAG_BOUNDARY = 5
_TAG_STREAM_FOOTER = 6

_XML_DECL = '<?xml version="1.0"?>'
_UINT32_MAX = 2**32 - 1
_UINT32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")


def _varlen(n: int) -> bytes:
    """Encode a non-negative int as an XDF variable-length integer."""
    if n < 0x100:
        return bytes((1, n))
    if n <= _UINT32_MAX:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, body: bytes) -> bytes:
    """Frame ``body`` as a chunk: varlen length (tag included), tag, body."""
    return _varlen(len(body) + 2) + struct.pack("<H", tag) + body


def _fmt_float(x: float) -> str:
    """Shortest text that reads back to the same double."""
    return repr(float(x))


def _xml_text(root: ET.Element) -> bytes:
    return (_XML_DECL + ET.tostring(root, encoding="unicode")).encode("utf-8")


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = text
    return el


class _Stream:
    """What the writer remembers about one stream."""

    __slots__ = (
        "sid", "name", "channel_count", "channel_format", "dtype", "record_dtype",
        "first_timestamp", "last_timestamp", "sample_count", "clock_offsets",
    )

    def __init__(self, sid: int, name: str, channel_count: int, channel_format: str) -> None:
        self.sid = sid
        self.name = name
        self.channel_count = channel_count
        self.channel_format = channel_format
        self.dtype = CHANNEL_FORMATS[channel_format]
        # one sample on disk: 0x08, float64 timestamp, channel values (packed)
        self.record_dtype = (
            None
            if self.dtype is None
            else np.dtype([("ts_bytes", "u1"), ("ts", "<f8"),
                           ("values", self.dtype, (channel_count,))])
        )
        self.first_timestamp: float | None = None
        self.last_timestamp: float | None = None
        self.sample_count = 0
        self.clock_offsets: list[tuple[float, float]] = []

    def label(self) -> str:
        return f"stream {self.sid} ('{self.name}')"


class XdfWriter:
    """Write an XDF 1.0 file chunk by chunk, so that a crash loses at most a few seconds.

    The file is created at construction (it must not exist yet) and its
    FileHeader is written at once; streams are then declared with
    :meth:`add_stream` and fed with :meth:`write_samples` and
    :meth:`write_clock_offset`, from any thread. :meth:`close` writes one
    StreamFooter per stream. Use it as a context manager::

        with XdfWriter(session_dir / "recording.xdf") as w:
            sid = w.add_stream(name="EEG", type="EEG", channel_count=8,
                               srate=250.0, channel_format="float32")
            w.write_samples(sid, data, timestamps)

    Parameters
    ----------
    path : str or os.PathLike
        File to create. An existing file is never overwritten.
    fsync_interval_s : float, default 1.0
        Longest time between two ``os.fsync`` calls while writing (checked on
        every write; 0 syncs after every chunk, ``math.inf`` only on
        :meth:`sync` and :meth:`close`).
    boundary_interval_s : float, default 10.0
        Time between two Boundary chunks (0: before every data chunk).

    Raises
    ------
    ConfigError
        If the file exists, its folder is missing or not writable, or an
        interval is negative or NaN.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync_interval_s: float = 1.0,
        boundary_interval_s: float = 10.0,
    ) -> None:
        for arg, value in (("fsync_interval_s", fsync_interval_s),
                           ("boundary_interval_s", boundary_interval_s)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ConfigError(
                    f"XdfWriter: {arg}={value!r} is not a number >= 0",
                    hint=f"pass {arg} in seconds, e.g. {arg}=1.0 (0 = on every write)",
                )
        self.path = os.fspath(path)
        self.fsync_interval_s = float(fsync_interval_s)
        self.boundary_interval_s = float(boundary_interval_s)
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._closed = False
        try:
            self._fd = os.open(
                self.path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_BINARY", 0),
                0o644,
            )
        except FileExistsError:
            raise ConfigError(
                f"XdfWriter: '{self.path}' already exists; refusing to overwrite a recording",
                hint="choose a new file name (e.g. a new session folder) "
                     "or move the old file away",
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"XdfWriter: cannot create '{self.path}': {exc.strerror or exc}",
                hint="check that the folder exists and is writable",
            ) from exc
        self._offset = 0  # end of the last complete chunk
        now = time.monotonic()
        self._last_fsync = now
        self._last_boundary = now
        info = ET.Element("info")
        _sub(info, "version", "1.0")
        _sub(info, "datetime", datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S%z"))
        try:
            with self._lock:
                self._write(b"XDF:" + _chunk(_TAG_FILE_HEADER, _xml_text(info)))
                self._fsync()
            self._fsync_dir()
        except BaseException:
            os.close(self._fd)
            self._closed = True
            raise

    # ------------------------------------------------------------------ public

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def stream_ids(self) -> list[int]:
        """Ids of the streams declared so far, in order."""
        return list(self._streams)

    def add_stream(
        self,
        *,
        name: str,
        type: str,  # noqa: A002 - the XDF/LSL field name
        channel_count: int,
        srate: float,
        channel_format: str,
        source_id: str = "",
        channel_labels: Sequence[str] | None = None,
        channel_types: Sequence[str] | str | None = None,
        channel_units: Sequence[str] | str | None = None,
        desc_xml: str | None = None,
        header_xml: str | None = None,
    ) -> int:
        """Declare a stream and write its StreamHeader chunk (then fsync).

        Parameters
        ----------
        name : str
            Stream name (LSL ``name``), non-empty.
        type : str
            Content type (``EEG``, ``Markers``, ...).
        channel_count : int
            Number of channels, >= 1 (1 for marker streams).
        srate : float
            Nominal sampling rate in Hz; 0 for irregular streams (markers).
        channel_format : str
            One of ``float32``, ``double64``, ``int8``, ``int16``, ``int32``,
            ``int64``, ``string``.
        source_id : str, optional
            LSL source id.
        channel_labels : sequence of str, shape (channel_count,), optional
            Channel names, written to ``desc/channels/channel/label``.
        channel_types : sequence of str, shape (channel_count,), or str, optional
            Channel types; a single str applies to every channel.
        channel_units : sequence of str, shape (channel_count,), or str, optional
            Channel units; a single str applies to every channel.
        desc_xml : str, optional
            Extra XML elements to put inside ``<desc>``, e.g.
            ``"<acquisition><manufacturer>X</manufacturer></acquisition>"``.
            Must not contain ``<channels>`` when channel metadata is given.
        header_xml : str, optional
            A complete StreamHeader XML document (root ``<info>``), written as
            given instead of the header built from the arguments above; a
            recorder passes LSL's full ``inlet.info().as_xml()`` here, as
            LabRecorder does. Its ``channel_count`` and ``channel_format`` must
            equal the arguments (which still define how samples are written);
            ``channel_labels``, ``channel_types``, ``channel_units`` and
            ``desc_xml`` cannot be combined with it.

        Returns
        -------
        int
            The stream id (uint32) to pass to the write methods.

        Raises
        ------
        ConfigError
            If a parameter is invalid (nothing is written then).
        RunError
            If the writer is closed or the write fails.
        """
        where = f"XdfWriter.add_stream(name={name!r})"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: name must be a non-empty str",
                              hint="give the stream a name, e.g. name='EEG'")
        if not isinstance(type, str):
            raise ConfigError(f"{where}: type must be a str, got {type!r}",
                              hint="e.g. type='EEG' or type='Markers'")
        if not isinstance(source_id, str):
            raise ConfigError(f"{where}: source_id must be a str, got {source_id!r}",
                              hint="pass the LSL source id as text, or leave it out")
        if (not isinstance(channel_count, (int, np.integer)) or isinstance(channel_count, bool)
                or not 1 <= channel_count <= _UINT32_MAX):
            raise ConfigError(f"{where}: channel_count={channel_count!r} is not an int >= 1",
                              hint="pass the number of channels, e.g. channel_count=8")
        channel_count = int(channel_count)
        if (not isinstance(srate, (int, float, np.integer, np.floating)) or isinstance(srate, bool)
                or not math.isfinite(srate) or srate < 0):
            raise ConfigError(f"{where}: srate={srate!r} is not a finite number >= 0",
                              hint="pass the nominal rate in Hz, or 0 for irregular streams")
        if channel_format not in CHANNEL_FORMATS:
            extra = " ('double64' is XDF's name for float64)" if channel_format in (
                "float64", "double") else ""
            raise ConfigError(
                f"{where}: unknown channel_format {channel_format!r}{extra}",
                hint="use one of " + ", ".join(repr(f) for f in CHANNEL_FORMATS),
            )
        meta = {
            "label": self._channel_meta(where, "channel_labels", channel_labels,
                                        channel_count, broadcast=False),
            "type": self._channel_meta(where, "channel_types", channel_types,
                                       channel_count, broadcast=True),
            "unit": self._channel_meta(where, "channel_units", channel_units,
                                       channel_count, broadcast=True),
        }
        has_meta = any(v is not None for v in meta.values())
        extra_desc: list[ET.Element] = []
        if desc_xml is not None:
            if not isinstance(desc_xml, str):
                raise ConfigError(f"{where}: desc_xml must be a str of XML elements",
                                  hint="e.g. desc_xml='<acquisition>...</acquisition>'")
            try:
                parsed = ET.fromstring(f"<desc>{desc_xml}</desc>")
            except ET.ParseError as exc:
                raise ConfigError(f"{where}: desc_xml is not well-formed XML: {exc}",
                                  hint="pass XML elements (no <desc> wrapper, no "
                                       "<?xml?> declaration), with & < > escaped") from None
            extra_desc = list(parsed)
            if has_meta and parsed.find("channels") is not None:
                raise ConfigError(
                    f"{where}: desc_xml has a <channels> element and channel "
                    "labels/types/units were given too",
                    hint="describe channels in one place: either the channel_* "
                         "arguments or desc_xml",
                )

        header = None if header_xml is None else self._header_bytes(
            where, header_xml, channel_count, channel_format,
            has_meta or desc_xml is not None)

        with self._lock:
            self._check_open("add_stream")
            sid = self._next_id
            if sid > _UINT32_MAX:
                raise RunError(f"{where}: no stream ids left (uint32)",
                               hint="write fewer streams per file")
            info = ET.Element("info")
            _sub(info, "name", name)
            _sub(info, "type", type)
            _sub(info, "channel_count", str(channel_count))
            _sub(info, "nominal_srate", _fmt_float(srate))
            _sub(info, "channel_format", channel_format)
            _sub(info, "source_id", source_id)
            _sub(info, "created_at", _fmt_float(time.monotonic()))
            _sub(info, "uid", str(uuid.uuid4()))
            desc = ET.SubElement(info, "desc")
            if has_meta:
                channels = ET.SubElement(desc, "channels")
                for ch in range(channel_count):
                    channel = ET.SubElement(channels, "channel")
                    for key, values in meta.items():
                        if values is not None:
                            _sub(channel, key, values[ch])
            desc.extend(extra_desc)
            body = _UINT32.pack(sid) + (_xml_text(info) if header is None else header)
            self._write(_chunk(_TAG_STREAM_HEADER, body))
            self._fsync()
            self._next_id += 1
            self._streams[sid] = _Stream(sid, name, channel_count, channel_format)
        return sid

    def write_samples(self, stream_id: int, data: ArrayLike | Sequence[Sequence[str]],
                      timestamps: ArrayLike) -> None:
        """Append samples of one stream as one Samples chunk.

        Parameters
        ----------
        stream_id : int
            Id returned by :meth:`add_stream`.
        data : ndarray, shape (n_samples, channel_count), or sequence of sequences of str
            Numeric values (cast to the stream's format; floats are never
            silently truncated to ints, and ints must fit), or, for string
            streams, ``n_samples`` sequences of ``channel_count`` str each
            (a marker: ``[["left"]]``).
        timestamps : ndarray, shape (n_samples,)
            Finite sample times in seconds (float64).

        Raises
        ------
        RunError
            If the stream id is unknown, the shapes do not match, the values
            cannot be stored in the stream's format, a timestamp is not
            finite (nothing is written then), the writer is closed, or the
            write fails.
        """
        stream = self._stream(stream_id, "write_samples")
        where = f"XdfWriter.write_samples({stream.label()})"
        ts = self._timestamps(where, timestamps)
        n = ts.shape[0]
        if stream.dtype is None or stream.record_dtype is None:
            payload = self._string_payload(where, stream, data, ts)
        else:
            values = self._numeric_values(where, stream, stream.dtype, data, n)
            records = np.empty(n, dtype=stream.record_dtype)
            records["ts_bytes"] = 8
            records["ts"] = ts
            records["values"] = values
            payload = records.tobytes()
        if n == 0:
            return
        body = _UINT32.pack(stream.sid) + _varlen(n) + payload
        with self._lock:
            self._check_open("write_samples")
            self._maybe_boundary()
            self._write(_chunk(_TAG_SAMPLES, body))
            if stream.first_timestamp is None:
                stream.first_timestamp = float(ts[0])
            stream.last_timestamp = float(ts[-1])
            stream.sample_count += n
            self._maybe_fsync()

    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Append one ClockOffset measurement of a stream.

        Parameters
        ----------
        stream_id : int
            Id returned by :meth:`add_stream`.
        collection_time : float
            When the offset was measured, in the recording clock (seconds).
        offset : float
            Offset to add to the stream's timestamps to map them into the
            recording clock (seconds), as LSL's ``time_correction()`` returns.

        Raises
        ------
        RunError
            If the stream id is unknown, a value is not finite, the writer is
            closed, or the write fails.
        """
        stream = self._stream(stream_id, "write_clock_offset")
        where = f"XdfWriter.write_clock_offset({stream.label()})"
        for arg, value in (("collection_time", collection_time), ("offset", offset)):
            try:
                ok = math.isfinite(value) and not isinstance(value, bool)
            except TypeError:
                ok = False
            if not ok:
                raise RunError(f"{where}: {arg}={value!r} is not a finite number",
                               hint="pass seconds as a finite float")
        collection_time, offset = float(collection_time), float(offset)
        body = (_UINT32.pack(stream.sid)
                + _DOUBLE.pack(collection_time) + _DOUBLE.pack(offset))
        with self._lock:
            self._check_open("write_clock_offset")
            self._maybe_boundary()
            self._write(_chunk(_TAG_CLOCK_OFFSET, body))
            stream.clock_offsets.append((collection_time, offset))
            self._maybe_fsync()

    def sync(self) -> None:
        """Force everything written so far to disk (``os.fsync``) now.

        Raises
        ------
        RunError
            If the writer is closed or fsync fails.
        """
        with self._lock:
            self._check_open("sync")
            self._fsync()

    def close(self) -> None:
        """Write one StreamFooter per stream, fsync and close the file.

        Idempotent: later calls do nothing. The file is closed even if writing
        a footer fails (the error is raised after closing).

        Raises
        ------
        RunError
            If writing the footers or the final fsync fails.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                footers = b"".join(self._footer(s) for s in self._streams.values())
                if footers:
                    self._write(footers)
                self._fsync()
            finally:
                os.close(self._fd)

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"XdfWriter({self.path!r}, {len(self._streams)} streams, {state})"

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _channel_meta(where: str, arg: str, values: Any, channel_count: int, *,
                      broadcast: bool) -> list[str] | None:
        if values is None:
            return None
        if isinstance(values, str):
            if broadcast:
                return [values] * channel_count
            raise ConfigError(f"{where}: {arg} is a single str, expected one per channel",
                              hint=f"pass a list of {channel_count} str, e.g. ['Fz', 'Cz', ...]")
        try:
            out = list(values)
        except TypeError:
            raise ConfigError(f"{where}: {arg} must be a sequence of str",
                              hint=f"pass a list of {channel_count} str") from None
        if len(out) != channel_count:
            raise ConfigError(f"{where}: {arg} has {len(out)} entries but "
                              f"channel_count={channel_count}",
                              hint=f"give exactly one entry per channel ({channel_count})")
        bad = [i for i, v in enumerate(out) if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{where}: {arg}[{bad[0]}]={out[bad[0]]!r} is not a str",
                              hint="convert every entry to str")
        return out

    @staticmethod
    def _header_bytes(where: str, header_xml: Any, channel_count: int, channel_format: str,
                      other_meta: bool) -> bytes:
        """Check a caller's full StreamHeader XML; its UTF-8 bytes with an XML declaration."""
        if not isinstance(header_xml, str):
            raise ConfigError(f"{where}: header_xml must be a str (an <info> XML document)",
                              hint="pass e.g. inlet.info().as_xml()")
        if other_meta:
            raise ConfigError(f"{where}: header_xml cannot be combined with channel_labels, "
                              "channel_types, channel_units or desc_xml",
                              hint="put the channel metadata inside header_xml's <desc>")
        try:
            root = ET.fromstring(header_xml)
        except (ET.ParseError, ValueError) as exc:
            raise ConfigError(f"{where}: header_xml is not well-formed XML: {exc}",
                              hint="pass a complete <info>...</info> document") from None
        if root.tag != "info":
            raise ConfigError(f"{where}: header_xml's root element is <{root.tag}>, "
                              "expected <info>", hint="pass a complete <info> document")
        for key, expected in (("channel_count", str(channel_count)),
                              ("channel_format", channel_format)):
            got = (root.findtext(key) or "").strip()
            if got != expected:
                raise ConfigError(f"{where}: header_xml has <{key}>{got}</{key}> but "
                                  f"{key}={expected!r} was passed",
                                  hint="describe the samples the same way in both")
        text = header_xml.lstrip("\ufeff")
        if not text.lstrip().startswith("<?xml"):
            text = _XML_DECL + text
        return text.encode("utf-8")

    def _stream(self, stream_id: int, method: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except (KeyError, TypeError):
            known = ", ".join(str(s) for s in self._streams) or "none yet"
            raise RunError(f"XdfWriter.{method}: unknown stream id {stream_id!r} "
                           f"(known: {known})",
                           hint="use the id that add_stream returned") from None

    @staticmethod
    def _timestamps(where: str, timestamps: ArrayLike) -> NDArray[np.float64]:
        try:
            ts = np.asarray(timestamps, dtype=np.float64)
        except (TypeError, ValueError):
            raise RunError(f"{where}: timestamps are not numbers",
                           hint="pass a float64 array of shape (n_samples,)") from None
        if ts.ndim != 1:
            raise RunError(f"{where}: timestamps have shape {ts.shape}, expected (n_samples,)",
                           hint="pass one timestamp per sample as a 1-D array")
        finite = np.isfinite(ts)
        if not finite.all():
            i = int(np.argmin(finite))
            raise RunError(f"{where}: timestamps[{i}]={ts[i]!r} is not finite",
                           hint="drop samples without a valid time, or fix the clock source")
        return ts

    @staticmethod
    def _numeric_values(where: str, stream: _Stream, target: np.dtype, data: ArrayLike,
                        n: int) -> np.ndarray:
        try:
            values = np.asarray(data)
        except (TypeError, ValueError):
            raise RunError(f"{where}: data is not a numeric array",
                           hint=f"pass an array of shape (n_samples, {stream.channel_count})"
                           ) from None
        if values.ndim != 2 or values.shape[1] != stream.channel_count:
            hint = f"pass shape (n_samples, {stream.channel_count}), LSL orientation"
            if values.ndim == 1 and stream.channel_count == 1:
                hint += "; reshape with data.reshape(-1, 1)"
            elif values.ndim == 2 and values.shape[0] == stream.channel_count:
                hint += "; transpose with data.T"
            raise RunError(f"{where}: data has shape {values.shape} but the stream has "
                           f"{stream.channel_count} channels", hint=hint)
        if values.shape[0] != n:
            raise RunError(f"{where}: data has {values.shape[0]} samples but "
                           f"{n} timestamps were given",
                           hint="pass exactly one timestamp per sample (row of data)")
        if values.dtype.kind not in "biuf":
            raise RunError(f"{where}: data has dtype {values.dtype}, expected numbers "
                           f"for channel_format '{stream.channel_format}'",
                           hint="convert the data to a numeric array")
        if target.kind == "i":
            if values.dtype.kind == "f":
                raise RunError(f"{where}: float data cannot be stored in an "
                               f"'{stream.channel_format}' stream without losing values",
                               hint="round and cast explicitly (e.g. np.rint(x).astype(int)), "
                                    "or declare the stream as float32/double64")
            if values.size and values.dtype != target:
                info = np.iinfo(target)
                lo, hi = values.min(), values.max()
                if lo < info.min or hi > info.max:
                    raise RunError(f"{where}: values in [{lo}, {hi}] do not fit "
                                   f"'{stream.channel_format}' ([{info.min}, {info.max}])",
                                   hint="scale the data, or declare a wider channel_format")
        return values

    @staticmethod
    def _string_payload(where: str, stream: _Stream, data: Any, ts: NDArray[np.float64]) -> bytes:
        nch = stream.channel_count
        if isinstance(data, (str, bytes)):
            raise RunError(f"{where}: data is a single str; expected n_samples samples of "
                           f"{nch} str each", hint='wrap it: data=[["marker"]]')
        try:
            samples = list(data)
        except TypeError:
            raise RunError(f"{where}: data must be a sequence of samples (sequences of str)",
                           hint='e.g. data=[["left"], ["right"]]') from None
        if len(samples) != ts.shape[0]:
            raise RunError(f"{where}: data has {len(samples)} samples but "
                           f"{ts.shape[0]} timestamps were given",
                           hint="pass exactly one timestamp per sample")
        stamps = ts.astype("<f8").tobytes()
        parts: list[bytes] = []
        for k, sample in enumerate(samples):
            if isinstance(sample, (str, bytes)):
                raise RunError(f"{where}: sample {k} is a bare {type(sample).__name__}, "
                               f"expected a sequence of {nch} str",
                               hint='wrap each sample in a list: [["left"]] not ["left"]')
            try:
                row = list(sample)
            except TypeError:
                raise RunError(f"{where}: sample {k} is {sample!r}, expected a sequence "
                               f"of {nch} str", hint='e.g. data=[["left"]]') from None
            if len(row) != nch:
                raise RunError(f"{where}: sample {k} has {len(row)} values but the stream "
                               f"has {nch} channels", hint=f"give {nch} str per sample")
            parts.append(b"\x08")
            parts.append(stamps[8 * k: 8 * k + 8])
            for ch, value in enumerate(row):
                if not isinstance(value, str):
                    raise RunError(f"{where}: sample {k} channel {ch} is {value!r}, not a str",
                                   hint="convert markers to str before writing")
                raw = value.encode("utf-8")
                parts.append(_varlen(len(raw)))
                parts.append(raw)
        return b"".join(parts)

    @staticmethod
    def _footer(stream: _Stream) -> bytes:
        info = ET.Element("info")
        _sub(info, "first_timestamp", _fmt_float(stream.first_timestamp or 0.0))
        _sub(info, "last_timestamp", _fmt_float(stream.last_timestamp or 0.0))
        _sub(info, "sample_count", str(stream.sample_count))
        offsets = ET.SubElement(info, "clock_offsets")
        for t, v in stream.clock_offsets:
            offset = ET.SubElement(offsets, "offset")
            _sub(offset, "time", _fmt_float(t))
            _sub(offset, "value", _fmt_float(v))
        body = _UINT32.pack(stream.sid) + _xml_text(info)
        return _chunk(_TAG_STREAM_FOOTER, body)

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RunError(f"XdfWriter.{method}: '{self.path}' is already closed",
                           hint="write everything before close(), or open a new file")

    def _maybe_boundary(self) -> None:
        now = time.monotonic()
        if now - self._last_boundary >= self.boundary_interval_s:
            self._write(_chunk(_TAG_BOUNDARY, BOUNDARY_UUID))
            self._last_boundary = now

    def _maybe_fsync(self) -> None:
        if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
            self._fsync()

    def _write(self, data: bytes) -> None:
        """Hand ``data`` to the OS in one call (looping on short writes).

        On failure, truncate back to the last complete chunk so the file stays
        readable, then raise RunError.
        """
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._offset)
                os.lseek(self._fd, self._offset, os.SEEK_SET)
            except OSError:
                pass
            raise RunError(f"XdfWriter: writing to '{self.path}' failed: "
                           f"{exc.strerror or exc}",
                           hint="check free disk space and that the disk is still mounted"
                           ) from exc
        self._offset += len(data)

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise RunError(f"XdfWriter: fsync of '{self.path}' failed: {exc.strerror or exc}",
                           hint="the disk may be full or gone; data since the last "
                                "fsync may be lost") from exc
        self._last_fsync = time.monotonic()

    def _fsync_dir(self) -> None:
        """Make the new file's directory entry durable (best effort, POSIX only)."""
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make new directory entries in ``folder`` durable (best effort, POSIX only)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
