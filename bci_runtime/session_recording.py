"""Records every stream of a running graph to the session's XDF file.

Each node output port that carries data becomes one XDF stream named
``<node>.<port>`` (raw signals, markers, features, decisions, actuator
commands...), with the stream's channel labels, types and units, and the
runtime's own metadata in ``<desc><bci_runtime>``: the node, the port, the
stream's original name and source id. Sources get one more stream,
``<node>.chunks`` (type ``ChunkIndex``): one sample per read, at the runtime
clock time of the read, holding how many samples each output port delivered.
It keeps what XDF does not, the chunk boundaries and read times, so that a
replay on the simulated clock feeds a pipeline exactly the chunks it saw.

The hot path only appends ``(node, outputs, now, read)`` to a deque (well
under 1 µs, and no thread wake-up: waking a writer per chunk costs more than
the whole chunk's processing on a small machine); a writer thread wakes every
``FLUSH_INTERVAL_S`` (or early, when ``WAKE_BACKLOG`` emissions wait), declares
streams as they first appear and writes them with the
crash-safe :class:`~bci_runtime.xdf_writer.XdfWriter` (fsync at least every
second, boundary chunks, footers on close). A failed write (a full disk) stops
the recording, keeps what was written readable, and is reported once through
``on_error`` so the run can stop cleanly.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from bci_runtime.chunk import AnyChunk, EventChunk
from bci_runtime.disk_space import is_disk_full
from bci_runtime.errors import BciError, RunError
from bci_runtime.spec import StreamSpec
from bci_runtime.xdf_writer import XdfWriter

log = logging.getLogger(__name__)

CHUNK_INDEX_TYPE = "ChunkIndex"
FLUSH_INTERVAL_S = 0.1  # the writer writes what is queued this often (well within 1 s)
WAKE_BACKLOG = 1024  # ...or as soon as this many emissions wait
XDF_FORMATS = {  # spec dtype -> XDF channel format
    "float32": "float32", "float64": "double64", "string": "string"}


@dataclass
class RecordedStreamInfo:
    """What the manifest says of one recorded stream."""

    name: str
    type: str
    node: str
    port: str
    channels: int
    srate: float
    format: str
    samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "node": self.node, "port": self.port,
                "channels": self.channels, "srate": self.srate, "format": self.format,
                "samples": self.samples}


class SessionRecorder:
    """Writes what the graph's nodes emit to one XDF file, off the hot path.

    Parameters
    ----------
    path : Path
        The XDF file to create (it must not exist).
    sources : dict of str to list of str
        Source node name -> its output port names; their reads are indexed in
        ``<node>.chunks`` streams.
    on_error : callable, optional
        ``on_error(exc)`` once when writing fails (the recording then stops).
    session_id : str
        Prefix of the recorded streams' source ids.
    """

    def __init__(self, path: Path, sources: Mapping[str, list[str]],
                 on_error: Callable[[BciError], None] | None = None,
                 session_id: str = "bci-runtime") -> None:
        self.path = Path(path)
        self._writer = XdfWriter(self.path)
        self._sources = {name: list(ports) for name, ports in sources.items()}
        self._on_error = on_error or (lambda exc: None)
        self._session_id = session_id
        self._ids: dict[tuple[str, str], int] = {}
        self.streams: dict[tuple[str, str], RecordedStreamInfo] = {}
        self._queue: collections.deque[tuple[str, Mapping[str, AnyChunk], float, bool]]
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self.skipped_chunks = 0
        self._failed = False
        self._last_now = 0.0
        self.error: BciError | None = None
        self._thread = threading.Thread(target=self._write_loop, name="session-recorder",
                                        daemon=True)
        self._thread.start()

    # -- hot path --------------------------------------------------------------------------
    def tap(self, node: str, outputs: Mapping[str, AnyChunk], now: float, read: bool) -> None:
        """Queue what ``node`` emitted at clock time ``now`` (never blocks on disk).

        ``read`` is True for what a source read (as delivered, before the
        executor's chunk checks, so NaN bursts are kept as they came).
        """
        queue = self._queue
        queue.append((node, outputs, now, read))
        if len(queue) >= WAKE_BACKLOG:
            self._wake.set()

    # -- writer thread -----------------------------------------------------------------------
    def _write_loop(self) -> None:
        """Every ``FLUSH_INTERVAL_S`` (or at a backlog, or at close), write what is queued.

        What accumulated is written as one XDF chunk per stream: the chunk
        boundaries that matter for replay are in the ``<node>.chunks`` streams.
        """
        queue = self._queue
        while True:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            closing = self._closing
            items = [queue.popleft() for _ in range(len(queue))]
            if items and not self._failed:  # after a failure: drain only, never fill memory
                try:
                    self._write_batch(items)
                except BciError as exc:
                    self._fail(exc)
                except Exception as exc:  # noqa: BLE001 - a recorder bug must not go unnoticed
                    self._fail(RunError(f"recording to '{self.path}' failed: {exc}"))
            if closing and not queue:
                return

    def _fail(self, exc: BciError) -> None:
        self._failed = True
        if is_disk_full(exc):
            exc = RunError(f"the disk is full: recording to '{self.path}' stopped; what was "
                           "written before stays readable",
                           hint="free some space or put sessions on another disk "
                                "(--sessions-root)")
        self.error = exc
        log.error("session recording stopped: %s", exc)
        self._on_error(exc)

    def _write_batch(self, items: list[tuple[str, Mapping[str, AnyChunk], float, bool]]) -> None:
        """Group the batch's chunks per stream, in order, and write each stream once."""
        pending: dict[int, tuple[list[Any], list[np.ndarray]]] = {}
        for node, outputs, now, read in items:
            self._last_now = now
            written: dict[str, int] = {}
            for port, chunk in outputs.items():
                if not _writable(chunk):
                    self.skipped_chunks += 1  # malformed (shape, timestamps): XDF cannot hold it
                    continue
                sid = self._ids.get((node, port))
                if sid is None:
                    sid = self._declare(node, port, chunk.spec, now)
                values = (list(chunk.markers) if isinstance(chunk, EventChunk)
                          else chunk.data)
                parts = pending.setdefault(sid, ([], []))
                parts[0].append(values)
                parts[1].append(chunk.timestamps)
                self.streams[(node, port)].samples += chunk.n_samples
                written[port] = chunk.n_samples
            ports = self._sources.get(node)
            if read and ports:
                sid = self._ids.get((node, ""))
                if sid is None:
                    sid = self._declare_chunk_index(node, ports, now)
                parts = pending.setdefault(sid, ([], []))
                parts[0].append(np.array([[written.get(p, 0) for p in ports]], dtype=np.float64))
                parts[1].append(np.array([now]))
                self.streams[(node, "")].samples += 1
        for sid, (values, stamps) in pending.items():
            ts = stamps[0] if len(stamps) == 1 else np.concatenate(stamps)
            if isinstance(values[0], list):  # markers
                self._writer.write_samples(sid, [[m] for part in values for m in part], ts)
            else:
                data = values[0] if len(values) == 1 else np.concatenate(values)
                self._writer.write_samples(sid, data, ts)

    def _declare(self, node: str, port: str, spec: StreamSpec, now: float) -> int:
        fmt = XDF_FORMATS[spec.dtype]
        name = f"{node}.{port}"
        desc = (f"<bci_runtime><node>{escape(node)}</node><port>{escape(port)}</port>"
                f"<stream_name>{escape(spec.name)}</stream_name>"
                f"<stream_source_id>{escape(spec.source_id)}</stream_source_id></bci_runtime>")
        sid = self._writer.add_stream(
            name=name, type=spec.type, channel_count=spec.n_channels, srate=spec.srate,
            channel_format=fmt, source_id=f"{self._session_id}:{name}",
            channel_labels=spec.channel_names, channel_types=spec.channel_types or None,
            channel_units=spec.units or None, desc_xml=desc)
        self._declared(node, port, sid, now)
        self.streams[(node, port)] = RecordedStreamInfo(name, spec.type, node, port,
                                                        spec.n_channels, spec.srate, fmt)
        return sid

    def _declare_chunk_index(self, node: str, ports: list[str], now: float) -> int:
        name = f"{node}.chunks"
        desc = (f"<bci_runtime><node>{escape(node)}</node><port></port>"
                "<about>samples each output port delivered at each read of the source, "
                "stamped with the runtime clock at the read</about></bci_runtime>")
        sid = self._writer.add_stream(
            name=name, type=CHUNK_INDEX_TYPE, channel_count=len(ports), srate=0.0,
            channel_format="double64", source_id=f"{self._session_id}:{name}",
            channel_labels=ports, channel_units="samples", desc_xml=desc)
        self._declared(node, "", sid, now)
        self.streams[(node, "")] = RecordedStreamInfo(name, CHUNK_INDEX_TYPE, node, "",
                                                      len(ports), 0.0, "double64")
        return sid

    def _declared(self, node: str, port: str, sid: int, now: float) -> None:
        # every stream is on the runtime clock: offset 0, said at the start and at the
        # end so that readers (pyxdf's clock sync) find one clock segment
        self._ids[(node, port)] = sid
        self._writer.write_clock_offset(sid, now, 0.0)
        self._last_now = now

    # -- end ------------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then the footers; the file is complete afterwards."""
        if self._thread.is_alive():
            self._closing = True
            self._wake.set()
            self._thread.join(timeout)
        if not self._writer.closed:
            try:
                if not self._failed:
                    for sid in self._ids.values():
                        self._writer.write_clock_offset(sid, self._last_now, 0.0)
                self._writer.close()
            except BciError as exc:  # footers could not be written: the data stay readable
                if self.error is None:
                    self._fail(exc)

    def manifest_streams(self) -> list[dict[str, Any]]:
        """The recorded streams, for the session manifest."""
        return [s.as_dict() for s in self.streams.values()]


def _writable(chunk: AnyChunk) -> bool:
    """Whether XDF can hold ``chunk`` (NaN/Inf values can be; broken shapes cannot)."""
    ts = chunk.timestamps
    if ts.ndim != 1 or len(ts) == 0 or not np.isfinite(ts).all():
        return False
    if isinstance(chunk, EventChunk):
        return len(chunk.markers) == len(ts)
    data = chunk.data
    return data.ndim == 2 and data.shape == (len(ts), chunk.spec.n_channels)
