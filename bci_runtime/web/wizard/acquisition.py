"""The signal the wizard shows: a source run alone, its newest seconds kept for the page.

:class:`Acquisition` runs the chosen source (simulator, LSL stream, BrainFlow
board) in a one-node pipeline on the live clock, and taps each chunk into a
circular buffer of the last ``seconds`` and into a quality monitor. The page
reads decimated traces and the quality a few times per second; nothing here
waits on the page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from bci_runtime.errors import BciError, RunError
from bci_runtime.graph import load_graph_text
from bci_runtime.ringbuffer import RingBuffer
from bci_runtime.runner import Runner
from bci_runtime.spec import StreamSpec


class Acquisition:
    """Runs ``source`` (a pipeline node entry) and keeps its newest ``seconds`` of signal.

    Parameters
    ----------
    source : dict
        The node's pipeline entry (``{"type": ..., "params": ...}``).
    seconds : float
        How much signal the traces show.
    monitor_factory : callable, optional
        ``monitor_factory(srate, channel_names)``: an object with ``update(data)``
        (shape (n_samples, n_channels)) and ``assess()``, fed every chunk.
    emit_event : callable, optional
        Runtime events (a stream lost, a bad chunk) for the wizard's log.
    """

    def __init__(self, source: dict[str, Any], seconds: float = 5.0,
                 monitor_factory: Callable[[float, list[str]], Any] | None = None,
                 emit_event: Callable[..., None] | None = None) -> None:
        config = {"name": "wizard-signal-check", "clock": "live", "nodes": {"source": source}}
        self.graph = load_graph_text(yaml.safe_dump(config), "<wizard source>")
        self.spec: StreamSpec = self.graph.specs[("source", "signal")]
        self.srate = float(self.spec.srate)
        self.channel_names = list(self.spec.channel_names)
        self._buffer = RingBuffer(max(1, int(round(seconds * self.srate))), self.spec.n_channels)
        self._lock = threading.Lock()  # buffer copy-out vs write; both are short
        self.monitor = monitor_factory(self.srate, self.channel_names) \
            if monitor_factory is not None else None
        self.runner = Runner(self.graph, emit_event=emit_event)
        self.runner.tap = self._tap
        self._thread: threading.Thread | None = None
        self.error: BciError | None = None

    def start(self) -> None:
        """Run the source on its own thread until :meth:`stop`."""
        def run() -> None:
            result = self.runner.run()
            if result.error is not None:
                self.error = result.error

        self._thread = threading.Thread(target=run, name="wizard-acquisition", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the source and wait for it (idempotent)."""
        self.runner.request_stop("wizard step done")
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _tap(self, node: str, outputs: Any, now: float, read: bool) -> None:
        chunk = outputs.get("signal") if node == "source" else None
        if chunk is None:
            return
        with self._lock:
            self._buffer.write(chunk.data, chunk.timestamps)
        if self.monitor is not None:
            self.monitor.update(chunk.data)

    def newest(self) -> np.ndarray:
        """The newest seconds in time order, shape (n_samples, n_channels) (fewer at first)."""
        with self._lock:
            n = len(self._buffer)
            if not n:
                return np.empty((0, self._buffer.n_channels))
            return self._buffer.latest(n)[0].copy()  # a view until the next write: copied

    def traces(self, points: int = 400) -> dict[str, Any]:
        """Decimated traces for the page: per channel ``points`` values in µV, min/max kept."""
        data = self.newest()
        if self.error is not None:
            raise RunError(f"the signal stopped: {self.error}")
        if not len(data):
            return {"channels": self.channel_names, "srate": self.srate, "uv": []}
        step = max(1, len(data) // points)
        usable = (len(data) // step) * step
        blocks = data[len(data) - usable:].reshape(-1, step, data.shape[1])
        # min and max of each block, alternating: spikes stay visible after decimation
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        both = np.empty((2 * len(lo), data.shape[1]))
        both[0::2], both[1::2] = lo, hi
        uv = np.nan_to_num(both * 1e6, nan=0.0, posinf=0.0, neginf=0.0)
        return {"channels": self.channel_names, "srate": self.srate,
                "seconds": len(data) / self.srate, "uv": np.round(uv.T, 2).tolist()}
