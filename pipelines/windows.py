"""Sliding windows and window features."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.ringbuffer import RingBuffer
from bci_runtime.spec import StreamSpec, require_regular

_EPS = 1e-30


class LogVarianceParams(NodeParams):
    window_s: float = Field(0.25, gt=0, description="window length (s)")
    step_s: float = Field(0.0, ge=0, description="hop between windows (s); 0 = one window "
                          "per arriving chunk")


class LogVariance(Node):
    """Log-variance of each channel over a sliding window (band power features).

    Samples go into a preallocated ring buffer whose windows are contiguous
    views, so a window costs one variance, no copy. Each output sample is
    stamped with the newest input sample of its window.
    """

    type_name = "log_variance"
    Params = LogVarianceParams
    signal = Input("signal", doc="regularly sampled signal")
    features = Output("signal", doc="(n_windows, n_channels) log-variance, one row per window")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        spec = inputs["signal"]
        require_regular(spec, node=self.name, port="signal")
        n = int(round(self.params.window_s * spec.srate))
        if n < 2:
            raise self.spec_error("signal", f"window_s {self.params.window_s:g} s is under two "
                                  f"samples at {spec.srate:g} Hz", hint="lengthen the window")
        units = tuple(f"log({u}^2)" for u in spec.units)
        return {"features": StreamSpec(
            name=f"{spec.name}-logvar", type="Features",
            channel_names=tuple(f"{c}-logvar" for c in spec.channel_names),
            srate=0.0, dtype="float64", channel_types=("misc",) * spec.n_channels,
            units=units, source_id=spec.source_id,
        )}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        spec = self.input_specs["signal"]
        self._n = int(round(self.params.window_s * spec.srate))
        self._step = int(round(self.params.step_s * spec.srate))
        self._ring = RingBuffer(self._n + max(self._step, 1), spec.n_channels, np.float64)
        self._since = 0  # samples since the last window
        self._out_spec = self.output_specs["features"]

    def _window(self) -> tuple[np.ndarray, float]:
        data, times = self._ring.latest(self._n)
        return np.log(data.var(axis=0) + _EPS), float(times[-1])

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        x, ts = chunk.data, chunk.timestamps  # type: ignore[union-attr]
        ring = self._ring
        if self._step == 0:
            ring.write(x, ts)
            if len(ring) < self._n:
                return None
            feats, t = self._window()
            return {"features": Chunk(feats[None, :], np.array([t]), self._out_spec)}
        rows, stamps = [], []
        start, total = 0, x.shape[0]
        while start < total:
            take = min(self._step - self._since, total - start)
            ring.write(x[start:start + take], ts[start:start + take])
            start += take
            self._since += take
            if self._since == self._step:
                self._since = 0
                if len(ring) >= self._n:
                    feats, t = self._window()
                    rows.append(feats)
                    stamps.append(t)
        if not rows:
            return None
        return {"features": Chunk(np.vstack(rows), np.array(stamps), self._out_spec)}
