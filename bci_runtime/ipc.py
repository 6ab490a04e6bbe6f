"""Chunks over pyzmq between processes: metadata and numpy buffers as separate frames.

Each process binds one PULL socket; a process that sends to another connects a
PUSH socket to it. A message is ``[header, data, timestamps]`` (signals) or
``[header, markers_json, timestamps]`` (events); arrays go out without a copy
(``copy=False``; pyzmq copies small frames itself, which is cheaper) and come in
as views of the received frames. ZeroMQ keeps order per connection, so one
process's chunks arrive in the order they were sent.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import zmq

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.graph import Graph
from bci_runtime.spec import StreamSpec

# edge id, kind, dtype code, n_samples, n_channels, latency base, wall at arrival, clock now
_HEADER = struct.Struct("<iBBiiddd")
KIND_SIGNAL, KIND_EVENTS, KIND_EOS, KIND_STOP, KIND_BARRIER = 0, 1, 2, 3, 4
_DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float64)}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}


def bind_address(transport: str, run_dir: Path, process: str) -> str:
    """Address to bind for ``process``: ``ipc://`` file or ``tcp://127.0.0.1:*``."""
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{run_dir / (process + '.sock')}"


def encode(edge_id: int, chunk: AnyChunk, base: float, wall: float, now: float) -> list:
    """Frames for one chunk."""
    if isinstance(chunk, EventChunk):
        header = _HEADER.pack(edge_id, KIND_EVENTS, 0, len(chunk.markers), 1, base, wall, now)
        return [header, json.dumps(list(chunk.markers)).encode(), chunk.timestamps]
    data = chunk.data if chunk.data.flags.c_contiguous else np.ascontiguousarray(chunk.data)
    header = _HEADER.pack(edge_id, KIND_SIGNAL, _DTYPE_CODES[data.dtype], data.shape[0],
                          data.shape[1], base, wall, now)
    ts = chunk.timestamps if chunk.timestamps.flags.c_contiguous else chunk.timestamps.copy()
    return [header, data, ts]


def decode(frames: list, specs: Mapping[int, StreamSpec]) -> tuple[int, int, AnyChunk | None,
                                                                    float, float, float]:
    """Read one message (``recv_multipart(copy=False)`` frames), the inverse of :func:`encode`.

    Arrays are views of the received frames, not copies.

    Returns
    -------
    tuple
        ``(edge_id, kind, chunk, base, wall, now)``; ``chunk`` is None for the
        control kinds (end of stream, barrier, stop); ``now`` is the sender's
        clock, which a simulated clock on the receiving side follows.
    """
    edge_id, kind, code, n, c, base, wall, now = _HEADER.unpack(frames[0].bytes)
    if kind != KIND_SIGNAL and kind != KIND_EVENTS:
        return edge_id, kind, None, base, wall, now
    ts = np.frombuffer(frames[2].buffer, dtype=np.float64)
    if kind == KIND_EVENTS:
        chunk: AnyChunk = EventChunk(tuple(json.loads(frames[1].bytes)), ts, specs[edge_id])
    else:
        data = np.frombuffer(frames[1].buffer, dtype=_DTYPES[code]).reshape(n, c)
        chunk = Chunk(data, ts, specs[edge_id])
    return edge_id, kind, chunk, base, wall, now


class ZmqSender:
    """Sends chunks on the edges that leave one process.

    Parameters
    ----------
    graph : Graph
        The configured graph.
    process : str
        The sending process.
    addresses : dict of str to str
        Bound address of every process.
    context : zmq.Context
        Context to create sockets in.
    """

    def __init__(self, graph: Graph, process: str, addresses: dict[str, str],
                 context: zmq.Context) -> None:
        self._sockets: dict[str, zmq.Socket] = {}
        self._edge_socket: dict[int, zmq.Socket] = {}
        for edge_id, e in enumerate(graph.edges):
            src_proc, dst_proc = graph.process_of(e.src), graph.process_of(e.dst)
            if src_proc != process or dst_proc == process:
                continue
            if dst_proc not in self._sockets:
                sock = context.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 2000)
                sock.setsockopt(zmq.SNDHWM, 0)  # never drop; order and completeness matter
                sock.connect(addresses[dst_proc])
                self._sockets[dst_proc] = sock
            self._edge_socket[edge_id] = self._sockets[dst_proc]
        self.peers = sorted(self._sockets)

    def send(self, edge_id: int, chunk: AnyChunk, base: float, wall: float, now: float) -> None:
        """Send ``chunk`` along edge ``edge_id``."""
        self._edge_socket[edge_id].send_multipart(encode(edge_id, chunk, base, wall, now), copy=False)

    def send_edge_end(self, edge_id: int) -> None:
        """Tell the receiving process that edge ``edge_id`` carries nothing more."""
        header = _HEADER.pack(edge_id, KIND_EOS, 0, 0, 0, 0.0, 0.0, 0.0)
        self._edge_socket[edge_id].send_multipart([header, b"", b""])

    def send_barrier(self, edge_id: int) -> None:
        """Tell the receiving process that this cycle's data on ``edge_id`` are all sent."""
        header = _HEADER.pack(edge_id, KIND_BARRIER, 0, 0, 0, 0.0, 0.0, 0.0)
        self._edge_socket[edge_id].send_multipart([header, b"", b""])

    def close(self, linger_ms: int = 2000) -> None:
        """Close the sockets, waiting up to ``linger_ms`` to deliver what is queued."""
        for sock in self._sockets.values():
            sock.close(linger=linger_ms)
        self._sockets.clear()


class ZmqReceiver:
    """Receives chunks for one process and hands them to its executor.

    A thread blocks in ``recv``: a message wakes it at once, no polling.

    Parameters
    ----------
    graph : Graph
        The configured graph.
    process : str
        The receiving process.
    address : str
        Address to bind (``tcp://127.0.0.1:*`` picks a free port).
    context : zmq.Context
        Context to create the socket in.
    """

    def __init__(self, graph: Graph, process: str, address: str, context: zmq.Context) -> None:
        self.graph = graph
        self._context = context
        self._socket = context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(address)
        self.address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread: threading.Thread | None = None

    def start(self, deliver: Callable[[int, AnyChunk, float, float, float], None],
              edge_ended: Callable[[int], None], barrier: Callable[[int], None],
              on_error: Callable[[BaseException], None]) -> None:
        """Start the receiving thread.

        ``deliver(edge_id, chunk, base, wall, now)`` is called per chunk,
        ``edge_ended(edge_id)`` when an edge carries nothing more and
        ``barrier(edge_id)`` when a cycle mark arrives.
        """
        self._thread = threading.Thread(
            target=self._loop, args=(deliver, edge_ended, barrier, on_error),
            name="zmq-receiver", daemon=True,
        )
        self._thread.start()

    def _loop(self, deliver: Callable, edge_ended: Callable, barrier: Callable,
              on_error: Callable) -> None:
        specs = {i: self.graph.specs[(e.src, e.src_port)] for i, e in enumerate(self.graph.edges)}
        try:
            while True:
                frames = self._socket.recv_multipart(copy=False)
                edge_id, kind, chunk, base, wall, now = decode(frames, specs)
                if kind == KIND_STOP:
                    return
                if kind == KIND_EOS:
                    edge_ended(edge_id)
                    continue
                if kind == KIND_BARRIER:
                    barrier(edge_id)
                    continue
                deliver(edge_id, chunk, base, wall, now)
        except Exception as exc:  # report, then stop receiving
            on_error(exc)
        finally:
            self._socket.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the receiving thread with a stop message and join it."""
        if self._thread is None:
            self._socket.close()
            return
        poke = self._context.socket(zmq.PUSH)
        poke.setsockopt(zmq.LINGER, 500)
        poke.connect(self.address)
        poke.send_multipart([_HEADER.pack(-1, KIND_STOP, 0, 0, 0, 0.0, 0.0, 0.0), b"", b""])
        self._thread.join(timeout)
        poke.close()
        self._thread = None
