"""Checks run on a recording file before and after it is parsed (see ``load_recording``).

Every check either raises :class:`~bci_runtime.errors.RecordingError` naming
the file, what is wrong and how to fix it, or returns warnings in plain words
saying what was recovered or lost:

* :func:`check_file` - the path exists and is a file (or a recording folder such
  as ``.mff``/``.ds``), is not empty, is not a Git-LFS pointer or a git-annex
  link/pointer whose content was never fetched, and has an extension that can
  be read (:data:`RECORDING_EXTENSIONS`). Returns the format name.
* :func:`check_companions` - the files a header file needs (Persyst ``.dat``,
  BrainVision ``.eeg``/``.vmrk``, EEGLAB ``.fdt``) are there and are not
  pointers either.
* :func:`check_edf` - an EDF/BDF header is parsed (header size, number of data
  records, record duration, samples per record of each signal) and the size it
  declares is compared with the file's: a file cut short, a header that does not
  know its record count (``-1``) or a file longer than declared is a warning
  (MNE reads the whole records present; the loader crops to the declared ones);
  a header that is not EDF/BDF is an error.
* :func:`scan_xdf` - walks the XDF chunk structure without reading samples
  (lengths, tags, stream ids, sample-chunk sizes) and returns the byte ranges
  that hold whole, valid chunks: a damaged chunk is skipped up to the next
  Boundary chunk (as pyxdf does, but without letting pyxdf desynchronise), a
  chunk of a stream whose header was lost is dropped, and a last chunk cut short
  (a recorder that crashed) is left out. :func:`open_ranges` presents those
  ranges to pyxdf as one file, without a copy. A compressed XDF (``.xdfz``,
  ``.xdf.gz``) is first decompressed to a temporary file by
  :func:`decompress_gzip`, which keeps everything before a cut or damage.
* :func:`nonfinite_warning`, :func:`rate_warning`, :func:`order_warning` - checks
  on parsed data: NaN/Inf values (kept: the runtime's chunk checks handle them),
  an effective rate far from the nominal one (dropped samples), timestamps that
  go backwards.
"""

from __future__ import annotations

import bisect
import io
import mmap
import os
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bci_runtime.errors import RecordingError

__all__ = [
    "RECORDING_EXTENSIONS", "EdfCheck", "EdfLayout", "XdfScan", "check_companions",
    "check_edf", "check_file", "check_pointer", "check_xdf_magic", "decompress_gzip",
    "nonfinite_warning", "open_ranges", "order_warning", "rate_warning", "read_edf_layout",
    "recording_suffix", "scan_xdf",
]

#: File extensions that can be read, and the format each is read as. XDF goes
#: through pyxdf, everything else through ``mne.io.read_raw``.
RECORDING_EXTENSIONS: dict[str, str] = {
    ".xdf": "xdf", ".xdfz": "xdf", ".xdf.gz": "xdf",
    ".fif": "fif", ".fif.gz": "fif",
    ".edf": "edf", ".bdf": "bdf", ".gdf": "gdf",
    ".vhdr": "brainvision", ".ahdr": "brainvision",
    ".set": "eeglab",
    ".lay": "persyst",
    ".cnt": "cnt",
    ".mff": "egi",
    ".eeg": "nihon",
    ".nxe": "eximia",
    ".data": "nicolet",
    ".nedf": "nedf",
    ".ns3": "nsx",
    ".mefd": "mef",
    ".sqd": "kit", ".con": "kit",
    ".ds": "ctf",
    ".cdt": "curry", ".dap": "curry", ".rs3": "curry", ".cef": "curry",
    ".dat": "curry",
    ".snirf": "snirf",
}
#: Formats stored as a folder rather than a file.
FOLDER_EXTENSIONS = (".mff", ".ds", ".mefd")
#: Data files that belong to a header file with the same stem (load the header).
HEADER_OF = {".eeg": ".vhdr", ".vmrk": ".vhdr", ".dat": ".lay", ".fdt": ".set"}
#: Files this small are looked at for pointer text (LFS pointers are ~130 bytes).
POINTER_MAX_BYTES = 1024
LFS_SIGNATURE = b"version https://git-lfs.github.com/spec/v1"
ANNEX_MARKERS = ("/annex/objects/", ".git/annex/objects")
XDF_MAGIC = b"XDF:"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib: expect a gzip header
#: The 16 bytes of an XDF Boundary chunk (XDF specification).
XDF_BOUNDARY = bytes([0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F,
                      0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4])
#: Bytes per value of the numeric XDF channel formats.
XDF_VALUE_BYTES = {"float32": 4, "double64": 8, "int8": 1, "int16": 2, "int32": 4,
                   "int64": 8}
BACKWARDS_JITTER_S = 1.0  # steps back larger than this are not chunk jitter
RATE_TOLERANCE = 0.1  # pyxdf's threshold for "effective rate differs from nominal"
MAX_LISTED = 10  # names/positions listed in one message


def _supported_list() -> str:
    return ", ".join(sorted(RECORDING_EXTENSIONS))


# -- path, pointers, extension --------------------------------------------------------------
def recording_suffix(path: Path) -> str | None:
    """Return the recording extension of ``path`` (``.fif.gz`` before ``.gz``), lowercase.

    Parameters
    ----------
    path : Path
        A file name.

    Returns
    -------
    str or None
        A key of :data:`RECORDING_EXTENSIONS`, or None when none matches.
    """
    name = path.name.lower()
    matches = [ext for ext in RECORDING_EXTENSIONS if name.endswith(ext)]
    return max(matches, key=len) if matches else None


def _recordings_in(folder: Path) -> list[str]:
    """Names of the readable recordings directly in ``folder`` (for hints)."""
    try:
        names = sorted(p.name for p in folder.iterdir() if recording_suffix(p))
    except OSError:
        return []
    return names


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def _missing(path: Path, what: str = "recording") -> RecordingError:
    folder = path.parent
    if not folder.is_dir():
        return RecordingError(f"{what} '{path}' not found: folder '{folder}' does not exist",
                              hint="check the path (relative paths start from the current "
                                   f"folder, {Path.cwd()})")
    others = _recordings_in(folder)
    hint = (f"recordings in '{folder}': {_listing(others)}" if others
            else f"'{folder}' holds no readable recording; check the path")
    return RecordingError(f"{what} '{path}' not found", hint=hint)


def check_pointer(path: Path, *, size: int | None = None) -> None:
    """Raise if ``path`` is a Git-LFS pointer or a git-annex pointer, not the data.

    Parameters
    ----------
    path : Path
        An existing regular file.
    size : int, optional
        Its size in bytes, if already known.

    Raises
    ------
    RecordingError
        If the file is pointer text (with the object id, size and fetch command).
    """
    size = path.stat().st_size if size is None else size
    if size > POINTER_MAX_BYTES:
        return
    with open(path, "rb") as f:
        head = f.read(POINTER_MAX_BYTES)
    if head.startswith(LFS_SIGNATURE):
        text = head.decode("utf-8", "replace")
        oid = re.search(r"^oid (\S+)", text, re.M)
        real = re.search(r"^size (\d+)", text, re.M)
        what = ", ".join(filter(None, (
            oid and f"oid {oid.group(1)}", real and f"size {int(real.group(1)):,} bytes")))
        raise RecordingError(
            f"'{path}' is a Git-LFS pointer ({what or 'no oid'}), not the recording: "
            "the data were never downloaded",
            hint="run `git lfs pull` (or `git lfs pull --include "
                 f"'{path.name}'`) in the repository that holds it, then load it again",
        )
    if head.lstrip().startswith(b"/annex/objects/"):
        key = head.strip()[:120].decode("ascii", "replace")
        raise RecordingError(
            f"'{path}' is a git-annex pointer file ({key}), not the recording: its content "
            "is not in this clone",
            hint=f"run `git annex get '{path}'` in the repository that holds it",
        )


def check_file(path: Path) -> str:
    """Check that ``path`` is a readable recording and return its format name.

    Parameters
    ----------
    path : Path
        What the user asked to load.

    Returns
    -------
    str
        The format (a value of :data:`RECORDING_EXTENSIONS`: ``xdf``, ``edf``...).

    Raises
    ------
    RecordingError
        If the path is missing, a dangling (git-annex) link, a folder that is not
        a recording, an empty file, a Git-LFS/git-annex pointer, or has an
        extension that cannot be read.
    """
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        if any(marker in target for marker in ANNEX_MARKERS):
            raise RecordingError(
                f"'{path}' is a git-annex link whose content is not in this clone "
                f"(it points to '{target}', which does not exist)",
                hint=f"run `git annex get '{path}'` in the repository that holds it",
            )
        raise RecordingError(f"'{path}' is a symbolic link to '{target}', which does not exist",
                             hint="fix the link or point to the real file")
    if not path.exists():
        raise _missing(path)
    suffix = recording_suffix(path)
    if path.is_dir():
        if suffix in FOLDER_EXTENSIONS:
            return RECORDING_EXTENSIONS[suffix]
        inside = _recordings_in(path)
        raise RecordingError(
            f"'{path}' is a folder, not a recording file",
            hint=(f"give one of the recordings in it: {_listing(inside)}" if inside
                  else f"give a recording file ({_supported_list()})"),
        )
    if not path.is_file():
        raise RecordingError(f"'{path}' is not a regular file", hint="give a recording file")
    size = path.stat().st_size
    if size == 0:
        raise RecordingError(
            f"'{path}' is empty (0 bytes): nothing was recorded into it, or a copy failed",
            hint="get the file again from where it was recorded",
        )
    check_pointer(path, size=size)
    header = path.with_suffix(HEADER_OF.get(path.suffix.lower(), path.suffix))
    if header != path and header.is_file():
        raise RecordingError(f"'{path}' is the data file of '{header.name}', which describes it",
                             hint=f"load '{header}' instead")
    if suffix is None:
        raise RecordingError(
            f"'{path}' has an extension that cannot be read ('{''.join(path.suffixes)}')",
            hint=f"recordings can be: {_supported_list()}",
        )
    return RECORDING_EXTENSIONS[suffix]


def _header_entry(header: Path, key: str) -> str | None:
    """Value of ``key=value`` in a text header (BrainVision ``.vhdr``, Persyst ``.lay``)."""
    try:
        text = header.read_text(encoding="latin-1")
    except OSError:
        return None
    found = re.search(rf"^\s*{re.escape(key)}\s*=\s*(.+?)\s*$", text, re.M | re.I)
    return found.group(1) if found else None


def check_companions(path: Path, fmt: str) -> None:
    """Check the data files a header file needs: present and not pointers.

    Parameters
    ----------
    path : Path
        The header file (``.lay``, ``.vhdr``, ``.set``).
    fmt : str
        Its format name.

    Raises
    ------
    RecordingError
        If a companion file is missing or is a Git-LFS/git-annex pointer.
    """
    needed: list[Path] = []
    optional: list[Path] = []
    if fmt == "persyst":
        named = _header_entry(path, "File")
        needed.append(path.parent / Path(named.replace("\\", "/")).name if named
                      else path.with_suffix(".dat"))
    elif fmt == "brainvision":
        for key in ("DataFile", "MarkerFile"):
            named = _header_entry(path, key)
            if named:
                needed.append(path.parent / Path(named.replace("\\", "/")).name)
    elif fmt == "eeglab":
        optional.append(path.with_suffix(".fdt"))  # data may also sit inside the .set
    for companion in needed:
        if not companion.exists():
            raise RecordingError(
                f"'{path}' needs its data file '{companion.name}', which is missing",
                hint=f"copy '{companion.name}' next to '{path.name}' (they belong together)",
            )
    for companion in needed + optional:
        if companion.is_file():
            check_pointer(companion)


# -- EDF / BDF ------------------------------------------------------------------------------
EDF_VERSION = b"0       "
BDF_VERSION = b"\xffBIOSEMI"
EDF_FIXED_BYTES = 256
EDF_SIGNAL_BYTES = 256  # per-signal header bytes
# per-signal header fields before "samples per record": label 16, transducer 80,
# physical dimension 8, physical min/max 8+8, digital min/max 8+8, prefiltering 80
EDF_SPR_OFFSET = 16 + 80 + 8 + 8 + 8 + 8 + 8 + 80


@dataclass(frozen=True)
class EdfLayout:
    """What an EDF/BDF header declares.

    Attributes
    ----------
    header_bytes : int
        Size of the header (256 × (n_signals + 1)).
    n_records : int
        Number of data records declared; -1 when the recorder never wrote it.
    record_duration_s : float
        Duration of one data record in seconds.
    n_signals : int
        Number of signals (annotation signals included).
    samples_per_record : tuple of int, shape (n_signals,)
        Samples of each signal in one record.
    sample_bytes : int
        2 (EDF) or 3 (BDF).
    """

    header_bytes: int
    n_records: int
    record_duration_s: float
    n_signals: int
    samples_per_record: tuple[int, ...]
    sample_bytes: int

    @property
    def record_bytes(self) -> int:
        """Bytes of one data record."""
        return sum(self.samples_per_record) * self.sample_bytes


@dataclass(frozen=True)
class EdfCheck:
    """Outcome of :func:`check_edf`.

    Attributes
    ----------
    layout : EdfLayout
        The parsed header.
    records_present : int
        Whole data records in the file.
    keep_records : int or None
        Crop the loaded data to this many records (the file is longer than its
        header declares); None to keep everything MNE reads.
    warnings : tuple of str
        What was recovered or lost.
    """

    layout: EdfLayout
    records_present: int
    keep_records: int | None
    warnings: tuple[str, ...] = ()


def _not_edf(path: Path, fmt: str, why: str) -> RecordingError:
    return RecordingError(
        f"'{path}' is not a readable {fmt.upper()} file: {why}",
        hint=f"the file is damaged or is not {fmt.upper()} at all (check where it came "
             "from, or its extension); get an intact copy",
    )


def _edf_number(path: Path, fmt: str, raw: bytes, what: str, kind: type) -> int | float:
    text = raw.decode("ascii", "replace").strip()
    try:
        return kind(text)
    except ValueError:
        raise _not_edf(path, fmt, f"header field '{what}' is {text!r}, not a number") from None


def read_edf_layout(path: Path, fmt: str) -> EdfLayout:
    """Parse the fixed and per-signal parts of an EDF/BDF header.

    Parameters
    ----------
    path : Path
        The file.
    fmt : {"edf", "bdf"}
        The format its extension says.

    Returns
    -------
    EdfLayout

    Raises
    ------
    RecordingError
        If the header is not EDF/BDF, is inconsistent, or is cut short.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        fixed = f.read(EDF_FIXED_BYTES)
        if len(fixed) < EDF_FIXED_BYTES:
            raise _not_edf(path, fmt, f"{size} bytes is too short for a header (256 bytes)")
        version = fixed[:8]
        if version.strip() == EDF_VERSION.strip():  # some writers pad "0" oddly
            version = EDF_VERSION
        if version not in (EDF_VERSION, BDF_VERSION):
            raise _not_edf(path, fmt, f"it starts with {version!r}, not "
                                      f"{EDF_VERSION!r} (EDF) or {BDF_VERSION!r} (BDF)")
        actual = "bdf" if version == BDF_VERSION else "edf"
        if actual != fmt:
            raise RecordingError(
                f"'{path}' holds {actual.upper()} data but is named .{fmt}",
                hint=f"rename it to '{path.with_suffix('.' + actual).name}'",
            )
        header_bytes = int(_edf_number(path, fmt, fixed[184:192], "header bytes", int))
        n_records = int(_edf_number(path, fmt, fixed[236:244], "number of records", int))
        duration = float(_edf_number(path, fmt, fixed[244:252], "record duration", float))
        n_signals = int(_edf_number(path, fmt, fixed[252:256], "number of signals", int))
        if n_signals < 1 or header_bytes != EDF_FIXED_BYTES + n_signals * EDF_SIGNAL_BYTES:
            raise _not_edf(path, fmt, f"the header declares {n_signals} signals and "
                                      f"{header_bytes} header bytes, which do not fit")
        if size < header_bytes:
            raise _not_edf(path, fmt, f"the file ({size} bytes) ends inside its "
                                      f"{header_bytes}-byte header")
        signals = f.read(header_bytes - EDF_FIXED_BYTES)
    start = n_signals * EDF_SPR_OFFSET
    spr = tuple(int(_edf_number(path, fmt, signals[start + 8 * i:start + 8 * (i + 1)],
                                f"samples per record of signal {i + 1}", int))
                for i in range(n_signals))
    if min(spr) < 0 or sum(spr) == 0 or duration < 0 or n_records < -1:
        raise _not_edf(path, fmt, f"the header declares {n_records} records of {duration} s "
                                  f"with {sum(spr)} samples each, which is impossible")
    return EdfLayout(header_bytes, n_records, duration, n_signals, spr,
                     3 if fmt == "bdf" else 2)


def _records_s(n: int, layout: EdfLayout) -> str:
    return f"{n} records ({n * layout.record_duration_s:g} s)"


def check_edf(path: Path, fmt: str) -> EdfCheck:
    """Compare the size an EDF/BDF header declares with the file's size.

    Parameters
    ----------
    path : Path
        The file.
    fmt : {"edf", "bdf"}
        Its format.

    Returns
    -------
    EdfCheck
        Whole records present, how many to keep, and warnings.

    Raises
    ------
    RecordingError
        If the header is not EDF/BDF or the file holds no whole data record.
    """
    layout = read_edf_layout(path, fmt)
    data_bytes = path.stat().st_size - layout.header_bytes
    present, leftover = divmod(data_bytes, layout.record_bytes)
    declared = layout.n_records
    if present == 0 or declared == 0:
        raise _not_edf(path, fmt, f"it holds no whole data record ({data_bytes} data bytes, "
                                  f"{layout.record_bytes} per record; {declared} declared)")
    tail = (f"; the last {leftover} bytes (part of record {present + 1}) were dropped"
            if leftover else "")
    warnings: list[str] = []
    keep: int | None = None
    if declared == -1:
        warnings.append(
            f"{path.name}: the header does not give the number of data records (-1: the "
            f"recorder did not close the file); loaded the {_records_s(present, layout)} "
            f"present{tail}")
    elif present < declared:
        lost = declared - present
        warnings.append(
            f"{path.name}: the file is shorter than its header says (recording cut short or "
            f"copy incomplete): {_records_s(declared, layout)} declared, "
            f"{_records_s(present, layout)} present; loaded those, "
            f"{_records_s(lost, layout)} are lost{tail}")
    elif present > declared or leftover:
        extra = data_bytes - declared * layout.record_bytes
        keep = declared if present > declared else None  # a partial record MNE skips itself
        warnings.append(
            f"{path.name}: the file has {extra} bytes after the {_records_s(declared, layout)} "
            "its header declares; loaded the declared records only and ignored the rest")
    return EdfCheck(layout, present, keep, tuple(warnings))


# -- XDF ------------------------------------------------------------------------------------
@dataclass
class XdfScan:
    """Outcome of :func:`scan_xdf`.

    Attributes
    ----------
    size : int
        File size in bytes.
    ranges : list of (int, int)
        Byte ranges ``[start, end)`` holding the magic and whole, valid chunks,
        in file order.
    streams : dict of int to str
        Stream id -> name, for the stream headers found.
    footers : set of int
        Stream ids that have a footer.
    truncated_at : int or None
        Start of the last chunk when the file ends in the middle of it.
    warnings : list of str
        What was skipped or is missing.
    """

    size: int
    ranges: list[tuple[int, int]] = field(default_factory=list)
    streams: dict[int, str] = field(default_factory=dict)
    footers: set[int] = field(default_factory=set)
    truncated_at: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the whole file is valid (pyxdf can read it as it is)."""
        return self.ranges == [(0, self.size)]

    def keep(self, start: int, end: int) -> None:
        """Add ``[start, end)`` to :attr:`ranges`, merging with the previous range."""
        if self.ranges and self.ranges[-1][1] == start:
            self.ranges[-1] = (self.ranges[-1][0], end)
        else:
            self.ranges.append((start, end))


class _Truncated(Exception):
    """The chunk runs past the end of the file."""


class _Corrupt(Exception):
    """The chunk is not valid XDF; the message says why.

    ``end`` is where the chunk ends by its length field, when that was readable.
    """

    end: int | None = None


class _Skip(Exception):
    """The chunk is whole but must not reach pyxdf; the message says why."""

    def __init__(self, why: str, end: int) -> None:
        super().__init__(why)
        self.end = end


@dataclass(frozen=True)
class _StreamLayout:
    name: str
    channel_count: int
    value_bytes: int | None  # None: strings


def _varlen_at(buf: mmap.mmap, pos: int, size: int) -> tuple[int, int]:
    """Read an XDF variable-length integer at ``pos``; return (value, next position)."""
    if pos >= size:
        raise _Truncated
    nbytes = buf[pos]
    if nbytes not in (1, 4, 8):
        raise _Corrupt(f"invalid length prefix {nbytes}")
    if pos + 1 + nbytes > size:
        raise _Truncated
    value = int.from_bytes(buf[pos + 1:pos + 1 + nbytes], "little")
    return value, pos + 1 + nbytes


def _parse_stream_header(content: bytes) -> _StreamLayout:
    try:
        info = ET.fromstring(content.decode("utf-8", "replace"))
        count = int(info.findtext("channel_count", "0"))
    except (ET.ParseError, ValueError) as exc:
        raise _Corrupt(f"unreadable stream header ({exc})") from None
    fmt = (info.findtext("channel_format") or "").strip()
    if count < 1 or (fmt != "string" and fmt not in XDF_VALUE_BYTES):
        raise _Corrupt(f"stream header with {count} channels of format '{fmt}'")
    return _StreamLayout(info.findtext("name") or "", count, XDF_VALUE_BYTES.get(fmt))


def _check_samples(buf: mmap.mmap, start: int, end: int, stream: _StreamLayout) -> None:
    """Check that a Samples chunk's size fits its sample count (no per-sample read)."""
    try:
        n, pos = _varlen_at(buf, start, end)
    except _Truncated:
        raise _Corrupt("its sample count runs past its end") from None
    rest = end - pos
    if stream.value_bytes is None:  # strings: >= 1 flag byte + 2 bytes per value each
        if rest < n * (1 + 2 * stream.channel_count):
            raise _Corrupt(f"{n} string samples cannot fit in {rest} bytes")
        return
    base = n * (1 + stream.channel_count * stream.value_bytes)
    # each sample: 1 flag byte, an optional 8-byte timestamp, the values
    if not (base <= rest <= base + 8 * n and (rest - base) % 8 == 0):
        raise _Corrupt(f"{n} samples of {stream.channel_count} channels do not fill "
                       f"{rest} bytes")
    if n and rest in (base, base + 8 * n):
        # every sample with a timestamp (LabRecorder) or none: the flag bytes sit at a
        # fixed stride; a damaged flag would make pyxdf lose its place in the file
        stride = rest // n
        flags = np.frombuffer(buf, dtype=np.uint8, count=rest, offset=pos)[::stride].copy()
        bad = np.flatnonzero(flags != (8 if rest > base else 0))
        if bad.size:
            raise _Corrupt(f"timestamp flag of sample {int(bad[0])} is {int(flags[bad[0]])}")


def _check_chunk(buf: mmap.mmap, pos: int, size: int, scan: XdfScan,
                 layouts: dict[int, _StreamLayout]) -> tuple[int, int | None]:
    """Validate the chunk at ``pos``; return (its end, orphan stream id or None)."""
    length, body = _varlen_at(buf, pos, size)
    end = body + length
    if length < 2:
        raise _Corrupt(f"chunk length {length}")
    if end > size:
        raise _Truncated
    try:
        return _check_content(buf, body, end, scan, layouts)
    except _Corrupt as exc:
        exc.end = end
        raise


def _plausible_chunk_at(buf: mmap.mmap, pos: int, size: int) -> bool:
    """True when a chunk seems to start at ``pos`` (or the file ends there)."""
    if pos == size:
        return True
    try:
        length, body = _varlen_at(buf, pos, size)
    except (_Truncated, _Corrupt):
        return False
    return length >= 2 and body + 2 <= size and 1 <= int.from_bytes(buf[body:body + 2],
                                                                     "little") <= 6


def _check_content(buf: mmap.mmap, body: int, end: int, scan: XdfScan,
                   layouts: dict[int, _StreamLayout]) -> tuple[int, int | None]:
    """Validate a chunk's tag and content (``body`` is where its tag starts)."""
    length = end - body
    tag = int.from_bytes(buf[body:body + 2], "little")
    if tag == 1:
        try:
            ET.fromstring(buf[body + 2:end])
        except ET.ParseError:  # pyxdf would stop on it; nothing in it is needed
            raise _Skip("unreadable file header", end) from None
        return end, None
    if tag == 5:
        if buf[body + 2:end] != XDF_BOUNDARY:
            raise _Corrupt("damaged boundary chunk")
        return end, None
    if tag not in (2, 3, 4, 6) or length < 6:
        raise _Corrupt(f"tag {tag}, length {length}")
    sid = int.from_bytes(buf[body + 2:body + 6], "little")
    content = body + 6
    if tag == 2:
        if sid in layouts:  # pyxdf would start that stream over, dropping its samples
            raise _Skip(f"a second header for stream id {sid}", end)
        layouts[sid] = _parse_stream_header(buf[content:end])
        scan.streams[sid] = layouts[sid].name
        return end, None
    if sid not in layouts:
        return end, sid  # a stream whose header is gone: pyxdf would fail on it
    if tag == 3:
        _check_samples(buf, content, end, layouts[sid])
    elif tag == 4 and length != 22:
        raise _Corrupt(f"clock offset chunk of length {length}")
    elif tag == 6:
        try:
            ET.fromstring(buf[content:end])
        except ET.ParseError:
            raise _Corrupt("unreadable stream footer") from None
        scan.footers.add(sid)
    return end, None


def scan_xdf(path: Path, *, shown: Path | None = None) -> XdfScan:
    """Walk the chunks of an (uncompressed) XDF file and find what can be read.

    Only chunk headers, stream headers/footers and sample counts are read; the
    samples themselves are left to pyxdf.

    Parameters
    ----------
    path : Path
        The file.
    shown : Path, optional
        The name to give in errors (the compressed original of a temporary file).

    Returns
    -------
    XdfScan
        Readable byte ranges and warnings about what was skipped.

    Raises
    ------
    RecordingError
        If the file does not start with ``XDF:``.
    """
    size = path.stat().st_size
    scan = XdfScan(size)
    layouts: dict[int, _StreamLayout] = {}
    orphans: dict[int, int] = {}
    corrupt: list[str] = []
    with open(path, "rb") as f:
        check_xdf_magic(shown or path, f.read(4))  # before mmap, which refuses empty files
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        scan.keep(0, 4)
        pos = 4
        while pos < size:
            try:
                end, orphan = _check_chunk(buf, pos, size, scan, layouts)
            except _Truncated:
                # a boundary further on means the length is wrong, not the file short
                if buf.find(XDF_BOUNDARY, pos) == -1:
                    scan.truncated_at = pos
                    break
                message, pos = _resync(buf, pos, size, "its length runs past the next "
                                                       "boundary chunk")
                corrupt.append(message)
            except _Corrupt as exc:
                if exc.end is not None and _plausible_chunk_at(buf, exc.end, size):
                    # the length field is evidently intact: only this chunk is lost
                    corrupt.append(f"chunk at byte {pos} is corrupted ({exc}); skipped that "
                                   f"chunk alone ({exc.end - pos} bytes)")
                    pos = exc.end
                    continue
                message, pos = _resync(buf, pos, size, str(exc))
                corrupt.append(message)
            except _Skip as exc:
                corrupt.append(f"chunk at byte {pos} ({exc}) was skipped")
                pos = exc.end
            else:
                if orphan is None:
                    scan.keep(pos, end)
                else:
                    orphans[orphan] = orphans.get(orphan, 0) + 1
                pos = end
    scan.warnings.extend(corrupt[:MAX_LISTED])
    if len(corrupt) > MAX_LISTED:
        scan.warnings.append(f"... and {len(corrupt) - MAX_LISTED} more corrupted chunks")
    if orphans:
        scan.warnings.append(
            f"{sum(orphans.values())} chunks of stream ids {sorted(orphans)} were dropped: "
            "their stream header is missing (lost to corruption?)")
    no_footer = [name for sid, name in scan.streams.items() if sid not in scan.footers]
    footers = f"footers missing for streams {_quoted(no_footer)}" if no_footer else ""
    if scan.truncated_at is not None:
        scan.warnings.append(
            f"file ends mid-chunk at byte {size} (recording cut short?): the incomplete last "
            f"chunk (from byte {scan.truncated_at}, {size - scan.truncated_at} bytes) was "
            "dropped" + (f"; {footers}" if footers else ""))
    elif footers:
        scan.warnings.append(f"{footers} (the recorder did not close the file, or they were "
                             "damaged); the samples were loaded without them")
    return scan


def _quoted(names: Sequence[str]) -> str:
    return _listing([f"'{n}'" for n in names])


def _resync(buf: mmap.mmap, pos: int, size: int, why: str) -> tuple[str, int]:
    """Find where to resume after the bad chunk at ``pos``: after the next Boundary chunk.

    Returns
    -------
    message : str
        What was skipped.
    resume : int
        Byte to resume at (``size`` when no boundary follows).
    """
    found = buf.find(XDF_BOUNDARY, pos + 1)
    if found == -1:
        return (f"chunk at byte {pos} is corrupted ({why}) and no boundary chunk follows: "
                f"the rest of the file ({size - pos} bytes) was skipped"), size
    resume = found + len(XDF_BOUNDARY)
    return (f"chunk at byte {pos} is corrupted ({why}); skipped {resume - pos} bytes to the "
            f"next boundary chunk (byte {found}): the samples in between are lost"), resume


def check_xdf_magic(path: Path, head: bytes) -> None:
    """Raise unless ``head`` (the first 4 bytes) is the XDF magic ``XDF:``.

    Raises
    ------
    RecordingError
        Naming the file and what it starts with.
    """
    if head != XDF_MAGIC:
        raise RecordingError(
            f"'{path}' is not an XDF file: it starts with {head!r}, not {XDF_MAGIC!r}",
            hint="the file is damaged or is another format with an .xdf name; check where "
                 "it came from",
        )


def decompress_gzip(path: Path, target: Path) -> str | None:
    """Decompress a gzip file (``.xdfz``, ``.xdf.gz``) into ``target``, as far as it goes.

    Parameters
    ----------
    path : Path
        The compressed file.
    target : Path
        Where to write the decompressed bytes.

    Returns
    -------
    str or None
        A warning when the compressed data end early or are damaged (what could
        be decompressed is in ``target``), else None.

    Raises
    ------
    RecordingError
        If nothing can be decompressed (not gzip at all).
    """
    # zlib rather than gzip.open: a stream cut short still yields every byte before the cut
    written = 0
    problem: str | None = None
    inflate = zlib.decompressobj(GZIP_WBITS)
    with open(path, "rb") as source, open(target, "wb") as out:
        while problem is None and (pending := source.read(1 << 20)):
            while pending:
                try:
                    block = inflate.decompress(pending)
                except zlib.error as exc:
                    problem = str(exc)
                    break
                out.write(block)
                written += len(block)
                pending = b""
                if inflate.eof:  # end of one gzip member; another may follow
                    pending = inflate.unused_data
                    inflate = zlib.decompressobj(GZIP_WBITS) if pending else inflate
        if problem is None and not inflate.eof:
            problem = "the compressed stream ends before its end marker"
    if problem is None:
        return None
    if written == 0:
        raise RecordingError(f"'{path}' is not a readable gzip file: {problem}",
                             hint="the file is damaged or not compressed (rename it to .xdf "
                                  "if it is a plain XDF file)")
    return (f"{path.name}: the compressed data end early or are damaged after {written} "
            f"decompressed bytes ({problem}); what came before is loaded")


class _RangesFile(io.RawIOBase):
    """Read-only file presenting byte ranges of another file as one contiguous file."""

    def __init__(self, path: Path, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._ranges = [r for r in ranges if r[1] > r[0]]
        self._starts: list[int] = []
        total = 0
        for start, end in self._ranges:
            self._starts.append(total)
            total += end - start
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            start, end = self._ranges[i]
            offset = self._pos - self._starts[i]
            n = min(len(out) - done, end - start - offset)
            self._file.seek(start + offset)
            got = self._file.readinto(out[done:done + n])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        self._file.close()
        super().close()


def open_ranges(path: Path, ranges: Sequence[tuple[int, int]]) -> io.BufferedReader:
    """Open the byte ``ranges`` of ``path`` as one binary file (no copy).

    Parameters
    ----------
    path : Path
        The file.
    ranges : sequence of (int, int)
        ``[start, end)`` byte ranges, in order.

    Returns
    -------
    io.BufferedReader
        A seekable binary file; close it when done.
    """
    return io.BufferedReader(_RangesFile(path, ranges), buffer_size=1 << 20)


# -- checks on parsed data ------------------------------------------------------------------
def nonfinite_warning(name: str, data: np.ndarray,
                      channel_names: Sequence[str]) -> str | None:
    """Say how many NaN/Inf values a numeric stream holds, and in which channels.

    Parameters
    ----------
    name : str
        Stream name.
    data : ndarray, shape (n_samples, n_channels)
        The samples.
    channel_names : sequence of str, shape (n_channels,)
        Channel labels.

    Returns
    -------
    str or None
        The warning, or None when every value is finite.
    """
    bad = ~np.isfinite(data)
    per_channel = np.count_nonzero(bad, axis=0)
    total = int(per_channel.sum())
    if total == 0:
        return None
    n_nan = int(np.count_nonzero(np.isnan(data)))
    channels = [f"{channel_names[i]} ({per_channel[i]})" for i in np.flatnonzero(per_channel)]
    return (f"stream '{name}' holds {total} non-finite values ({n_nan} NaN, {total - n_nan} "
            f"Inf) in {len(channels)} channels: {_listing(channels)}; kept as recorded (the "
            "runtime's chunk checks handle them downstream)")


def rate_warning(name: str, timestamps: np.ndarray, nominal: float) -> str | None:
    """Warn when a regular stream's effective rate is far from its nominal rate.

    Parameters
    ----------
    name : str
        Stream name.
    timestamps : ndarray, shape (n_samples,)
        Sample times in seconds.
    nominal : float
        Nominal rate in Hz (0: irregular, never warned about).

    Returns
    -------
    str or None
        The warning, or None when within :data:`RATE_TOLERANCE` (10 %, as pyxdf).
    """
    if nominal <= 0 or timestamps.shape[0] < 2:
        return None
    span = float(timestamps[-1] - timestamps[0])
    if span <= 0:
        return None
    effective = (timestamps.shape[0] - 1) / span
    if abs(effective - nominal) / nominal <= RATE_TOLERANCE:
        return None
    missing = round(span * nominal) + 1 - timestamps.shape[0]
    why = (f"about {missing} samples missing: dropouts" if missing > 0
           else "the device clock runs off its nominal rate")
    return (f"stream '{name}': effective sampling rate {effective:.2f} Hz differs from the "
            f"nominal {nominal:g} Hz by more than {RATE_TOLERANCE:.0%} ({why}); timestamps "
            "are kept as recorded")


def order_warning(name: str, timestamps: np.ndarray) -> str | None:
    """Warn when timestamps go backwards (replay sends samples in file order).

    Parameters
    ----------
    name : str
        Stream name.
    timestamps : ndarray, shape (n_samples,)
        Sample times in seconds.

    Returns
    -------
    str or None
    """
    steps = np.diff(timestamps)
    backwards = int(np.count_nonzero(steps < 0))
    if backwards == 0:
        return None
    worst = -float(steps.min())
    why = ("jittery chunk timestamps?" if worst < BACKWARDS_JITTER_S
           else "a clock reset, or damaged timestamps?")
    return (f"stream '{name}': timestamps go backwards {backwards} times (by up to "
            f"{worst * 1e3:.1f} ms: {why}); samples are kept in file order")
