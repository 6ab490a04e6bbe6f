"""Speed of the motor-imagery decoders: predict latency per trial, and online updates.

64-channel epochs of 2 s at 160 Hz: PhysioNet EEGMMIDB S001 (runs 4 and 8 to
fit, run 12 to time; the harness's causal 1-40 Hz band-pass) when
``../shared/data`` has it, else seeded synthetic epochs of the same shape.

* ``predict``: ``predict_proba`` of one trial, validated, band-passed,
  covariance, features, head (what the decoder node does per window); for the
  co-adaptive models, through :class:`CoAdaptiveDecoder` as served;
* ``update``: one trial given to ``partial_fit`` (the background worker's job):
  the Sherman-Morrison LDA step, the MDM geodesic step, the tangent-space
  re-centring (``ts-recenter``), the signal re-centring (``recenter``,
  ``euclidean``) and, with a label, ``recenter-rotate``.

Targets: prediction <= 0.5 ms p99 and update <= 1 ms median for the covariance
decoders. BLAS/OpenMP run single-threaded, as ``bci`` runs them
(``bci_runtime.realtime.single_threaded_math``). Wall-clock percentiles in ms,
plus the median CPU time of the calling thread; compare runs on the same machine.

Run::

    .venv/bin/python bench/decoder_speed_mi.py
    .venv/bin/python bench/decoder_speed_mi.py --repeats 2000 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from timing import percentiles, timed

from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategy
from bci_runtime.decoders.csp import CSPLDA, FilterBankCSP
from bci_runtime.decoders.riemann import MDM, TangentSpaceLR
from bci_runtime.realtime import single_threaded_math

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "physionet_eegmmidb" / "S001"
SFREQ = 160.0


def load_runs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(X, y) to fit and (Xt, yt) to time, shape (n, 64, 320); real data when present."""
    if (DATA / "S001R04.edf").is_file():
        import mne
        from scipy import signal as sps

        def run(r: int) -> tuple[np.ndarray, np.ndarray]:
            raw = mne.io.read_raw_edf(DATA / f"S001R{r:02d}.edf", preload=True, verbose="ERROR")
            sos = sps.butter(4, [1.0, 40.0], btype="bandpass", fs=SFREQ, output="sos")
            data = sps.sosfilt(sos, raw.get_data(), axis=1)
            X, y = [], []
            for onset, label in zip(raw.annotations.onset, raw.annotations.description):
                start = int(round((onset + 0.5) * SFREQ))
                if label in ("T1", "T2") and start + 320 <= data.shape[1]:
                    X.append(data[:, start:start + 320])
                    y.append(label)
            return np.asarray(X), np.asarray(y)

        parts = [run(4), run(8)]
        Xt, yt = run(12)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                Xt, yt, "PhysioNet S001 R04+R08 / R12")
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(64, 64)) + 4 * np.eye(64)
    y = np.array(["T1", "T2"] * 25)
    S = rng.normal(size=(50, 64, 320))
    S[y == "T1", 0] *= 2.0
    S[y == "T2", 1] *= 2.0
    X = 1e-5 * (mixing @ S)
    return X[:30], y[:30], X[30:], y[30:], "synthetic (64 ch, 320 samples)"




def run(repeats: int, rotate_repeats: int) -> dict[str, Any]:
    X, y, Xt, yt, source = load_runs()
    trials = [Xt[i:i + 1] for i in range(len(Xt))]
    labels = [yt[i:i + 1] for i in range(len(yt))]

    def one(i: int) -> np.ndarray:
        return trials[i % len(trials)]

    def label(i: int) -> np.ndarray:
        return labels[i % len(labels)]

    rows: dict[str, Any] = {"data": source, "predict": {}, "update": {}}
    decoders = {
        "ts-lr": TangentSpaceLR(sfreq=SFREQ),
        "ts-lr + ts-recenter (served)": CoAdaptiveDecoder(
            TangentSpaceLR(sfreq=SFREQ), [make_strategy("ts-recenter")]),
        "ts-lr + recenter (served)": CoAdaptiveDecoder(
            TangentSpaceLR(sfreq=SFREQ), [make_strategy("recenter")]),
        "mdm": MDM(sfreq=SFREQ),
        "csp-lda": CSPLDA(sfreq=SFREQ),
        "fbcsp (6 bands)": FilterBankCSP(sfreq=SFREQ),
    }
    for name, dec in decoders.items():
        dec.fit(X, y)
        rows["predict"][name] = percentiles(timed(lambda i, d=dec: d.predict_proba(one(i)),
                                                  repeats))

    csp = decoders["csp-lda"]
    feats = [csp.features(t) for t in trials]
    head = csp.head_
    rows["update"]["AdaptiveLDA.partial_fit (Sherman-Morrison, 4 features)"] = percentiles(
        timed(lambda i: head.partial_fit(feats[i % len(feats)], label(i)), repeats))
    rows["update"]["csp-lda partial_fit (features + LDA step)"] = percentiles(
        timed(lambda i: csp.partial_fit(one(i), label(i)), repeats))
    mdm = decoders["mdm"]
    rows["update"]["mdm partial_fit (geodesic step of a class mean)"] = percentiles(
        timed(lambda i: mdm.partial_fit(one(i), label(i)), repeats))
    ts = decoders["ts-lr"]
    rows["update"]["ts-lr update_reference (ts-recenter step)"] = percentiles(
        timed(lambda i: ts.update_reference(one(i), rate=0.03), repeats))
    for name in ("recenter", "euclidean"):
        strategy = make_strategy(name).fit(X, y)
        rows["update"][f"{name} strategy update (64 ch, broadband SCM)"] = percentiles(
            timed(lambda i, s=strategy: s.update(one(i)), repeats))
    band = make_strategy("recenter", sfreq=SFREQ, l_freq=8.0, h_freq=30.0).fit(X, y)
    rows["update"]["recenter strategy update (8-30 Hz reference)"] = percentiles(
        timed(lambda i: band.update(one(i)), repeats))
    rotate = make_strategy("recenter-rotate").fit(X, y)
    rows["update"]["recenter-rotate update with a label (20 descent steps)"] = percentiles(
        timed(lambda i: rotate.update(one(i), label(i)), rotate_repeats, warmup=2))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1000, help="timed calls per row")
    parser.add_argument("--rotate-repeats", type=int, default=30,
                        help="timed calls of the (slow) recenter-rotate update")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    single_threaded_math()
    rows = run(args.repeats, args.rotate_repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"data: {rows['data']}; one trial = 64 channels x 320 samples")
    for section in ("predict", "update"):
        print(f"\n{section:<58} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cpu ms':>7}")
        for name, r in rows[section].items():
            print(f"{name:<58} {r['n']:>5} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                  f"{r['max_ms']:>8.3f} {r['cpu_p50_ms']:>7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
