"""LSL inlet source: resolves a stream, checks it against the pipeline, streams it.

Faults of the stream are reported as events the moment they are seen, and the
inlet tries to carry on by itself where that is safe:

- a stall (no data for longer than a threshold) is reported at once, instead of
  waiting for liblsl's 15 s recovery watchdog;
- a lost stream is looked for again, and re-attached only if it comes back with
  the very same spec; a stream that comes back changed (another rate, channel
  count, sample format or source_id) is blocked until the operator accepts it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.errors import SpecMismatchError, StreamNotFoundError
from bci_runtime.lsl import import_pylsl, info_to_spec
from bci_runtime.node import BlockingSource, Emitted, Input, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec

log = logging.getLogger(__name__)

READ_SPAN_S = 0.1  # at most this much signal per read: pylsl allocates a buffer this size
CONNECT_TIMEOUT_S = 2.0  # opening an inlet on a stream just resolved: bounds a stop's wait
CLOCK_EVERY_S = 5.0  # how often the clock offset in use is written to the events log
RECHECK_BLOCKED_S = 1.0  # while blocked, how often to look again at what is out there
RECHECK_RESOLVE_S = 0.1  # and how long such a look may wait for an answer

# liblsl's channel_format codes, named as liblsl names them
_FORMAT_NAMES = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8",
                 7: "int64"}
_STRING_FORMAT = 3


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
    stall_ms: float = Field(50.0, ge=1, description="report a stall after no data for "
                            "max(3 sample periods, this many ms); raise it above the "
                            "device's chunk interval")
    lost_timeout_s: float | None = Field(
        None, gt=0, description="fail the run when a lost stream has not come back after this "
        "many seconds (null: keep looking for it until the run ends)")

    @model_validator(mode="after")
    def _query(self) -> LslInletParams:
        if not (self.name or self.type or self.source_id):
            raise ValueError("give at least one of 'name', 'type' or 'source_id' to find "
                             "the stream")
        if self.channel_names is not None and len(self.channel_names) != self.channels:
            raise ValueError(f"{len(self.channel_names)} channel_names for {self.channels} "
                             "channels")
        return self


@dataclass(frozen=True)
class _Identity:
    """What a stream must keep to be re-attached silently after a loss."""

    name: str
    channels: int
    srate: float
    fmt: int  # liblsl channel_format code
    source_id: str

    @classmethod
    def of(cls, info: Any) -> _Identity:
        """The identity of a ``pylsl.StreamInfo`` (a resolved one is enough)."""
        return cls(info.name(), info.channel_count(), float(info.nominal_srate()),
                   info.channel_format(), info.source_id())

    @property
    def fmt_name(self) -> str:
        """The channel format as liblsl names it (``float32``, ``double64``...)."""
        return _FORMAT_NAMES.get(self.fmt, f"format {self.fmt}")

    def changes_to(self, new: _Identity) -> list[str]:
        """Plain sentences naming what differs in ``new``; empty when nothing does."""
        out = []
        if new.channels != self.channels:
            out.append(f"channel count {self.channels} -> {new.channels}")
        if not _same_rate(new.srate, self.srate):
            out.append(f"nominal rate {self.srate:g} Hz -> {new.srate:g} Hz")
        if new.fmt != self.fmt:
            out.append(f"channel format {self.fmt_name} -> {new.fmt_name}")
        if new.source_id != self.source_id:
            out.append(f"source_id '{self.source_id}' -> '{new.source_id}'")
        return out


def _same_rate(a: float, b: float) -> bool:
    """Whether nominal rate ``a`` is ``b`` (to a part per million)."""
    return abs(a - b) <= 1e-6 * max(1.0, b)


class LslInlet(BlockingSource):
    """Receives a numeric LSL stream; wakes the graph as soon as samples arrive.

    The inlet thread blocks in liblsl until the first sample of a chunk arrives,
    then takes whatever else is already there, so no time is spent waiting for a
    chunk to fill. The inlet's buffer is short (``buffer_s``) and flushed when the
    run starts and on every reconnect, so feedback is never computed on old data.

    Timestamps. The chunks carry the online copy of the timestamps: the device's
    own stamps mapped to the local clock by liblsl's clock synchronisation
    (``proc_clocksync``). So that the raw stamps can be recovered, the offset in
    use is written to the events log as ``clock_offset`` (``offset_s``) after the
    first data of each connection and then every 5 s; ``raw = online - offset_s``,
    with the offset of the latest ``clock_offset`` event before the sample (liblsl
    refreshes its estimate every few seconds; on one host it is about 0).

    Faults, each reported at once as an event (``node``, ``stream`` and
    ``source_id`` in every one):

    ``stream_stalled`` (``silent_ms``, ``threshold_ms``)
        No data for longer than max(3 sample periods, ``stall_ms``); once per
        silence. The wait for data in liblsl ends at that deadline, so the report
        comes when the threshold passes, not at liblsl's 15 s watchdog.
    ``stream_resumed`` (``gap_ms``)
        Data again after a stall (a stall that ends in a loss ends with
        ``stream_lost`` instead).
    ``stream_lost``
        liblsl lost the connection (the device's app ended, the host went away).
        The run goes on: the inlet looks for the same query again. With
        ``lost_timeout_s`` set, the run fails with :class:`StreamNotFoundError`
        once the stream has been lost that long.
    ``stream_reconnected`` (``down_ms``)
        The stream came back with the spec it had (channel count, nominal rate,
        channel format, source_id): a new inlet is opened, flushed, and data flow.
    ``stream_blocked`` (``changes``: list of sentences, e.g. ``"nominal rate 250 Hz
    -> 500 Hz"``)
        A stream matching the query came back changed. liblsl would re-attach it
        silently; here nothing from it is delivered until the operator accepts it,
        with a marker ``accept`` or ``accept:<node name>`` on the ``control`` input
        (or :meth:`accept_changed_stream`). While blocked, the inlet keeps looking:
        if the stream returns as it was, it is re-attached (``stream_reconnected``).
    ``stream_accepted`` / ``stream_accept_refused`` (``reason``)
        Accepting is refused when the changed stream no longer fits the pipeline
        (channel count, rate, sample format, labels it names); the pipeline must
        then be restarted with parameters matching the new stream. An accepted
        stream becomes the reference for later reconnects. Its chunks keep the
        spec the graph started with (downstream nodes were bound to it); the
        events record the swap.

    Malformed chunks (NaN/Inf values) are passed on as they came; the executor
    applies the node's ``on_bad_chunk`` policy to them.
    """

    type_name = "lsl_inlet"
    Params = LslInletParams
    signal = Output("signal", doc="the stream's samples, (n_samples, n_channels)")
    control = Input("events", required=False,
                    doc="operator markers: 'accept' (or 'accept:<node>') lets a stream that "
                    "came back changed through, when it still fits the pipeline")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.stalls = 0  # silences longer than the stall threshold, this run
        self.reconnects = 0  # re-attachments after a loss (same or accepted spec)
        # The executor thread (process(), accept_changed_stream) and the source
        # thread (read_blocking) share only these two: a request flag the source
        # thread consumes, and the blocked candidate it is about.
        self._lock = threading.Lock()
        self._accept = threading.Event()
        self._blocked: Any = None  # StreamInfo of the changed stream awaiting the operator
        self._gave_up = False
        self._inlet: Any = None

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        names = tuple(p.channel_names or [f"ch{i + 1}" for i in range(p.channels)])
        spec = StreamSpec(name=p.name or p.type or p.source_id or self.name, type=p.type or "EEG",
                          channel_names=names, srate=p.srate, dtype=p.dtype,
                          source_id=p.source_id or "")
        return {"signal": spec}

    # -- opening -------------------------------------------------------------------------
    def open(self, context: NodeContext) -> None:
        super().open(context)
        pylsl = import_pylsl()
        from pylsl.util import LostError
        from pylsl.util import TimeoutError as LslTimeoutError

        self._pylsl = pylsl
        self._lost_error = LostError
        self._timeout_error = LslTimeoutError
        p = self.params
        preds = [f"{key}='{value}'" for key, value in
                 (("name", p.name), ("type", p.type), ("source_id", p.source_id)) if value]
        self._predicate = " and ".join(preds)
        found = pylsl.resolve_bypred(self._predicate, 1, p.resolve_timeout_s)
        if not found:
            others = pylsl.resolve_streams(wait_time=1.0)
            listing = "; ".join(f"{s.name()} (type {s.type()}, source_id {s.source_id()}, "
                                f"{s.channel_count()} ch @ {s.nominal_srate():g} Hz)"
                                for s in others) or "none"
            raise StreamNotFoundError(
                f"node '{self.name}': no LSL stream matched {self._predicate} within "
                f"{p.resolve_timeout_s:g} s; streams seen: {listing}",
                hint="start the device or its LSL app, or fix name/type/source_id",
            )
        inlet = self._new_inlet(found[0])
        try:
            full = inlet.info(timeout=p.resolve_timeout_s)
            remote = info_to_spec(full)
            self._check(remote)
            inlet.open_stream(timeout=p.resolve_timeout_s)
        except BaseException:
            inlet.close_stream()
            raise
        self._inlet = inlet
        # the spec a returning stream is compared with; an accepted change replaces it,
        # but what fits the pipeline stays what it opened with
        self._reference = _Identity.of(full)
        self._opened_fmt = self._reference.fmt
        self._flushed = False  # flushed at the first read, when the run has started
        # the device's metadata refine the declared spec: its channel types and units,
        # and its labels where the pipeline did not name channels (the graph passes the
        # refined spec on to downstream nodes before they open)
        declared = self.output_specs.get("signal") or self.configure({})["signal"]
        self._spec = declared.with_changes(
            channel_names=declared.channel_names if p.channel_names else remote.channel_names,
            channel_types=remote.channel_types, units=remote.units,
            name=remote.name, type=remote.type, source_id=remote.source_id)
        self.output_specs["signal"] = self._spec
        self._srate = remote.srate
        self._max_samples = max(16, int(READ_SPAN_S * remote.srate))
        self._dtype = np.dtype(p.dtype)
        self._coalesce_s = p.coalesce_ms / 1e3
        self._floor_rise = 0.01 / remote.srate  # the usual delay may grow back slowly
        # irregular streams have no silence that means anything (the pipeline asks for
        # a rate, so this only guards a stream declared regular with rate 0)
        self._stall_s = max(3.0 / remote.srate, p.stall_ms / 1e3) if remote.srate > 0 else None
        self._stalled = False
        self._lost_since: float | None = None
        self._next_recheck = 0.0
        self._connected(time.monotonic())
        context.emit_event("stream_connected", node=self.name, stream=remote.name,
                           source_id=remote.source_id, channels=remote.n_channels,
                           srate=remote.srate)

    def _new_inlet(self, info: Any) -> Any:
        # recover=False: liblsl's own recovery would re-attach whatever comes back under
        # the same source_id, at any rate; reconnecting is done here, with a spec check
        pylsl = self._pylsl
        return pylsl.StreamInlet(info, max_buflen=self.params.buffer_s, max_chunklen=0,
                                 recover=False, processing_flags=pylsl.proc_clocksync)

    def _connected(self, now: float) -> None:
        """Reset what belongs to one connection (an inlet just opened)."""
        self._last_data = now  # the stall clock starts when the connection does
        self._next_clock = 0.0  # report this connection's clock offset with its first data
        self._lag_floor = float("inf")  # another connection may have another usual delay

    def _check(self, remote: StreamSpec) -> None:
        p = self.params
        problems = []
        if remote.dtype == "string":
            problems.append("it is a string (marker) stream, not a numeric signal")
        if remote.n_channels != p.channels:
            problems.append(f"it has {remote.n_channels} channels, the pipeline expects "
                            f"{p.channels}")
        if not _same_rate(remote.srate, p.srate):
            problems.append(f"its nominal rate is {remote.srate:g} Hz, the pipeline expects "
                            f"{p.srate:g} Hz")
        if p.channel_names and list(remote.channel_names) != p.channel_names:
            problems.append(f"its channel labels are {list(remote.channel_names)}, the pipeline "
                            f"expects {p.channel_names}")
        if problems:
            raise SpecMismatchError(
                f"node '{self.name}': LSL stream '{remote.name}' does not fit: "
                + "; ".join(problems),
                hint="fix 'channels'/'srate'/'channel_names' in the pipeline or choose another "
                     "stream",
            )

    # -- reading -------------------------------------------------------------------------
    def read_blocking(self, timeout: float) -> dict[str, AnyChunk] | None:
        """Wait up to ``timeout`` s for data; None on timeout, while lost or blocked.

        Connected: waits in liblsl for data. Lost: resolves the query once (at
        most ``timeout``). Blocked: waits for the operator's word. Every wait is
        a bounded liblsl call or an event wait, so a stop is seen within ``timeout``
        (or ``CONNECT_TIMEOUT_S`` while a stream that came back is being opened).
        """
        if self._inlet is not None:
            return self._read(timeout)
        with self._lock:
            blocked = self._blocked is not None
        if blocked:
            self._await_operator(timeout)
        else:
            self._look_again(timeout)
        return None

    def _read(self, timeout: float) -> dict[str, AnyChunk] | None:
        """Wait for data up to ``timeout``, ending the wait early at the stall deadline."""
        inlet = self._inlet
        if not self._flushed:  # never compute feedback on samples older than the run
            inlet.flush()
            self._flushed = True
            self._last_data = time.monotonic()
        end = time.monotonic() + timeout
        try:
            while True:
                now = time.monotonic()
                wait = end - now
                watching = self._stall_s is not None and not self._stalled
                if watching:
                    wait = min(wait, self._last_data + self._stall_s - now)
                data, ts = inlet.pull_chunk(timeout=max(wait, 0.0), max_samples=self._max_samples,
                                            min_samples=1, as_numpy=True)
                if len(ts):
                    data, ts = self._complete_chunk(data, ts)
                    break
                now = time.monotonic()
                if watching and now >= self._last_data + self._stall_s:
                    self._report_stall(now)
                if now >= end:
                    return None
        except self._lost_error:
            self._on_lost()
            return None
        arrived = time.monotonic()
        if self._stalled:
            self._stalled = False
            self._emit("stream_resumed", gap_ms=round((arrived - self._last_data) * 1e3, 1))
        self._last_data = arrived
        if arrived >= self._next_clock:
            self._report_clock(arrived)
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

    def _report_stall(self, now: float) -> None:
        self._stalled = True
        self.stalls += 1
        self._emit("stream_stalled", silent_ms=round((now - self._last_data) * 1e3, 1),
                   threshold_ms=round(self._stall_s * 1e3, 3))

    def _report_clock(self, now: float) -> None:
        """Log the clock offset in use; never waits (liblsl has it once data flowed)."""
        try:
            offset = self._inlet.time_correction(timeout=0.0)
        except (self._timeout_error, self._lost_error):
            return  # not estimated yet, or the stream just went: the next chunk retries
        self._next_clock = now + CLOCK_EVERY_S
        self._emit("clock_offset", offset_s=offset, at=self._pylsl.local_clock())

    # -- loss, reconnect, block ----------------------------------------------------------
    def _on_lost(self) -> None:
        self._close_inlet()
        self._stalled = False  # the loss ends the silence; a new connection starts afresh
        self._lost_since = time.monotonic()
        self._emit("stream_lost", lost_timeout_s=self.params.lost_timeout_s)

    def _look_again(self, timeout: float) -> None:
        """Lost: look for the query again, waiting at most ``timeout`` (or the time left)."""
        p = self.params
        wait = timeout
        if p.lost_timeout_s is not None:
            left = self._lost_since + p.lost_timeout_s - time.monotonic()
            if left <= 0:
                self._gave_up = True
                ref = self._reference
                raise StreamNotFoundError(
                    f"node '{self.name}': the LSL stream '{ref.name}' (source_id "
                    f"'{ref.source_id}') was lost and did not come back within "
                    f"{p.lost_timeout_s:g} s (lost_timeout_s)",
                    hint="check the device and its LSL app; raise 'lost_timeout_s', or set it "
                         "to null to wait for the stream until the run ends")
            wait = min(wait, left)
        self._resolve_and_decide(max(wait, 0.01))

    def _await_operator(self, timeout: float) -> None:
        """Blocked: wait for the operator's word; now and then, look at the stream again."""
        if self._accept.wait(timeout):
            self._try_accept()
            return
        now = time.monotonic()
        if now >= self._next_recheck:
            self._next_recheck = now + RECHECK_BLOCKED_S
            self._resolve_and_decide(RECHECK_RESOLVE_S)

    def _resolve_and_decide(self, wait: float) -> None:
        """Resolve the query once; re-attach, block, or (blocked, stream gone) go back to lost."""
        found = self._pylsl.resolve_bypred(self._predicate, 1, wait)
        with self._lock:
            blocked = self._blocked
        if not found:
            if blocked is not None:
                self._unblock()
                self._lost_since = time.monotonic()
                self._emit("stream_lost", lost_timeout_s=self.params.lost_timeout_s,
                           reason="the changed stream went away before it was accepted")
            return
        ref = self._reference
        # several answers: prefer the device we had
        info = next((i for i in found if i.source_id() == ref.source_id), found[0])
        new = _Identity.of(info)
        changes = ref.changes_to(new)
        if not changes:
            self._reattach(info, "stream_reconnected")
        elif blocked is None or _Identity.of(blocked) != new:
            with self._lock:
                self._blocked = info
                self._accept.clear()  # an earlier word was about another stream
            self._emit("stream_blocked", stream=new.name, source_id=new.source_id,
                       changes=changes, channels=new.channels, srate=new.srate,
                       fmt=new.fmt_name,
                       hint=f"send the marker 'accept' (or 'accept:{self.name}') on this "
                            "node's 'control' input to use it, or bring the device back as it was")

    def _reattach(self, info: Any, event: str, **fields: Any) -> bool:
        """Open a new inlet on ``info``, flushed; emit ``event``. False if it went away."""
        inlet = self._new_inlet(info)
        try:
            inlet.open_stream(timeout=CONNECT_TIMEOUT_S)
            inlet.flush()
        except (self._timeout_error, self._lost_error):
            inlet.close_stream()
            return False  # gone again between the resolve and the open: still lost
        self._unblock()
        self._inlet = inlet
        now = time.monotonic()
        down_ms = round((now - self._lost_since) * 1e3, 1) if self._lost_since else None
        self._lost_since = None
        self._reference = _Identity.of(info)
        self._connected(now)
        self.reconnects += 1
        ref = self._reference
        self._emit(event, stream=ref.name, source_id=ref.source_id, down_ms=down_ms, **fields)
        return True

    def _try_accept(self) -> None:
        """The operator accepts the blocked stream: use it if it still fits the pipeline."""
        with self._lock:
            info = self._blocked
            self._accept.clear()
        if info is None:
            return
        p = self.params
        new = _Identity.of(info)
        changes = self._reference.changes_to(new)
        problems = []
        if new.fmt == _STRING_FORMAT:
            problems.append("it is a string (marker) stream")
        if new.channels != p.channels:
            problems.append(f"it has {new.channels} channels, the pipeline expects {p.channels}")
        if not _same_rate(new.srate, p.srate):
            problems.append(f"its nominal rate is {new.srate:g} Hz, the pipeline expects "
                            f"{p.srate:g} Hz")
        if new.fmt != self._opened_fmt and not problems:
            problems.append(f"its channel format is {new.fmt_name}, the pipeline started on "
                            f"{_FORMAT_NAMES.get(self._opened_fmt, self._opened_fmt)}")
        if not problems and p.channel_names:
            problems += self._label_problems(info)
        if problems:
            self._emit("stream_accept_refused", stream=new.name, source_id=new.source_id,
                       reason="the changed stream does not fit the pipeline: "
                       + "; ".join(problems) + "; restart the run with a pipeline matching "
                       "the new stream", changes=changes)
            return
        if not self._reattach(info, "stream_accepted", changes=changes, channels=new.channels,
                              srate=new.srate):
            self._emit("stream_accept_refused", stream=new.name, source_id=new.source_id,
                       reason="the changed stream went away before it could be opened",
                       changes=changes)

    def _label_problems(self, info: Any) -> list[str]:
        """Labels of ``info``'s stream against those the pipeline names (needs its header)."""
        inlet = self._new_inlet(info)
        try:
            labels = list(info_to_spec(inlet.info(timeout=CONNECT_TIMEOUT_S)).channel_names)
        except (self._timeout_error, self._lost_error):
            return ["its header could not be read"]
        finally:
            inlet.close_stream()
        if labels != self.params.channel_names:
            return [f"its channel labels are {labels}, the pipeline expects "
                    f"{self.params.channel_names}"]
        return []

    def _unblock(self) -> None:
        with self._lock:
            self._blocked = None
            self._accept.clear()

    # -- operator ------------------------------------------------------------------------
    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        """Markers on ``control``: ``accept`` or ``accept:<node name>`` accept a change."""
        if port == "control" and isinstance(chunk, EventChunk):
            words = ("accept", f"accept:{self.name}")
            if any(marker.strip() in words for marker in chunk.markers):
                self.accept_changed_stream()
        return None

    def accept_changed_stream(self) -> bool:
        """Accept the stream that came back changed (thread safe).

        The inlet's own thread opens it if it still fits the pipeline and emits
        ``stream_accepted``, or ``stream_accept_refused`` with the reason.

        Returns
        -------
        bool
            False, with a ``stream_accept_refused`` event, when no stream is blocked.
        """
        with self._lock:
            blocked = self._blocked is not None
            if blocked:
                self._accept.set()
        if not blocked:
            self._emit("stream_accept_refused",
                       reason="no changed stream is waiting to be accepted")
        return blocked

    # -- helpers -------------------------------------------------------------------------
    def _emit(self, kind: str, **fields: Any) -> None:
        ref = getattr(self, "_reference", None)
        base = {"node": self.name, "stream": ref.name if ref else None,
                "source_id": ref.source_id if ref else None}
        log.info("%s %s %s", self.name, kind, fields)
        if self.context is not None:
            self.context.emit_event(kind, **{**base, **fields})

    def _close_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            inlet.close_stream()

    @property
    def exhausted(self) -> bool:
        return self._gave_up

    def close(self) -> None:
        self._close_inlet()
