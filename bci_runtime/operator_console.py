"""The operator's hands on a running session that drives an actuator.

``bci run --arm`` shows each actuator's effective limits and asks for the word
``arm`` (typed, or piped on stdin) before the run starts; the actuators are
armed once every node is open, before the first chunk; anything else leaves
them off. On a terminal, single keys act at once while the run goes on:

* ``e``, the space bar or Escape: **emergency stop** (every actuator, every process);
* ``a``: arm again (after a safe state), with a ``y`` to confirm.

SIGUSR1 is an emergency stop too (``kill -USR1 <pid>``), for scripts and
foot switches wired to one.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

ESTOP_KEYS = {"e", " ", "\x1b"}


class OperatorConsole:
    """Arming prompt and keys for a run with actuators (a no-op without one).

    Parameters
    ----------
    runner : Runner
        The run (``started``, ``actuators``, ``arm``, ``emergency_stop``).
    arm_at_start : bool
        Ask for ``arm`` (:meth:`confirm_arming`) before the run starts.
    stdin, out : text streams
        Where answers come from and prompts go.
    """

    def __init__(self, runner: Any, arm_at_start: bool, stdin: TextIO | None = None,
                 out: TextIO | None = None) -> None:
        self.runner = runner
        self.arm_at_start = arm_at_start
        self.stdin = stdin if stdin is not None else sys.stdin
        self.out = out if out is not None else sys.stderr
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._restore: Any = None

    def confirm_arming(self) -> bool:
        """Before the run: show the limits, ask for ``arm``; the runner arms at its start."""
        if not self.arm_at_start or not self.runner.actuators:
            return False
        for actuator in self.runner.actuators:
            self._say(f"  {actuator.arming_summary()}")
        self._say('type "arm" and Enter to arm the stimulation (anything else leaves it off):')
        answer = self.stdin.readline().strip().lower()
        if answer != "arm":
            self._say("  not armed: stimulation stays off")
            return False
        self.runner.arm_when_started = "operator (cli)"
        return True

    def start(self) -> None:
        """Listen to keys (a daemon thread) if the run drives an actuator on a terminal."""
        if not self.runner.actuators or not self._is_tty():
            return
        self._thread = threading.Thread(target=self._run, name="operator-console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and give the terminal back as it was."""
        self._stop.set()
        if self._restore is not None:
            self._restore()
            self._restore = None

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _run(self) -> None:
        started = self.runner.started
        while not started.wait(0.5):  # a wait on the start, woken by the run
            if self._stop.is_set():
                return
        if not self._stop.is_set():
            self._keys()

    def _is_tty(self) -> bool:
        try:
            return self.stdin.isatty()
        except (AttributeError, ValueError):
            return False

    def _report_arm(self, armed: dict[str, bool]) -> None:
        for name, ok in armed.items():
            self._say(f"  {name}: {'ARMED (ramping up)' if ok else 'refused (see audit.jsonl)'}")

    def _keys(self) -> None:
        import termios
        import tty

        fd = self.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._restore = lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        self._say("  keys: [e]/space/Esc emergency stop, [a] arm")
        try:
            while not self._stop.is_set():
                key = os.read(fd, 1).decode(errors="replace")
                if not key:
                    return
                if key in ESTOP_KEYS:
                    self.runner.emergency_stop("key")
                    self._say("  EMERGENCY STOP: every output is off; [a] to arm again")
                elif key == "a":
                    self._say("  arm the stimulation? [y/N]")
                    if os.read(fd, 1).decode(errors="replace").lower() == "y":
                        self._report_arm(self.runner.arm("operator (key)"))
        finally:
            self.stop()
