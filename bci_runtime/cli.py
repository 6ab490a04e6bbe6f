"""The ``bci`` command line.

Exit codes: 0 success, 2 usage or configuration error, 1 failure while running.
Every command takes ``--json`` to print one JSON object on stdout for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from bci_runtime.errors import BciError, ConfigError, PipelineError
from bci_runtime.operator_console import OperatorConsole
from bci_runtime.realtime import low_wakeup_latency, short_lock_slices, single_threaded_math
from bci_runtime.signals import emergency_stop_on_signal, stop_on_signals

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# entry points adding subcommands: ``register(subparsers, add)``, where ``add(subparsers,
# name, help, examples)`` makes a parser with this command line's conventions; the parser's
# ``handler`` default runs the command and returns its exit code
COMMAND_GROUP = "bci_runtime.commands"


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
    add_run_options(p)

    p = _add(sub, "run", "Run a pipeline file.",
             "  bci run pipelines/demo.yaml\n"
             "  bci run my.yaml --duration 120 --subject P003   # sessions/sub-P003/ses-NN\n"
             "  bci run my.yaml --clock simulated --json\n")
    p.add_argument("pipeline", type=Path, help="pipeline YAML file")
    p.add_argument("--duration", type=float, help="seconds (default: the file's, else until "
                   "Ctrl-C)")
    p.add_argument("--clock", choices=["live", "simulated"], help="override the file's clock")
    add_run_options(p)

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
    b.add_argument("--channels", type=positive(int), default=64)
    b.add_argument("--srate", type=positive(float), default=1000.0)
    b.add_argument("--outputs", type=positive(int), default=10000,
                   help="outputs to time (default 10000)")
    b.add_argument("--json", action="store_true", help="print one JSON object")

    for entry_point in entry_points(group=COMMAND_GROUP):
        entry_point.load()(sub, _add)  # commands of the other packages (e.g. `bci simulate`)
    return parser


def positive(kind: type) -> Any:
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


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs a pipeline in a session (run, demo, replay)."""
    p.add_argument("--subject", default="01", metavar="ID",
                   help="pseudonymous subject id, letters and digits (default 01)")
    p.add_argument("--sessions-root", type=Path, default=Path("sessions"), metavar="DIR",
                   help="where sessions are kept: DIR/sub-<ID>/ses-<NN>/ (default ./sessions)")
    p.add_argument("--session-dir", type=Path, metavar="DIR",
                   help="exact session folder instead (must be new or empty)")
    p.add_argument("--seed", type=int, help="override the pipeline seed")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.add_argument("--arm", action="store_true",
                   help="once running, show the stimulation limits and ask for 'arm' "
                   "(stimulators start off; without --arm they stay off)")


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

    config, lines = load_pipeline(path)
    if overrides:  # validated like the file itself
        try:
            config = PipelineConfig.model_validate(
                {**config.model_dump(by_alias=True, exclude_unset=True), **overrides})
        except ValidationError as exc:
            issues = [ConfigIssue(str(path), None, None, f"--{e['loc'][0]}",
                                  f"{e['msg']} (got {e.get('input')!r})") for e in exc.errors()]
            raise PipelineError(issues) from None
    return run_pipeline(args, config, lines, str(path))


def run_pipeline(args: argparse.Namespace, config: Any, lines: Any, source: str,
                 before_finalize: Callable[[Any, dict[str, Any]], None] | None = None,
                 manifest: dict[str, Any] | None = None) -> int:
    """Run a validated pipeline in a new session folder and print its summary.

    Parameters
    ----------
    args : argparse.Namespace
        The run options (``--subject``, ``--sessions-root``, ``--session-dir``, ``--json``).
    config : PipelineConfig
        The pipeline, overrides applied.
    lines : LineIndex
        Where each entry of the pipeline file is, for error messages.
    source : str
        Where the pipeline came from (recorded in the manifest).
    before_finalize : callable, optional
        ``before_finalize(session, summary)`` once the recording is complete, before
        the summary is written and printed (it may add to the summary).
    manifest : dict, optional
        Extra manifest entries (e.g. what a replay replays).

    Returns
    -------
    int
        The exit code.
    """
    from bci_runtime.graph import build_graph
    from bci_runtime.recorded_run import RecordedRun
    from bci_runtime.session import json_safe
    from bci_runtime.status_panel import StatusPanel, should_show
    from bci_runtime.summary import render_summary

    graph = build_graph(config, lines, source)
    if config.clock == "live":
        low_wakeup_latency()  # a live loop idles between chunks: wake up fast
    recorded = RecordedRun(graph, source, session_dir=args.session_dir,
                           root=args.sessions_root, subject=args.subject, manifest=manifest)
    session, runner = recorded.session, recorded.runner
    # the live status panel, for an operator at a terminal (not with --json)
    panel = StatusPanel(recorded.status) if should_show(args.json) else None

    if not args.json:
        clock = "simulated clock" if config.clock == "simulated" else "live clock"
        length = f"{runner.duration:g} s" if runner.duration else "until Ctrl-C"
        print(f"running '{config.name}' on the {clock}, {length}; session folder {session.dir}",
              file=sys.stderr)
    console = OperatorConsole(runner, arm_at_start=getattr(args, "arm", False),
                              out=panel.out if panel is not None else None)
    console.confirm_arming()  # a plain prompt, before the panel takes the screen
    console.start()
    try:
        with stop_on_signals(runner.request_stop), \
                emergency_stop_on_signal(runner.emergency_stop):
            if panel is not None:
                panel.start()
            result = runner.run()
    finally:
        if panel is not None:
            panel.stop()  # its last frame stays; the summary prints below it
        console.stop()
    summary = recorded.finish(result, before_finalize)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bci``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    single_threaded_math()
    short_lock_slices()
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
        handler = getattr(args, "handler", None)
        if handler is not None:
            return handler(args)
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
        if getattr(args, "json", False) and (args.command in ("run", "demo", "bench")
                                             or getattr(args, "handler", None) is not None):
            print(json.dumps({"ok": False, "error": str(exc), "type": type(exc).__name__}))
        print(f"bci: error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser.print_help()
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
