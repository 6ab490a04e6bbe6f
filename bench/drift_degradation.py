"""How much each drift preset degrades a static decoder, per paradigm.

A decoder is trained on the stretch before the drift starts and tested on the
stretch after it has fully set in; the same decoder on the same seed without
drift is the reference. A drift draws from its own random generator, so the run
with and the run without it share every other draw (trial order, noise): the
difference is the drift's doing.

* motor imagery (16 ch, 250 Hz): CSP + LDA on 0.5-2.5 s after each cue, accuracy;
* population (96 units, 50 Hz bins): least-squares velocity decoder from counts, R²;
* ECoG (64 ch, 1 kHz): least-squares velocity decoder from high-gamma log power
  in 50 ms bins, R².

Run::

    .venv/bin/python bench/drift_degradation.py            # table
    .venv/bin/python bench/drift_degradation.py --json     # one JSON object
    .venv/bin/python bench/drift_degradation.py --seeds 11 12 13
"""

from __future__ import annotations

import argparse
import json

import mne
import numpy as np
from mne.decoding import CSP
from scipy import signal as sps
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline

from bci_runtime.simulators.paradigms import make_generator

PRESETS = ("stationary", "electrode-shift", "impedance-drift", "channel-dropout", "tuning-drift",
           "fatigue", "session-jump", "day-to-day")
ONSET_S, RAMP_S = 400.0, 60.0


def _run(paradigm: str, params: dict, seed: int, scenario: str, seconds: float, block: int):
    gen = make_generator(paradigm, params, seed=seed,
                         drift={"scenario": scenario, "onset_s": ONSET_S, "ramp_s": RAMP_S,
                                "day_s": 30.0, "days": 3})
    blocks = [gen.next_block(block) for _ in range(int(seconds * gen.srate / block))]
    data = np.concatenate([b.data for b in blocks])
    truth = np.concatenate([b.truth for b in blocks])
    markers = [m for b in blocks for m in b.markers]
    return gen, data, truth, markers


def motor_imagery(seed: int, scenario: str) -> float:
    """Accuracy after the drift of CSP+LDA trained before it."""
    gen, data, _, markers = _run("mi", {"n_channels": 16, "srate": 250}, seed, scenario, 800, 25)
    fs = gen.srate
    sos = sps.butter(4, [8, 30], btype="bandpass", fs=fs, output="sos")
    x = sps.sosfilt(sos, data, axis=0)
    cues = [(label[4:], i) for label, i in markers
            if label.startswith("cue/") and i + int(2.5 * fs) <= len(x)]
    epochs = np.stack([x[i + int(0.5 * fs):i + int(2.5 * fs)].T for _, i in cues])
    y = np.array([c for c, _ in cues])
    at = np.array([i for _, i in cues]) / fs
    train, test = at < ONSET_S, at >= ONSET_S + RAMP_S
    clf = make_pipeline(CSP(n_components=4), LinearDiscriminantAnalysis())
    return float(clf.fit(epochs[train], y[train]).score(epochs[test], y[test]))


def _velocity_r2(features: np.ndarray, velocity: np.ndarray, t: np.ndarray) -> float:
    train, test = t < ONSET_S, t >= ONSET_S + RAMP_S
    design = np.c_[features, np.ones(len(features))]
    coef, *_ = np.linalg.lstsq(design[train], velocity[train], rcond=None)
    residual = velocity[test] - design[test] @ coef
    return float(1.0 - residual.var(axis=0).sum() / velocity[test].var(axis=0).sum())


def population(seed: int, scenario: str) -> float:
    """R² after the drift of a linear velocity decoder trained before it."""
    gen, counts, truth, _ = _run("population", {"n_channels": 96, "srate": 50}, seed, scenario,
                                 800, 1)
    # smooth over 3 bins (60 ms): what a Kalman filter would do, simply
    smooth = sps.lfilter(np.ones(3) / 3, 1, counts, axis=0)
    t = np.arange(len(counts)) / gen.srate
    return _velocity_r2(smooth, truth[:, :2], t)


def ecog(seed: int, scenario: str) -> float:
    """R² after the drift of a linear velocity decoder on high-gamma log power."""
    gen, data, truth, _ = _run("ecog", {"n_channels": 64, "srate": 1000}, seed, scenario, 800, 50)
    fs, step = gen.srate, 50
    sos = sps.butter(4, [70, 150], btype="bandpass", fs=fs, output="sos")
    hg = sps.sosfilt(sos, data, axis=0) ** 2
    n = len(hg) // step
    power = np.log(hg[: n * step].reshape(n, step, -1).mean(axis=1) + 1e-30)
    power = sps.lfilter(np.ones(4) / 4, 1, power, axis=0)  # 200 ms smoothing
    velocity = truth[: n * step, :2].reshape(n, step, 2).mean(axis=1)
    t = np.arange(n) * step / fs
    return _velocity_r2(power, velocity, t)


PARADIGMS = {"mi (CSP+LDA accuracy)": motor_imagery, "population (velocity R²)": population,
             "ecog (velocity R²)": ecog}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    mne.set_log_level("ERROR")
    results: dict[str, dict[str, float]] = {}
    for name, measure in PARADIGMS.items():
        scores = {p: float(np.mean([measure(s, p) for s in args.seeds])) for p in PRESETS}
        results[name] = {p: round(v, 3) for p, v in scores.items()}
        if not args.json:
            base = scores["stationary"]
            print(f"\n{name}, seeds {args.seeds}: static decoder after the drift "
                  f"(stationary {base:.3f})")
            for p in PRESETS[1:]:
                print(f"  {p:16s} {scores[p]:.3f}   change {scores[p] - base:+.3f}")
    if args.json:
        print(json.dumps({"seeds": args.seeds, "onset_s": ONSET_S, "ramp_s": RAMP_S,
                          "scores": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
