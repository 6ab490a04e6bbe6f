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

Continuing from an earlier model
    ``initial_model`` names a model file (written by
    :func:`~bci_runtime.decoders.model_store.save_model`) holding a fitted
    :class:`~bci_runtime.decoders.adaptation.CoAdaptiveDecoder`: a calibration
    wizard's model, or a version an earlier session archived (see
    :func:`last_serving_version`). The node then does not calibrate: the model is
    version 1 and serves from the first window (``model/online`` with ``"source":
    "initial_model"``, the file's ``path`` and ``sha256``), and every labelled
    trial feeds co-adaptation as after a calibration. The drift detector takes
    its reference from the session's first ``calibration_trials`` trials per
    class. Everything about the file (missing, hash, not a fitted
    CoAdaptiveDecoder, classes, decoder, strategies, channels, rate, window) is
    checked when the graph is configured, before the run starts.

``channels`` picks the model's channels from the input by name, in the model's
order (one precomputed fancy index per chunk), so a pipeline can leave out
channels marked bad.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.decoders import catalog
from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategies
from bci_runtime.decoders.drift_detector import CovarianceDrift
from bci_runtime.decoders.lifecycle import Job, ModelLifecycle
from bci_runtime.decoders.linear import decision_outputs
from bci_runtime.decoders.node_inputs import (
    InitialModel,
    channel_pick,
    param_error,
    read_initial_model,
)
from bci_runtime.errors import ConfigError, ModelFileError
from bci_runtime.labels import LabelTracker
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.ringbuffer import RingBuffer
from bci_runtime.spec import StreamSpec, require_regular

MARGIN_S = 10.0  # buffered beyond the trial window, for chunks of any sensible size


@dataclass(frozen=True)
class ServingVersion:
    """The model version a session's decoder node served last.

    Attributes
    ----------
    node : str
        The decoder node.
    version : int
    path : Path
        Its model file in the session (``models/<node>/model-<version>.bcimodel``).
    sha256 : str
        The file's SHA-256, as the models folder's ``models.json`` records it.
    """

    node: str
    version: int
    path: Path
    sha256: str

    def as_params(self) -> dict[str, str]:
        """``initial_model`` and ``initial_model_sha256`` node parameters continuing from it."""
        return {"initial_model": str(self.path), "initial_model_sha256": self.sha256}


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
    initial_model: str | None = Field(
        None, description="model file (save_model) holding a fitted CoAdaptiveDecoder, e.g. "
        "the wizard's or a session's last serving version (a relative path is taken from the "
        "working directory): it serves from the first window (no calibration) and "
        "co-adaptation continues from it")
    initial_model_sha256: str | None = Field(
        None, description="SHA-256 (hex) the initial_model file must have")
    channels: list[str] | None = Field(
        None, min_length=1, description="input channels the model takes, by name, in the "
        "model's order (default: every input channel as it comes)")


class CoAdaptiveDecoderNode(Node):
    """Decodes windows of a signal with a co-adaptive, versioned decoder."""

    type_name = "coadaptive_decoder"
    Params = CoAdaptiveDecoderParams
    signal = Input("signal", doc="band-passed signal, (n_samples, n_channels)")
    labels = Input("events", doc="cue markers: calibration and supervised updates")
    decision = Output("signal", doc="(n_windows, n_classes) class probabilities")
    model = Output("events", doc="'model/<kind> {json}': online, shadow, swap, rollback, drift")

    def __init__(self, name: str,
                 params: NodeParams | Mapping[str, Any] | None = None) -> None:
        super().__init__(name, params)
        self._pick: np.ndarray | None = None  # input columns of the model's channels
        self._n_channels = 0
        self._initial: InitialModel | None = None

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        """Check the input, the channel pick and the initial model; declare the outputs.

        Reads (never writes) the ``initial_model`` file, so that ``bci validate``
        and the graph's start refuse a bad one before anything runs.

        Raises
        ------
        ConfigError
            Naming the node and the parameter: a channel missing from the input
            (listing the input's), an initial model file that is missing,
            unreadable, not ours, of another hash, not a fitted
            CoAdaptiveDecoder, or fitted for other classes, decoder, strategies,
            channel count, rate or window.
        """
        spec = inputs["signal"]
        require_regular(spec, node=self.name, port="signal")
        p = self.params
        if p.tmax <= p.tmin:
            raise self.spec_error("signal", f"tmax {p.tmax} must be after tmin {p.tmin}")
        entry = catalog.get(p.decoder)  # an unknown name fails at load, listing the names
        for name in p.adapt:
            make_strategies(name)
        self._pick = channel_pick(self.name, spec, p.channels)
        self._n_channels = spec.n_channels if p.channels is None else len(p.channels)
        if p.initial_model is None:
            if p.initial_model_sha256 is not None:
                raise self._param_error("initial_model_sha256", "is set but initial_model is "
                                        "not", hint="give initial_model, or drop the hash")
        else:
            if p.install_at is not None and not p.install_at:
                raise self._param_error(
                    "initial_model", "install_at is empty: the recorded session never "
                    "installed a model, but an initial model serves from the first window",
                    hint="replay the session through its own pipeline, without "
                    "initial_model")
            self._check_initial(self._load_initial(), spec, entry)
        return decision_outputs(self.name, p.classes, spec.source_id)

    def _param_error(self, param: str, message: str, hint: str | None = None) -> ConfigError:
        return param_error(self.name, param, message, hint)

    def _load_initial(self) -> InitialModel:
        """Read, hash and load ``initial_model`` (once per node)."""
        if self._initial is None:
            p = self.params
            self._initial = read_initial_model(self.name, str(p.initial_model),
                                               p.initial_model_sha256)
        return self._initial

    def _check_initial(self, initial: InitialModel, spec: StreamSpec, entry: Any) -> None:
        """Refuse a model this node cannot serve and continue adapting."""
        p, model, path = self.params, initial.model, initial.path
        where = "initial_model"
        if not isinstance(model, CoAdaptiveDecoder):
            raise self._param_error(
                where, f"{path} holds a {type(model).__module__}.{type(model).__qualname__}, "
                "not a CoAdaptiveDecoder",
                hint="save CoAdaptiveDecoder(decoder, strategies).fit(X, y) with save_model "
                "(as the wizard and the node's archived versions do)")
        if not hasattr(model, "decoder_") or not hasattr(model, "classes_"):
            raise self._param_error(where, f"{path} holds a CoAdaptiveDecoder that was never "
                                    "fitted", hint="fit it on calibration trials before "
                                    "saving it")
        classes = [str(c) for c in np.asarray(model.classes_).tolist()]
        if classes != list(p.classes):
            same = sorted(classes) == sorted(p.classes)
            raise self._param_error(
                where, f"the model in {path} decodes classes {classes}, the node's classes "
                f"are {list(p.classes)}" + (" (another order)" if same else ""),
                hint=f"set classes: {classes} (the decision columns follow the model)" if same
                else "set the node's classes to the model's, or load a model fitted on "
                f"{list(p.classes)}")
        decoder = model.decoder_
        wanted = type(entry.make(catalog.DecoderContext(sfreq=spec.srate,
                                                        classes=list(p.classes))))
        if type(decoder) is not wanted:
            names = [e.name for e in catalog.entries()
                     if e.target.partition(":")[2] == type(decoder).__name__]
            raise self._param_error(
                where, f"the model's decoder is a {type(decoder).__name__}, but the node's "
                f"decoder '{p.decoder}' is a {wanted.__name__} (recalibrations fit the node's "
                "decoder)", hint=f"set decoder: {names[0]}" if names else
                "load a model of a catalog decoder (bci evaluate --list)")
        have = [s.name for s in getattr(model, "strategies_", [])]
        want = [s.name for name in p.adapt for s in make_strategies(name)]
        if have != want:
            raise self._param_error(
                where, f"the model adapts with strategies {have}, the node's adapt gives "
                f"{want} (recalibrated versions would adapt differently)",
                hint=f"set adapt: [{'+'.join(have)}]" if have else "set adapt: []")
        fitted = getattr(decoder, "n_channels_", None)
        if fitted is not None and int(fitted) != self._n_channels:
            picked = "picked by 'channels' from" if p.channels is not None else "of"
            raise self._param_error(
                where, f"the model was fitted on {int(fitted)} channels, but the node gets "
                f"{self._n_channels} channels {picked} input 'signal' (whose channels are "
                f"{list(spec.channel_names)})",
                hint="name the model's channels, in its order, with the 'channels' parameter")
        sfreq = getattr(decoder, "sfreq", None)
        if isinstance(sfreq, Real) and not isinstance(sfreq, bool) and not math.isclose(
                float(sfreq), spec.srate, rel_tol=1e-6):
            raise self._param_error(
                where, f"the model was fitted at {float(sfreq):g} Hz, but input 'signal' is "
                f"sampled at {spec.srate:g} Hz",
                hint=f"resample the input to {float(sfreq):g} Hz, or load a model fitted at "
                f"{spec.srate:g} Hz")
        n_times = getattr(decoder, "n_times_", None)
        window = int(round((p.tmax - p.tmin) * spec.srate))
        if n_times is not None and int(n_times) != window:
            raise self._param_error(
                where, f"the model was fitted on windows of {int(n_times)} samples "
                f"({int(n_times) / spec.srate:g} s), but tmax - tmin gives {window} samples "
                f"({p.tmax - p.tmin:g} s)",
                hint="set tmin and tmax to the window the model was calibrated on")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p, spec = self.params, self.input_specs["signal"]
        self._sfreq = spec.srate
        self._n = int(round((p.tmax - p.tmin) * spec.srate))
        self._step = max(1, int(round(p.step_s * spec.srate)))
        capacity = int((p.tmax + MARGIN_S) * spec.srate)
        self._ring = RingBuffer(capacity, self._n_channels, np.float64)
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
                                     seed=context.seed, n_channels=self._n_channels)
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
        # a replay of a session that started from the initial model installs it at the
        # recorded first window; one that calibrated online cannot be replayed with it
        self._check_start = p.initial_model is not None and p.install_at is not None
        if p.initial_model is not None:
            initial = self._load_initial()  # read and checked at configure
            self.lifecycle.start_from(initial.model, origin={
                "source": "initial_model", "path": str(initial.path),
                "sha256": initial.sha256})
            self._calibrating = False

    def _isolation(self, entry: Any) -> str:
        if self.params.training != "auto":
            return self.params.training
        return "process" if entry.target.startswith("torch_decoders:") else "thread"

    def _archiver(self, context: NodeContext) -> Any:
        """Each published version goes to ``<session>/models/<node>/`` (on the worker)."""
        if context.session_dir is None:
            return None
        from bci_runtime.decoders.model_store import add_version_file, save_version

        folder = context.session_dir / "models" / self.name

        def archive(version: Any) -> dict[str, Any]:
            metrics = {"reason": version.reason, **version.trained_on}
            if version.reason == "initial_model" and self._initial is not None:
                # the very file it started from, so its hash is the one the marker names
                metrics["source"] = str(self._initial.path)
                entry = add_version_file(folder, self._initial.data, version.version,
                                         metrics=metrics)
            else:
                entry = save_version(folder, version.model, version.version,
                                     parent=version.parent, metrics=metrics)
            return {"file": entry["file"], "sha256": entry["sha256"]}
        return archive

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if isinstance(chunk, EventChunk):
            self._tracker.update(chunk)
            return None
        x, ts = chunk.data, chunk.timestamps
        if self._pick is not None:
            x = x[:, self._pick]  # the model's channels, in its order
        windows = self._buffer(x, ts)  # sample offsets (from the newest) of window ends
        out: dict[str, AnyChunk] = {}
        if windows:
            stamps = np.array([ts[len(ts) - 1 - o] for o in windows])
            if self._check_start:
                self._check_replayed_start(float(stamps[0]))
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

    def _check_replayed_start(self, first_window: float) -> None:
        """Replay: the recorded run must have served its first version from its first window."""
        self._check_start = False
        recorded = (self.params.install_at or [math.inf])[0]
        if recorded > first_window:
            raise ConfigError(
                f"node '{self.name}' parameter 'initial_model': the replayed session's first "
                f"model went online at t={recorded:.6f}, after the first window "
                f"(t={first_window:.6f}) an initial model serves: that session calibrated "
                "online, so it cannot be replayed with initial_model",
                hint="replay it through its own pipeline (its config.yaml), without "
                "initial_model")

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
            if self._drift is not None:
                if self._drift.update(X):
                    self._recalibrate(newest)
            elif self._drift_reference_due():
                # started from an initial model: the session's first trials are the reference
                X0 = np.stack([e for e, _, _ in self._trials])
                self._drift = CovarianceDrift(p.drift_window, p.drift_threshold).fit(X0)  # type: ignore[arg-type]

    def _epoch(self, start: float) -> np.ndarray | None:
        data, times = self._ring.latest(len(self._ring))
        i = int(np.searchsorted(times, start - 0.5 / self._sfreq))
        if i + self._n > len(times) or i == 0 and times[0] > start:
            return None  # fell out of the buffer (or before the first sample)
        return np.ascontiguousarray(data[i:i + self._n].T)

    def _drift_reference_due(self) -> bool:
        """Whether the trials so far hold ``calibration_trials`` of every class."""
        p = self.params
        if p.drift_threshold is None:
            return False
        labels = [label for _, label, _ in self._trials]
        return min(labels.count(c) for c in p.classes) >= p.calibration_trials

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


def last_serving_version(session_dir: str | os.PathLike[str],
                         node: str = "decoder") -> ServingVersion:
    """The model version a co-adaptive decoder node served last in a session, and its file.

    What continues co-adaptation another day: pass ``path`` and ``sha256`` as
    the node's ``initial_model`` and ``initial_model_sha256``
    (:meth:`ServingVersion.as_params`). The session's ``events.jsonl`` says which
    version served (the last ``model_online``, ``model_swap`` or, for a
    ``cursor_decoder``, ``model_update`` of ``node``; a rollback keeps the
    version that served), its ``models/<node>/models.json``
    where that version's file is and its hash.

    Parameters
    ----------
    session_dir : path-like
        A session folder (``bci run`` writes one per run).
    node : str
        The decoder node's name in the pipeline.

    Returns
    -------
    ServingVersion

    Raises
    ------
    ConfigError
        The folder has no events log, the node never served a version, or the
        version's file is not listed or missing.
    """
    from bci_runtime.decoders.model_store import read_manifest

    session = Path(session_dir)
    log = session / "events.jsonl"
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"session '{session}' has no readable events log ({log.name}): "
                          f"{exc.strerror or exc}",
                          hint="give a session folder written by bci run") from exc
    version: int | None = None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: what came before it still counts
        if (isinstance(event, dict) and event.get("node") == node
                and event.get("event") in ("model_online", "model_swap", "model_update")
                and isinstance(event.get("version"), int)):
            version = event["version"]
    if version is None:
        raise ConfigError(f"session '{session}': node '{node}' never served a model version",
                          hint="check the node name; a session stopped before its "
                          "calibration has no model to continue from")
    folder = session / "models" / node
    try:
        entry = read_manifest(folder).get(str(version))
    except ModelFileError as exc:
        raise ConfigError(f"session '{session}': {exc.message}", hint=exc.hint) from exc
    if entry is None:
        raise ConfigError(f"session '{session}': version {version} of node '{node}' served "
                          f"but {folder / 'models.json'} does not list it",
                          hint="the session's models folder is incomplete")
    path = folder / entry["file"]
    if not path.is_file():
        raise ConfigError(f"session '{session}': the model file of version {version} of "
                          f"node '{node}' is missing: {path}",
                          hint="restore the session folder from a copy")
    return ServingVersion(node, version, path, entry["sha256"])
