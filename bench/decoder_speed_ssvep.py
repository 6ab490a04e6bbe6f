"""Speed of the SSVEP decoders: predict latency per trial, and online updates.

For each decoder of :mod:`bci_runtime.decoders.ssvep` (CCA, FBCCA, FBCCA with a
logistic head, BlockCovTS, SSVEPEnsemble):

* ``predict``: one trial, validated, features computed, classified (what the
  decoder node does per window);
* ``partial_fit``: one labelled trial, the head refitted on its memory (what the
  background co-adaptation worker does; never on the hot path);
* ``recenter update``: for the ensemble inside a ``CoAdaptiveDecoder`` with the
  runtime's ``recenter`` strategy, one unlabelled trial (skipped if that
  strategy is not installed).

Data: seeded synthetic flicker shaped like the Kalunga 2016 recordings (8
channels, 256 Hz, 3 s windows, 4 classes with rest, 32 calibration trials).
Wall-clock percentiles in ms, plus the median CPU time of the calling thread;
compare runs on the same machine.

Run::

    .venv/bin/python bench/decoder_speed_ssvep.py
    .venv/bin/python bench/decoder_speed_ssvep.py --channels 32 --seconds 1 --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from timing import percentiles, timed

from bci_runtime.decoders.adaptation import CoAdaptiveDecoder
from bci_runtime.decoders.ssvep import CCA, BlockCovTS, FilterBankCCA, SSVEPEnsemble

FREQS = {"13Hz": 13.0, "21Hz": 21.0, "17Hz": 17.0, "rest": None}




def trials(rng: np.random.Generator, n: int, n_channels: int, sfreq: float,
           seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Flicker of random phase through a random pattern, in unit white noise.

    Returns
    -------
    X : ndarray, shape (n, n_channels, n_times)
    y : ndarray of str, shape (n,)
    """
    n_times = int(round(seconds * sfreq))
    t = np.arange(n_times) / sfreq
    labels = list(FREQS)
    y = np.array([labels[i % len(labels)] for i in range(n)])
    pattern = rng.normal(size=(n_channels, 1))
    X = rng.normal(size=(n, n_channels, n_times))
    for i, label in enumerate(y):
        f = FREQS[label]
        if f is not None:
            X[i] += 0.3 * pattern * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return X, y


def bench(n_channels: int, sfreq: float, seconds: float, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    X, y = trials(rng, 32, n_channels, sfreq, seconds)
    Xo, yo = trials(rng, 64, n_channels, sfreq, seconds)
    freqs = [13.0, 21.0, 17.0]
    decoders = {
        "cca": CCA(freqs, sfreq),
        "fbcca": FilterBankCCA(freqs, sfreq),
        "fbcca (logistic head)": FilterBankCCA(freqs, sfreq, head="logistic"),
        "blockcov-ts": BlockCovTS(freqs, sfreq),
        "ensemble": SSVEPEnsemble(freqs, sfreq),
    }
    out: dict[str, Any] = {}
    for name, dec in decoders.items():
        t0 = time.perf_counter()
        dec.fit(X, y)
        fit_ms = (time.perf_counter() - t0) * 1e3
        row = {"fit_ms": fit_ms,
               "predict": percentiles(timed(lambda i: dec.predict(Xo[i % 64][None]), n)),
               "partial_fit": percentiles(timed(
                   lambda i: dec.partial_fit(Xo[i % 64][None], yo[i % 64:i % 64 + 1]),
                   min(n, 100)))}
        out[name] = row
    try:
        from bci_runtime.decoders.adaptation import make_strategy

        strategy = make_strategy("recenter")
    except Exception as exc:  # noqa: BLE001 -- another helper's module, maybe not there yet
        out["ensemble + recenter"] = {"skipped": f"recenter unavailable: {exc}"}
        return out
    model = CoAdaptiveDecoder(SSVEPEnsemble(freqs, sfreq), [strategy]).fit(X, y)
    out["ensemble + recenter"] = {
        "predict": percentiles(timed(lambda i: model.predict(Xo[i % 64][None]), n)),
        "update": percentiles(timed(lambda i: model.partial_fit(Xo[i % 64][None]),
                                    min(n, 100)))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--sfreq", type=float, default=256.0)
    parser.add_argument("--seconds", type=float, default=3.0, help="window length, s")
    parser.add_argument("--n", type=int, default=200, help="timed predictions per decoder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = bench(args.channels, args.sfreq, args.seconds, args.n)
    if args.json:
        print(json.dumps({"ssvep_decoder_speed": result, "channels": args.channels,
                          "sfreq": args.sfreq, "seconds": args.seconds}))
        return 0
    print(f"{args.channels} channels @ {args.sfreq:g} Hz, {args.seconds:g} s windows, "
          "32 calibration trials (ms; cpu = median CPU time of this thread)")
    print(f"{'decoder':24s} {'call':12s} {'p50':>8s} {'p99':>8s} {'max':>8s} {'cpu':>8s}")
    for name, row in result.items():
        if "skipped" in row:
            print(f"{name:24s} {row['skipped']}")
            continue
        if "fit_ms" in row:
            print(f"{name:24s} {'fit (32)':12s} {row['fit_ms']:8.2f}")
        for call in ("predict", "partial_fit", "update"):
            if call in row:
                r = row[call]
                print(f"{name:24s} {call:12s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                      f"{r['max_ms']:8.2f} {r['cpu_p50_ms']:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
