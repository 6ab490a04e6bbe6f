"""Run every benchmark once, in sequence (``make bench``).

The memory soak and the simulator's LSL stream run for one minute here; run
``bench/memory_soak.py`` and ``bench/simulator_lsl.py`` alone for the full ten minutes,
and ``bench/safety_hil.py`` alone for its 1000 stalls (200 here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["latency.py"],
    ["dispatch_overhead.py"],
    ["zmq_hop.py"],
    ["memory_soak.py", "--minutes", "1"],
    ["simulator_lsl.py", "--duration", "60"],
    ["drift_degradation.py"],
    ["safety_speed.py"],
    ["actuation_path.py"],
    ["safety_hil.py", "--stalls", "200"],
    ["wizard_cue_timing.py"],
    ["cursor_decoder_node.py"],
]


def main() -> int:
    failed = []
    for script, *args in RUNS:
        print(f"\n== {script} {' '.join(args)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        if code:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
