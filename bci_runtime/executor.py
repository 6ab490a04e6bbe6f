"""The event-driven executor: runs each arrival through the graph to completion.

There is no tick. A source thread (or the simulated-clock scheduler, or the
thread receiving from another process) hands a chunk to :meth:`Executor.dispatch_source`,
which, holding the executor lock, calls every downstream node in topological
order until nothing is left to deliver, then returns. The latency of the loop is
therefore the processing time. Chunks on ``delayed`` edges are delivered at the
start of the next dispatch, which breaks loops without a scheduling period.

Latency of an emission = (clock at arrival - newest sample timestamp) + (wall
time since arrival). On the live clock that is "now - newest sample"; on the
simulated clock, whose time is the sample time, it is the compute time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.clock import Clock
from bci_runtime.errors import BadChunkError, NodeError
from bci_runtime.graph import Graph
from bci_runtime.node import is_source
from bci_runtime.telemetry import LatencyRecorder, NodeTelemetry

log = logging.getLogger(__name__)
perf_counter = time.perf_counter


class RemoteSender(Protocol):
    """Sends chunks along edges that leave this process."""

    def send(self, edge_id: int, chunk: AnyChunk, base: float, wall: float, now: float) -> None:
        """Send ``chunk`` along edge ``edge_id`` with its latency origin."""
        ...

    def send_edge_end(self, edge_id: int) -> None:
        """Tell the receiving process that edge ``edge_id`` carries nothing more."""
        ...

    def send_barrier(self, edge_id: int) -> None:
        """Tell the receiving process that this cycle's data on ``edge_id`` are all sent."""
        ...


@dataclass(frozen=True)
class _Route:
    target: int  # local node index, or -1 for a remote edge
    port: str
    delayed: bool
    edge_id: int  # index in graph.edges


class _Wave:
    """A mark that flows along non-delayed edges: a node passes it once all its inputs have.

    Parameters
    ----------
    n_inputs : list of int
        Non-delayed input edges of each local node.
    downstream : list of list of _Route
        Non-delayed routes out of each local node.
    send_remote : callable
        ``send_remote(edge_id)`` passes the mark to another process.
    """

    def __init__(self, n_inputs: list[int], downstream: list[list[_Route]],
                 send_remote: Callable[[int], None]) -> None:
        self.n_inputs = n_inputs
        self._downstream = downstream
        self._send_remote = send_remote
        self.reset()

    def reset(self) -> None:
        """Start a new wave."""
        self._open = list(self.n_inputs)
        self._passed = [False] * len(self.n_inputs)

    @property
    def complete(self) -> bool:
        """Whether every local node has passed the mark."""
        return all(self._passed)

    def pass_node(self, idx: int) -> None:
        """Node ``idx`` passes the mark on to everything downstream."""
        if self._passed[idx]:
            return
        self._passed[idx] = True
        for r in self._downstream[idx]:
            if r.target < 0:
                self._send_remote(r.edge_id)
            else:
                self.input_passed(r.target)

    def input_passed(self, idx: int) -> None:
        """One input edge of node ``idx`` passed the mark."""
        self._open[idx] -= 1
        if self._open[idx] <= 0:
            self.pass_node(idx)


class Executor:
    """Runs the nodes of one process, event-driven.

    Parameters
    ----------
    graph : Graph
        The configured graph.
    process : str
        Which process's nodes this executor runs.
    clock : Clock
        Runtime clock.
    emit_event : callable, optional
        ``emit_event(kind, **fields)`` for the events log.
    remote : RemoteSender, optional
        Sender for edges that cross to other processes.
    """

    def __init__(
        self,
        graph: Graph,
        process: str,
        clock: Clock,
        emit_event: Callable[..., None] | None = None,
        remote: RemoteSender | None = None,
    ) -> None:
        self.graph = graph
        self.clock = clock
        self.names = graph.nodes_in(process)
        self.nodes = [graph.nodes[n] for n in self.names]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.emit_event = emit_event or (lambda kind, **fields: None)
        self.remote = remote
        self.routes: dict[tuple[int, str], list[_Route]] = {}
        for edge_id, e in enumerate(graph.edges):
            if e.src not in self.index:
                continue
            local = e.dst in self.index
            route = _Route(self.index[e.dst] if local else -1, e.dst_port, e.delayed, edge_id)
            self.routes.setdefault((self.index[e.src], e.src_port), []).append(route)
        self.is_sink = [not n.outputs for n in self.nodes]
        self.telemetry = {n: NodeTelemetry.create() for n in self.names}
        self._tel = [self.telemetry[n] for n in self.names]
        self.end_to_end = LatencyRecorder()
        self.samples_in: dict[str, int] = {}
        # samples are counted on each source's first signal output (not on side streams
        # such as a simulator's ground truth)
        self._counted_port = {n: next((p for p, o in node.outputs.items()
                                       if o.kind == "signal"), None)
                              for n, node in zip(self.names, self.nodes)}
        self.bad_chunks: dict[str, int] = {}
        self.policies = {n: graph.config.nodes[n].on_bad_chunk for n in self.names}
        self._pending: list[list[tuple[str, AnyChunk]]] = [[] for _ in self.names]
        self._delayed: list[tuple[int, str, AnyChunk]] = []
        self._lock = threading.Lock()
        self.failure: BaseException | None = None
        # Two marks flow along the non-delayed edges behind the data (ZeroMQ keeps
        # order per connection): the end of stream, once, and on the simulated clock
        # with workers a barrier closing each cycle.
        n_inputs = [0] * len(self.names)
        downstream: list[list[_Route]] = [[] for _ in self.names]
        for e in graph.edges:
            if e.dst in self.index and not e.delayed:
                n_inputs[self.index[e.dst]] += 1
        for (src, _port), routes in self.routes.items():
            downstream[src].extend(r for r in routes if not r.delayed)
        noop = lambda edge_id: None  # noqa: E731
        self._end_wave = _Wave(n_inputs, downstream,
                               remote.send_edge_end if remote is not None else noop)
        self._barrier_wave = _Wave(n_inputs, downstream,
                                   remote.send_barrier if remote is not None else noop)
        self.drained = threading.Event()
        self.barrier_done = threading.Event()
        # ``tap(node, outputs, now, read)`` sees every emission (the session recording);
        # it must only queue. Outputs of remote nodes are seen when they arrive here.
        self.tap: Callable[[str, Mapping[str, AnyChunk], float, bool], None] | None = None
        self._tapped_edges = self._first_edge_per_remote_port(graph)

    def _first_edge_per_remote_port(self, graph: Graph) -> set[int]:
        """One incoming edge per remote (node, port), so its chunks are tapped once."""
        first: dict[tuple[str, str], int] = {}
        for edge_id, e in enumerate(graph.edges):
            if e.dst in self.index and e.src not in self.index:
                first.setdefault((e.src, e.src_port), edge_id)
        return set(first.values())

    # -- entry points ------------------------------------------------------------------
    def dispatch_source(self, name: str, outputs: Mapping[str, AnyChunk]) -> None:
        """Run a source's new chunks through the graph to completion.

        Checks each chunk first (channel count, shapes, NaN/Inf) and applies the
        source's ``on_bad_chunk`` policy.

        Raises
        ------
        NodeError, BadChunkError
            When a node fails or a bad chunk meets the ``stop`` policy; the
            executor is then failed and dispatches nothing more.
        """
        if not outputs:
            return
        wall, now = perf_counter(), self.clock.now()  # arrival, before lock and checks
        src = self.index[name]
        with self._lock:
            if self.failure is not None:
                return
            if self.tap is not None:
                self.tap(name, outputs, now, True)
            valid: list[tuple[str, AnyChunk]] = []
            for port, chunk in outputs.items():
                problem = chunk.problem()
                if problem is not None:
                    chunk = self._bad_chunk(name, port, chunk, problem)
                    if chunk is None:
                        continue
                valid.append((port, chunk))
                if isinstance(chunk, Chunk) and port == self._counted_port[name]:
                    self.samples_in[name] = self.samples_in.get(name, 0) + chunk.n_samples
            if not valid:
                return
            base = now - max(chunk.newest for _, chunk in valid)
            for port, chunk in valid:
                self._route(src, port, chunk, base, wall, now)
            self._run(base, wall)

    def dispatch_remote(self, edge_id: int, chunk: AnyChunk, base: float, wall: float,
                        now: float | None = None) -> None:
        """Deliver a chunk that arrived from another process along ``edge_id``.

        ``now`` is the sending process's clock: a simulated clock here follows it,
        so nodes in workers see the same time as the main process.
        """
        e = self.graph.edges[edge_id]
        with self._lock:
            if self.failure is not None:
                return
            if now is not None and self.clock.simulated:
                self.clock.advance_to(now)  # type: ignore[attr-defined]
            if self.tap is not None and edge_id in self._tapped_edges:
                self.tap(e.src, {e.src_port: chunk}, self.clock.now(), False)
            self._pending[self.index[e.dst]].append((e.dst_port, chunk))
            self._run(base, wall)

    def start(self) -> None:
        """End, at once, nodes with no input to wait for (unconnected non-sources)."""
        with self._lock:
            for i, node in enumerate(self.nodes):
                if self._end_wave.n_inputs[i] == 0 and not is_source(node):
                    self._end_wave.pass_node(i)
            self._check_drained()

    def end_source(self, name: str) -> None:
        """A source stopped: end its output edges, and downstream nodes in turn."""
        with self._lock:
            self._end_wave.pass_node(self.index[name])
            self._check_drained()

    def end_remote_edge(self, edge_id: int) -> None:
        """An edge from another process ended (its data all arrived before this)."""
        with self._lock:
            self._end_wave.input_passed(self.index[self.graph.edges[edge_id].dst])
            self._check_drained()

    def _check_drained(self) -> None:
        if self._end_wave.complete:
            self.drained.set()

    def start_barrier(self) -> None:
        """Close a cycle: mark the sources done; nodes pass the mark on once all inputs did.

        :attr:`barrier_done` is set when every node of this process has passed the
        mark, which on the simulated clock means the cycle's chunks reached every
        node in every process: the next cycle can start, deterministically.
        """
        with self._lock:
            self.barrier_done.clear()
            for i, node in enumerate(self.nodes):
                if is_source(node) or self._barrier_wave.n_inputs[i] == 0:
                    self._barrier_wave.pass_node(i)
            self._check_barrier()

    def remote_barrier(self, edge_id: int) -> None:
        """The cycle's mark arrived on an edge from another process."""
        with self._lock:
            self._barrier_wave.input_passed(self.index[self.graph.edges[edge_id].dst])
            self._check_barrier()

    def _check_barrier(self) -> None:
        if self._barrier_wave.complete:
            self._barrier_wave.reset()
            self.barrier_done.set()

    # -- internals -----------------------------------------------------------------------
    def _bad_chunk(self, name: str, port: str, chunk: AnyChunk, problem: str) -> AnyChunk | None:
        """Apply the source's policy to a malformed chunk; the chunk to pass on, or None."""
        policy = self.policies[name]
        self.bad_chunks[name] = self.bad_chunks.get(name, 0) + 1
        ts = float(chunk.timestamps[-1]) if len(chunk.timestamps) else None
        passed: AnyChunk | None = None
        if policy == "flag" and isinstance(chunk, Chunk):
            # Zero non-finite values so filter states stay finite; the event marks the span.
            # Anything else wrong (shape, timestamps) cannot be passed on: dropped.
            data = np.nan_to_num(chunk.data, nan=0.0, posinf=0.0, neginf=0.0)
            repaired = Chunk(data, chunk.timestamps, chunk.spec)
            passed = repaired if repaired.problem() is None else None
        action = {"stop": "stopped"}.get(policy, "repaired" if passed is not None else "dropped")
        self.emit_event("bad_chunk", node=name, port=port, timestamp=ts, problem=problem,
                        policy=policy, action=action, count=self.bad_chunks[name])
        if policy == "stop":
            exc = BadChunkError(
                f"source '{name}' port '{port}' delivered a bad chunk"
                + (f" at t={ts:.6f}" if ts is not None else "") + f": {problem}",
                hint="fix the device or stream, or set 'on_bad_chunk: drop' (or 'flag') "
                "on this node to keep running",
            )
            self.failure = exc
            raise exc
        return passed

    def _route(self, src: int, port: str, chunk: AnyChunk, base: float, wall: float,
               now: float) -> None:
        for r in self.routes.get((src, port), ()):
            if r.target < 0:
                if self.remote is not None:
                    self.remote.send(r.edge_id, chunk, base, wall, now)
            elif r.delayed:
                self._delayed.append((r.target, r.port, chunk))
            else:
                self._pending[r.target].append((r.port, chunk))

    def _run(self, base: float, wall: float) -> None:
        """Call nodes in topological order until nothing is pending."""
        if self._delayed:
            # reversed: each insert(0) goes in front, so this keeps the emission order
            for target, port, chunk in reversed(self._delayed):
                self._pending[target].insert(0, (port, chunk))
            self._delayed = []
        pending, nodes, tel, is_sink = self._pending, self.nodes, self._tel, self.is_sink
        now = self.clock.now()
        for idx in range(len(nodes)):
            items = pending[idx]
            if not items:
                continue
            pending[idx] = []
            node = nodes[idx]
            for port, chunk in items:
                t0 = perf_counter()
                try:
                    out = node.process(port, chunk)
                except Exception as exc:  # any node bug must stop the graph cleanly
                    ts = float(chunk.timestamps[-1]) if len(chunk.timestamps) else None
                    self.failure = NodeError(node.name, ts, exc)
                    self.failure.__cause__ = exc
                    for p in pending:
                        p.clear()
                    raise self.failure from exc
                t1 = perf_counter()
                t = tel[idx]
                t.calls += 1
                t.processing.add(t1 - t0)
                if out:
                    t.latency.add(base + (t1 - wall))
                    if self.tap is not None:
                        self.tap(node.name, out, now, False)
                    for out_port, out_chunk in out.items():
                        self._route(idx, out_port, out_chunk, base, wall, now)
                elif is_sink[idx] and not isinstance(chunk, EventChunk):
                    latency = base + (t1 - wall)
                    t.latency.add(latency)
                    self.end_to_end.add(latency)
