"""Session folders: resolved configuration, manifest, events log, summary.

Layout of one session folder::

    config.yaml      the resolved pipeline (defaults filled in)
    manifest.json    code version, configuration hash, seed, processes, start/stop, status
    events.jsonl     one JSON object per line: start, bad chunks, training, errors, stop
    summary.json     the run's figures (samples, decisions, accuracy, latency)

Files are written as the run goes: the manifest at start (status ``running``),
events as they happen (written by a writer thread, off the graph's hot path,
flushed at once and fsynced within a second), so a crash keeps everything up to
the last second.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bci_runtime import __version__
from bci_runtime.config import PipelineConfig
from bci_runtime.errors import ConfigError

FSYNC_INTERVAL_S = 1.0


def code_version() -> dict[str, Any]:
    """Package version, and the git commit when running from a checkout."""
    out: dict[str, Any] = {"package": __version__}
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        out.update(git_commit=commit, git_dirty=bool(dirty))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Session:
    """A session folder being written.

    Parameters
    ----------
    config : PipelineConfig
        The resolved configuration.
    source_file : str
        Where the configuration came from.
    directory : Path, optional
        Exact folder to use (must be absent or empty); default
        ``sessions/<UTC time>_<pipeline name>``.
    root : Path
        Parent of the default folder.
    """

    def __init__(self, config: PipelineConfig, source_file: str, directory: Path | None = None,
                 root: Path = Path("sessions")) -> None:
        if directory is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            directory = root / f"{stamp}_{config.name}"
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ConfigError(
                f"session folder '{directory}' already exists and is not empty",
                hint="choose a new --session-dir (sessions are never overwritten)",
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create session folder '{directory}': {exc}",
                              hint="check the path and its permissions") from None
        self.dir = directory
        self._last_sync = time.monotonic()
        self.manifest: dict[str, Any] = {
            "pipeline": config.name,
            "pipeline_file": source_file,
            "config_sha256": config.canonical_hash(),
            "seed": config.seed,
            "clock": config.clock,
            "code_version": code_version(),
            "host": {"python": platform.python_version(), "platform": platform.platform()},
            "processes": {},
            "started": _now_iso(),
            "stopped": None,
            "status": "running",
        }
        (self.dir / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
        )
        self._write_json("manifest.json", self.manifest)
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_events, name="session-events",
                                        daemon=True)
        self._writer.start()

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(json_safe(data), fh, indent=2, default=_json_default, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)

    def log_event(self, kind: str, **fields: Any) -> None:
        """Queue one event for the writer thread (thread safe, never blocks on disk).

        Called from the graph's hot path: formatting, writing and fsync happen on
        the writer thread, which writes each event at once and fsyncs at least
        every second while events keep coming.
        """
        self._queue.put({"t": time.monotonic(), "time": _now_iso(), "event": kind, **fields})

    def _write_events(self) -> None:
        """Writer thread: append queued events; fsync within a second of each write."""
        pending_sync = False
        while True:
            try:
                record = self._queue.get(timeout=FSYNC_INTERVAL_S if pending_sync else None)
            except queue.Empty:  # quiet for a second: make what was written durable
                os.fsync(self._events.fileno())
                pending_sync = False
                continue
            if record is None:
                break
            self._events.write(json.dumps(json_safe(record), default=_json_default) + "\n")
            self._events.flush()
            pending_sync = True
            now = time.monotonic()
            if now - self._last_sync >= FSYNC_INTERVAL_S:
                os.fsync(self._events.fileno())
                self._last_sync, pending_sync = now, False
        self._events.flush()
        os.fsync(self._events.fileno())

    def set_processes(self, processes: dict[str, Any]) -> None:
        """Record the worker processes (name -> pid, nodes) in the manifest."""
        self.manifest["processes"] = processes
        self._write_json("manifest.json", self.manifest)

    def finalize(self, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        """Write the summary, close the events log and mark the manifest stopped."""
        self._write_json("summary.json", summary)
        if self._writer.is_alive():
            self._queue.put(None)  # the writer drains what is queued, fsyncs, and ends
            self._writer.join(10.0)
        if not self._events.closed:
            self._events.close()
        self.manifest.update(stopped=_now_iso(), status=status, error=error)
        self._write_json("manifest.json", self.manifest)
