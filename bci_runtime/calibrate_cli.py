"""``bci calibrate``: the clinician's calibration wizard, a local web page.

Registered with ``bci`` through the ``bci_runtime.commands`` entry points::

    [project.entry-points."bci_runtime.commands"]
    calibrate = "bci_runtime.calibrate_cli:register"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bci_runtime.cli import EXIT_OK, positive
from bci_runtime.errors import ConfigError


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``calibrate`` to ``bci``'s subcommands."""
    p = add(sub, "calibrate", "Open the calibration wizard: a local web page that takes a "
            "patient from electrodes-on to a working closed loop.",
            "  bci calibrate                         # opens the wizard in the browser\n"
            "  bci calibrate --simulate stationary   # the simulator as the patient\n"
            "  bci calibrate --port 8770 --no-browser\n"
            "  bci calibrate --json --simulate stationary   # {\"url\": ...} for a script\n"
            "  bci calibrate --sim-param erd=0.05     # a simulated patient with a weak rhythm\n"
            "\n"
            "The wizard serves http://127.0.0.1:PORT/ only (never the network). Every choice\n"
            "goes to the session's audit.jsonl; one wizard at a time per session.\n"
            "Ctrl-C stops it; a reloaded page resumes at the current step.\n")
    p.add_argument("--simulate", metavar="PRESET", default="stationary",
                   help="the simulator's drift preset when the simulator is the source "
                   "(stationary, electrode-shift, impedance-drift, channel-dropout, ...)")
    p.add_argument("--sim-param", action="append", default=[], metavar="KEY=VALUE",
                   type=sim_param, help="a parameter of the simulated patient (repeatable; "
                   "YAML values), e.g. erd=0.1, mu_uv=8, n_channels=16; see "
                   "`bci simulate --help`")
    p.add_argument("--sessions-root", type=Path, default=Path("sessions"), metavar="DIR",
                   help="where sessions are kept (default ./sessions)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    p.add_argument("--no-browser", action="store_true", help="print the address, open nothing")
    p.add_argument("--json", action="store_true", help="print the address as one JSON line "
                   "on stdout once it serves (for scripts; implies --no-browser)")
    p.add_argument("--stim-limits", type=Path, default=None, metavar="FILE",
                   help="safety limits of the online step's simulated stimulator (default: "
                   "the shipped pipelines/limits/two_contacts.yaml; `bci safety check` it)")
    p.add_argument("--min-good", type=positive(float), default=0.75, metavar="N",
                   help="fewest good channels to go on: a fraction (<= 1) or a count "
                   "(default 0.75)")
    p.set_defaults(handler=run)


def sim_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (the value read as YAML) for ``--sim-param``."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. erd=0.1)")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a value (e.g. 0.1, 16, "
                                         "[C3, C4])") from None


def run(args: argparse.Namespace) -> int:
    """Serve the wizard until Ctrl-C."""
    import uvicorn

    from bci_runtime.web.wizard.app import create_app
    from bci_runtime.web.wizard.server import bind_socket
    from bci_runtime.web.wizard.wizard import Wizard

    if args.stim_limits is not None and not args.stim_limits.is_file():
        raise ConfigError(f"--stim-limits {args.stim_limits}: no such file",
                          hint="give a limits file (see pipelines/limits/two_contacts.yaml)")
    wizard = Wizard(args.sessions_root, preset=args.simulate, min_good=args.min_good,
                    stim_limits=args.stim_limits, sim_params=dict(args.sim_param))
    wizard.check_simulator()
    sock = bind_socket(args.port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(create_app(wizard), log_level="warning",
                                           ws="websockets-sansio"))
    if args.json:
        print(json.dumps({"url": url, "pid": os.getpid(),
                          "sessions_root": str(args.sessions_root)}), flush=True)
    else:
        print(f"calibration wizard: {url}   (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if not (args.no_browser or args.json):
        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down
        pass
    finally:
        wizard.close()  # stops any run: what was recorded is finalized
    print("calibration wizard stopped; the session folder keeps everything recorded",
          file=sys.stderr)
    return EXIT_OK
