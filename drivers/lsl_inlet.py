"""LSL inlet source: resolves a stream, checks it against the pipeline, streams it."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.errors import SpecMismatchError, StreamNotFoundError
from bci_runtime.lsl import import_pylsl, info_to_spec
from bci_runtime.node import BlockingSource, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec

READ_SPAN_S = 0.1  # at most this much signal per read: pylsl allocates a buffer this size


class LslInletParams(NodeParams):
    name: str | None = Field(None, description="stream name to resolve")
    type: str | None = Field(None, description="stream type to resolve (EEG, ECoG...)")
    source_id: str | None = Field(None, description="stream source_id to resolve")
    channels: int = Field(..., ge=1, description="channel count the pipeline expects")
    srate: float = Field(..., gt=0, description="nominal rate the pipeline expects (Hz)")
    channel_names: list[str] | None = Field(None, description="labels the pipeline expects")
    resolve_timeout_s: float = Field(10.0, gt=0, description="how long to look for the stream")
    buffer_s: int = Field(1, ge=1, description="inlet buffer; short so data are never old")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="sample type delivered downstream; float64 keeps double "
        "streams (and large sample counters) exact")
    coalesce_ms: float = Field(0.5, ge=0, le=20, description="longest wait for the rest of a "
                               "chunk whose first samples arrived alone (0: never wait)")

    @model_validator(mode="after")
    def _query(self) -> LslInletParams:
        if not (self.name or self.type or self.source_id):
            raise ValueError("give at least one of 'name', 'type' or 'source_id' to find the stream")
        if self.channel_names is not None and len(self.channel_names) != self.channels:
            raise ValueError(f"{len(self.channel_names)} channel_names for {self.channels} channels")
        return self


class LslInlet(BlockingSource):
    """Receives a numeric LSL stream; wakes the graph as soon as samples arrive.

    The inlet thread blocks in liblsl until the first sample of a chunk arrives,
    then takes whatever else is already there, so no time is spent waiting for a
    chunk to fill. Timestamps are mapped to the local clock (LSL clock sync).
    """

    type_name = "lsl_inlet"
    Params = LslInletParams
    signal = Output("signal", doc="the stream's samples, (n_samples, n_channels)")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        names = tuple(p.channel_names or [f"ch{i + 1}" for i in range(p.channels)])
        spec = StreamSpec(name=p.name or p.type or p.source_id or self.name, type=p.type or "EEG",
                          channel_names=names, srate=p.srate, dtype=p.dtype,
                          source_id=p.source_id or "")
        return {"signal": spec}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        pylsl = import_pylsl()
        p = self.params
        preds = [f"{key}='{value}'" for key, value in
                 (("name", p.name), ("type", p.type), ("source_id", p.source_id)) if value]
        predicate = " and ".join(preds)
        found = pylsl.resolve_bypred(predicate, 1, p.resolve_timeout_s)
        if not found:
            others = pylsl.resolve_streams(wait_time=1.0)
            listing = "; ".join(f"{s.name()} (type {s.type()}, source_id {s.source_id()}, "
                                f"{s.channel_count()} ch @ {s.nominal_srate():g} Hz)"
                                for s in others) or "none"
            raise StreamNotFoundError(
                f"node '{self.name}': no LSL stream matched {predicate} within "
                f"{p.resolve_timeout_s:g} s; streams seen: {listing}",
                hint="start the device or its LSL app, or fix name/type/source_id",
            )
        inlet = pylsl.StreamInlet(found[0], max_buflen=p.buffer_s, max_chunklen=0,
                                  recover=False, processing_flags=pylsl.proc_clocksync)
        try:
            remote = info_to_spec(inlet.info(timeout=p.resolve_timeout_s))
            self._check(remote)
            inlet.open_stream(timeout=p.resolve_timeout_s)
        except BaseException:
            inlet.close_stream()
            raise
        self._inlet = inlet
        self._flushed = False  # flushed at the first read, when the run has started
        self._lost = False
        # the device's metadata refine the declared spec: its channel types and units,
        # and its labels where the pipeline did not name channels (the graph passes the
        # refined spec on to downstream nodes before they open)
        declared = self.output_specs.get("signal") or self.configure({})["signal"]
        self._spec = declared.with_changes(
            channel_names=declared.channel_names if p.channel_names else remote.channel_names,
            channel_types=remote.channel_types, units=remote.units,
            name=remote.name, type=remote.type, source_id=remote.source_id)
        self.output_specs["signal"] = self._spec
        from pylsl.util import LostError

        self._lost_error = LostError
        self._srate = remote.srate
        self._max_samples = max(16, int(READ_SPAN_S * remote.srate))
        self._dtype = np.dtype(p.dtype)
        self._coalesce_s = p.coalesce_ms / 1e3
        self._lag_floor = float("inf")
        self._floor_rise = 0.01 / remote.srate  # the usual delay may grow back slowly
        context.emit_event("stream_connected", node=self.name, stream=remote.name,
                           source_id=remote.source_id, channels=remote.n_channels,
                           srate=remote.srate)

    def _check(self, remote: StreamSpec) -> None:
        p = self.params
        problems = []
        if remote.dtype == "string":
            problems.append("it is a string (marker) stream, not a numeric signal")
        if remote.n_channels != p.channels:
            problems.append(f"it has {remote.n_channels} channels, the pipeline expects {p.channels}")
        if abs(remote.srate - p.srate) > 1e-6 * max(1.0, p.srate):
            problems.append(f"its nominal rate is {remote.srate:g} Hz, the pipeline expects {p.srate:g} Hz")
        if p.channel_names and list(remote.channel_names) != p.channel_names:
            problems.append(f"its channel labels are {list(remote.channel_names)}, the pipeline "
                            f"expects {p.channel_names}")
        if problems:
            raise SpecMismatchError(
                f"node '{self.name}': LSL stream '{remote.name}' does not fit: " + "; ".join(problems),
                hint="fix 'channels'/'srate'/'channel_names' in the pipeline or choose another stream",
            )

    def read_blocking(self, timeout: float) -> dict[str, AnyChunk] | None:
        if not self._flushed:  # never compute feedback on samples older than the run
            self._inlet.flush()
            self._flushed = True
        try:
            data, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self._max_samples,
                                              min_samples=1, as_numpy=True)
            if len(ts) == 0:
                return None
            data, ts = self._complete_chunk(data, ts)
        except self._lost_error:
            self._lost = True
            raise StreamNotFoundError(f"node '{self.name}': the LSL stream was lost",
                                      hint="check the device and its LSL app") from None
        if data.dtype != self._dtype:
            data = data.astype(self._dtype)
        return {"signal": Chunk(data, ts, self._spec)}

    def _complete_chunk(self, data: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Wait, briefly and event-driven, for the rest of a chunk already on its way.

        liblsl hands samples over one by one, so the first sample of a pushed
        chunk can wake us while the others are still being received, microseconds
        behind. Samples the device has produced but we do not have yet are those
        whose time (newest timestamp + k / srate) lies before ``now`` minus the
        stream's usual transport delay (a slowly rising running minimum of the
        lag). We wait for exactly those, at most ``coalesce_ms``; a stream that
        is simply late costs nothing, since its usual delay is subtracted.
        """
        lag = time.monotonic() - float(ts[-1])
        self._lag_floor = min(self._lag_floor + self._floor_rise, lag)
        missing = min(int((lag - self._lag_floor) * self._srate), self._max_samples)
        if missing < 1 or self._coalesce_s <= 0:
            return data, ts
        more, more_ts = self._inlet.pull_chunk(timeout=self._coalesce_s, max_samples=missing,
                                               min_samples=missing, as_numpy=True)
        if len(more_ts) == 0:
            return data, ts
        return np.concatenate((data, more)), np.concatenate((ts, more_ts))

    @property
    def exhausted(self) -> bool:
        return getattr(self, "_lost", False)

    def close(self) -> None:
        inlet = getattr(self, "_inlet", None)
        if inlet is not None:
            inlet.close_stream()
            self._inlet = None
