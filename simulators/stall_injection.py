"""Hardware-in-the-loop stall injection: does the stimulator's watchdog go safe, every time?

:func:`run_stall_trials` runs the whole loop over real LSL, in one process:

    paced LSL outlet ("biomarker", 1 channel) ──LSL──▶ ``lsl_inlet`` ──▶ ``stimulator``
    (continuous mode, simulated driver) ──LSL──▶ an inlet on its pulses stream

and, trial after trial: lets data flow (disarmed) for a random ``flow_s``, arms
the stimulator (retried until the watchdog takes it: arming is refused while the
input is stale), waits until trains are delivered, then stops pushing for a random
``stall_s``, longer than the watchdog's deadline max(3 sample periods, 50 ms), and
resumes. Each stall must bring exactly one safe state, for a stale input, with no
train delivered after it until the next arm.

Per stall it collects (:class:`StallReport`):

* **deadline → safe**: the stimulator's own figure (``safety_summary()
  ["safe_state_ms"]``), from the watchdog's deadline to the output being off;
* **last sample → safe**: from the monotonic time the outlet pushed the last
  sample before the stall to the audit log's ``safe_state`` record (``t_mono``);
  the same from the safe-state row seen on the pulses stream over LSL;
* **trains after safe**: trains the supervisor let through after the stall's
  disarm and before the next arm, counted in the audit log's order (which is the
  order of the output lock), and on the pulses stream by timestamp.

Trials are short and armed only briefly (a few trains): continuous modulation sends
one train per control chunk, and each new train starts with a pulse, so staying
armed long at a high chunk rate runs into the limits' ``max_pulses_per_s`` (a
rejection and a lockout, which the harness reports as an error).

Timing goes to ``bench/safety_hil.py``; ``tests/test_safety_hil.py`` checks the
behaviour only.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bci_runtime.audit_log import read_audit_log
from bci_runtime.errors import ConfigError, RunError, StreamNotFoundError
from bci_runtime.graph import load_graph_text
from bci_runtime.lsl import import_pylsl, linger_for_consumers
from bci_runtime.runner import Runner
from bci_runtime.watchdog import stale_timeout

#: the safe state must come this soon after the watchdog's deadline (s)
BOUND_S = 0.010
#: longest wait for something that should happen at once (data, a train, a safe state)
WAIT_S = 10.0
#: longest time arming may be refused after data resumed
ARM_TIMEOUT_S = 5.0
#: limits of a two-contact stimulator (as pipelines/limits/two_contacts.yaml)
LIMITS: dict[str, Any] = {
    "contacts": [{"name": "E1", "area_cm2": 0.06, "max_current_ma": 3.0},
                 {"name": "E2", "area_cm2": 0.06, "max_current_ma": 3.0}],
    "max_total_current_ma": 5.0, "pulse_width_us": {"min": 60, "max": 200},
    "frequency_hz": {"min": 1, "max": 185}, "shannon_k": 1.5,
    "max_charge_density_uc_cm2": 25, "max_pulses_per_s": 200, "max_burst_pulses": 100,
    "on_violation": "reject", "lockout_s": 10, "ramp_s": 1.0,
}
#: a constant target: 1 mA on E1 (the biomarker's value does not matter)
MODULATION: dict[str, Any] = {"channel": 0, "contact": "E1", "width_us": 90,
                              "frequency_hz": 130, "gain_ma": 0.0, "offset_ma": 1.0,
                              "max_ma": 2.0, "slew_ma_per_s": 5.0}


# -- the report ------------------------------------------------------------------------------
def latency_stats(values: np.ndarray, qs: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """Percentiles ``p<q>`` and ``max`` of the finite values (None when there are none)."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q:g}"] = round(float(np.percentile(a, q)), 4) if a.size else None
    out["max"] = round(float(a.max()), 4) if a.size else None
    return out


@dataclass
class StallReport:
    """What :func:`run_stall_trials` saw, one entry per injected stall (arrays of shape (n,)).

    Attributes
    ----------
    stale_ms : float
        The watchdog's deadline (no sample for this long means stale).
    stall_ms : ndarray of float
        How long pushing really paused (last push → first push after it).
    safe_states : ndarray of int
        Safe states from the stall's last sample until the next arm (should be 1).
    reasons : list of str
        The reason of the stall's (first) safe state ("" when there was none).
    deadline_to_safe_ms : ndarray of float
        Watchdog deadline → output off, as the stimulator measured it (NaN: no safe state).
    last_sample_to_safe_ms : ndarray of float
        Last pushed sample → the audit log's ``safe_state`` record.
    lsl_last_sample_to_safe_ms : ndarray of float
        Last pushed sample → the safe-state row's timestamp on the pulses stream.
    trains_after_safe : ndarray of int
        Trains let through after the stall's disarm and before the next arm (audit log).
    lsl_trains_after_safe : ndarray of int
        The same on the pulses stream (by timestamp, up to the next arm).
    node_stalls : int
        The stimulator's own count of stale inputs.
    inlet_stalls : int
        Stalls the ``lsl_inlet`` reported.
    unexpected_safe_states : int
        Safe states outside the stalls (while data flowed).
    lsl_safe_rows : int
        Safe-state rows on the pulses stream during the trials.
    arm_refusals : int
        Arming attempts refused (the input was still stale).
    safety : dict
        The stimulator's ``safety_summary()`` at the end.
    wall_s : float
    audit_path : Path or None
        The audit log, when ``audit_dir`` was given (otherwise it was deleted).
    """

    stale_ms: float
    stall_ms: np.ndarray
    safe_states: np.ndarray
    reasons: list[str]
    deadline_to_safe_ms: np.ndarray
    last_sample_to_safe_ms: np.ndarray
    lsl_last_sample_to_safe_ms: np.ndarray
    trains_after_safe: np.ndarray
    lsl_trains_after_safe: np.ndarray
    node_stalls: int
    inlet_stalls: int
    unexpected_safe_states: int
    lsl_safe_rows: int
    arm_refusals: int
    safety: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    audit_path: Path | None = None

    @property
    def n(self) -> int:
        """Number of stalls injected."""
        return int(self.safe_states.size)

    @property
    def stale_reason(self) -> np.ndarray:
        """Whether each stall's safe state names a stale input, shape (n,)."""
        return np.array(["stale" in r for r in self.reasons], dtype=bool)

    def summary(self) -> dict[str, Any]:
        """Counts and percentiles (ms) over the stalls."""
        ok = (self.safe_states == 1) & self.stale_reason
        late = self.deadline_to_safe_ms
        return {
            "n": self.n, "stale_ms": round(self.stale_ms, 3),
            "safe_every_time": int(ok.sum()),
            "within_10ms": int(np.sum(np.isfinite(late) & (late <= BOUND_S * 1e3))),
            "deadline_to_safe_ms": latency_stats(late),
            "last_sample_to_safe_ms": latency_stats(self.last_sample_to_safe_ms),
            "trains_after_safe": int(self.trains_after_safe.sum()),
            "lsl_trains_after_safe": int(self.lsl_trains_after_safe.sum()),
            "lsl_safe_rows": self.lsl_safe_rows, "node_stalls": self.node_stalls,
            "inlet_stalls": self.inlet_stalls,
            "unexpected_safe_states": self.unexpected_safe_states,
            "arm_refusals": self.arm_refusals,
            "emitted_outside_limits": self.safety.get("emitted_outside_limits"),
            "rejected": self.safety.get("rejected"), "wall_s": round(self.wall_s, 1),
        }

    def per_stall(self) -> dict[str, list[Any]]:
        """Per-stall figures as JSON-ready lists (NaN as None)."""
        def clean(a: np.ndarray) -> list[Any]:
            return [None if isinstance(v, float) and not math.isfinite(v) else v
                    for v in a.tolist()]

        return {"stall_ms": clean(np.round(self.stall_ms, 4)),
                "safe_states": self.safe_states.tolist(), "reasons": list(self.reasons),
                "deadline_to_safe_ms": clean(np.round(self.deadline_to_safe_ms, 4)),
                "last_sample_to_safe_ms": clean(np.round(self.last_sample_to_safe_ms, 4)),
                "lsl_last_sample_to_safe_ms":
                    clean(np.round(self.lsl_last_sample_to_safe_ms, 4)),
                "trains_after_safe": self.trains_after_safe.tolist(),
                "lsl_trains_after_safe": self.lsl_trains_after_safe.tolist()}


# -- the simulated device: a paced outlet that can be paused ---------------------------------
class _PacedOutlet:
    """A 1-channel LSL outlet pushed from its own thread, on absolute deadlines.

    Chunk ``k`` after a (re)start at ``base`` is pushed at ``base + k * chunk_size /
    srate`` (late pushes do not shift the later ones), with the nominal timestamp
    of its newest sample; the value is the sample index. :meth:`pause` stops the
    pushing at once and returns the monotonic time of the last push;
    :meth:`resume` restarts it now (no catch-up burst).
    """

    def __init__(self, pylsl: Any, name: str, source_id: str, srate: float,
                 chunk_size: int) -> None:
        info = pylsl.StreamInfo(name, "Biomarker", 1, srate, "double64", source_id)
        ch = info.desc().append_child("channels").append_child("channel")
        ch.append_child_value("label", "beta")
        ch.append_child_value("type", "misc")
        ch.append_child_value("unit", "a.u.")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=2)
        self._lsl_offset = pylsl.local_clock() - time.monotonic()
        self._srate, self._chunk = srate, chunk_size
        self._cond = threading.Condition()
        self._want_pause = self._paused = self._stop = False
        self.last_push = math.nan  # monotonic time of the newest push
        self.pushed = 0  # samples
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hil-outlet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> float:
        """Stop pushing now; the monotonic time of the last sample pushed."""
        with self._cond:
            self._want_pause = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._paused or self._stop
                                       or self.error is not None, WAIT_S):
                raise RunError("the HIL outlet thread did not pause within "
                               f"{WAIT_S:g} s")
            if self.error is not None:
                raise RunError(f"the HIL outlet thread failed: {self.error!r}")
            return self.last_push

    def resume(self) -> float:
        """Push again from now on; the monotonic time of the resume."""
        with self._cond:
            self._want_pause = False
            self._cond.notify_all()
            return time.monotonic()

    def close(self) -> None:
        """Stop the thread and destroy the outlet (after its consumers left, at most 0.5 s)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(WAIT_S)
        outlet, self.outlet = self.outlet, None
        if outlet is not None:
            linger_for_consumers([outlet])
            del outlet

    def _run(self) -> None:
        period = self._chunk / self._srate
        try:
            base, k = time.monotonic(), 0
            while True:
                with self._cond:
                    # sleep until the next chunk is due, woken at once by a pause or stop
                    due = base + k * period
                    self._cond.wait_for(lambda: self._stop or self._want_pause,
                                        max(0.0, due - time.monotonic()))
                    if self._stop:
                        return
                    if self._want_pause:
                        self._paused = True
                        self._cond.notify_all()
                        self._cond.wait_for(lambda: self._stop or not self._want_pause)
                        self._paused = False
                        base, k = time.monotonic(), 0  # resume now: no catch-up burst
                        continue
                first = self.pushed
                data = np.arange(first, first + self._chunk, dtype=np.float64)[:, None]
                newest = base + k * period + self._lsl_offset
                self.outlet.push_chunk(data, newest)
                with self._cond:
                    self.last_push = time.monotonic()
                    self.pushed += self._chunk
                k += 1
        except BaseException as exc:  # noqa: BLE001 - reported to the trial loop
            with self._cond:
                self.error = exc
                self._cond.notify_all()


# -- what the runtime says: taps and events, waited on with one condition --------------------
class _Observer:
    """Counts the inlet's chunks, the stimulator's trains and safe states; wakes waiters."""

    def __init__(self, inlet: str, stim: str) -> None:
        self._inlet, self._stim = inlet, stim
        self.cond = threading.Condition()
        self.chunks = 0
        self.trains = 0
        self.safe_states = 0
        self.started = False
        self.ended = False

    def tap(self, node: str, outputs: Mapping[str, Any], now: float, read: bool) -> None:
        if node == self._inlet and "signal" in outputs:
            with self.cond:
                self.chunks += 1
                self.cond.notify_all()
        elif node == self._stim and "pulses" in outputs:
            with self.cond:
                self.trains += len(outputs["pulses"].timestamps)
                self.cond.notify_all()

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "safe_state" and fields.get("node") == self._stim:
            with self.cond:
                self.safe_states += 1
                self.cond.notify_all()
        elif kind in ("run_started", "run_ended"):
            self.end_or_start(kind == "run_started")

    def end_or_start(self, started: bool) -> None:
        with self.cond:
            if started:
                self.started = True
            else:
                self.ended = True
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` or the run ended; whether ``predicate()`` holds."""
        with self.cond:
            self.cond.wait_for(lambda: predicate() or self.ended, max(0.0, timeout))
            return predicate()


class _PulseReader:
    """Reads the simulated stimulator's pulses stream over LSL, on its own thread."""

    def __init__(self, pylsl: Any, name: str, timeout: float) -> None:
        found = pylsl.resolve_bypred(f"name='{name}'", 1, timeout)
        if not found:
            raise StreamNotFoundError(f"the stimulator's pulses stream '{name}' was not found "
                                      f"within {timeout:g} s")
        self._inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=False)
        self._inlet.open_stream(timeout=timeout)
        self._lsl_offset = pylsl.local_clock() - time.monotonic()
        self._stop = threading.Event()
        self._rows: list[np.ndarray] = []
        self._stamps: list[np.ndarray] = []
        self._thread = threading.Thread(target=self._run, name="hil-pulses", daemon=True)
        self._thread.start()

    def _pull(self, timeout: float) -> int:
        data, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=1024)
        if len(ts):
            self._rows.append(np.asarray(data, dtype=float).reshape(len(ts), -1))
            self._stamps.append(np.asarray(ts, dtype=float))
        return len(ts)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._pull(0.1)  # a bounded wait in liblsl, so a stop is seen in 0.1 s
        except Exception:  # noqa: BLE001 - the stream went away: keep what was read
            return

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        """Stop reading; (rows (n, 8), monotonic times (n,)) of everything received."""
        self._stop.set()
        self._thread.join(WAIT_S)
        try:
            while self._pull(0.05):
                pass
        except Exception:  # noqa: BLE001 - lost at the very end: keep what was read
            pass
        self._inlet.close_stream()
        if not self._stamps:
            return np.empty((0, 8)), np.empty(0)
        return np.concatenate(self._rows), np.concatenate(self._stamps) - self._lsl_offset


# -- the trials ------------------------------------------------------------------------------
def _check_params(n_stalls: int, srate: float, chunk_size: int, stall_s: tuple[float, float],
                  flow_s: tuple[float, float], min_trains: int) -> float:
    """Refuse settings that cannot make a clean stall; returns the stale deadline (s)."""
    if n_stalls < 1:
        raise ConfigError(f"run_stall_trials: n_stalls must be >= 1, got {n_stalls}")
    if not srate > 0 or chunk_size < 1 or min_trains < 1:
        raise ConfigError(f"run_stall_trials: srate > 0, chunk_size >= 1 and min_trains >= 1 "
                          f"needed, got {srate}, {chunk_size}, {min_trains}")
    stale = stale_timeout(srate)
    if chunk_size / srate > stale / 2:
        raise ConfigError(f"run_stall_trials: a chunk every {chunk_size / srate * 1e3:g} ms "
                          f"comes too close to the {stale * 1e3:g} ms stale deadline",
                          hint="push smaller chunks")
    for label, (lo, hi) in (("stall_s", stall_s), ("flow_s", flow_s)):
        if not 0 <= lo <= hi:
            raise ConfigError(f"run_stall_trials: {label} must be (low, high) with "
                              f"0 <= low <= high, got {(lo, hi)}")
    if stall_s[0] < stale + 2 * BOUND_S:
        raise ConfigError(f"run_stall_trials: stalls of {stall_s[0]:g} s are too short for "
                          f"the {stale * 1e3:g} ms deadline plus the {BOUND_S * 1e3:g} ms "
                          f"bound (twice over)",
                          hint=f"use stall_s of at least {stale + 2 * BOUND_S:g} s")
    return stale


def _graph_text(stream: str, source_id: str, srate: float, stim: str, audit: Path,
                seed: int) -> str:
    config = {
        "name": "hil-stall-injection", "clock": "live", "seed": seed,
        "nodes": {
            "biomarker": {"type": "lsl_inlet", "params": {
                "name": stream, "source_id": source_id, "channels": 1, "srate": srate,
                "dtype": "float64", "resolve_timeout_s": WAIT_S}},
            stim: {"type": "stimulator", "params": {
                "limits": LIMITS, "mode": "continuous",
                "driver": {"type": "simulated", "lsl": True}, "modulation": MODULATION,
                "audit_log": str(audit)},
                "inputs": {"control": "biomarker.signal"}},
        },
    }
    return yaml.safe_dump(config)


@dataclass
class _Marks:
    """Monotonic times the trial loop noted, per stall."""

    last_push: list[float] = field(default_factory=list)
    resumed: list[float] = field(default_factory=list)
    rearmed: list[float] = field(default_factory=list)  # first arm after the stall
    arm_refusals: int = 0


def run_stall_trials(n_stalls: int, srate: float = 250.0, chunk_size: int = 1,
                     stall_s: tuple[float, float] = (0.1, 0.2),
                     flow_s: tuple[float, float] = (0.15, 0.3), seed: int = 0,
                     audit_dir: Path | None = None, min_trains: int = 3) -> StallReport:
    """Inject ``n_stalls`` stalls into a live LSL stream that drives a stimulator.

    Parameters
    ----------
    n_stalls : int
    srate : float
        Nominal rate of the biomarker stream (Hz); the watchdog's deadline is
        max(3 / srate, 50 ms).
    chunk_size : int
        Samples per push.
    stall_s : (float, float)
        Range of the stall durations (s), drawn uniformly; the low end must exceed
        the deadline by twice the 10 ms bound.
    flow_s : (float, float)
        Range of how long data flow (disarmed) before each arming (s).
    seed : int
        Seed of the durations' generator.
    audit_dir : Path, optional
        Keep the stimulator's audit log (``audit.jsonl``) here; by default it goes
        to a temporary folder that is deleted.
    min_trains : int
        Trains delivered after arming before the stall starts.

    Returns
    -------
    StallReport

    Raises
    ------
    ConfigError
        Settings that cannot make a clean stall.
    RunError
        The run failed or stalled by itself (no data, arming refused for
        ``ARM_TIMEOUT_S``, no trains after arming); the runner, threads and
        outlets are stopped and closed first.
    """
    stale = _check_params(n_stalls, srate, chunk_size, stall_s, flow_s, min_trains)
    pylsl = import_pylsl()
    rng = np.random.default_rng(seed)
    tmp = tempfile.TemporaryDirectory(prefix="hil-stall-") if audit_dir is None else None
    try:
        folder = Path(tmp.name) if tmp is not None else Path(audit_dir)
        folder.mkdir(parents=True, exist_ok=True)
        audit = folder / "audit.jsonl"
        if audit.exists():
            audit.unlink()  # the log is append-only; this run's must stand alone
        return _run(pylsl, rng, n_stalls, srate, chunk_size, stall_s, flow_s, seed,
                    min_trains, stale, audit, keep_audit=tmp is None)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(pylsl: Any, rng: np.random.Generator, n_stalls: int, srate: float, chunk_size: int,
         stall_s: tuple[float, float], flow_s: tuple[float, float], seed: int,
         min_trains: int, stale: float, audit: Path, keep_audit: bool) -> StallReport:
    """Start the outlet, the graph and the pulses reader; run the trials; stop everything."""
    tag = uuid.uuid4().hex[:12]
    stream, source_id, stim_name = "biomarker", f"hil-stall-{tag}", f"stim_{tag}"
    observer = _Observer("biomarker", stim_name)
    marks = _Marks()
    outlet = _PacedOutlet(pylsl, stream, source_id, srate, chunk_size)
    runner: Runner | None = None
    thread: threading.Thread | None = None
    reader: _PulseReader | None = None
    outcome: list[Any] = []
    t_start = time.monotonic()
    try:
        outlet.start()
        graph = load_graph_text(_graph_text(stream, source_id, srate, stim_name, audit, seed),
                                "<hil stall injection>")
        stim = graph.nodes[stim_name]
        runner = Runner(graph, emit_event=observer.event, tap=observer.tap)

        def run() -> None:
            try:
                outcome.append(runner.run())
            except BaseException as exc:  # noqa: BLE001 - reported to the trial loop
                outcome.append(exc)
            finally:
                observer.end_or_start(False)

        thread = threading.Thread(target=run, name="hil-runner", daemon=True)
        thread.start()
        if not observer.wait(lambda: observer.started, 60.0):
            raise RunError(f"the HIL graph did not start: {_outcome_text(outcome)}")
        reader = _PulseReader(pylsl, f"{stim_name}-pulses", WAIT_S)
        try:
            _trials(n_stalls, rng, stall_s, flow_s, min_trains, stim, observer, outlet, marks)
        except RunError as exc:
            if not observer.ended:
                raise
            thread.join(WAIT_S)  # the run's own failure says more than the trial's
            raise RunError(f"{exc}; the run ended: {_outcome_text(outcome)}") from exc
        stop_at = time.monotonic()
        rows, times = reader.close()
        reader = None
        keep = times < stop_at  # not the row the driver pushes when it closes
        pulses = (rows[keep], times[keep])
    finally:
        if reader is not None:
            reader.close()
        if runner is not None:
            runner.request_stop("stall trials done")
        if thread is not None:
            thread.join(60.0)
        outlet.close()
    result = outcome[0] if outcome else None
    if isinstance(result, BaseException):
        raise RunError(f"the HIL run raised: {result!r}") from result
    if result is None or result.status == "failed":
        raise RunError(f"the HIL run failed: {_outcome_text(outcome)}")
    return _analyse(read_audit_log(audit), stim.safety_summary(), marks, pulses, stale,
                    stim.stalls, graph.nodes["biomarker"].stalls, time.monotonic() - t_start,
                    audit if keep_audit else None)


def _outcome_text(outcome: list[Any]) -> str:
    if not outcome:
        return "the runner has not returned"
    result = outcome[0]
    if isinstance(result, BaseException):
        return repr(result)
    return f"{result.status}: {result.reason}"


def _trials(n_stalls: int, rng: np.random.Generator, stall_s: tuple[float, float],
            flow_s: tuple[float, float], min_trains: int, stim: Any, observer: _Observer,
            outlet: _PacedOutlet, marks: _Marks) -> None:
    """The trial loop (see :func:`run_stall_trials`); notes its times in ``marks``."""
    resumed = time.monotonic()
    chunks_at_resume = observer.chunks
    for i in range(n_stalls):
        flow, stall = rng.uniform(*flow_s), rng.uniform(*stall_s)
        if not observer.wait(lambda c=chunks_at_resume: observer.chunks > c, WAIT_S):
            raise RunError(f"stall {i}: no data reached the graph within {WAIT_S:g} s of "
                           "the stream (re)starting")
        observer.wait(lambda: False, resumed + flow - time.monotonic())  # data flow, disarmed
        while True:  # arm, then a few trains; a safe state meanwhile means arming again
            _arm(i, stim, observer, marks)
            if len(marks.rearmed) < i:
                marks.rearmed.append(time.monotonic())
            trains, safe = observer.trains, observer.safe_states
            if not observer.wait(lambda t=trains, s=safe: observer.trains >= t + min_trains
                                 or observer.safe_states > s, WAIT_S):
                rejected = stim.safety_summary().get("rejected")
                raise RunError(f"stall {i}: no train within {WAIT_S:g} s of arming "
                               f"({rejected} request(s) rejected so far)",
                               hint="a rejection locks the stimulator out: see the audit "
                               "log's reject records (the rate limit, if armed too long)")
            if observer.safe_states == safe:
                break
        last = outlet.pause()
        marks.last_push.append(last)
        observer.wait(lambda: False, last + stall - time.monotonic())  # the stall itself
        chunks_at_resume = observer.chunks
        resumed = outlet.resume()
        marks.resumed.append(resumed)
        if observer.ended:
            raise RunError(f"stall {i}: the run ended during the trials")


def _arm(i: int, stim: Any, observer: _Observer, marks: _Marks) -> None:
    """Arm the stimulator; retried on each new chunk while the input is still stale."""
    deadline = time.monotonic() + ARM_TIMEOUT_S
    while True:
        chunks = observer.chunks
        if stim.arm("hil"):
            return
        marks.arm_refusals += 1
        if time.monotonic() > deadline or observer.ended:
            raise RunError(f"stall {i}: arming refused for {ARM_TIMEOUT_S:g} s (state "
                           f"{stim.state}; a lockout after a rejected request?)",
                           hint="see the audit log's arm_refused and reject records")
        observer.wait(lambda c=chunks: observer.chunks > c, 1.0)


def _analyse(records: list[dict[str, Any]], safety: dict[str, Any], marks: _Marks,
             pulses: tuple[np.ndarray, np.ndarray], stale: float, node_stalls: int,
             inlet_stalls: int, wall_s: float, audit_path: Path | None) -> StallReport:
    """Per-stall figures from the audit log, the node's summary and the pulses stream."""
    n = len(marks.last_push)
    starts = np.asarray(marks.last_push)
    ends = np.asarray(marks.rearmed[:n] + [math.inf] * (n - len(marks.rearmed[:n])))

    def stall_of(t: float) -> int | None:
        i = int(np.searchsorted(starts, t, side="right")) - 1
        return i if i >= 0 and t < ends[i] else None

    count = np.zeros(n, dtype=int)
    reasons = [""] * n
    late = np.full(n, np.nan)
    to_safe = np.full(n, np.nan)
    unexpected = 0
    safe_records = [r for r in records if r.get("event") == "safe_state"]
    node_ms = safety.get("safe_state_ms", [])
    for k, record in enumerate(safe_records):
        i = stall_of(record["t_mono"])
        if i is None:
            unexpected += 1
            continue
        count[i] += 1
        if count[i] == 1:
            reasons[i] = str(record.get("reason", ""))
            late[i] = node_ms[k] if len(node_ms) == len(safe_records) else record["safe_ms"]
            to_safe[i] = (record["t_mono"] - starts[i]) * 1e3
    # trains let through after a stall's disarm, before the next arm: in the log's order,
    # which is the order decisions were taken under the output lock
    after = np.zeros(n, dtype=int)
    current: int | None = None
    counting = False
    for record in records:
        event = record.get("event")
        if event == "disarm":
            current, counting = stall_of(record["t_mono"]), True
        elif event == "arm":
            counting = False
        elif event in ("emit", "clamp") and counting and current is not None:
            after[current] += 1
    rows, times = pulses
    safe_rows = times[rows[:, 0] < 0] if len(times) else np.empty(0)
    trains_t = times[rows[:, 0] >= 0] if len(times) else np.empty(0)
    lsl_to_safe = np.full(n, np.nan)
    lsl_after = np.zeros(n, dtype=int)
    for i in range(n):
        mine = safe_rows[(safe_rows >= starts[i]) & (safe_rows < ends[i])]
        if mine.size:
            lsl_to_safe[i] = (mine[0] - starts[i]) * 1e3
            lsl_after[i] = int(np.sum((trains_t > mine[0]) & (trains_t < ends[i])))
    stall_ms = (np.asarray(marks.resumed[:n]) - starts) * 1e3
    return StallReport(
        stale_ms=stale * 1e3, stall_ms=stall_ms, safe_states=count, reasons=reasons,
        deadline_to_safe_ms=late, last_sample_to_safe_ms=to_safe,
        lsl_last_sample_to_safe_ms=lsl_to_safe, trains_after_safe=after,
        lsl_trains_after_safe=lsl_after, node_stalls=node_stalls, inlet_stalls=inlet_stalls,
        unexpected_safe_states=unexpected, lsl_safe_rows=int(safe_rows.size),
        arm_refusals=marks.arm_refusals, safety=safety, wall_s=wall_s, audit_path=audit_path)
