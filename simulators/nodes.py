"""In-process simulator sources: deterministic, on any clock, as fast as the CPU allows.

One node type per paradigm (``simulated_eeg`` for motor imagery,
``simulated_ssvep``, ``simulated_ecog``, ``simulated_population``). Each takes
the paradigm's parameters plus ``chunk_size``, ``dtype``, ``drift`` and
``user``, and emits:

* ``signal`` — the simulated stream;
* ``markers`` — ground truth: task cues and trial boundaries, artifacts, drift;
* ``truth`` — continuous ground truth (cued class, or intended velocity, cursor
  and target), one row per sample.

Its optional ``feedback`` input closes the loop with the simulated user: connect
a decoder's output to it through a ``delayed`` edge. A row of class scores whose
channels are named after the classes is shown as the winning class; any other
signal as a control vector (cursor velocity).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.node import Emitted, Input, NodeContext, NodeParams, Output, Source
from bci_runtime.simulators.base import Block, Generator
from bci_runtime.simulators.ecog import EcogParams
from bci_runtime.simulators.motor_imagery import MotorImageryParams
from bci_runtime.simulators.paradigms import DriftParams, make_generator
from bci_runtime.simulators.population import PopulationParams
from bci_runtime.simulators.ssvep import SsvepParams
from bci_runtime.simulators.tasks import REST
from bci_runtime.simulators.user import UserParams
from bci_runtime.spec import StreamSpec

_NODE_FIELDS = ("chunk_size", "dtype", "drift", "user")


class SimulatorNodeParams(NodeParams):
    """What every simulator node adds to its paradigm's parameters."""

    chunk_size: int = Field(10, ge=1, le=10000, description="samples per chunk")
    dtype: Literal["float32", "float64"] = Field("float64", description="sample type")
    drift: DriftParams = Field(default_factory=DriftParams,
                               description="drift scenario (preset and components)")
    user: UserParams = Field(default_factory=UserParams, description="the simulated user")


class SimulatorSource(Source):
    """Base of the simulator nodes; subclasses set ``paradigm`` and ``Params``."""

    paradigm: ClassVar[str] = ""
    signal = Output("signal", doc="the simulated stream, (n_samples, n_channels)")
    markers = Output("events", doc="cues, trial boundaries, artifacts and drift events")
    truth = Output("signal", doc="continuous ground truth, (n_samples, n_truth)")
    feedback = Input("signal", required=False,
                     doc="what the runtime decoded, shown to the simulated user (delayed edge)")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.generator: Generator | None = None
        self.dropped_chunks = 0

    def paradigm_params(self) -> dict[str, Any]:
        """The parameters that belong to the paradigm (not to the node)."""
        return self.params.model_dump(exclude=set(_NODE_FIELDS))

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        desc = self._description()
        n = len(desc["channel_names"])
        sid = f"sim-{self.name}"
        specs = {
            "signal": StreamSpec(name=f"{self.name}-{desc['stream_type'].lower()}",
                                 type=desc["stream_type"], channel_names=desc["channel_names"],
                                 srate=desc["srate"], dtype=p.dtype,
                                 channel_types=desc["channel_types"], units=desc["units"],
                                 source_id=sid),
            "markers": StreamSpec.events(f"{self.name}-markers", f"{sid}-markers"),
        }
        if desc["truth_names"]:
            specs["truth"] = StreamSpec(name=f"{self.name}-truth", type="GroundTruth",
                                        channel_names=desc["truth_names"], srate=desc["srate"],
                                        dtype="float64", source_id=f"{sid}-truth")
        if n == 0:
            raise self.spec_error("signal", "the simulator has no channels")
        return specs

    def _description(self) -> dict[str, Any]:
        """The stream the node will produce (a throw-away generator describes it)."""
        gen = make_generator(self.paradigm, self.paradigm_params())
        return {"channel_names": gen.channel_names, "channel_types": gen.channel_types,
                "units": gen.units, "srate": gen.srate, "stream_type": gen.stream_type,
                "truth_names": gen.truth_names}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        seed = int(context.rng("simulator").integers(2**31 - 1))
        self.generator = make_generator(self.paradigm, self.paradigm_params(), seed=seed,
                                        drift=self.params.drift, user=self.params.user)
        self._transport_rng = context.rng("transport")
        self._t0: float | None = None  # the stream starts at the first chunk the run asks for
        self._dtype = np.dtype(self.params.dtype)
        self._classes = list(getattr(self.generator, "classes", []))

    def _start_time(self) -> float:
        if self._t0 is None:
            self._t0 = self.context.clock.now()  # type: ignore[union-attr]
        return self._t0

    def next_due(self) -> float | None:
        gen = self.generator
        last = gen.samples_generated + self.params.chunk_size - 1  # type: ignore[union-attr]
        return self._start_time() + last / gen.srate  # type: ignore[union-attr]

    def read(self) -> dict[str, AnyChunk]:
        gen = self.generator
        t0 = self._start_time()
        block: Block = gen.next_block(self.params.chunk_size)  # type: ignore[union-attr]
        times = t0 + np.arange(block.start, block.start + block.n_samples) / gen.srate
        out: dict[str, AnyChunk] = {}
        if block.markers:
            labels, idx = zip(*block.markers)
            out["markers"] = EventChunk(tuple(labels), t0 + np.array(idx) / gen.srate,
                                        self.output_specs["markers"])
        if block.truth is not None and "truth" in self.output_specs:
            out["truth"] = Chunk(block.truth, times, self.output_specs["truth"])
        stamps = self._transport(times, block)
        if stamps is not None:
            out["signal"] = Chunk(block.data.astype(self._dtype, copy=False), stamps,
                                  self.output_specs["signal"])
        return out

    def _transport(self, times: np.ndarray, block: Block) -> np.ndarray | None:
        """Apply transport faults: None when the chunk is lost, else its timestamps."""
        drift = self.generator.drift  # type: ignore[union-attr]
        if drift is None or not drift.transport:
            return times
        e = drift.effects_at(float(times[0] - self._t0))  # type: ignore[operator]
        if e.drop_prob and self._transport_rng.random() < e.drop_prob:
            self.dropped_chunks += 1
            return None
        shift = e.clock_offset_s
        if e.jitter_s:
            shift += abs(self._transport_rng.normal(0.0, e.jitter_s))  # late, never early
        return times + shift if shift else times

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if port != "feedback" or not isinstance(chunk, Chunk) or chunk.n_samples == 0:
            return None
        row = chunk.data[-1]
        names = list(chunk.spec.channel_names)
        value: np.ndarray | str
        if self._classes and sorted(names) == sorted(self._classes):
            value = names[int(np.argmax(row))]
        else:
            value = np.asarray(row, dtype=np.float64)
        self.generator.feedback(chunk.newest - self._start_time(), value)  # type: ignore[union-attr]
        return None

    def summary(self) -> dict[str, Any]:
        """Figures for the run summary."""
        gen = self.generator
        if gen is None:
            return {}
        out: dict[str, Any] = {"paradigm": self.paradigm, "samples": gen.samples_generated,
                               "scenario": self.params.drift.scenario}
        if self.dropped_chunks:
            out["dropped_chunks"] = self.dropped_chunks
        user = getattr(gen, "user", None)
        if user is not None:
            out["feedback_seen"] = user.feedback_seen
        return out


def _flat_params(paradigm_model: type[BaseModel], name: str) -> type[NodeParams]:
    """A node parameter model: the paradigm's fields plus the node's own."""
    return type(name, (SimulatorNodeParams, paradigm_model), {"__module__": __name__})


class SimulatedEeg(SimulatorSource):
    """Cued motor-imagery EEG through a spherical head model, with drift and a user.

    Markers: ``trial/start``, ``cue/<class>``, ``end``, ``trial/end``,
    ``artifact/...``, ``drift/...``; truth: the cued class index (-1 at rest).
    """

    type_name = "simulated_eeg"
    paradigm = "mi"
    Params = _flat_params(MotorImageryParams, "SimulatedEegParams")

    def _description(self) -> dict[str, Any]:
        p = self.params
        names = MotorImageryParams.model_validate(self.paradigm_params()).channel_names()
        n = len(names)
        return {"channel_names": names, "channel_types": ("eeg",) * n, "units": ("V",) * n,
                "srate": p.srate, "stream_type": "EEG", "truth_names": ("class",)}

    def true_labels(self, times: np.ndarray) -> list[str]:
        """Cued class (or ``rest``) at each runtime time, shape (n_times,)."""
        cued = self.generator.task.class_at(times - self._start_time())  # type: ignore[union-attr]
        return [self._classes[i] if i != REST else "rest" for i in cued.tolist()]


class SimulatedSsvep(SimulatorSource):
    """Cued SSVEP EEG: occipital responses at the flicker frequencies and harmonics.

    Classes are the frequencies (``"12Hz"``) and ``rest``; truth: the class index
    during a flicker trial (-1 between trials).
    """

    type_name = "simulated_ssvep"
    paradigm = "ssvep"
    Params = _flat_params(SsvepParams, "SimulatedSsvepParams")


class SimulatedEcog(SimulatorSource):
    """ECoG grid whose high gamma encodes cursor velocity or finger flexion (``kinematics``).

    ``kinematics: cursor`` runs the center-out task with the simulated user (truth:
    intended velocity, cursor and target; feed a decoded velocity back); ``fingers``
    runs cued finger flexions (truth: flexion of each finger; feed class scores back).
    """

    type_name = "simulated_ecog"
    paradigm = "ecog"
    Params = _flat_params(EcogParams, "SimulatedEcogParams")


class SimulatedPopulation(SimulatorSource):
    """Binned spike counts of cosine-tuned Poisson units (Kalman/ReFIT decoders).

    Runs the center-out task with the simulated user; truth: intended velocity,
    cursor and target.
    """

    type_name = "simulated_population"
    paradigm = "population"
    Params = _flat_params(PopulationParams, "SimulatedPopulationParams")
