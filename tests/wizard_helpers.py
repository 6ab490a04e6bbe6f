"""A calibration wizard served for a test: its real server on 127.0.0.1 and an HTTP client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bci_runtime.web.wizard.app import create_app
from bci_runtime.web.wizard.server import ServerThread
from bci_runtime.web.wizard.wizard import Wizard


@contextmanager
def serve(root: Path, **options: Any) -> Iterator[tuple[Wizard, httpx.Client, str]]:
    """A :class:`Wizard` on ``root`` (``options`` for it), served; closed on the way out."""
    wizard = Wizard(root, **options)
    server = ServerThread(create_app(wizard)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield wizard, client, server.url
    finally:
        server.stop()
        wizard.close()


class Amplifier:
    """A real LSL outlet streaming channels of noise in real time until closed.

    Parameters
    ----------
    name, source_id : str
        The stream's name and source_id (unique per test).
    kind : str
        Stream type (``EEG``, ``ECoG``).
    n_channels : int
    srate : float
        Hz; chunks of ``srate / 25`` samples, 25 a second.
    """

    def __init__(self, name: str, source_id: str, kind: str = "EEG", n_channels: int = 8,
                 srate: float = 250.0) -> None:
        import pylsl

        self.shape = (int(srate / 25), n_channels)
        info = pylsl.StreamInfo(name, kind, n_channels, srate, "float32", source_id)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=self.shape[0])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.wait(0.04):
            self.outlet.push_chunk((rng.standard_normal(self.shape) * 1e-5).astype(np.float32))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        del self.outlet  # the stream goes away, as when an amplifier's app ends
