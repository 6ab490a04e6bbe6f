"""Clocks: the live LSL clock and a simulated clock for deterministic runs."""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol


class Clock(Protocol):
    """Source of the runtime's notion of now, in seconds."""

    simulated: bool

    def now(self) -> float:
        """Current time in seconds."""
        ...


class LslClock:
    """LSL's ``local_clock()``: the monotonic clock every LSL timestamp uses.

    liblsl reads ``std::chrono::steady_clock``, which on Linux is
    ``CLOCK_MONOTONIC``, the same clock as :func:`time.monotonic`. When the two
    agree (checked once), ``now`` uses the cheaper Python call; otherwise it calls
    liblsl.
    """

    simulated = False

    def __init__(self) -> None:
        import pylsl

        same = abs(pylsl.local_clock() - time.monotonic()) < 1e-3
        self._read: Callable[[], float] = time.monotonic if same else pylsl.local_clock

    def now(self) -> float:
        """Current LSL time in seconds."""
        return self._read()


class SimulatedClock:
    """A clock that only moves when told to.

    The scheduler sets it to the due time of each chunk before dispatching it, so
    a run is deterministic and goes as fast as the CPU allows.

    Parameters
    ----------
    start : float
        Initial time in seconds.
    """

    simulated = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current simulated time."""
        return self._now

    def advance_to(self, t: float) -> None:
        """Move the clock forward to ``t`` (never backwards)."""
        with self._lock:
            if t > self._now:
                self._now = float(t)
