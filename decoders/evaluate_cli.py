"""``bci evaluate``: pseudo-online, causal evaluation of a decoder on recordings or a simulation.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bci_runtime.errors import ConfigError
from bci_runtime.progress import progress_bars

EXAMPLES = (
    "  bci evaluate --paradigm mi --train S001R04.edf S001R08.edf --test S001R12.edf \\\n"
    "      --events T1=left,T2=right\n"
    "  bci evaluate --paradigm ssvep --train day1_raw.fif --test day2_raw.fif \\\n"
    "      --events 1=rest,2=13Hz,3=21Hz,4=17Hz --freqs 13,21,17 --tmin 2 --tmax 5\n"
    "  bci evaluate --paradigm mi --train a.xdf --test b.xdf --events 1=left,2=right \\\n"
    "      --decoder csp-lda --adapt recenter --report report/ --json\n"
    "  bci evaluate --simulate session-jump --paradigm mi --seed 3\n"
    "  bci evaluate --paradigm continuous --train day1.xdf --test day2.xdf --target vx,vy\n"
    "  bci evaluate --simulate tuning-drift --paradigm continuous --minutes 9\n"
    "\n"
    "FILES are anything `bci replay` reads (FIF, EDF/BDF, GDF, BrainVision, EEGLAB, XDF);\n"
    "events come from annotations, a stim channel, an XDF marker stream or an MNE events\n"
    "file beside the recording (X_raw.fif -> X-eve.fif). Each test trial is predicted with\n"
    "the model of that moment, then the model may learn from it: static (trained once),\n"
    "adaptive (one arm per strategy) and oracle (recalibrated on the most recent labelled\n"
    "trials) are compared side by side.\n"
    "\n"
    "--paradigm continuous decodes kinematics bin by bin (50 ms bins of causal band power,\n"
    "or bin means for spike counts): the target is a kinematics stream of the recording or\n"
    "named channels (--target); adaptive arms update every second of test data with the\n"
    "true target (smoothbatch, rml: kalman; ridge-partial-fit: ridge), the oracle refits on\n"
    "the latest bins. Scores: R2 and correlation. With --simulate it runs the closed-loop\n"
    "cursor task (ReFIT labels; the oracle refits on the true intention).\n"
    "\n"
    "exit codes: 0 done; 2 bad options, an unreadable file or events that match nothing;\n"
    "1 a decoder failed.\n")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` to ``bci``'s subcommands."""
    from bci_runtime.decoders.catalog import PARADIGMS

    p = add(sub, "evaluate", "Evaluate a decoder pseudo-online on your recordings or on a "
            "simulated drift: static vs adaptive vs oracle.", EXAMPLES)
    p.add_argument("--paradigm", choices=PARADIGMS, default="mi",
                   help="mi (motor imagery), ssvep, or continuous (default mi)")
    p.add_argument("--train", nargs="+", type=Path, metavar="FILE", default=[],
                   help="recordings to train on, in time order")
    p.add_argument("--test", nargs="+", type=Path, metavar="FILE", default=[],
                   help="recordings to test on, in time order")
    p.add_argument("--events", metavar="CODE=LABEL,...",
                   help="event codes to classes, e.g. T1=left,T2=right")
    p.add_argument("--tmin", type=float, help="epoch start after each event, s "
                   "(default: mi 0.5, ssvep 2)")
    p.add_argument("--tmax", type=float, help="epoch end after each event, s "
                   "(default: mi 2.5, ssvep 5)")
    p.add_argument("--freqs", metavar="F,F,...",
                   help="SSVEP stimulation frequencies (Hz), one per non-rest class in "
                   "--events order")
    p.add_argument("--decoder", metavar="NAME", help="decoder (see `bci evaluate --list`)")
    p.add_argument("--adapt", metavar="STRATEGY|none|all",
                   help="co-adaptation strategies, one adaptive arm each, joined by commas; "
                   "a+b stacks two in one arm, name@N sets a half-life of N trials (default: "
                   "all that apply; with --simulate the recommended one)")
    p.add_argument("--half-life", type=float, metavar="TRIALS",
                   help="override each strategy's half-life (trials; seconds with --paradigm "
                   "continuous)")
    p.add_argument("--target", metavar="STREAM|CH,CH,...",
                   help="--paradigm continuous: the kinematics to decode, a stream's name or "
                   "channel names (default: the recording's one kinematics stream)")
    p.add_argument("--band", metavar="LO,HI|none",
                   help="--paradigm continuous: band of the log-power features, Hz (default: "
                   "70,150 for ECoG/sEEG, 8,30 for EEG; none: bin means, e.g. spike counts)")
    p.add_argument("--minutes", type=float,
                   help="--simulate --paradigm continuous: minutes of closed loop (default 9)")
    p.add_argument("--simulate", metavar="PRESET",
                   help="evaluate on the simulator with this drift preset instead of files")
    p.add_argument("--seed", type=int, default=1, help="simulator and decoder seed")
    p.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report here")
    p.add_argument("--list", action="store_true", help="list decoders and strategies")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bci evaluate``; returns the exit code."""
    from bci_runtime.decoders import catalog
    from bci_runtime.decoders.adaptation import strategy_names
    from bci_runtime.decoders.evaluate import evaluate

    if args.list:
        return _list(args, catalog, strategy_names())
    if args.paradigm == "continuous":  # kinematics bin by bin: its own evaluation
        from bci_runtime.decoders import evaluate_continuous

        return evaluate_continuous.run(args)
    decoder, adapt = args.decoder or catalog.default_decoder(args.paradigm), args.adapt or "all"
    if args.simulate:
        from bci_runtime.decoders.simulated_trials import recommended

        if args.train or args.test:
            raise ConfigError("--simulate replaces --train/--test",
                              hint="give either --simulate PRESET or --train/--test files")
        # the decoder and strategy the drift targets are held to, unless asked otherwise
        best_decoder, best_adapt = recommended(args.paradigm)
        decoder, adapt = args.decoder or best_decoder, args.adapt or best_adapt
    entry = catalog.get(decoder, args.paradigm)  # an unknown name fails before any loading
    if args.simulate:
        from bci_runtime.decoders.simulated_trials import simulated_trials

        sim = simulated_trials(args.paradigm, args.simulate, seed=args.seed)
        train, test, onset_s, events = sim.train, sim.test, sim.drift_onset_s, sim.events
        freqs = sim.freqs
        source = f"simulator ({args.paradigm}, {args.simulate}, seed {args.seed})"
    else:
        train, test, events, freqs = _file_trials(args)
        onset_s, source = None, "files"
    classes = sorted(set(train.y.tolist()))
    context = catalog.DecoderContext(sfreq=train.sfreq, classes=classes, freqs=freqs,
                                     seed=args.seed, n_channels=train.X.shape[1])
    # progress bars only for a person at a terminal: logs and pipes get the table alone
    with progress_bars(enabled=not args.json) as progress:
        result = evaluate(lambda: entry.make(context), train, test, adapt,
                          drift_onset_s=onset_s, half_life=args.half_life, progress=progress)
    out = {"ok": True, "paradigm": args.paradigm, "decoder": entry.name, "source": source,
           "events": events, **result.as_dict()}
    if args.report is not None:
        from bci_runtime.decoders.report import write_report

        out["report"] = str(write_report(args.report, result, train, test, entry.name, out))
    if args.json:
        print(json.dumps(out))
    else:
        _print_table(out, result)
    return 0


def _file_trials(args: argparse.Namespace) -> tuple[Any, Any, dict[str, str], list[float]]:
    from bci_runtime.decoders.trials import (
        PARADIGM_BANDS,
        PARADIGM_WINDOWS,
        Trials,
        cut_trials,
        parse_events,
    )

    if not args.train or not args.test:
        raise ConfigError("give --train FILE... and --test FILE... (or --simulate PRESET)")
    if not args.events:
        raise ConfigError("--events is required with files",
                          hint="map the recording's event codes to classes, e.g. "
                          "--events T1=left,T2=right")
    events = parse_events(args.events)
    tmin_default, tmax_default = PARADIGM_WINDOWS[args.paradigm]
    tmin = tmin_default if args.tmin is None else args.tmin
    tmax = tmax_default if args.tmax is None else args.tmax
    band = PARADIGM_BANDS[args.paradigm]
    freqs = _freqs(args.freqs, events) if args.paradigm == "ssvep" else []
    parts = {"train": [], "test": []}
    for role, files in (("train", args.train), ("test", args.test)):
        for path in files:
            rec = _continuous(path)
            parts[role].append(cut_trials(rec, events, tmin, tmax, band))
    return (Trials.concatenate(parts["train"]), Trials.concatenate(parts["test"]), events,
            freqs)


def _freqs(text: str | None, events: dict[str, str]) -> list[float]:
    if not text:
        raise ConfigError("--paradigm ssvep needs --freqs (one frequency per flickering class)",
                          hint="e.g. --freqs 13,21,17 for --events 1=rest,2=13Hz,3=21Hz,4=17Hz")
    try:
        freqs = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--freqs '{text}' is not a list of numbers",
                          hint="e.g. --freqs 13,21,17") from None
    if not freqs or any(not 0 < f < 200 for f in freqs):
        raise ConfigError(f"--freqs {text}: frequencies must be in (0, 200) Hz")
    return freqs


def _continuous(path: Path) -> Any:
    """A recording file as the continuous signal and its events (warnings to stderr)."""
    from bci_runtime.decoders.trials import load_continuous

    rec, warnings = load_continuous(path)
    for w in warnings:
        print(f"bci: warning: {path.name}: {w}", file=sys.stderr)
    return rec


def _list(args: argparse.Namespace, catalog: Any, strategies: Sequence[str]) -> int:
    decoders = [{"name": e.name, "paradigm": e.paradigm, "about": e.about,
                 "default": catalog.default_decoder(e.paradigm) == e.name}
                for e in catalog.entries()]
    from bci_runtime.decoders.evaluate_continuous import CONTINUOUS_STRATEGIES

    continuous = list(CONTINUOUS_STRATEGIES)
    if args.json:
        print(json.dumps({"ok": True, "decoders": decoders, "strategies": list(strategies),
                          "continuous_strategies": continuous}))
        return 0
    print("decoders:")
    for d in decoders:
        star = " (default)" if d["default"] else ""
        print(f"  {d['paradigm']:10s} {d['name']:14s} {d['about']}{star}")
    print("strategies (mi, ssvep; stack with a+b, half-life with name@N): "
          + ", ".join(strategies))
    print("strategies (continuous): " + ", ".join(continuous))
    return 0


def _print_table(out: dict[str, Any], result: Any) -> None:
    print(f"{out['decoder']} on {out['source']}: {out['n_train']} training trials, "
          f"{out['n_test']} test trials, classes {', '.join(out['classes'])}")
    print(f"  {'arm':28s} {'accuracy':>8s} {'kappa':>7s} {'ITR b/min':>9s}")
    for name, arm in result.arms.items():
        s = arm.scores
        extra = ""
        if "recovery_fraction" in s:
            extra = (f"   tau90 {s['tau90_trials']}  recovery {s['recovery_fraction']}  "
                     f"regret {s['regret']}")
        print(f"  {name:28s} {s['accuracy']:8.3f} {s['kappa']:7.3f} "
              f"{s['itr_bits_min']:9.2f}{extra}")
    for name, arm in result.arms.items():
        if arm.failed_updates:
            print(f"  ({name}: {len(arm.failed_updates)} update(s) refused, the model kept "
                  f"serving; first: {arm.failed_updates[0]})")
    for name, why in out.get("strategies_skipped", {}).items():
        print(f"  (skipped {name}: {why})")
    if "report" in out:
        print(f"  report: {out['report']}")
