"""What ``bci replay`` replays: a file or a session, through which pipeline, and how it went.

A **session** (a folder with ``manifest.json`` and a recording) is replayed
through its own pipeline (``config.yaml``) or another one: each source node of
the pipeline is replaced by a ``file_replay`` node fed by what that source
emitted in the session (streams ``<node>.<port>``), chunk by chunk as the
session's ``<node>.chunks`` index says. On the simulated clock a seeded
pipeline then reproduces every recorded output exactly; :func:`compare_recordings`
checks it stream by stream.

A **file** replayed through a pipeline feeds the pipeline's one source node
(``signal`` = the file's first numeric stream, ``markers`` = its first marker
stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bci_runtime.config import PipelineConfig
from bci_runtime.errors import ConfigError
from bci_runtime.node import BlockingSource, Source
from bci_runtime.registry import get_node_class
from bci_runtime.session_store import load_session, recording_path

REPLAY_TYPE = "file_replay"


@dataclass(frozen=True)
class SessionRef:
    """A recorded session: its folder, manifest, pipeline and recording."""

    dir: Path
    manifest: dict[str, Any]
    config: PipelineConfig
    recording: Path


def is_session(path: Path) -> bool:
    """Whether ``path`` is a session folder."""
    return path.is_dir() and (path / "manifest.json").is_file()


def open_session(path: Path) -> SessionRef:
    """Read a session folder's manifest and pipeline, and find its recording.

    Raises
    ------
    ConfigError
        When the manifest or pipeline cannot be read, or the session has no recording
        (:class:`~bci_runtime.errors.RecordingError` when its file is missing).
    """
    info = load_session(path)
    recording = recording_path(info)  # checks the manifest and that the file is there
    try:
        config = PipelineConfig.model_validate(
            yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"session '{path}': its pipeline config.yaml cannot be read: {exc}",
                          hint="replay it through a pipeline file: --pipeline P") from None
    return SessionRef(path, info.manifest or {}, config, recording)


def source_nodes(config: PipelineConfig) -> list[str]:
    """Names of the pipeline's source nodes (by node class, without building the graph)."""
    names = []
    for name, node in config.nodes.items():
        cls = get_node_class(node.type)
        if issubclass(cls, (Source, BlockingSource)):
            names.append(name)
    return names


def model_swaps(config: PipelineConfig, recording: Any) -> dict[str, list[float]]:
    """When each recorded model was installed, for the nodes of ``config`` that can replay it.

    A decoder that fits or updates in the background on the live clock installs a
    new model at whichever chunk follows the end of the work; the recording says
    which one: its ``<node>.model`` stream holds one ``model/<kind> {json}`` marker
    per event, and the installs carry ``first_window``, the timestamp of the first
    window the new model served. Nodes whose parameters take ``install_at`` get
    those timestamps back, so an exact replay installs at the same windows.

    Returns
    -------
    dict of str to list of float
        Node name -> first-window timestamps, in recorded order.
    """
    names = {s.spec.name: s for s in recording.streams}
    swaps: dict[str, list[float]] = {}
    for name, node in config.nodes.items():
        stream = names.get(f"{name}.model")
        if stream is None or "install_at" not in get_node_class(node.type).Params.model_fields:
            continue
        swaps[name] = [t for t in map(_first_window, stream.data[:, 0]) if t is not None]
    return swaps


def _first_window(marker: Any) -> float | None:
    """``first_window`` of a ``model/<kind> {json}`` marker, None when it has none."""
    text = str(marker)
    if not text.startswith("model/") or " " not in text:
        return None
    try:
        details = json.loads(text.split(" ", 1)[1])
    except ValueError:
        return None
    value = details.get("first_window") if isinstance(details, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def replay_pipeline(config: PipelineConfig, recording: Path, feeds: dict[str, dict[str, str]],
                    chunk_indexes: dict[str, str], *, clock: str, speed: float,
                    duration: float | None,
                    swaps: dict[str, list[float]] | None = None) -> PipelineConfig:
    """``config`` with source nodes replaced by ``file_replay`` nodes.

    Parameters
    ----------
    config : PipelineConfig
        The pipeline to run.
    recording : Path
        The file every replaced source reads.
    feeds : dict of str to dict of str to str
        Source node -> (its output port -> stream name in the file).
    chunk_indexes : dict of str to str
        Source node -> its ChunkIndex stream, where the file has one.
    clock : {"simulated", "live"}
        The run's clock.
    speed : float
        Replay speed on the live clock.
    duration : float or None
        Seconds to run; None until the file ends.
    swaps : dict of str to list of float, optional
        Node -> when its recorded models went online (:func:`model_swaps`).
    """
    nodes = dict(config.nodes)
    for name, install_at in (swaps or {}).items():
        node = nodes[name]
        nodes[name] = node.model_copy(update={"params": {**node.params,
                                                         "install_at": install_at}})
    for name, ports in feeds.items():
        original = nodes[name]
        params: dict[str, Any] = {"path": str(recording), "ports": ports, "speed": speed}
        # what the replaced source expected of its stream is checked against the file
        for key, value in original.params.items():
            if key in ("channels", "n_channels") and isinstance(value, int):
                params["channels"] = value
            elif key == "srate" and isinstance(value, (int, float)):
                params["srate"] = value
        if name in chunk_indexes:
            params["chunk_index"] = chunk_indexes[name]
        # a replayed source has no inputs: what fed it back (a simulated user's view of
        # the feedback) is already in the recording
        nodes[name] = original.model_copy(update={"type": REPLAY_TYPE, "params": params,
                                                  "inputs": {}})
    return config.model_copy(update={
        "nodes": nodes, "clock": clock, "duration": duration,
        "name": config.name if config.name.endswith("-replay") else f"{config.name}-replay"})


def session_feeds(session: SessionRef, config: PipelineConfig,
                  streams: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Which recorded streams feed which source of ``config``.

    Returns
    -------
    feeds : dict of str to dict of str to str
        Source node -> (port -> recorded stream ``<node>.<port>``).
    chunk_indexes : dict of str to str
        Source node -> its ``<node>.chunks`` stream.
    """
    feeds: dict[str, dict[str, str]] = {}
    indexes: dict[str, str] = {}
    for node in source_nodes(config):
        ports = {s.split(".", 1)[1]: s for s in streams
                 if s.startswith(node + ".") and s != f"{node}.chunks"}
        if not ports:
            recorded = sorted({s.split(".", 1)[0] for s in streams})
            raise ConfigError(
                f"source node '{node}' of the pipeline has no stream in session "
                f"'{session.dir}' (recorded nodes: {', '.join(recorded)})",
                hint="replay through a pipeline whose sources have the session's node names")
        feeds[node] = ports
        if f"{node}.chunks" in streams:
            indexes[node] = f"{node}.chunks"
    return feeds, indexes


def file_feeds(config: PipelineConfig, recording: Any,
               source: str | None) -> dict[str, dict[str, str]]:
    """Feed a plain file to the pipeline's one source (or ``source``)."""
    sources = source_nodes(config)
    if source is None:
        if len(sources) != 1:
            raise ConfigError(
                f"pipeline '{config.name}' has {len(sources)} source nodes "
                f"({', '.join(sources) or 'none'}); which one should the file feed?",
                hint="pass --source NODE")
        source = sources[0]
    elif source not in sources:
        raise ConfigError(f"'{source}' is not a source node of pipeline '{config.name}' "
                          f"(sources: {', '.join(sources) or 'none'})",
                          hint="pass the name of a source node to --source")
    ports = {}
    if recording.signals():
        ports["signal"] = recording.signals()[0].spec.name
    if recording.markers():
        ports["markers"] = recording.markers()[0].spec.name
    return {source: ports}


@dataclass
class StreamComparison:
    """How one output stream of a replay compares with the original session's."""

    name: str
    samples: int
    original_samples: int
    identical: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "samples": self.samples,
                "original_samples": self.original_samples, "identical": self.identical,
                "detail": self.detail}


def compare_recordings(original: Path, replay: Path, replayed_sources: list[str]
                       ) -> list[StreamComparison]:
    """Compare every stream the replay computed with the same stream in the original.

    Streams of the replayed sources (their data were copied) and chunk indexes are
    skipped; values and timestamps must be bit-identical.
    """
    from bci_runtime.drivers.file_replay import cached_recording
    from bci_runtime.drivers.recordings import load_recording

    before = {s.spec.name: s for s in cached_recording(original).streams}
    after = {s.spec.name: s for s in load_recording(replay).streams}
    out = []
    for name, new in after.items():
        node = name.split(".", 1)[0]
        if node in replayed_sources or name not in before:
            continue
        old = before[name]
        identical, detail = _same(old.data, old.timestamps, new.data, new.timestamps)
        out.append(StreamComparison(name, len(new.timestamps), len(old.timestamps),
                                    identical, detail))
    return out


def _same(a: np.ndarray, ta: np.ndarray, b: np.ndarray, tb: np.ndarray) -> tuple[bool, str]:
    if len(ta) != len(tb):
        return False, f"{len(tb)} samples, the original has {len(ta)}"
    if a.shape != b.shape:
        return False, f"shape {b.shape}, the original has {a.shape}"
    values = (a == b) if a.dtype == object else (a == b) | (np.isnan(a) & np.isnan(b))
    bad = np.flatnonzero(~values.all(axis=1) | (ta != tb))
    if len(bad):
        return False, (f"{len(bad)} of {len(tb)} samples differ, the first at t={tb[bad[0]]:.6f}")
    return True, "identical"
