"""LSL outlet sinks: publish any stream of the graph with full metadata."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, EventChunk
from bci_runtime.lsl import import_pylsl, linger_for_consumers, spec_to_info
from bci_runtime.node import Input, Node, NodeContext, NodeParams
from bci_runtime.spec import StreamSpec


class LslOutletParams(NodeParams):
    name: str | None = Field(None, description="LSL stream name (default: the input stream's)")
    type: str | None = Field(None, description="LSL stream type (default: the input stream's)")
    source_id: str | None = Field(None, description="unique source_id (default: derived from "
                                  "the node name and process id)")


class _OutletBase(Node):
    Params = LslOutletParams

    def _info(self, spec: StreamSpec) -> Any:
        p = self.params
        spec = spec.with_changes(name=p.name or spec.name, type=p.type or spec.type)
        source_id = p.source_id or f"bci-runtime-{self.name}-{os.getpid()}"
        return spec_to_info(spec, source_id)

    def close(self) -> None:
        linger_for_consumers([getattr(self, "_outlet", None)])  # None if open failed
        self._outlet = None


class LslOutlet(_OutletBase):
    """Publishes a numeric stream (decoder output, control signal) as an LSL outlet.

    Each chunk is pushed with its own sample timestamps, so consumers see the
    time of the newest input sample each output was computed from.
    """

    type_name = "lsl_outlet"
    signal = Input("signal", doc="any numeric stream")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        pylsl = import_pylsl()
        spec = self.input_specs["signal"]
        self._outlet = pylsl.StreamOutlet(self._info(spec), chunk_size=1, max_buffered=60)
        self._dtype = np.float32 if spec.dtype == "float32" else np.float64

    def process(self, port: str, chunk: AnyChunk) -> None:
        data = chunk.data if chunk.data.dtype == self._dtype else chunk.data.astype(self._dtype)  # type: ignore[union-attr]
        self._outlet.push_chunk(data, chunk.timestamps.tolist(), pushthrough=True)
        return None


class LslMarkerOutlet(_OutletBase):
    """Publishes an event stream (markers, cues) as an LSL string outlet."""

    type_name = "lsl_marker_outlet"
    events = Input("events", doc="any event stream")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        pylsl = import_pylsl()
        self._outlet = pylsl.StreamOutlet(self._info(self.input_specs["events"]))

    def process(self, port: str, chunk: AnyChunk) -> None:
        markers = chunk.markers if isinstance(chunk, EventChunk) else ()
        for marker, ts in zip(markers, chunk.timestamps.tolist()):
            self._outlet.push_sample([marker], ts)
        return None
