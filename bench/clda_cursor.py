"""Closed-loop decoder adaptation in the simulated center-out cursor task.

Pseudo-online, on the simulated clock (as fast as the CPU allows), every seed
fixed: the simulator encodes what the simulated user intends, the decoder
decodes it bin by bin, the cursor moves with the decoded velocity, the user
sees it and steers; every second the bins just decoded are labelled with the
intention (ReFIT: decoded velocity rotated toward the target, zero on it) and
given to the CLDA strategy.

Sections:

``random``
    Starting from a random seed decoder (:func:`random_kalman_seed`: random
    observation model, only the features' mean and covariance are known):
    targets per minute for SmoothBatch, RML and the static random decoder, over
    13 simulated minutes (Orsborn et al. 2012: SmoothBatch reached > 8 targets
    per minute within 13 minutes from any seed).
``drift``
    A Kalman decoder calibrated on a 60 s open-loop block, then the simulator's
    tuning-drift preset (onset 2 min into closed loop, 60 s ramp): static vs
    adaptive decoders, targets per minute and R² of decoded vs intended velocity.
``ecog``
    The ``random`` section on 64-channel ECoG (1 kHz) with causal high-gamma
    log-power features in 50 ms bins.

Counts: ``all`` counts every acquired target (outer ones and the returns to the
center), ``outer`` only the center-out reaches.

Run::

    .venv/bin/python bench/clda_cursor.py                 # random + drift, population
    .venv/bin/python bench/clda_cursor.py --section ecog
    .venv/bin/python bench/clda_cursor.py --seeds 1 2 3 --section random
    .venv/bin/python bench/clda_cursor.py --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bci_runtime.decoders.clda import RML, RidgePartialFit, SmoothBatch, random_kalman_seed
from bci_runtime.decoders.continuous import KalmanDecoder, RidgeDecoder
from bci_runtime.decoders.cursor_loop import (
    CursorLoopResult,
    HighGammaPower,
    record_open_loop,
    run_cursor_loop,
)
from bci_runtime.simulators.paradigms import make_generator

DT = 0.05  # 50 ms bins
TASK_SPEED = 0.4  # the task's nominal cursor speed (the simulated user's default)
TARGET_SIZE = 0.15


def population(seed: int, drift: dict | None = None) -> Any:
    return make_generator("population", {"n_channels": 96, "srate": 1 / DT}, seed=seed,
                          drift=drift)


def ecog(seed: int) -> tuple[Any, HighGammaPower, int]:
    gen = make_generator("ecog", {"n_channels": 64, "srate": 1000}, seed=seed)
    return gen, HighGammaPower(1000.0, 64), int(round(DT * 1000))


def random_arms(seed: int, minutes: float, paradigm: str = "population",
                arms: tuple[str, ...] = ("static", "smoothbatch", "rml")
                ) -> dict[str, CursorLoopResult]:
    """Each arm: a fresh session (same seed), 30 s of open-loop activity for the seed's
    feature statistics, then ``minutes`` of closed loop from the random seed."""
    out = {}
    for arm in arms:
        if paradigm == "ecog":
            gen, features, bin_samples = ecog(seed)
        else:
            gen, features, bin_samples = population(seed), None, 1
        X, _ = record_open_loop(gen, 30.0, bin_samples=bin_samples, features=features)
        decoder = random_kalman_seed(X, speed=TASK_SPEED, dt=DT, rng=np.random.default_rng(seed))
        strategy = make_strategy(arm, decoder)
        out[arm] = run_cursor_loop(gen, decoder, minutes * 60, strategy=strategy,
                                   target_radius=TARGET_SIZE, bin_samples=bin_samples,
                                   features=features)
    return out


def make_strategy(arm: str, decoder: Any) -> Any:
    name = arm.split("+")[0]
    if name == "smoothbatch":
        return SmoothBatch(half_life=60.0, batch_s=20.0, dt=DT).fit(decoder)
    if name == "rml":
        return RML(half_life=60.0, dt=DT).fit(decoder)
    if name == "ridge-partial-fit":
        return RidgePartialFit(half_life=60.0, dt=DT).fit(decoder)
    return None


def drift_arms(seed: int, rho: float, minutes: float = 9.0) -> dict[str, CursorLoopResult]:
    """Calibrate 60 s open loop, then closed loop with tuning drift from 2 min in."""
    drift = {"scenario": "tuning-drift", "onset_s": 180.0, "ramp_s": 60.0, "rho": rho}
    arms = {
        "kalman static": ("kalman", None, "refit", None),
        "kalman smoothbatch": ("kalman", "smoothbatch", "refit", None),
        "kalman rml": ("kalman", "rml", "refit", None),
        "kalman smoothbatch retrospective": ("kalman", "smoothbatch", "retrospective", None),
        "kalman smoothbatch task-speed": ("kalman", "smoothbatch", "refit", TASK_SPEED),
        "kalman rml task-speed": ("kalman", "rml", "refit", TASK_SPEED),
        "ridge static": ("ridge", None, "refit", None),
        "ridge partial_fit task-speed": ("ridge", "ridge-partial-fit", "refit", TASK_SPEED),
    }
    out = {}
    for name, (kind, strat, intention, speed) in arms.items():
        gen = population(seed, drift)
        X, V = record_open_loop(gen, 60.0)
        decoder = (KalmanDecoder(shrinkage=0.05) if kind == "kalman"
                   else RidgeDecoder(alpha=100.0)).fit(X, V)
        strategy = make_strategy(strat, decoder) if strat else None
        out[name] = run_cursor_loop(gen, decoder, minutes * 60, strategy=strategy,
                                    target_radius=TARGET_SIZE, intention=intention,
                                    intended_speed=speed)
    return out


def first_minute_above(counts: np.ndarray, threshold: float = 8.0) -> int | None:
    """1-based minute in which the count first exceeds ``threshold``."""
    above = np.flatnonzero(counts > threshold)
    return int(above[0]) + 1 if above.size else None


def summary(results: dict[str, CursorLoopResult]) -> dict[str, dict[str, Any]]:
    return {name: {"targets_per_min": r.targets_per_minute().tolist(),
                   "outer_per_min": r.targets_per_minute(outer_only=True).tolist(),
                   "r2_per_min": np.round(r.r2_per_minute(), 3).tolist(),
                   "first_minute_above_8": first_minute_above(r.targets_per_minute()),
                   "first_minute_above_8_outer": first_minute_above(
                       r.targets_per_minute(outer_only=True)),
                   "updates": len(r.update_s), "decoder_changes": r.n_changes}
            for name, r in results.items()}


def drift_summary(table: dict[str, dict[str, Any]]) -> None:
    """Mean over the closed-loop minutes before the onset (1-2) and after the ramp (5-9)."""
    print(f"{'':<34}{'targets/min before':>19}{'after':>7}{'R2 before':>11}{'after':>7}")
    for name, v in table.items():
        t, r2 = np.array(v["targets_per_min"]), np.array(v["r2_per_min"])
        print(f"{name:<34}{t[:2].mean():>19.1f}{t[4:].mean():>7.1f}{r2[:2].mean():>11.2f}"
              f"{r2[4:].mean():>7.2f}")


def print_table(title: str, table: dict[str, dict[str, Any]],
                first_above: bool = True) -> None:
    print(f"\n== {title}")
    n = max(len(v["targets_per_min"]) for v in table.values())
    width = max(len(k) for k in table) + 2
    print(" " * (width + 7) + " ".join(f"{m + 1:>5d}" for m in range(n)) + "   (minute)")
    for name, v in table.items():
        print(f"{name:<{width}}all    " + " ".join(f"{c:>5d}" for c in v["targets_per_min"]))
        print(f"{'':<{width}}outer  " + " ".join(f"{c:>5d}" for c in v["outer_per_min"]))
        print(f"{'':<{width}}R2     " + " ".join(f"{c:>5.2f}" for c in v["r2_per_min"]))
        if first_above:
            print(f"{'':<{width}}first minute > 8/min: all {v['first_minute_above_8']}, "
                  f"outer {v['first_minute_above_8_outer']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=["random", "drift", "ecog", "all"], default=None,
                        help="default: random and drift")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--minutes", type=float, default=13.0)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.91, 0.5],
                        help="PD correlation of the tuning drift (0.91: one day; 0.5: ~a week)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sections = (["random", "drift"] if args.section is None
                else ["random", "drift", "ecog"] if args.section == "all" else [args.section])
    report: dict[str, Any] = {}
    for seed in args.seeds:
        for section in sections:
            t0 = time.perf_counter()
            if section == "random":
                tables = {f"random seed, population, seed {seed}":
                          summary(random_arms(seed, args.minutes))}
            elif section == "ecog":
                tables = {f"random seed, ECoG, seed {seed}":
                          summary(random_arms(seed, args.minutes, "ecog"))}
            else:
                tables = {f"tuning drift rho={rho} (onset minute 2, ramp 1 min), seed {seed}":
                          summary(drift_arms(seed, rho)) for rho in args.rho}
            for title, table in tables.items():
                report[title] = table
                if not args.json:
                    print_table(title, table, first_above=section != "drift")
                    if section == "drift":
                        drift_summary(table)
            if not args.json:
                print(f"({section}: {time.perf_counter() - t0:.1f} s wall)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
