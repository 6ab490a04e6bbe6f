"""Process placement: the same outputs in one process and split over pyzmq; clean shutdown.

The issue asks for "the same outputs with nodes in one process and split over
pyzmq; clean shutdown with no orphan processes" and "a worker that dies stops
the graph cleanly with an error naming the node; no process is left behind,
ever". The pipelines here are the shipped demo (``pipelines/demo.yaml``) with
nodes moved to worker processes by ``process:``, run through ``bci run`` in a
subprocess (as an operator would) or through :class:`~bci_runtime.runner.Runner`
in this process (to look at every decision and at the run's private folder).

Every wait is bounded; nothing asserts on wall-clock speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

import bci_runtime.runner as runner_module
from bci_runtime.graph import load_graph
from bci_runtime.runner import Runner
from bci_runtime.summary import build_summary

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "pipelines" / "demo.yaml"
_BCI_SCRIPT = Path(sys.executable).with_name("bci")
BCI = [str(_BCI_SCRIPT)] if _BCI_SCRIPT.exists() else [sys.executable, "-m", "bci_runtime.cli"]

SIM_DURATION_S = 40.0  # stream seconds on the simulated clock: calibration + 6 scored trials
RUN_TIMEOUT_S = 180.0  # bound on any one `bci run` subprocess
STARTUP_TIMEOUT_S = 60.0  # bound on waiting for a run's workers (spawned interpreters)
GONE_TIMEOUT_S = 10.0  # bound on waiting for processes to disappear

# Placements of the demo's nodes: node -> process ("main" when absent).
PLACEMENTS: dict[str, tuple[dict[str, str], str | None]] = {
    "one-process": ({}, None),
    "dsp-worker": ({"bandpass": "dsp", "logvar": "dsp"}, None),
    "dsp-and-decoder-workers": ({"bandpass": "dsp", "logvar": "dsp", "decoder": "dec"}, None),
    "two-workers-tcp": ({"bandpass": "dsp", "logvar": "dsp", "decoder": "dec"}, "tcp"),
}
SPLIT = [name for name in PLACEMENTS if name != "one-process"]


# -- helpers ------------------------------------------------------------------------------------
def demo_config(placement: dict[str, str], *, transport: str | None = None,
                clock: str | None = None, duration: float | None = None) -> dict[str, Any]:
    """The shipped demo pipeline with nodes placed in processes.

    The feedback node's LSL outlet and console lines are turned off: they do not
    change any decision, and the tests compare decisions through the session's
    events and the nodes' summaries instead. The simulated user's feedback edge
    is removed in every placement: a delayed edge may not cross processes, and
    the placements must run the same graph to be compared.
    """
    config = yaml.safe_load(DEMO.read_text())
    for node, process in placement.items():
        config["nodes"][node]["process"] = process
    del config["nodes"]["eeg"]["inputs"]
    config["nodes"]["feedback"].setdefault("params", {}).update(lsl=False, console=False)
    if transport is not None:
        config["transport"] = transport
    if clock is not None:
        config["clock"] = clock
    if duration is not None:
        config["duration"] = duration
    return config


def write_pipeline(directory: Path, name: str, config: dict[str, Any]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_events(session_dir: Path) -> list[dict[str, Any]]:
    """Events of a session so far (a line being written is skipped)."""
    events = []
    try:
        text = (session_dir / "events.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return events


def wait_for_event(session_dir: Path, kind: str, proc: subprocess.Popen,
                   timeout: float = STARTUP_TIMEOUT_S) -> dict[str, Any]:
    """First ``kind`` event of a running session; fails if the run ends or times out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in read_events(session_dir):
            if event["event"] == kind:
                return event
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before '{kind}':\n{err}\n{out}")
        time.sleep(0.05)
    pytest.fail(f"no '{kind}' event within {timeout:g} s: {read_events(session_dir)}")


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Processes still running; zombies count as gone (dead, only not reaped yet)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(procs: list[psutil.Process], timeout: float = GONE_TIMEOUT_S) -> list[psutil.Process]:
    """Wait (bounded) until every process is gone; returns the survivors."""
    deadline = time.monotonic() + timeout
    left = alive(procs)
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.2)
        left = alive(left)
    return left


def describe(procs: list[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            out.append(str(p.pid))
    return "; ".join(out)


class RunWatcher:
    """Remembers every descendant of a running ``bci run`` and its ipc:// socket folders.

    psutil.Process objects keep the creation time, so a reused pid is never
    mistaken for one of the run's processes.
    """

    def __init__(self, pid: int) -> None:
        self.main = psutil.Process(pid)
        self.seen: dict[int, psutil.Process] = {}
        self.socket_dirs: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.snapshot()
            self._stop.wait(0.05)

    def snapshot(self) -> None:
        try:
            for child in self.main.children(recursive=True):
                self.seen.setdefault(child.pid, child)
            for conn in self.main.net_connections(kind="unix"):
                path = conn.laddr if isinstance(conn.laddr, str) else ""
                if path.endswith("/main.sock") and Path(path).parent.name.startswith("bci-"):
                    self.socket_dirs.add(Path(path).parent)
        except psutil.Error:  # the run ended
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    @property
    def processes(self) -> list[psutil.Process]:
        return list(self.seen.values())


def start_run(pipeline: Path, session_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*BCI, "run", str(pipeline), "--json", "--session-dir", str(session_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        start_new_session=True,  # signals aimed at the run never reach pytest
    )


def reap(proc: subprocess.Popen, watcher: RunWatcher | None = None) -> None:
    """Safety net after a failed assertion: kill the run and what it started, by pid."""
    if watcher is not None:
        watcher.stop()
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError):
        pass
    for p in alive(watcher.processes if watcher else []):
        try:
            p.kill()
        except psutil.Error:
            pass


def run_cli(pipeline: Path, session_dir: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """``bci run PIPELINE --json``: (exit code, summary, stderr)."""
    proc = subprocess.run(
        [*BCI, "run", str(pipeline), "--json", "--session-dir", str(session_dir), *extra],
        capture_output=True, text=True, cwd=str(ROOT), timeout=RUN_TIMEOUT_S,
    )
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON summary (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return proc.returncode, summary, proc.stderr


def outputs_of(summary: dict[str, Any], session_dir: Path) -> dict[str, Any]:
    """What must not depend on placement: decisions, scores, training, and trial votes."""
    events = read_events(session_dir)
    strip = ("t", "time", "process")  # when and where, not what
    return {
        "status": summary["status"],
        "samples": summary["samples"],
        "decisions": summary["decisions"],
        "accuracy": summary["accuracy"],
        "scored": summary.get("scored"),
        "trials_scored": summary.get("trials_scored"),
        "trial_accuracy": summary.get("trial_accuracy"),
        "training": summary["training"],
        "bad_chunks": summary["bad_chunks"],
        "decoder_trained": [{k: v for k, v in e.items() if k not in strip}
                            for e in events if e["event"] == "decoder_trained"],
        "trial_scored": [{k: v for k, v in e.items() if k not in strip}
                         for e in events if e["event"] == "trial_scored"],
    }


# -- 1. same outputs, whatever the placement ---------------------------------------------------
@pytest.fixture(scope="module")
def one_process_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("one-process")
    placement, transport = PLACEMENTS["one-process"]
    path = write_pipeline(tmp, "demo", demo_config(placement, transport=transport))
    code, summary, err = run_cli(path, tmp / "session", "--clock", "simulated",
                                 "--duration", str(SIM_DURATION_S))
    assert code == 0, err
    assert summary["processes"] == {}
    return outputs_of(summary, tmp / "session")


@pytest.mark.slow
def test_one_process_reference_is_meaningful(one_process_outputs: dict[str, Any]) -> None:
    """The reference run calibrates the decoder and scores several trials (else equality is empty)."""
    out = one_process_outputs
    assert out["status"] == "completed"
    assert out["decisions"] > 100
    assert len(out["decoder_trained"]) == 1
    assert len(out["trial_scored"]) >= 3
    assert all(sum(e["votes"]) > 0 for e in out["trial_scored"])


@pytest.mark.slow
@pytest.mark.parametrize("placement", SPLIT)
def test_split_run_gives_the_same_outputs_cli(placement: str, tmp_path: Path,
                                              one_process_outputs: dict[str, Any]) -> None:
    nodes, transport = PLACEMENTS[placement]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, transport=transport))
    code, summary, err = run_cli(path, tmp_path / "session", "--clock", "simulated",
                                 "--duration", str(SIM_DURATION_S))
    assert code == 0, err
    workers = set(nodes.values())
    assert set(summary["processes"]) == workers
    for name, info in summary["processes"].items():
        assert info["exitcode"] == 0, summary["processes"]
        assert set(info["nodes"]) == {n for n, p in nodes.items() if p == name}
    assert outputs_of(summary, tmp_path / "session") == one_process_outputs


def _run_in_process(path: Path) -> tuple[Any, dict[str, Any], list[tuple[np.ndarray, np.ndarray]],
                                         list[tuple[str, dict[str, Any]]]]:
    """Run a pipeline with :class:`Runner` here; record every decision the feedback node gets.

    The feedback sink stays in the main process, so wrapping its ``process``
    sees every decision exactly as it arrived (from a worker or not).
    """
    graph = load_graph(path)
    decisions: list[tuple[np.ndarray, np.ndarray]] = []
    feedback = graph.nodes["feedback"]
    original = feedback.process

    def recording_process(port: str, chunk: Any) -> Any:
        if port == "decision":  # views of zmq frames when remote: copy
            decisions.append((np.array(chunk.timestamps, copy=True), np.array(chunk.data, copy=True)))
        return original(port, chunk)

    feedback.process = recording_process  # type: ignore[method-assign]
    events: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def emit(kind: str, **fields: Any) -> None:
        with lock:
            events.append((kind, fields))

    result = Runner(graph, emit_event=emit).run()
    return result, build_summary(result, graph.config.name, None), decisions, events


def _stacked(decisions: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.concatenate([t for t, _ in decisions]) if decisions else np.empty(0)
    data = np.concatenate([d for _, d in decisions]) if decisions else np.empty((0, 2))
    return ts, data


@pytest.fixture(scope="module")
def one_process_decisions(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("one-process-in-process")
    path = write_pipeline(tmp, "demo", demo_config({}, clock="simulated", duration=SIM_DURATION_S))
    result, summary, decisions, _ = _run_in_process(path)
    assert result.status == "completed", result.reason
    ts, data = _stacked(decisions)
    assert len(ts) == summary["decisions"] > 100
    return ts, data


@pytest.mark.slow
@pytest.mark.parametrize("placement", SPLIT)
def test_split_run_gives_bitwise_identical_decisions(
        placement: str, tmp_path: Path, one_process_decisions: tuple[np.ndarray, np.ndarray]) -> None:
    """Every decision (class probabilities and timestamp) is the same, bit for bit."""
    nodes, transport = PLACEMENTS[placement]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, transport=transport,
                                                        clock="simulated", duration=SIM_DURATION_S))
    result, summary, decisions, events = _run_in_process(path)
    assert result.status == "completed", result.reason
    assert result.error is None
    assert {e[0] for e in events} >= {"workers_started", "run_started", "run_ended"}
    ts, data = _stacked(decisions)
    ref_ts, ref_data = one_process_decisions
    assert ts.shape == ref_ts.shape and data.shape == ref_data.shape
    assert np.array_equal(ts, ref_ts)
    assert np.array_equal(data, ref_data)  # exact: the same bytes crossed the processes


# -- 2. a worker that dies ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("victim", "clock"), [("dsp", "live"), ("dec", "live"),
                                               ("dsp", "simulated")])
def test_killed_worker_fails_the_run_naming_its_nodes(victim: str, clock: str,
                                                      tmp_path: Path) -> None:
    """SIGKILL a worker mid-run: exit 1, an error naming its nodes, nothing left behind.

    ``dsp`` is upstream of ``dec`` (whose input then never ends); on the
    simulated clock the main process is waiting on the cycle barrier.
    """
    nodes = PLACEMENTS["dsp-and-decoder-workers"][0]
    duration = 600 if clock == "live" else 1e6  # never reached: the kill ends the run
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, clock=clock, duration=duration))
    session = tmp_path / "session"
    proc = start_run(path, session)
    watcher = RunWatcher(proc.pid)
    try:
        started = wait_for_event(session, "workers_started", proc)
        wait_for_event(session, "run_started", proc)  # data flowing, not start-up
        watcher.snapshot()
        pid = started["workers"][victim]["pid"]
        victim_nodes = started["workers"][victim]["nodes"]
        assert victim_nodes == [n for n, p in nodes.items() if p == victim]
        worker = watcher.seen.get(pid) or psutil.Process(pid)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except BaseException:
        reap(proc, watcher)
        raise
    watcher.stop()

    assert proc.returncode == 1, err
    message = err.lower()
    assert "died" in message
    for node in victim_nodes:
        assert node in err
    summary = json.loads(out)
    assert summary["status"] == "failed"
    assert "died" in summary["reason"] and all(n in summary["reason"] for n in victim_nodes)
    assert summary["processes"][victim]["exitcode"] == -signal.SIGKILL
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "died" in manifest["error"]
    failures = [e for e in read_events(session) if e["event"] == "failure"]
    assert failures and failures[0]["type"] == "WorkerDiedError"

    assert not alive([worker])
    assert not alive([watcher.main])
    assert len(watcher.processes) >= 2  # the watcher did see the workers
    left = wait_gone(watcher.processes)
    assert not left, f"processes left behind: {describe(left)}"
    assert watcher.socket_dirs, "the run's ipc:// folder was not seen"
    for d in watcher.socket_dirs:
        assert not d.exists(), f"ipc:// socket folder {d} left behind"


# -- 3. the main process killed -------------------------------------------------------------------
@pytest.mark.slow
def test_workers_die_with_a_killed_main_process(tmp_path: Path) -> None:
    nodes = PLACEMENTS["dsp-and-decoder-workers"][0]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, clock="live", duration=600))
    session = tmp_path / "session"
    proc = start_run(path, session)
    watcher = RunWatcher(proc.pid)
    try:
        started = wait_for_event(session, "workers_started", proc)
        watcher.snapshot()
        workers = [watcher.seen.get(w["pid"]) or psutil.Process(w["pid"])
                   for w in started["workers"].values()]
        assert len(workers) == 2
        watcher.stop()
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    except BaseException:
        reap(proc, watcher)
        raise
    try:
        assert proc.returncode == -signal.SIGKILL
        left = wait_gone(workers)
        assert not left, f"workers outlived the main process: {describe(left)}"
        # and so did nothing else it started (multiprocessing's resource tracker included)
        left = wait_gone(watcher.processes)
        assert not left, f"processes left behind: {describe(left)}"
    finally:
        reap(proc, watcher)
        for d in watcher.socket_dirs:  # nobody was left to remove it: a SIGKILL is not caught
            shutil.rmtree(d, ignore_errors=True)


# -- 4. clean normal shutdown ---------------------------------------------------------------------
@pytest.mark.slow
def test_split_live_run_shuts_down_cleanly(tmp_path: Path) -> None:
    nodes = PLACEMENTS["dsp-and-decoder-workers"][0]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, clock="live", duration=3))
    session = tmp_path / "session"
    proc = start_run(path, session)
    watcher = RunWatcher(proc.pid)
    try:
        started = wait_for_event(session, "workers_started", proc)
        watcher.snapshot()
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except BaseException:
        reap(proc, watcher)
        raise
    watcher.stop()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["status"] == "completed"
    assert summary["samples"] > 0
    assert set(summary["processes"]) == {"dsp", "dec"}
    for name, info in summary["processes"].items():
        assert info["exitcode"] == 0, summary["processes"]
        assert info["pid"] == started["workers"][name]["pid"]
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert {k: v["exitcode"] for k, v in manifest["processes"].items()} == {"dsp": 0, "dec": 0}
    left = wait_gone(watcher.processes)
    assert not left, f"processes left behind: {describe(left)}"
    assert watcher.socket_dirs, "the run's ipc:// folder was not seen"
    for d in watcher.socket_dirs:
        assert not d.exists(), f"ipc:// socket folder {d} left behind"


@pytest.mark.slow
def test_sigint_stops_a_split_run_cleanly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops cleanly."""
    nodes = PLACEMENTS["dsp-and-decoder-workers"][0]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, clock="live", duration=600))
    session = tmp_path / "session"
    proc = start_run(path, session)
    watcher = RunWatcher(proc.pid)
    try:
        wait_for_event(session, "run_started", proc)
        watcher.snapshot()
        os.killpg(proc.pid, signal.SIGINT)  # the group this test started (start_new_session)
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except BaseException:
        reap(proc, watcher)
        raise
    watcher.stop()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["status"] == "stopped"
    assert "SIGINT" in summary["reason"]
    assert {k: v["exitcode"] for k, v in summary["processes"].items()} == {"dsp": 0, "dec": 0}
    assert json.loads((session / "manifest.json").read_text())["status"] == "stopped"
    left = wait_gone(watcher.processes)
    assert not left, f"processes left behind: {describe(left)}"
    for d in watcher.socket_dirs:
        assert not d.exists(), f"ipc:// socket folder {d} left behind"


@pytest.mark.slow
def test_split_simulated_run_removes_its_socket_folder_and_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process run: the exact ipc:// folder it made is gone, and so are its workers."""
    made: list[str] = []
    original = runner_module.make_run_dir

    def recording_make_run_dir() -> str:
        made.append(original())
        return made[-1]

    monkeypatch.setattr(runner_module, "make_run_dir", recording_make_run_dir)
    nodes = PLACEMENTS["dsp-and-decoder-workers"][0]
    path = write_pipeline(tmp_path, "demo", demo_config(nodes, clock="simulated", duration=10))
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    graph = load_graph(path)
    runner = Runner(graph)
    result = runner.run()
    assert result.status == "completed", result.reason
    assert len(made) == 1 and Path(made[0]).name.startswith("bci-")
    assert not Path(made[0]).exists(), f"ipc:// folder {made[0]} left behind"
    assert {k: v["exitcode"] for k, v in result.processes.items()} == {"dsp": 0, "dec": 0}
    for worker in runner._workers.values():
        assert not worker.process.is_alive()
    new = [p for p in me.children(recursive=True) if p.pid not in before]
    # multiprocessing's resource tracker is this (pytest) process's, started once, kept for reuse
    new = [p for p in new if "resource_tracker" not in " ".join(p.cmdline())]
    assert not alive(new), f"children left behind: {describe(new)}"


# -- 5. a worker's node fails at open -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.lsl
def test_worker_node_failing_at_open_fails_the_run(tmp_path: Path) -> None:
    """An LSL inlet in a worker finds no stream: exit 1, the node named, nothing left behind."""
    stream = f"bci-test-no-such-stream-{uuid.uuid4().hex[:12]}"
    config = {
        "name": "inlet-in-worker",
        "clock": "live",
        "duration": 60,
        "nodes": {
            "inlet": {"type": "lsl_inlet", "process": "acq",
                      "params": {"name": stream, "channels": 8, "srate": 250,
                                 "resolve_timeout_s": 1.0}},
            "bandpass": {"type": "bandpass", "params": {"low": 8, "high": 30},
                         "inputs": {"signal": "inlet.signal"}},
            "logvar": {"type": "log_variance", "params": {"window_s": 1.0, "step_s": 0.1},
                       "inputs": {"signal": "bandpass.filtered"}},
        },
    }
    path = write_pipeline(tmp_path, "inlet", config)
    session = tmp_path / "session"
    proc = start_run(path, session)
    watcher = RunWatcher(proc.pid)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except BaseException:
        reap(proc, watcher)
        raise
    watcher.stop()
    assert proc.returncode == 1, err
    assert "'inlet'" in err and stream in err
    summary = json.loads(out)
    assert summary["status"] == "failed"
    assert "'inlet'" in summary["reason"]
    events = read_events(session)
    started = [e for e in events if e["event"] == "workers_started"]
    assert started and list(started[0]["workers"]) == ["acq"]
    failures = [e for e in events if e["event"] == "worker_failure"]
    assert failures and failures[0]["process"] == "acq"
    assert failures[0]["type"] == "StreamNotFoundError"
    assert json.loads((session / "manifest.json").read_text())["status"] == "failed"
    pid = started[0]["workers"]["acq"]["pid"]
    assert pid in watcher.seen, "the watcher did not see the worker"
    left = wait_gone(watcher.processes)
    assert not left, f"processes left behind: {describe(left)}"
    for d in watcher.socket_dirs:
        assert not d.exists(), f"ipc:// socket folder {d} left behind"
