"""``bci devices``: the LSL streams on the network and the BrainFlow boards.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from bci_runtime.cli import EXIT_OK, positive
from bci_runtime.drivers.devices import brainflow_boards, lsl_streams


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``devices`` to ``bci``'s subcommands."""
    p = add(sub, "devices", "List the LSL streams on the network and the BrainFlow boards.",
            "  bci devices                 # streams seen within 1 s, and the boards\n"
            "  bci devices --wait 3        # look longer (streams on other hosts)\n"
            "  bci devices --no-boards --json\n")
    p.add_argument("--wait", type=positive(float), default=1.0,
                   help="seconds to look for LSL streams (default 1)")
    p.add_argument("--no-boards", action="store_true", help="skip the BrainFlow boards")
    p.add_argument("--hardware", action="store_true",
                   help="list every BrainFlow board (default: only those needing no hardware)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bci devices``; returns the exit code."""
    streams = lsl_streams(args.wait)
    boards = [] if args.no_boards else [b for b in brainflow_boards()
                                        if args.hardware or b.virtual]
    if args.json:
        print(json.dumps({"ok": True, "lsl_streams": [s.as_dict() for s in streams],
                          "brainflow_boards": [b.as_dict() for b in boards]}))
        return EXIT_OK
    print(f"LSL streams ({len(streams)} seen within {args.wait:g} s):")
    if not streams:
        print("  none (start one with `bci simulate`, or look longer with --wait)")
    for s in streams:
        rate = f"{s.srate:g} Hz" if s.srate else "irregular"
        print(f"  {s.name:<28} {s.type:<12} {s.channels:>4} ch  {rate:>10}  {s.format:<8} "
              f"source_id {s.source_id or '-'}  host {s.host}")
    if not args.no_boards:
        which = "all" if args.hardware else "no hardware needed; --hardware lists all"
        print(f"BrainFlow boards ({which}):")
        for b in boards:
            rate = f"{b.srate:g} Hz" if b.srate else "-"
            eeg = f"{b.eeg_channels} EEG ch" if b.eeg_channels is not None else "-"
            print(f"  {b.id:>4}  {b.name:<28} {rate:>9}  {eeg}")
    return EXIT_OK
