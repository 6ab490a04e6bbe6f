"""``bci simulate``: the simulator as an amplifier on the network (LSL).

Registered with ``bci`` through the ``bci_runtime.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_OK, positive
from bci_runtime.signals import stop_on_signals
from bci_runtime.simulators.lsl_mode import LslSimulator
from bci_runtime.simulators.simulate_options import build_generator
from bci_runtime.simulators.stream_summary import SimulationSummary


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to ``bci``'s subcommands."""
    p = add(sub, "simulate", "Stream a simulated amplifier over LSL (signal, markers, truth) "
             "in real time.",
             "  bci simulate                                # motor-imagery EEG until Ctrl-C\n"
             "  bci simulate --paradigm mi --channels 64 --srate 1000 --duration 600\n"
             "  bci simulate --scenario day-to-day --seed 3 --record sub-01.xdf\n"
             "  bci simulate --scenario transport-faults --onset 5 --duration 60 --json\n"
             "  bci simulate --feedback-stream bci-feedback   # the decoder's output reaches "
             "the simulated user\n"
             "\n"
             "streams: <name> (signal, float32, source_id <source-id>), <name>-markers (cues, "
             "trials,\nartifacts, drift; source_id <source-id>-markers) and <name>-truth "
             "(ground truth, when the\nparadigm has any). Sample k is stamped t0 + k/srate "
             "exactly; transport faults of the\nscenario (drops, jitter, clock jumps) apply "
             "to the signal only.\n")
    p.add_argument("--paradigm", default="mi",
                   help="mi, ssvep, ecog or population (default mi)")
    p.add_argument("--scenario", default="stationary",
                   help="drift preset: stationary, electrode-shift, impedance-drift, "
                        "channel-dropout, tuning-drift, fatigue, session-jump, day-to-day, "
                        "transport-faults (default stationary)")
    p.add_argument("--channels", type=int, help="number of channels (default: the paradigm's)")
    p.add_argument("--srate", type=float, help="sampling rate in Hz (default: the paradigm's)")
    p.add_argument("--duration", type=positive(float),
                   help="seconds of signal (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--chunk-size", type=positive(int),
                   help="samples per push (default: 10 ms of signal)")
    p.add_argument("--name", help="LSL stream name (default bci-sim-<paradigm>)")
    p.add_argument("--source-id", help="LSL source_id (default bci-sim-<paradigm>-seed<seed>)")
    p.add_argument("--record", type=Path, metavar="FILE.xdf",
                   help="also record signal, markers and truth to this XDF file (must not exist)")
    p.add_argument("--feedback-stream", metavar="NAME",
                   help="LSL stream (by name) of the decoder output to show the simulated user")
    p.add_argument("--rho", type=float, help="preferred-direction correlation per simulated "
                   "day, in [0, 1] (tuning-drift, session-jump, day-to-day)")
    p.add_argument("--onset", type=float, help="seconds before the scenario's drift starts "
                   "(default 30)")
    p.add_argument("--ramp", type=float, help="seconds the drift takes to reach full size "
                   "(default 60)")
    p.add_argument("--realtime", action="store_true", help="pace under real-time scheduling "
                   "(SCHED_FIFO) when the system allows it: fewer late chunks on a busy machine")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bci simulate``; returns the exit code."""

    generator = build_generator(args.paradigm, scenario=args.scenario, channels=args.channels,
                                srate=args.srate, seed=args.seed, rho=args.rho,
                                onset_s=args.onset, ramp_s=args.ramp)
    stop = threading.Event()
    sim = LslSimulator(generator, paradigm=args.paradigm, scenario=args.scenario, seed=args.seed,
                       duration=args.duration, chunk_size=args.chunk_size, name=args.name,
                       source_id=args.source_id, record=args.record,
                       feedback_stream=args.feedback_stream, stop=stop,
                       realtime=args.realtime)

    def on_start(s: SimulationSummary) -> None:
        if args.json:
            return
        length = f"{args.duration:g} s" if args.duration else "until Ctrl-C"
        truth = f", truth '{s.name}-truth'" if s.truth_names else ""
        print(f"streaming '{s.name}' (source_id {s.source_id}): {s.channels} ch {s.stream_type} "
              f"@ {s.srate:g} Hz in chunks of {s.chunk_size}, markers '{s.name}-markers'{truth}; "
              f"{length}", file=sys.stderr, flush=True)

    sim.on_start = on_start

    with stop_on_signals(lambda reason: stop.set()):
        summary = sim.run()
    if args.json:
        print(json.dumps({"ok": True, **summary.as_dict()}))
        return EXIT_OK
    pace = summary.pacing_ms
    print(f"{summary.name}: {summary.samples_pushed} samples pushed in {summary.chunks_pushed} "
          f"chunks ({summary.duration_s:.2f} s of signal, {summary.stop_reason}); "
          f"{summary.markers_sent} markers")
    print(f"  dropped by transport faults: {summary.chunks_dropped} chunks "
          f"({summary.samples_dropped} samples)")
    print(f"  pacing error: p50 {pace['p50']:.3f} ms  p99 {pace['p99']:.3f} ms  "
          f"max {pace['max']:.3f} ms; late chunks (> {summary.late_threshold_ms:g} ms): "
          f"{summary.late_chunks}")
    for late in summary.late[:5]:
        print(f"    chunk {late.chunk} (sample {late.sample}): {late.error_ms:.3f} ms late")
    if summary.feedback_stream:
        state = "connected" if summary.feedback_connected else "never found"
        print(f"  feedback '{summary.feedback_stream}': {state}, {summary.feedback_received} "
              f"samples received")
    if summary.record:
        print(f"  recorded to {summary.record}")
    return EXIT_OK
