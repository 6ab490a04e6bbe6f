"""Run a graph: clocks, worker processes, stopping, and the run's result.

:class:`Runner` runs the main process's nodes itself and spawns one worker per
other ``process:`` name. Everything is stopped and joined on every path out
(duration reached, sources exhausted, Ctrl-C/SIGTERM through
:meth:`Runner.request_stop`, a node error, a dead worker); workers that do not
exit in time are killed, so no process is left behind.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import zmq

from bci_runtime.actuator import Actuator
from bci_runtime.clock import Clock, LslClock, SimulatedClock
from bci_runtime.config import MAIN_PROCESS
from bci_runtime.errors import BciError, NodeError, RunError, WorkerDiedError
from bci_runtime.graph import Graph
from bci_runtime.ipc import ZmqReceiver, ZmqSender, bind_address
from bci_runtime.process_runtime import ProcessRuntime
from bci_runtime.registry import runtime_registrations
from bci_runtime.spec import StreamSpec
from bci_runtime.telemetry import LatencyRecorder, NodeTelemetry
from bci_runtime.watchdog import HEARTBEAT_TIMEOUT_S, Watchdog
from bci_runtime.worker import failure_info, make_run_dir, node_summaries, worker_main

log = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 5.0


class _StartupInterrupted(Exception):
    """A stop was requested before the run had started; not an error."""


@dataclass
class RunResult:
    """What a run did.

    Attributes
    ----------
    status : {"completed", "stopped", "failed"}
        Completed: duration reached or sources exhausted; stopped: on request
        (Ctrl-C, SIGTERM); failed: see ``error``.
    reason : str
        Why the run ended.
    error : BciError or None
        The failure, if any.
    wall_s : float
        Wall-clock duration.
    samples : int
        Samples delivered by all sources.
    bad_chunks : dict of str to int
        Malformed chunks per source.
    end_to_end : LatencyRecorder
        Latency of every sink emission (newest input sample -> emission).
    telemetry : dict of str to NodeTelemetry
        Per-node processing time and emission latency.
    """

    status: str
    reason: str
    error: BciError | None
    wall_s: float
    samples: int
    bad_chunks: dict[str, int]
    end_to_end: LatencyRecorder
    telemetry: dict[str, NodeTelemetry]
    processes: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)


@dataclass
class _Worker:
    name: str
    process: mp.process.BaseProcess
    conn: Connection
    address: str | None = None
    pid: int | None = None
    opened: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    drained: threading.Event = field(default_factory=threading.Event)
    report: dict = field(default_factory=dict)
    exiting: bool = False
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    heartbeat: Watchdog | None = None

    def send(self, *msg: Any) -> bool:
        """Send a control message; False if the worker is gone."""
        with self.send_lock:
            try:
                self.conn.send(msg)
                return True
            except (OSError, ValueError):
                return False


class Runner:
    """Runs a configured graph once.

    Parameters
    ----------
    graph : Graph
        The configured graph (from :func:`~bci_runtime.graph.build_graph`).
    duration : float, optional
        Seconds of stream time to run; default the pipeline's ``duration``
        (None: until stopped or the sources end).
    emit_event : callable, optional
        ``emit_event(kind, **fields)``, e.g. :meth:`Session.log_event`.
    session_dir : Path, optional
        Handed to nodes (and workers).
    tap : callable, optional
        ``tap(node, outputs, now, read)`` sees every chunk the main process's nodes
        emit, and what arrives from workers (the session recording); it must only
        queue.
    """

    def __init__(self, graph: Graph, duration: float | None = None,
                 emit_event: Callable[..., None] | None = None,
                 session_dir: Path | None = None,
                 tap: Callable[[str, Mapping[str, Any], float, bool], None] | None = None
                 ) -> None:
        self.tap = tap
        self.graph = graph
        self.duration = duration if duration is not None else graph.config.duration
        self.emit_event = emit_event or (lambda kind, **fields: None)
        self.session_dir = session_dir
        self.clock: Clock = SimulatedClock() if graph.config.clock == "simulated" else LslClock()
        self._wake = threading.Event()
        self._failure: BciError | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._monitor: threading.Thread | None = None
        self._remote_specs: dict[int, StreamSpec] = {}
        self._specs_changed = threading.Condition()
        self.runtime = ProcessRuntime(graph, MAIN_PROCESS, self.clock, self.emit_event,
                                      lambda exc: self._on_failure(exc, local_safe=True),
                                      session_dir)
        self.runtime.on_emergency_stop = lambda source: self._send_to_workers("estop", source)
        # processes that run an actuator: told at once when something elsewhere fails
        self._actuator_processes = {graph.process_of(n) for n, node in graph.nodes.items()
                                    if isinstance(node, Actuator)}
        self._heartbeats_stopped = False
        self.started = threading.Event()  # every node is open and the sources run
        self.arm_when_started: str | None = None  # who confirmed arming before the run
        # a live run also ends when every source, in every process, has ended
        self._source_processes = {graph.process_of(n) for n in graph.sources()}
        self._ended_source_processes: set[str] = set()
        self.all_sources_done = threading.Event()
        self.runtime.on_sources_done = lambda: self._sources_ended_in(MAIN_PROCESS)

    # -- control -------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop cleanly (safe from signal handlers and other threads)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self.runtime.stop_requested.set()
        executor = self.runtime.executor
        if executor is not None:  # wake a simulated run waiting on a cycle (a worker died?)
            executor.barrier_done.set()
        self._wake.set()
        for worker in list(self._workers.values()):  # wake a start-up waiting on workers
            worker.ready.set()
            worker.opened.set()
        with self._specs_changed:
            self._specs_changed.notify_all()

    def _sources_ended_in(self, process: str) -> None:
        with self._lock:
            self._ended_source_processes.add(process)
            done = self._source_processes <= self._ended_source_processes
        if done:
            self.all_sources_done.set()
            self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """Stop the run as failed with ``exc`` (from any thread; the first failure wins)."""
        self._on_failure(exc)

    # -- safety ---------------------------------------------------------------------------
    def go_safe(self, reason: str, detected_at: float | None = None,
                skip: str | None = None) -> None:
        """Force every actuator of the run (all processes but ``skip``) into its safe state."""
        detected_at = time.monotonic() if detected_at is None else detected_at
        if MAIN_PROCESS in self._actuator_processes and skip != MAIN_PROCESS:
            self.runtime.go_safe(reason, detected_at)
        self._send_to_workers("safe", reason, skip=skip)

    def emergency_stop(self, source: str) -> None:
        """The operator's emergency stop, for every actuator of the run (any thread)."""
        self.runtime.emergency_stop(source)
        self._send_to_workers("estop", source)

    @property
    def actuators(self) -> list[Actuator]:
        """Every actuator of the run, in any process."""
        return [node for node in self.graph.nodes.values() if isinstance(node, Actuator)]

    def arm(self, by: str) -> dict[str, bool]:
        """Arm the actuators of the main process (others are told); whether each armed."""
        self._send_to_workers("arm", by)
        return self.runtime.arm(by)

    def _send_to_workers(self, verb: str, value: str, skip: str | None = None) -> None:
        for worker in list(self._workers.values()):
            if worker.name in self._actuator_processes and worker.name != skip:
                worker.send(verb, value)

    def _start_heartbeats(self) -> None:
        """Watch each worker's heartbeat when the run drives an actuator."""
        if not self._actuator_processes:
            return
        for worker in self._workers.values():
            worker.heartbeat = Watchdog(
                HEARTBEAT_TIMEOUT_S, lambda reason, w=worker: self._heartbeat_lost(w, reason),
                name=f"heartbeat of process '{worker.name}'")

    def _heartbeat_lost(self, worker: _Worker, reason: str) -> None:
        if self._heartbeats_stopped:
            return
        dog = worker.heartbeat
        deadline = dog.trip_deadline if dog is not None else None
        self.go_safe(reason, deadline, skip=worker.name)
        self.emit_event("heartbeat_lost", process=worker.name, pid=worker.pid, reason=reason)

    def _stop_heartbeats(self) -> None:
        self._heartbeats_stopped = True  # no trip for workers that are told to stop
        for worker in self._workers.values():
            if worker.heartbeat is not None:
                worker.heartbeat.close()

    def _on_failure(self, exc: BaseException, local_safe: bool = False) -> None:
        if not isinstance(exc, BciError):
            exc = RunError(f"{type(exc).__name__}: {exc}")
        with self._lock:
            first = self._failure is None
        if first:  # actuators first: everything else can wait
            self.go_safe(f"failure: {exc}", skip=MAIN_PROCESS if local_safe else None)
        with self._lock:
            if self._failure is None:
                self._failure = exc
                info = failure_info(exc)
                self.emit_event("failure", error=info["message"], type=info["type"],
                                node=info["node"], timestamp=info["timestamp"],
                                traceback=info["traceback"])
        self.request_stop("failure")
        with self._specs_changed:
            self._specs_changed.notify_all()  # nobody waits for a spec that will not come

    # -- workers -------------------------------------------------------------------------
    def _spawn_workers(self, run_dir: str) -> None:
        ctx = mp.get_context("spawn")
        self._monitor_wake_r, self._monitor_wake_w = ctx.Pipe(duplex=False)
        config_json = self.graph.config.model_dump_json(by_alias=True, exclude_unset=True)
        for name in self.graph.processes:
            if name == MAIN_PROCESS:
                continue
            parent_conn, child_conn = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, name=f"bci-worker-{name}", daemon=True,
                args=(config_json, self.graph.file, name, run_dir,
                      str(self.session_dir) if self.session_dir else None, child_conn,
                      mp.current_process().pid, runtime_registrations()),
            )
            proc.start()
            child_conn.close()
            self._workers[name] = _Worker(name, proc, parent_conn)
        self._monitor = threading.Thread(target=self._monitor_workers, name="worker-monitor",
                                         daemon=True)
        self._monitor.start()

    def _monitor_workers(self) -> None:
        """Handle worker messages and deaths; woken by the pipes and process sentinels."""
        conns = {w.conn: w for w in self._workers.values()}
        sentinels = {w.process.sentinel: w for w in self._workers.values()}
        while conns or sentinels:
            ready = wait(list(conns) + list(sentinels) + [self._monitor_wake_r])
            if self._monitor_wake_r in ready:
                return
            for obj in ready:
                if obj in conns:
                    worker = conns[obj]
                    try:
                        msg = obj.recv()
                    except (EOFError, OSError):
                        del conns[obj]
                        continue
                    self._handle_message(worker, msg)
                elif obj in sentinels:
                    worker = sentinels.pop(obj)
                    if not worker.exiting:
                        nodes = ", ".join(self.graph.nodes_in(worker.name))
                        worker.process.join(1.0)  # the sentinel fires before it can be reaped
                        code = worker.process.exitcode
                        self._on_failure(WorkerDiedError(
                            f"worker process '{worker.name}' (pid {worker.process.pid}) died "
                            f"with exit code {code} while running node(s): {nodes}",
                            hint="see the session's events.jsonl; a negative code is the "
                            "signal that killed it",
                        ))
                    for event in (worker.ready, worker.opened, worker.drained):
                        event.set()

    def _handle_message(self, worker: _Worker, msg: tuple) -> None:
        verb = msg[0]
        if verb == "ready":
            worker.address, worker.pid = msg[1], msg[2]
            worker.ready.set()
        elif verb == "spec":
            self._route_spec(msg[1], StreamSpec.from_dict(msg[2]))
        elif verb == "opened":
            worker.opened.set()
        elif verb == "sources_done":
            self._sources_ended_in(worker.name)
        elif verb == "hb":
            dog = worker.heartbeat
            if dog is not None:
                if dog.tripped is not None:
                    dog.reset()
                    self.emit_event("heartbeat_resumed", process=worker.name)
                dog.feed()
        elif verb == "estop":  # a node of that worker (a web page) asked for it
            self.runtime.emergency_stop(msg[1])
            self._send_to_workers("estop", msg[1], skip=worker.name)
        elif verb == "event":
            self.emit_event(msg[1], process=worker.name, **msg[2])
        elif verb == "drained":
            worker.report = msg[1]
            worker.drained.set()
        elif verb == "failed":
            info = msg[1]
            self.emit_event("worker_failure", process=worker.name, **info)
            if info.get("type") == "NodeError" and info.get("node"):
                exc: BciError = NodeError.from_report(
                    info["node"], info.get("timestamp"), info.get("cause_type") or "Error",
                    info.get("cause_message") or info["message"])
            else:
                exc = RunError(f"worker process '{worker.name}' failed: {info['message']}")
            self._on_failure(exc)
            for event in (worker.ready, worker.opened):
                event.set()

    # -- spec exchange while opening ------------------------------------------------------
    def _route_spec(self, edge_id: int, spec: StreamSpec) -> None:
        """Pass an edge's opened spec to the process at its end."""
        dst = self.graph.process_of(self.graph.edges[edge_id].dst)
        if dst != MAIN_PROCESS:
            self._workers[dst].send("spec", edge_id, spec.to_dict())
            return
        with self._specs_changed:
            self._remote_specs[edge_id] = spec
            self._specs_changed.notify_all()

    def _spec_in(self, edge_id: int) -> StreamSpec:
        """Wait for the spec of an edge arriving from a worker."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self._specs_changed:
            while edge_id not in self._remote_specs:
                remaining = deadline - time.monotonic()
                if self._failure is not None:
                    raise self._failure
                if self._stop_reason is not None:
                    raise _StartupInterrupted(self._stop_reason)
                if remaining <= 0:
                    e = self.graph.edges[edge_id]
                    raise RunError(f"the stream {e.src}.{e.src_port} from worker process "
                                   f"'{self.graph.process_of(e.src)}' was not ready within "
                                   f"{STARTUP_TIMEOUT_S:.0f} s")
                self._specs_changed.wait(remaining)
            return self._remote_specs[edge_id]

    def _wait_all(self, attr: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            getattr(worker, attr).wait(max(0.0, deadline - time.monotonic()))

    def _shutdown_workers(self) -> None:
        for worker in self._workers.values():
            worker.exiting = True
            worker.send("exit")
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("worker '%s' did not exit; killing it", worker.name)
                worker.process.kill()
                worker.process.join(2.0)
        if self._monitor is not None:
            self._monitor_wake_w.send(b"x")
            self._monitor.join(2.0)
            for worker in self._workers.values():
                worker.conn.close()

    # -- run -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run until the duration is reached, the sources end, a stop or a failure."""
        t_start = time.monotonic()
        context = zmq.Context() if len(self.graph.processes) > 1 else None
        run_dir = make_run_dir() if context else None
        receiver = sender = None
        status = "failed"
        started = False
        try:
            if context is not None:
                receiver = ZmqReceiver(self.graph, MAIN_PROCESS,
                                       bind_address(self.graph.config.transport, Path(run_dir),
                                                    MAIN_PROCESS), context)
                self._spawn_workers(run_dir)
                self._wait_all("ready", STARTUP_TIMEOUT_S)
                self._check_started("ready")
                addresses = {MAIN_PROCESS: receiver.address}
                addresses.update({w.name: w.address for w in self._workers.values()})
                self.emit_event("workers_started", run_dir=run_dir, workers={
                    w.name: {"pid": w.pid, "nodes": self.graph.nodes_in(w.name)}
                    for w in self._workers.values()})
                for worker in self._workers.values():
                    worker.send("connect", addresses)
                sender = ZmqSender(self.graph, MAIN_PROCESS, addresses, context)
                self.runtime.open(sender, self._spec_in, self._route_spec)
            else:
                self.runtime.open()
            self.runtime.executor.tap = self.tap  # type: ignore[union-attr]
            if receiver is not None:
                executor = self.runtime.executor

                def deliver(edge_id: int, chunk: Any, base: float, wall: float, now: float) -> None:
                    try:
                        executor.dispatch_remote(edge_id, chunk, base, wall, now)
                    except NodeError as exc:
                        self._on_failure(exc)

                receiver.start(deliver, executor.end_remote_edge, executor.remote_barrier, self._on_failure)
                self._wait_all("opened", STARTUP_TIMEOUT_S)
                self._check_started("opened")
                self._start_heartbeats()
                for worker in self._workers.values():
                    worker.send("run", bool(self._actuator_processes))
            started = True
            # what exists now (libraries, nodes, buffers) lives for the whole run: freezing
            # it keeps full garbage collections from scanning it on the data path
            gc.freeze()
            self.emit_event("run_started", clock=self.graph.config.clock, duration=self.duration)
            if self.arm_when_started:  # confirmed before the start: on before the first chunk
                self.emit_event("armed_at_start", result=self.arm(self.arm_when_started))
            self.started.set()
            status = self._run_sources()
        except _StartupInterrupted:
            status = "stopped"  # Ctrl-C or SIGTERM while workers were starting
        except BciError as exc:
            self._on_failure(exc)
        except BaseException as exc:
            self._on_failure(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            gc.unfreeze()
            self._stop_heartbeats()
            self.runtime.stop_sources()
            if started:  # before the start nothing is in flight, and a worker may be stuck opening
                self._drain()
            if receiver is not None:
                receiver.stop()
            self.runtime.close()
            if sender is not None:
                # after a failure, what is queued for a dead worker is dropped at once
                sender.close(linger_ms=0 if self._failure is not None else 2000)
            self._shutdown_workers()
            if context is not None:
                # sockets are closed; destroy() also closes any a stuck thread still holds,
                # where term() would wait for it forever
                context.destroy(linger=0)
            if run_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
        if self._failure is not None:
            status = "failed"
        reason = str(self._failure) if self._failure else (self._stop_reason or status)
        result = self._result(status, reason, time.monotonic() - t_start)
        self.emit_event("run_ended", status=status, reason=reason)
        return result

    def _check_started(self, stage: str) -> None:
        if self._failure is not None:
            raise self._failure
        if self._stop_reason is not None:
            raise _StartupInterrupted(self._stop_reason)
        late = [w.name for w in self._workers.values() if not getattr(w, stage).is_set()]
        if late:
            raise RunError(f"worker process(es) {', '.join(late)} did not start within "
                           f"{STARTUP_TIMEOUT_S:.0f} s", hint="check the session's events.jsonl")

    def _run_sources(self) -> str:
        if self.graph.config.clock == "simulated":
            until = self.clock.now() + self.duration if self.duration else None
            barrier = DRAIN_TIMEOUT_S if self._workers else None
            status = self.runtime.run_simulated(until, barrier)
            return "stopped" if self._stop_reason else status
        self.runtime.start_sources()
        done = self.all_sources_done
        deadline = time.monotonic() + self.duration if self.duration else None
        while not self._wake.is_set() and not done.is_set():
            # woken by a stop request, a failure, or the last source ending; the timeout
            # is the run's duration, not a polling period
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return "completed"
            self._wake.wait(remaining if remaining is not None else None)
            if done.is_set():
                break
        if self._stop_reason and self._stop_reason != "failure":
            return "stopped"
        return "completed"

    def _drain(self) -> None:
        """Let in-flight chunks reach every node, in every process, before closing.

        The sources' end-of-stream marks travel the edges behind the data; a
        process has drained when each of its nodes has seen the end of its inputs.
        """
        if not self._workers:
            return
        # a dead worker never ends its output edges: then nobody waits long for them
        died = isinstance(self._failure, WorkerDiedError) or not all(
            w.process.is_alive() for w in self._workers.values())
        timeout = 0.5 if died else DRAIN_TIMEOUT_S
        for worker in self._workers.values():
            if not worker.send("stop", timeout):
                worker.drained.set()
        self._wait_all("drained", DRAIN_TIMEOUT_S + 2.0)
        executor = self.runtime.executor
        if executor is not None:
            alive = all(w.process.is_alive() for w in self._workers.values())
            executor.drained.wait(DRAIN_TIMEOUT_S if alive and not died else 0.5)

    def _result(self, status: str, reason: str, wall_s: float) -> RunResult:
        executor = self.runtime.executor
        telemetry = dict(executor.telemetry) if executor else {}
        end_to_end = executor.end_to_end if executor else LatencyRecorder()
        samples = sum(executor.samples_in.values()) if executor else 0
        bad = dict(executor.bad_chunks) if executor else {}
        summaries = node_summaries(self.graph, self.graph.nodes_in(MAIN_PROCESS)) if executor else {}
        for worker in self._workers.values():
            report = worker.report
            if not report:
                continue
            for name, state in report["telemetry"].items():
                telemetry.setdefault(name, NodeTelemetry.create()).merge_state(state)
            end_to_end.merge_values(*report["end_to_end"])
            samples += sum(report["samples_in"].values())
            for name, count in report["bad_chunks"].items():
                bad[name] = bad.get(name, 0) + count
            summaries.update(report.get("summaries", {}))
        processes = {w.name: {"pid": w.pid, "nodes": self.graph.nodes_in(w.name),
                              "exitcode": w.process.exitcode} for w in self._workers.values()}
        return RunResult(status, reason, self._failure, wall_s, samples, bad, end_to_end,
                         telemetry, processes, summaries)
