"""Ctrl-C and SIGTERM as a stop request, for the duration of a run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(request_stop: Callable[[str], Any]) -> Iterator[None]:
    """Call ``request_stop(reason)`` on SIGINT or SIGTERM while the block runs.

    The handler runs on the main thread, which may hold a lock that
    ``request_stop`` needs: it hands the request to a fresh thread instead of
    taking locks itself. The previous handlers come back on exit.
    """

    def on_signal(signum: int, frame: Any) -> None:
        reason = f"{signal.Signals(signum).name} received"
        threading.Thread(target=request_stop, args=(reason,), daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def emergency_stop_on_signal(emergency_stop: Callable[[str], Any]) -> Iterator[None]:
    """Call ``emergency_stop("signal SIGUSR1")`` on SIGUSR1 while the block runs.

    On a fresh thread, like :func:`stop_on_signals`: the main thread may hold the
    actuator's lock.
    """

    def on_signal(signum: int, frame: Any) -> None:
        threading.Thread(target=emergency_stop, args=("signal SIGUSR1",), daemon=True).start()

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
