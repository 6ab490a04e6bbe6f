"""Repair an XDF file whose recording was cut short (crash, power loss, full disk).

A killed recorder (ours, :mod:`bci_runtime.xdf_writer`, or LabRecorder) leaves a
file without StreamFooter chunks, possibly ending inside a chunk.
:func:`repair_xdf` scans the chunk structure, then

* cuts off a trailing partial chunk (or the zero bytes a power loss can leave
  at the end of a file) and appends one StreamFooter per stream that has none
  (first/last timestamp, sample count, clock offsets, as the writer's
  ``close`` and LabRecorder write them), **in place**;
* when a chunk in the *middle* is damaged (unknown tag, impossible length,
  samples that do not fit their chunk), keeps what precedes it, resumes at the
  next Boundary chunk, and writes the result to a **new file**
  ``NAME.repaired.xdf`` next to the original, which is left untouched;
* changes nothing when the file is already complete.

Crash safety of the repair itself: the in-place path first truncates to the
end of the last complete chunk and fsyncs (the file then ends on a chunk
boundary and opens in pyxdf), then appends the footers in one write and
fsyncs; a failed write is rolled back by truncating again. A power loss during
that last write can leave a partial footer chunk at most, which a second run
removes. The out-of-place path writes a temporary file, fsyncs it and links it
to its final name, so ``NAME.repaired.xdf`` is either complete or absent.

Do not run it on a file that a recorder is still writing: the file is checked
for changes between the scan and the repair, but not locked.

Sample data are never turned into one Python object per sample, except for
string streams and for numeric chunks where only some samples carry a
timestamp; numeric chunks are read with numpy.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.xdf_writer import BOUNDARY_UUID, CHANNEL_FORMATS, XdfWriter, _Stream, fsync_dir

__all__ = ["RepairReport", "SkippedRange", "StreamReport", "repair_xdf"]

_MAGIC = b"XDF:"
_TAG_NAMES = {1: "FileHeader", 2: "StreamHeader", 3: "Samples", 4: "ClockOffset",
              5: "Boundary", 6: "StreamFooter"}
# smallest possible chunk length (tag included) per tag; ClockOffset and Boundary have one size
_MIN_LENGTH = {1: 2, 2: 6, 3: 7, 4: 22, 5: 18, 6: 6}
_FIXED_LENGTH = {4: 22, 5: 18}
# how a Boundary chunk can be framed in front of its UUID (1-, 4- or 8-byte length)
_BOUNDARY_PREFIXES = (
    b"\x01\x12\x05\x00",
    b"\x04\x12\x00\x00\x00\x05\x00",
    b"\x08\x12\x00\x00\x00\x00\x00\x00\x00\x05\x00",
)
_DOUBLE = struct.Struct("<d")
_COPY_BLOCK = 1 << 20
# an XML chunk (file/stream header, footer) longer than this is a damaged length field
_MAX_XML_LENGTH = 1 << 26


# --------------------------------------------------------------------------- report

@dataclass(frozen=True)
class StreamReport:
    """What the repair found about one stream (in the kept part of the file).

    Attributes
    ----------
    stream_id : int
        The stream's id in the file.
    name : str
        Stream name from its StreamHeader.
    channel_count : int
        Number of channels.
    channel_format : str
        XDF channel format (``float32``, ``string``, ...).
    samples : int
        Number of samples pyxdf reads for this stream.
    first_timestamp, last_timestamp : float or None
        Timestamps of the first and last sample (deduced from the nominal rate
        for samples stored without one, as pyxdf does); None without samples.
    clock_offsets : int
        Number of ClockOffset measurements.
    had_footer : bool
        True if the file already had a StreamFooter for this stream (left as is).
    """

    stream_id: int
    name: str
    channel_count: int
    channel_format: str
    samples: int
    first_timestamp: float | None
    last_timestamp: float | None
    clock_offsets: int
    had_footer: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the stream's entry as a JSON-ready mapping."""
        return {
            "stream_id": self.stream_id,
            "name": self.name,
            "channel_count": self.channel_count,
            "channel_format": self.channel_format,
            "samples": self.samples,
            "first_timestamp": _json_float(self.first_timestamp),
            "last_timestamp": _json_float(self.last_timestamp),
            "clock_offsets": self.clock_offsets,
            "had_footer": self.had_footer,
        }


@dataclass(frozen=True)
class SkippedRange:
    """A damaged byte range of the original file that the repaired file leaves out.

    Attributes
    ----------
    start, end : int
        Byte offsets in the original file (``end`` exclusive).
    reason : str
        What was wrong with the chunk at ``start``.
    resynchronized : bool
        True if a Boundary chunk was found at ``end`` and the rest was kept;
        False if the range runs to the end of the file.
    """

    start: int
    end: int
    reason: str
    resynchronized: bool

    @property
    def size(self) -> int:
        """Number of bytes skipped."""
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        """Return the range as a JSON-ready mapping."""
        return {"start": self.start, "end": self.end, "bytes": self.size,
                "reason": self.reason, "resynchronized": self.resynchronized}


@dataclass(frozen=True)
class RepairReport:
    """Outcome of :func:`repair_xdf`.

    Attributes
    ----------
    path : Path
        The file that was examined.
    output : Path or None
        The repaired file: ``path`` itself (repaired in place), a new
        ``NAME.repaired.xdf`` (damage in the middle; ``path`` is unchanged), or
        None when there was nothing to repair.
    streams : tuple of StreamReport
        Every stream, in file order.
    original_bytes : int
        Size of ``path`` before the repair.
    output_bytes : int
        Size of ``output`` (``original_bytes`` when nothing was repaired).
    truncated_bytes : int
        Bytes removed from the end: a partial chunk cut mid-write, or zeros.
    truncated_reason : str or None
        What those bytes were, e.g. ``"a partial Samples chunk"``.
    skipped : tuple of SkippedRange
        Damaged ranges in the middle of the file that were left out.
    """

    path: Path
    output: Path | None
    streams: tuple[StreamReport, ...]
    original_bytes: int
    output_bytes: int
    truncated_bytes: int = 0
    truncated_reason: str | None = None
    skipped: tuple[SkippedRange, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        """True if a repaired file was written (in place or as a new file)."""
        return self.output is not None

    @property
    def in_place(self) -> bool:
        """True if ``path`` itself was repaired."""
        return self.output is not None and self.output == self.path

    @property
    def footers_written(self) -> int:
        """Number of StreamFooter chunks appended."""
        if not self.changed:
            return 0
        return sum(not s.had_footer for s in self.streams)

    @property
    def skipped_bytes(self) -> int:
        """Total bytes of the damaged ranges left out."""
        return sum(r.size for r in self.skipped)

    def describe(self) -> list[str]:
        """Human-readable lines; the first one sums the repair up."""
        n = len(self.streams)
        if not self.changed:
            lines = [f"nothing to repair: '{self.path}' is complete "
                     f"(footers for all {n} stream{_s(n)})"]
        else:
            done: list[str] = []
            if self.footers_written:
                done.append("footers written")
            if self.truncated_bytes:
                n_cut = self.truncated_bytes
                done.append(f"{n_cut} byte{_s(n_cut)} of {self.truncated_reason} cut off")
            if self.skipped:
                done.append(f"{self.skipped_bytes} byte{_s(self.skipped_bytes)} of damaged "
                            "data skipped")
            k = self.footers_written
            head = f"repaired {k} stream{_s(k)}" if k else "repaired"
            if not self.in_place:
                head += f" into '{self.output}'"
            lines = [f"{head}: " + ", ".join(done)]
        for s in self.streams:
            if s.samples:
                span = f"t = {s.first_timestamp:.6f} ... {s.last_timestamp:.6f} s"
            else:
                span = "no timestamps"
            state = "footer already present" if s.had_footer else "footer written"
            if not self.changed:
                state = "footer present"
            lines.append(f"  stream {s.stream_id} '{s.name}' ({s.channel_count} x "
                         f"{s.channel_format}): {s.samples} sample{_s(s.samples)}, {span}, "
                         f"{s.clock_offsets} clock offset{_s(s.clock_offsets)}, {state}")
        for r in self.skipped:
            tail = ("resumed at the next Boundary chunk" if r.resynchronized
                    else "no Boundary chunk after it: the rest of the file is lost")
            lines.append(f"  bytes {r.start}-{r.end} ({r.size} byte{_s(r.size)}) skipped: "
                         f"{r.reason}; {tail}")
        if self.changed and not self.in_place:
            lines.append(f"  the original '{self.path}' is left unchanged; "
                         f"use '{self.output}'")
        elif self.changed:
            lines.append(f"  '{self.path}' repaired in place "
                         f"({self.original_bytes} -> {self.output_bytes} bytes)")
        return lines

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready mapping."""
        return {
            "path": str(self.path),
            "output": None if self.output is None else str(self.output),
            "changed": self.changed,
            "in_place": self.in_place,
            "footers_written": self.footers_written,
            "original_bytes": self.original_bytes,
            "output_bytes": self.output_bytes,
            "truncated_bytes": self.truncated_bytes,
            "truncated_reason": self.truncated_reason,
            "skipped": [r.as_dict() for r in self.skipped],
            "streams": [s.as_dict() for s in self.streams],
        }


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _json_float(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------- scanning

class _Corrupt(Exception):
    """The chunk at this offset is not a valid chunk."""


class _Truncated(Exception):
    """The chunk at this offset starts consistently but runs past the end of the file."""


@dataclass
class _StreamState:
    """Running per-stream state, the same as pyxdf keeps while reading."""

    sid: int
    name: str
    channel_count: int
    channel_format: str
    tdiff: float  # nominal sampling interval, for samples stored without a timestamp
    value_size: int | None  # bytes of one numeric sample's values; None for strings
    last_ts: float = 0.0  # pyxdf's running timestamp (starts at 0.0, like pyxdf)
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    samples: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)
    has_footer: bool = False


@dataclass
class _Scan:
    streams: dict[int, _StreamState]
    kept: list[tuple[int, int]]  # byte ranges of the original to keep, in order
    skipped: list[SkippedRange]
    truncated_bytes: int = 0
    truncated_reason: str | None = None


class _FileShrank(Exception):
    """The file got shorter while it was being read."""


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows has no pread
    return os.read(fd, n)


class _Reader:
    """Random access to a file's first ``size`` bytes through a read-ahead window.

    Reads with ``pread`` rather than ``mmap``: a mapped file that another
    program truncates meanwhile kills the process with SIGBUS, whereas a short
    read here becomes a clear error. Indexing with an int gives a byte value,
    with a slice (clipped to ``size``) a ``bytes`` copy, as for ``bytes``.
    """

    _WINDOW = 1 << 20

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._start = 0
        self._buf = b""

    def _read(self, a: int, b: int) -> bytes:
        parts, pos = [], a
        while pos < b:
            got = _pread(self.fd, b - pos, pos)
            if not got:
                raise _FileShrank
            parts.append(got)
            pos += len(got)
        return b"".join(parts)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, int):
            return self[key:key + 1][0]
        a, b = max(key.start or 0, 0), min(self.size if key.stop is None else key.stop,
                                             self.size)
        if a >= b:
            return b""
        s = self._start
        if s <= a and b <= s + len(self._buf):
            return self._buf[a - s:b - s]
        if b - a >= self._WINDOW:
            return self._read(a, b)
        self._start, self._buf = a, self._read(a, min(self.size, a + self._WINDOW))
        return self._buf[:b - a]

    def find(self, sub: bytes, start: int) -> int:
        """Offset of the first ``sub`` at or after ``start``, or -1."""
        pos = start
        while pos < self.size:
            end = min(self.size, pos + self._WINDOW)
            i = self[pos:end].find(sub)
            if i >= 0:
                return pos + i
            if end == self.size:
                break
            pos = end - len(sub) + 1  # overlap, so a match across two windows is found
        return -1


def _varlen_at(buf: bytes | _Reader, pos: int, end: int) -> tuple[int, int]:
    """Decode an XDF varlen at ``pos``; return (value, position after it).

    Raises _Truncated if it runs past ``end``, _Corrupt if the size byte is invalid.
    """
    if pos >= end:
        raise _Truncated("a length")
    nb = buf[pos]
    if nb not in (1, 4, 8):
        raise _Corrupt(f"invalid variable-length integer (size byte 0x{nb:02x})")
    if pos + 1 + nb > end:
        raise _Truncated("a length")
    return int.from_bytes(buf[pos + 1:pos + 1 + nb], "little"), pos + 1 + nb


def _parse_xml(raw: bytes, what: str) -> ET.Element:
    try:
        # pyxdf decodes headers with errors="replace"; do the same so both accept the same files
        return ET.fromstring(raw.decode("utf-8", "replace"))
    except (ET.ParseError, ValueError) as exc:
        raise _Corrupt(f"{what} XML does not parse ({exc})") from None


class _Scanner:
    """Walk the chunks of an XDF file, keeping per-stream totals."""

    def __init__(self, f: _Reader) -> None:
        self.f = f
        self.size = f.size
        self.streams: dict[int, _StreamState] = {}

    def run(self) -> _Scan:
        """Scan from the magic to the end of the file."""
        size = self.size
        scan = _Scan(self.streams, [], [])
        kept_start = 0
        pos = len(_MAGIC)
        while pos < size:
            try:
                pos = self._chunk(pos)
                continue
            except _Truncated as exc:
                # a chunk cut by the end of the file is the tail lost at the crash, unless
                # intact data follow it (then its length field is damaged: corruption)
                if self._find_boundary(pos + 1) is None:
                    scan.kept.append((kept_start, pos))
                    scan.truncated_bytes = size - pos
                    scan.truncated_reason = f"a partial {exc.args[0]}"
                    return scan
                reason = (f"the {exc.args[0]} at byte {pos} is longer than the rest of the "
                          "file, yet valid chunks follow")
            except _Corrupt as exc:
                reason = f"{exc.args[0]} at byte {pos}"
            scan.kept.append((kept_start, pos))
            if self._all_zero(pos):
                # a power loss can leave zero-filled blocks at the end: nothing to keep there
                scan.truncated_bytes = size - pos
                scan.truncated_reason = "zeros (left by a power loss)"
                return scan
            resync = self._find_boundary(pos + 1)
            if resync is None:
                scan.skipped.append(SkippedRange(pos, size, reason, False))
                return scan
            scan.skipped.append(SkippedRange(pos, resync, reason, True))
            kept_start = pos = resync
        scan.kept.append((kept_start, size))
        return scan

    # -- helpers

    def _all_zero(self, pos: int) -> bool:
        for start in range(pos, self.size, _COPY_BLOCK):
            block = self.f[start:min(start + _COPY_BLOCK, self.size)]
            if block.count(0) != len(block):
                return False
        return True

    def _find_boundary(self, start: int) -> int | None:
        """Offset of the next Boundary chunk at or after ``start``, or None."""
        i = start
        while True:
            u = self.f.find(BOUNDARY_UUID, i)
            if u < 0:
                return None
            for prefix in _BOUNDARY_PREFIXES:
                s = u - len(prefix)
                if s >= start and self.f[s:u] == prefix:
                    return s
            i = u + 1

    def _stream(self, body: bytes, tag: int) -> _StreamState:
        sid = int.from_bytes(body[:4], "little")
        try:
            return self.streams[sid]
        except KeyError:
            raise _Corrupt(f"{_TAG_NAMES[tag]} chunk of undeclared stream {sid}") from None

    def _chunk(self, pos: int) -> int:
        """Check the chunk at ``pos`` and record what it holds; return its end.

        The stream state changes only once the whole chunk is known to be valid.
        """
        f, size = self.f, self.size
        if f[pos] not in (1, 4, 8):
            raise _Corrupt(f"invalid chunk length prefix 0x{f[pos]:02x}")
        try:
            length, p = _varlen_at(f, pos, size)
        except _Truncated:
            raise _Truncated("chunk header") from None
        if p + 2 > size:
            raise _Truncated("chunk header")
        tag = int.from_bytes(f[p:p + 2], "little")
        if tag not in _TAG_NAMES:
            raise _Corrupt(f"unknown chunk tag {tag}")
        name = _TAG_NAMES[tag]
        if length < _MIN_LENGTH[tag] or length != _FIXED_LENGTH.get(tag, length):
            raise _Corrupt(f"impossible length {length} for a {name} chunk")
        if tag in (1, 2, 6) and length > _MAX_XML_LENGTH:
            raise _Corrupt(f"impossible length {length} for a {name} chunk")
        end = p + length  # the length counts the 2 tag bytes
        truncated = end > size
        # check what the first bytes promise before reading a body whose length may be
        # damaged (and huge): stream id, and for samples that the count fits the length
        head = f[p + 2:min(end, p + 2 + 13)]
        if tag in (3, 4, 6) and len(head) >= 4:
            stream = self._stream(head, tag)
        if tag == 3 and len(head) >= 4:
            try:
                n, off = self._sample_layout(stream, head, length - 2)
            except _Truncated:
                if not truncated:
                    raise _Corrupt(f"Samples chunk of stream {stream.sid} is too short"
                                   ) from None
                # else: not even the sample count made it to disk
        if truncated:
            raise _Truncated(f"{name} chunk")
        body = f[p + 2:end]
        if tag == 1:
            _parse_xml(body, "FileHeader")
        elif tag == 2:
            self._header(body)
        elif tag == 3:
            self._samples(stream, body, n, off)
        elif tag == 4:
            t, v = _DOUBLE.unpack_from(body, 4)[0], _DOUBLE.unpack_from(body, 12)[0]
            stream.clock_offsets.append((t, v))
        elif tag == 6:
            try:
                ET.fromstring(body[4:])
            except (ET.ParseError, ValueError):
                # pyxdf ignores a footer that does not parse: count it as missing
                pass
            else:
                stream.has_footer = True
        return end

    def _header(self, body: bytes) -> None:
        sid = int.from_bytes(body[:4], "little")
        info = _parse_xml(body[4:], f"StreamHeader of stream {sid}")
        fmt = (info.findtext("channel_format") or "").strip()
        if fmt not in CHANNEL_FORMATS:
            raise _Corrupt(f"StreamHeader of stream {sid} has an unknown channel_format {fmt!r}")
        try:
            nch = int((info.findtext("channel_count") or "").strip())
            srate = float((info.findtext("nominal_srate") or "").strip())
        except ValueError:
            raise _Corrupt(f"StreamHeader of stream {sid} lacks a valid channel_count "
                           "or nominal_srate") from None
        if nch < 1:
            raise _Corrupt(f"StreamHeader of stream {sid} has channel_count {nch}")
        dtype = CHANNEL_FORMATS[fmt]
        # pyxdf starts a stream afresh when its header appears again: so do we
        self.streams[sid] = _StreamState(
            sid=sid, name=(info.findtext("name") or "").strip(), channel_count=nch,
            channel_format=fmt, tdiff=1.0 / srate if srate > 0 else 0.0,
            value_size=None if dtype is None else nch * dtype.itemsize)

    @staticmethod
    def _sample_layout(s: _StreamState, head: bytes, content_len: int) -> tuple[int, int]:
        """Sample count of a Samples chunk and where its samples start in the body.

        ``head`` is the start of the chunk after its tag; ``content_len`` the
        length of the whole body. Raises _Corrupt if the count cannot fit.
        """
        n, off = _varlen_at(head, 4, len(head))
        data_len = content_len - off
        nch = s.channel_count
        if s.value_size is None:
            # strings: each sample is >= 1 timestamp byte + one 1-byte varlen per channel
            if data_len < n * (1 + 2 * nch):
                raise _Corrupt(f"Samples chunk of stream {s.sid} is too short for {n} samples")
        else:
            extra = data_len - n * (1 + s.value_size)
            if extra < 0 or extra % 8 or extra // 8 > n:
                raise _Corrupt(f"Samples chunk of stream {s.sid} does not hold {n} samples "
                               f"of {nch} x {s.channel_format}")
        return n, off

    def _samples(self, s: _StreamState, body: bytes, n: int, off: int) -> None:
        """Count the samples of one chunk and find its first and last timestamp.

        ``body`` is the chunk after its tag, whose ``n`` samples start at ``off``
        (as :meth:`_sample_layout` found); commits to ``s`` only if all is valid.
        """
        if n == 0:
            return
        data_len = len(body) - off
        try:
            if s.value_size is None:
                first, last = self._string_times(s, body, off, n)
            else:
                stamped = (data_len - n * (1 + s.value_size)) // 8
                first, last = self._numeric_times(s, body, off, n, stamped)
        except (IndexError, struct.error, _Truncated):
            # the timestamp bytes do not add up to the chunk's length
            raise _Corrupt(f"Samples chunk of stream {s.sid} does not match its length") from None
        if s.first_timestamp is None:
            s.first_timestamp = first
        s.last_timestamp = s.last_ts = last
        s.samples += n

    @staticmethod
    def _numeric_times(s: _StreamState, body: bytes, off: int, n: int,
                       stamped: int) -> tuple[float, float]:
        v = s.value_size
        if stamped == n:  # the common layout (our writer): every sample has its timestamp
            rec = np.frombuffer(body, dtype=[("tb", "u1"), ("ts", "<f8"), ("v", f"V{v}")],
                                count=n, offset=off)
            if not (rec["tb"] == 8).all():
                raise _Corrupt(f"Samples chunk of stream {s.sid} has an invalid timestamp byte")
            return float(rec["ts"][0]), float(rec["ts"][-1])
        if stamped == 0:
            rec = np.frombuffer(body, dtype=[("tb", "u1"), ("v", f"V{v}")], count=n, offset=off)
            if (rec["tb"] != 0).any():
                raise _Corrupt(f"Samples chunk of stream {s.sid} has an invalid timestamp byte")
            # accumulate is sequential, so this equals pyxdf's one-by-one additions bit for bit
            ts = np.add.accumulate(np.concatenate(([s.last_ts], np.full(n, s.tdiff))))
            return float(ts[1]), float(ts[-1])
        # some samples carry a timestamp, others not (LabRecorder does this): walk them
        p, t, first, end = off, s.last_ts, 0.0, len(body)
        for i in range(n):
            tb = body[p]
            if tb == 8:
                t = _DOUBLE.unpack_from(body, p + 1)[0]
                p += 9 + v
            elif tb == 0:
                t = t + s.tdiff
                p += 1 + v
            else:
                raise _Corrupt(f"Samples chunk of stream {s.sid} has an invalid timestamp "
                               f"byte {tb}")
            if i == 0:
                first = t
        if p != end:
            raise _Corrupt(f"Samples chunk of stream {s.sid} does not match its length")
        return first, t

    @staticmethod
    def _string_times(s: _StreamState, body: bytes, off: int, n: int) -> tuple[float, float]:
        p, t, first, end = off, s.last_ts, 0.0, len(body)
        for i in range(n):
            tb = body[p]
            if tb == 8:
                t = _DOUBLE.unpack_from(body, p + 1)[0]
                p += 9
            elif tb == 0:
                t = t + s.tdiff
                p += 1
            else:
                raise _Corrupt(f"Samples chunk of stream {s.sid} has an invalid timestamp "
                               f"byte {tb}")
            for _ in range(s.channel_count):
                k, p = _varlen_at(body, p, end)
                p += k
            if i == 0:
                first = t
        if p != end:
            raise _Corrupt(f"Samples chunk of stream {s.sid} does not match its length")
        return first, t


# --------------------------------------------------------------------------- writing

def _footers(streams: dict[int, _StreamState]) -> bytes:
    """StreamFooter chunks for the streams without one, as the writer's close() makes them."""
    parts = []
    for s in streams.values():
        if s.has_footer:
            continue
        w = _Stream(s.sid, s.name, s.channel_count, s.channel_format)
        w.first_timestamp = s.first_timestamp
        w.last_timestamp = s.last_timestamp
        w.sample_count = s.samples
        w.clock_offsets = list(s.clock_offsets)
        parts.append(XdfWriter._footer(w))
    return b"".join(parts)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _repair_in_place(path: Path, before: os.stat_result, good_end: int, footers: bytes) -> int:
    """Truncate ``path`` to ``good_end``, append ``footers``, fsync; return the new size."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise ConfigError(f"repair: '{path}' is not writable",
                          hint="give yourself write permission (chmod u+w), or repair a "
                               "copy of the file") from None
    except OSError as exc:
        raise ConfigError(f"repair: cannot open '{path}' for writing: {exc.strerror or exc}",
                          hint="check the file's permissions and that the disk is mounted "
                               "read-write") from exc
    try:
        now = os.fstat(fd)
        if (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) != (
                before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns):
            raise ConfigError(f"repair: '{path}' changed while it was being examined",
                              hint="is a recorder still writing it? stop it first, then "
                                   "run the repair again")
        try:
            if good_end < now.st_size:
                # first make the file end on a chunk boundary: readable even if we stop here
                os.ftruncate(fd, good_end)
                os.fsync(fd)
            if footers:
                os.lseek(fd, good_end, os.SEEK_SET)
                try:
                    _write_all(fd, footers)
                    os.fsync(fd)
                except OSError:
                    # never leave a partial footer behind: back to the last complete chunk
                    try:
                        os.ftruncate(fd, good_end)
                        os.fsync(fd)
                    except OSError:
                        pass
                    raise
        except OSError as exc:
            raise RunError(f"repair: writing to '{path}' failed: {exc.strerror or exc}",
                           hint="check free disk space; the file still ends on a complete "
                                "chunk and opens in pyxdf, run the repair again") from exc
        return good_end + len(footers)
    finally:
        os.close(fd)


def _repaired_name(path: Path) -> Path:
    if path.suffix.lower() == ".xdf":
        return path.with_name(path.stem + ".repaired" + path.suffix)
    return path.with_name(path.name + ".repaired.xdf")


def _write_copy(path: Path, source: _Reader, kept: list[tuple[int, int]],
                footers: bytes) -> tuple[Path, int]:
    """Write the kept ranges plus ``footers`` to ``NAME.repaired.xdf``; return it and its size."""
    out = _repaired_name(path)
    if out.exists():
        raise ConfigError(f"repair: '{path}' is damaged in the middle and must be repaired "
                          f"into a new file, but '{out}' already exists",
                          hint="move or delete that file (an earlier repair?) and run the "
                               "repair again")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise ConfigError(f"repair: cannot create '{tmp}': {exc.strerror or exc}",
                          hint="the repaired copy goes next to the original: make that "
                               "folder writable, or copy the file elsewhere and repair "
                               "the copy") from exc
    size = 0
    try:
        try:
            for start, end in kept:
                for a in range(start, end, _COPY_BLOCK):
                    block = source[a:min(a + _COPY_BLOCK, end)]
                    _write_all(fd, block)
                    size += len(block)
            _write_all(fd, footers)
            size += len(footers)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link, not rename: never replace a file that appeared in the meantime
            os.link(tmp, out)
        except FileExistsError:
            raise ConfigError(f"repair: '{out}' appeared while repairing '{path}'",
                              hint="move it away and run the repair again") from None
        except OSError:
            # file systems without hard links (FAT, some network shares)
            if out.exists():
                raise ConfigError(f"repair: '{out}' appeared while repairing '{path}'",
                                  hint="move it away and run the repair again") from None
            os.replace(tmp, out)
    except OSError as exc:
        raise RunError(f"repair: writing '{out}' failed: {exc.strerror or exc}",
                       hint="check free disk space; the original file is unchanged") from exc
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_dir(out.parent)
    return out, size


# --------------------------------------------------------------------------- entry point

def _open_for_reading(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"repair: '{path}' does not exist",
                          hint="give the path of an XDF recording") from None
    except PermissionError:
        raise ConfigError(f"repair: '{path}' is not readable (permission denied)",
                          hint="give yourself read and write permission (chmod u+rw), or "
                               "ask the file's owner") from None
    except OSError as exc:
        raise ConfigError(f"repair: cannot open '{path}': {exc.strerror or exc}",
                          hint="give the path of an XDF recording") from exc
    return fd


def repair_xdf(path: str | os.PathLike[str]) -> RepairReport:
    """Give an XDF file cut short by a crash its missing StreamFooter chunks.

    Parameters
    ----------
    path : str or os.PathLike
        An XDF file written by :class:`~bci_runtime.xdf_writer.XdfWriter` or
        LabRecorder (uncompressed). Repaired in place when only its end is
        damaged (partial last chunk, missing footers); when a chunk in the
        middle is damaged the original is left as is and the result goes to
        ``NAME.repaired.xdf`` in the same folder.

    Returns
    -------
    RepairReport
        What was found and done; ``report.output`` is None when the file was
        already complete (it is then not modified at all).

    Raises
    ------
    ConfigError
        If the file does not exist, cannot be read (or written, when it needs a
        repair), is not an XDF file, has no StreamHeader, changed during the
        repair, or ``NAME.repaired.xdf`` already exists.
    RunError
        If writing fails (e.g. disk full); the file still opens in pyxdf then.
    """
    path = Path(path)
    fd = _open_for_reading(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"repair: '{path}' is not a regular file",
                              hint="give the path of an XDF recording")
        size = st.st_size
        try:
            magic = _pread(fd, 4, 0)
        except OSError as exc:
            raise ConfigError(f"repair: cannot read '{path}': {exc.strerror or exc}",
                              hint="check the file's permissions and the disk") from exc
        if magic != _MAGIC:
            hint = ("it looks gzip-compressed (.xdfz): decompress it first (gunzip), then "
                    "repair the .xdf" if magic[:2] == b"\x1f\x8b"
                    else "give the path of an .xdf recording (XDF files start with 'XDF:')")
            raise ConfigError(f"repair: '{path}' is not an XDF file "
                              f"(it starts with {magic!r}, not b'XDF:')", hint=hint)
        reader = _Reader(fd, size)
        try:
            scan = _Scanner(reader).run()
            if not scan.streams:
                raise ConfigError(f"repair: '{path}' has no StreamHeader chunk: the recording "
                                  "stopped before any stream was declared, nothing to recover",
                                  hint="record again; this file holds no data")
            footers = _footers(scan.streams)
            report = RepairReport(path=path, output=None, streams=_stream_reports(scan),
                                  original_bytes=size, output_bytes=size,
                                  truncated_bytes=scan.truncated_bytes,
                                  truncated_reason=scan.truncated_reason,
                                  skipped=tuple(scan.skipped))
            if not footers and not scan.truncated_bytes and not scan.skipped:
                return report
            if scan.skipped:
                # damage in the middle: never edit the original, write the result beside it
                out, out_size = _write_copy(path, reader, scan.kept, footers)
                return replace(report, output=out, output_bytes=out_size)
        except _FileShrank:
            raise ConfigError(f"repair: '{path}' got shorter while it was being examined",
                              hint="is another program writing it? stop it first, then "
                                   "run the repair again") from None
        out_size = _repair_in_place(path, st, scan.kept[-1][1], footers)
        return replace(report, output=path, output_bytes=out_size)
    finally:
        os.close(fd)


def _stream_reports(scan: _Scan) -> tuple[StreamReport, ...]:
    return tuple(
        StreamReport(stream_id=s.sid, name=s.name, channel_count=s.channel_count,
                     channel_format=s.channel_format, samples=s.samples,
                     first_timestamp=s.first_timestamp, last_timestamp=s.last_timestamp,
                     clock_offsets=len(s.clock_offsets), had_footer=s.has_footer)
        for s in scan.streams.values())
