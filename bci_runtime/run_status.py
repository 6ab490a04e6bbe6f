"""What a running session looks like now: cheap reads for the operator's status panel.

:class:`RunStatus` is handed every event of the run (chain :meth:`RunStatus.on_event`
into the runner's ``emit_event``, see :func:`chain_events`) and, when asked, reads the
runner's counters into one JSON-ready mapping (:meth:`RunStatus.snapshot`): each
source's nominal and measured rate, samples, dropped samples and bad chunks, and
whether it is stalled; each decoder's serving version and training state; each
feedback sink's decisions and running accuracy; the end-to-end latency percentiles
of the last few seconds; each stimulator's state and counts; elapsed and remaining
time; the last notable events.

Nothing here makes the hot path wait:

* :meth:`RunStatus.on_event`, called on the graph's threads, only appends to a deque;
  the events are counted by the next snapshot;
* :meth:`RunStatus.snapshot` reads plain attributes (integers, the latency recorder's
  ring) and never calls a node method that takes a lock; concurrent snapshots are
  serialised by a lock of its own, which no graph thread takes.

Nodes are recognised by what they have, not by their class (the core knows nothing
of drivers and decoders): sources are the graph's sources; decoders have both a
``decision`` and a ``model`` output; feedback sinks have a ``decision`` input and no
output; stimulators are :class:`~bci_runtime.actuator.Actuator` nodes. Nodes placed
in worker processes are shown from their events only (their counters live there).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bci_runtime.actuator import Actuator
from bci_runtime.config import MAIN_PROCESS
from bci_runtime.errors import ConfigError, RunError

if TYPE_CHECKING:
    from bci_runtime.runner import Runner

RATE_WINDOW_S = 2.0  # measured rates cover about this much of the past
LATENCY_WINDOW_S = 5.0  # latency percentiles cover about this much of the past
MAX_LATENCY_VALUES = 4096  # newest latencies a snapshot looks at, at most
MARK_EVERY_S = 0.1  # counter readings kept for the windows, at most this often
INBOX_SIZE = 1 << 16  # events waiting for the next snapshot, at most
LAST_EVENTS = 8  # notable events shown
TEXT_MAX = 90  # characters of an event's description

#: events that happen on every trial or every few seconds: counted, not listed
#: a cursor decoder adapts once a second: counted, not listed one by one
ROUTINE_EVENTS = frozenset({"trial_scored", "clock_offset", "test_call", "model_update"})
ERROR_EVENTS = frozenset({"failure", "worker_failure", "safe_state_failed", "heartbeat_lost",
                          "stream_lost", "stimulator_error", "emergency_stop", "close_failed"})
WARNING_EVENTS = frozenset({"stream_stalled", "samples_dropped", "bad_chunk", "safe_state",
                            "model_rollback", "model_drift", "arm_refused", "stream_blocked",
                            "stream_accept_refused", "calibration_extended",
                            "timestamps_not_increasing", "heartbeat_resumed"})
#: event kind -> the per-node and run-wide tally it adds one to
_TALLIES = {"stream_stalled": "stalls", "bad_chunk": "bad_chunks",
            "stream_reconnected": "reconnects", "stream_lost": "lost",
            "safe_state": "safe_states", "emergency_stop": "emergency_stops",
            "model_swap": "swaps", "model_rollback": "rollbacks", "model_drift": "drifts",
            "model_update": "updates",
            "failure": "failures", "worker_failure": "failures",
            "heartbeat_lost": "heartbeats_lost"}
#: event kind -> what it says about the state of the stream of its node
_STREAM_STATES = {"stream_stalled": "stalled", "stream_lost": "lost",
                  "stream_blocked": "blocked", "stream_resumed": None,
                  "stream_reconnected": None, "stream_accepted": None,
                  "stream_connected": None}
#: event kind -> the state of the actuator it comes from (actuators in workers)
_ACTUATOR_STATES = {"armed": "armed", "safe_state": "disarmed", "emergency_stop": "stopped"}


def chain_events(*handlers: Callable[..., None] | None) -> Callable[..., None]:
    """One ``emit_event(kind, **fields)`` that calls each handler in turn.

    Parameters
    ----------
    *handlers : callable or None
        ``handler(kind, **fields)``; None entries are skipped.

    Returns
    -------
    callable
        The chained handler (for :class:`~bci_runtime.runner.Runner`'s ``emit_event``).
    """
    chained = tuple(h for h in handlers if h is not None)

    def emit(kind: str, **fields: Any) -> None:
        for handler in chained:
            handler(kind, **fields)
    return emit


@dataclass
class _Mark:
    """Counter readings at one moment, the start of a window."""

    t: float
    samples: dict[str, int]
    latencies: int


@dataclass
class _Notable:
    """One event of the "last events" list (repeats of the same kind and node folded)."""

    t: float
    kind: str
    node: str | None
    text: str
    level: str
    repeat: int = 1


@dataclass
class _Tallies:
    """What the events said so far (updated by the snapshot that drains them)."""

    total: Counter = field(default_factory=Counter)
    per_node: dict[str, Counter] = field(default_factory=dict)
    stream_state: dict[str, str] = field(default_factory=dict)
    serving: dict[str, int] = field(default_factory=dict)
    candidate: dict[str, int | None] = field(default_factory=dict)
    actuator_state: dict[str, str] = field(default_factory=dict)
    notable: deque = field(default_factory=lambda: deque(maxlen=LAST_EVENTS))
    run_started: float | None = None
    run_ended: float | None = None
    clock_at_start: float | None = None
    ended_status: str | None = None
    ended_reason: str | None = None

    def node(self, name: str) -> Counter:
        """The tallies of one node (created empty)."""
        counts = self.per_node.get(name)
        if counts is None:
            counts = self.per_node[name] = Counter()
        return counts


class RunStatus:
    """Collects a run's events and reads its counters into snapshots.

    Parameters
    ----------
    runner : Runner, optional
        The run to watch; or give it later with :meth:`attach` (the runner takes
        ``emit_event`` when it is built, so the status usually exists first).
    rate_window_s : float
        Measured rates cover about this many seconds.
    latency_window_s : float
        Latency percentiles cover about this many seconds.
    max_latency_values : int
        Newest latencies a snapshot looks at, at most.
    last_events : int
        Notable events kept for display.
    """

    def __init__(self, runner: Runner | None = None, *, rate_window_s: float = RATE_WINDOW_S,
                 latency_window_s: float = LATENCY_WINDOW_S,
                 max_latency_values: int = MAX_LATENCY_VALUES,
                 last_events: int = LAST_EVENTS) -> None:
        if rate_window_s <= 0 or latency_window_s <= 0 or max_latency_values < 1:
            raise ConfigError("RunStatus windows must be positive",
                           hint="give rate_window_s > 0, latency_window_s > 0 and "
                           "max_latency_values >= 1")
        self.rate_window_s = rate_window_s
        self.latency_window_s = latency_window_s
        self.max_latency_values = max_latency_values
        self._inbox: deque[tuple[float, str, dict[str, Any]]] = deque(maxlen=INBOX_SIZE)
        self._tallies = _Tallies(notable=deque(maxlen=max(1, last_events)))
        self._marks: deque[_Mark] = deque()
        self._snap_lock = threading.Lock()  # between snapshot callers; never on the hot path
        self._wall_offset = time.time() - time.monotonic()
        self._overflowed = False
        self.runner: Runner | None = None
        if runner is not None:
            self.attach(runner)

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, runner: Runner) -> RunStatus:
        """Watch ``runner`` (a :class:`~bci_runtime.runner.Runner`); returns self.

        Finds, once, which nodes are sources, decoders, feedback sinks and
        actuators, and in which process each runs.
        """
        graph = runner.graph
        self.runner = runner
        self._pipeline = graph.config.name
        self._clock_kind = graph.config.clock
        self._sources: list[tuple[str, str, str | None, float]] = []
        for name in graph.sources():
            node = graph.nodes[name]
            port = next((p for p, o in node.outputs.items() if o.kind == "signal"), None)
            spec = graph.specs.get((name, port)) if port else None
            if spec is None and port:
                spec = node.output_specs.get(port)
            self._sources.append((name, graph.process_of(name),
                                  spec.name if spec is not None else None,
                                  float(spec.srate) if spec is not None else 0.0))
        # a decoder: versioned models, and class decisions or a continuous control signal
        self._decoders = [n for n in graph.order
                          if "model" in graph.nodes[n].outputs
                          and {"decision", "velocity"} & set(graph.nodes[n].outputs)]
        self._feedback = [n for n in graph.order if "decision" in graph.nodes[n].inputs
                          and not graph.nodes[n].outputs]
        self._actuators = [n for n in graph.order if isinstance(graph.nodes[n], Actuator)]
        return self

    def on_event(self, kind: str, **fields: Any) -> None:
        """Take one event of the run (any thread; only queues it).

        Parameters
        ----------
        kind : str
            The event's name (``bad_chunk``, ``stream_stalled``...).
        **fields
            Its fields, as given to the runner's ``emit_event``.
        """
        self._inbox.append((time.monotonic(), kind, fields))
        if kind == "run_started" and self.runner is not None:
            # the stream time of the start, for runs on the simulated clock
            self._tallies.clock_at_start = self.runner.clock.now()

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The run as it is now, JSON-ready.

        Returns
        -------
        dict
            ``pipeline``, ``clock``, ``status`` (``starting``, ``running``,
            ``stopping``, or how it ended), ``reason``, ``elapsed_s``,
            ``duration_s``, ``remaining_s``, ``streams`` (list), ``decoders``
            (list), ``feedback`` (list), ``latency_ms``, ``stimulators`` (list),
            ``has_actuators``, ``events`` (run-wide tallies by event kind, plus
            ``stalls``, ``dropped``, ``bad_chunks``, ``reconnects``, ``lost``,
            ``safe_states``, ``emergency_stops``, ``swaps``, ``rollbacks``, ``drifts``,
            ``failures``, ``heartbeats_lost``), ``events_overflowed`` (an event flood
            outran the snapshots: counts are lower bounds), ``last_events`` (newest
            last) and ``cost_us`` (what this snapshot took).

        Raises
        ------
        RunError
            When no runner is attached.
        """
        if self.runner is None:
            raise RunError("RunStatus.snapshot() needs a runner",
                           hint="build it as RunStatus(runner) or call attach(runner) first")
        with self._snap_lock:
            t0 = time.perf_counter()
            self._drain()
            now = time.monotonic()
            executor = self.runner.runtime.executor
            running = self.runner.started.is_set()
            samples = self._samples(executor)
            recorder = executor.end_to_end if executor is not None else None
            lat_count = recorder.count if recorder is not None else 0
            ended = self._tallies.run_ended
            until = now if ended is None else min(now, ended)  # windows end with the run
            rate_base = self._mark_before(until - self.rate_window_s)
            lat_base = self._mark_before(until - self.latency_window_s)
            if running and ended is None:
                self._add_mark(_Mark(now, samples, lat_count))
            out = {
                "pipeline": self._pipeline,
                "clock": self._clock_kind,
                **self._timing(now, running),
                "streams": self._streams(samples, rate_base, until, running),
                "decoders": [self._decoder(n) for n in self._decoders],
                "feedback": [self._feedback_row(n) for n in self._feedback],
                "latency_ms": self._latency(recorder, lat_count, lat_base, until),
                "stimulators": [self._stimulator(n) for n in self._actuators],
                "has_actuators": bool(self._actuators),
                "events": dict(self._tallies.total),
                "events_overflowed": self._overflowed,
                "last_events": [self._notable_row(e) for e in self._tallies.notable],
            }
            out["cost_us"] = round((time.perf_counter() - t0) * 1e6, 1)
            return out

    # -- events ----------------------------------------------------------------------------
    def _drain(self) -> None:
        """Count the events queued since the last snapshot."""
        inbox, tallies = self._inbox, self._tallies
        if len(inbox) == inbox.maxlen:
            self._overflowed = True  # the oldest were dropped: counts are a lower bound
        while True:
            try:
                t, kind, fields = inbox.popleft()
            except IndexError:
                return
            self._count(tallies, t, kind, fields)

    def _count(self, tallies: _Tallies, t: float, kind: str, fields: dict[str, Any]) -> None:
        node = fields.get("node") if isinstance(fields.get("node"), str) else None
        tallies.total[kind] += 1
        tally = _TALLIES.get(kind)
        if tally is not None:
            tallies.total[tally] += 1
            if node is not None:
                tallies.node(node)[tally] += 1
        if kind == "samples_dropped":
            lost = _int(fields.get("count"), 0)
            tallies.total["dropped"] += lost
            if node is not None:
                tallies.node(node)["dropped"] += lost
        if node is not None:
            if kind in _STREAM_STATES:
                state = _STREAM_STATES[kind]
                if state is None:
                    tallies.stream_state.pop(node, None)
                else:
                    tallies.stream_state[node] = state
            if kind in _ACTUATOR_STATES:
                tallies.actuator_state[node] = _ACTUATOR_STATES[kind]
            self._track_versions(tallies, kind, node, fields)
        if kind == "run_started":
            tallies.run_started = t
        elif kind == "run_ended":
            tallies.run_ended = t
            tallies.ended_status = str(fields.get("status"))
            tallies.ended_reason = _first_line(fields.get("reason"))
        if kind not in ROUTINE_EVENTS:
            self._remember(tallies, t, kind, node, fields)

    @staticmethod
    def _track_versions(tallies: _Tallies, kind: str, node: str,
                        fields: dict[str, Any]) -> None:
        version = _int(fields.get("version"), None)
        if kind in ("decoder_trained", "model_online", "model_swap", "model_update") \
                and version is not None:
            tallies.serving[node] = version
            tallies.candidate[node] = None
        elif kind == "model_shadow":
            tallies.candidate[node] = version
        elif kind == "model_rollback":
            tallies.candidate[node] = None

    @staticmethod
    def _remember(tallies: _Tallies, t: float, kind: str, node: str | None,
                  fields: dict[str, Any]) -> None:
        notable = tallies.notable
        last = notable[-1] if notable else None
        text = describe_event(kind, fields)
        if last is not None and last.kind == kind and last.node == node:
            last.t, last.text, last.repeat = t, text, last.repeat + 1
            return
        level = ("error" if kind in ERROR_EVENTS else
                 "warning" if kind in WARNING_EVENTS else "info")
        notable.append(_Notable(t, kind, node, text, level))

    def _notable_row(self, e: _Notable) -> dict[str, Any]:
        start = self._tallies.run_started
        return {"time": time.strftime("%H:%M:%S", time.localtime(e.t + self._wall_offset)),
                "at_s": None if start is None else round(e.t - start, 1),
                "kind": e.kind, "node": e.node, "text": e.text, "level": e.level,
                "repeat": e.repeat}

    # -- counters --------------------------------------------------------------------------
    def _samples(self, executor: Any) -> dict[str, int]:
        if executor is None:
            return {}
        counts = executor.samples_in  # one .get per key: no iteration over a changing dict
        return {name: counts.get(name, 0) for name, proc, _, _ in self._sources
                if proc == MAIN_PROCESS}

    def _add_mark(self, mark: _Mark) -> None:
        marks = self._marks
        if marks and mark.t - marks[-1].t < MARK_EVERY_S:
            return
        marks.append(mark)
        horizon = mark.t - max(self.rate_window_s, self.latency_window_s)
        while len(marks) >= 2 and marks[1].t <= horizon:  # keep one mark beyond the window
            marks.popleft()

    def _mark_before(self, t: float) -> _Mark | None:
        """The newest mark taken at or before ``t``, else the oldest one."""
        for mark in reversed(self._marks):
            if mark.t <= t:
                return mark
        return self._marks[0] if self._marks else None

    def _timing(self, now: float, running: bool) -> dict[str, Any]:
        tallies = self._tallies
        if tallies.run_started is None and running:
            tallies.run_started = now  # attached after the start: count from now
        start, end = tallies.run_started, tallies.run_ended
        duration = self.runner.duration
        if end is not None:
            status = tallies.ended_status or "ended"
        elif start is None:
            status = "starting"
        elif self.runner.runtime.stop_requested.is_set():
            status = "stopping"
        else:
            status = "running"
        if start is None:
            elapsed = None
        elif self._clock_kind == "simulated" and tallies.clock_at_start is not None:
            elapsed = self.runner.clock.now() - tallies.clock_at_start  # stream time
        else:
            elapsed = (end if end is not None else now) - start
        remaining = None
        if duration and elapsed is not None and end is None:
            remaining = max(0.0, duration - elapsed)
        return {"status": status, "reason": tallies.ended_reason,
                "elapsed_s": _round(elapsed, 1), "duration_s": duration,
                "remaining_s": _round(remaining, 1)}

    def _streams(self, samples: dict[str, int], base: _Mark | None, now: float,
                 running: bool) -> list[dict[str, Any]]:
        rows = []
        tallies = self._tallies
        ended = self.runner.all_sources_done.is_set() or tallies.run_ended is not None
        for name, proc, stream, nominal in self._sources:
            local = proc == MAIN_PROCESS
            count = samples.get(name) if local else None
            measured = window = None
            if local and stream is not None and base is not None and running \
                    and now - base.t >= 0.25:
                window = now - base.t
                measured = (count - base.samples.get(name, 0)) / window  # type: ignore[operator]
            counts = tallies.per_node.get(name, Counter())
            state = tallies.stream_state.get(name)
            if state is None:
                state = _stream_state(local, running, ended, measured, window, nominal,
                                      self._clock_kind == "live")
            rows.append({"name": name, "stream": stream, "process": proc,
                         "nominal_hz": nominal, "measured_hz": _round(measured, 1),
                         "window_s": _round(window, 2), "samples": count,
                         "dropped": counts["dropped"], "bad_chunks": counts["bad_chunks"],
                         "stalls": counts["stalls"], "reconnects": counts["reconnects"],
                         "state": state})
        return rows

    def _decoder(self, name: str) -> dict[str, Any]:
        """A decoder's version and training state from its attributes (never a method)."""
        tallies = self._tallies
        counts = tallies.per_node.get(name, Counter())
        row: dict[str, Any] = {
            "name": name, "process": self.runner.graph.process_of(name),
            "version": tallies.serving.get(name), "candidate": tallies.candidate.get(name),
            "calibrated": None, "versions": None, "state": None, "cv_accuracy": None,
            "swaps": counts["swaps"], "rollbacks": counts["rollbacks"],
            "drifts": counts["drifts"], "updates": counts["updates"]}
        if row["process"] != MAIN_PROCESS:
            row["calibrated"] = row["version"] is not None
            row["state"] = "serving" if row["version"] is not None else "calibrating"
            return row
        node = self.runner.graph.nodes[name]
        lifecycle = getattr(node, "lifecycle", None)
        if lifecycle is not None:  # a co-adaptive decoder: serving, candidate, queue
            serving, candidate = lifecycle.serving, lifecycle.candidate
            jobs = getattr(getattr(lifecycle, "_jobs", None), "unfinished_tasks", 0)
            row.update(calibrated=serving is not None, versions=len(lifecycle.versions),
                       version=serving.version if serving is not None else None,
                       candidate=candidate.version if candidate is not None else None)
            row["state"] = ("calibrating" if serving is None and not jobs else
                            "fitting" if serving is None else
                            f"shadow v{candidate.version}" if candidate is not None else
                            "updating" if jobs else "serving")
            return row
        if hasattr(node, "coef_"):  # a decoder calibrated once (linear classifier)
            calibrated = getattr(node, "coef_", None) is not None
            fitting = getattr(node, "_fitting", None)
            training = getattr(node, "training", None)
            row["calibrated"] = calibrated
            row["state"] = ("serving" if calibrated else
                            "fitting" if fitting is not None else "calibrating")
            if isinstance(training, dict) and training.get("cv_accuracy") is not None:
                row["cv_accuracy"] = round(float(training["cv_accuracy"]), 3)
            return row
        row["calibrated"] = row["version"] is not None
        row["state"] = "serving" if row["version"] is not None else None
        return row

    def _feedback_row(self, name: str) -> dict[str, Any]:
        node = self.runner.graph.nodes[name]
        scored, correct = getattr(node, "scored", 0), getattr(node, "correct", 0)
        trials, trials_ok = getattr(node, "trials_scored", 0), getattr(node, "trials_correct", 0)
        spec = getattr(node, "input_specs", {}).get("decision")
        n_classes = len(spec.channel_names) if spec is not None else 0
        local = self.runner.graph.process_of(name) == MAIN_PROCESS
        return {"name": name, "process": self.runner.graph.process_of(name),
                "decisions": getattr(node, "decisions", 0) if local else None,
                "scored": scored if local else None,
                "accuracy": round(correct / scored, 4) if local and scored else None,
                "trials_scored": trials if local else None,
                "trial_accuracy": round(trials_ok / trials, 4) if local and trials else None,
                "chance": round(1.0 / n_classes, 4) if n_classes else None}

    def _latency(self, recorder: Any, count: int, base: _Mark | None,
                 now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"p50": None, "p99": None, "max": None, "count": 0,
                               "window_s": None, "total": count}
        if recorder is None or count == 0:
            return out
        since = base.latencies if base is not None else 0
        values = _ring_tail(recorder, count, min(count - since, self.max_latency_values))
        out["window_s"] = round(now - base.t, 2) if base is not None else None
        out["count"] = int(len(values))
        if len(values):
            ordered = np.sort(values)  # a sort and two reads: np.percentile costs ten times more
            out.update(p50=round(_quantile(ordered, 0.50) * 1e3, 3),
                       p99=round(_quantile(ordered, 0.99) * 1e3, 3),
                       max=round(float(ordered[-1]) * 1e3, 3))
        return out

    def _stimulator(self, name: str) -> dict[str, Any]:
        tallies = self._tallies
        counts = tallies.per_node.get(name, Counter())
        proc = self.runner.graph.process_of(name)
        row: dict[str, Any] = {"name": name, "process": proc,
                               "state": tallies.actuator_state.get(name, "disarmed"),
                               "requests": None, "emitted": None, "clamped": None,
                               "rejected": None, "stalls": None,
                               "safe_states": counts["safe_states"],
                               "emergency_stops": counts["emergency_stops"]}
        if proc != MAIN_PROCESS:
            return row
        node = self.runner.graph.nodes[name]
        state = getattr(node, "state", None)  # a plain read of the supervisor's state
        if isinstance(state, str):
            row["state"] = state
        supervisor = getattr(node, "_supervisor", None)
        supervised = getattr(supervisor, "counts", None)
        if isinstance(supervised, dict):
            snap = dict(supervised)  # fixed keys: copying cannot race with a resize
            row.update({k: int(snap[k]) for k in ("requests", "emitted", "clamped",
                                                   "rejected") if k in snap})
        stalls = getattr(node, "stalls", None)
        row["stalls"] = int(stalls) if isinstance(stalls, int) else None
        return row


def describe_event(kind: str, fields: dict[str, Any]) -> str:
    """A short line saying what an event means, for the "last events" list.

    Parameters
    ----------
    kind : str
        The event's name.
    fields : dict
        Its fields.

    Returns
    -------
    str
        At most ``TEXT_MAX`` characters.
    """
    f = fields
    if kind == "stream_stalled":
        text = f"no data for {f.get('silent_ms')} ms (threshold {f.get('threshold_ms')} ms)"
    elif kind == "stream_resumed":
        text = f"data again after {f.get('gap_ms')} ms"
    elif kind == "stream_lost":
        text = "connection lost; looking for the stream again"
    elif kind == "stream_reconnected":
        text = f"back after {f.get('down_ms')} ms"
    elif kind == "samples_dropped":
        text = f"{f.get('count')} samples lost"
    elif kind == "bad_chunk":
        text = f"{f.get('problem')} ({f.get('action')})"
    elif kind in ("failure", "worker_failure"):
        text = _first_line(f.get("error") or f.get("message")) or kind
    elif kind in ("safe_state", "emergency_stop"):
        text = _first_line(f.get("reason")) or kind
    elif kind in ("armed", "arm_refused"):
        text = f"{'armed' if kind == 'armed' else 'arming refused'} by {f.get('by')}"
    elif kind == "decoder_trained":
        cv = f.get("cv_accuracy")
        text = f"v{f.get('version')} online" + (f", cv accuracy {cv:.2f}"
                                                if isinstance(cv, float) else "")
    elif kind in ("model_online", "model_swap"):
        text = f"v{f.get('version')} serves" + (f" (was v{f.get('replaces') or f.get('serving')})"
                                                if f.get("replaces") or f.get("serving") else "")
    elif kind == "model_update":
        text = f"v{f.get('version')} adapted ({f.get('strategy')})"
    elif kind == "model_shadow":
        text = f"v{f.get('version')} in shadow against v{f.get('serving')}"
    elif kind == "model_rollback":
        text = f"v{f.get('version')} rolled back; v{f.get('serving')} serves"
    elif kind == "run_ended":
        reason = _first_line(f.get("reason"))
        text = str(f.get("status")) + (f": {reason}" if reason and reason != f.get("status")
                                       else "")
    else:
        skip = {"node", "process", "timestamp", "traceback", "t", "at"}
        text = ", ".join(f"{k}={v}" for k, v in f.items()
                         if k not in skip and isinstance(v, (str, int, float, bool)))
        text = text or kind
    if f.get("process") and kind not in ("heartbeat_lost", "heartbeat_resumed"):
        text += f" [process {f['process']}]"
    return text if len(text) <= TEXT_MAX else text[:TEXT_MAX - 1] + "…"


def _stream_state(local: bool, running: bool, ended: bool, measured: float | None,
                  window: float | None, nominal: float, live: bool) -> str:
    """A source's state when no event says otherwise."""
    if ended:
        return "ended"
    if not running:
        return "waiting"
    if not local:
        return "remote"
    if measured is None or window is None:
        return "ok"
    if measured == 0 and window >= 1.0 and nominal > 0:  # an irregular stream may rest
        return "silent"
    if live and nominal > 0 and window >= 1.0:
        ratio = measured / nominal
        if ratio < 0.8:
            return "slow"
        if ratio > 1.2:
            return "fast"
    return "ok"


def _ring_tail(recorder: Any, count: int, n: int) -> np.ndarray:
    """The ``n`` newest of the first ``count`` values of a LatencyRecorder, in seconds.

    Reads the recorder's ring without copying all of it. ``count`` is read before
    the values: the writer stores a value before it counts it, so every value read
    is complete; it would have to wrap the whole ring meanwhile to overwrite one.
    """
    ring = getattr(recorder, "_values", None)
    if ring is None:  # another recorder: its public copy
        return np.asarray(recorder.values()[-n:] if n > 0 else [], dtype=np.float64)
    n = max(0, min(n, count, ring.shape[0]))
    if n == 0:
        return np.empty(0, dtype=np.float64)
    idx = np.arange(count - n, count) % ring.shape[0]
    return ring.take(idx)


def _quantile(ordered: np.ndarray, q: float) -> float:
    """Quantile ``q`` (0..1) of sorted values, interpolated as numpy's default ("linear")."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _first_line(value: Any) -> str | None:
    if value is None:
        return None
    lines = str(value).strip().splitlines()
    return lines[0] if lines else ""
