"""Actuator nodes: what acts on the world, and the runtime's ways to make them safe.

An :class:`Actuator` is a node whose output can hurt or mislead (a stimulator).
The runtime knows its actuators and makes them safe on every path where what
drives them can no longer be trusted, whichever thread or process sees it
first:

* a node fails anywhere in the graph (a decoder error) -> :meth:`Actuator.go_safe`;
* a worker process dies or its heartbeat stops for 100 ms -> :meth:`Actuator.go_safe`;
* the operator's emergency stop (a key, the web page, SIGUSR1) ->
  :meth:`Actuator.emergency_stop`;
* the actuator's own watchdog (stale or non-finite input) and :meth:`Node.close`.

After any of them the actuator stays off until the operator arms it again
(:meth:`Actuator.arm`).
"""

from __future__ import annotations

from typing import Any

from bci_runtime.node import Node


class Actuator(Node):
    """Base of nodes that drive an actuator behind a safety envelope.

    Every method here may be called from any thread and must return quickly.
    """

    def go_safe(self, reason: str, detected_at: float | None = None) -> None:
        """Force the safe state now and require a new arm.

        Parameters
        ----------
        reason : str
            Why (logged).
        detected_at : float, optional
            ``time.monotonic()`` when the cause was seen, for the safe-state latency.
        """
        raise NotImplementedError

    def emergency_stop(self, source: str) -> None:
        """The operator's stop: safe at once, logged with where it came from."""
        raise NotImplementedError

    def arm(self, by: str) -> bool:
        """Allow output (ramping up); False when refused (a lockout, not open)."""
        raise NotImplementedError

    def arming_summary(self) -> str:
        """What the operator confirms before arming (the effective limits)."""
        return self.name

    def safety_summary(self) -> dict[str, Any]:
        """Counts and safe-state latencies for ``bci run --json``'s ``safety`` block.

        Keys: ``stalls``, ``safe_state_ms`` (list of float: each safe state's delay
        from its cause), ``requests``, ``clamped``, ``rejected``,
        ``emitted_outside_limits``.
        """
        return {}
