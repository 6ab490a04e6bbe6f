"""The ``bci`` command line.

Exit codes: 0 success, 2 usage or configuration error, 1 failure while running.
Every command takes ``--json`` to print one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from bci_runtime.errors import BciError, ConfigError, PipelineError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line error plus hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"bci: error: {message}\n  hint: `{self.prog} --help` shows examples",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add(sub: Any, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text,
                          epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bci``."""
    parser = _Parser(
        prog="bci", description="bci-runtime: closed-loop brain-computer-interface runtime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  bci demo\n  bci validate pipelines/demo.yaml\n"
               "  bci run my_pipeline.yaml --duration 60\n  bci nodes\n  bci bench latency",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _add(sub, "demo", "Run a closed loop on the built-in simulator (no hardware).",
             "  bci demo                      # 30 s in real time, session in ./sessions\n"
             "  bci demo --duration 60\n"
             "  bci demo --fast --json        # simulated clock, as fast as the CPU allows\n")
    p.add_argument("--duration", type=float, help="seconds (default 30)")
    p.add_argument("--fast", action="store_true", help="run on the simulated clock")
    _run_options(p)

    p = _add(sub, "run", "Run a pipeline file.",
             "  bci run pipelines/demo.yaml\n"
             "  bci run my.yaml --duration 120 --session-dir sessions/sub-01\n"
             "  bci run my.yaml --clock simulated --json\n")
    p.add_argument("pipeline", type=Path, help="pipeline YAML file")
    p.add_argument("--duration", type=float, help="seconds (default: the file's, else until "
                   "Ctrl-C)")
    p.add_argument("--clock", choices=["live", "simulated"], help="override the file's clock")
    _run_options(p)

    p = _add(sub, "validate", "Check pipeline files without starting anything.",
             "  bci validate pipelines/demo.yaml\n  bci validate a.yaml b.yaml --json\n")
    p.add_argument("pipelines", type=Path, nargs="+", help="pipeline YAML file(s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "nodes", "List the node types and their parameters.",
             "  bci nodes\n  bci nodes bandpass\n  bci nodes --json\n")
    p.add_argument("types", nargs="*", help="only these types")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "bench", "Run a benchmark.",
             "  bci bench latency\n  bci bench latency --channels 256 --srate 2000 --json\n")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=_Parser, required=True)
    b = _add(bsub, "latency", "LSL in -> band-pass -> log-variance -> classifier -> LSL out, "
             "timed from a third process.",
             "  bci bench latency\n  bci bench latency --channels 256 --srate 2000 --outputs 20000\n")
    b.add_argument("--channels", type=_positive(int), default=64)
    b.add_argument("--srate", type=_positive(float), default=1000.0)
    b.add_argument("--outputs", type=_positive(int), default=10000,
                   help="outputs to time (default 10000)")
    b.add_argument("--json", action="store_true", help="print one JSON object")

    p = _add(sub, "simulate", "Stream a simulated amplifier over LSL (signal, markers, truth) "
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
    p.add_argument("--duration", type=_positive(float),
                   help="seconds of signal (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument("--chunk-size", type=_positive(int),
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
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    return parser


def _positive(kind: type) -> Any:
    """argparse type: a finite number above zero."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {kind.__name__}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
        return value
    return parse


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session-dir", type=Path, help="session folder (default "
                   "sessions/<time>_<pipeline>)")
    p.add_argument("--seed", type=int, help="override the pipeline seed")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")


# -- commands ---------------------------------------------------------------------------------
def _cmd_validate(args: argparse.Namespace) -> int:
    from bci_runtime.graph import load_graph

    errors: list[dict[str, Any]] = []
    for path in args.pipelines:
        try:
            load_graph(path)
        except PipelineError as exc:
            errors.extend(issue.as_dict() for issue in exc.issues)
        except ConfigError as exc:
            errors.append({"file": str(path), "line": None, "node": None, "field": None,
                           "message": str(exc)})
    ok = not errors
    if args.json:
        print(json.dumps({"ok": ok, "errors": errors}))
    else:
        for e in errors:
            where = e["file"] + (f":{e['line']}" if e["line"] else "")
            extra = ", ".join(x for x in (e["node"] and f"node '{e['node']}'",
                                          e["field"] and f"field '{e['field']}'") if x)
            print(f"{where}: {extra + ': ' if extra else ''}{e['message']}", file=sys.stderr)
        if ok:
            print(f"ok: {len(args.pipelines)} pipeline(s) valid")
    return EXIT_OK if ok else EXIT_USAGE


def _cmd_nodes(args: argparse.Namespace) -> int:
    from bci_runtime.registry import available_types, get_node_class

    types = args.types or available_types()
    out = {}
    for name in types:
        cls = get_node_class(name)
        params = {}
        for field_name, info in cls.Params.model_fields.items():
            params[field_name] = {
                "type": _type_name(info.annotation),
                "default": None if info.is_required() else _jsonable(
                    info.get_default(call_default_factory=True)),
                "required": info.is_required(),
                "description": info.description or "",
            }
        out[name] = {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "inputs": {k: {"kind": v.kind, "required": v.required, "doc": v.doc}
                       for k, v in cls.inputs.items()},
            "outputs": {k: {"kind": v.kind, "doc": v.doc} for k, v in cls.outputs.items()},
            "params": params,
        }
    if args.json:
        print(json.dumps({"nodes": out}))
        return EXIT_OK
    for name, info in out.items():
        print(f"{name}  ({info['class']})\n  {info['doc']}")
        for kind, ports in (("in ", info["inputs"]), ("out", info["outputs"])):
            for port, p in ports.items():
                opt = "" if p.get("required", True) else " (optional)"
                print(f"  {kind} {port}: {p['kind']}{opt}  {p['doc']}")
        for pname, p in info["params"].items():
            default = "required" if p["required"] else f"default {p['default']!r}"
            print(f"  param {pname}: {p['type']}, {default}  {p['description']}")
        print()
    return EXIT_OK


def _type_name(annotation: Any) -> str:
    """Readable type of a parameter: ``float``, ``list[str]``, ``'a' | 'b'``."""
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):  # nested parameters: show their own defaults
        value = value.model_dump(mode="json")
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def demo_pipeline_path() -> Path:
    """Path of the shipped demo pipeline."""
    return Path(str(resources.files("bci_runtime.pipelines") / "demo.yaml"))


def _cmd_run(args: argparse.Namespace, path: Path, overrides: dict[str, Any]) -> int:
    from pydantic import ValidationError

    from bci_runtime.config import PipelineConfig, load_pipeline
    from bci_runtime.errors import ConfigIssue
    from bci_runtime.graph import build_graph
    from bci_runtime.runner import Runner
    from bci_runtime.session import Session, json_safe
    from bci_runtime.summary import build_summary, render_summary

    config, lines = load_pipeline(path)
    if overrides:  # validated like the file itself
        try:
            config = PipelineConfig.model_validate(
                {**config.model_dump(by_alias=True, exclude_unset=True), **overrides})
        except ValidationError as exc:
            issues = [ConfigIssue(str(path), None, None, f"--{e['loc'][0]}",
                                  f"{e['msg']} (got {e.get('input')!r})") for e in exc.errors()]
            raise PipelineError(issues) from None
    graph = build_graph(config, lines, str(path))
    session = Session(graph.resolved_config(), str(path), args.session_dir)
    runner = Runner(graph, emit_event=session.log_event, session_dir=session.dir)

    def on_signal(signum: int, frame: Any) -> None:
        # The handler runs on the main thread, which may hold a lock request_stop needs:
        # hand the request to a fresh thread instead of taking locks here.
        reason = f"{signal.Signals(signum).name} received"
        threading.Thread(target=runner.request_stop, args=(reason,), daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    if not args.json:
        clock = "simulated clock" if config.clock == "simulated" else "live clock"
        length = f"{runner.duration:g} s" if runner.duration else "until Ctrl-C"
        print(f"running '{config.name}' on the {clock}, {length}; session folder {session.dir}",
              file=sys.stderr)
    try:
        result = runner.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    session.set_processes(result.processes)
    summary = build_summary(result, config.name, str(session.dir))
    session.finalize(result.status, summary, error=str(result.error) if result.error else None)
    if args.json:
        print(json.dumps(json_safe(summary), default=str, allow_nan=False))
    else:
        render_summary(summary)
    if result.error is not None:
        print(f"bci: error: {result.error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from bci_runtime.bench_latency import run_latency_bench

    report = run_latency_bench(args.channels, args.srate, args.outputs,
                               progress=None if args.json else sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["latency_ms"]
        print(f"{report['channels']} ch @ {report['srate']:g} Hz, {report['outputs']} outputs: "
              f"p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  p99.9 {lat['p999']:.3f} ms  "
              f"max {lat['max']:.3f} ms")
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bci_runtime.simulators.lsl_mode import LslSimulator, SimulationSummary, build_generator

    generator = build_generator(args.paradigm, scenario=args.scenario, channels=args.channels,
                                srate=args.srate, seed=args.seed, rho=args.rho,
                                onset_s=args.onset, ramp_s=args.ramp)
    stop = threading.Event()
    sim = LslSimulator(generator, paradigm=args.paradigm, scenario=args.scenario, seed=args.seed,
                       duration=args.duration, chunk_size=args.chunk_size, name=args.name,
                       source_id=args.source_id, record=args.record,
                       feedback_stream=args.feedback_stream, stop=stop)

    def on_start(s: SimulationSummary) -> None:
        if args.json:
            return
        length = f"{args.duration:g} s" if args.duration else "until Ctrl-C"
        truth = f", truth '{s.name}-truth'" if s.truth_names else ""
        print(f"streaming '{s.name}' (source_id {s.source_id}): {s.channels} ch {s.stream_type} "
              f"@ {s.srate:g} Hz in chunks of {s.chunk_size}, markers '{s.name}-markers'{truth}; "
              f"{length}", file=sys.stderr, flush=True)

    sim.on_start = on_start

    def on_signal(signum: int, frame: Any) -> None:
        # never take a lock in the handler: a fresh thread sets the event
        threading.Thread(target=stop.set, daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = sim.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bci``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "nodes":
            return _cmd_nodes(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "simulate":
            return _cmd_simulate(args)
        overrides: dict[str, Any] = {}
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.command == "demo":
            if args.duration is not None:
                overrides["duration"] = args.duration
            if args.fast:
                overrides["clock"] = "simulated"
            return _cmd_run(args, demo_pipeline_path(), overrides)
        if args.command == "run":
            if args.duration is not None:
                overrides["duration"] = args.duration
            if args.clock is not None:
                overrides["clock"] = args.clock
            return _cmd_run(args, args.pipeline, overrides)
    except BciError as exc:
        if getattr(args, "json", False) and args.command in ("run", "demo", "bench",
                                                               "simulate"):
            print(json.dumps({"ok": False, "error": str(exc), "type": type(exc).__name__}))
        print(f"bci: error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser.print_help()
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
