"""What the executor adds around a node that does nothing.

The issue's target: engine overhead for a no-op node <= 20 us median per dispatch.

A source feeds a chain of N no-op nodes (N = 0, 1, 5, 10 by default)::

    src -> noop1 -> noop2 -> ... -> noopN

Each no-op node hands its input chunk on unchanged (``return self._out`` after
one assignment: no copy, no allocation), so nearly all the time measured is the
executor's: the source-edge check of the chunk (shape, NaN/Inf), the lock, the
clock reads, routing, the pending lists, two ``perf_counter`` calls and two
telemetry records per node call, and the end-to-end record at the end.

Each dispatch is timed from outside with ``time.perf_counter_ns`` around
:meth:`Executor.dispatch_source`, exactly as a source thread calls it, over
``--dispatches`` chunks after a discarded warm-up; the garbage collector stays
on. Nothing is subtracted. Reported, in microseconds:

- ``dispatch``: the whole ``dispatch_source`` call, p50/p99/p99.9/max;
- ``per_node``: the same divided by N (fixed per-dispatch costs included, so an
  upper bound on the cost per node);
- ``marginal_per_node``: the slope of the median between the smallest and the
  largest N (what one more node in the chain costs);
- ``timer``: the cost of a ``perf_counter_ns`` pair with nothing between, for scale;
- ``node_body``: one direct call of the no-op ``process`` (no executor), for scale.

Run::

    .venv/bin/python bench/dispatch_overhead.py            # table
    .venv/bin/python bench/dispatch_overhead.py --json     # one JSON object
    .venv/bin/python bench/dispatch_overhead.py --chain 1 10 --dispatches 20000
    .venv/bin/python bench/dispatch_overhead.py --profile  # plus a cProfile pass of N=10
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import sys
import time
from typing import Any

import numpy as np
import yaml

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.clock import LslClock, SimulatedClock
from bci_runtime.executor import Executor
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.node import Input, Node, NodeContext, NodeParams, Output, Source
from bci_runtime.registry import register_node
from bci_runtime.spec import StreamSpec

TARGET_MEDIAN_US = 20.0
PERCENTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}
RING = 64  # distinct pre-built chunks cycled through, so no single array stays hot


class BenchSourceParams(NodeParams):
    channels: int = 8


@register_node
class BenchSource(Source):
    """Declares a stream; the benchmark hands its chunks to the executor directly."""

    type_name = "bench_dispatch_source"
    Params = BenchSourceParams
    signal = Output("signal")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        n = self.params.channels
        return {"signal": StreamSpec(
            name="bench", type="EEG", channel_names=tuple(f"ch{i + 1}" for i in range(n)),
            srate=250.0, dtype="float32", source_id="bench-dispatch")}


@register_node
class NoOp(Node):
    """Passes its input on untouched."""

    type_name = "bench_noop"
    signal = Input("signal")
    out = Output("signal")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        return {"out": inputs["signal"]}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self._out: dict[str, AnyChunk] = {}

    def process(self, port: str, chunk: AnyChunk) -> dict[str, AnyChunk]:
        self._out["out"] = chunk
        return self._out


def build(chain: int, channels: int, clock: str) -> Graph:
    nodes: dict[str, Any] = {"src": {"type": "bench_dispatch_source",
                                     "params": {"channels": channels}}}
    upstream = "src.signal"
    for i in range(1, chain + 1):
        nodes[f"noop{i}"] = {"type": "bench_noop", "inputs": {"signal": upstream}}
        upstream = f"noop{i}.out"
    doc = {"name": f"dispatch-{chain}", "clock": clock, "nodes": nodes}
    return load_graph_text(yaml.safe_dump(doc, sort_keys=False), f"dispatch-{chain}.yaml")


def _chunks(spec: StreamSpec, samples: int, seed: int) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(RING):
        data = (rng.standard_normal((samples, spec.n_channels)) * 1e-5).astype(np.float32)
        ts = (k * samples + np.arange(samples)) / spec.srate
        out.append(Chunk(data, ts, spec))
    return out


def _summary_us(ns: np.ndarray, divide: int = 1) -> dict[str, float]:
    us = ns / 1e3 / divide
    pct = np.percentile(us, list(PERCENTILES.values()))
    out = {k: round(float(v), 3) for k, v in zip(PERCENTILES, pct)}
    out["mean"] = round(float(us.mean()), 3)
    out["max"] = round(float(us.max()), 3)
    return out


def measure(chain: int, dispatches: int, warmup: int, samples: int, channels: int,
            clock_name: str, seed: int, profile: cProfile.Profile | None = None) -> dict:
    graph = build(chain, channels, "simulated" if clock_name == "simulated" else "live")
    clock = SimulatedClock() if clock_name == "simulated" else LslClock()
    executor = Executor(graph, "main", clock)
    for name in graph.nodes_in("main"):
        graph.nodes[name].open(NodeContext(name=name, clock=clock))
    executor.start()
    spec = graph.specs[("src", "signal")]
    ring = [{"signal": c} for c in _chunks(spec, samples, seed)]
    dispatch = executor.dispatch_source
    now = time.perf_counter_ns
    for i in range(warmup):
        dispatch("src", ring[i % RING])
    times = np.empty(dispatches, dtype=np.int64)
    if profile is not None:
        profile.enable()
    for i in range(dispatches):
        outputs = ring[i % RING]
        t0 = now()
        dispatch("src", outputs)
        times[i] = now() - t0
    if profile is not None:
        profile.disable()
    for name in reversed(graph.nodes_in("main")):
        graph.nodes[name].close()
    if executor.failure is not None:
        raise executor.failure
    calls = [executor.telemetry[f"noop{i}"].calls for i in range(1, chain + 1)]
    if any(c != warmup + dispatches for c in calls):
        raise RuntimeError(f"expected {warmup + dispatches} calls per node, got {calls}")
    result = {"chain": chain, "dispatch_us": _summary_us(times)}
    if chain:
        result["per_node_us"] = _summary_us(times, chain)
    return result


def timer_floor(n: int = 200_000) -> dict[str, float]:
    now = time.perf_counter_ns
    times = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = now()
        times[i] = now() - t0
    return _summary_us(times)


def node_body(samples: int, channels: int, n: int = 200_000) -> dict[str, float]:
    spec = StreamSpec(name="b", type="EEG", channel_names=tuple(f"c{i}" for i in range(channels)),
                      srate=250.0, dtype="float32")
    chunk = _chunks(spec, samples, 0)[0]
    node = NoOp("noop")
    node.open(NodeContext.for_test())
    process = node.process
    now = time.perf_counter_ns
    t0 = now()
    for _ in range(n):
        process("signal", chunk)
    return {"mean": round((now() - t0) / n / 1e3, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, nargs="+", default=[0, 1, 5, 10],
                        help="numbers of no-op nodes after the source (default 0 1 5 10)")
    parser.add_argument("--dispatches", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=10, help="samples per chunk")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--clock", choices=["live", "simulated"], default="live",
                        help="runtime clock the executor reads (live: LSL local_clock)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also profile (cProfile, separate pass) the largest chain; to stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    rows = [measure(chain, args.dispatches, args.warmup, args.samples, args.channels,
                    args.clock, args.seed) for chain in args.chain]
    profile = None
    if args.profile:  # a separate pass: the profiler's own cost stays out of the figures
        profile = cProfile.Profile()
        measure(max(args.chain), args.dispatches, args.warmup, args.samples, args.channels,
                args.clock, args.seed, profile)
    chained = [r for r in rows if r["chain"]]
    marginal = None
    if len(chained) >= 2:
        lo, hi = chained[0], chained[-1]
        marginal = round((hi["dispatch_us"]["p50"] - lo["dispatch_us"]["p50"])
                         / (hi["chain"] - lo["chain"]), 3)
    worst_median = max((r["per_node_us"]["p50"] for r in chained), default=None)
    report = {
        "target_median_per_node_us": TARGET_MEDIAN_US,
        "met": worst_median is not None and worst_median <= TARGET_MEDIAN_US,
        "chunk": {"samples": args.samples, "channels": args.channels, "dtype": "float32"},
        "clock": args.clock, "dispatches": args.dispatches, "warmup": args.warmup,
        "rows": rows, "marginal_per_node_us_p50": marginal,
        "timer_us": timer_floor(), "node_body_us": node_body(args.samples, args.channels),
        "python": sys.version.split()[0], "numpy": np.__version__,
        "machine": platform.machine(), "platform": platform.platform(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"executor overhead per dispatch, no-op nodes, {args.samples}x{args.channels} "
              f"float32 chunks, {args.dispatches} dispatches after {args.warmup} warm-up, "
              f"clock {args.clock}")
        print(f"{'N':>3}  {'':10} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>9}   (us)")
        for r in rows:
            for label, key in (("dispatch", "dispatch_us"), ("per node", "per_node_us")):
                if key in r:
                    s = r[key]
                    print(f"{r['chain']:>3}  {label:10} {s['p50']:8.2f} {s['p99']:8.2f} "
                          f"{s['p999']:8.2f} {s['max']:9.1f}")
        if marginal is not None:
            print(f"marginal cost of one more node (median slope): {marginal:.2f} us")
        print(f"timer pair: {report['timer_us']['p50']:.3f} us median; no-op node body alone: "
              f"{report['node_body_us']['mean']:.3f} us")
        verdict = "MET" if report["met"] else "NOT MET"
        print(f"target <= {TARGET_MEDIAN_US:g} us median per node: {verdict} "
              f"(worst median per node {worst_median} us)")
    if profile is not None:
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(15)
        print(buf.getvalue(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
