"""``bci sessions``: list, inspect, verify and export the session folders of past runs.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points::

    [project.entry-points."bci_runtime.commands"]
    sessions = "bci_runtime.sessions_cli:register"

:func:`main` runs the same commands without the entry point (tests, and
``python -m bci_runtime.sessions_cli``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_FAILURE, EXIT_OK
from bci_runtime.errors import BciError
from bci_runtime.session import json_safe
from bci_runtime.session_store import (
    SessionInfo,
    find_sessions,
    load_summary,
    resolve_session,
    verify_session,
)

DEFAULT_ROOT = Path("sessions")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``sessions`` (``list``, ``show``, ``export-bids``) to ``bci``'s subcommands."""
    p = add(sub, "sessions", "List, inspect, verify and export the sessions of past runs.",
            "  bci sessions list                                # ./sessions\n"
            "  bci sessions list --root /data/sessions --subject P003\n"
            "  bci sessions show sub-01/ses-02 --verify\n"
            "  bci sessions export-bids sub-01/ses-02 --out bids/\n"
            "\n"
            "Every `bci run` / `bci demo` writes a session folder DIR/sub-<ID>/ses-<NN>/\n"
            "(DIR is its --sessions-root, default ./sessions). SESSION is that folder's path,\n"
            "sub-<ID>/ses-<NN> under --root, or sub-<ID> for the subject's latest session.\n")
    ssub = p.add_subparsers(dest="sessions_command", metavar="COMMAND", parser_class=type(p),
                            required=True)

    q = add(ssub, "list", "One line per session: task, start, duration, status, streams, size.",
            "  bci sessions list\n"
            "  bci sessions list --root /data/sessions\n"
            "  bci sessions list --subject 01 --json\n"
            "\n"
            "Sorted by subject, then session. A folder whose manifest.json is missing or\n"
            "damaged is listed as 'unreadable' with the reason. DURATION is wall-clock time\n"
            "(start to stop); RECORDED is the signal's length (they differ on the simulated\n"
            "clock, which runs faster than real time).\n"
            "\n"
            "exit codes: 0 listed (also when there are none); 2 the root is not a folder.\n")
    _root_option(q)
    q.add_argument("--subject", metavar="ID", help="only this subject (01 or sub-01)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(handler=run_list)

    q = add(ssub, "show", "The manifest, recorded streams and summary of one session; "
            "--verify checks its files.",
            "  bci sessions show sub-01/ses-02\n"
            "  bci sessions show sessions/sub-01/ses-02 --verify\n"
            "  bci sessions show sub-01 --json          # subject 01's latest session\n"
            "\n"
            "--verify recomputes the SHA-256 of every file and compares it with SHA256SUMS\n"
            "and the manifest's 'files' (`sha256sum -c SHA256SUMS` in the folder does the\n"
            "first half by hand).\n"
            "\n"
            "exit codes: 0 shown (and verified); 1 a file is modified or missing, or the\n"
            "manifest is unreadable; 2 no such session.\n")
    q.add_argument("session", metavar="SESSION", help="folder, sub-<ID>/ses-<NN> or sub-<ID>")
    _root_option(q)
    q.add_argument("--verify", action="store_true", help="check every file's SHA-256")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(handler=run_show)

    q = add(ssub, "export-bids", "Write a session's EEG / iEEG signals as a BIDS dataset "
            "(MNE-BIDS).",
            "  bci sessions export-bids sub-01/ses-02 --out bids/\n"
            "  bci sessions export-bids sub-01/ses-03 --out bids/    # adds to the dataset\n"
            "  bci sessions export-bids sessions/sub-P7/ses-01 --out bids/ --json\n"
            "\n"
            "Each source node's EEG (-> eeg/), ECoG or sEEG (-> ieeg/) stream becomes a\n"
            "BrainVision recording in volts with channels.tsv, the *_eeg.json / *_ieeg.json\n"
            "sidecar (with the pipeline, code version and configuration hash under\n"
            "BciRuntime), and events.tsv from the node's markers. --out is a new or empty\n"
            "folder, or a BIDS dataset written before: sessions are added to it, never\n"
            "overwritten. Needs mne-bids and pybv.\n"
            "\n"
            "exit codes: 0 exported; 2 no such session, no recording or signal to export,\n"
            "--out not usable, already exported; 1 mne-bids missing or failed.\n")
    q.add_argument("session", metavar="SESSION", help="folder, sub-<ID>/ses-<NN> or sub-<ID>")
    q.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="BIDS dataset folder (new, empty, or a dataset to add to)")
    _root_option(q)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(handler=run_export)


def _root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                   help="the sessions root: DIR/sub-<ID>/ses-<NN>/ (default ./sessions)")


# -- list ---------------------------------------------------------------------------------------
def run_list(args: argparse.Namespace) -> int:
    """Run ``bci sessions list``; returns the exit code."""
    sessions = find_sessions(args.root, args.subject)
    rows = [_with_recorded(s) for s in sessions]
    if args.json:
        print(json.dumps(json_safe({"ok": True, "root": str(args.root), "sessions": rows})))
        return EXIT_OK
    if not rows:
        whose = f" of subject {args.subject}" if args.subject else ""
        print(f"no sessions{whose} under '{args.root}' (they are written by `bci run` and "
              "`bci demo`; --root DIR looks elsewhere)")
        return EXIT_OK
    header = (f"{'SESSION':<18} {'TASK':<12} {'STARTED (UTC)':<19}  {'DURATION':>9} "
              f"{'RECORDED':>9}  {'STATUS':<10} {'STREAMS':>7} {'SIZE':>10}")
    print(header)
    for r in rows:
        if r["problem"] is not None:
            print(f"{r['key']:<18} unreadable: {r['problem']}")
            continue
        streams = "-" if r["streams"] is None else str(r["streams"])
        print(f"{r['key']:<18} {_short(r['task'] or r['pipeline'] or '-', 12):<12} "
              f"{_utc(r['started']):<19}  {_seconds(r['duration_s']):>9} "
              f"{_seconds(r['recorded_s']):>9}  {r['status'] or '-':<10} {streams:>7} "
              f"{_size(r['size_bytes']):>10}")
    unreadable = sum(r["problem"] is not None for r in rows)
    print(f"{len(rows)} session(s) under '{args.root}'"
          + (f", {unreadable} unreadable" if unreadable else ""))
    return EXIT_OK


def _with_recorded(info: SessionInfo) -> dict[str, Any]:
    row = info.as_row()
    row["recorded_s"] = recorded_seconds(info)
    return row


def recorded_seconds(info: SessionInfo) -> float | None:
    """Length of the longest regularly sampled stream (samples / rate), from the manifest."""
    lengths = [s["samples"] / s["srate"] for s in info.get("streams") or []
               if isinstance(s, dict) and isinstance(s.get("samples"), (int, float))
               and isinstance(s.get("srate"), (int, float)) and s["srate"] > 0]
    return max(lengths) if lengths else None


# -- show ---------------------------------------------------------------------------------------
def run_show(args: argparse.Namespace) -> int:
    """Run ``bci sessions show``; returns the exit code."""
    info = resolve_session(args.session, args.root)
    report = verify_session(info) if args.verify else None
    ok = info.readable and (report is None or report.ok)
    if args.json:
        print(json.dumps(json_safe({
            "ok": ok, "session": info.key, "path": str(info.path), "problem": info.problem,
            "manifest": info.manifest, "recorded_s": recorded_seconds(info),
            "summary": load_summary(info) if info.readable else None,
            "events": dict(_event_counts(info)),
            "verify": report.as_dict() if report is not None else None,
        }), default=str))
    else:
        for line in describe_session(info):
            print(line)
        if report is not None:
            for line in report.describe():
                print(line)
    if not info.readable:
        print(f"bci: error: session {info.key} cannot be read: {info.problem}\n  hint: "
              + ("the files' checks are above" if args.verify else
                 "`bci sessions show --verify` checks its files"), file=sys.stderr)
    elif report is not None and not report.ok:
        names = report.modified + report.missing + report.inconsistent
        print(f"bci: error: session {info.key} failed verification"
              + (f": {', '.join(names)}" if names else f": {'; '.join(report.problems)}"),
              file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILURE


def describe_session(info: SessionInfo) -> list[str]:
    """Human-readable lines about one session."""
    lines = [f"session   {info.key}   ({info.path})"]
    if not info.readable:
        return [*lines, f"status    unreadable: {info.problem}"]
    m = info.get
    lines.append(f"pipeline  {m('pipeline')}   (task {m('task')}, file {m('pipeline_file')})")
    duration = info.duration_s
    lines.append(f"status    {m('status')}" + ("" if info.finalized else
                                               "   (never finalized: still running, or the "
                                               "run crashed)"))
    lines.append(f"started   {m('started')}")
    lines.append(f"stopped   {m('stopped') or '-'}"
                 + (f"   ({_seconds(duration)} wall clock)" if duration is not None else ""))
    if m("error"):
        lines.append(f"error     {m('error')}")
    lines.append(f"code      {_code_version(m('code_version') or {})}")
    lines.append(f"config    sha256 {m('config_sha256')}   clock {m('clock')}")
    seeds = m("seeds") or {"pipeline": m("seed")}
    lines.append("seeds     " + ", ".join(f"{k}={v}" for k, v in seeds.items()))
    devices = m("devices") or {}
    lines.append("devices   " + (", ".join(f"{name} ({d.get('type')})" if isinstance(d, dict)
                                           else name for name, d in devices.items()) or "-"))
    lines.append(f"recording {m('recording') or '-'}")
    lines += _stream_lines(m("streams") or [])
    lines += _summary_lines(load_summary(info))
    events = _event_counts(info)
    if events:
        lines.append("events    " + ", ".join(f"{k} {n}" for k, n in events.items()))
    return lines


def _stream_lines(streams: list[Any]) -> list[str]:
    if not streams:
        return ["streams   none listed (the manifest lists them when the run ends)"]
    lines = [f"streams   {len(streams)}:",
             f"  {'NAME':<22} {'TYPE':<12} {'CH':>4} {'RATE':>10} {'SAMPLES':>9} {'SECONDS':>8}"]
    for s in streams:
        if not isinstance(s, dict):
            continue
        rate = s.get("srate") or 0
        seconds = _seconds(s.get("samples", 0) / rate) if rate else "-"
        lines.append(f"  {_short(str(s.get('name')), 22):<22} {_short(str(s.get('type')), 12):<12} "
                     f"{s.get('channels', '-'):>4} "
                     f"{(f'{rate:g} Hz' if rate else 'irregular'):>10} "
                     f"{s.get('samples', '-'):>9} {seconds:>8}")
    return lines


def _summary_lines(summary: dict[str, Any] | None) -> list[str]:
    """The summary's top-level figures (nested tables are in --json)."""
    if summary is None:
        return ["summary   none (the run did not finish)"]
    skip = ("pipeline", "status", "session_dir")  # shown above
    figures = [f"{k} {_figure(v)}" for k, v in summary.items()
               if not isinstance(v, (dict, list)) and k not in skip]
    latency = summary.get("latency_ms")
    if isinstance(latency, dict) and latency.get("p50") is not None:
        figures.append(f"latency p50 {_figure(latency['p50'])} ms, p99 "
                       f"{_figure(latency.get('p99'))} ms")
    bad = summary.get("bad_chunks")
    if isinstance(bad, dict) and bad:
        figures.append("bad chunks " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    return ["summary   " + "; ".join(figures)] if figures else []


def _event_counts(info: SessionInfo) -> Counter[str]:
    """How many of each event kind ``events.jsonl`` holds (damaged lines are skipped)."""
    counts: Counter[str] = Counter()
    try:
        with open(info.path / "events.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    counts[str(json.loads(line).get("event"))] += 1
                except (json.JSONDecodeError, AttributeError):
                    counts["(unreadable line)"] += 1
    except (OSError, UnicodeDecodeError):
        pass
    return counts


# -- export-bids --------------------------------------------------------------------------------
def run_export(args: argparse.Namespace) -> int:
    """Run ``bci sessions export-bids``; returns the exit code."""
    from bci_runtime.bids_export import export_bids

    info = resolve_session(args.session, args.root)
    report = export_bids(info, args.out)
    if args.json:
        print(json.dumps(json_safe({"ok": True, **report.as_dict()})))
    else:
        for line in report.describe():
            print(line)
    return EXIT_OK


# -- formatting ---------------------------------------------------------------------------------
def _code_version(code: dict[str, Any]) -> str:
    text = f"bci-runtime {code.get('package', '?')}"
    if code.get("git_commit"):
        text += f", git {code['git_commit'][:12]}" + (" (modified)" if code.get("git_dirty")
                                                      else "")
    return text


def _utc(text: Any) -> str:
    try:
        when = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return "-"
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 \
        else f"{minutes}:{seconds:02d} min"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# -- without the entry point --------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bci sessions ARGV`` with ``bci``'s conventions; returns the exit code.

    For tests and ``python -m bci_runtime.sessions_cli`` when the entry point is
    not installed; errors map to exit codes as in :func:`bci_runtime.cli.main`.
    """
    from bci_runtime.cli import _add, _Parser

    parser = _Parser(prog="bci")
    register(parser.add_subparsers(dest="command", parser_class=_Parser), _add)
    args = parser.parse_args(["sessions", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except BciError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(exc), "type": type(exc).__name__}))
        print(f"bci: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
