"""Does co-adaptation recover what each simulator drift preset costs? (issue 5 targets)

For every drift preset and seed, ``bci evaluate --simulate PRESET`` is run in
process (the same trials, decoder and arms as the command) and the adaptive
arm's figures are set against the static decoder and the oracle:

* recovery fraction ``(adaptive − static) / (oracle − static)`` after the onset
  (target ≥ 0.9; undefined when the drift costs the static decoder less than
  2 points, i.e. there is nothing to recover);
* τ90: trials after the onset until the rolling accuracy stays ≥ 0.9 × the
  accuracy before it (target ≤ 40);
* the stationary control: adapting loses at most 1 point.

Figures are pooled over seeds: accuracies after the onset are averaged before
the recovery fraction is taken, and τ90 is the median over seeds.

Run::

    .venv/bin/python bench/drift_recovery.py                     # mi, every preset, 3 seeds
    .venv/bin/python bench/drift_recovery.py --paradigm ssvep --seeds 1 2
    .venv/bin/python bench/drift_recovery.py --presets session-jump --adapt recenter --json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bci_runtime.decoders import catalog, metrics
from bci_runtime.decoders.evaluate import evaluate
from bci_runtime.decoders.simulated_trials import recommended, simulated_trials
from bci_runtime.realtime import single_threaded_math
from bci_runtime.simulators.drift import PRESETS


def run_preset(paradigm: str, preset: str, seeds: list[int], adapt: str,
               decoder: str) -> list[dict]:
    """Pooled figures of one preset over ``seeds``, one row per strategy."""
    per_seed = []
    for seed in seeds:
        sim = simulated_trials(paradigm, preset, seed=seed)
        entry = catalog.get(decoder, paradigm)
        context = catalog.DecoderContext(sfreq=sim.train.sfreq,
                                         classes=sorted(set(sim.train.y.tolist())),
                                         freqs=sim.freqs, seed=seed,
                                         n_channels=sim.train.X.shape[1])
        per_seed.append(evaluate(lambda: entry.make(context), sim.train, sim.test, adapt,
                                 drift_onset_s=sim.drift_onset_s))
    rows = []
    for name in per_seed[0].adaptive:
        figures = {k: [] for k in ("static_before", "static_after", "adaptive_before",
                                   "adaptive_after", "oracle_after", "tau90")}
        for result in per_seed:
            onset, arm = result.drift_onset, result.arms[f"adaptive:{name}"]
            static = result.arms["static"]
            figures["static_before"].append(float(static.correct[:onset].mean()))
            figures["static_after"].append(static.scores["accuracy_after_onset"])
            figures["adaptive_before"].append(float(arm.correct[:onset].mean()))
            figures["adaptive_after"].append(arm.scores["accuracy_after_onset"])
            figures["oracle_after"].append(result.arms["oracle"].scores["accuracy_after_onset"])
            figures["tau90"].append(arm.scores["tau90_trials"])
        mean = {k: round(float(np.mean(v)), 4) for k, v in figures.items() if k != "tau90"}
        onset = per_seed[0].drift_onset
        curves = {arm: np.mean([r.arms[arm].correct for r in per_seed], axis=0)
                  for arm in (f"adaptive:{name}", "static", "oracle")}
        rows.append({
            "preset": preset, "strategy": name, **mean,
            "recovery_fraction": metrics.recovery_fraction(
                mean["adaptive_after"], mean["static_after"], mean["oracle_after"]),
            "tau90": metrics.tau90(curves[f"adaptive:{name}"], onset),
            "tau90_static": metrics.tau90(curves["static"], onset),
            "tau90_oracle": metrics.tau90(curves["oracle"], onset),
            "tau90_per_seed": figures["tau90"],
            "stationary_loss": round(mean["static_after"] - mean["adaptive_after"], 4),
            "seeds": seeds,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paradigm", choices=("mi", "ssvep"), default="mi")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--adapt", default="recommended",
                        help="strategies as in bci evaluate --adapt (default: the paradigm's "
                        "recommended one)")
    parser.add_argument("--decoder", help="decoder name (default: the recommended one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    single_threaded_math()
    decoder, adapt = recommended(args.paradigm)
    adapt = adapt if args.adapt == "recommended" else args.adapt
    results = [row for p in args.presets
               for row in run_preset(args.paradigm, p, args.seeds, adapt,
                                     args.decoder or decoder)]
    if args.json:
        print(json.dumps({"paradigm": args.paradigm, "seeds": args.seeds, "presets": results}))
        return
    print(f"{args.paradigm}, seeds {args.seeds}: accuracy after the onset (mean over seeds); "
          "tau90 of the mean learning curve (static, oracle for comparison)")
    print(f"  {'preset':18s} {'strategy':30s} {'static':>6s} {'adapt':>6s} {'oracle':>6s} "
          f"{'recov':>6s} {'tau90':>6s} {'static':>6s} {'oracle':>6s}")
    for r in results:
        rec = "n/a" if r["recovery_fraction"] is None else f"{r['recovery_fraction']:.2f}"
        print(f"  {r['preset']:18s} {r['strategy']:30s} {r['static_after']:6.3f} "
              f"{r['adaptive_after']:6.3f} {r['oracle_after']:6.3f} {rec:>6s} "
              f"{str(r['tau90']):>6s} {str(r['tau90_static']):>6s} "
              f"{str(r['tau90_oracle']):>6s}")

if __name__ == "__main__":
    main()
