"""An append-only audit log: JSON lines, each written to the kernel at once, fsynced every second.

Every line is handed to the operating system with one ``os.write`` on a file
opened with ``O_APPEND``, so what was logged survives the process being killed
(SIGKILL included); ``fsync`` runs at least once a second while lines come in,
and at :meth:`AuditLog.close`, so it also survives a power loss up to that
second. Records carry a monotonic timestamp (``t_mono``, seconds) and the
wall-clock time (``t_wall``, ISO 8601).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bci_runtime.errors import ConfigError

#: the longest a written line waits for fsync (s)
FSYNC_EVERY_S = 1.0


class AuditLog:
    """Append JSON lines to ``path`` (created if missing, never truncated).

    Parameters
    ----------
    path : Path
    clock : callable
        Monotonic clock for ``t_mono`` (seconds).
    """

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self.path = Path(path)
        self.clock = clock
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log '{path}': {exc.strerror}",
                              hint="give a writable session folder") from None
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name="audit-fsync", daemon=True)
        self._syncer.start()

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Log one record; returns it.

        Parameters
        ----------
        event : str
            What happened (``request``, ``clamp``, ``reject``, ``arm``, ``disarm``...).
        **fields
            JSON-serialisable details (the reason, the request, ...).
        """
        record = {"t_mono": self.clock(), "t_wall": _dt.datetime.now(_dt.timezone.utc)
                  .isoformat(timespec="microseconds"), "event": event, **fields}
        line = (json.dumps(record, default=str, allow_nan=False) + "\n").encode()
        with self._lock:  # one line at a time; the fsync runs on its own thread, unlocked
            os.write(self._fd, line)
            self._dirty = True
        return record

    def close(self) -> None:
        """Sync and close; later writes raise."""
        self._stop.set()
        self._syncer.join(2 * FSYNC_EVERY_S)
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def _sync_loop(self) -> None:
        # every half interval: a line waits at most FSYNC_EVERY_S for its fsync, and the
        # writers never wait for one (fsync and write may run at once on one descriptor)
        while not self._stop.wait(FSYNC_EVERY_S / 2):
            with self._lock:
                dirty, self._dirty = self._dirty, False
                fd = self._fd
            if dirty and fd >= 0:
                os.fsync(fd)


def read_audit_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of an audit log (a line cut by a crash is left out)."""
    records = []
    for line in Path(path).read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
