"""Speed of the torch decoders on one CPU thread: single-trial predict, partial_fit, fit.

Usage::

    .venv/bin/python bench/decoder_speed_torch.py            # table
    .venv/bin/python bench/decoder_speed_torch.py --json     # one JSON object
    .venv/bin/python bench/decoder_speed_torch.py --calls 5000 --models eegnet

Epochs of 64 channels x 2 s at 160 Hz (320 samples), the PhysioNet motor-imagery
shape. Timing does not depend on the signal, so the data are seeded Gaussian
noise in volts; each model is configured as the real-data tests calibrate it
(8-30 Hz front band, 60 epochs) and fitted on 30 trials, as a calibration run.

* ``predict``: ``model.predict(x)`` on one trial ``x`` of shape (1, 64, 320),
  float64, as a decoder node calls it (validation included); p50 / p99 / max
  over ``--calls`` calls after a warm-up, in wall-clock time and in the CPU time
  of the calling thread (on a loaded machine the wall-clock tail is the
  scheduler's: compare the two). Target: p99 <= 5 ms.
* ``partial_fit``: one call with 1 new labelled trial and one with 10, at the
  default ``n_steps`` (10) and ``replay_ratio`` (0.5); median of 5.
* ``fit``: the calibration fit, once.

torch runs on one thread (``torch.set_num_threads(1)``), as a decoder node
that leaves the other cores to the pipeline would run it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bci_runtime.decoders.torch_decoders import EEGNetClassifier, MVCNetClassifier

N_CHANNELS, N_TIMES, FS = 64, 320, 160.0
MODELS = {
    "eegnet": (EEGNetClassifier, dict(sfreq=FS, band=(8, 30), kernel_length=32, n_epochs=60,
                                      lr=3e-3)),
    "mvcnet": (MVCNetClassifier, dict(sfreq=FS, band=(8, 30), n_epochs=60)),
}


def _percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max())}


def bench_model(name: str, calls: int, seed: int = 0) -> dict:
    """Time fit, single-trial predict and partial_fit of one model."""
    cls, params = MODELS[name]
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 20e-6, (30, N_CHANNELS, N_TIMES))
    y = np.array(["T1", "T2"] * 15)
    model = cls(random_state=seed, **params)
    start = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - start

    trial = rng.normal(0.0, 20e-6, (1, N_CHANNELS, N_TIMES))
    for _ in range(50):  # warm-up: allocator, oneDNN kernels
        model.predict(trial)
    predict_s, predict_cpu_s = [], []
    for _ in range(calls):
        start, start_cpu = time.perf_counter(), time.thread_time()
        model.predict(trial)
        predict_cpu_s.append(time.thread_time() - start_cpu)
        predict_s.append(time.perf_counter() - start)

    partial = {}
    for n_new in (1, 10):
        new_X = rng.normal(0.0, 20e-6, (n_new, N_CHANNELS, N_TIMES))
        new_y = np.array(["T1", "T2"] * 5)[:n_new]
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.partial_fit(new_X, new_y)
            times.append(time.perf_counter() - start)
        partial[f"{n_new}_trials_ms"] = float(np.median(times) * 1e3)
    return {"model": name, "parameters": sum(p.numel() for p in model.module_.parameters()),
            "predict_ms": _percentiles_ms(predict_s),
            "predict_cpu_ms": _percentiles_ms(predict_cpu_s), "calls": calls,
            "partial_fit_ms": partial, "n_steps": model.n_steps, "fit_s": fit_s,
            "fit": {"trials": 30, "epochs": model.n_epochs}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="single-trial predicts timed")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [bench_model(name, args.calls) for name in args.models]
    if args.json:
        print(json.dumps({"torch_decoders": rows, "threads": torch.get_num_threads(),
                          "torch": torch.__version__}))
        return 0
    print(f"{N_CHANNELS} ch x {N_TIMES} samples ({FS:g} Hz), 1 torch thread, torch "
          f"{torch.__version__}")
    print(f"{'model':>7} {'params':>7} {'predict p50 ms':>15} {'p99 ms':>7} {'max ms':>7} "
          f"{'(cpu p50':>9} {'p99)':>6} {'partial_fit 1 trial ms':>23} {'10 trials ms':>12} "
          f"{'fit s':>6}")
    for r in rows:
        p, c, pf = r["predict_ms"], r["predict_cpu_ms"], r["partial_fit_ms"]
        print(f"{r['model']:>7} {r['parameters']:>7} {p['p50']:>15.3f} {p['p99']:>7.3f} "
              f"{p['max']:>7.2f} {c['p50']:>9.3f} {c['p99']:>6.3f} {pf['1_trials_ms']:>23.1f} "
              f"{pf['10_trials_ms']:>12.1f} {r['fit_s']:>6.2f}")
    print(f"(predict: {rows[0]['calls']} calls; partial_fit: median of 5, n_steps="
          f"{rows[0]['n_steps']}, replay_ratio 0.5; fit: 30 trials x 60 epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
