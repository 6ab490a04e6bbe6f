"""Tests of ``repair_xdf``: files cut at many points, damaged in the middle, LabRecorder's.

Files are written with :class:`XdfWriter` (a float32 multi-channel stream, a
string marker stream, a float64 stream, clock offsets), then "crashed" by
cutting copies at chosen bytes. After a repair, pyxdf must read a footer for
every stream whose sample count and first/last timestamps are those of the
samples it reads. Chunks are located by a small walker written here, apart
from the module under test.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pyxdf = pytest.importorskip("pyxdf")

from bci_runtime import xdf_repair  # noqa: E402
from bci_runtime.cli import main as cli_main  # noqa: E402
from bci_runtime.errors import ConfigError, RunError  # noqa: E402
from bci_runtime.xdf_repair import RepairReport, repair_xdf  # noqa: E402
from bci_runtime.xdf_writer import BOUNDARY_UUID, XdfWriter, _chunk, _varlen  # noqa: E402

LABRECORDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "xdf"  # ../shared/data
TAG_SAMPLES, TAG_CLOCK, TAG_BOUNDARY, TAG_FOOTER = 3, 4, 5, 6


# ------------------------------------------------------------------ helpers

def load(path: Path) -> dict[int, dict]:
    """pyxdf streams keyed by stream id, raw timestamps."""
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False,
                                dejitter_timestamps=False)
    return {s["info"]["stream_id"]: s for s in streams}


def walk(data: bytes) -> list[tuple[int, int, int]]:
    """(start, end, tag) of every complete chunk after the magic."""
    out, pos = [], 4
    while pos < len(data):
        nb = data[pos]
        length = int.from_bytes(data[pos + 1:pos + 1 + nb], "little")
        tag = int.from_bytes(data[pos + 1 + nb:pos + 3 + nb], "little")
        end = pos + 1 + nb + length
        if end > len(data):
            break
        out.append((pos, end, tag))
        pos = end
    return out


def samples_header(data: bytes, start: int) -> tuple[int, int, int]:
    """(stream id, sample count, offset of the first sample) of the Samples chunk at start."""
    body = start + 1 + data[start] + 2
    sid = int.from_bytes(data[body:body + 4], "little")
    nb = data[body + 4]
    n = int.from_bytes(data[body + 5:body + 5 + nb], "little")
    return sid, n, body + 5 + nb


def check_footers(path: Path) -> dict[int, dict]:
    """Every stream has a footer that matches the samples pyxdf reads; the streams."""
    streams = load(path)
    for sid, s in streams.items():
        footer = s["footer"]["info"]
        ts = s["time_stamps"]
        assert int(footer["sample_count"][0]) == len(ts), sid
        if len(ts):
            assert float(footer["first_timestamp"][0]) == ts[0], sid
            assert float(footer["last_timestamp"][0]) == ts[-1], sid
        offsets = footer["clock_offsets"][0]
        n_offsets = len(offsets["offset"]) if offsets else 0
        assert n_offsets == len(s["clock_times"]), sid
    return streams


def same_prefix(repaired: dict[int, dict], original: dict[int, dict]) -> None:
    """The repaired file holds the first samples of each original stream, unchanged."""
    for sid, s in repaired.items():
        n = len(s["time_stamps"])
        np.testing.assert_array_equal(s["time_stamps"], original[sid]["time_stamps"][:n])
        if isinstance(s["time_series"], list):
            assert s["time_series"] == original[sid]["time_series"][:n]
        else:
            np.testing.assert_array_equal(s["time_series"], original[sid]["time_series"][:n])


class Recording:
    """A complete file and the byte where its footers start."""

    def __init__(self, path: Path, footer_start: int, ids: dict[str, int]) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.footer_start = footer_start
        self.ids = ids
        self.streams = load(path)

    def cut(self, tmp: Path, size: int, name: str = "cut.xdf") -> Path:
        out = tmp / name
        out.write_bytes(self.data[:size])
        return out


def record(path: Path, *, boundary_interval_s: float = 0.0, rounds: int = 12) -> Recording:
    """Three interleaved streams and clock offsets; return the complete file."""
    rng = np.random.default_rng(1234)
    w = XdfWriter(path, fsync_interval_s=math.inf, boundary_interval_s=boundary_interval_s)
    eeg = w.add_stream(name="EEG", type="EEG", channel_count=6, srate=250.0,
                       channel_format="float32", channel_labels=[f"c{i}" for i in range(6)])
    mrk = w.add_stream(name="Markers", type="Markers", channel_count=1, srate=0.0,
                       channel_format="string")
    dec = w.add_stream(name="Decoder", type="Control", channel_count=2, srate=50.0,
                       channel_format="double64")
    t = 100.0
    for r in range(rounds):
        n = int(rng.integers(5, 40))
        w.write_samples(eeg, rng.standard_normal((n, 6)).astype(np.float32),
                        t + np.arange(n) / 250.0)
        if r % 3 == 0:
            w.write_samples(mrk, [[f"cue-{r}"], ["é✓"]], [t + 0.01, t + 0.02])
        w.write_samples(dec, rng.standard_normal((3, 2)), t + np.arange(3) / 50.0)
        if r % 4 == 1:
            w.write_clock_offset(eeg, t, -0.001 * r)
            w.write_clock_offset(dec, t, 0.002 * r)
        t += n / 250.0
    w.sync()
    footer_start = path.stat().st_size
    w.close()
    return Recording(path, footer_start, {"EEG": eeg, "Markers": mrk, "Decoder": dec})


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record(tmp_path_factory.mktemp("xdf") / "complete.xdf")


@pytest.fixture(scope="module")
def rec_no_boundaries(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record(tmp_path_factory.mktemp("xdf") / "complete.xdf", boundary_interval_s=math.inf)


def chunks_of(rec: Recording, tag: int) -> list[tuple[int, int, int]]:
    return [c for c in walk(rec.data[:rec.footer_start]) if c[2] == tag]


# ------------------------------------------------------------------ cut tails (in place)

def cut_points(rec: Recording) -> dict[str, int]:
    chunks = walk(rec.data[:rec.footer_start])
    samples = [c for c in chunks if c[2] == TAG_SAMPLES]
    boundaries = [c for c in chunks if c[2] == TAG_BOUNDARY]
    clocks = [c for c in chunks if c[2] == TAG_CLOCK]
    headers = [c for c in chunks if c[2] == 2]
    mid = samples[len(samples) // 2]
    string_chunk = next(c for c in samples
                        if samples_header(rec.data, c[0])[0] == rec.ids["Markers"])
    footers = [c for c in walk(rec.data) if c[2] == TAG_FOOTER]
    return {
        "before_footers": rec.footer_start,
        "mid_samples_chunk": (mid[0] + mid[1]) // 2,
        "mid_string_chunk": string_chunk[1] - 3,
        "after_boundary": boundaries[-3][1],
        "mid_clock_offset": clocks[-1][0] + 10,
        "one_byte_of_chunk": mid[0] + 1,
        "inside_tag": mid[0] + 1 + rec.data[mid[0]] + 1,  # length, then 1 of 2 tag bytes
        "mid_second_header": (headers[1][0] + headers[1][1]) // 2,
        "mid_second_footer": (footers[1][0] + footers[1][1]) // 2,
    }


@pytest.mark.parametrize("where", [
    "before_footers", "mid_samples_chunk", "mid_string_chunk", "after_boundary",
    "mid_clock_offset", "one_byte_of_chunk", "inside_tag", "mid_second_header",
    "mid_second_footer",
])
def test_cut_file_is_repaired_in_place(rec: Recording, tmp_path: Path, where: str) -> None:
    size = cut_points(rec)[where]
    path = rec.cut(tmp_path, size)
    if where in ("mid_clock_offset", "inside_tag"):
        with pytest.raises(struct.error):  # pyxdf itself cannot read these before the repair
            load(path)
    good_end = max([c[1] for c in walk(rec.data[:size])] + [4])
    report = repair_xdf(path)
    assert report.in_place and report.output == path and not report.skipped
    assert report.truncated_bytes == size - good_end
    assert report.original_bytes == size and report.output_bytes == path.stat().st_size
    streams = check_footers(path)
    same_prefix(streams, rec.streams)
    had = {s.stream_id: s.had_footer for s in report.streams}
    if where == "mid_second_footer":  # the first footer survived and is kept as is
        assert sum(had.values()) == 1
    else:
        assert not any(had.values())
    for s in report.streams:
        assert s.samples == len(streams[s.stream_id]["time_stamps"])
    summary = report.describe()[0]
    assert summary.startswith("repaired")
    if size > good_end:
        assert f"{size - good_end} byte{'s' * (size - good_end > 1)} of a partial" in summary
    # a second run finds nothing to do and leaves the bytes alone
    before = path.read_bytes()
    again = repair_xdf(path)
    assert not again.changed and path.read_bytes() == before
    assert again.describe()[0].startswith("nothing to repair")


def test_cut_before_footers_gives_back_the_writers_footers(rec: Recording,
                                                            tmp_path: Path) -> None:
    """Same samples, same offsets: the repaired file is byte for byte what close() wrote."""
    path = rec.cut(tmp_path, rec.footer_start)
    report = repair_xdf(path)
    assert report.footers_written == 3 and report.truncated_bytes == 0
    assert path.read_bytes() == rec.data
    counts = {s.name: s.samples for s in report.streams}
    assert counts == {name: len(rec.streams[sid]["time_stamps"])
                      for name, sid in rec.ids.items()}
    assert [s.clock_offsets for s in report.streams] == [3, 0, 3]


def test_complete_file_is_left_unchanged(rec: Recording, tmp_path: Path) -> None:
    path = tmp_path / "complete.xdf"
    shutil.copyfile(rec.path, path)
    mtime = path.stat().st_mtime_ns
    report = repair_xdf(path)
    assert path.read_bytes() == rec.data and path.stat().st_mtime_ns == mtime
    assert not report.changed and report.output is None and report.footers_written == 0
    assert report.describe()[0] == (f"nothing to repair: '{path}' is complete "
                                    "(footers for all 3 streams)")
    assert all(s.had_footer for s in report.streams)


def test_zero_filled_tail_is_cut_in_place(rec: Recording, tmp_path: Path) -> None:
    """After a power loss the end of a file can hold zeros instead of data."""
    path = tmp_path / "zeros.xdf"
    path.write_bytes(rec.data[:rec.footer_start] + bytes(4096))
    report = repair_xdf(path)
    assert report.in_place and report.truncated_bytes == 4096
    assert "zeros" in report.describe()[0]
    assert path.read_bytes() == rec.data


def test_timestamps_deduced_like_pyxdf(rec: Recording, tmp_path: Path) -> None:
    """Samples stored without a timestamp (LabRecorder does it) get previous + 1/srate."""
    eeg, mrk = rec.ids["EEG"], rec.ids["Markers"]
    rng = np.random.default_rng(5)

    def numeric(stamps: list[float | None]) -> bytes:
        body = struct.pack("<I", eeg) + _varlen(len(stamps))
        for t in stamps:
            body += b"\x00" if t is None else b"\x08" + struct.pack("<d", t)
            body += rng.standard_normal(6).astype("<f4").tobytes()
        return _chunk(TAG_SAMPLES, body)

    def strings(stamps: list[float | None]) -> bytes:
        body = struct.pack("<I", mrk) + _varlen(len(stamps))
        for t in stamps:
            body += b"\x00" if t is None else b"\x08" + struct.pack("<d", t)
            body += _varlen(1) + b"x"
        return _chunk(TAG_SAMPLES, body)

    extra = (numeric([None, None, None])  # all deduced: the numpy accumulate path
             + numeric([500.0, None, None, 501.0, None])  # mixed: the loop
             + numeric([600.0, 600.004])  # all stamped: the structured-dtype path
             + strings([None, 700.0, None]))
    path = tmp_path / "deduced.xdf"
    path.write_bytes(rec.data[:rec.footer_start] + extra)
    repair_xdf(path)
    streams = check_footers(path)
    ts = streams[eeg]["time_stamps"]
    last = rec.streams[eeg]["time_stamps"][-1]
    assert list(ts[-10:-7]) == [last + 0.004, last + 0.004 + 0.004, last + 0.004 + 0.004 + 0.004]
    np.testing.assert_allclose(ts[-7:-2], [500.0, 500.004, 500.008, 501.0, 501.004])
    assert list(ts[-2:]) == [600.0, 600.004]
    mts = streams[mrk]["time_stamps"]
    assert mts[-3] == mts[-4] and mts[-2] == mts[-1] == 700.0  # srate 0: no increment


# ------------------------------------------------------------------ damage in the middle

def test_unknown_tag_in_the_middle_goes_to_a_new_file(rec: Recording, tmp_path: Path) -> None:
    samples = chunks_of(rec, TAG_SAMPLES)
    bad = samples[len(samples) // 2]
    data = bytearray(rec.data[:rec.footer_start])
    nb = data[bad[0]]
    data[bad[0] + 1 + nb] = 0x77  # tag 3 -> 0x77
    path = tmp_path / "damaged.xdf"
    path.write_bytes(bytes(data))
    report = repair_xdf(path)
    out = tmp_path / "damaged.repaired.xdf"
    assert report.output == out and not report.in_place
    assert path.read_bytes() == bytes(data)  # the original is left alone
    next_boundary = min(c[0] for c in chunks_of(rec, TAG_BOUNDARY) if c[0] > bad[0])
    (skipped,) = report.skipped
    assert (skipped.start, skipped.end, skipped.resynchronized) == (bad[0], next_boundary, True)
    assert "unknown chunk tag 119" in skipped.reason
    assert out.stat().st_size == report.output_bytes > len(data) - skipped.size
    lines = report.describe()
    assert lines[0].startswith(f"repaired 3 streams into '{out}'")
    assert f"{skipped.size} bytes of damaged data skipped" in lines[0]
    assert any("left unchanged" in line for line in lines)
    streams = check_footers(out)
    # exactly the samples of the damaged chunk are lost
    sid, lost, _ = samples_header(rec.data, bad[0])
    for k, s in streams.items():
        expected = len(rec.streams[k]["time_stamps"]) - (lost if k == sid else 0)
        assert len(s["time_stamps"]) == expected
    # the .repaired.xdf is never overwritten
    with pytest.raises(ConfigError, match="already exists"):
        repair_xdf(path)


def test_impossible_length_without_boundary_after_keeps_the_start(
        rec_no_boundaries: Recording, tmp_path: Path) -> None:
    rec = rec_no_boundaries
    clock = chunks_of(rec, TAG_CLOCK)[1]
    data = bytearray(rec.data[:rec.footer_start])
    data[clock[0] + 1] = 40  # a ClockOffset chunk is always 22 bytes long
    path = tmp_path / "damaged.xdf"
    path.write_bytes(bytes(data))
    report = repair_xdf(path)
    (skipped,) = report.skipped
    assert skipped.start == clock[0] and skipped.end == len(data)
    assert not skipped.resynchronized and "impossible length 40" in skipped.reason
    assert any("the rest of the file is lost" in line for line in report.describe())
    assert report.output is not None and report.output.name == "damaged.repaired.xdf"
    same_prefix(check_footers(report.output), rec.streams)
    assert report.output.read_bytes()[:clock[0]] == bytes(data[:clock[0]])


def test_damaged_samples_chunk_is_skipped(rec: Recording, tmp_path: Path) -> None:
    """A timestamp byte that is neither 0 nor 8: the chunk does not add up."""
    samples = chunks_of(rec, TAG_SAMPLES)
    bad = samples[3]
    data = bytearray(rec.data)  # complete file, footers included
    data[samples_header(rec.data, bad[0])[2]] = 0x05  # first sample's timestamp byte
    path = tmp_path / "bad-sample.xdf"
    path.write_bytes(bytes(data))
    report = repair_xdf(path)
    assert report.skipped[0].start == bad[0] and "timestamp byte" in report.skipped[0].reason
    # the footers were present: the old ones stay, but they no longer match the samples
    assert all(s.had_footer for s in report.streams) and report.footers_written == 0
    assert report.output is not None and report.output.exists()
    assert load(report.output)  # readable


@pytest.mark.parametrize(("stream", "reason"), [
    ("Decoder", "does not hold 3 samples"),  # numeric: the count cannot fit that length
    ("Markers", "longer than the rest of the file, yet valid chunks follow"),
])
def test_huge_damaged_length_with_data_after_is_not_a_tail(
        rec: Recording, tmp_path: Path, stream: str, reason: str) -> None:
    """A length field that points far past the end, with intact chunks after: corruption."""
    bad = next(c for c in chunks_of(rec, TAG_SAMPLES)
               if samples_header(rec.data, c[0])[0] == rec.ids[stream])
    sid, n, _ = samples_header(rec.data, bad[0])
    # same chunk, its length rewritten as an 8-byte varlen of 2**40
    body = rec.data[bad[0] + 1 + rec.data[bad[0]]:bad[1]]
    damaged = b"\x08" + (2**40).to_bytes(8, "little") + body
    path = tmp_path / "huge.xdf"
    path.write_bytes(rec.data[:bad[0]] + damaged + rec.data[bad[1]:rec.footer_start])
    report = repair_xdf(path)
    (skipped,) = report.skipped
    assert skipped.start == bad[0] and skipped.resynchronized and reason in skipped.reason
    assert report.output is not None
    streams = check_footers(report.output)
    assert len(streams[sid]["time_stamps"]) == len(rec.streams[sid]["time_stamps"]) - n


def test_small_read_window(rec: Recording, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads and searches that straddle the read-ahead window give the same result."""
    samples = chunks_of(rec, TAG_SAMPLES)
    data = bytearray(rec.data[:rec.footer_start - 3])
    data[samples[5][0] + 1 + data[samples[5][0]]] = 0x99
    expected = {}
    for window in (1 << 20, 17):
        monkeypatch.setattr(xdf_repair._Reader, "_WINDOW", window)
        path = tmp_path / f"w{window}.xdf"
        path.write_bytes(bytes(data))
        report = repair_xdf(path)
        assert report.output is not None
        expected[window] = (report.output.read_bytes(), report.skipped, report.truncated_bytes)
    assert expected[17] == expected[1 << 20]


def test_file_shrinking_during_the_scan_is_refused(rec: Recording, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = rec.cut(tmp_path, rec.footer_start)
    monkeypatch.setattr(xdf_repair._Reader, "_WINDOW", 64)
    real_chunk = xdf_repair._Scanner._chunk

    def chunk_then_shrink(self: Any, pos: int) -> int:
        os.truncate(path, 1000)  # another program cuts the file under our feet
        return real_chunk(self, pos)

    monkeypatch.setattr(xdf_repair._Scanner, "_chunk", chunk_then_shrink)
    with pytest.raises(ConfigError, match="got shorter"):
        repair_xdf(path)


# ------------------------------------------------------------------ crash safety of the repair

def test_failed_footer_write_leaves_a_readable_file(rec: Recording, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mid = chunks_of(rec, TAG_SAMPLES)[-2]
    path = rec.cut(tmp_path, (mid[0] + mid[1]) // 2)
    real_write = os.write

    def half_then_enospc(fd: int, buf: Any) -> int:
        if len(buf) > 8:
            return real_write(fd, bytes(buf[:len(buf) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(RunError, match="No space left") as info:
        repair_xdf(path)
    assert "run the repair again" in (info.value.hint or "")
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == mid[0]  # cut back to the last complete chunk
    assert load(path)  # and readable
    assert repair_xdf(path).footers_written == 3
    check_footers(path)


def test_file_changed_during_the_repair_is_refused(rec: Recording, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = rec.cut(tmp_path, rec.footer_start)
    real_run = xdf_repair._Scanner.run

    def run_then_grow(self: Any) -> Any:
        result = real_run(self)
        with open(path, "ab") as f:  # a recorder still writing
            f.write(_chunk(TAG_BOUNDARY, BOUNDARY_UUID))
        return result

    monkeypatch.setattr(xdf_repair._Scanner, "run", run_then_grow)
    with pytest.raises(ConfigError, match="changed while") as info:
        repair_xdf(path)
    assert "recorder" in (info.value.hint or "")


# ------------------------------------------------------------------ errors

def test_not_an_xdf_file(tmp_path: Path) -> None:
    for name, content in (("notes.xdf", b"hello world"), ("empty.xdf", b""),
                          ("short.xdf", b"XD")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="is not an XDF file") as info:
            repair_xdf(path)
        assert str(path) in str(info.value) and "XDF:" in (info.value.hint or "")
        assert path.read_bytes() == content
    gz = tmp_path / "rec.xdfz"
    gz.write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ConfigError, match="not an XDF file") as info:
        repair_xdf(gz)
    assert "gunzip" in (info.value.hint or "")


def test_missing_unreadable_and_read_only_files(rec: Recording, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        repair_xdf(tmp_path / "missing.xdf")
    with pytest.raises(ConfigError, match="not a regular file"):
        repair_xdf(tmp_path)
    path = rec.cut(tmp_path, rec.footer_start)
    real_open = os.open

    def deny(mode: int) -> Any:
        def fake_open(p: Any, flags: int, *args: Any) -> int:
            if Path(p) == path and flags & (os.O_RDWR | os.O_WRONLY | os.O_RDONLY) == mode:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(p, flags, *args)
        return fake_open

    # root reads everything, so the permission errors are simulated
    monkeypatch.setattr(os, "open", deny(os.O_RDONLY))
    with pytest.raises(ConfigError, match="not readable") as info:
        repair_xdf(path)
    assert "chmod" in (info.value.hint or "")
    monkeypatch.setattr(os, "open", deny(os.O_RDWR))
    with pytest.raises(ConfigError, match="not writable") as info:
        repair_xdf(path)
    assert "chmod" in (info.value.hint or "")
    assert path.read_bytes() == rec.data[:rec.footer_start]


def test_file_without_stream_header(rec: Recording, tmp_path: Path) -> None:
    first_header = next(c for c in walk(rec.data) if c[2] == 2)
    path = rec.cut(tmp_path, first_header[0] + 10)  # file header + a partial stream header
    with pytest.raises(ConfigError, match="no StreamHeader"):
        repair_xdf(path)
    assert path.stat().st_size == first_header[0] + 10


# ------------------------------------------------------------------ LabRecorder and the CLI

@pytest.mark.parametrize("name", ["labrecorder_openbci_3class.xdf",
                                  "labrecorder_openbci_dropouts.xdf"])
@pytest.mark.parametrize("where", ["at_footers", "mid_samples"])
def test_labrecorder_file(tmp_path: Path, name: str, where: str) -> None:
    src = LABRECORDER / name
    if not src.is_file():
        pytest.skip(f"{src} not available")
    data = src.read_bytes()
    chunks = walk(data)
    footer_start = min(c[0] for c in chunks if c[2] == TAG_FOOTER)
    last_samples = [c for c in chunks if c[2] == TAG_SAMPLES][-1]
    size = (footer_start if where == "at_footers"
            else last_samples[0] + (last_samples[1] - last_samples[0]) // 3)
    path = tmp_path / name
    path.write_bytes(data[:size])
    report = repair_xdf(path)
    assert report.in_place and report.footers_written == 2
    original = load(src)
    repaired = check_footers(path)
    same_prefix(repaired, original)
    counts = {sid: len(s["time_stamps"]) for sid, s in repaired.items()}
    if where == "at_footers":  # nothing lost: every sample pyxdf reads in the original
        assert counts == {sid: len(s["time_stamps"]) for sid, s in original.items()}
    else:
        sid = samples_header(data, last_samples[0])[0]
        assert counts[sid] < len(original[sid]["time_stamps"])
        assert report.truncated_bytes == size - last_samples[0]


def test_bci_record_repair_command(rec: Recording, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = rec.cut(tmp_path, rec.footer_start - 5)
    assert cli_main(["record", "repair", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("repaired 3 streams: footers written, ")
    check_footers(path)
    assert cli_main(["record", "repair", str(path), "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and reply["path"] == str(path) and not reply["changed"]
    assert [s["name"] for s in reply["streams"]] == ["EEG", "Markers", "Decoder"]
    assert reply["lines"][0].startswith("nothing to repair")
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"nope")
    assert cli_main(["record", "repair", str(bad)]) == 2
    assert "not an XDF file" in capsys.readouterr().err


def test_report_as_dict_is_json_ready(rec: Recording, tmp_path: Path) -> None:
    path = rec.cut(tmp_path, rec.footer_start - 5)
    report = repair_xdf(path)
    assert isinstance(report, RepairReport)
    d = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert d["in_place"] and d["output"] == str(path) and d["footers_written"] == 3
    assert d["truncated_bytes"] == report.truncated_bytes > 0
    assert d["streams"][0]["samples"] == report.streams[0].samples
    assert d["streams"][0]["first_timestamp"] == report.streams[0].first_timestamp
