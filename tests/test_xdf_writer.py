"""Tests of the streaming XDF writer: round trips through pyxdf, crash safety, bad inputs."""

from __future__ import annotations

import errno
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pyxdf = pytest.importorskip("pyxdf")

from bci_runtime.errors import ConfigError, RunError  # noqa: E402
from bci_runtime.xdf_writer import BOUNDARY_UUID, XdfWriter, _varlen  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, **kwargs: Any) -> tuple[dict[int, dict], dict]:
    """Load with pyxdf, raw timestamps by default; streams keyed by stream id."""
    kwargs.setdefault("synchronize_clocks", False)
    kwargs.setdefault("dejitter_timestamps", False)
    streams, header = pyxdf.load_xdf(str(path), **kwargs)
    return {s["info"]["stream_id"]: s for s in streams}, header


def channels(stream: dict) -> list[dict]:
    return stream["info"]["desc"][0]["channels"][0]["channel"]


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize(
    ("channel_format", "dtype"),
    [("float32", np.float32), ("double64", np.float64), ("int16", np.int16),
     ("int8", np.int8), ("int32", np.int32), ("int64", np.int64)],
)
def test_numeric_round_trip(tmp_path: Path, channel_format: str, dtype: type) -> None:
    rng = np.random.default_rng(7)
    n_ch, srate = 5, 250.0
    labels = [f"ch{i}" for i in range(n_ch)]
    chunks = []
    t0 = 1000.0
    for n in (20, 1, 300, 7):  # 300 samples: 4-byte varlen sample count
        if np.dtype(dtype).kind == "f":
            data = rng.standard_normal((n, n_ch)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, size=(n, n_ch), dtype=dtype, endpoint=True)
        ts = t0 + np.arange(n) / srate + rng.uniform(-1e-4, 1e-4, n)
        t0 = float(ts[-1]) + 1 / srate
        chunks.append((data, ts))
    path = tmp_path / "rec.xdf"
    with XdfWriter(path) as w:
        sid = w.add_stream(name="EEG raw", type="EEG", channel_count=n_ch, srate=srate,
                           channel_format=channel_format, source_id="sim-1234",
                           channel_labels=labels, channel_types="EEG",
                           channel_units=["microvolts"] * n_ch)
        for data, ts in chunks:
            w.write_samples(sid, data, ts)

    streams, header = load(path)
    assert header["info"]["version"] == ["1.0"]
    assert header["info"]["datetime"][0]
    s = streams[sid]
    info = s["info"]
    assert info["name"] == ["EEG raw"]
    assert info["type"] == ["EEG"]
    assert info["channel_count"] == [str(n_ch)]
    assert float(info["nominal_srate"][0]) == srate
    assert info["channel_format"] == [channel_format]
    assert info["source_id"] == ["sim-1234"]
    assert info["uid"][0] and math.isfinite(float(info["created_at"][0]))
    assert [c["label"][0] for c in channels(s)] == labels
    assert [c["type"][0] for c in channels(s)] == ["EEG"] * n_ch
    assert [c["unit"][0] for c in channels(s)] == ["microvolts"] * n_ch

    expected = np.concatenate([d for d, _ in chunks])
    expected_ts = np.concatenate([t for _, t in chunks])
    assert s["time_series"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(s["time_series"], expected)
    np.testing.assert_array_equal(s["time_stamps"], expected_ts)
    footer = s["footer"]["info"]
    assert footer["sample_count"] == [str(len(expected_ts))]
    assert float(footer["first_timestamp"][0]) == expected_ts[0]
    assert float(footer["last_timestamp"][0]) == expected_ts[-1]


def test_string_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    long_marker = "x" * 300  # 4-byte varlen string length
    markers = [["left"], ["rechts é ✓"], [""], [long_marker], ["a & <b>"]]
    ts = np.sort(rng.uniform(10.0, 20.0, len(markers)))
    two_ch = [["cue", "1"], ["feedback", "0.25"]]
    ts2 = np.array([30.0, 31.5])
    path = tmp_path / "markers.xdf"
    with XdfWriter(path) as w:
        mid = w.add_stream(name="Markers", type="Markers", channel_count=1, srate=0,
                           channel_format="string", source_id="task")
        eid = w.add_stream(name="Events", type="Markers", channel_count=2, srate=0.0,
                           channel_format="string", channel_labels=["event", "value"])
        w.write_samples(mid, markers[:2], ts[:2])
        w.write_samples(eid, two_ch, ts2)
        w.write_samples(mid, np.array(markers[2:], dtype=object), ts[2:])

    streams, _ = load(path)
    assert streams[mid]["time_series"] == markers
    np.testing.assert_array_equal(streams[mid]["time_stamps"], ts)
    assert streams[mid]["info"]["channel_format"] == ["string"]
    assert streams[mid]["footer"]["info"]["sample_count"] == ["5"]
    assert streams[eid]["time_series"] == two_ch
    np.testing.assert_array_equal(streams[eid]["time_stamps"], ts2)
    assert [c["label"][0] for c in channels(streams[eid])] == ["event", "value"]


def test_clock_offsets_read_back_and_applied(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    srate = 100.0
    data = rng.standard_normal((50, 2)).astype(np.float32)
    ts = 500.0 + np.arange(50) / srate
    offsets = [(499.0, 0.25), (504.0, 0.25), (509.0, 0.25)]
    path = tmp_path / "clock.xdf"
    with XdfWriter(path) as w:
        sid = w.add_stream(name="EEG", type="EEG", channel_count=2, srate=srate,
                           channel_format="float32")
        w.write_clock_offset(sid, *offsets[0])
        w.write_samples(sid, data[:25], ts[:25])
        w.write_clock_offset(sid, *offsets[1])
        w.write_samples(sid, data[25:], ts[25:])
        w.write_clock_offset(sid, *offsets[2])

    raw, _ = load(path, synchronize_clocks=False)
    s = raw[sid]
    assert s["clock_times"] == [t for t, _ in offsets]
    assert s["clock_values"] == [v for _, v in offsets]
    np.testing.assert_array_equal(s["time_stamps"], ts)
    footer_offsets = s["footer"]["info"]["clock_offsets"][0]["offset"]
    assert [(float(o["time"][0]), float(o["value"][0])) for o in footer_offsets] == offsets

    synced, _ = load(path, synchronize_clocks=True)
    np.testing.assert_allclose(synced[sid]["time_stamps"], ts + 0.25, atol=1e-9)
    np.testing.assert_array_equal(synced[sid]["time_series"], data)


def test_samples_chunk_layout_is_the_spec(tmp_path: Path) -> None:
    """One chunk byte for byte: varlen length, tag 3, stream id, varlen n, samples."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((20, 256)).astype(np.float32)
    ts = 1.0 + np.arange(20) / 512.0
    path = tmp_path / "layout.xdf"
    with XdfWriter(path) as w:
        sid = w.add_stream(name="ECoG", type="ECoG", channel_count=256, srate=512.0,
                           channel_format="float32")
        before = path.stat().st_size
        w.write_samples(sid, data, ts)
        after = path.stat().st_size
    body = struct.pack("<HI", 3, sid) + bytes([1, 20])
    for k in range(20):
        body += b"\x08" + struct.pack("<d", ts[k]) + struct.pack("<256f", *data[k])
    expected = b"\x04" + struct.pack("<I", len(body)) + body
    assert path.read_bytes()[before:after] == expected


def test_varlen_sizes() -> None:
    assert _varlen(0) == b"\x01\x00"
    assert _varlen(255) == b"\x01\xff"
    assert _varlen(256) == b"\x04" + struct.pack("<I", 256)
    assert _varlen(2**32 - 1) == b"\x04\xff\xff\xff\xff"
    assert _varlen(2**32) == b"\x08" + struct.pack("<Q", 2**32)


def test_boundary_chunks_and_file_start(tmp_path: Path) -> None:
    path = tmp_path / "b.xdf"
    with XdfWriter(path, boundary_interval_s=0.0) as w:
        sid = w.add_stream(name="x", type="EEG", channel_count=1, srate=10,
                           channel_format="double64")
        for k in range(4):
            w.write_samples(sid, [[float(k)]], [float(k)])
        w.write_clock_offset(sid, 1.0, 0.0)
    raw = path.read_bytes()
    assert raw.startswith(b"XDF:")
    assert raw.count(b"\x01\x12\x05\x00" + BOUNDARY_UUID) == 5  # len 18, tag 5
    streams, _ = load(path)
    np.testing.assert_array_equal(streams[sid]["time_series"][:, 0], [0, 1, 2, 3])


def test_desc_xml_is_embedded(tmp_path: Path) -> None:
    path = tmp_path / "d.xdf"
    with XdfWriter(path) as w:
        sid = w.add_stream(name="x", type="EEG", channel_count=1, srate=10,
                           channel_format="float32",
                           desc_xml="<acquisition><manufacturer>Sim &amp; Co"
                                    "</manufacturer></acquisition>")
    desc = load(path)[0][sid]["info"]["desc"][0]
    assert desc["acquisition"][0]["manufacturer"] == ["Sim & Co"]


def test_empty_write_and_stream_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "e.xdf"
    with XdfWriter(path) as w:
        sid = w.add_stream(name="x", type="EEG", channel_count=3, srate=10,
                           channel_format="float32")
        size = path.stat().st_size
        w.write_samples(sid, np.zeros((0, 3), np.float32), np.zeros(0))
        assert path.stat().st_size == size
    streams, _ = load(path, synchronize_clocks=True, dejitter_timestamps=True)
    assert streams[sid]["time_series"].shape[0] == 0
    assert streams[sid]["footer"]["info"]["sample_count"] == ["0"]


def test_truncated_last_chunk_still_loads(tmp_path: Path) -> None:
    """A chunk cut short (what a kill in the middle of a write leaves) is skipped."""
    rng = np.random.default_rng(9)
    data = rng.standard_normal((40, 8)).astype(np.float32)
    path = tmp_path / "t.xdf"
    w = XdfWriter(path)
    sid = w.add_stream(name="x", type="EEG", channel_count=8, srate=100,
                       channel_format="float32")
    w.write_samples(sid, data[:30], np.arange(30) / 100)
    good = path.stat().st_size
    w.write_samples(sid, data[30:], np.arange(30, 40) / 100)
    w.sync()
    os.truncate(path, good + (path.stat().st_size - good) // 2)
    streams, _ = load(path, synchronize_clocks=True)
    np.testing.assert_array_equal(streams[sid]["time_series"], data[:30])
    w.close()


# ------------------------------------------------------------------ durability

def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])

    lazy = XdfWriter(tmp_path / "lazy.xdf", fsync_interval_s=math.inf)
    sid = lazy.add_stream(name="x", type="EEG", channel_count=1, srate=10,
                          channel_format="float32")
    calls.clear()
    for k in range(5):
        lazy.write_samples(sid, [[1.0]], [float(k)])
    assert calls == []
    lazy.close()
    assert len(calls) == 1

    eager = XdfWriter(tmp_path / "eager.xdf", fsync_interval_s=0.0)
    sid = eager.add_stream(name="x", type="EEG", channel_count=1, srate=10,
                           channel_format="float32")
    calls.clear()
    for k in range(5):
        eager.write_samples(sid, [[1.0]], [float(k)])
    eager.write_clock_offset(sid, 1.0, 0.0)
    assert len(calls) == 6
    eager.sync()
    assert len(calls) == 7
    eager.close()


def test_failed_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "full.xdf"
    w = XdfWriter(path)
    sid = w.add_stream(name="x", type="EEG", channel_count=4, srate=10,
                       channel_format="float32")
    w.write_samples(sid, np.ones((3, 4)), [0.0, 0.1, 0.2])
    size = path.stat().st_size
    real_write = os.write

    def half_then_enospc(fd: int, buf: Any) -> int:
        if len(buf) > 8:
            return real_write(fd, bytes(buf[: len(buf) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(RunError, match="No space left") as info:
        w.write_samples(sid, np.ones((5, 4)), np.arange(5) + 1.0)
    assert "disk space" in (info.value.hint or "")
    assert path.stat().st_size == size
    monkeypatch.setattr(os, "write", real_write)
    w.write_samples(sid, np.full((2, 4), 2.0), [2.0, 2.1])
    w.close()
    s = load(path)[0][sid]
    np.testing.assert_array_equal(s["time_series"][:, 0], [1, 1, 1, 2, 2])
    assert s["footer"]["info"]["sample_count"] == ["5"]


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from bci_runtime.xdf_writer import XdfWriter

    path, mode = sys.argv[1], sys.argv[2]
    w = XdfWriter(path, fsync_interval_s=0.0 if mode == "interval0" else 3600.0,
                  boundary_interval_s=0.01)
    sid = w.add_stream(name="ramp", type="EEG", channel_count=4, srate=1000.0,
                       channel_format="float32", channel_labels=["a", "b", "c", "d"])
    mid = w.add_stream(name="markers", type="Markers", channel_count=1, srate=0.0,
                       channel_format="string")
    w.write_clock_offset(sid, 0.0, 0.0)
    w.sync()
    n, k, chunks = 0, 37, 0
    while n < 1_000_000:  # safety cap; the parent kills long before
        idx = np.arange(n, n + k)
        w.write_samples(sid, np.repeat(idx[:, None], 4, axis=1).astype(np.float32),
                        idx / 1000.0)
        w.write_samples(mid, [[str(n)]], [n / 1000.0])
        n += k
        chunks += 1
        if mode == "sync" and chunks % 5 == 0:
            w.sync()
        if mode == "interval0" or chunks % 5 == 0:
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()
    """
)


@pytest.mark.parametrize("mode", ["sync", "interval0"])
def test_sigkill_mid_stream_keeps_everything_fsynced(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "killed.xdf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        reports = 0
        while reports < 20:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child exited early: {proc.wait()}, "
                            f"{proc.stderr.read().decode(errors='replace')}")
            reports += 1
        time.sleep(0.05)  # let it run on, so the kill lands mid-stream
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # reports already in the pipe count too
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    fsynced = int(([line] + rest.split())[-1])
    assert fsynced > 0

    # default pyxdf settings (clock sync, dejitter) must cope with missing footers
    pyxdf.load_xdf(str(path))
    streams, _ = load(path)
    ramp = next(s for s in streams.values() if s["info"]["name"] == ["ramp"])
    markers = next(s for s in streams.values() if s["info"]["name"] == ["markers"])
    assert "footer" not in ramp
    n = ramp["time_series"].shape[0]
    assert n >= fsynced
    expected = np.arange(n, dtype=np.float32)
    np.testing.assert_array_equal(ramp["time_series"], np.repeat(expected[:, None], 4, axis=1))
    np.testing.assert_allclose(ramp["time_stamps"], np.arange(n) / 1000.0)
    assert [c["label"][0] for c in channels(ramp)] == ["a", "b", "c", "d"]
    assert ramp["clock_values"] == [0.0]
    marker_values = [int(m[0]) for m in markers["time_series"]]
    assert marker_values == list(range(0, 37 * len(marker_values), 37))
    assert len(marker_values) >= fsynced // 37


# ------------------------------------------------------------------ bad inputs

def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "old.xdf"
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists") as info:
        XdfWriter(path)
    assert info.value.hint and "new file name" in info.value.hint
    assert path.read_bytes() == b"precious"


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create"):
        XdfWriter(tmp_path / "no" / "such" / "dir.xdf")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"fsync_interval_s": -1.0}, "fsync_interval_s"),
     ({"boundary_interval_s": float("nan")}, "boundary_interval_s")],
)
def test_bad_intervals(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = tmp_path / "x.xdf"
    with pytest.raises(ConfigError, match=match):
        XdfWriter(path, **kwargs)
    assert not path.exists()


GOOD_STREAM = {"name": "EEG", "type": "EEG", "channel_count": 3, "srate": 100.0,
               "channel_format": "float32"}


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"channel_format": "float64"}, "unknown channel_format 'float64'.*double64"),
     ({"channel_format": "uint8"}, "unknown channel_format"),
     ({"channel_count": 0}, "channel_count"),
     ({"channel_count": 2.0}, "channel_count"),
     ({"srate": -1.0}, "srate"),
     ({"srate": float("inf")}, "srate"),
     ({"name": ""}, "name"),
     ({"channel_labels": ["a", "b"]}, "channel_labels has 2 entries but channel_count=3"),
     ({"channel_labels": "abc"}, "channel_labels is a single str"),
     ({"channel_units": ["uV", "uV", 3]}, r"channel_units\[2\]"),
     ({"desc_xml": "<a><b></a>"}, "not well-formed"),
     ({"desc_xml": "<channels/>", "channel_labels": ["a", "b", "c"]}, "<channels>")],
)
def test_bad_stream_declarations(tmp_path: Path, changes: dict, match: str) -> None:
    path = tmp_path / "x.xdf"
    with XdfWriter(path) as w:
        size = path.stat().st_size
        with pytest.raises(ConfigError, match=match) as info:
            w.add_stream(**{**GOOD_STREAM, **changes})
        assert info.value.hint
        assert path.stat().st_size == size
        assert w.stream_ids == []


def _bad_calls(w: XdfWriter, sid: int, mid: int, iid: int) -> list[tuple[Any, str]]:
    ok = np.zeros((2, 3), np.float32)
    return [
        (lambda: w.write_samples(sid, np.zeros((2, 4)), [0.0, 1.0]),
         "shape \\(2, 4\\) but the stream has 3 channels"),
        (lambda: w.write_samples(sid, np.zeros((3, 2)), [0.0, 1.0]), "data.T"),
        (lambda: w.write_samples(sid, ok, [0.0, 1.0, 2.0]), "2 samples but 3 timestamps"),
        (lambda: w.write_samples(sid, ok, [[0.0, 1.0]]), "timestamps have shape"),
        (lambda: w.write_samples(sid, ok, [0.0, float("nan")]), r"timestamps\[1\]=.*nan"),
        (lambda: w.write_samples(sid, ok, [float("inf"), 0.0]), r"timestamps\[0\]=.*inf"),
        (lambda: w.write_samples(sid, np.array([["a"] * 3] * 2), [0.0, 1.0]), "dtype"),
        (lambda: w.write_samples(99, ok, [0.0, 1.0]), "unknown stream id 99"),
        (lambda: w.write_clock_offset(99, 0.0, 0.0), "unknown stream id 99"),
        (lambda: w.write_clock_offset(sid, float("nan"), 0.0), "collection_time"),
        (lambda: w.write_clock_offset(sid, 0.0, "x"), "offset"),
        (lambda: w.write_samples(iid, np.ones((2, 1)) * 0.5, [0.0, 1.0]), "float data"),
        (lambda: w.write_samples(iid, np.array([[40000], [0]]), [0.0, 1.0]), "do not fit"),
        (lambda: w.write_samples(mid, ["left"], [0.0]), "bare str"),
        (lambda: w.write_samples(mid, "left", [0.0]), "single str"),
        (lambda: w.write_samples(mid, [["a", "b"]], [0.0]), "2 values but the stream has 1"),
        (lambda: w.write_samples(mid, [[3]], [0.0]), "not a str"),
        (lambda: w.write_samples(mid, [["a"], ["b"]], [0.0]), "2 samples but 1 timestamps"),
    ]


def test_bad_samples_raise_and_never_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.xdf"
    with XdfWriter(path, boundary_interval_s=0.0) as w:
        sid = w.add_stream(**GOOD_STREAM)
        mid = w.add_stream(name="M", type="Markers", channel_count=1, srate=0,
                           channel_format="string")
        iid = w.add_stream(name="I", type="Misc", channel_count=1, srate=10,
                           channel_format="int16")
        w.write_samples(sid, np.ones((2, 3)), [0.0, 1.0])
        size = path.stat().st_size
        for call, match in _bad_calls(w, sid, mid, iid):
            with pytest.raises(RunError, match=match) as info:
                call()
            assert info.value.hint, match
            assert path.stat().st_size == size, match
        w.write_samples(sid, np.full((1, 3), 2.0), [2.0])
        w.write_samples(mid, [["ok"]], [2.0])
        w.write_samples(iid, np.array([[-7]], dtype=np.int64), [2.0])
    streams, _ = load(path)
    np.testing.assert_array_equal(streams[sid]["time_series"][:, 0], [1, 1, 2])
    assert streams[mid]["time_series"] == [["ok"]]
    assert streams[iid]["time_series"].tolist() == [[-7]]


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    path = tmp_path / "x.xdf"
    w = XdfWriter(path)
    sid = w.add_stream(**GOOD_STREAM)
    w.close()
    size = path.stat().st_size
    w.close()
    assert w.closed and path.stat().st_size == size
    with pytest.raises(RunError, match="already closed"):
        w.write_samples(sid, np.ones((1, 3)), [0.0])
    with pytest.raises(RunError, match="already closed"):
        w.add_stream(**GOOD_STREAM)
    with pytest.raises(RunError, match="already closed"):
        w.sync()
    assert load(path)[0][sid]["footer"]["info"]["sample_count"] == ["0"]
