"""The stimulator driver interface: what a stimulator node drives, behind the supervisor.

A driver only ever receives pulse trains the
:class:`~bci_runtime.safety.SafetySupervisor` let through: the stimulator node
holds the driver privately and calls :meth:`StimulatorDriver.deliver` with a
decision's pulse, under the same lock as the decision, so that no path from the
decoder to the device skips the check.

Semantics every driver keeps:

* :meth:`~StimulatorDriver.deliver` starts a train of ``n_pulses`` biphasic
  pulses on one contact at the contact's **next pulse slot**: now, or, when the
  contact's previous train (running, stopped or finished) would have had its
  next pulse later, then (its pulse clock is kept, so pulses on a contact never
  come closer than that train's period); a train still running on that contact
  is **replaced** (continuous modulation sends overlapping trains; the
  supervisor accounts only the pulses the replaced train really delivered);
* :meth:`~StimulatorDriver.safe_state` stops every output at once; it is
  idempotent, quick, callable from any thread (a watchdog's), and must not raise
  for a device that is already gone;
* a device that refuses a command or stops answering raises
  :class:`~bci_runtime.errors.StimulatorError`, after forcing its output safe.

Drivers: ``simulated`` (records every pulse, :mod:`.simulated_stimulator`),
``serial`` (a line protocol for a microcontroller-driven stimulator,
:mod:`.serial_stimulator`), ``lsl_markers`` (commands as LSL markers for an
external stimulator, :mod:`.lsl_marker_stimulator`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bci_runtime.safety import PulseRequest
from bci_runtime.stim_limits import StimulationLimits


@dataclass
class DriverContext:
    """What a driver gets when it opens.

    Attributes
    ----------
    name : str
        The stimulator node's name (for stream names and messages).
    limits : StimulationLimits
        The declared envelope (a driver may check what it is sent against it).
    emit_event : callable
        ``emit_event(kind, **fields)`` into the session's events log.
    session_dir : Path or None
        The session folder, when the run writes one.
    source_id : str
        A unique id for the LSL streams the driver creates.
    """

    name: str
    limits: StimulationLimits
    emit_event: Callable[..., None] = field(default=lambda kind, **fields: None)
    session_dir: Path | None = None
    source_id: str = "bci-stimulator"


class StimulatorDriver(ABC):
    """Base of stimulator drivers (see the module docstring for the contract)."""

    #: name used in pipeline files (``driver: {type: ...}``)
    type_name = ""

    def open(self, context: DriverContext) -> None:
        """Connect to the device; its output must be off when this returns."""
        self.context = context

    @abstractmethod
    def deliver(self, pulse: PulseRequest, t: float) -> None:
        """Start ``pulse`` (a checked train) on its contact now, replacing a running one.

        Parameters
        ----------
        pulse : PulseRequest
            What the supervisor let through.
        t : float
            Runtime clock time of the decision (s).
        """

    @abstractmethod
    def safe_state(self, reason: str) -> None:
        """Stop every output at once (idempotent, from any thread, never raises)."""

    def close(self) -> None:
        """Stop output and release the device."""

    def summary(self) -> dict[str, Any]:
        """Figures for the run's summary (pulses delivered, ...)."""
        return {}
