"""``bci record``: LSL streams to a crash-safe XDF file; ``bci record repair`` after a crash.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_FAILURE, EXIT_OK, positive
from bci_runtime.drivers.recorder import LslRecorder, RecordSummary, StreamQuery
from bci_runtime.errors import ConfigError, DependencyError
from bci_runtime.signals import stop_on_signals


def _query(text: str) -> StreamQuery:
    """argparse type of ``--stream``."""
    try:
        return StreamQuery.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message + (f" ({exc.hint})" if exc.hint else "")
                                         ) from None


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``record`` (and ``record repair``) to ``bci``'s subcommands."""
    p = add(sub, "record", "Record LSL streams to an XDF file (like LabRecorder), crash-safe.",
            "  bci record --stream bci-sim-mi --out sub-01.xdf              # until Ctrl-C\n"
            "  bci record --stream EEG --stream type=Markers --out s.xdf --duration 600\n"
            "  bci record --stream source_id=myamp-1234 --out s.xdf --resolve-timeout 10\n"
            "  bci record --stream bci-sim-mi --stream bci-sim-mi-markers --out s.xdf --json\n"
            "  bci record repair s.xdf                                       # after a crash\n"
            "\n"
            "--stream selects one stream: NAME (or name=NAME), type=TYPE or source_id=ID;\n"
            "repeat it for every stream (`bci devices` lists them). Every stream is resolved\n"
            "before recording starts. The file gets each stream's full LSL header, its\n"
            "samples with their original (raw) timestamps, a clock offset every 5 s, and\n"
            "footers when the session ends (--duration, Ctrl-C or SIGTERM). It is written in\n"
            "chunks and fsynced at least every second: after a crash, pyxdf still opens it,\n"
            "and `bci record repair FILE` adds the missing footers. An existing file is never\n"
            "overwritten. The folder must have 10 minutes' worth of the streams free (at most\n"
            "1 GiB); on a full disk the session stops cleanly and the file stays readable.\n"
            "\n"
            "exit codes: 0 recorded (duration, Ctrl-C, SIGTERM); 2 bad options, stream not\n"
            "found, existing file, not enough space; 1 stopped by a full disk or a write error.\n")
    p.usage = ("bci record --stream S [--stream S ...] --out FILE.xdf [--duration S]\n"
               "                  [--resolve-timeout S] [--json]\n"
               "       bci record repair FILE [--json]")
    p.add_argument("--stream", action="append", type=_query, metavar="S",
                   help="stream to record: NAME, name=NAME, type=TYPE or source_id=ID "
                        "(repeatable)")
    p.add_argument("--out", type=Path, metavar="FILE.xdf", help="XDF file to create "
                   "(must not exist)")
    p.add_argument("--duration", type=positive(float), metavar="S",
                   help="seconds to record (default: until Ctrl-C or SIGTERM)")
    p.add_argument("--resolve-timeout", type=positive(float), default=5.0, metavar="S",
                   help="seconds to find all the streams (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(handler=run)

    rsub = p.add_subparsers(dest="record_command", metavar="repair", parser_class=type(p))
    r = add(rsub, "repair", "Rewrite the footers of an XDF file whose recording was cut short "
            "(crash, power loss, full disk).",
            "  bci record repair sub-01.xdf\n"
            "  bci record repair sub-01.xdf --json\n"
            "\n"
            "Reads the samples and clock offsets that reached the disk and writes the stream\n"
            "footers (first/last timestamp, sample count, clock offsets) that the interrupted\n"
            "session could not write.\n")
    r.add_argument("file", type=Path, metavar="FILE", help="the XDF file to repair")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=run_repair)


def run(args: argparse.Namespace) -> int:
    """Run ``bci record``; returns the exit code."""
    if not args.stream:
        raise ConfigError("bci record: no --stream given",
                          hint="name the streams to record, e.g. --stream EEG "
                               "--stream type=Markers (`bci devices` lists them)")
    if args.out is None:
        raise ConfigError("bci record: no --out given",
                          hint="name the file to create, e.g. --out sub-01.xdf")

    def on_start(s: RecordSummary) -> None:
        if args.json:
            return
        length = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
        names = ", ".join(
            f"'{r.name}' ({r.channel_count} ch @ "
            f"{f'{r.srate:g} Hz' if r.srate else 'irregular rate'})" for r in s.streams)
        print(f"recording {names} to {s.path} {length}", file=sys.stderr, flush=True)

    recorder = LslRecorder(args.stream, args.out, resolve_timeout_s=args.resolve_timeout,
                           duration=args.duration, on_start=on_start)
    with stop_on_signals(recorder.request_stop):
        summary = recorder.run()
    if args.json:
        print(json.dumps(summary.as_dict(), allow_nan=False))
    else:
        for line in summary.describe():
            print(line)
    if not summary.ok:
        print(f"bci: error: {summary.message}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def run_repair(args: argparse.Namespace) -> int:
    """Run ``bci record repair``; returns the exit code."""
    try:
        from bci_runtime.xdf_repair import repair_xdf
    except ImportError as exc:
        raise DependencyError(f"`bci record repair` is not available in this installation "
                              f"({exc})", hint="update bci-runtime") from exc
    path: Path = args.file
    if not path.is_file():
        raise ConfigError(f"'{path}' is not a file", hint="give the path of an XDF recording")
    report = repair_xdf(path)
    lines = list(report.describe())
    if args.json:
        as_dict = getattr(report, "as_dict", None)
        detail = as_dict() if callable(as_dict) else {}
        print(json.dumps({"ok": True, "file": str(path), **detail, "lines": lines},
                         default=str))
    else:
        for line in lines:
            print(line)
    return EXIT_OK
