"""Commands for an external stimulator as LSL markers.

For a stimulator driven by other software (a vendor's program listening to
LSL), each train the supervisor let through is one JSON marker on the string
stream ``<node>-commands`` (type ``StimulationCommands``)::

    {"cmd": "train", "contact": "E1", "amplitude_ma": 1.5, "width_us": 90,
     "phase2_amplitude_ma": 1.5, "phase2_width_us": 90, "frequency_hz": 130,
     "n_pulses": 20}

and a safe state is ``{"cmd": "stop", "reason": "..."}``. The listener must
replace a train still running on the same contact and stop everything on
``stop``. Markers carry the runtime clock's timestamp of the decision.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from bci_runtime.drivers.stimulator_driver import DriverContext, StimulatorDriver
from bci_runtime.lsl import import_pylsl, linger_for_consumers, spec_to_info
from bci_runtime.safety import PulseRequest
from bci_runtime.spec import StreamSpec


class LslMarkerStimulator(StimulatorDriver):
    """Sends checked trains and stops as JSON markers over LSL."""

    type_name = "lsl_markers"

    def __init__(self) -> None:
        self._outlet: Any = None
        self._lock = threading.Lock()
        self.sent = 0

    def open(self, context: DriverContext) -> None:
        super().open(context)
        pylsl = import_pylsl()
        spec = StreamSpec(name=f"{context.name}-commands", type="StimulationCommands",
                          channel_names=("command",), srate=0.0, dtype="string",
                          source_id=context.source_id)
        self._outlet = pylsl.StreamOutlet(spec_to_info(spec), chunk_size=1, max_buffered=60)
        self._push({"cmd": "stop", "reason": "open"}, None)

    def _push(self, command: dict[str, Any], t: float | None) -> None:
        marker = json.dumps(command, separators=(",", ":"))
        with self._lock:
            if self._outlet is not None:
                if t is None:
                    self._outlet.push_sample([marker], pushthrough=True)
                else:
                    self._outlet.push_sample([marker], t, pushthrough=True)

    def deliver(self, pulse: PulseRequest, t: float) -> None:
        a2 = pulse.amplitude_ma if pulse.phase2_amplitude_ma is None \
            else pulse.phase2_amplitude_ma
        w2 = pulse.width_us if pulse.phase2_width_us is None else pulse.phase2_width_us
        self._push({"cmd": "train", "contact": pulse.contact, "amplitude_ma": pulse.amplitude_ma,
                    "width_us": pulse.width_us, "phase2_amplitude_ma": a2,
                    "phase2_width_us": w2, "frequency_hz": pulse.frequency_hz,
                    "n_pulses": pulse.n_pulses}, t)
        self.sent += 1

    def safe_state(self, reason: str) -> None:
        try:
            self._push({"cmd": "stop", "reason": reason}, None)
        except Exception:  # never raise from a safe state
            pass

    def close(self) -> None:
        self.safe_state("close")
        linger_for_consumers([self._outlet])
        with self._lock:
            self._outlet = None

    def summary(self) -> dict[str, Any]:
        return {"commands": self.sent}
