"""Speed of the continuous decoders' hot path and of CLDA updates (percentiles).

* ``KalmanDecoder.step``: one 50 ms bin, validated and decoded, the streaming
  state kept (steady-state gain, and time-varying gain); target p99 <= 0.5 ms.
* CLDA updates for ~200 features (target median <= 1 ms):

  - ``RML.update`` with the parameters and the Kalman gain re-solved at every
    update (``update_every=1``), for one bin and for a 1 s chunk of 20 bins;
  - ``SmoothBatch.update``: the calls that only gather a 1 s chunk, and the
    calls that close a batch (fit, blend, new gain) -- reported apart;
  - ``RidgeDecoder.partial_fit`` of one bin (re-solves the ridge system);
  - ``KalmanDecoder.set_model``: the gain alone (Cholesky of Q, 2 x 2 DARE).

Data: seeded cortical-population spike counts. Wall-clock, on whatever else the
machine is running: compare runs on the same machine.

Run::

    .venv/bin/python bench/decoder_speed_continuous.py
    .venv/bin/python bench/decoder_speed_continuous.py --features 96 192 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from timing import percentiles, timed

from bci_runtime.decoders.clda import RML, SmoothBatch
from bci_runtime.decoders.continuous import KalmanDecoder, RidgeDecoder
from bci_runtime.decoders.cursor_loop import record_open_loop
from bci_runtime.simulators.paradigms import make_generator

WARMUP = 50  # untimed calls first: the filters and caches settle
DT = 0.05




def data(n_features: int, seconds: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts of ``n_features`` units (96-192 per simulated population; more are stacked)."""
    blocks, velocity = [], None
    for k in range(int(np.ceil(n_features / 192))):
        gen = make_generator("population", {"n_channels": 192, "srate": 1 / DT}, seed=10 + k)
        X, V = record_open_loop(gen, seconds)
        blocks.append(X)
        velocity = V if velocity is None else velocity
    return np.hstack(blocks)[:, :n_features], velocity


def bench(n_features: int, n: int) -> dict[str, dict[str, float]]:
    X, V = data(n_features)
    m = len(X)
    out: dict[str, dict[str, float]] = {}
    for steady in (True, False):
        dec = KalmanDecoder(steady_state=steady, shrinkage=0.05).fit(X, V)
        out[f"kalman step ({'steady' if steady else 'time-varying'})"] = percentiles(
            timed(lambda i: dec.step(X[i % m]), n, warmup=WARMUP))

    dec = KalmanDecoder(shrinkage=0.05).fit(X, V)
    out["kalman set_model (gain)"] = percentiles(
        timed(lambda i: dec.set_model(C=dec.C_), min(n, 1000), warmup=10))

    rng = np.random.default_rng(0)
    labels = V + 0.01 * rng.standard_normal(V.shape)  # stand-in intention labels

    dec = KalmanDecoder(shrinkage=0.05).fit(X, V)
    rml = RML(half_life=60.0, dt=DT, update_every=1).fit(dec)
    out["rml update (1 bin, re-solve)"] = percentiles(
        timed(lambda i: rml.update(X[i % m][None], labels[i % m][None], dec), min(n, 3000),
              warmup=WARMUP))
    out["rml update (20 bins, re-solve)"] = percentiles(
        timed(lambda i: rml.update(X[(20 * i) % (m - 20):][:20], labels[(20 * i) % (m - 20):][:20],
                                   dec), min(n, 1000)))

    dec = KalmanDecoder(shrinkage=0.05).fit(X, V)
    sb = SmoothBatch(half_life=60.0, batch_s=20.0, dt=DT).fit(dec)  # 20 chunks per batch
    gather, close = [], []
    for i in range(min(n, 4000)):
        lo = (20 * i) % (m - 20)
        c0, t0 = time.thread_time(), time.perf_counter()
        changed = sb.update(X[lo:lo + 20], labels[lo:lo + 20], dec)
        (close if changed else gather).append((time.perf_counter() - t0,
                                               time.thread_time() - c0))
    out["smoothbatch update (20 bins, gather)"] = percentiles(gather)
    out["smoothbatch update (20 bins, closes a batch)"] = percentiles(close)
    out["smoothbatch update (all calls)"] = percentiles(gather + close)

    ridge = RidgeDecoder(alpha=100.0, half_life=1200.0).fit(X, V)
    out["ridge partial_fit (1 bin)"] = percentiles(
        timed(lambda i: ridge.partial_fit(X[i % m][None], labels[i % m][None]), min(n, 3000),
              warmup=WARMUP))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, nargs="+", default=[96, 200])
    parser.add_argument("-n", type=int, default=20000, help="timed calls per measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {str(f): bench(f, args.n) for f in args.features}
    if args.json:
        print(json.dumps(report))
        return
    for f, rows in report.items():
        print(f"\n== {f} features")
        print(f"{'':<46}{'n':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'cpu p50':>9}")
        for name, p in rows.items():
            print(f"{name:<46}{p['n']:>7}{p['p50_ms']:>9.3f}{p['p90_ms']:>9.3f}"
                  f"{p['p99_ms']:>9.3f}{p['max_ms']:>9.3f}{p['cpu_p50_ms']:>9.3f}")
    try:
        load = " (load average %.1f %.1f %.1f)" % os.getloadavg()
    except OSError:
        load = ""
    print("\ntargets: kalman step p99 <= 0.5 ms; a SmoothBatch/RML update median <= 1 ms "
          f"(~200 features); {os.cpu_count()} cores{load}")


if __name__ == "__main__":
    main()
