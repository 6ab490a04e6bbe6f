"""One wizard per session folder: an advisory lock held while the wizard runs.

``fcntl.flock`` on ``<session>/.wizard.lock``: the kernel releases it when the
holding process exits, even on SIGKILL, so a crashed wizard never leaves a
session locked; the file records who holds it, for the message a second wizard
shows.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from bci_runtime.errors import ConfigError

LOCK_NAME = ".wizard.lock"


class SessionLock:
    """Holds the wizard lock of ``session_dir`` until :meth:`release`.

    Raises
    ------
    ConfigError
        Another wizard holds it (its pid and since when are named).
    """

    def __init__(self, session_dir: Path) -> None:
        self.path = Path(session_dir) / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(
                f"session '{session_dir}' is open in another calibration wizard "
                f"(pid {holder.get('pid', '?')}, since {holder.get('since', '?')})",
                hint="use that wizard's window, or close it first; a wizard that crashed "
                "releases the session by itself") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd: int | None = fd

    @staticmethod
    def held(session_dir: Path) -> bool:
        """Whether a wizard holds ``session_dir`` now (this process's included)."""
        path = Path(session_dir) / LOCK_NAME
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        """Let another wizard open the session (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
