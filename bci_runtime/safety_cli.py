"""``bci safety check CONFIG.yaml``: validate stimulation limits, print what they allow.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points::

    [project.entry-points."bci_runtime.commands"]
    safety = "bci_runtime.safety_cli:register"
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_OK


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``safety`` (``check``) to ``bci``'s subcommands."""
    p = add(sub, "safety", "Check a stimulation configuration against the safety limits.",
            "  bci safety check pipelines/limits/two_contacts.yaml\n")
    ssub = p.add_subparsers(dest="safety_command", metavar="COMMAND", parser_class=type(p),
                            required=True)
    q = add(ssub, "check", "Validate stimulation limits and print each contact's effective "
            "limits (charge per phase, charge density, Shannon k).",
            "  bci safety check pipelines/limits/two_contacts.yaml\n"
            "  bci safety check my_pipeline.yaml --json      # its 'safety:' section\n"
            "\n"
            "The file is the limits, or a pipeline whose 'safety:' section holds them.\n"
            "Hard maxima: Shannon k <= 1.85, charge density <= 30 uC/cm2 per phase,\n"
            "biphasic balance within 1%, dose <= 4 mA and <= 40 min. A contact's current\n"
            "cap at the longest pulse width must stay within the lower of Shannon's\n"
            "charge and the density ceiling times its area.\n"
            "\n"
            "exit codes: 0 safe; 2 unreadable, a value out of range or an unsafe\n"
            "combination (the field is named).\n")
    q.add_argument("config", type=Path, metavar="CONFIG.yaml")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Validate ``args.config``; print the effective limits per contact."""
    from bci_runtime.stim_limits import check_limits, load_limits

    limits = load_limits(args.config)
    rows = check_limits(limits)
    if args.json:
        print(json.dumps({"ok": True, "config": str(args.config), "shannon_k": limits.shannon_k,
                          "max_charge_density_uc_cm2": limits.max_charge_density_uc_cm2,
                          "on_violation": limits.on_violation, "contacts": rows}))
        return EXIT_OK
    print(f"{args.config}: safe. Shannon k {limits.shannon_k:g}, charge density ceiling "
          f"{limits.max_charge_density_uc_cm2:g} uC/cm2, pulse width "
          f"{limits.pulse_width_us.min:g}-{limits.pulse_width_us.max:g} us, violations "
          f"{limits.on_violation}ed")
    print(f"  {'contact':8s} {'area cm2':>8s} {'Qmax uC':>8s} {'(Shannon':>9s} {'density)':>9s}"
          f" {'cap mA':>7s} {'Q at cap':>8s} {'D uC/cm2':>9s} {'k':>6s} {'Imax mA':>8s}")
    for r in rows:
        print(f"  {r['contact']:8s} {r['area_cm2']:8.3f} {r['max_charge_uc']:8.3f} "
              f"{r['shannon_charge_uc']:9.3f} {r['density_charge_uc']:9.3f} "
              f"{r['current_cap_ma']:7.2f} {r['worst_charge_uc']:8.3f} "
              f"{r['worst_density_uc_cm2']:9.2f} {r['worst_shannon_k']:6.2f} "
              f"{r['max_current_at_max_width_ma']:8.2f}")
    print("  (Q at cap, D and k: a contact's current cap at the longest pulse width; Imax: the "
          "highest current the charge limit allows at that width)")
    return EXIT_OK
