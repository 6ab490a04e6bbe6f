"""``bci bench latency``: the loop's latency measured from outside the runtime.

Three processes, real LSL on loopback:

1. a producer streams ``channels`` x ``srate`` float32 in chunks of 1-10 samples
   (seeded), stamping each chunk's newest sample with the time it is pushed, as
   an amplifier driver does;
2. the runtime (this process) runs ``lsl_inlet -> bandpass 8-30 Hz (order 4,
   causal) -> 250 ms sliding log-variance -> linear classifier -> lsl_outlet``,
   one output per arriving chunk, each stamped with its newest input sample;
3. a receiver pulls the outputs and records ``arrival - output timestamp``, that
   is, output received minus the newest input sample's timestamp.

Percentiles come from the receiver's figures over ``outputs`` outputs, after a
warm-up that is discarded.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from typing import Any, TextIO

import numpy as np

from bci_runtime.telemetry import summarize_ms

WARMUP_OUTPUTS = 200
CHUNK_SIZES = (1, 10)  # inclusive range of samples per pushed chunk


def _produce(name: str, source_id: str, channels: int, srate: float, seed: int,
             stop: Any) -> None:
    """Producer process: a paced LSL outlet, like an amplifier's driver."""
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", channels, srate, "float32", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=10)
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal((int(srate) * 4, channels)) * 1e-5).astype(np.float32)
    sent = 0
    t0 = pylsl.local_clock() + 0.5
    while not stop.is_set():
        n = int(rng.integers(CHUNK_SIZES[0], CHUNK_SIZES[1] + 1))
        due = t0 + (sent + n - 1) / srate  # when the chunk's newest sample exists
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        start = sent % (block.shape[0] - CHUNK_SIZES[1])
        outlet.push_chunk(block[start:start + n], pylsl.local_clock(), pushthrough=True)
        sent += n


def _receive(source_id: str, outputs: int, conn: Any) -> None:
    """Receiver process: times every output against its newest input sample."""
    import pylsl

    found = pylsl.resolve_byprop("source_id", source_id, 1, 60.0)
    if not found:
        conn.send(("error", f"output stream {source_id} not found"))
        return
    inlet = pylsl.StreamInlet(found[0], max_buflen=1, recover=False)
    inlet.open_stream(timeout=30.0)
    latencies = np.empty(outputs + WARMUP_OUTPUTS, dtype=np.float64)
    got = 0
    conn.send(("ready", None))
    while got < latencies.shape[0]:
        _, ts = inlet.pull_chunk(timeout=10.0, max_samples=64, min_samples=1, as_numpy=True)
        now = pylsl.local_clock()
        if len(ts) == 0:
            conn.send(("error", f"no output for 10 s after {got} outputs"))
            return
        n = min(len(ts), latencies.shape[0] - got)
        latencies[got:got + n] = now - ts[:n]
        got += n
    conn.send(("done", latencies[WARMUP_OUTPUTS:]))


def _pipeline_yaml(tag: str, in_id: str, out_id: str, channels: int, srate: float) -> str:
    weights = [round(1.0 / channels, 9)] * channels
    return f"""
name: bench-latency-{tag}
clock: live
nodes:
  inlet:
    type: lsl_inlet
    params: {{source_id: {in_id}, channels: {channels}, srate: {srate}, resolve_timeout_s: 30}}
  bandpass:
    type: bandpass
    params: {{low: 8, high: 30, order: 4}}
    inputs: {{signal: inlet.signal}}
  logvar:
    type: log_variance
    params: {{window_s: 0.25, step_s: 0}}
    inputs: {{signal: bandpass.filtered}}
  classifier:
    type: linear_classifier
    params: {{classes: [a, b], weights: [{weights}], bias: [0.0]}}
    inputs: {{features: logvar.features}}
  outlet:
    type: lsl_outlet
    params: {{name: bench-out-{tag}, source_id: {out_id}}}
    inputs: {{signal: classifier.decision}}
"""


def run_latency_bench(channels: int = 64, srate: float = 1000.0, outputs: int = 10000,
                      seed: int = 0, progress: TextIO | None = None) -> dict[str, Any]:
    """Run the three-process latency benchmark.

    Parameters
    ----------
    channels, srate : int, float
        Shape of the input stream.
    outputs : int
        Outputs to time after the warm-up.
    seed : int
        Seed of the producer's chunk sizes and data.
    progress : file, optional
        Where to print progress lines.

    Returns
    -------
    dict
        ``{"channels", "srate", "outputs", "latency_ms": {"p50", "p99", "p999", "max"},
        "runtime_latency_ms": {...}, "chunk_sizes": [1, 10]}``.
    """
    from bci_runtime.errors import RunError
    from bci_runtime.graph import load_graph_text
    from bci_runtime.runner import Runner

    tag = uuid.uuid4().hex[:8]
    in_id, out_id = f"bench-in-{tag}", f"bench-out-{tag}"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    producer = ctx.Process(target=_produce, args=(f"bench-in-{tag}", in_id, channels, srate,
                                                  seed, stop), daemon=True)
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    receiver = ctx.Process(target=_receive, args=(out_id, outputs, child_conn), daemon=True)
    graph = load_graph_text(_pipeline_yaml(tag, in_id, out_id, channels, srate),
                            f"<bench latency {channels}ch@{srate:g}Hz>")
    runner = Runner(graph)
    outcome: dict[str, Any] = {}

    def collect() -> None:
        while True:
            try:
                if not parent_conn.poll(600):
                    outcome["error"] = "receiver timed out"
                    break
                kind, payload = parent_conn.recv()
            except (EOFError, OSError):
                outcome["error"] = "receiver process ended early"
                break
            if kind == "ready" and progress:
                print(f"timing {outputs} outputs ({channels} ch @ {srate:g} Hz)...",
                      file=progress, flush=True)
            elif kind in ("done", "error"):
                outcome[kind] = payload
                break
        runner.request_stop("benchmark done")

    producer.start()
    receiver.start()
    child_conn.close()
    watcher = threading.Thread(target=collect, daemon=True)
    watcher.start()
    try:
        result = runner.run()
    finally:
        stop.set()
        for proc in (producer, receiver):
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
    watcher.join(5.0)
    if result.error is not None:
        raise result.error
    if "error" in outcome:
        raise RunError(f"latency benchmark failed: {outcome['error']}")
    lat = summarize_ms(outcome["done"])
    # the runtime's own figure (newest input sample -> sink emit), over the same steady
    # state as the receiver's: the warm-up (connection, first buffered chunk) is dropped
    inner = summarize_ms(result.end_to_end.values()[WARMUP_OUTPUTS:])
    return {
        "channels": channels,
        "srate": srate,
        "outputs": int(lat["count"] or 0),
        "chunk_sizes": list(CHUNK_SIZES),
        "latency_ms": {k: lat[k] for k in ("p50", "p99", "p999", "max")},
        "runtime_latency_ms": {k: inner[k] for k in ("p50", "p99", "p999", "max")},
    }
