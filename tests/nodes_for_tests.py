"""Tiny nodes for tests, registered by ``tests/conftest.py``.

Type names all start with ``test_`` so they never collide with shipped nodes.
Class names do not start with ``Test`` so pytest does not try to collect them.

Call logs: every node here appends to ``self.log`` when a test attaches one (a
plain list shared by several nodes, see :func:`attach_log`), so a test can check
the global order of calls across nodes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output, Source
from bci_runtime.spec import StreamSpec


def attach_log(graph: Any, log: list) -> list:
    """Make every test node of ``graph`` append its calls to ``log``; returns ``log``."""
    for node in graph.nodes.values():
        if hasattr(node, "log"):
            node.log = log
    return log


def configure_alone(node: Node, inputs: dict[str, StreamSpec] | None = None) -> dict[str, StreamSpec]:
    """Bind a node's specs outside a graph (``Node.bind``), as the graph does."""
    return node.bind(dict(inputs or {}))


# -- a deterministic counting source --------------------------------------------------------
class CountingSourceParams(NodeParams):
    n_chunks: int = Field(10, ge=1, description="chunks to emit before the source ends")
    chunk_size: int = Field(5, ge=1)
    srate: float = Field(100.0, gt=0)
    n_channels: int = Field(2, ge=1)
    bad_channels_at: list[int] = Field(default_factory=list,
                                       description="chunk indices sent with one extra channel")
    nan_at: list[int] = Field(default_factory=list,
                              description="chunk indices sent with a NaN in the data")


class CountingSource(Source):
    """Emits ``n_chunks`` chunks whose values are the global sample index (+ channel/1000).

    Timestamps are ``index / srate`` on the runtime clock (starting at 0 on the
    simulated clock). Selected chunks can be malformed on purpose.
    """

    type_name = "test_source"
    Params = CountingSourceParams
    signal = Output("signal", doc="(n, n_channels) sample indices")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.log: list | None = None
        self.closed = False
        self.reads = 0

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        return {"signal": StreamSpec(
            name=f"{self.name}-signal", type="Test",
            channel_names=tuple(f"ch{i}" for i in range(p.n_channels)), srate=p.srate,
            source_id=f"test-{self.name}")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self._t0 = context.clock.now()
        self._k = 0
        self._spec = self.output_specs["signal"]

    def chunk_times(self, k: int) -> np.ndarray:
        """Timestamps of chunk ``k``, shape (chunk_size,)."""
        p = self.params
        idx = np.arange(k * p.chunk_size, (k + 1) * p.chunk_size)
        return self._t0 + idx / p.srate

    def next_due(self) -> float | None:
        if self._k >= self.params.n_chunks:
            return None
        return float(self.chunk_times(self._k)[-1])

    def read(self) -> dict[str, AnyChunk]:
        p, k = self.params, self._k
        self._k += 1
        self.reads += 1
        if self.log is not None:
            self.log.append((self.name, "read", k))
        ts = self.chunk_times(k)
        idx = np.arange(k * p.chunk_size, (k + 1) * p.chunk_size, dtype=np.float64)
        n_ch = p.n_channels + (1 if k in p.bad_channels_at else 0)
        data = idx[:, None] + np.arange(n_ch)[None, :] / 1000.0
        if k in p.nan_at:
            data[0, 0] = np.nan
        return {"signal": Chunk(data, ts, self._spec)}

    def close(self) -> None:
        self.closed = True


# -- a pass-through node that records its calls ---------------------------------------------
class RecorderParams(NodeParams):
    fail_on_call: int | None = Field(None, ge=1, description="raise on this call (1-based)")
    emit_events: bool = Field(False, description="log a 'test_call' event on every call")
    time_shift: float = Field(0.0, description="added to the timestamps of what is forwarded")
    nan_calls: list[int] = Field(default_factory=list,
                                 description="calls (1-based) whose output is all NaN")


class Recorder(Node):
    """Records every call; forwards chunks from ``x`` and ``y`` to ``out``.

    Chunks arriving on ``fb`` (for feedback loops) are recorded, not forwarded.
    """

    type_name = "test_recorder"
    Params = RecorderParams
    x = Input("signal", doc="main input")
    y = Input("signal", required=False, doc="second input (diamond joins)")
    fb = Input("signal", required=False, doc="feedback input (delayed edges)")
    out = Output("signal", doc="what came in on x or y")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.log: list | None = None
        self.calls: list[tuple[str, AnyChunk]] = []
        self.closed = False

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        return {"out": inputs["x"]}

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        self.calls.append((port, chunk))
        if self.log is not None:
            self.log.append((self.name, port, chunk.newest))
        if self.params.emit_events and self.context is not None:
            self.context.emit_event("test_call", node=self.name, call=len(self.calls),
                                    t=chunk.newest)
        if self.params.fail_on_call is not None and len(self.calls) == self.params.fail_on_call:
            raise RuntimeError(f"boom on call {len(self.calls)}")
        if port == "fb":
            return None
        if self.params.time_shift:
            chunk = Chunk(chunk.data, chunk.timestamps + self.params.time_shift, chunk.spec)
        if len(self.calls) in self.params.nan_calls:  # a decoder gone wrong mid-graph
            chunk = Chunk(np.full_like(chunk.data, np.nan), chunk.timestamps, chunk.spec)
        return {"out": chunk}

    def close(self) -> None:
        self.closed = True


# -- a pass-through whose start-up is slow ------------------------------------------------
class SlowOpenParams(NodeParams):
    open_delay_s: float = Field(60.0, ge=0, description="seconds open() takes")


class SlowOpen(Node):
    """Forwards ``x`` to ``out``; ``open`` takes ``open_delay_s`` (a device that is slow to start)."""

    type_name = "test_slow_open"
    Params = SlowOpenParams
    x = Input("signal", doc="any signal")
    out = Output("signal", doc="what came in")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        return {"out": inputs["x"]}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        time.sleep(self.params.open_delay_s)

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        return {"out": chunk}


# -- a sink that keeps what it receives -----------------------------------------------------
class Collector(Node):
    """Keeps every chunk it receives (a sink: no outputs)."""

    type_name = "test_collector"
    signal = Input("signal", doc="any signal")
    events = Input("events", required=False, doc="any event stream")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.log: list | None = None
        self.chunks: list[Chunk] = []
        self.event_chunks: list[EventChunk] = []
        self.closed = False

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if self.log is not None:
            self.log.append((self.name, port, chunk.newest))
        if isinstance(chunk, EventChunk):
            self.event_chunks.append(chunk)
        else:
            self.chunks.append(chunk)
        return None

    def data(self) -> np.ndarray:
        """All received samples, shape (n_samples, n_channels)."""
        return np.concatenate([c.data for c in self.chunks]) if self.chunks else np.empty((0, 0))

    def timestamps(self) -> np.ndarray:
        """All received timestamps, shape (n_samples,)."""
        return np.concatenate([c.timestamps for c in self.chunks]) if self.chunks else np.empty(0)

    def close(self) -> None:
        self.closed = True


TEST_NODES = (CountingSource, Recorder, Collector, SlowOpen)
