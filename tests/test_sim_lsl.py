"""The simulator's LSL mode (``bci simulate``), received through real pylsl inlets.

Every run streams under a unique ``source_id`` and waits (bounded) for the test's
inlets before its clock starts, so the inlets get every sample from sample 0.
What arrives is compared with a fresh generator built with the same seed and
driven with the same chunk sizes: identical values, timestamps exactly
``t0 + k / srate``, markers on their samples' timestamps. Nothing here asserts
on speed or wall-clock timing (that is ``bench/simulator_lsl.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest

from bci_runtime.cli import main as cli_main
from bci_runtime.errors import ConfigError
from bci_runtime.simulators.lsl_mode import run_simulation
from bci_runtime.simulators.simulate_options import build_generator, default_source_id
from bci_runtime.simulators.stream_summary import SimulationSummary

pylsl = pytest.importorskip("pylsl")

pytestmark = pytest.mark.lsl

SRATE = 500.0
CHANNELS = 16
CHUNK = 10
# short trials, so that a few seconds hold several cues
TIMING = {"timing": {"first_s": 0.2, "fixation_s": 0.3, "imagery_s": 0.5, "rest_s": 0.3}}
WAIT_S = 20.0  # bound on every wait for a stream or a run


def _sid() -> str:
    return f"test-sim-{uuid4().hex}"


# -- helpers ---------------------------------------------------------------------------------
class Run:
    """A simulation in a background thread."""

    def __init__(self, **kwargs: Any) -> None:
        self.stop = threading.Event()
        kwargs.setdefault("stop", self.stop)
        kwargs.setdefault("wait_for_consumers_s", WAIT_S)
        self.out: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True,
                                       name="test-sim")
        self.thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.out["summary"] = run_simulation(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            self.out["error"] = exc

    def result(self, timeout: float = 60.0) -> SimulationSummary:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(10.0)
            pytest.fail(f"the simulation did not end within {timeout} s")
        if "error" in self.out:
            raise self.out["error"]
        return self.out["summary"]


def open_inlet(source_id: str) -> Any:
    found = pylsl.resolve_byprop("source_id", source_id, 1, WAIT_S)
    assert found, f"no LSL stream with source_id {source_id} within {WAIT_S} s"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False, processing_flags=0)
    inlet.open_stream(timeout=WAIT_S)
    return inlet


def pull_all(inlets: dict[str, Any], run: Run) -> dict[str, tuple[list, np.ndarray]]:
    """Pull every inlet until the run has ended and nothing more comes."""
    got: dict[str, tuple[list, list]] = {k: ([], []) for k in inlets}
    alive = dict(inlets)
    deadline = time.monotonic() + 90.0
    quiet = 0
    while alive and time.monotonic() < deadline:
        anything = False
        for key, inlet in list(alive.items()):
            try:
                data, stamps = inlet.pull_chunk(timeout=0.05, max_samples=4096)
            except pylsl.util.LostError:
                del alive[key]
                continue
            if stamps:
                anything = True
                got[key][0].extend(data)
                got[key][1].extend(stamps)
        if anything:
            quiet = 0
        elif not run.thread.is_alive():
            quiet += 1
            if quiet >= 3:
                break
    return {k: (v[0], np.asarray(v[1], dtype=np.float64)) for k, v in got.items()}


def expected(seed: int, n_samples: int, chunk: int = CHUNK, **kw: Any
             ) -> tuple[np.ndarray, list[tuple[str, int]], np.ndarray, Any]:
    """What a generator with this seed produces when driven in chunks of ``chunk``."""
    gen = build_generator("mi", channels=CHANNELS, srate=SRATE, seed=seed, params=TIMING, **kw)
    data, truth, markers = [], [], []
    done = 0
    while done < n_samples:
        block = gen.next_block(min(chunk, n_samples - done))
        data.append(block.data.astype(np.float32))
        truth.append(block.truth.astype(np.float32))
        markers.extend(block.markers)
        done += block.n_samples
    return np.concatenate(data), markers, np.concatenate(truth), gen


def desc_channels(info: Any) -> tuple[list[str], list[str], list[str]]:
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling()
    return labels, types, units


def stream(seed: int, duration: float, **kw: Any
           ) -> tuple[SimulationSummary, dict[str, tuple[list, np.ndarray]], dict[str, Any]]:
    """Run a simulation and receive its three streams from sample 0."""
    sid = kw.pop("source_id", _sid())
    run = Run(paradigm="mi", channels=CHANNELS, srate=SRATE, seed=seed, duration=duration,
              chunk_size=CHUNK, source_id=sid, params=TIMING,
              wait_streams=("signal", "markers", "truth"), **kw)
    try:
        inlets = {"signal": open_inlet(sid), "markers": open_inlet(f"{sid}-markers"),
                  "truth": open_inlet(f"{sid}-truth")}
        infos = {k: v.info(timeout=WAIT_S) for k, v in inlets.items()}
        got = pull_all(inlets, run)
    except BaseException:
        run.stop.set()
        raise
    summary = run.result()
    for inlet in inlets.values():
        inlet.close_stream()
    return summary, got, infos


# -- tests -----------------------------------------------------------------------------------
def test_inlet_receives_metadata_every_sample_and_markers_on_the_grid() -> None:
    seed, duration = 11, 3.0
    sid = _sid()
    summary, got, infos = stream(seed, duration, source_id=sid, name=f"sim-{sid[-8:]}")
    n = int(duration * SRATE)
    want, want_markers, want_truth, gen = expected(seed, n)

    # metadata of the signal stream
    info = infos["signal"]
    assert info.name() == f"sim-{sid[-8:]}" and info.source_id() == sid
    assert info.type() == "EEG" and gen.stream_type == "EEG"
    assert info.channel_count() == CHANNELS
    assert info.nominal_srate() == SRATE
    assert info.channel_format() == pylsl.cf_float32
    assert desc_channels(info) == (list(gen.channel_names), list(gen.channel_types),
                                   list(gen.units))
    assert desc_channels(info)[1] == ["eeg"] * CHANNELS and desc_channels(info)[2] == ["V"] * 16
    desc = info.desc()
    assert desc.child("acquisition").child_value("manufacturer") == "bci-runtime simulator"
    sim = desc.child("simulator")
    assert (sim.child_value("paradigm"), sim.child_value("scenario"),
            sim.child_value("seed")) == ("mi", "stationary", str(seed))
    # markers and truth streams
    assert infos["markers"].type() == "Markers"
    assert infos["markers"].channel_format() == pylsl.cf_string
    assert infos["markers"].nominal_srate() == pylsl.IRREGULAR_RATE
    assert infos["truth"].channel_count() == len(gen.truth_names)
    assert desc_channels(infos["truth"])[0] == list(gen.truth_names)

    # every sample, in order, on the grid t0 + k/srate, with the seed's values
    assert summary.samples_pushed == n and summary.chunks_dropped == 0
    assert summary.stop_reason == "duration"
    data, stamps = got["signal"]
    assert len(stamps) == summary.samples_pushed == n
    k = np.arange(n)
    np.testing.assert_array_equal(stamps, summary.t0 + k / SRATE)
    np.testing.assert_array_equal(np.asarray(data, dtype=np.float32), want)

    # every marker, on its sample's timestamp
    labels = [row[0] for row in got["markers"][0]]
    assert labels == [m[0] for m in want_markers]
    assert summary.markers_sent == len(want_markers)
    np.testing.assert_array_equal(got["markers"][1],
                                  summary.t0 + np.array([m[1] for m in want_markers]) / SRATE)
    cues = [(lab, ts) for lab, ts in zip(labels, got["markers"][1]) if lab.startswith("cue/")]
    assert len(cues) >= 2, labels
    for _, ts in cues:  # a cue is on a sample of the signal stream
        assert np.any(stamps == ts)
    assert {"trial/start", "end", "trial/end"} <= set(labels)

    # ground truth: the cued class per sample, on the same grid
    truth, truth_ts = got["truth"]
    np.testing.assert_array_equal(np.asarray(truth, dtype=np.float32), want_truth)
    np.testing.assert_array_equal(truth_ts, stamps)

    # the pacing figures exist (their size is the bench's business)
    assert summary.pacing_errors_s.shape == (summary.chunks_pushed,)
    assert set(summary.pacing_ms) >= {"p50", "p99", "max"}


def test_same_seed_gives_identical_data_and_another_seed_does_not() -> None:
    a, got_a, _ = stream(5, 1.0)
    b, got_b, _ = stream(5, 1.0)
    c, got_c, _ = stream(6, 1.0)
    data = [np.asarray(g["signal"][0], dtype=np.float32) for g in (got_a, got_b, got_c)]
    assert data[0].shape == (int(SRATE), CHANNELS)
    np.testing.assert_array_equal(data[0], data[1])
    assert not np.array_equal(data[0], data[2])
    assert [m[0] for m in got_a["markers"][0]] == [m[0] for m in got_b["markers"][0]]
    # relative to its own t0, each run's timestamps are the same grid
    np.testing.assert_allclose(got_a["signal"][1] - a.t0, got_b["signal"][1] - b.t0,
                               rtol=0, atol=1e-9)


def test_transport_faults_drop_chunks_silently_and_shift_timestamps() -> None:
    seed, duration = 6, 2.0  # this seed's fault draws lose 3 of the 100 chunks
    summary, got, _ = stream(seed, duration, scenario="transport-faults", onset_s=0.0,
                             ramp_s=0.0)
    n = int(duration * SRATE)
    want, want_markers, _, _ = expected(seed, n, scenario="transport-faults", onset_s=0.0,
                                        ramp_s=0.0)
    data, stamps = got["signal"]
    data = np.asarray(data, dtype=np.float32)
    # drops happened (seeded), were counted, and nothing announces them
    assert summary.chunks_dropped > 0
    assert summary.samples_dropped == summary.chunks_dropped * CHUNK
    assert summary.samples_pushed + summary.samples_dropped == n
    assert len(stamps) == summary.samples_pushed
    labels = [row[0] for row in got["markers"][0]]
    assert labels == [m[0] for m in want_markers]  # markers are ground truth: never lost
    assert not any("dropped" in label for label in labels)
    # which samples arrived: match rows to the generator's output
    index = {want[i].tobytes(): i for i in range(n)}
    k = np.array([index[row.tobytes()] for row in data])
    assert np.all(np.diff(k) > 0)
    missing = np.setdiff1d(np.arange(n), k)
    assert len(missing) == summary.samples_dropped
    assert np.all(missing.reshape(-1, CHUNK) % CHUNK == np.arange(CHUNK))  # whole chunks
    # timestamps: the grid, plus the 0.5 s clock jump, plus a late-only jitter per chunk
    shift = stamps - (summary.t0 + k / SRATE)
    assert np.all(shift >= 0.5 - 1e-9) and np.all(shift < 0.5 + 0.05)
    per_chunk = shift.reshape(-1, CHUNK)
    np.testing.assert_allclose(per_chunk, per_chunk[:, :1].repeat(CHUNK, 1), rtol=0, atol=1e-9)
    assert np.unique(np.round(per_chunk[:, 0], 9)).size > 1  # jittered


def _class_outlet(name: str, labels: list[str], row: list[float], stop: threading.Event
                  ) -> threading.Thread:
    info = pylsl.StreamInfo(name, "Decision", len(labels), 20.0, "float32", _sid())
    chans = info.desc().append_child("channels")
    for label in labels:
        chans.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)

    def push() -> None:
        while not stop.is_set():
            outlet.push_sample(row)
            stop.wait(0.05)

    thread = threading.Thread(target=push, daemon=True, name="test-decisions")
    thread.start()
    return thread


@pytest.mark.parametrize("labels, row, kind", [
    (["left", "right"], [0.2, 0.8], "class"),
    (["vx", "vy"], [0.25, -0.5], "vector"),
], ids=["class-probabilities", "control-vector"])
def test_feedback_stream_reaches_the_simulated_user(labels: list[str], row: list[float],
                                                    kind: str) -> None:
    name = f"test-decisions-{uuid4().hex[:10]}"
    gen = build_generator("mi", channels=CHANNELS, srate=SRATE, seed=2)
    seen: list[tuple[float, Any]] = []
    show = gen.feedback

    def recording_feedback(t: float, values: Any) -> None:
        seen.append((t, values))
        show(t, values)

    gen.feedback = recording_feedback  # type: ignore[method-assign]
    stop = threading.Event()
    pusher = _class_outlet(name, labels, row, stop)
    try:
        summary = run_simulation("mi", generator=gen, duration=3.0, source_id=_sid(),
                                 feedback_stream=name)
    finally:
        stop.set()
        pusher.join(5.0)
    assert summary.feedback_connected
    assert summary.feedback_received > 0 and len(seen) == summary.feedback_received
    assert all(0.0 <= t <= summary.wall_s + 1.0 for t, _ in seen)
    if kind == "class":  # labels are the generator's classes: the winning class's name
        assert gen.classes == ["left", "right"]
        assert {v for _, v in seen} == {"right"}
    else:
        for _, v in seen:
            np.testing.assert_allclose(v, np.array(row, dtype=np.float32))
    # the user has taken it in (200 ms after it was shown)
    assert gen.user.feedback_seen > 0
    assert summary.feedback_seen == gen.user.feedback_seen


def _bci(*args: str) -> list[str]:
    return [sys.executable, "-m", "bci_runtime.cli", "simulate", *args]


def test_cli_records_an_xdf_that_pyxdf_opens(tmp_path: Path) -> None:
    pyxdf = pytest.importorskip("pyxdf")
    path = tmp_path / "sim.xdf"
    sid = _sid()
    proc = subprocess.run(_bci("--record", str(path), "--duration", "2", "--source-id", sid,
                               "--seed", "3", "--json"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] and summary["record"] == str(path)
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    by_id = {s["info"]["source_id"][0]: s for s in streams}
    assert set(by_id) == {sid, f"{sid}-markers", f"{sid}-truth"}
    sig = by_id[sid]
    assert sig["info"]["type"] == ["EEG"]
    assert sig["time_series"].shape == (summary["samples_pushed"], summary["channels"])
    assert summary["samples_pushed"] == 2 * 250  # mi's default rate
    k = np.arange(summary["samples_pushed"])
    np.testing.assert_allclose(sig["time_stamps"], summary["t0"] + k / 250.0, rtol=0, atol=1e-9)
    chans = sig["info"]["desc"][0]["channels"][0]["channel"]
    assert [c["unit"][0] for c in chans] == ["V"] * summary["channels"]
    assert sig["info"]["desc"][0]["simulator"][0]["seed"] == ["3"]
    markers = by_id[f"{sid}-markers"]
    assert len(markers["time_series"]) == summary["markers_sent"] >= 1
    assert markers["time_series"][0] == ["trial/start"]
    truth = by_id[f"{sid}-truth"]
    assert truth["time_series"].shape == (summary["samples_pushed"], 1)

    # never overwrites: exit 2 with the reason, and the file is untouched
    size = path.stat().st_size
    again = subprocess.run(_bci("--record", str(path), "--duration", "1", "--source-id", sid),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "already exists" in again.stderr and str(path) in again.stderr
    assert path.stat().st_size == size


def test_cli_stops_cleanly_on_sigterm() -> None:
    sid = _sid()
    proc = subprocess.Popen(_bci("--source-id", sid, "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        found = pylsl.resolve_byprop("source_id", sid, 1, WAIT_S)
        assert found, "the simulated stream did not appear"
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["stop_reason"] == "stopped"
    assert summary["source_id"] == sid and summary["samples_pushed"] > 0


@pytest.mark.parametrize("argv, expected_text", [
    (["--paradigm", "eeg9"], "mi, ssvep, ecog, population"),
    (["--scenario", "earthquake"], "stationary, electrode-shift, impedance-drift"),
    (["--channels", "500"], "--channels must be within [8, 128]"),
    (["--channels", "0"], "--channels must be within [8, 128]"),
    (["--srate", "-250"], "--srate must be a finite number above 0"),
    (["--srate", "9000"], "--srate must be within [125, 2000]"),
    (["--rho", "1.5"], "--rho must be within [0, 1]"),
    (["--rho", "-0.1"], "--rho must be within [0, 1]"),
    (["--duration", "-3"], "must be a finite number above 0"),
], ids=["paradigm", "scenario", "channels-high", "channels-zero", "srate-negative",
        "srate-high", "rho-high", "rho-negative", "duration"])
def test_bad_inputs_exit_2_listing_valid_values(argv: list[str], expected_text: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if argv[0] != "--duration":
        argv = [*argv, "--duration", "1"]
    try:
        code = cli_main(["simulate", *argv])
    except SystemExit as exc:  # argparse's own checks exit from parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert expected_text in err
    assert "bci: error:" in err

def test_bad_inputs_in_json_mode_print_one_json_error(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert cli_main(["simulate", "--scenario", "nope", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["type"] == "ConfigError" and "day-to-day" in out["error"]


def test_api_rejects_bad_values_before_streaming(tmp_path: Path) -> None:
    existing = tmp_path / "taken.xdf"
    existing.write_bytes(b"XDF:")
    with pytest.raises(ConfigError, match="already exists"):
        run_simulation("mi", duration=1.0, record=existing, source_id=_sid())
    with pytest.raises(ConfigError, match="chunk-size"):
        run_simulation("mi", duration=1.0, chunk_size=0, source_id=_sid())
    assert existing.read_bytes() == b"XDF:"
    assert default_source_id("mi", 3) == default_source_id("mi", 3) == "bci-sim-mi-seed3"
