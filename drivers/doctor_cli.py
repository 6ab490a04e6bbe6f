"""``bci doctor``: check the installation and say what is wrong and how to fix it.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points::

    [project.entry-points."bci_runtime.commands"]
    doctor = "bci_runtime.drivers.doctor_cli:register"

:func:`main` runs the same command without the entry point (tests, and
``python -m bci_runtime.drivers.doctor_cli``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_FAILURE, EXIT_OK
from bci_runtime.drivers.doctor import Check, CheckResult, default_checks, run_checks

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}
_SYMBOL = {"ok": "✓", "warn": "!", "fail": "✗"}
_ASCII_SYMBOL = {"ok": "ok", "warn": "!", "fail": "X"}
_PIPED_WIDTH = 160  # table width when stdout is not a terminal (logs, tickets)


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to ``bci``'s subcommands."""
    p = add(sub, "doctor", "Check the installation (liblsl, LSL on loopback, BrainFlow, torch, "
            "the wizard's browser, disk space) and say how to fix what is wrong.",
            "  bci doctor\n"
            "  bci doctor --quick                     # skip the LSL round trip and the "
            "BrainFlow session\n"
            "  bci doctor --sessions-root /data/sessions --json\n"
            "\n"
            "Every line is a check: ✓ ok, ! warning (optional piece, or worth a look),\n"
            "✗ failed, with a one-line fix. Nothing is installed or changed.\n"
            "\n"
            "exit codes: 0 nothing failed (warnings allowed); 1 a check failed.\n")
    p.add_argument("--sessions-root", type=Path, default=Path("sessions"), metavar="DIR",
                   help="where sessions will be written; its disk is checked "
                   "(default ./sessions)")
    p.add_argument("--quick", action="store_true",
                   help="skip the slow checks (LSL round trip, BrainFlow board session)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bci doctor``; returns the exit code (1 when a check failed)."""
    skipped = [c.name for c in default_checks(args.sessions_root) if c.slow] if args.quick \
        else []
    if args.json:
        results = run_checks(args.sessions_root, quick=args.quick)
    else:
        with _progress() as on_start:
            results = run_checks(args.sessions_root, quick=args.quick, on_start=on_start)
    ok = not any(r.status == "fail" for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.as_dict() for r in results],
                          "skipped": skipped}))
    else:
        render(results, skipped)
    return EXIT_OK if ok else EXIT_FAILURE


@contextmanager
def _progress() -> Iterator[Callable[[Check], None] | None]:
    """A spinner on stderr naming the running check, when stderr is a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with console.status("checking...") as status:
        yield lambda check: status.update(f"checking {check.name}...")


def render(results: Sequence[CheckResult], skipped: Sequence[str] = ()) -> None:
    """Print the results as a table, then one line: ``all good`` or ``N problem(s)``.

    Parameters
    ----------
    results : sequence of CheckResult
        What :func:`bci_runtime.drivers.doctor.run_checks` returned.
    skipped : sequence of str
        Names of the checks left out (``--quick``).
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console = Console(width=_PIPED_WIDTH)
    symbols = _SYMBOL if (console.encoding or "").lower().startswith("utf") else _ASCII_SYMBOL
    fixes = any(r.fix for r in results)
    table = Table("check", "", "detail", *(["fix"] if fixes else []), box=None, pad_edge=False)
    for r in results:
        style = _STYLE[r.status]
        # detail and fix are plain text: '[lab]' in a fix is not markup
        cells = [r.name, Text(symbols[r.status], style=style), Text(r.detail)]
        table.add_row(*cells, *([Text(r.fix, style=style) if r.fix else ""] if fixes else []))
    console.print(table)
    if skipped:
        console.print(f"[dim]skipped (--quick): {', '.join(skipped)}[/dim]", highlight=False)
    failed = sum(r.status == "fail" for r in results)
    warned = sum(r.status == "warn" for r in results)
    warnings = f"{warned} warning{'s' if warned != 1 else ''}" if warned else ""
    if failed:
        console.print(f"[bold red]{failed} problem{'s' if failed != 1 else ''}[/bold red]"
                      + (f" (and {warnings})" if warnings else ""), highlight=False)
    else:
        console.print("[bold green]all good[/bold green]" + (f" ({warnings})" if warnings else ""),
                      highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bci doctor ARGV`` with ``bci``'s conventions; returns the exit code.

    For tests and ``python -m bci_runtime.drivers.doctor_cli`` when the entry point is
    not installed.
    """
    from bci_runtime.cli import _add, _Parser

    parser = _Parser(prog="bci")
    register(parser.add_subparsers(dest="command", parser_class=_Parser), _add)
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
