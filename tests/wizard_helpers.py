"""A calibration wizard served for a test: its real server on 127.0.0.1 and an HTTP client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bci_runtime.web.wizard.app import create_app
from bci_runtime.web.wizard.server import ServerThread
from bci_runtime.web.wizard.wizard import Wizard

#: seconds a step of a live wizard run may take before a test gives up
WAIT_S = 120


def until(condition: Any, what: str, wait_s: float = WAIT_S) -> None:
    """Poll ``condition()`` every 0.1 s until it is true; fail naming ``what`` after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def signal_checked(client: httpx.Client, patient: dict[str, Any]) -> dict[str, Any]:
    """Step 1 with ``patient``, then the signal check passed once the quality is there."""
    state = client.post("/api/patient", json=patient).json()
    assert state.get("step") == "signal", state
    until(lambda: client.get("/api/quality").json()["channels"], "signal quality")
    return client.post("/api/signal/done", json={}).json()


def feed(url: str, seconds: float) -> list[dict[str, Any]]:
    """What the wizard's run feed (``/ws/run``) says for ``seconds``."""
    from websockets.sync.client import connect

    out: list[dict[str, Any]] = []
    with connect(url.replace("http://", "ws://") + "ws/run") as socket:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(json.loads(socket.recv(timeout=left)))
            except TimeoutError:
                break
    return out


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
