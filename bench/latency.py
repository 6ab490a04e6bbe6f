"""Closed-loop latency through real LSL, for the issue's two stream shapes.

Usage::

    .venv/bin/python bench/latency.py            # 64 ch @ 1000 Hz and 256 ch @ 2000 Hz
    .venv/bin/python bench/latency.py --outputs 20000 --json

Each row is ``bci bench latency`` (see ``bci_runtime/bench_latency.py``): an
LSL outlet in one process, the runtime in another, a receiver in a third;
latency = output received - newest input sample's timestamp.
"""

from __future__ import annotations

import argparse
import json
import sys

from bci_runtime.bench_latency import run_latency_bench

SHAPES = ((64, 1000.0), (256, 2000.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=int, default=10000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run_latency_bench(ch, fs, args.outputs, progress=None if args.json else sys.stderr)
            for ch, fs in SHAPES]
    if args.json:
        print(json.dumps({"latency": rows}))
        return 0
    print(f"{'stream':>16} {'outputs':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}"
          f"   (inside the runtime: p50 / p99 ms)")
    for r in rows:
        lat, inner = r["latency_ms"], r["runtime_latency_ms"]
        print(f"{r['channels']:>5} ch @ {r['srate']:>5g} Hz {r['outputs']:>8} {lat['p50']:>8.3f} "
              f"{lat['p99']:>8.3f} {lat['p999']:>9.3f} {lat['max']:>8.3f}"
              f"   {inner['p50']:.3f} / {inner['p99']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
