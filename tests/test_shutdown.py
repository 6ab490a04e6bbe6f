"""Stopping `bci demo` (live clock) with SIGINT or SIGTERM leaves a complete session folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BCI = Path(sys.executable).with_name("bci")
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0
POLL_S = 0.2


def wait_for_event(proc: subprocess.Popen, events: Path, kind: str, log: Path) -> None:
    """Wait (bounded) until ``events`` holds an event of ``kind``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    needle = f'"event": "{kind}"'
    while time.monotonic() < deadline:
        if events.exists() and needle in events.read_text(encoding="utf-8"):
            return
        if proc.poll() is not None:
            pytest.fail(f"bci exited early with code {proc.returncode}:\n{log.read_text()}")
        time.sleep(POLL_S)
    pytest.fail(f"no '{kind}' event within {START_TIMEOUT_S:.0f} s:\n{log.read_text()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_demo_cleanly(tmp_path: Path, signum: int):
    assert BCI.exists(), f"no bci script next to {sys.executable}"
    session = tmp_path / "session"
    log = tmp_path / "bci.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BCI), "demo", "--duration", "300", "--session-dir", str(session)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "120"},
        )
        try:
            wait_for_event(proc, session / "events.jsonl", "run_started", log)
            proc.send_signal(signum)
            try:
                code = proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"bci did not exit within {EXIT_TIMEOUT_S:.0f} s of "
                            f"{signal.Signals(signum).name}:\n{log.read_text()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    output = log.read_text()
    assert code == 0, output
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "stopped", manifest
    assert manifest["stopped"] is not None
    assert manifest["stopped"] >= manifest["started"]  # ISO 8601 UTC strings sort by time
    assert manifest["error"] is None
    summary = json.loads((session / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert signal.Signals(signum).name in summary["reason"]
    records = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert "run_started" in kinds
    assert kinds[-1] == "run_ended" and records[-1]["status"] == "stopped"
    assert "failure" not in kinds


SLOW_START_PIPELINE = """\
name: slow-start
clock: live
duration: 300
nodes:
  eeg:
    type: simulated_eeg
    params: {n_channels: 8, srate: 250, chunk_size: 10}
  slow:
    type: nodes_for_tests:SlowOpen
    params: {open_delay_s: 120}
    inputs: {x: eeg.signal}
    process: slow
"""


def test_sigterm_while_a_worker_starts_stops_cleanly(tmp_path: Path):
    """A stop requested while a worker is still opening its nodes ends the run as 'stopped'.

    The worker's node takes 120 s to open; the run must not wait for it, and the
    worker process must not outlive the run.
    """
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(SLOW_START_PIPELINE, encoding="utf-8")
    session = tmp_path / "session"
    log = tmp_path / "bci.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BCI), "run", str(pipeline), "--session-dir", str(session), "--json"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_for_event(proc, session / "events.jsonl", "workers_started", log)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"bci did not exit within {EXIT_TIMEOUT_S:.0f} s:\n{log.read_text()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    assert code == 0, log.read_text()
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "stopped", manifest
    records = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert "run_started" not in kinds  # the stop came before the worker had opened
    assert kinds[-1] == "run_ended" and records[-1]["status"] == "stopped"
    pid = records[kinds.index("workers_started")]["workers"]["slow"]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker is gone
