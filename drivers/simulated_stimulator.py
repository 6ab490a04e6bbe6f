"""A simulated stimulator: records every train it would deliver, to LSL and the session.

Each train the supervisor let through becomes one sample of the LSL stream
``<node>-pulses`` (type ``Stimulation``, irregular rate) with its waveform:
the contact's index, the current and width of both phases, the pulse rate, the
number of pulses and the charge per phase; a safe state is a sample with every
value 0 but the contact, -1. The same rows go to the stimulator node's
``pulses`` output, so the session's XDF holds them too. A train replaces the one
still running on its contact, as the driver contract says.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from bci_runtime.drivers.stimulator_driver import DriverContext, StimulatorDriver
from bci_runtime.lsl import import_pylsl, linger_for_consumers, spec_to_info
from bci_runtime.safety import PulseRequest
from bci_runtime.spec import StreamSpec

#: one row per train (what the LSL stream and the node's ``pulses`` output carry)
PULSE_CHANNELS = ("contact", "amplitude_ma", "width_us", "phase2_amplitude_ma",
                  "phase2_width_us", "frequency_hz", "n_pulses", "charge_uc")
PULSE_UNITS = ("index", "mA", "us", "mA", "us", "Hz", "count", "uC")


def pulse_spec(name: str, source_id: str = "") -> StreamSpec:
    """Spec of a stream of delivered trains, shape (n_trains, 8)."""
    return StreamSpec(name=name, type="Stimulation", channel_names=PULSE_CHANNELS, srate=0.0,
                      dtype="float64", channel_types=("misc",) * len(PULSE_CHANNELS),
                      units=PULSE_UNITS, source_id=source_id)


def pulse_row(pulse: PulseRequest, contact_index: int) -> list[float]:
    """The 8 values of one train (phase 2 spelled out)."""
    a2 = pulse.amplitude_ma if pulse.phase2_amplitude_ma is None else pulse.phase2_amplitude_ma
    w2 = pulse.width_us if pulse.phase2_width_us is None else pulse.phase2_width_us
    return [float(contact_index), pulse.amplitude_ma, pulse.width_us, a2, w2,
            pulse.frequency_hz, float(pulse.n_pulses), pulse.charge_uc]


SAFE_ROW = [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


class SimulatedStimulator(StimulatorDriver):
    """Records trains instead of delivering them (no hardware).

    Parameters
    ----------
    lsl : bool
        Publish the trains as an LSL stream.
    """

    type_name = "simulated"

    def __init__(self, lsl: bool = True) -> None:
        self.lsl = lsl
        self.trains: list[tuple[float, PulseRequest]] = []
        self.safe_states = 0
        self.output_on = False
        self._outlet: Any = None
        self._lock = threading.Lock()

    def open(self, context: DriverContext) -> None:
        super().open(context)
        self._index = {c.name: i for i, c in enumerate(context.limits.contacts)}
        if self.lsl:
            pylsl = import_pylsl()
            spec = pulse_spec(f"{context.name}-pulses", context.source_id)
            self._outlet = pylsl.StreamOutlet(spec_to_info(spec), chunk_size=1,
                                              max_buffered=60)

    def deliver(self, pulse: PulseRequest, t: float) -> None:
        with self._lock:
            self.trains.append((t, pulse))
            self.output_on = True
            if self._outlet is not None:
                self._outlet.push_sample(pulse_row(pulse, self._index[pulse.contact]), t,
                                         pushthrough=True)

    def safe_state(self, reason: str) -> None:
        with self._lock:
            self.output_on = False
            self.safe_states += 1
            outlet = self._outlet
            if outlet is not None:
                try:
                    outlet.push_sample(SAFE_ROW, pushthrough=True)
                except Exception:  # never raise from a safe state
                    pass

    def close(self) -> None:
        self.safe_state("close")
        linger_for_consumers([self._outlet])
        self._outlet = None

    def summary(self) -> dict[str, Any]:
        n = np.array([p.n_pulses for _, p in self.trains], dtype=float)
        return {"trains": len(self.trains), "pulses": int(n.sum()),
                "safe_states": self.safe_states}
