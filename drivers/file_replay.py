"""File replay source: a recording's streams fed to a pipeline, in process.

Any file :func:`~bci_runtime.drivers.recordings.load_recording` reads (FIF,
EDF/BDF, GDF, BrainVision, EEGLAB..., XDF, or a session's recording) is cut
into chunks that are delivered when they are due:

- on the **simulated clock** the recorded timestamps are kept and the run goes
  as fast as the CPU allows; with a session's ``<node>.chunks`` index the very
  chunks the pipeline saw, at the very clock times, are fed again, so a seeded
  pipeline reproduces its outputs exactly;
- on the **live clock** each chunk is due at ``t0 + (t - t_first) / speed``
  (absolute deadlines, so timing errors never accumulate), and its timestamps
  are moved the same way, gaps and jitter of the recording included.

Markers (annotations, events, XDF marker streams) go out on an ``events`` port
with the chunk they fall in.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.errors import ConfigError, SpecMismatchError
from bci_runtime.node import NodeContext, NodeParams, Output, Source
from bci_runtime.spec import StreamSpec

DEFAULT_SIGNAL_PORT = "signal"
DEFAULT_MARKER_PORT = "markers"


class FileReplayParams(NodeParams):
    path: Path = Field(..., description="recording to replay (any format MNE reads, or XDF)")
    ports: dict[str, str] = Field(
        default_factory=dict,
        description="output port -> stream name in the file; default 'signal' = the first "
                    "numeric stream and 'markers' = the first marker stream")
    chunk_index: str | None = Field(
        None, description="a ChunkIndex stream of a session recording: replay its chunks "
                          "exactly (set by `bci replay SESSION`)")
    chunk_ms: float = Field(20.0, gt=0, le=1000, description="chunk length without an index")
    speed: float = Field(1.0, gt=0, le=1000, description="replay speed on the live clock")
    loop: bool = Field(False, description="start again at the end (live clock)")
    channels: int | None = Field(None, ge=1, description="channel count the pipeline expects")
    srate: float | None = Field(None, gt=0, description="rate the pipeline expects (Hz)")
    events_file: Path | None = Field(None, description="MNE events file for the recording "
                                                       "(default: X-eve.fif beside X_raw.fif)")

    @field_validator("ports")
    @classmethod
    def _port_names(cls, value: dict[str, str]) -> dict[str, str]:
        for port in value:
            if not port.isidentifier():
                raise ValueError(f"port name '{port}' must be a Python identifier")
        return value


class FileReplay(Source):
    """Replays a recorded file through the pipeline (see the module docstring).

    Its output ports follow the file: ``signal`` and ``markers`` by default, or
    the ports named in ``ports``. The file is read when the node is built, so
    ``bci validate`` already reports a missing or damaged file.
    """

    type_name = "file_replay"
    Params = FileReplayParams
    # the default ports, for `bci nodes`; each instance has the ports of its file
    signal = Output("signal", doc="a numeric stream of the file, (n_samples, n_channels)")
    markers = Output("events", doc="a marker stream of the file (annotations, events)")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        p = self.params
        self.recording = cached_recording(p.path, p.events_file)
        self._streams = self._choose_streams()
        self.outputs = {port: Output("events" if s.is_markers else "signal")
                        for port, s in self._streams.items()}

    def _choose_streams(self) -> dict[str, Any]:
        rec, p = self.recording, self.params
        if p.ports:
            return {port: rec.stream(stream) for port, stream in p.ports.items()}
        chosen = {}
        if rec.signals():
            chosen[DEFAULT_SIGNAL_PORT] = rec.signals()[0]
        if rec.markers():
            chosen[DEFAULT_MARKER_PORT] = rec.markers()[0]
        if not chosen:
            raise ConfigError(f"node '{self.name}': '{p.path}' holds no stream with samples",
                              hint="choose another recording")
        return chosen

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        specs = {port: s.spec for port, s in self._streams.items()}
        signals = sorted(((port, s) for port, s in specs.items() if s.dtype != "string"),
                         key=lambda item: item[0] != DEFAULT_SIGNAL_PORT)  # 'signal' first
        problems = []
        if signals and p.channels is not None and signals[0][1].n_channels != p.channels:
            problems.append(f"stream '{signals[0][1].name}' has {signals[0][1].n_channels} "
                            f"channels, the pipeline expects {p.channels}")
        if signals and p.srate is not None and abs(signals[0][1].srate - p.srate) > 1e-6 * p.srate:
            problems.append(f"stream '{signals[0][1].name}' is sampled at "
                            f"{signals[0][1].srate:g} Hz, the pipeline expects {p.srate:g} Hz")
        if problems:
            raise SpecMismatchError(f"node '{self.name}': '{p.path}' does not fit: "
                                    + "; ".join(problems),
                                    hint="fix 'channels'/'srate' or replay another file "
                                         "(resample it with MNE first)")
        return specs

    # -- schedule --------------------------------------------------------------------------
    def open(self, context: NodeContext) -> None:
        super().open(context)
        self._ports = list(self._streams)
        self._data = [self._streams[port].data for port in self._ports]
        self._ts = [self._streams[port].timestamps for port in self._ports]
        self._dues, self._bounds = self._plan()
        self._first = float(self._dues[0]) if len(self._dues) else 0.0
        self._period = self._loop_period()
        self._live = not context.clock.simulated
        self._t0 = context.clock.now()
        self._k = 0
        self._cycle = 0
        self._shifted_ts = self._ts if not self._live else [self._to_live(t) for t in self._ts]
        context.emit_event("replay_started", node=self.name, file=str(self.params.path),
                           ports={p: self._streams[p].spec.name for p in self._ports},
                           reads=len(self._dues), exact=self.params.chunk_index is not None)

    def _plan(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Read times and, per port, the sample index where each read ends.

        Returns
        -------
        dues : ndarray, shape (n_reads,)
            Recording-clock time of each read.
        bounds : list of ndarray, each shape (n_reads + 1,)
            Per port, read ``k`` delivers samples ``bounds[k]:bounds[k + 1]``.
        """
        p = self.params
        if p.chunk_index is not None:
            return self._plan_from_index(self.recording.stream(p.chunk_index))
        signal_ts = [ts for ts, port in zip(self._ts, self._ports)
                     if not self._streams[port].is_markers and len(ts)]
        if signal_ts:
            ts = signal_ts[0]
            srate = self._streams[self._ports[self._ts.index(ts)]].spec.srate or _rate(ts)
            step = max(1, int(round(p.chunk_ms / 1e3 * srate)))
            ends = np.append(np.arange(step, len(ts), step), len(ts))
            dues = ts[ends - 1]
        else:  # markers only: one read per marker time
            dues = np.unique(np.concatenate(self._ts))
        bounds = []
        for t in self._ts:
            b = np.searchsorted(t, dues, side="right")
            b[-1] = len(t)  # anything after the last read goes with it
            bounds.append(np.concatenate(([0], b)))
        return dues, bounds

    def _plan_from_index(self, index: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        names = list(index.spec.channel_names)
        counts = np.asarray(index.data, dtype=np.int64)
        bounds = []
        for port, ts in zip(self._ports, self._ts):
            if port not in names:
                raise ConfigError(f"node '{self.name}': chunk index '{index.spec.name}' has no "
                                  f"column for port '{port}' (it has {', '.join(names)})",
                                  hint="replay the session with `bci replay SESSION`")
            b = np.concatenate(([0], np.cumsum(counts[:, names.index(port)])))
            if b[-1] != len(ts):
                raise ConfigError(
                    f"node '{self.name}': chunk index '{index.spec.name}' counts {b[-1]} "
                    f"samples for port '{port}' but the file holds {len(ts)}",
                    hint="the recording was cut short: repair it with `bci record repair`, "
                         "or replay without the chunk index")
            bounds.append(b)
        return np.asarray(index.timestamps, dtype=np.float64), bounds

    def _loop_period(self) -> float:
        """Time from the first read of one pass to the first read of the next."""
        if len(self._dues) < 2:
            return 1.0
        return float(self._dues[-1] - self._dues[0]) + float(np.median(np.diff(self._dues)))

    def _to_live(self, t: np.ndarray) -> np.ndarray:
        return self._t0 + (t - self._first) / self.params.speed

    # -- Source API ----------------------------------------------------------------------------
    def next_due(self) -> float | None:
        if self._k >= len(self._dues):
            if not (self.params.loop and self._live) or not len(self._dues):
                return None
            self._k, self._cycle = 0, self._cycle + 1
        due = float(self._dues[self._k])
        if self._live:
            return self._t0 + (due - self._first + self._cycle * self._period) / self.params.speed
        return due

    def read(self) -> dict[str, AnyChunk]:
        k = self._k
        self._k += 1
        shift = self._cycle * self._period / self.params.speed if self._cycle else 0.0
        out: dict[str, AnyChunk] = {}
        for port, data, ts, bounds in zip(self._ports, self._data, self._shifted_ts,
                                          self._bounds):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            if hi <= lo:
                continue
            stamps = ts[lo:hi] + shift if shift else ts[lo:hi]
            spec = self.output_specs.get(port) or self._streams[port].spec
            if spec.dtype == "string":
                out[port] = EventChunk(tuple(data[lo:hi, 0]), stamps, spec)
            else:
                out[port] = Chunk(data[lo:hi], stamps, spec)
        return out


def cached_recording(path: Path | str, events_file: Path | None = None) -> Any:
    """:func:`~bci_runtime.drivers.recordings.load_recording`, remembered while the file
    is unchanged (a replay reads its file to plan, to build the graph and to compare)."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:  # let the loader say what is wrong with it
        key = (str(path), 0, 0)
    return _load_cached(key, str(events_file) if events_file else None)


@functools.lru_cache(maxsize=2)
def _load_cached(key: tuple[str, int, int], events_file: str | None) -> Any:
    from bci_runtime.drivers.recordings import load_recording

    return load_recording(key[0], events_file=Path(events_file) if events_file else None)


def _rate(ts: np.ndarray) -> float:
    """Effective rate of an irregular stream's timestamps (for chunking only)."""
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return 1.0
    return (len(ts) - 1) / float(ts[-1] - ts[0])
