"""The cursor_decoder node's hot path while CLDA adapts on its worker (percentiles).

Simulated 64-contact ECoG at 1 kHz (seeded, open loop) goes through the node in
20 ms chunks, back to back on one thread (harder than real time: the worker
competes for the GIL and the CPU with a hot path that never pauses), on a live
clock, so calibration and CLDA run on the worker thread as in a session. Timed:
each ``process`` call of the signal (band-pass of the chunk, binning, one Kalman
step per completed bin, labelling and queueing an update every second, and
installing a new version when one is ready), after the node went online. The
same with ``adapt: none`` shows what the adaptation costs the hot path, and the
worker's own update times are reported apart.

Run::

    .venv/bin/python bench/cursor_decoder_node.py
    .venv/bin/python bench/cursor_decoder_node.py --channels 32 --seconds 120 --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from timing import percentiles

from bci_runtime.chunk import Chunk
from bci_runtime.clock import LslClock
from bci_runtime.decoders.cursor_node import CursorDecoderNode
from bci_runtime.node import NodeContext
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.spec import StreamSpec

CHUNK = 20  # samples: 20 ms at 1 kHz
CALIBRATION_S = 30.0


def recording(channels: int, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Open-loop ECoG and its ground truth: signal (n, channels), truth (n, 6), names."""
    gen = make_generator("ecog", {"n_channels": channels, "srate": 1000}, seed=seed)
    block = gen.next_block(int(seconds * 1000))
    return block.data, block.truth, list(gen.truth_names)


def run(adapt: str, data: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    n, channels = data.shape
    signal = StreamSpec(name="ecog", type="ECoG", channel_names=tuple(
        f"G{i + 1:02d}" for i in range(channels)), srate=1000.0, dtype="float64",
        source_id="bench-ecog")
    task = StreamSpec(name="truth", type="GroundTruth", channel_names=tuple(names),
                      srate=1000.0, dtype="float64", source_id="bench-truth")
    node = CursorDecoderNode("decoder", {"adapt": adapt, "calibration_s": CALIBRATION_S})
    node.bind({"signal": signal, "task": task})
    node.open(NodeContext(name="decoder", clock=LslClock()))
    times = np.arange(n) / 1000.0
    samples: list[tuple[float, float]] = []
    try:
        for start in range(0, n - CHUNK + 1, CHUNK):
            sl = slice(start, start + CHUNK)
            node.process("task", Chunk(truth[sl], times[sl], task))
            c0, t0 = time.thread_time(), time.perf_counter()
            node.process("signal", Chunk(data[sl], times[sl], signal))
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if node.version:  # online: what a closed loop waits for
                samples.append((wall, cpu))
            elif times[start] > CALIBRATION_S:
                time.sleep(0.001)  # the calibration fit is on the worker: let it finish
    finally:
        node.close()
    summary = node.summary()
    return {"adapt": adapt, "chunk_ms": CHUNK, "process": percentiles(samples),
            "versions": summary["version"], "updates": summary["updates"],
            "worker_update_ms_p50": summary["update_ms_p50"],
            "worker_update_ms_max": summary["update_ms_max"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=150.0,
                        help="simulated seconds (the first 30 calibrate)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data, truth, names = recording(args.channels, args.seconds, args.seed)
    results = [run(adapt, data, truth, names) for adapt in ("none", "rml", "smoothbatch")]
    if args.json:
        print(json.dumps({"channels": args.channels, "results": results}, indent=1))
        return 0
    print(f"cursor_decoder, {args.channels} ECoG channels at 1 kHz, {CHUNK} ms chunks, "
          f"{args.seconds - CALIBRATION_S:g} s online")
    print(f"{'adapt':<12}{'chunks':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'versions':>10}{'worker p50/max ms':>20}")
    for r in results:
        p = r["process"]
        worker = (f"{r['worker_update_ms_p50']}/{r['worker_update_ms_max']}"
                  if r["updates"] else "-")
        print(f"{r['adapt']:<12}{p['n']:>8}{p['p50_ms']:>9.3f}{p['p90_ms']:>9.3f}"
              f"{p['p99_ms']:>9.3f}{p['max_ms']:>9.3f}{r['versions']:>10}{worker:>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
