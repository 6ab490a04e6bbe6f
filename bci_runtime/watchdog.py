"""A watchdog that forces the safe state when what drives an actuator goes stale.

:class:`Watchdog` is fed every time new data arrive (a chunk of the driving
stream, a heartbeat of the graph). A thread of its own sleeps until the
deadline ``last feed + timeout`` (an event wait, not a polling loop: a feed
just moves the deadline), and when the deadline passes unfed it calls
``on_trip(reason)`` once; :meth:`Watchdog.trip` does the same at once for what
the caller sees itself (NaN/Inf input, a decoder failure). After a trip it
stays tripped until :meth:`Watchdog.reset` (the operator re-arms).

Timeouts: :func:`stale_timeout` for a driving stream, max(3 sample periods,
50 ms); 100 ms for the graph's heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bci_runtime.errors import ConfigError

#: the heartbeat of the graph may be missing this long (s)
HEARTBEAT_TIMEOUT_S = 0.1


def stale_timeout(srate: float, floor_s: float = 0.05) -> float:
    """How long a stream at ``srate`` Hz may send nothing: max(3 sample periods, 50 ms)."""
    return max(3.0 / srate, floor_s) if srate > 0 else floor_s


class Watchdog:
    """Calls ``on_trip(reason)`` once when not fed for ``timeout_s``, or when told to trip.

    Parameters
    ----------
    timeout_s : float
    on_trip : callable
        ``on_trip(reason)``, called from the watchdog's thread (a deadline) or
        the caller's (:meth:`trip`). It must be quick: it forces the safe state.
    name : str
        What is watched, for the reasons ("input", "heartbeat").
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, timeout_s: float, on_trip: Callable[[str], None], name: str = "input",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"watchdog '{name}': timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.on_trip = on_trip
        self.name = name
        self.clock = clock
        self.tripped: str | None = None
        self.trip_deadline: float | None = None  # when the newest trip was due (clock s)
        self.late_s: list[float] = []  # how long after its deadline each trip fired
        self._deadline = clock() + timeout_s
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._watch, name=f"watchdog-{name}",
                                        daemon=True)
        self._thread.start()

    def feed(self) -> None:
        """New data arrived: the deadline moves to now + timeout."""
        self._deadline = self.clock() + self.timeout_s  # one store: no lock on the hot path

    def trip(self, reason: str) -> None:
        """Force the safe state now (NaN input, a decoder failure)."""
        with self._cond:
            if self.tripped is not None:
                return
            self.tripped = reason
            self.trip_deadline = self.clock()
        self.on_trip(reason)

    def reset(self) -> None:
        """Watch again from now (after the operator re-armed)."""
        with self._cond:
            self.tripped = None
            self._deadline = self.clock() + self.timeout_s
            self._cond.notify()

    def close(self) -> None:
        """Stop watching."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(1.0)

    def _watch(self) -> None:
        with self._cond:
            while not self._stop:
                if self.tripped is not None:
                    self._cond.wait()  # until reset or close
                    continue
                wait = self._deadline - self.clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                late = -wait
                self.trip_deadline = self._deadline
                self.tripped = (f"{self.name} stale: nothing for "
                                f"{(self.timeout_s + late) * 1000:.1f} ms (limit "
                                f"{self.timeout_s * 1000:.1f} ms)")
                self.late_s.append(late)
                reason = self.tripped
                self._cond.release()
                try:
                    self.on_trip(reason)
                finally:
                    self._cond.acquire()
