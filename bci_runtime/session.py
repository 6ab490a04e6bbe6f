"""Session folders: resolved configuration, manifest, events log, recording, summary.

Sessions are laid out like BIDS, one folder per run, numbered per subject and
never overwritten::

    sessions/sub-<subject>/ses-<NN>/
        config.yaml      the resolved pipeline (defaults filled in)
        manifest.json    code version, configuration hash, seeds, devices, streams,
                         models, processes, start/stop, exit status, SHA-256 of every file
        events.jsonl     one JSON object per line: start, bad chunks, training, errors, stop
        sub-<subject>_ses-<NN>_task-<pipeline>_recording.xdf
                         every stream of the run (see :mod:`bci_runtime.session_recording`)
        summary.json     the run's figures (samples, decisions, accuracy, latency)
        SHA256SUMS       ``sha256sum -c`` checks every file, the manifest included

Files are written as the run goes: the manifest at start (status ``running``),
events and the recording as they happen (by writer threads, off the graph's hot
path, fsynced within a second), so a crash keeps everything up to the last
second.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bci_runtime import __version__
from bci_runtime.config import PipelineConfig
from bci_runtime.disk_space import check_free_space, required_free_bytes
from bci_runtime.errors import ConfigError
from bci_runtime.session_recording import XDF_FORMATS, SessionRecorder

if TYPE_CHECKING:
    from bci_runtime.graph import Graph

FSYNC_INTERVAL_S = 1.0
LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
SESSION_RE = re.compile(r"^ses-(\d+)$")
CHECKSUMS = "SHA256SUMS"


def check_label(kind: str, value: str) -> str:
    """``value`` if it is a BIDS label (letters and digits only), else a ConfigError."""
    if not LABEL_RE.match(value):
        raise ConfigError(f"{kind} id '{value}' is not a BIDS label",
                          hint=f"use letters and digits only for the {kind} id, e.g. '01' "
                               "or 'P003'")
    return value


def bids_label(text: str) -> str:
    """``text`` reduced to a BIDS label (letters and digits), e.g. a pipeline name as task."""
    return re.sub(r"[^A-Za-z0-9]", "", text) or "run"


def new_session_dir(root: Path, subject: str) -> Path:
    """Create and return ``root/sub-<subject>/ses-<NN>``, NN one more than the last one.

    Creation is atomic (``mkdir`` without ``exist_ok``), so two runs started at
    once get two sessions and nothing is ever overwritten.
    """
    check_label("subject", subject)
    subject_dir = Path(root) / f"sub-{subject}"
    try:
        subject_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in subject_dir.iterdir()
                   if (m := SESSION_RE.match(p.name))]
        n = max(numbers, default=0) + 1
        while True:
            candidate = subject_dir / f"ses-{n:02d}"
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                n += 1
    except OSError as exc:
        raise ConfigError(f"cannot create a session folder under '{subject_dir}': "
                          f"{exc.strerror or exc}",
                          hint="check the path and its permissions, or choose another "
                               "--sessions-root") from None


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        Exact folder to use (must be absent or empty); default the next
        ``<root>/sub-<subject>/ses-<NN>``.
    root : Path
        Where subjects' folders live.
    subject : str
        Pseudonymous subject id (a BIDS label: letters and digits).
    """

    def __init__(self, config: PipelineConfig, source_file: str, directory: Path | None = None,
                 root: Path = Path("sessions"), subject: str = "01") -> None:
        check_label("subject", subject)
        if directory is None:
            directory = new_session_dir(root, subject)
        else:
            directory = Path(directory)
            if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
                raise ConfigError(
                    f"session folder '{directory}' already exists and is not empty",
                    hint="choose a new --session-dir (sessions are never overwritten)",
                )
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create session folder '{directory}': "
                                  f"{exc.strerror or exc}",
                                  hint="check the path and its permissions") from None
        if not os.access(directory, os.W_OK):
            raise ConfigError(f"session folder '{directory}' is not writable",
                              hint="fix its permissions or choose another folder")
        self.dir = directory
        match = SESSION_RE.match(directory.name)
        self.label = match.group(1) if match else None
        self.subject = subject
        self.task = bids_label(config.name)
        self.prefix = (f"sub-{subject}" + (f"_ses-{self.label}" if self.label else "")
                       + f"_task-{self.task}")
        self.recorder: SessionRecorder | None = None
        self._last_sync = time.monotonic()
        self.manifest: dict[str, Any] = {
            "subject": subject,
            "session": self.label,
            "task": self.task,
            "pipeline": config.name,
            "pipeline_file": source_file,
            "config_sha256": config.canonical_hash(),
            "seed": config.seed,
            "seeds": {"pipeline": config.seed},
            "clock": config.clock,
            "code_version": code_version(),
            "host": {"python": platform.python_version(), "platform": platform.platform()},
            "devices": {},
            "streams": [],
            "models": {},
            "recording": None,
            "processes": {},
            "started": _now_iso(),
            "stopped": None,
            "status": "running",
            "files": {},
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

    def start_recording(self, graph: Graph, on_error: Any = None) -> SessionRecorder:
        """Check free space, then open the XDF recording of every stream of ``graph``.

        Parameters
        ----------
        graph : Graph
            The configured graph; each node output port becomes a recorded stream.
        on_error : callable, optional
            ``on_error(exc)`` when writing fails (e.g. ``Runner.fail``).

        Raises
        ------
        ConfigError
            When the disk has not room for 10 minutes of the streams (at least 32 MiB).
        """
        specs = list(graph.specs.values())
        check_free_space(self.dir, required_free_bytes(
            [(s.srate, s.n_channels, XDF_FORMATS.get(s.dtype, "double64")) for s in specs]),
            f"session '{self.dir}'")
        sources = {name: list(graph.nodes[name].outputs) for name in graph.sources()}
        self.manifest["devices"] = {
            name: {"type": graph.config.nodes[name].type,
                   "params": graph.nodes[name].params.model_dump(mode="json")}
            for name in graph.sources()}
        name = f"{self.prefix}_recording.xdf"
        self.recorder = SessionRecorder(self.dir / name, sources, on_error,
                                        session_id=f"bci-runtime:{self.prefix}")
        self.manifest["recording"] = name
        self._write_json("manifest.json", self.manifest)
        return self.recorder

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

    def close_recording(self) -> None:
        """Complete the recording (what is queued, then the footers); idempotent."""
        if self.recorder is not None:
            self.recorder.close()
            self.manifest["streams"] = self.recorder.manifest_streams()

    def set_processes(self, processes: dict[str, Any]) -> None:
        """Record the worker processes (name -> pid, nodes) in the manifest."""
        self.manifest["processes"] = processes
        self._write_json("manifest.json", self.manifest)

    def finalize(self, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        """Close the recording, write the summary, close the events log, mark the manifest
        stopped with every file's SHA-256, and write ``SHA256SUMS``."""
        self.close_recording()
        if self.recorder is not None and self.recorder.error is not None and error is None:
            error = str(self.recorder.error)
        self._write_json("summary.json", summary)
        if self._writer.is_alive():
            self._queue.put(None)  # the writer drains what is queued, fsyncs, and ends
            self._writer.join(10.0)
        if not self._events.closed:
            self._events.close()
        self.manifest.update(stopped=_now_iso(), status=status, error=error)
        self.manifest["models"] = self._model_versions()
        self.manifest["files"] = self._hash_files(exclude={"manifest.json", CHECKSUMS})
        self._write_json("manifest.json", self.manifest)
        sums = self._hash_files(exclude={CHECKSUMS})
        (self.dir / CHECKSUMS).write_text("".join(f"{h}  {p}\n" for p, h in sums.items()))

    def _model_versions(self) -> dict[str, Any]:
        """Decoder nodes' model versions (``models/<node>/models.json``): file, hash, parent."""
        models: dict[str, Any] = {}
        for listing in sorted((self.dir / "models").glob("*/models.json")):
            try:
                entries = json.loads(listing.read_text(encoding="utf-8")).get("versions", {})
            except (OSError, ValueError):
                continue  # the file hashes below still cover it
            folder = listing.parent.relative_to(self.dir).as_posix()
            models[listing.parent.name] = {
                version: {"file": f"{folder}/{e.get('file')}", "sha256": e.get("sha256"),
                          "parent": e.get("parent"), "metrics": e.get("metrics", {})}
                for version, e in entries.items() if isinstance(e, dict)}
        return models

    def _hash_files(self, exclude: set[str]) -> dict[str, str]:
        """SHA-256 of every file in the session folder (relative POSIX path -> hex)."""
        out = {}
        for path in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            rel = path.relative_to(self.dir).as_posix()
            if rel not in exclude and not rel.endswith(".tmp"):
                out[rel] = sha256_of(path)
        return out
