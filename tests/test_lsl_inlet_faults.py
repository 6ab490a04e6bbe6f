"""Faults of a live LSL stream, seen through the runtime's inlet.

Each test runs a producer in another process, as an amplifier's LSL app would
be, with a unique name and ``source_id``. Channel 0 is the sample index, so what
the sink received shows whether samples were lost, reordered, or came from a
stream that should have been blocked (a replacement producer counts from
``NEW_START``). Events are collected from the :class:`Runner` and waited for with
bounded waits; nothing here asserts on speed.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
import yaml
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.errors import StreamNotFoundError
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.node import BlockingSource, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.registry import register_node
from bci_runtime.runner import Runner, RunResult
from bci_runtime.spec import StreamSpec

pylsl = pytest.importorskip("pylsl")

pytestmark = pytest.mark.lsl

SRATE = 250.0
N_CHANNELS = 3
PUSH = 2  # samples per push: a push every 8 ms, far below any stall threshold used here
NEW_START = 100_000  # first index of a replacement producer (exact in float32)
READY_TIMEOUT_S = 30.0
PRODUCER_LIFETIME_S = 60.0  # a producer exits by itself even if never killed
WAIT_S = 10.0  # bound of every wait for an event or for data


# -- the producer: a separate process ---------------------------------------------------------

PRODUCER = r"""
import json, sys, time
import numpy as np
import pylsl

cfg = json.loads(sys.argv[1])
n, srate, push = cfg["channels"], cfg["srate"], cfg["push"]
info = pylsl.StreamInfo(cfg["name"], "EEG", n, srate, "float32", cfg["source_id"])
chans = info.desc().append_child("channels")
for i in range(n):
    ch = chans.append_child("channel")
    ch.append_child_value("label", "idx" if i == 0 else f"C{i}")
    ch.append_child_value("type", "misc" if i == 0 else "eeg")
    ch.append_child_value("unit", "a.u." if i == 0 else "uV")
outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=10)
print("ready", flush=True)
if cfg["wait_consumer_s"]:  # pauses count from when the runtime's inlet is connected
    outlet.wait_for_consumers(cfg["wait_consumer_s"])
bad = range(*cfg["bad"]) if cfg["bad"] else range(0)
t0 = pylsl.local_clock()
deadline = time.monotonic() + cfg["lifetime_s"]
sent, paused = 0, False
while time.monotonic() < deadline:
    if cfg["pause_at"] is not None and not paused and sent >= cfg["pause_at"]:
        paused = True
        time.sleep(cfg["pause_s"])  # silent; the backlog goes out at once afterwards
    idx = cfg["start"] + np.arange(sent, sent + push)
    data = np.empty((push, n), dtype=np.float32)
    data[:, 0] = idx
    data[:, 1:] = (idx[:, None] % 100) * 0.5
    for row, i in enumerate(idx):
        if i in bad:  # a burst of NaN and Inf in the signal channels, never in the index
            data[row, 1:] = np.nan if i % 2 else np.inf
    stamps = t0 + np.arange(sent, sent + push) / srate
    delay = stamps[-1] - pylsl.local_clock()
    if delay > 0:
        time.sleep(delay)
    outlet.push_chunk(data, stamps.tolist(), pushthrough=True)
    sent += push
"""


class Producers:
    """Starts producer processes; :meth:`kill_all` ends every one still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, source_id: str, *, srate: float = SRATE, start: int = 0,
              pause_at: int | None = None, pause_s: float = 0.0,
              bad: tuple[int, int] | None = None,
              wait_consumer_s: float = 0.0) -> subprocess.Popen:
        cfg = {"name": name, "source_id": source_id, "channels": N_CHANNELS, "srate": srate,
               "push": PUSH, "start": start, "pause_at": pause_at, "pause_s": pause_s,
               "bad": list(bad) if bad else None, "wait_consumer_s": wait_consumer_s,
               "lifetime_s": PRODUCER_LIFETIME_S}
        proc = subprocess.Popen([sys.executable, "-c", PRODUCER, json.dumps(cfg)],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        if not ready or proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError(f"LSL producer did not start (exit code {proc.poll()})")
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """End a producer the way a crashing device app ends."""
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def producers() -> Iterator[Producers]:
    made = Producers()
    yield made
    made.kill_all()


def unique_stream() -> tuple[str, str]:
    """A stream name and a source_id no other test uses."""
    uid = uuid4().hex
    return f"test-faults-{uid[:10]}", f"test-{uid}"


# -- test-only nodes ------------------------------------------------------------------------

class IndexSink(Node):
    """Keeps every chunk; tests wait on what arrived (bounded)."""

    type_name = "test_fault_index_sink"
    signal = Input("signal", doc="the inlet's samples; channel 0 is the sample index")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self.data: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.max_index = -1
        self._arrived = threading.Condition()

    def process(self, port: str, chunk: AnyChunk) -> None:
        if isinstance(chunk, Chunk):
            with self._arrived:
                self.data.append(chunk.data.copy())
                self.stamps.append(chunk.timestamps.copy())
                self.max_index = max(self.max_index, int(chunk.data[:, 0].max()))
                self._arrived.notify_all()
        return None

    def wait_index(self, index: int, timeout: float = WAIT_S) -> bool:
        """Wait until a sample with index >= ``index`` arrived."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self.max_index >= index, timeout)

    def received(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples and timestamps, (n_samples, n_channels) and (n_samples,)."""
        with self._arrived:
            if not self.data:
                return np.empty((0, N_CHANNELS), np.float32), np.empty(0)
            return np.concatenate(self.data), np.concatenate(self.stamps)


_OPERATOR_SIGNALS: dict[str, threading.Event] = {}
_SIGNALS_LOCK = threading.Lock()


def operator_signal(token: str) -> threading.Event:
    """The event that makes ``test_fault_operator`` nodes with this token send a marker."""
    with _SIGNALS_LOCK:
        return _OPERATOR_SIGNALS.setdefault(token, threading.Event())


class OperatorParams(NodeParams):
    token: str = Field(..., description="key of the threading.Event a test sets")
    marker: str = Field("accept", description="marker sent each time the event is set")


class Operator(BlockingSource):
    """Sends ``marker`` whenever the test sets its event: an operator pressing a button."""

    type_name = "test_fault_operator"
    Params = OperatorParams
    events = Output("events", doc="the operator's markers")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        return {"events": StreamSpec(name=f"{self.name}-markers", type="Markers",
                                     channel_names=("marker",), srate=0.0, dtype="string",
                                     source_id=f"test-{self.name}")}

    def read_blocking(self, timeout: float) -> dict[str, AnyChunk] | None:
        signal = operator_signal(self.params.token)
        if not signal.wait(timeout):
            return None
        signal.clear()
        now = self.context.clock.now()  # type: ignore[union-attr]  # set by open()
        return {"events": EventChunk.single(self.params.marker, now,
                                            self.output_specs["events"])}


for _cls in (IndexSink, Operator):
    register_node(_cls)


# -- helpers ------------------------------------------------------------------------------

class Events:
    """Collects the run's events; :meth:`wait` blocks (bounded) until some arrived."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, **fields: Any) -> None:
        with self._cond:
            self.items.append((kind, fields))
            self._cond.notify_all()

    def _of(self, kind: str, node: str | None) -> list[dict]:
        return [f for k, f in self.items if k == kind and (node is None or f.get("node") == node)]

    def of(self, kind: str, node: str | None = "inlet") -> list[dict]:
        """Fields of every event ``kind`` (of node ``node``; None: any), in order."""
        with self._cond:
            return self._of(kind, node)

    def kinds(self) -> list[str]:
        with self._cond:
            return [k for k, _ in self.items]

    def wait(self, kind: str, count: int = 1, timeout: float = WAIT_S,
             node: str | None = "inlet") -> list[dict]:
        """Wait until ``count`` events ``kind`` arrived; fail the test if they do not."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._of(kind, node)) >= count, timeout)
            seen = [k for k, _ in self.items]
            found = self._of(kind, node)
        assert ok, f"{count} '{kind}' event(s) expected within {timeout} s; events: {seen}"
        return found


def pipeline(query: dict, *, duration: float = 30.0, inlet_params: dict | None = None,
             operator: str | None = None, on_bad_chunk: str | None = None) -> Graph:
    """lsl_inlet -> test sink; ``operator``: a token feeding the inlet's control port."""
    inlet: dict[str, Any] = {"type": "lsl_inlet", "params": {
        **query, "channels": N_CHANNELS, "srate": SRATE, "resolve_timeout_s": 10.0,
        **(inlet_params or {})}}
    nodes: dict[str, Any] = {"inlet": inlet}
    if on_bad_chunk:
        inlet["on_bad_chunk"] = on_bad_chunk
    if operator:
        nodes["operator"] = {"type": "test_fault_operator", "params": {"token": operator}}
        inlet["inputs"] = {"control": "operator.events"}
    nodes["sink"] = {"type": "test_fault_index_sink", "inputs": {"signal": "inlet.signal"}}
    doc = {"name": "test-lsl-faults", "clock": "live", "duration": duration, "nodes": nodes}
    return load_graph_text(yaml.safe_dump(doc, sort_keys=False), "test_lsl_inlet_faults.yaml")


class Run:
    """A run in a background thread, stopped and joined (bounded) by :meth:`finish`."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.events = Events()
        self.runner = Runner(graph, emit_event=self.events)
        self._out: dict[str, RunResult] = {}
        self._thread = threading.Thread(
            target=lambda: self._out.setdefault("result", self.runner.run()),
            name="test-runner", daemon=True)
        self._thread.start()

    @property
    def sink(self) -> IndexSink:
        return self.graph.nodes["sink"]  # type: ignore[return-value]

    def wait_started(self) -> None:
        """Wait until the inlet delivered data (the sink opened before that)."""
        self.events.wait("run_started", node=None, timeout=30.0)
        assert self.sink.wait_index(0), "no sample arrived"

    def finish(self, stop: bool = True, timeout: float = 30.0) -> RunResult:
        if stop:
            self.runner.request_stop("test done")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the run did not end within {timeout} s"
        return self._out["result"]


def contiguous_runs(index: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive indices, in arrival order."""
    if len(index) == 0:
        return []
    cuts = np.flatnonzero(np.diff(index) != 1) + 1
    return [(int(part[0]), int(part[-1])) for part in np.split(index, cuts)]


# -- tests --------------------------------------------------------------------------------

def test_stall_is_reported_once_at_the_threshold_and_the_run_goes_on(
        producers: Producers) -> None:
    name, sid = unique_stream()
    pause_at = int(SRATE)  # 1 s after the inlet connected
    producers.start(name, sid, pause_at=pause_at, pause_s=0.5, wait_consumer_s=20.0)
    run = Run(pipeline({"source_id": sid}, duration=3.0, inlet_params={"stall_ms": 100}))
    result = run.finish(stop=False)
    assert result.status == "completed", result.reason

    stalled = run.events.of("stream_stalled")
    resumed = run.events.of("stream_resumed")
    assert len(stalled) == 1, run.events.kinds()
    assert len(resumed) == 1, run.events.kinds()
    assert stalled[0]["threshold_ms"] == pytest.approx(max(3 / SRATE * 1e3, 100.0))
    assert stalled[0]["silent_ms"] >= stalled[0]["threshold_ms"]
    # reported while the stream was silent, not when it came back
    assert stalled[0]["silent_ms"] < resumed[0]["gap_ms"]
    assert resumed[0]["gap_ms"] >= 300.0  # most of the 0.5 s pause
    kinds = run.events.kinds()
    assert kinds.index("stream_stalled") < kinds.index("stream_resumed")
    assert stalled[0]["stream"] == name and stalled[0]["source_id"] == sid
    assert run.graph.nodes["inlet"].stalls == 1  # type: ignore[attr-defined]

    # the run went on: samples from before and after the pause, none lost or reordered
    data, stamps = run.sink.received()
    index = data[:, 0].astype(np.int64)
    assert len(contiguous_runs(index)) == 1, contiguous_runs(index)
    assert index[0] < pause_at < index[-1] - int(0.5 * SRATE)
    assert np.all(np.diff(stamps) > 0)
    # the online copy of the stamps is on the local clock; the offset to recover the
    # raw stamps was logged (same host: tiny)
    offsets = run.events.of("clock_offset")
    assert offsets and all(abs(o["offset_s"]) < 0.01 for o in offsets)


def test_a_pause_shorter_than_stall_ms_is_not_a_stall(producers: Producers) -> None:
    name, sid = unique_stream()
    producers.start(name, sid, pause_at=int(SRATE), pause_s=0.1, wait_consumer_s=20.0)
    run = Run(pipeline({"source_id": sid}, duration=2.5, inlet_params={"stall_ms": 200}))
    result = run.finish(stop=False)
    assert result.status == "completed", result.reason
    assert run.events.of("stream_stalled") == []
    assert run.events.of("stream_resumed") == []
    assert run.graph.nodes["inlet"].stalls == 0  # type: ignore[attr-defined]
    index = run.sink.received()[0][:, 0].astype(np.int64)
    assert len(contiguous_runs(index)) == 1 and index[-1] > SRATE + 25


def test_lost_stream_reconnects_when_it_comes_back_the_same(producers: Producers) -> None:
    name, sid = unique_stream()
    first = producers.start(name, sid)
    run = Run(pipeline({"source_id": sid}))
    try:
        run.wait_started()
        producers.kill(first)  # the device's app crashes...
        lost = run.events.wait("stream_lost")
        producers.start(name, sid, start=NEW_START)  # ...and is started again
        back = run.events.wait("stream_reconnected")
        assert run.sink.wait_index(NEW_START + 50), "no sample arrived after the reconnect"
    finally:
        result = run.finish()
    assert result.status == "stopped", result.reason  # the loss did not fail the run
    assert lost[0]["stream"] == name and lost[0]["source_id"] == sid
    assert back[0]["source_id"] == sid and back[0]["down_ms"] > 0
    assert run.events.of("stream_blocked") == []
    kinds = run.events.kinds()
    assert kinds.index("stream_lost") < kinds.index("stream_reconnected")
    assert run.graph.nodes["inlet"].reconnects == 1  # type: ignore[attr-defined]
    # before: a run of the first producer's indices; after: one of the second's, unbroken
    data, stamps = run.sink.received()
    runs = contiguous_runs(data[:, 0].astype(np.int64))
    assert len(runs) == 2, runs
    assert runs[0][1] < NEW_START <= runs[1][0]
    assert np.all(np.diff(stamps) > 0)
    assert len(run.events.of("clock_offset")) >= 2  # one per connection


def test_stream_back_with_another_rate_is_blocked_and_cannot_be_accepted(
        producers: Producers) -> None:
    name, sid = unique_stream()
    first = producers.start(name, sid)
    token = uuid4().hex
    run = Run(pipeline({"source_id": sid}, operator=token))
    try:
        run.wait_started()
        producers.kill(first)
        run.events.wait("stream_lost")
        producers.start(name, sid, srate=2 * SRATE, start=NEW_START)  # same id, 500 Hz
        blocked = run.events.wait("stream_blocked")
        assert blocked[0]["changes"] == ["nominal rate 250 Hz -> 500 Hz"]
        assert blocked[0]["source_id"] == sid and "accept" in blocked[0]["hint"]
        operator_signal(token).set()  # the operator tries to accept it anyway
        refused = run.events.wait("stream_accept_refused")
        # still blocked a while later: nothing from the new stream got through
        assert not run.sink.wait_index(NEW_START, timeout=1.0)
    finally:
        result = run.finish()
    assert result.status == "stopped", result.reason
    reason = refused[0]["reason"]
    assert "500 Hz" in reason and "250 Hz" in reason and "restart" in reason
    assert run.events.of("stream_accepted") == []
    assert run.events.of("stream_reconnected") == []
    data, _ = run.sink.received()
    assert data[:, 0].max() < NEW_START, "samples of the blocked stream reached the sink"
    assert len(run.events.of("stream_blocked")) == 1  # reported once, not on every look


@pytest.mark.parametrize("named", [False, True], ids=["device-labels", "pipeline-labels"])
def test_swapped_amplifier_is_blocked_until_the_operator_accepts_it(
        producers: Producers, named: bool) -> None:
    name, sid = unique_stream()
    first = producers.start(name, sid)
    token = uuid4().hex
    # found by name, so a swapped amplifier matches the query; with labels named by the
    # pipeline, accepting also checks the new amplifier's labels
    labels = {"channel_names": ["idx", "C1", "C2"]} if named else None
    run = Run(pipeline({"name": name}, operator=token, inlet_params=labels))
    try:
        run.wait_started()
        producers.kill(first)
        run.events.wait("stream_lost")
        new_sid = f"{sid}-swapped"
        producers.start(name, new_sid, start=NEW_START)  # another amplifier, same settings
        blocked = run.events.wait("stream_blocked")
        assert blocked[0]["changes"] == [f"source_id '{sid}' -> '{new_sid}'"]
        assert not run.sink.wait_index(NEW_START, timeout=0.5), "delivered before acceptance"
        operator_signal(token).set()  # marker 'accept' on the inlet's control input
        accepted = run.events.wait("stream_accepted")
        assert run.sink.wait_index(NEW_START + 50), "no sample arrived after acceptance"
    finally:
        result = run.finish()
    assert result.status == "stopped", result.reason
    assert accepted[0]["source_id"] == new_sid
    assert accepted[0]["changes"] == blocked[0]["changes"]
    assert run.events.of("stream_accept_refused") == []
    runs = contiguous_runs(run.sink.received()[0][:, 0].astype(np.int64))
    assert len(runs) == 2 and runs[1][0] >= NEW_START, runs


def test_accept_with_nothing_blocked_is_refused(producers: Producers) -> None:
    name, sid = unique_stream()
    producers.start(name, sid)
    token = uuid4().hex
    run = Run(pipeline({"source_id": sid}, operator=token))
    try:
        run.wait_started()
        operator_signal(token).set()
        refused = run.events.wait("stream_accept_refused")
    finally:
        result = run.finish()
    assert result.status == "stopped", result.reason
    assert "no changed stream" in refused[0]["reason"]


@pytest.mark.parametrize("policy", ["drop", "flag"])
def test_nan_inf_burst_keeps_the_session_running(producers: Producers, policy: str) -> None:
    name, sid = unique_stream()
    bad = (int(SRATE), int(SRATE) + 10)  # 10 samples, 1 s after the inlet connected
    producers.start(name, sid, bad=bad, wait_consumer_s=20.0)
    run = Run(pipeline({"source_id": sid}, duration=2.5, on_bad_chunk=policy))
    result = run.finish(stop=False)
    assert result.status == "completed", result.reason
    assert result.bad_chunks.get("inlet", 0) >= 1
    events = run.events.of("bad_chunk")
    assert events and all(e["policy"] == policy for e in events)
    assert all("NaN/Inf" in e["problem"] for e in events)
    data, _ = run.sink.received()
    index = data[:, 0].astype(np.int64)
    assert np.isfinite(data).all()
    assert index[-1] > bad[1] + 50, "samples after the burst did not arrive"
    burst = (index >= bad[0]) & (index < bad[1])
    if policy == "flag":  # passed on, zeroed
        assert all(e["action"] == "repaired" for e in events)
        assert len(contiguous_runs(index)) == 1
        assert burst.sum() == bad[1] - bad[0] and np.all(data[burst, 1:] == 0)
    else:  # the chunks carrying it are gone, nothing else
        assert all(e["action"] == "dropped" for e in events)
        assert not burst.any()


def test_lost_stream_fails_the_run_after_lost_timeout(producers: Producers) -> None:
    name, sid = unique_stream()
    first = producers.start(name, sid)
    run = Run(pipeline({"source_id": sid}, duration=60.0, inlet_params={"lost_timeout_s": 1.0}))
    try:
        run.wait_started()
        producers.kill(first)  # and it never comes back
        run.events.wait("stream_lost")
    finally:
        result = run.finish(stop=False, timeout=20.0)
    assert result.status == "failed"
    assert isinstance(result.error, StreamNotFoundError)
    message = str(result.error)
    assert "node 'inlet'" in message and "lost" in message
    assert name in message and sid in message and "1 s" in message
    failures = [f for k, f in run.events.items if k == "failure"]
    assert failures and failures[0]["type"] == "StreamNotFoundError"
    runs = contiguous_runs(run.sink.received()[0][:, 0].astype(np.int64))
    assert len(runs) == 1, runs  # what did arrive before the loss is intact
