"""The co-adaptive decoder node: a catalog decoder with strategies and a managed lifecycle.

On the hot path the node only buffers the signal, cuts one window per
``step_s`` and asks the serving model version for class probabilities. Each cued
trial, once its window ``[cue + tmin, cue + tmax]`` has arrived, becomes a
labelled epoch: first for calibration, then for the shadow evaluation of a
candidate version and as an update for the background worker
(:mod:`~bci_runtime.decoders.lifecycle`). A drift detector on the trials'
covariances asks for a recalibration on the most recent trials.

Every install, swap, rollback and drift detection is a ``model/<kind> {json}``
marker on the ``model`` port (recorded with the session), stamped with the
first window the new version served or the trial that decided it. A replay
gives the install timestamps back as ``install_at``, so the same versions serve
the same windows.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.decoders import catalog
from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategies
from bci_runtime.decoders.drift_detector import CovarianceDrift
from bci_runtime.decoders.lifecycle import Job, ModelLifecycle
from bci_runtime.decoders.linear import decision_outputs
from bci_runtime.labels import LabelTracker
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.ringbuffer import RingBuffer
from bci_runtime.spec import StreamSpec, require_regular

MARGIN_S = 10.0  # buffered beyond the trial window, for chunks of any sensible size


class CoAdaptiveDecoderParams(NodeParams):
    decoder: str = Field("ts-lr", description="decoder from the catalog (`bci evaluate --list`)")
    decoder_params: dict[str, Any] = Field({}, description="parameters of the decoder")
    classes: list[str] = Field(["left", "right"], min_length=2, description="class names, "
                               "as in the cue markers")
    adapt: list[str] = Field([], description="co-adaptation strategies applied in order "
                             "(empty: none); NAME@N gives one a half-life of N trials")
    half_life: float | None = Field(None, gt=0, description="strategies' half-life (trials)")
    tmin: float = Field(0.5, ge=0, description="trial window start after the cue (s)")
    tmax: float = Field(2.5, gt=0, description="trial window end after the cue (s); the "
                        "decision window has the same length")
    step_s: float = Field(0.1, gt=0, description="one decision every step_s")
    calibration_trials: int = Field(10, ge=2, description="trials per class before going "
                                    "online")
    shadow_trials: int = Field(10, ge=0, description="labelled trials a new version is "
                               "evaluated on in shadow (0: swap at once)")
    tolerance: float = Field(0.0, ge=0, le=1, description="shadow accuracy a candidate may "
                             "lose against the serving version and still be promoted")
    drift_threshold: float | None = Field(4.0, gt=0, description="standard errors of "
                                          "covariance distance that trigger a recalibration; "
                                          "null disables")
    drift_window: int = Field(10, ge=2, description="recent trials the drift detector averages")
    recalibration_trials: int = Field(40, ge=4, description="recent labelled trials a "
                                      "recalibration fits on")
    label_prefix: str = Field("cue/", description="cue marker prefix")
    training: Literal["auto", "thread", "process"] = Field(
        "auto", description="where background training runs: a worker thread, or a child "
        "process so that training that holds the GIL (torch fine-tuning) cannot slow the hot "
        "path; auto: a process for the torch decoders")
    install_at: list[float] | None = Field(
        None, description="first-window timestamps of each install in a recorded session "
        "(its 'model' stream): jobs run inline and each version is installed where it was. "
        "`bci replay` sets it")


class CoAdaptiveDecoderNode(Node):
    """Decodes windows of a signal with a co-adaptive, versioned decoder."""

    type_name = "coadaptive_decoder"
    Params = CoAdaptiveDecoderParams
    signal = Input("signal", doc="band-passed signal, (n_samples, n_channels)")
    labels = Input("events", doc="cue markers: calibration and supervised updates")
    decision = Output("signal", doc="(n_windows, n_classes) class probabilities")
    model = Output("events", doc="'model/<kind> {json}': online, shadow, swap, rollback, drift")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        spec = inputs["signal"]
        require_regular(spec, node=self.name, port="signal")
        p = self.params
        if p.tmax <= p.tmin:
            raise self.spec_error("signal", f"tmax {p.tmax} must be after tmin {p.tmin}")
        catalog.get(p.decoder)  # an unknown name fails at load, listing the names
        for name in p.adapt:
            make_strategies(name)
        return decision_outputs(self.name, p.classes, spec.source_id)

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p, spec = self.params, self.input_specs["signal"]
        self._sfreq = spec.srate
        self._n = int(round((p.tmax - p.tmin) * spec.srate))
        self._step = max(1, int(round(p.step_s * spec.srate)))
        capacity = int((p.tmax + MARGIN_S) * spec.srate)
        self._ring = RingBuffer(capacity, spec.n_channels, np.float64)
        self._since = 0
        self._tracker = LabelTracker(p.label_prefix, "\x00never", 0.0)
        self._next_span = 0
        self._trials: deque[tuple[np.ndarray, str, float]] = deque(
            maxlen=max(p.recalibration_trials, p.calibration_trials * len(p.classes) * 4))
        self._calibrating = True
        self._events: list[tuple[str, dict]] = []
        self._counts = {"swap": 0, "rollback": 0, "drift": 0, "shadow": 0}
        self._drift: CovarianceDrift | None = None
        self._decision_spec = self.output_specs["decision"]
        self._model_spec = self.output_specs["model"]
        entry = catalog.get(p.decoder)
        ctx = catalog.DecoderContext(sfreq=spec.srate, classes=list(p.classes),
                                     seed=context.seed, n_channels=spec.n_channels)
        strategy_params = {} if p.half_life is None else {"half_life": p.half_life}

        def make_model() -> CoAdaptiveDecoder:
            decoder = entry.make(ctx)
            if p.decoder_params:
                decoder.set_params(**p.decoder_params)
            return CoAdaptiveDecoder(decoder, [strategy for name in p.adapt
                                               for strategy in make_strategies(
                                                   name, **strategy_params)])

        self.lifecycle = ModelLifecycle(
            make_model, shadow_trials=p.shadow_trials, tolerance=p.tolerance,
            on_event=lambda kind, details: self._events.append((kind, details)),
            background=not context.clock.simulated, install_at=p.install_at,
            archive=self._archiver(context), isolation=self._isolation(entry))

    def _isolation(self, entry: Any) -> str:
        if self.params.training != "auto":
            return self.params.training
        return "process" if entry.target.startswith("torch_decoders:") else "thread"

    def _archiver(self, context: NodeContext) -> Any:
        """Each published version goes to ``<session>/models/<node>/`` (on the worker)."""
        if context.session_dir is None:
            return None
        from bci_runtime.decoders.model_store import save_version

        folder = context.session_dir / "models" / self.name

        def archive(version: Any) -> dict[str, Any]:
            entry = save_version(folder, version.model, version.version,
                                 parent=version.parent,
                                 metrics={"reason": version.reason, **version.trained_on})
            return {"file": entry["file"], "sha256": entry["sha256"]}
        return archive

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if isinstance(chunk, EventChunk):
            self._tracker.update(chunk)
            return None
        x, ts = chunk.data, chunk.timestamps
        windows = self._buffer(x, ts)  # sample offsets (from the newest) of window ends
        out: dict[str, AnyChunk] = {}
        if windows:
            stamps = np.array([ts[len(ts) - 1 - o] for o in windows])
            self.lifecycle.poll(float(stamps[0]))  # installs go live between two chunks
            if self.lifecycle.online:
                data, _ = self._ring.latest(self._n + windows[0])
                X = np.stack([data[len(data) - o - self._n:len(data) - o].T for o in windows])
                out["decision"] = Chunk(self.lifecycle.predict_proba(X), stamps,
                                        self._decision_spec)
        self._labelled_trials(float(ts[-1]))
        if self._events:
            out["model"] = self._model_events()
        return out or None

    def _buffer(self, x: np.ndarray, ts: np.ndarray) -> list[int]:
        """Write the chunk; the window ends it completes, as offsets from its newest sample."""
        total = x.shape[0]
        ends, start = [], 0
        cap = self._ring.capacity - self._n  # write in pieces that keep windows readable
        while start < total:
            piece = min(total - start, cap)
            self._ring.write(x[start:start + piece], ts[start:start + piece])
            start += piece
        # window ends every step samples, counted across chunks
        first = self._step - self._since
        positions = list(range(first - 1, total, self._step))
        self._since = (self._since + total) % self._step
        for pos in positions:
            offset = total - 1 - pos
            if len(self._ring) >= self._n + offset and offset + self._n <= self._ring.capacity:
                ends.append(offset)
        return ends

    def _labelled_trials(self, newest: float) -> None:
        p = self.params
        spans = self._tracker.spans
        while True:
            span = next((s for s in spans if s.index == self._next_span), None)
            if span is None or newest < span.onset + p.tmax:
                return
            self._next_span += 1
            if span.label not in p.classes:
                continue
            epoch = self._epoch(span.onset + p.tmin)
            if epoch is None:
                continue
            t = span.onset
            self._trials.append((epoch, span.label, t))
            # decisions are stamped when they are made: this chunk's newest sample
            X, y = epoch[None], np.array([span.label])
            if self._calibrating:
                self._maybe_calibrate()
                continue
            self.lifecycle.observe(X, y, newest)
            correct = None
            if self.lifecycle.online:
                correct = self.lifecycle.serving.model.predict(X) == y  # type: ignore[union-attr]
            self.lifecycle.submit(Job("update", X, y, correct=correct, times=np.array([t])))
            if self._drift is not None and self._drift.update(X):
                self._recalibrate(newest)

    def _epoch(self, start: float) -> np.ndarray | None:
        data, times = self._ring.latest(len(self._ring))
        i = int(np.searchsorted(times, start - 0.5 / self._sfreq))
        if i + self._n > len(times) or i == 0 and times[0] > start:
            return None  # fell out of the buffer (or before the first sample)
        return np.ascontiguousarray(data[i:i + self._n].T)

    def _maybe_calibrate(self) -> None:
        p = self.params
        labels = [label for _, label, _ in self._trials]
        if min(labels.count(c) for c in p.classes) < p.calibration_trials:
            return
        X = np.stack([e for e, _, _ in self._trials])
        times = np.array([t for _, _, t in self._trials])
        self.lifecycle.submit(Job("calibrate", X, np.array(labels), times=times))
        if p.drift_threshold is not None:
            self._drift = CovarianceDrift(p.drift_window, p.drift_threshold).fit(X)
        self._calibrating = False

    def _recalibrate(self, t: float) -> None:
        recent = list(self._trials)[-self.params.recalibration_trials:]
        X = np.stack([e for e, _, _ in recent])
        y = np.array([label for _, label, _ in recent])
        if len(set(y.tolist())) < len(self.params.classes):
            return  # not every class is recent: wait for more trials
        self._events.append(("drift", {"at": t, "score": round(self._drift.score(), 3),  # type: ignore[union-attr]
                                       "trials": len(y)}))
        self.lifecycle.submit(Job("recalibrate", X, y, times=np.array([r[2] for r in recent])))
        self._drift = CovarianceDrift(self.params.drift_window,
                                      self.params.drift_threshold).fit(X)  # type: ignore[arg-type]

    def _model_events(self) -> EventChunk:
        events, self._events = self._events, []
        stamped = []
        for kind, details in events:
            if kind in self._counts:
                self._counts[kind] += 1
            t = details.get("first_window", details.get("at"))
            stamped.append((float(t), f"model/{kind} {json.dumps(details, sort_keys=True)}"))
            if self.context is not None:
                self.context.emit_event(f"model_{kind}", node=self.name, **details)
        stamped.sort(key=lambda item: item[0])
        return EventChunk(tuple(m for _, m in stamped),
                          np.array([t for t, _ in stamped]), self._model_spec)

    def close(self) -> None:
        self.lifecycle.close()

    def summary(self) -> dict:
        """Versions, swaps, rollbacks and drift detections, for the run's summary."""
        serving = self.lifecycle.serving
        return {"trained": serving is not None, "training": {
            "windows": 0 if serving is None else serving.trained_on["trials"],
            "trials": len(self._trials), "cv_accuracy": None,
            "versions": len(self.lifecycle.versions),
            "serving_version": None if serving is None else serving.version,
            "swaps": self._counts["swap"], "rollbacks": self._counts["rollback"],
            "drift_detections": self._counts["drift"]} if serving is not None else None}
