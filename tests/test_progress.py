"""Progress bars: drawn for a terminal, absent for pipes and --json."""

from __future__ import annotations

import io
import os

from bci_runtime.progress import progress_bars


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_drawn_for_a_terminal_only() -> None:
    terminal = _Terminal()
    with progress_bars(stream=terminal) as update:
        assert update is not None
        for done in range(1, 21):
            update("static", done, 20)
        update("oracle", 5, 20)
    text = terminal.getvalue()
    assert "static" in text and "20/20" in text and "oracle" in text and "5/20" in text
    with progress_bars(stream=io.StringIO()) as update:  # a pipe or a log file
        assert update is None
    with progress_bars(enabled=False, stream=terminal) as update:  # --json
        assert update is None


def test_bci_evaluate_draws_its_bars_on_a_terminal(tmp_path) -> None:
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    code = ("from bci_runtime.cli import main; raise SystemExit(main(['evaluate', '--simulate', "
            "'stationary', '--paradigm', 'mi', '--minutes', '2', '--adapt', 'none']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    seen = b""
    try:
        while True:  # until the child closes the terminal
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.wait(120)
        os.close(master)
    assert proc.returncode == 0, seen.decode(errors="replace")[-2000:]
    text = seen.decode(errors="replace")
    assert "200/200" in text and "trials" in text  # the bars reached the 200 test trials
