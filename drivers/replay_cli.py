"""``bci replay``: a recording or a session, as LSL streams or through a pipeline.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bci_runtime.cli import EXIT_FAILURE, EXIT_OK, add_run_options, positive, run_pipeline
from bci_runtime.config import load_pipeline, load_pipeline_text
from bci_runtime.errors import ConfigError
from bci_runtime.signals import stop_on_signals

EXAMPLES = (
    "  bci replay sessions/sub-01/ses-03 --fast            # reproduce a session's outputs\n"
    "  bci replay sessions/sub-01/ses-03 --pipeline new.yaml --fast   # another decoder\n"
    "  bci replay S001R04.edf                              # as LSL streams, real time\n"
    "  bci replay run.xdf --speed 10 --loop                # 10x, until Ctrl-C\n"
    "  bci replay S001R04.edf --pipeline mi.yaml --speed 2\n"
    "  bci replay run.xdf --list\n"
    "\n"
    "FILE is anything MNE reads (FIF, EDF/BDF, GDF, BrainVision, EEGLAB...) or XDF; a\n"
    "SESSION is a folder written by `bci run`. Without --pipeline a file is published as\n"
    "LSL outlets (one per stream, markers included) with its original timing, and a\n"
    "session goes through its own pipeline. Through a pipeline, the pipeline's source\n"
    "nodes are fed from the recording: on the simulated clock with --fast (as fast as the\n"
    "CPU allows; a session then reproduces its recorded outputs exactly, which the\n"
    "summary checks stream by stream), or on the live clock at --speed. Each pipeline\n"
    "replay writes a new session.\n"
    "\n"
    "exit codes: 0 done; 2 bad options or an unreadable file; 1 the run failed, or a\n"
    "--fast session replay did not reproduce the recorded outputs.\n")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``replay`` to ``bci``'s subcommands."""
    p = add(sub, "replay", "Replay a recording or a session: as LSL streams, or through a "
            "pipeline (in real time, at a speed, or as fast as possible).", EXAMPLES)
    p.add_argument("target", type=Path, metavar="FILE_OR_SESSION",
                   help="a recording file or a session folder")
    p.add_argument("--pipeline", type=Path, metavar="P", help="pipeline to replay through")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=positive(float), default=1.0, metavar="X",
                      help="replay speed on the live clock (default 1: real time)")
    pace.add_argument("--fast", action="store_true",
                      help="simulated clock: as fast as possible, deterministic")
    p.add_argument("--loop", action="store_true", help="start again at the end (LSL replay)")
    p.add_argument("--source", metavar="NODE",
                   help="the pipeline's source node a file feeds (if it has several)")
    p.add_argument("--duration", type=positive(float), metavar="S",
                   help="seconds to replay (default: to the end)")
    p.add_argument("--chunk-ms", type=positive(float), default=20.0, metavar="MS",
                   help="chunk length for LSL replay (default 20)")
    p.add_argument("--wait-for-consumers", type=float, default=0.0, metavar="S",
                   help="LSL replay: wait up to S seconds for every stream to have a "
                        "consumer (e.g. a recorder) before starting")
    p.add_argument("--source-id-prefix", metavar="TEXT",
                   help="LSL replay: source ids are TEXT:<stream name> (default "
                        "bci-replay:<file name>)")
    p.add_argument("--list", action="store_true", help="list the recording's streams and exit")
    add_run_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bci replay``; returns the exit code."""
    from bci_runtime.drivers.replay import is_session

    target: Path = args.target
    if not target.exists():
        raise ConfigError(f"'{target}' does not exist",
                          hint="give a recording file or a session folder "
                               "(`bci sessions list` shows sessions)")
    session = is_session(target)
    if args.list:
        return _list(args, target, session)
    if session or args.pipeline is not None:
        return _through_pipeline(args, target, session)
    if args.fast:
        raise ConfigError("--fast needs a pipeline: a file alone is replayed as LSL streams "
                          "in real time", hint="add --pipeline P, or use --speed X")
    return _as_lsl(args, target)


def _load(path: Path) -> Any:
    from bci_runtime.drivers.file_replay import cached_recording

    return cached_recording(path)


def _list(args: argparse.Namespace, target: Path, session: bool) -> int:
    from bci_runtime.drivers.replay import open_session

    path = open_session(target).recording if session else target
    rec = _load(path)
    rows = [{"name": s.spec.name, "type": s.spec.type, "channels": s.spec.n_channels,
             "srate": s.spec.srate, "samples": len(s.timestamps),
             "duration_s": round(s.duration_s, 3)} for s in rec.streams]
    if args.json:
        print(json.dumps({"file": str(path), "format": rec.format, "streams": rows,
                          "warnings": rec.warnings}))
        return EXIT_OK
    print(f"{path} ({rec.format})")
    for r in rows:
        rate = f"{r['srate']:g} Hz" if r["srate"] else "irregular"
        print(f"  {r['name']:<32} {r['type']:<12} {r['channels']:>4} ch  {rate:>10}  "
              f"{r['samples']:>9} samples  {r['duration_s']:.1f} s")
    for w in rec.warnings:
        print(f"  warning: {w}")
    return EXIT_OK


def _as_lsl(args: argparse.Namespace, target: Path) -> int:
    from bci_runtime.drivers.lsl_player import LslPlayer

    rec = _load(target)
    for w in rec.warnings:
        print(f"bci: warning: {w}", file=sys.stderr)
    player = LslPlayer(rec, speed=args.speed, loop=args.loop, chunk_ms=args.chunk_ms,
                       source_prefix=args.source_id_prefix or f"bci-replay:{target.name}")
    player.start(wait_for_consumers_s=args.wait_for_consumers)
    if not args.json:
        length = "until Ctrl-C" if args.loop else f"{player.duration_s:.1f} s"
        print(f"replaying {target} at {args.speed:g}x, {length}:", file=sys.stderr)
        for name, sid in player.source_ids.items():
            print(f"  LSL stream '{name}' (source_id {sid})", file=sys.stderr)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        player.request_stop()

    with stop_on_signals(stop):
        player.wait(args.duration if args.duration else None)
    player.stop()
    if player.error is not None:
        raise ConfigError(f"replaying '{target}' failed: {player.error}")
    result = {"ok": True, "file": str(target), "speed": args.speed, "cycles": player.cycles,
              "stopped": stopped, "t0": player.t0, "source_ids": player.source_ids,
              "pushed": player.pushed}
    if args.json:
        print(json.dumps(result))
    else:
        pushed = ", ".join(f"{n}: {k}" for n, k in player.pushed.items())
        print(f"replay {'stopped' if stopped else 'done'}: samples pushed {pushed}")
    return EXIT_OK


def _through_pipeline(args: argparse.Namespace, target: Path, session: bool) -> int:
    from bci_runtime.drivers import replay

    clock = "simulated" if args.fast else "live"
    manifest: dict[str, Any] = {"replay_of": str(target), "replay_speed": None if args.fast
                                else args.speed}
    if session:
        ref = replay.open_session(target)
        config = ref.config if args.pipeline is None else load_pipeline(args.pipeline)[0]
        rec = _load(ref.recording)
        feeds, indexes = replay.session_feeds(ref, config, [s.spec.name for s in rec.streams])
        # an exact replay puts each recorded model online at the window it first served
        swaps = replay.model_swaps(config, rec) if args.fast else {}
        path = ref.recording
        if args.subject == "01" and ref.manifest.get("subject"):  # the default: keep the subject
            args.subject = ref.manifest["subject"]
    else:
        config = load_pipeline(args.pipeline)[0]
        rec = _load(target)
        feeds, indexes, path = replay.file_feeds(config, rec, args.source), {}, target
        swaps = {}
    for w in rec.warnings:
        print(f"bci: warning: {w}", file=sys.stderr)
    if args.seed is not None:
        config = config.model_copy(update={"seed": args.seed})
    config = replay.replay_pipeline(config, path.resolve(), feeds, indexes, clock=clock,
                                    speed=args.speed, duration=args.duration, swaps=swaps)
    text = yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude_none=False),
                          sort_keys=False)
    config, lines = load_pipeline_text(text, f"<replay of {target}>")
    outcome: dict[str, Any] = {}

    def compare(new_session: Any, summary: dict[str, Any]) -> None:
        if not session or new_session.recorder is None:
            return
        found = replay.compare_recordings(path, new_session.recorder.path, list(feeds))
        summary["replay"] = {"of": str(target), "exact": args.fast,
                             "streams": [c.as_dict() for c in found],
                             "reproduced": all(c.identical for c in found) if found else None}
        outcome.update(summary["replay"])
        if not args.json:
            for c in found:
                print(f"  {c.name}: {c.detail} ({c.samples} samples)", file=sys.stderr)

    code = run_pipeline(args, config, lines, f"replay of {target}", before_finalize=compare,
                        manifest=manifest)
    own_pipeline = session and args.pipeline is None
    if code == EXIT_OK and args.fast and own_pipeline and outcome.get("reproduced") is False:
        print("bci: error: the replay did not reproduce the session's recorded outputs",
              file=sys.stderr)
        return EXIT_FAILURE
    return code
