"""``bci record``: real LSL outlets recorded to XDF, read back with pyxdf.

The outlets run in threads of the test process (the simulator through
:func:`run_simulation`); each gets a unique name and ``source_id``, waits
(bounded) for the recorder's inlet before it starts pushing, and pushes a
float32 stream whose channel 0 is the sample index, stamped ``t0 + k / srate``,
so that a lost or reordered sample shows. The crash tests run ``bci record`` in
a subprocess and kill it. Nothing here asserts on speed (``bench/recorder_cpu.py``
measures the CPU); the SIGKILL test bounds the data lost at the kill, with slack.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest

from bci_runtime.cli import main as cli_main
from bci_runtime.errors import ConfigError

from fault_injection import FillingDisk

pylsl = pytest.importorskip("pylsl")
pyxdf = pytest.importorskip("pyxdf")

from bci_runtime.drivers import recorder as recorder_mod  # noqa: E402
from bci_runtime.drivers.recorder import (  # noqa: E402
    LslRecorder,
    StreamQuery,
    required_free_bytes,
)
from bci_runtime.simulators.lsl_mode import run_simulation  # noqa: E402

pytestmark = pytest.mark.lsl

SRATE = 500.0
CHANNELS = 6
CHUNK = 10
LABELS = ["idx", "C3", "Cz", "C4", "P3", "P4"]
WAIT_S = 20.0  # bound on every wait for a consumer, a stream or a process


def _uid() -> str:
    return uuid4().hex


def _bci(*args: str) -> list[str]:
    return [sys.executable, "-m", "bci_runtime.cli", "record", *args]


def expected_values(index: np.ndarray) -> np.ndarray:
    """What :class:`IndexOutlet` sends for these sample indices, (n, CHANNELS)."""
    out = np.empty((len(index), CHANNELS), dtype=np.float32)
    out[:, 0] = index
    out[:, 1:] = ((index[:, None] * np.arange(3, 3 + 2 * (CHANNELS - 1), 2)) % 1024) * 0.5
    return out


# -- outlets -------------------------------------------------------------------------------
def _wait_for_consumer(outlet: Any, stop: threading.Event) -> bool:
    """Wait (bounded, interruptible) until an inlet is connected."""
    deadline = time.monotonic() + WAIT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if outlet.wait_for_consumers(0.1):
            return True
    return False


class IndexOutlet:
    """A float32 outlet pushing from a thread once a consumer connected.

    Channel 0 is the sample index; sample ``k`` is stamped ``t0 + k / srate``.
    ``push_s`` None pushes until :meth:`close`.
    """

    def __init__(self, push_s: float | None = None, *, name: str | None = None,
                 source_id: str | None = None, start_index: int = 0,
                 t0: float | None = None) -> None:
        uid = _uid()
        self.name = name or f"test-rec-{uid[:10]}"
        self.source_id = source_id or f"test-rec-{uid}"
        info = pylsl.StreamInfo(self.name, "EEG", CHANNELS, SRATE, "float32", self.source_id)
        chans = info.desc().append_child("channels")
        for label in LABELS:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "uV")
        info.desc().append_child("acquisition").append_child_value("manufacturer", "tests")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        self.n_total = None if push_s is None else int(push_s * SRATE)
        self.start_index = start_index
        self.t0 = t0
        self.pushed = start_index  # next index to push
        self.connected = threading.Event()
        self.finished = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="test-outlet")
        self.thread.start()

    def _run(self) -> None:
        if not _wait_for_consumer(self.outlet, self._stop):
            self.finished.set()
            return
        self.connected.set()
        t0 = self.t0 if self.t0 is not None else pylsl.local_clock()
        self.t0 = t0
        k = self.start_index
        end = None if self.n_total is None else self.start_index + self.n_total
        while not self._stop.is_set() and (end is None or k < end):
            n = CHUNK if end is None else min(CHUNK, end - k)
            idx = np.arange(k, k + n)
            stamps = t0 + idx / SRATE
            delay = stamps[-1] - pylsl.local_clock()
            if delay > 0 and self._stop.wait(delay):
                break
            self.outlet.push_chunk(expected_values(idx), stamps.tolist())
            k += n
            self.pushed = k
        self.finished.set()

    def stamps(self, index: np.ndarray) -> np.ndarray:
        assert self.t0 is not None
        return self.t0 + index / SRATE

    def close(self) -> None:
        self._stop.set()
        self.thread.join(WAIT_S)
        self.outlet = None


class MarkerOutlet:
    """A string outlet pushing ``count`` markers, one every ``every_s``, once connected."""

    def __init__(self, count: int = 6, every_s: float = 0.2) -> None:
        uid = _uid()
        self.name = f"test-rec-markers-{uid[:8]}"
        self.source_id = f"test-rec-markers-{uid}"
        info = pylsl.StreamInfo(self.name, "Markers", 1, pylsl.IRREGULAR_RATE, "string",
                                self.source_id)
        self.outlet = pylsl.StreamOutlet(info)
        self.sent: list[tuple[str, float]] = []
        self.count, self.every_s = count, every_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="test-markers")
        self.thread.start()

    def _run(self) -> None:
        if not _wait_for_consumer(self.outlet, self._stop):
            return
        for k in range(self.count):
            if self._stop.wait(self.every_s):
                return
            label = f"mark/{k}/é"  # non-ASCII survives
            ts = pylsl.local_clock()
            self.outlet.push_sample([label], ts)
            self.sent.append((label, ts))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(WAIT_S)
        self.outlet = None


def load(path: Path) -> dict[str, dict[str, Any]]:
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False,
                                dejitter_timestamps=False)
    return {s["info"]["source_id"][0]: s for s in streams}


def labels_of(stream: dict[str, Any]) -> list[str]:
    chans = stream["info"]["desc"][0]["channels"][0]["channel"]
    return [c["label"][0] for c in chans]


def check_index_stream(stream: dict[str, Any], outlet: IndexOutlet, start: int = 0
                       ) -> np.ndarray:
    """Samples are start, start+1, ... in order with exact values and stamps; the indices."""
    data = np.asarray(stream["time_series"])
    idx = data[:, 0].astype(np.int64)
    np.testing.assert_array_equal(idx, np.arange(start, start + len(idx)))
    np.testing.assert_array_equal(data, expected_values(idx))
    np.testing.assert_allclose(stream["time_stamps"], outlet.stamps(idx), rtol=0, atol=1e-9)
    return idx


# -- recording -----------------------------------------------------------------------------
def test_records_every_stream_with_headers_offsets_and_footers(tmp_path: Path) -> None:
    sig = IndexOutlet(push_s=1.5)
    marks = MarkerOutlet(count=6, every_s=0.2)
    uid = _uid()
    sim_name, sim_sid = f"test-rec-sim-{uid[:8]}", f"test-rec-sim-{uid}"
    sim_out: dict[str, Any] = {}

    def simulate() -> None:
        sim_out["summary"] = run_simulation(
            "mi", channels=8, srate=250.0, duration=1.5, seed=4, name=sim_name,
            source_id=sim_sid, wait_for_consumers_s=WAIT_S, wait_streams=("signal", "markers"))

    sim_thread = threading.Thread(target=simulate, daemon=True)
    sim_thread.start()
    out = tmp_path / "session.xdf"
    started: list[Any] = []
    try:
        # wait until the simulator's outlets exist, so the recorder resolves them at once
        assert pylsl.resolve_byprop("source_id", f"{sim_sid}-markers", 1, WAIT_S)
        rec = LslRecorder([sig.name, f"source_id={marks.source_id}", f"name={sim_name}",
                           StreamQuery("source_id", f"{sim_sid}-markers"),
                           f"source_id={sig.source_id}"],  # the same stream twice: once
                          out, duration=3.5, resolve_timeout_s=WAIT_S,
                          on_start=started.append)
        summary = rec.run()
    finally:
        sig.close()
        marks.close()
        sim_thread.join(WAIT_S)
    assert started and started[0] is summary
    assert summary.ok, summary.describe()
    assert summary.stop_reason == "duration" and summary.footers_written
    assert [s.name for s in summary.streams] == [sig.name, marks.name, sim_name,
                                                  f"{sim_name}-markers"]
    assert summary.bytes == out.stat().st_size
    # no gap inside the data; the streams that stopped pushing before the session ended
    # show as a silence running at the end
    assert all(g.before is None for g in summary.gaps)
    assert sorted(g.stream for g in summary.gaps) == sorted([sig.name, sim_name])

    streams = load(out)
    assert set(streams) == {sig.source_id, marks.source_id, sim_sid, f"{sim_sid}-markers"}

    # the index stream: every pushed sample, in order, raw timestamps
    s = streams[sig.source_id]
    idx = check_index_stream(s, sig)
    assert len(idx) == sig.pushed == int(1.5 * SRATE)
    info = s["info"]
    assert labels_of(s) == LABELS
    assert info["desc"][0]["acquisition"][0]["manufacturer"] == ["tests"]
    assert info["channel_format"] == ["float32"] and info["nominal_srate"][0].startswith("500")
    for key in ("uid", "hostname", "created_at", "session_id", "v4data_port"):
        assert info[key][0], f"full LSL header: <{key}> missing"
    footer = s["footer"]["info"]
    assert int(footer["sample_count"][0]) == len(idx)
    assert float(footer["first_timestamp"][0]) == pytest.approx(s["time_stamps"][0], abs=1e-9)
    assert float(footer["last_timestamp"][0]) == pytest.approx(s["time_stamps"][-1], abs=1e-9)
    assert len(s["clock_times"]) >= 2  # at the start and at the end
    assert len(footer["clock_offsets"][0]["offset"]) == len(s["clock_times"])
    assert np.all(np.abs(s["clock_values"]) < 0.05)  # one machine, one clock

    # markers: equal labels and stamps
    m = streams[marks.source_id]
    assert [row[0] for row in m["time_series"]] == [lab for lab, _ in marks.sent]
    np.testing.assert_allclose(m["time_stamps"], [t for _, t in marks.sent], rtol=0, atol=1e-9)
    assert len(marks.sent) == 6 and m["info"]["channel_format"] == ["string"]
    assert int(m["footer"]["info"]["sample_count"][0]) == 6

    # the simulator: everything it pushed
    sim = sim_out["summary"]
    ss = streams[sim_sid]
    assert ss["time_series"].shape == (sim.samples_pushed, 8)
    np.testing.assert_allclose(ss["time_stamps"], sim.t0 + np.arange(sim.samples_pushed) / 250.0,
                               rtol=0, atol=1e-9)
    assert len(labels_of(ss)) == 8
    assert ss["info"]["desc"][0]["simulator"][0]["seed"] == ["4"]
    sm = streams[f"{sim_sid}-markers"]
    assert len(sm["time_series"]) == sim.markers_sent >= 1
    per_stream = {r.source_id: r for r in summary.streams}
    assert per_stream[sim_sid].samples == sim.samples_pushed
    assert per_stream[sig.source_id].clock_offsets == len(s["clock_times"])


def test_missing_stream_exits_2_listing_the_streams_found(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    present = IndexOutlet(push_s=0.1)
    out = tmp_path / "never.xdf"
    try:
        assert pylsl.resolve_byprop("source_id", present.source_id, 1, WAIT_S)
        missing = f"test-rec-missing-{_uid()[:8]}"
        code = cli_main(["record", "--stream", missing, "--out", str(out),
                         "--resolve-timeout", "0.5"])
    finally:
        present.close()
    assert code == 2
    err = capsys.readouterr().err
    assert f"no LSL stream matched name={missing}" in err
    assert present.name in err and present.source_id in err and "type EEG" in err
    assert not out.exists()


def test_existing_output_exits_2_and_is_untouched(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken.xdf"
    out.write_bytes(b"XDF:precious")
    assert cli_main(["record", "--stream", "whatever", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and str(out) in err
    assert cli_main(["record", "--stream", "whatever", "--out", str(out), "--json"]) == 2
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] is False and reply["type"] == "ConfigError"
    assert out.read_bytes() == b"XDF:precious"


@pytest.mark.parametrize("argv, text", [
    (["--out", "x.xdf"], "no --stream given"),
    (["--stream", "EEG"], "no --out given"),
    (["--stream", "color=red", "--out", "x.xdf"], "unknown key 'color'"),
    (["--stream", "type=", "--out", "x.xdf"], "the value is empty"),
    (["--stream", "EEG", "--out", "x.xdf", "--duration", "-1"], "above 0"),
])
def test_bad_options_exit_2(argv: list[str], text: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main(["record", *argv])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    assert text in capsys.readouterr().err
    assert not (tmp_path / "x.xdf").exists()


def test_stream_queries() -> None:
    assert StreamQuery.parse("EEG") == StreamQuery("name", "EEG")
    assert StreamQuery.parse("name=a=b") == StreamQuery("name", "a=b")
    assert StreamQuery.parse("type=Markers").predicate() == "type='Markers'"
    assert StreamQuery.parse("source_id=it's").predicate() == 'source_id="it\'s"'
    with pytest.raises(ConfigError, match="unknown key"):
        StreamQuery.parse("a=b")
    # 256 ch @ 2 kHz for 10 min is more than 1 GiB: capped; a marker stream: the floor
    assert required_free_bytes([(2000.0, 256, "float32")]) == 1024**3
    assert required_free_bytes([(0.0, 1, "string")]) == 32 * 1024**2
    assert required_free_bytes([(500.0, 64, "float32")]) == int(600 * 500 * (9 + 256))


def test_refuses_to_start_without_free_space(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    outlet = IndexOutlet(push_s=0.1)
    real = shutil.disk_usage
    monkeypatch.setattr(recorder_mod.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=5 * 1024**2))
    out = tmp_path / "full.xdf"
    try:
        with pytest.raises(ConfigError, match=r"not enough free disk space .* 5\.0 MiB free, "
                                              r"at least 32\.0 MiB needed"):
            LslRecorder([f"source_id={outlet.source_id}"], out,
                        resolve_timeout_s=WAIT_S).run()
    finally:
        outlet.close()
    assert not out.exists()


def test_full_disk_stops_cleanly_and_the_file_stays_readable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bci_runtime import xdf_writer

    disk = FillingDisk(budget=40_000)  # the headers, then ~0.6 s of the stream
    monkeypatch.setattr(xdf_writer, "os", disk)
    outlet = IndexOutlet()  # pushes until closed
    out = tmp_path / "full.xdf"
    try:
        code = cli_main(["record", "--stream", f"source_id={outlet.source_id}",
                         "--out", str(out), "--duration", "20", "--resolve-timeout",
                         str(WAIT_S), "--json"])
    finally:
        outlet.close()
    captured = capsys.readouterr()
    assert code == 1
    summary = json.loads(captured.out)
    assert summary["ok"] is False and summary["stop_reason"] == "disk_full"
    assert "the disk is full" in summary["message"] and "No space left" in summary["message"]
    assert "bci: error: the disk is full" in captured.err
    assert summary["footers_written"] is False and disk.failures >= 1
    assert summary["duration_s"] < 20  # stopped by the disk, not by --duration
    monkeypatch.undo()

    assert out.stat().st_size <= 40_000
    s = load(out)[outlet.source_id]
    idx = check_index_stream(s, outlet)
    assert len(idx) == summary["streams"][0]["samples"] > 0
    assert "footer" not in s


# -- crashes and signals ---------------------------------------------------------------------
Killed = namedtuple("Killed", "path outlet pushed_at_kill")


def _wait_for_line(proc: subprocess.Popen, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen += line
            if text in line:
                return line
    proc.kill()
    raise AssertionError(f"`bci record` never printed {text!r}; stderr: {seen}")


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``bci record`` SIGKILLed after ~2 s of recording a stream that keeps going."""
    path = tmp_path_factory.mktemp("killed") / "killed.xdf"
    outlet = IndexOutlet()
    proc = subprocess.Popen(_bci("--stream", outlet.name, "--out", str(path),
                                 "--resolve-timeout", str(WAIT_S)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc, "recording")
        assert outlet.connected.wait(WAIT_S)
        target = outlet.pushed + int(2 * SRATE)
        deadline = time.monotonic() + WAIT_S
        while outlet.pushed < target and time.monotonic() < deadline:
            time.sleep(0.05)
        pushed_at_kill = outlet.pushed
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        outlet.close()
    assert proc.returncode == -signal.SIGKILL
    return Killed(path, outlet, pushed_at_kill)


def test_sigkill_leaves_a_readable_file_missing_at_most_about_a_second(
        killed_recording: Killed) -> None:
    k = killed_recording
    s = load(k.path)[k.outlet.source_id]
    idx = check_index_stream(s, k.outlet)
    assert "footer" not in s  # killed: no footers, yet pyxdf reads it
    assert len(s["clock_times"]) >= 1
    assert labels_of(s) == LABELS
    lost = k.pushed_at_kill - len(idx)
    # at most about 1 s is lost (slack for a loaded test machine)
    assert lost <= 1.5 * SRATE, f"{lost} samples ({lost / SRATE:.2f} s) lost at the kill"


def test_repair_rewrites_the_footers_of_a_killed_recording(
        killed_recording: Killed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("bci_runtime.xdf_repair")
    path = tmp_path / "copy.xdf"
    shutil.copyfile(killed_recording.path, path)
    assert cli_main(["record", "repair", str(path)]) == 0
    assert capsys.readouterr().out.strip()
    s = load(path)[killed_recording.outlet.source_id]
    assert int(s["footer"]["info"]["sample_count"][0]) == len(s["time_series"]) > 0


def test_repair_command_hands_the_file_to_repair_xdf(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The command's wiring, with a stand-in for ``bci_runtime.xdf_repair``."""
    import types

    calls: list[Path] = []

    class Report:
        def describe(self) -> list[str]:
            return ["repaired 1 stream", "  footers written"]

    def repair_xdf(path: Path) -> Report:
        calls.append(Path(path))
        return Report()

    monkeypatch.setitem(sys.modules, "bci_runtime.xdf_repair",
                        types.SimpleNamespace(repair_xdf=repair_xdf))
    path = tmp_path / "cut.xdf"
    path.write_bytes(b"XDF:")
    assert cli_main(["record", "repair", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["repaired 1 stream", "  footers written"]
    assert cli_main(["record", "repair", str(path), "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and reply["file"] == str(path) and reply["lines"][0] == "repaired 1 stream"
    assert calls == [path, path]
    assert cli_main(["record", "repair", str(tmp_path / "missing.xdf")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_sigterm_stops_cleanly_with_footers(tmp_path: Path) -> None:
    path = tmp_path / "term.xdf"
    outlet = IndexOutlet()
    proc = subprocess.Popen(_bci("--stream", f"source_id={outlet.source_id}", "--out",
                                 str(path), "--resolve-timeout", str(WAIT_S), "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert outlet.connected.wait(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not path.exists() and time.monotonic() < deadline:  # handlers are installed
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        outlet.close()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["stop_reason"] == "stopped"
    assert "SIGTERM" in summary["message"] and summary["footers_written"]
    s = load(path)[outlet.source_id]
    idx = check_index_stream(s, outlet)
    assert int(s["footer"]["info"]["sample_count"][0]) == len(idx) == \
        summary["streams"][0]["samples"] > 0


def test_a_stream_that_disappears_is_recovered_and_the_gap_reported(tmp_path: Path) -> None:
    first = IndexOutlet(push_s=1.0)
    out = tmp_path / "gap.xdf"
    result: dict[str, Any] = {}
    stop = threading.Event()

    def record() -> None:
        try:
            result["summary"] = LslRecorder([f"source_id={first.source_id}"], out, stop=stop,
                                            resolve_timeout_s=WAIT_S).run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    second: IndexOutlet | None = None
    try:
        assert first.finished.wait(WAIT_S) and first.connected.is_set()
        time.sleep(0.3)  # let the last samples reach the recorder
        n_first, t0 = first.pushed, first.t0
        first.close()  # the source disappears...
        time.sleep(1.5)
        # ...and comes back (same source_id), 2 s after it stopped, on the same time grid
        second = IndexOutlet(push_s=1.0, name=first.name, source_id=first.source_id,
                             start_index=n_first + int(2.0 * SRATE), t0=t0)
        assert second.finished.wait(WAIT_S), "the recorder never reconnected"
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(WAIT_S)
        if second is not None:
            second.close()
    if "error" in result:
        raise result["error"]
    summary = result["summary"]
    assert summary.ok
    s = load(out)[first.source_id]
    idx = np.asarray(s["time_series"])[:, 0].astype(np.int64)
    assert np.all(np.diff(idx) > 0)
    assert idx[-1] == second.pushed - 1  # what came after the recovery was recorded
    # the outage, closed by the stream's return; on a loaded machine the recorder may also
    # report the silence between the producer's last push and its own stop (before=None)
    closed = [g for g in summary.gaps if g.before is not None]
    assert len(closed) == 1 and closed[0].seconds > 1.0
    assert all(g.after >= closed[0].before for g in summary.gaps if g.before is None)


def test_xdf_writer_takes_a_full_header_xml(tmp_path: Path) -> None:
    """XdfWriter.add_stream(header_xml=...): written as given, checked against the layout."""
    from bci_runtime.xdf_writer import XdfWriter

    header = ('<?xml version="1.0"?>\n<info>\n\t<name>h</name>\n\t<type>EEG</type>\n'
              '\t<channel_count>2</channel_count>\n\t<channel_format>int16</channel_format>\n'
              '\t<source_id>s</source_id>\n\t<nominal_srate>100</nominal_srate>\n'
              '\t<hostname>lab-pc</hostname>\n\t<desc><channels><channel><label>a</label>'
              '</channel><channel><label>b</label></channel></channels></desc>\n</info>\n')
    path = tmp_path / "h.xdf"
    with XdfWriter(path) as w:
        kw = dict(name="h", type="EEG", channel_count=2, srate=100.0, channel_format="int16")
        with pytest.raises(ConfigError, match="channel_count"):
            w.add_stream(**{**kw, "channel_count": 3}, header_xml=header)
        with pytest.raises(ConfigError, match="channel_format"):
            w.add_stream(**{**kw, "channel_format": "int32"}, header_xml=header)
        with pytest.raises(ConfigError, match="cannot be combined"):
            w.add_stream(**kw, header_xml=header, channel_labels=["a", "b"])
        with pytest.raises(ConfigError, match="root element is <stream>"):
            w.add_stream(**kw, header_xml="<stream/>")
        with pytest.raises(ConfigError, match="not well-formed"):
            w.add_stream(**kw, header_xml="<info>")
        sid = w.add_stream(**kw, header_xml=header.split("\n", 1)[1])  # no declaration
        w.write_samples(sid, np.array([[1, 2], [3, 4]], dtype=np.int16), [1.0, 2.0])
        w.write_clock_offset(sid, 1.0, 0.0)
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False,
                                dejitter_timestamps=False)
    (s,) = streams
    assert s["info"]["hostname"] == ["lab-pc"] and labels_of(s) == ["a", "b"]
    np.testing.assert_array_equal(s["time_series"], [[1, 2], [3, 4]])
    raw = path.read_bytes()
    assert raw.count(b'<?xml version="1.0"?>') == 3  # file header, stream header, footer
