"""Causal filters that keep their state across chunks."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import signal as sps

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec, require_regular


class BandpassParams(NodeParams):
    low: float = Field(..., gt=0, description="lower edge (Hz)")
    high: float = Field(..., gt=0, description="upper edge (Hz)")
    order: int = Field(4, ge=1, le=12, description="filter order (per edge)")
    kind: Literal["butter", "cheby1", "bessel"] = Field("butter", description="IIR design")

    @model_validator(mode="after")
    def _edges(self) -> BandpassParams:
        if self.low >= self.high:
            raise ValueError(f"'low' ({self.low} Hz) must be below 'high' ({self.high} Hz)")
        return self


class Bandpass(Node):
    """Causal IIR band-pass (second-order sections, scipy ``sosfilt``) with kept state.

    The state starts at the steady state for the first sample's value, so a DC
    offset does not ring through the first second of output.
    """

    type_name = "bandpass"
    Params = BandpassParams
    signal = Input("signal", doc="regularly sampled signal, (n_samples, n_channels)")
    filtered = Output("signal", doc="band-passed signal, float64, same shape")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        spec = inputs["signal"]
        require_regular(spec, node=self.name, port="signal")
        nyquist = spec.srate / 2
        if self.params.high >= nyquist:
            raise self.spec_error(
                "signal", f"'high' {self.params.high:g} Hz is not below the Nyquist frequency "
                f"{nyquist:g} Hz of '{spec.name}' ({spec.srate:g} Hz)",
                hint="lower 'high' or feed a faster stream",
            )
        return {"filtered": spec.with_changes(dtype="float64")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p, spec = self.params, self.input_specs["signal"]
        design = {"butter": sps.butter, "cheby1": lambda *a, **k: sps.cheby1(a[0], 0.5, *a[1:], **k),
                  "bessel": sps.bessel}[p.kind]
        self._sos = design(p.order, [p.low, p.high], btype="bandpass", fs=spec.srate, output="sos")
        self._zi_unit = sps.sosfilt_zi(self._sos)  # (n_sections, 2)
        self._zi: np.ndarray | None = None
        self._out_spec = self.output_specs["filtered"]

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        x = chunk.data  # type: ignore[union-attr]
        if self._zi is None:
            self._zi = self._zi_unit[:, :, None] * x[0].astype(np.float64)[None, None, :]
        y, self._zi = sps.sosfilt(self._sos, x, axis=0, zi=self._zi)
        return {"filtered": Chunk(y, chunk.timestamps, self._out_spec)}
