"""A calibration wizard served for a test: its real server on 127.0.0.1 and an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

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
