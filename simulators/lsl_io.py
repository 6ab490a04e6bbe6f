"""The simulator's side channels on LSL and disk: decoder feedback in, XDF recording out.

Both keep the pacing loop free: resolving the feedback stream and writing the
file happen on background threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class FeedbackReader:
    """Resolves a stream by name in a background thread; the loop pulls it without blocking."""

    def __init__(self, pylsl: Any, name: str, classes: list[str]) -> None:
        self._pylsl = pylsl
        self.name = name
        self._classes = list(classes)
        self._stop = threading.Event()
        self.inlet: Any = None  # set once connected (a plain assignment: atomic)
        self.labels: list[str] = []
        self.is_string = False
        self.is_classes = False
        self.received = 0
        self._thread = threading.Thread(target=self._connect, name="sim-feedback-resolve",
                                        daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        pylsl = self._pylsl
        while not self._stop.is_set():
            try:
                found = pylsl.resolve_byprop("name", self.name, 1, 0.5)
                if not found:
                    continue
                inlet = pylsl.StreamInlet(found[0], max_buflen=10, recover=True)
                info = inlet.info(timeout=5.0)
                inlet.open_stream(timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - keep trying; the stream may come later
                log.debug("feedback stream %r: %s; retrying", self.name, exc)
                time.sleep(0.5)
                continue
            labels = []
            ch = info.desc().child("channels").child("channel")
            while not ch.empty():
                labels.append(ch.child_value("label"))
                ch = ch.next_sibling()
            self.labels = labels
            self.is_string = info.channel_format() == pylsl.cf_string
            self.is_classes = bool(self._classes) and sorted(labels) == sorted(self._classes)
            self.inlet = inlet
            log.info("feedback stream %r connected (%d channels)", self.name,
                     info.channel_count())
            return

    def pull(self) -> list[tuple[float, np.ndarray | str]]:
        """Everything that arrived, as (arrival LSL time, value); never waits."""
        inlet = self.inlet
        if inlet is None:
            return []
        try:
            data, stamps = inlet.pull_chunk(timeout=0.0, max_samples=1024)
        except Exception as exc:  # noqa: BLE001 - LostError: drop it, never stop the device
            log.warning("feedback stream %r lost: %s", self.name, exc)
            self.inlet = None
            return []
        if not stamps:
            return []
        now = self._pylsl.local_clock()
        self.received += len(stamps)
        out: list[tuple[float, np.ndarray | str]] = []
        for row in data:
            if self.is_string:
                out.append((now, str(row[0])))
            elif self.is_classes:
                out.append((now, self.labels[int(np.argmax(row))]))
            else:
                out.append((now, np.asarray(row, dtype=np.float64)))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.inlet = None


class StreamRecorder:
    """Writes to an XDF file from a background thread (never blocks the pacing loop)."""

    def __init__(self, path: Path) -> None:
        from bci_runtime.xdf_writer import XdfWriter

        self.writer = XdfWriter(path)  # ConfigError when the file exists
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sim-record", daemon=True)
        self._thread.start()

    def put(self, sid: int, data: Any, stamps: np.ndarray) -> None:
        self._queue.put((sid, data, stamps))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                self.writer.write_samples(*item)
            except BaseException as exc:  # noqa: BLE001 - reported at the end
                self.error = exc

    def mark_clock(self, now: float) -> None:
        """Record a zero clock offset for every stream (they are stamped on this machine's
        clock), as LabRecorder records offsets; pyxdf expects at least one per stream."""
        for sid in self.writer.stream_ids:
            self.writer.write_clock_offset(sid, now, 0.0)

    def close(self, now: float | None = None) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        if now is not None and not self.writer.closed and self.error is None:
            self.mark_clock(now)
        self.writer.close()
