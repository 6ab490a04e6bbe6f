"""Serving the wizard: a socket bound to loopback, and a server on a thread for tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from bci_runtime.errors import ConfigError, RunError


def bind_socket(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: any free one); the port is known at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"port {port} on 127.0.0.1 is not free: {exc.strerror}",
                          hint="another wizard may be running; use --port 0 for any free "
                          "port") from None
    sock.listen(64)
    return sock


class ServerThread:
    """Runs a uvicorn server for ``app`` on a thread (tests, embedding); :meth:`stop` ends it."""

    def __init__(self, app: Any, port: int = 0) -> None:
        import uvicorn

        self.sock = bind_socket(port)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    ws="websockets-sansio"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="wizard-server", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:  # uvicorn offers no event for it
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RunError("the wizard's server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
