"""Real LSL in and out: outlets in another process, the runtime's inlet and outlets.

Modelled on mne-lsl's tests: a producer process streams a known signal whose
channel 0 is the sample index, in chunks of varying size, each sample stamped
``t0 + index / srate``. Whatever the runtime receives must then be contiguous in
the index channel (no drop, no reordering; the inlet flushes on open, so the
first index received is not 0), with increasing timestamps and exact values.

Every stream gets a unique ``source_id``; every wait is bounded; nothing here
asserts on speed (that lives in ``bench/``).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
import yaml

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.errors import SpecMismatchError, StreamNotFoundError
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.node import Input, Node, NodeContext
from bci_runtime.registry import register_node
from bci_runtime.runner import Runner, RunResult

pylsl = pytest.importorskip("pylsl")

pytestmark = pytest.mark.lsl

SRATE = 500.0
N_CHANNELS = 4
LABELS = ["idx", "C3", "Cz", "C4"]
TYPES = ["misc", "eeg", "eeg", "eeg"]
UNITS = ["a.u.", "uV", "uV", "uV"]
MAX_CHUNK = 25  # producer chunks are 1..MAX_CHUNK samples
READY_TIMEOUT_S = 30.0
PRODUCER_LIFETIME_S = 120.0  # the producer exits by itself even if never killed


# -- the producer: a separate process, as an amplifier's LSL app would be ---------------

PRODUCER = r"""
import json, sys, time
import numpy as np
import pylsl

cfg = json.loads(sys.argv[1])
n, srate = cfg["channels"], cfg["srate"]
info = pylsl.StreamInfo(cfg["name"], cfg["type"], n, srate, "float32", cfg["source_id"])
chans = info.desc().append_child("channels")
for label, ctype, unit in zip(cfg["labels"], cfg["types"], cfg["units"]):
    ch = chans.append_child("channel")
    ch.append_child_value("label", label)
    ch.append_child_value("type", ctype)
    ch.append_child_value("unit", unit)
outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=10)
rng = np.random.default_rng(cfg["seed"])
k = np.arange(1, n)
t0 = pylsl.local_clock() + 0.1
print(json.dumps({"t0": t0}), flush=True)
deadline = time.monotonic() + cfg["lifetime_s"]
sent = 0
while time.monotonic() < deadline:
    size = int(rng.integers(1, cfg["max_chunk"] + 1))
    idx = np.arange(sent, sent + size)
    data = np.empty((size, n), dtype=np.float32)
    data[:, 0] = idx
    # exact in float32: integers below 2**24 and halves
    data[:, 1:] = ((idx[:, None] * (2 * k + 1)) % 4096 - 2048) * 0.5
    stamps = t0 + idx / srate
    delay = stamps[-1] - pylsl.local_clock()
    if delay > 0:
        time.sleep(delay)
    outlet.push_chunk(data, stamps.tolist(), pushthrough=True)
    sent += size
"""


def expected_values(index: np.ndarray, n_channels: int = N_CHANNELS) -> np.ndarray:
    """What the producer sends for sample ``index``, shape (n_samples, n_channels)."""
    k = np.arange(1, n_channels)
    out = np.empty((len(index), n_channels), dtype=np.float32)
    out[:, 0] = index
    out[:, 1:] = ((index[:, None] * (2 * k + 1)) % 4096 - 2048) * 0.5
    return out


class Producer:
    """A producer process and what it announced."""

    def __init__(self, proc: subprocess.Popen, name: str, source_id: str, t0: float) -> None:
        self.proc, self.name, self.source_id, self.t0 = proc, name, source_id, t0


@pytest.fixture
def producer() -> Iterator[Callable[..., Producer]]:
    """Factory starting producer processes; all are killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(channels: int = N_CHANNELS, srate: float = SRATE, seed: int = 0) -> Producer:
        uid = uuid4().hex
        cfg = {
            "name": f"test-eeg-{uid[:8]}", "type": "EEG", "source_id": f"test-{uid}",
            "channels": channels, "srate": srate, "seed": seed, "max_chunk": MAX_CHUNK,
            "labels": (LABELS + [f"x{i}" for i in range(channels)])[:channels],
            "types": (TYPES + ["eeg"] * channels)[:channels],
            "units": (UNITS + ["uV"] * channels)[:channels],
            "lifetime_s": PRODUCER_LIFETIME_S,
        }
        proc = subprocess.Popen([sys.executable, "-c", PRODUCER, json.dumps(cfg)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"LSL producer did not start (exit code {proc.poll()})")
        return Producer(proc, cfg["name"], cfg["source_id"], json.loads(line)["t0"])

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# -- a test-only sink --------------------------------------------------------------------

@register_node
class LslTestRecorder(Node):
    """Keeps a copy of every chunk it receives (test-only sink)."""

    type_name = "test_lsl_recorder"
    signal = Input("signal", doc="anything numeric")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self.data: list[np.ndarray] = []
        self.stamps: list[np.ndarray] = []
        self.specs: list[Any] = []

    def process(self, port: str, chunk: AnyChunk) -> None:
        assert isinstance(chunk, Chunk)
        self.data.append(chunk.data.copy())
        self.stamps.append(chunk.timestamps.copy())
        if not self.specs or self.specs[-1] is not chunk.spec:
            self.specs.append(chunk.spec)
        return None

    def received(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples and timestamps, (n_samples, n_channels) and (n_samples,)."""
        if not self.data:
            return np.empty((0, 0), np.float32), np.empty(0)
        return np.concatenate(self.data), np.concatenate(self.stamps)


# -- helpers -----------------------------------------------------------------------------

def inlet_pipeline(prod: Producer, *, duration: float, channels: int = N_CHANNELS,
                   srate: float = SRATE, extra_nodes: dict | None = None,
                   inlet_params: dict | None = None, inlet_process: str = "main") -> Graph:
    params = {"source_id": prod.source_id, "channels": channels, "srate": srate,
              "resolve_timeout_s": 10.0, **(inlet_params or {})}
    doc = {
        "name": "test-lsl", "clock": "live", "duration": duration,
        "nodes": {
            "inlet": {"type": "lsl_inlet", "params": params, "process": inlet_process},
            "sink": {"type": "test_lsl_recorder", "inputs": {"signal": "inlet.signal"}},
            **(extra_nodes or {}),
        },
    }
    return load_graph_text(yaml.safe_dump(doc, sort_keys=False), "test_lsl.yaml")


def run_in_thread(runner: Runner) -> tuple[threading.Thread, dict[str, RunResult]]:
    out: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", runner.run()),
                              name="test-runner", daemon=True)
    thread.start()
    return thread, out


def check_contiguous(data: np.ndarray, stamps: np.ndarray, prod: Producer) -> np.ndarray:
    """Assert the received samples are the producer's, in order, none missing."""
    assert data.ndim == 2 and data.shape[1] == N_CHANNELS
    index = data[:, 0].astype(np.int64)
    assert np.array_equal(index, np.arange(index[0], index[0] + len(index))), (
        f"index channel not contiguous: gaps/reorders at positions "
        f"{np.flatnonzero(np.diff(index) != 1)[:10].tolist()}")
    np.testing.assert_array_equal(data, expected_values(index))
    assert np.all(np.diff(stamps) > 0), "timestamps do not increase"
    # producer stamps t0 + i/srate in its clock; the inlet maps them to ours (same host:
    # the correction is tiny, so a loose bound only catches a wrong mapping)
    np.testing.assert_allclose(stamps, prod.t0 + index / SRATE, rtol=0, atol=0.01)
    np.testing.assert_allclose(np.diff(stamps), 1.0 / SRATE, rtol=0, atol=1e-3)
    return index


def pull_until_done(inlet: Any, thread: threading.Thread, deadline_s: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pull from a pylsl inlet until ``thread`` ends (bounded), then drain."""
    chunks, stamps = [], []
    deadline = time.monotonic() + deadline_s
    quiet = 0
    while time.monotonic() < deadline:
        try:
            data, ts = inlet.pull_chunk(timeout=0.2, max_samples=4096)
        except pylsl.util.LostError:
            break
        if len(ts):
            chunks.append(np.asarray(data))
            stamps.append(np.asarray(ts))
            quiet = 0
        elif not thread.is_alive():
            quiet += 1
            if quiet >= 3:
                break
    if not chunks:
        return np.empty((0, 0)), np.empty(0)
    return np.concatenate(chunks), np.concatenate(stamps)


def open_inlet(source_id: str, timeout: float = 15.0) -> Any:
    found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
    assert found, f"no LSL stream with source_id {source_id} appeared within {timeout} s"
    inlet = pylsl.StreamInlet(found[0], max_buflen=30, recover=False, processing_flags=0)
    inlet.open_stream(timeout=timeout)
    return inlet


def wait_for_run(thread: threading.Thread, out: dict[str, RunResult], timeout: float) -> RunResult:
    thread.join(timeout)
    assert not thread.is_alive(), f"the run did not end within {timeout} s"
    return out["result"]


# -- tests -------------------------------------------------------------------------------

def test_inlet_receives_every_sample_in_order(producer: Callable[..., Producer]) -> None:
    prod = producer()
    graph = inlet_pipeline(prod, duration=3.0)
    result = Runner(graph).run()
    assert result.status == "completed", result.reason
    sink = graph.nodes["sink"]
    data, stamps = sink.received()
    assert len(stamps) >= 100, f"only {len(stamps)} samples arrived"
    check_contiguous(data, stamps, prod)
    assert result.samples == len(stamps)
    assert result.bad_chunks == {}
    # chunks of varying size arrived: the inlet hands over what is there, no fixed blocks
    assert len({len(s) for s in sink.stamps}) > 1
    # the pipeline named no channels, so the chunks carry the device's labels/types/units
    spec = sink.specs[-1]
    assert list(spec.channel_names) == LABELS
    assert list(spec.channel_types) == TYPES
    assert list(spec.units) == UNITS


def test_inlet_in_a_worker_process_delivers_every_sample(
        producer: Callable[..., Producer]) -> None:
    """lsl_inlet placed in worker process 'acq'; the sink in main gets every sample."""
    prod = producer(seed=5)
    graph = inlet_pipeline(prod, duration=3.0, inlet_process="acq")
    result = Runner(graph).run()
    assert result.status == "completed", result.reason
    assert set(result.processes) == {"acq"}
    data, stamps = graph.nodes["sink"].received()
    assert len(stamps) >= 100, f"only {len(stamps)} samples arrived"
    check_contiguous(data, stamps, prod)
    assert result.samples == len(stamps)


def test_inlet_with_named_channels(producer: Callable[..., Producer]) -> None:
    prod = producer(seed=1)
    graph = inlet_pipeline(prod, duration=2.0, inlet_params={"channel_names": LABELS})
    result = Runner(graph).run()
    assert result.status == "completed", result.reason
    data, stamps = graph.nodes["sink"].received()
    assert len(stamps) >= 50
    check_contiguous(data, stamps, prod)


def test_lsl_outlet_republishes_values_and_timestamps(producer: Callable[..., Producer]) -> None:
    prod = producer(seed=2)
    out_sid = f"test-{uuid4().hex}"
    out_name = f"test-republish-{out_sid[-8:]}"
    graph = inlet_pipeline(prod, duration=6.0, extra_nodes={
        "out": {"type": "lsl_outlet", "inputs": {"signal": "inlet.signal"},
                "params": {"name": out_name, "type": "EEG", "source_id": out_sid}},
    })
    thread, out = run_in_thread(Runner(graph))
    try:
        inlet = open_inlet(out_sid)
        info = inlet.info(timeout=10.0)
        got, got_ts = pull_until_done(inlet, thread, deadline_s=60.0)
        inlet.close_stream()
    finally:
        result = wait_for_run(thread, out, 60.0)
    assert result.status == "completed", result.reason

    assert info.name() == out_name and info.type() == "EEG" and info.source_id() == out_sid
    assert info.channel_count() == N_CHANNELS
    assert info.nominal_srate() == SRATE
    assert info.channel_format() == pylsl.cf_float32
    # the desc carries a label, type and unit per channel: those of the outlet's input spec
    # (that these are the device's own is test_lsl_outlet_republishes_full_metadata)
    in_spec = graph.nodes["out"].input_specs["signal"]
    assert _desc_channels(info) == (list(in_spec.channel_names), list(in_spec.channel_types),
                                    list(in_spec.units))
    assert info.desc().child_value("manufacturer") == "bci-runtime"

    # what the runtime received, checked against the producer...
    sent, sent_ts = graph.nodes["sink"].received()
    sent_index = check_contiguous(sent, sent_ts, prod)
    # ...and what it republished, checked against what it received: exactly equal
    assert len(got_ts) >= 50, f"only {len(got_ts)} samples read back from the outlet"
    got_index = got[:, 0].astype(np.int64)
    assert np.array_equal(got_index, np.arange(got_index[0], got_index[0] + len(got_index)))
    pos = got_index - sent_index[0]
    assert pos[0] >= 0 and pos[-1] < len(sent_index)
    np.testing.assert_array_equal(got, sent[pos])
    np.testing.assert_array_equal(got_ts, sent_ts[pos])


def _desc_channels(info: Any) -> tuple[list[str], list[str], list[str]]:
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling()
    return labels, types, units


@pytest.mark.parametrize("placement", ["main", "acq"],
                         ids=["same-process", "inlet-in-worker"])
@pytest.mark.parametrize("named", [False, True], ids=["device-labels", "pipeline-labels"])
def test_lsl_outlet_republishes_full_metadata(producer: Callable[..., Producer],
                                              named: bool, placement: str) -> None:
    prod = producer(seed=3)
    out_sid = f"test-{uuid4().hex}"
    graph = inlet_pipeline(
        prod, duration=3.0, inlet_params={"channel_names": LABELS} if named else None,
        inlet_process=placement,
        extra_nodes={"out": {"type": "lsl_outlet", "inputs": {"signal": "inlet.signal"},
                             "params": {"source_id": out_sid}}})
    thread, out = run_in_thread(Runner(graph))
    try:
        found = pylsl.resolve_byprop("source_id", out_sid, 1, 15.0)
        assert found, "the republished stream did not appear"
        inlet = pylsl.StreamInlet(found[0], recover=False)
        info = inlet.info(timeout=10.0)
        inlet.close_stream()
    finally:
        result = wait_for_run(thread, out, 60.0)
    assert result.status == "completed", result.reason
    labels, types, units = _desc_channels(info)
    assert (labels, types, units) == (LABELS, TYPES, UNITS)


def _demo_doc(lsl_name: str, source_id: str, duration: float) -> dict:
    doc = yaml.safe_load((files("bci_runtime.pipelines") / "demo.yaml").read_text())
    assert doc["clock"] == "live"
    doc["duration"] = duration
    # fixed weights: the decoder decides from the first window instead of calibrating
    # for 14 s first; every other node is the demo's
    n = doc["nodes"]["eeg"]["params"]["n_channels"]
    doc["nodes"]["decoder"]["params"].update({"weights": [[1.0] * n], "bias": [0.0]})
    doc["nodes"]["feedback"]["params"].update(
        {"lsl_name": lsl_name, "source_id": source_id, "console": False})
    return doc


def test_feedback_publishes_decisions_over_lsl() -> None:
    sid = f"test-{uuid4().hex}"
    name = f"test-feedback-{sid[-8:]}"
    graph = load_graph_text(yaml.safe_dump(_demo_doc(name, sid, 5.0)), "demo-test.yaml")
    thread, out = run_in_thread(Runner(graph))
    try:
        inlet = open_inlet(sid)
        info = inlet.info(timeout=10.0)
        got, got_ts = pull_until_done(inlet, thread, deadline_s=60.0)
        inlet.close_stream()
    finally:
        result = wait_for_run(thread, out, 60.0)
    assert result.status == "completed", result.reason
    assert info.name() == name and info.source_id() == sid
    labels, _, units = _desc_channels(info)
    assert labels == ["left", "right"] and units == ["prob", "prob"]
    assert len(got_ts) > 0, "no decision arrived over LSL"
    assert got.shape[1] == 2
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(np.diff(got_ts) > 0)
    feedback = graph.nodes["feedback"]
    assert 0 < len(got_ts) <= feedback.decisions


def test_feedback_decisions_match_what_the_node_saw() -> None:
    """The decision outlet carries the decoder's outputs unchanged (values and stamps)."""
    sid = f"test-{uuid4().hex}"
    doc = _demo_doc(f"test-feedback-{sid[-8:]}", sid, 5.0)
    doc["nodes"]["tap"] = {"type": "test_lsl_recorder", "inputs": {"signal": "decoder.decision"}}
    graph = load_graph_text(yaml.safe_dump(doc), "demo-test.yaml")
    thread, out = run_in_thread(Runner(graph))
    try:
        inlet = open_inlet(sid)
        got, got_ts = pull_until_done(inlet, thread, deadline_s=60.0)
        inlet.close_stream()
    finally:
        result = wait_for_run(thread, out, 60.0)
    assert result.status == "completed", result.reason
    seen, seen_ts = graph.nodes["tap"].received()
    assert len(got_ts) > 0
    pos = np.searchsorted(seen_ts, got_ts)
    assert np.all(pos < len(seen_ts))
    np.testing.assert_array_equal(seen_ts[pos], got_ts)
    np.testing.assert_array_equal(seen[pos], got)
    # the reader joined late, so it saw a contiguous tail of the decisions
    assert np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos)))


def test_missing_stream_fails_the_run_listing_streams_seen() -> None:
    uid = uuid4().hex
    other_name = f"test-unrelated-{uid[:8]}"
    other = pylsl.StreamOutlet(pylsl.StreamInfo(other_name, "EEG", 3, 100.0, "float32",
                                                f"test-{uid}"))
    try:
        doc = {
            "name": "test-missing", "clock": "live", "duration": 30,
            "nodes": {
                "inlet": {"type": "lsl_inlet", "params": {
                    "source_id": f"test-missing-{uid}", "channels": 3, "srate": 100,
                    "resolve_timeout_s": 1.0}},
                "sink": {"type": "test_lsl_recorder", "inputs": {"signal": "inlet.signal"}},
            },
        }
        graph = load_graph_text(yaml.safe_dump(doc), "missing.yaml")
        events: list[tuple[str, dict]] = []
        result = Runner(graph, emit_event=lambda kind, **f: events.append((kind, f))).run()
    finally:
        del other
    assert result.status == "failed"
    assert isinstance(result.error, StreamNotFoundError)
    message = str(result.error)
    assert f"source_id='test-missing-{uid}'" in message
    assert "streams seen:" in message
    assert other_name in message
    assert result.samples == 0
    assert any(kind == "failure" and f["type"] == "StreamNotFoundError" for kind, f in events)


@pytest.mark.parametrize(
    ("stream", "expected", "numbers"),
    [
        ({"channels": 4}, {"channels": 6}, ("4 channels", "expects 6")),
        ({"srate": 500.0}, {"srate": 250.0}, ("500 Hz", "expects 250 Hz")),
    ],
    ids=["channels", "srate"],
)
def test_spec_mismatch_fails_naming_both_numbers(producer: Callable[..., Producer],
                                                  stream: dict, expected: dict,
                                                  numbers: tuple[str, str]) -> None:
    prod = producer(**stream)
    graph = inlet_pipeline(prod, duration=30.0, **{"channels": N_CHANNELS, "srate": SRATE,
                                                   **expected})
    result = Runner(graph).run()
    assert result.status == "failed"
    assert isinstance(result.error, SpecMismatchError)
    message = str(result.error)
    assert "node 'inlet'" in message and prod.name in message
    for text in numbers:
        assert text in message
    assert result.samples == 0


def test_lost_stream_fails_the_run_after_lost_timeout(
        producer: Callable[..., Producer]) -> None:
    prod = producer(seed=4)
    graph = inlet_pipeline(prod, duration=60.0, inlet_params={"lost_timeout_s": 2.0})
    thread, out = run_in_thread(Runner(graph))
    sink = graph.nodes["sink"]
    deadline = time.monotonic() + 20.0
    while not getattr(sink, "data", None) and time.monotonic() < deadline:
        time.sleep(0.05)
    prod.proc.kill()  # the device's app dies mid-run
    prod.proc.wait(10)
    result = wait_for_run(thread, out, 40.0)
    assert result.status == "failed"
    assert isinstance(result.error, StreamNotFoundError)
    assert "node 'inlet'" in str(result.error) and "lost" in str(result.error)
    data, stamps = sink.received()
    assert len(stamps) > 0
    check_contiguous(data, stamps, prod)  # what did arrive before the loss is intact
