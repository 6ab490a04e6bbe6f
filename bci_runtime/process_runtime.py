"""One process's share of a graph: its nodes, executor and source threads.

Used by the main process (:mod:`bci_runtime.runner`) and by worker processes
(:mod:`bci_runtime.worker`) alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bci_runtime.actuator import Actuator
from bci_runtime.clock import Clock
from bci_runtime.errors import RunError, SpecMismatchError
from bci_runtime.executor import Executor, RemoteSender
from bci_runtime.graph import Graph
from bci_runtime.node import BlockingSource, NodeContext, Source
from bci_runtime.spec import StreamSpec

log = logging.getLogger(__name__)
BLOCKING_READ_TIMEOUT_S = 0.25  # only bounds how soon a quiet source sees a stop request


class ProcessRuntime:
    """Opens, runs and closes the nodes of one process.

    Parameters
    ----------
    graph : Graph
        The configured graph.
    process : str
        Which process's nodes to run.
    clock : Clock
        Runtime clock.
    emit_event : callable
        ``emit_event(kind, **fields)``.
    on_failure : callable
        Called with the first exception raised in a source thread or node, after
        this process's actuators were made safe.
    session_dir : Path, optional
        Session folder handed to nodes.

    Attributes
    ----------
    on_emergency_stop : callable or None
        ``on_emergency_stop(source)`` after a node asked for an emergency stop
        (the web page's button): the runner passes it to the other processes.
    """

    def __init__(self, graph: Graph, process: str, clock: Clock,
                 emit_event: Callable[..., None], on_failure: Callable[[BaseException], None],
                 session_dir: Path | None = None) -> None:
        self.graph = graph
        self.process = process
        self.clock = clock
        self.emit_event = emit_event
        self._report_failure = on_failure
        self.session_dir = session_dir
        self.on_emergency_stop: Callable[[str], None] | None = None
        self.actuators: list[Actuator] = [
            node for name, node in graph.nodes.items()
            if graph.process_of(name) == process and isinstance(node, Actuator)]
        self.stop_requested = threading.Event()
        self.sources_done = threading.Event()
        self.on_sources_done: Callable[[], None] | None = None  # called once sources_done is set
        self.executor: Executor | None = None
        self._opened: list[str] = []
        self._threads: list[threading.Thread] = []
        self._running_sources = 0
        self._count_lock = threading.Lock()

    @property
    def source_names(self) -> list[str]:
        """Sources placed in this process, in topological order."""
        return [n for n in self.graph.sources() if self.graph.process_of(n) == self.process]

    def open(self, remote: RemoteSender | None = None,
             spec_in: Callable[[int], StreamSpec] | None = None,
             spec_out: Callable[[int, StreamSpec], None] | None = None) -> None:
        """Create the executor and open every node of this process in topological order.

        A node may refine its output specs when it opens (a device's channel labels,
        types and units); nodes downstream are bound again with the refined specs
        before they open. Shape and rate may not change. Across processes the
        refined specs travel too: before a node opens, ``spec_in(edge_id)`` waits for
        the spec of each edge arriving from another process, and after it opens,
        ``spec_out(edge_id, spec)`` sends the spec of each edge leaving this one.
        Every process opens in the graph's topological order, so nobody waits on a
        node that waits on them.

        Parameters
        ----------
        remote : RemoteSender, optional
            Sender for edges to other processes.
        spec_in, spec_out : callable, optional
            Spec exchange with other processes (both or neither).
        """
        self.executor = Executor(self.graph, self.process, self.clock, self.emit_event, remote)
        graph, edges = self.graph, list(enumerate(self.graph.edges))
        for name in graph.nodes_in(self.process):
            node = graph.nodes[name]
            if spec_in is not None:
                for edge_id, e in edges:
                    if e.dst == name and not e.delayed and graph.process_of(e.src) != self.process:
                        self._refine(e.src, e.src_port, spec_in(edge_id))
            bound = {e.dst_port: graph.specs[(e.src, e.src_port)] for _, e in edges if e.dst == name}
            if any(node.input_specs.get(port) != spec for port, spec in bound.items()):
                node.bind(bound)
            context = NodeContext(
                name=name, clock=self.clock, seed=graph.config.seed,
                session_dir=self.session_dir, emit_event=self.emit_event,
                stop_requested=self.stop_requested, emergency_stop=self.request_emergency_stop,
            )
            node.open(context)
            self._opened.append(name)
            for port, spec in node.output_specs.items():
                self._refine(name, port, spec)
            if spec_out is not None:
                for edge_id, e in edges:
                    if e.src == name and graph.process_of(e.dst) != self.process:
                        spec_out(edge_id, graph.specs[(e.src, e.src_port)])
        self.executor.start()

    # -- safety ------------------------------------------------------------------------
    def on_failure(self, exc: BaseException) -> None:
        """A source or node failed: actuators go safe first, then the failure is reported."""
        self.go_safe(f"failure: {type(exc).__name__}: {exc}")
        self._report_failure(exc)

    def go_safe(self, reason: str, detected_at: float | None = None) -> None:
        """Force every actuator of this process into its safe state (never raises)."""
        detected_at = time.monotonic() if detected_at is None else detected_at
        for actuator in self.actuators:
            try:
                actuator.go_safe(reason, detected_at)
            except Exception as exc:  # the others must still go safe
                log.error("actuator '%s' could not go safe: %s", actuator.name, exc)
                self.emit_event("safe_state_failed", node=actuator.name, error=repr(exc))

    def emergency_stop(self, source: str) -> None:
        """The operator's emergency stop, for this process's actuators (never raises)."""
        for actuator in self.actuators:
            try:
                actuator.emergency_stop(source)
            except Exception as exc:
                log.error("actuator '%s' could not stop: %s", actuator.name, exc)
                self.emit_event("safe_state_failed", node=actuator.name, error=repr(exc))

    def request_emergency_stop(self, source: str) -> None:
        """A node asks for an emergency stop: here at once, then everywhere else."""
        self.emergency_stop(source)
        if self.on_emergency_stop is not None:
            self.on_emergency_stop(source)

    def arm(self, by: str) -> dict[str, bool]:
        """Arm this process's actuators; whether each one armed."""
        return {a.name: bool(a.arm(by)) for a in self.actuators}

    def _refine(self, name: str, port: str, spec: StreamSpec) -> None:
        """Take a node's opened spec for an output; only metadata may differ."""
        old = self.graph.specs[(name, port)]
        if spec == old:
            return
        if (spec.n_channels, spec.srate, spec.dtype) != (old.n_channels, old.srate, old.dtype):
            raise SpecMismatchError(
                f"node '{name}' output '{port}' changed shape when it opened: "
                f"{old.n_channels} ch @ {old.srate:g} Hz {old.dtype} declared, "
                f"{spec.n_channels} ch @ {spec.srate:g} Hz {spec.dtype} opened",
                hint="fix the node's parameters to match the device")
        self.graph.specs[(name, port)] = spec

    # -- live clock ----------------------------------------------------------------------
    def start_sources(self) -> None:
        """Start one thread per source; each dispatches as soon as it has data."""
        names = self.source_names
        self._running_sources = len(names)
        if not names:
            self.sources_done.set()
        for name in names:
            thread = threading.Thread(target=self._source_loop, args=(name,),
                                      name=f"source-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _source_loop(self, name: str) -> None:
        node = self.graph.nodes[name]
        dispatch = self.executor.dispatch_source  # type: ignore[union-attr]
        stop = self.stop_requested
        try:
            if isinstance(node, BlockingSource):
                while not stop.is_set() and not node.exhausted:
                    out = node.read_blocking(BLOCKING_READ_TIMEOUT_S)
                    if out:
                        dispatch(name, out)
            elif isinstance(node, Source):
                while not stop.is_set():
                    due = node.next_due()
                    if due is None:
                        break
                    delay = due - self.clock.now()
                    if delay > 0 and stop.wait(delay):  # a timer, woken early by a stop
                        break
                    dispatch(name, node.read())
        except BaseException as exc:  # reported, then the run stops
            self.on_failure(exc)
        finally:
            with self._count_lock:
                self._running_sources -= 1
                if self._running_sources <= 0:
                    self.sources_done.set()
                    if self.on_sources_done is not None:
                        self.on_sources_done()

    def stop_sources(self, timeout: float = 5.0) -> None:
        """Ask the sources to stop, join their threads, and end their streams.

        Ending a source's stream lets everything downstream (here and in other
        processes) know when all in-flight data have been processed.
        """
        self.stop_requested.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("source thread %s did not stop within %.1f s", thread.name, timeout)
        self._threads.clear()
        if self.executor is not None:
            for name in self.source_names:
                self.executor.end_source(name)

    # -- simulated clock -----------------------------------------------------------------
    def run_simulated(self, until: float | None, barrier_timeout: float | None = None) -> str:
        """Run the sources in due-time order on the simulated clock.

        Parameters
        ----------
        until : float or None
            Stop before the first chunk due after this clock time.
        barrier_timeout : float or None
            With worker processes: after each chunk, wait (up to this long) until
            it has reached every node in every process, so that a split graph
            gives the same outputs as a single process. None: no barrier.

        Returns
        -------
        str
            ``"completed"`` (duration reached or sources exhausted) or ``"stopped"``.
        """
        sources = [self.graph.nodes[n] for n in self.source_names]
        names = self.source_names
        advance = self.clock.advance_to  # type: ignore[attr-defined]
        dispatch = self.executor.dispatch_source  # type: ignore[union-attr]
        dues = [s.next_due() for s in sources]  # type: ignore[attr-defined]
        while not self.stop_requested.is_set():
            live = [(d, i) for i, d in enumerate(dues) if d is not None]
            if not live:
                return "completed"
            due, i = min(live)
            if until is not None and due > until:
                return "completed"
            advance(due)
            dispatch(names[i], sources[i].read())  # type: ignore[attr-defined]
            if barrier_timeout is not None:
                executor = self.executor
                executor.start_barrier()  # type: ignore[union-attr]
                if self.stop_requested.is_set():  # a stop after this also sets barrier_done
                    return "stopped"
                if not executor.barrier_done.wait(barrier_timeout):  # type: ignore[union-attr]
                    if self.stop_requested.is_set():
                        return "stopped"
                    raise RunError(f"a cycle did not reach every process within "
                                   f"{barrier_timeout:g} s", hint="a worker may be stuck")
            dues[i] = sources[i].next_due()  # type: ignore[attr-defined]
        return "stopped"

    def close(self) -> None:
        """Close opened nodes in reverse order; errors are logged, not raised."""
        for name in reversed(self._opened):
            try:
                self.graph.nodes[name].close()
            except Exception as exc:  # closing must reach every node
                log.error("closing node '%s' failed: %s", name, exc)
                self.emit_event("close_failed", node=name, error=repr(exc))
        self._opened.clear()
