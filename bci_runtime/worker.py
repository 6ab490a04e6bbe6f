"""Worker processes: run the nodes placed in a ``process:`` of their own.

The main process spawns one worker per process name and talks to it over a
``multiprocessing`` pipe (control) while data go over pyzmq. Protocol, main ->
worker: ``connect`` (addresses), ``spec`` (an incoming edge's stream, while
opening), ``run``, ``stop``, ``exit``, and for actuators ``safe`` (reason), ``estop``
(source), ``arm`` (by); worker -> main: ``ready`` (bound address), ``spec`` (an
outgoing edge's stream), ``opened``, ``event``, ``failed``, ``drained``
(telemetry), ``estop``, and ``hb`` every 20 ms while the run drives an actuator
(a missing heartbeat for 100 ms makes the actuators safe).
A worker asks the kernel to kill it if its parent dies
(``PR_SET_PDEATHSIG``), so no worker outlives the runtime, even after SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq

from bci_runtime.clock import LslClock, SimulatedClock
from bci_runtime.config import PipelineConfig
from bci_runtime.errors import NodeError, RunError
from bci_runtime.graph import build_graph
from bci_runtime.ipc import ZmqReceiver, ZmqSender, bind_address
from bci_runtime.process_runtime import ProcessRuntime
from bci_runtime.registry import import_registrations
from bci_runtime.spec import StreamSpec

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the control pipe's EOF still ends us
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def failure_info(exc: BaseException) -> dict[str, Any]:
    """Picklable description of a failure."""
    cause = getattr(exc, "cause", None)
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "cause_type": type(cause).__name__ if cause is not None else None,
        "cause_message": str(cause) if cause is not None else None,
        "node": getattr(exc, "node", None),
        "timestamp": getattr(exc, "timestamp", None),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def node_summaries(graph: Any, names: list[str]) -> dict[str, dict]:
    """``summary()`` of every node that has one, by node name."""
    out = {}
    for name in names:
        summary = getattr(graph.nodes[name], "summary", None)
        if callable(summary):
            try:
                out[name] = summary()
            except Exception as exc:  # a summary must not hide the run's result
                out[name] = {"error": repr(exc)}
    return out


def worker_main(config_json: str, file: str, process: str, run_dir: str,
                session_dir: str | None, control: Connection, parent_pid: int,
                registrations: dict[str, str] | None = None) -> None:
    """Entry point of a worker process (spawned by :class:`~bci_runtime.runner.Runner`)."""
    die_with_parent(parent_pid)
    # Ctrl-C and SIGTERM sent to the whole process group reach workers too; the main
    # process decides when they stop (and the kernel kills them if it dies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    context = zmq.Context()
    runtime: ProcessRuntime | None = None
    receiver: ZmqReceiver | None = None
    sender: ZmqSender | None = None

    send_lock = threading.Lock()  # nodes' and sources' threads send events too
    stopping = threading.Event()  # ends the heartbeat
    received_specs: dict[int, StreamSpec] = {}

    def send(*msg: Any) -> None:
        with send_lock:
            try:
                control.send(msg)
            except (OSError, EOFError, ValueError):
                pass

    def spec_in(edge_id: int) -> StreamSpec:
        """Wait for the spec of an edge from another process (sent while opening)."""
        while edge_id not in received_specs:
            msg = control.recv()
            if msg[0] != "spec":
                raise RunError(f"startup interrupted by '{msg[0]}' while waiting for the "
                               f"stream of edge {edge_id}")
            received_specs[msg[1]] = StreamSpec.from_dict(msg[2])
        return received_specs[edge_id]

    def on_failure(exc: BaseException) -> None:
        send("failed", failure_info(exc))
        if runtime is not None:
            runtime.stop_requested.set()

    try:
        import_registrations(registrations or {})
        config = PipelineConfig.model_validate_json(config_json)
        graph = build_graph(config, file=file)
        clock = SimulatedClock() if config.clock == "simulated" else LslClock()
        runtime = ProcessRuntime(
            graph, process, clock,
            emit_event=lambda kind, **fields: send("event", kind, fields),
            on_failure=on_failure,
            session_dir=Path(session_dir) if session_dir else None,
        )
        runtime.on_sources_done = lambda: send("sources_done")
        runtime.on_emergency_stop = lambda source: send("estop", source)
        receiver = ZmqReceiver(graph, process, bind_address(config.transport, Path(run_dir), process),
                               context)
        send("ready", receiver.address, os.getpid())
        while True:
            try:
                msg = control.recv()
            except (EOFError, OSError):
                break  # the main process is gone
            verb = msg[0]
            if verb == "connect":
                sender = ZmqSender(graph, process, msg[1], context)
                runtime.open(sender, spec_in,
                             lambda edge_id, spec: send("spec", edge_id, spec.to_dict()))
                executor = runtime.executor

                def deliver(edge_id: int, chunk: Any, base: float, wall: float, now: float) -> None:
                    try:
                        executor.dispatch_remote(edge_id, chunk, base, wall, now)  # type: ignore[union-attr]
                    except NodeError as exc:
                        on_failure(exc)

                receiver.start(deliver, executor.end_remote_edge, executor.remote_barrier, on_failure)
                send("opened")
            elif verb == "run":
                if len(msg) > 1 and msg[1]:  # the run drives an actuator: prove we are alive
                    heartbeat = threading.Thread(target=_heartbeat, args=(send, stopping),
                                                 name="heartbeat", daemon=True)
                    heartbeat.start()
                if config.clock == "live":
                    runtime.start_sources()
            elif verb == "safe":
                runtime.go_safe(msg[1])
            elif verb == "estop":
                runtime.emergency_stop(msg[1])
            elif verb == "arm":
                runtime.arm(msg[1])
            elif verb == "stop":
                # end of input: local sources stop, upstream processes have ended, then
                # tell downstream processes and report telemetry
                runtime.stop_sources()
                executor = runtime.executor
                if executor is not None:
                    executor.drained.wait(msg[1] if len(msg) > 1 else 10.0)
                send("drained", {
                    "telemetry": {n: t.to_state() for n, t in executor.telemetry.items()},
                    "end_to_end": (executor.end_to_end.values(), executor.end_to_end.count,
                                   executor.end_to_end.max),
                    "samples_in": executor.samples_in,
                    "bad_chunks": executor.bad_chunks,
                    "summaries": node_summaries(graph, graph.nodes_in(process)),
                } if executor else {})
            elif verb == "exit":
                break
    except BaseException as exc:  # report anything, then leave
        send("failed", failure_info(exc))
    finally:
        stopping.set()
        if receiver is not None:
            receiver.stop(timeout=2.0)
        if runtime is not None:
            runtime.stop_sources(timeout=2.0)
            runtime.close()
        if sender is not None:
            sender.close()
        context.term()
        control.close()
        sys.stdout.flush()


#: how often a worker proves it is alive while the run drives an actuator (s)
HEARTBEAT_EVERY_S = 0.02


def _heartbeat(send: Any, stopping: threading.Event) -> None:
    """Send ``hb`` to the main process every 20 ms until ``stopping`` is set."""
    while not stopping.wait(HEARTBEAT_EVERY_S):  # a period, not a poll: the beat is the point
        send("hb")


RUN_DIR_PREFIX = "bci-run-"


def make_run_dir() -> str:
    """A private folder for this run's ipc:// socket files, named after this process.

    Short (ipc:// paths are limited to 107 bytes). Folders left by runs whose
    process no longer exists (a SIGKILLed runtime cannot clean up) are removed.
    """
    base = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    for stale in base.glob(f"{RUN_DIR_PREFIX}*"):
        pid = stale.name[len(RUN_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-", dir=base)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
