"""The continuous cursor decoder node: binned features, a Kalman step per bin, CLDA aside.

``cursor_decoder`` decodes a 2-D cursor velocity from a neural signal (ECoG
high gamma, binned spike counts) and keeps adapting to the user while it
controls the cursor::

    signal --> band power per bin --> KalmanDecoder.step --> velocity (vx, vy)
    task (cursor, target) ------------------------------+--> ReFIT labels --> CLDA (worker)

Hot path
    Each signal chunk is band-passed and binned in a few vectorised operations
    (:class:`~bci_runtime.decoders.cursor_model.BinnedFeatureStream`, the same
    features as :func:`~bci_runtime.decoders.continuous_recordings.bin_features`
    gives offline), then every completed bin is one Kalman step (a 2 x n
    matrix-vector product). Nothing on it waits for the adaptation.
Calibration
    Without ``initial_model`` the node first records ``calibration_s`` seconds
    of bins in open loop (it emits nothing, so the simulated user or the
    ``center_out`` task moves the cursor by itself) labelled with the task's
    velocity (``vx, vy``; a task without them gives the straight line to the
    target at ``speed``), fits the filter on them and goes online. With
    ``initial_model`` (a :class:`~bci_runtime.decoders.cursor_model.CursorModel`
    file: the wizard's cursor profile, or a version an earlier session archived)
    it serves from the first bin.
Co-adaptation (CLDA)
    Every ``update_s`` seconds the bins decoded since the last update are
    labelled as ReFIT does (:func:`~bci_runtime.decoders.clda.refit_intention`:
    the decoded velocity turned toward the target the task showed, zero on it)
    and given to the strategy (``rml`` or ``smoothbatch``) on a worker thread,
    which adapts its own copy of the filter. A changed filter comes back as a new
    version, installed between two chunks: it takes over the serving filter's
    state (:meth:`~bci_runtime.decoders.continuous.KalmanDecoder.continue_from`),
    so the cursor does not jolt. On the simulated clock the worker's jobs run
    inline, so a run is reproducible.

Every version is a ``model/online`` or ``model/update {json}`` marker on the
``model`` port, stamped with the first bin it decoded, and a ``model_online`` /
``model_update`` event of the session. Versions go to the session's
``models/<node>/`` folder every ``archive_s`` seconds and at the end, so
:func:`~bci_runtime.decoders.coadaptive_node.last_serving_version` finds the
one that served last.
"""

from __future__ import annotations

import copy
import json
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.decoders.clda import refit_intention
from bci_runtime.decoders.continuous import KalmanDecoder
from bci_runtime.decoders.continuous_recordings import sample_target
from bci_runtime.decoders.cursor_model import (
    BinnedFeatureStream,
    CursorModel,
    check_band,
    samples_per_bin,
)
from bci_runtime.decoders.node_inputs import (
    InitialModel,
    channel_pick,
    param_error,
    read_initial_model,
)
from bci_runtime.errors import ConfigError
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec, require_regular

__all__ = ["CursorDecoderNode", "CursorDecoderParams", "TASK_CHANNELS"]

#: channels of the task input the labels need (a center_out cursor stream or a simulator's truth)
TASK_CHANNELS = ("cursor_x", "cursor_y", "target_x", "target_y")
#: the task's own velocity: the labels of an open-loop calibration
TASK_VELOCITY = ("vx", "vy")
#: fewer labelled calibration bins than this wait for more (5 s of 50 ms bins)
MIN_CALIBRATION_BINS = 100
#: strategies that adapt a Kalman filter's observation model (decoders/clda.py)
STRATEGIES = {"rml": "RML", "smoothbatch": "SmoothBatch"}
_SHRINKAGE = 0.05  # keeps Q invertible with many channels and short batches


class CursorDecoderParams(NodeParams):
    features: Literal["band-power", "mean"] = Field(
        "band-power", description="log band power per bin (ECoG, sEEG), or the mean of each "
        "bin (spike counts, already features)")
    band: tuple[float, float] = Field((70.0, 150.0), description="band of the band power (Hz)")
    bin_s: float = Field(0.05, gt=0, le=1, description="seconds per decoded bin (whole "
                         "samples)")
    channels: list[str] | None = Field(None, min_length=1, description="input channels the "
                                       "decoder takes, by name (default: all)")
    calibration_s: float = Field(60.0, ge=5, description="open-loop seconds fitted on before "
                                 "going online (without initial_model)")
    adapt: Literal["none", "rml", "smoothbatch"] = Field(
        "rml", description="closed-loop adaptation of the observation model")
    half_life_s: float = Field(60.0, gt=0, description="seconds after which a bin's weight in "
                               "the adapted model halves")
    update_s: float = Field(1.0, gt=0, le=60, description="seconds between two adaptation "
                            "updates")
    speed: float | None = Field(0.4, gt=0, description="intended speed of the ReFIT labels "
                                "(workspace units/s); null keeps the decoded speed")
    target_radius: float = Field(0.15, ge=0, description="within this distance of the target "
                                 "the intended velocity is zero (the task's target radius)")
    archive_s: float = Field(30.0, gt=0, description="an adapted version goes to the "
                             "session's models folder at most this often (and at the end)")
    initial_model: str | None = Field(
        None, description="CursorModel file (save_model): the wizard's cursor profile or a "
        "session's archived version; it serves from the first bin, adaptation continues")
    initial_model_sha256: str | None = Field(None, description="SHA-256 (hex) the "
                                             "initial_model file must have")


@dataclass
class _Job:
    kind: Literal["calibrate", "update"]
    X: np.ndarray
    V: np.ndarray
    weight: np.ndarray
    t_end: float  # the last bin's time


@dataclass
class _Result:
    version: int
    decoder: KalmanDecoder
    details: dict[str, Any] = field(default_factory=dict)


class CursorDecoderNode(Node):
    """Decodes a cursor velocity bin by bin and adapts the decoder in closed loop."""

    type_name = "cursor_decoder"
    Params = CursorDecoderParams
    signal = Input("signal", doc="neural signal, (n_samples, n_channels), regular")
    task = Input("signal", doc="the task: cursor_x, cursor_y, target_x, target_y (and vx, vy "
                 "for an open-loop calibration); a center_out cursor or a simulator's truth")
    velocity = Output("signal", doc="(n_bins, 2) decoded vx, vy, one row per bin")
    model = Output("events", doc="'model/online|update {json}': each version")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        """Check both inputs, the channels, the band and the initial model.

        Raises
        ------
        SpecMismatchError
            A signal without a rate, or a task without the cursor and target.
        ConfigError
            A channel the input lacks, a band above the Nyquist frequency, or an
            initial model that is missing, of another hash, not a fitted
            CursorModel, or made for other channels, rate or features.
        """
        spec, task = inputs["signal"], inputs["task"]
        require_regular(spec, node=self.name, port="signal")
        names = list(task.channel_names)
        missing = [c for c in TASK_CHANNELS if c not in names]
        if missing:
            raise self.spec_error("task", f"'{task.name}' lacks channels {missing} (it has "
                                  f"{names})", hint="connect a center_out node's cursor output "
                                  "or a cursor simulator's truth")
        # kept columns: cursor, target, then the task's velocity when it has one
        self._has_velocity = all(c in names for c in TASK_VELOCITY)
        kept = TASK_CHANNELS + (TASK_VELOCITY if self._has_velocity else ())
        self._task_cols = np.array([names.index(c) for c in kept], dtype=np.intp)
        self._initial: InitialModel | None = None
        p = self.params
        if p.initial_model is None:
            if p.initial_model_sha256 is not None:
                raise self._param_error("initial_model_sha256", "is set but initial_model is "
                                        "not", hint="give initial_model, or drop the hash")
            self._settings = {"channels": p.channels or list(spec.channel_names),
                              "features": p.features, "bin_s": p.bin_s,
                              "band": list(p.band) if p.features == "band-power" else None}
        else:
            self._initial = self._load_initial()
            self._settings = self._model_settings(self._initial.model, spec)
        check_band(self._settings["band"], spec.srate, f"node '{self.name}'")
        self._pick = channel_pick(self.name, spec, self._settings["channels"])
        per_bin = samples_per_bin(self._settings["bin_s"], spec.srate)
        n = len(TASK_VELOCITY)
        return {"velocity": StreamSpec(
            name=f"{self.name}-velocity", type="Control", channel_names=TASK_VELOCITY,
            srate=spec.srate / per_bin, dtype="float64", channel_types=("misc",) * n,
            units=("",) * n, source_id=f"{spec.source_id}-{self.name}"),
            "model": StreamSpec.events(f"{self.name}-model", f"{spec.source_id}-{self.name}-model")}

    def _param_error(self, param: str, message: str, hint: str | None = None) -> ConfigError:
        return param_error(self.name, param, message, hint)

    def _load_initial(self) -> InitialModel:
        """Read the file and check that it holds a fitted CursorModel."""
        p = self.params
        initial = read_initial_model(self.name, str(p.initial_model), p.initial_model_sha256)
        model, path = initial.model, initial.path
        decoder = getattr(model, "decoder", None)
        if not isinstance(model, CursorModel) or not isinstance(decoder, KalmanDecoder) \
                or not hasattr(decoder, "K_"):
            raise self._param_error("initial_model", f"{path} holds a "
                                    f"{type(model).__qualname__}, not a fitted CursorModel",
                                    hint="train it with the wizard's cursor calibration, or "
                                    "give a cursor_decoder's archived version")
        if decoder.n_outputs_ != 2 or decoder.n_features_in_ != len(model.channels):
            raise self._param_error("initial_model", f"{path}: its filter decodes "
                                    f"{decoder.n_outputs_} outputs from "
                                    f"{decoder.n_features_in_} features for "
                                    f"{len(model.channels)} channels",
                                    hint="the file is not a consistent cursor model")
        return initial

    def _model_settings(self, model: CursorModel, spec: StreamSpec) -> dict[str, Any]:
        """The initial model's features; node parameters set to other values are an error."""
        p, given = self.params, self.params.model_fields_set
        if not math.isclose(model.srate, spec.srate, rel_tol=1e-6):
            raise self._param_error("initial_model", f"the model was fitted at "
                                    f"{model.srate:g} Hz, input 'signal' is sampled at "
                                    f"{spec.srate:g} Hz", hint="use the montage and rate it "
                                    "was calibrated on, or calibrate anew")
        theirs = {"channels": list(model.channels), "features": model.features,
                  "bin_s": float(model.bin_s),
                  "band": None if model.band is None else [float(b) for b in model.band]}
        ours = {"channels": p.channels, "features": p.features, "bin_s": p.bin_s,
                "band": list(p.band)}
        for key in ("channels", "features", "bin_s", "band"):
            if key in given and key in theirs and theirs[key] is not None \
                    and ours[key] != theirs[key]:
                raise self._param_error(key, f"{ours[key]} differs from the initial model's "
                                        f"{theirs[key]}", hint=f"drop '{key}' (the model's is "
                                        "used) or load a model made with it")
        return theirs

    # -- running --------------------------------------------------------------------------
    def open(self, context: NodeContext) -> None:
        super().open(context)
        spec = self.input_specs["signal"]
        s = self._settings
        band = None if s["band"] is None else (s["band"][0], s["band"][1])
        self._per_bin = samples_per_bin(s["bin_s"], spec.srate)
        self._dt = self._per_bin / spec.srate
        self._features = BinnedFeatureStream(spec.srate, len(s["channels"]), band,
                                             self._per_bin)
        self._srate = spec.srate
        self._velocity_spec = self.output_specs["velocity"]
        self._model_spec = self.output_specs["model"]
        # the task, as sampled: enough history to label everything not yet labelled
        self._task_t: list[np.ndarray] = []
        self._task_x: list[np.ndarray] = []
        self._task_newest = -math.inf
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # X, t, decoded
        self._last_update = -math.inf
        self._events: list[tuple[float, str, dict[str, Any]]] = []
        self._serving: KalmanDecoder | None = None
        self._first: _Result | None = None  # the initial model, installed at the first bin
        self.version = 0
        self.bins = 0
        self.updates = 0
        self._adapter = _Adapter(self.params, self._dt, inline=context.clock.simulated,
                                 archive=self._archiver(context))
        if self._initial is not None:
            path, sha256 = self._initial.path, self._initial.sha256
            decoder = copy.deepcopy(self._initial.model.decoder)
            decoder.reset()
            self._adapter.start_from(decoder)
            self._first = _Result(1, decoder, {"source": "initial_model", "path": str(path),
                                               "sha256": sha256})

    def _archiver(self, context: NodeContext) -> Any:
        """Versions go to ``<session>/models/<node>/`` (called on the worker, and at close)."""
        if context.session_dir is None:
            return None
        from bci_runtime.decoders.model_store import add_version_file, save_version

        folder = context.session_dir / "models" / self.name
        s, srate = self._settings, self.input_specs["signal"].srate

        def archive(version: int, decoder: KalmanDecoder, metrics: dict[str, Any],
                    parent: int | None) -> None:
            if version == 1 and self._initial is not None:
                # the very file it started from, so the hash the marker names is the file's
                add_version_file(folder, self._initial.data, 1, metrics={
                    **metrics, "source": str(self._initial.path)})
                return
            model = CursorModel(decoder, list(s["channels"]), float(srate), s["features"],
                                s["band"], float(s["bin_s"]))
            save_version(folder, model, version, parent=parent, metrics=metrics)
        return archive

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if not isinstance(chunk, Chunk) or chunk.n_samples == 0:
            return None
        if port == "task":
            if self._serving is not None and self.params.adapt == "none":
                return None  # nothing will be labelled: keep no history
            ts = chunk.timestamps
            # the last row of every quarter bin is all the labels need (a 1 kHz truth stream
            # kept whole through a long calibration would cost megabytes for nothing)
            slot = np.floor(ts / (self._dt / 4))
            last = np.flatnonzero(np.r_[slot[1:] != slot[:-1], True])
            self._task_t.append(ts[last])
            self._task_x.append(np.asarray(chunk.data[np.ix_(last, self._task_cols)],
                                           dtype=np.float64))
            self._task_newest = max(self._task_newest, float(chunk.timestamps[-1]))
            return None
        x = chunk.data if self._pick is None else chunk.data[:, self._pick]
        X, t = self._features.push(x, chunk.timestamps)
        if not len(t):
            return self._model_events()
        self.bins += len(t)
        result, self._first = self._first or self._adapter.take(), None
        if result is not None:
            self._install(result, float(t[0]))  # between two bins: the new filter goes on
        out: dict[str, AnyChunk] = {}
        if self._serving is None:
            self._pending.append((X, t, np.full((len(t), 2), np.nan)))
            self._maybe_calibrate()
        else:
            step = self._serving.step
            V = np.empty((len(t), 2))
            for i in range(len(t)):  # one bin per 50 ms: the filter is recursive
                V[i] = step(X[i])
            out["velocity"] = Chunk(V, t, self._velocity_spec)
            if self.params.adapt != "none":
                self._pending.append((X, t, V))
                if t[-1] - self._last_update >= self.params.update_s:
                    self._submit_update()
        events = self._model_events()
        if events is not None:
            out.update(events)
        return out or None

    def _install(self, result: _Result, first_bin: float) -> None:
        if self._serving is not None:
            result.decoder.continue_from(self._serving)
        else:
            self._pending = []  # bins of the calibration's wait: nothing decoded them
            self._last_update = first_bin
        kind = "online" if self._serving is None else "update"
        self._serving = result.decoder
        self.version = result.version
        self.updates += kind == "update"
        self._events.append((first_bin, kind, {"version": result.version,
                                               "first_bin": first_bin, **result.details}))

    def _task_at(self, t: np.ndarray) -> np.ndarray:
        """The task at or before each bin end, NaN when none.

        Returns
        -------
        ndarray, shape (n_bins, 4) or (n_bins, 6)
            cursor_x, cursor_y, target_x, target_y (, vx, vy).
        """
        if len(self._task_t) > 1:
            self._task_t = [np.concatenate(self._task_t)]
            self._task_x = [np.concatenate(self._task_x)]
        if not self._task_t:
            return np.full((len(t), len(self._task_cols)), np.nan)
        ts, rows = self._task_t[0], self._task_x[0]
        keep = ts >= t[0] - 2.0  # older task samples label nothing any more
        if not keep.all():
            self._task_t, self._task_x = [ts[keep]], [rows[keep]]
        period = 2.0 * max(self._dt, float(np.median(np.diff(ts))) if len(ts) > 1 else self._dt)
        return sample_target(t, self._task_t[0], self._task_x[0], period)

    def _take_pending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The pending bins the task has caught up with; later ones stay pending."""
        if not self._pending:
            return None
        X = np.concatenate([p[0] for p in self._pending])
        t = np.concatenate([p[1] for p in self._pending])
        V = np.concatenate([p[2] for p in self._pending])
        ready = t <= self._task_newest + 1e-9
        self._pending = [(X[~ready], t[~ready], V[~ready])] if not ready.all() else []
        if not ready.any():
            return None
        return X[ready], t[ready], V[ready]

    def _maybe_calibrate(self) -> None:
        first = self._pending[0][1][0]
        newest = self._pending[-1][1][-1]
        if newest - first + self._dt < self.params.calibration_s or self._adapter.busy:
            return
        taken = self._take_pending()
        if taken is None:
            return
        X, t, _ = taken
        rows = self._task_at(t)
        if self._has_velocity:
            V = rows[:, 4:6]
        else:  # no velocity in the task: the straight line to the target
            cursor, target = rows[:, 0:2], rows[:, 2:4]
            V = refit_intention(np.zeros_like(cursor), cursor, target,
                                target_radius=self.params.target_radius,
                                speed=self.params.speed or 0.4)
        known = np.isfinite(V).all(axis=1)
        if known.sum() < MIN_CALIBRATION_BINS:
            # too few bins with a task: wait for more, keeping one calibration's worth
            keep = t > t[-1] - self.params.calibration_s
            self._pending.insert(0, (X[keep], t[keep], np.full((int(keep.sum()), 2), np.nan)))
            return
        self._adapter.submit(_Job("calibrate", X[known], V[known], np.ones(int(known.sum())),
                                  float(t[-1])))

    def _submit_update(self) -> None:
        if self._adapter.busy:
            return  # the worker is behind: these bins join the next update
        taken = self._take_pending()
        if taken is None:
            return
        X, t, decoded = taken
        self._last_update = float(t[-1])
        rows = self._task_at(t)
        cursor, target = rows[:, 0:2], rows[:, 2:4]
        labels = refit_intention(decoded, cursor, target, target_radius=self.params.target_radius,
                                 speed=self.params.speed)
        known = np.isfinite(labels).all(axis=1)
        if known.any():
            self._adapter.submit(_Job("update", X, np.where(known[:, None], labels, 0.0),
                                      known.astype(np.float64), float(t[-1])))

    def _model_events(self) -> dict[str, AnyChunk] | None:
        if not self._events:
            return None
        events, self._events = self._events, []
        labels, stamps = [], []
        for at, kind, details in events:
            labels.append(f"model/{kind} {json.dumps(details, sort_keys=True)}")
            stamps.append(at)
            if self.context is not None:
                self.context.emit_event(f"model_{kind}", node=self.name, **details)
        return {"model": EventChunk(tuple(labels), np.array(stamps), self._model_spec)}

    def close(self) -> None:
        adapter = getattr(self, "_adapter", None)
        if adapter is None:
            return
        adapter.close()
        if self._serving is not None:
            adapter.archive_final(self.version, self._serving)

    def summary(self) -> dict[str, Any]:
        """Versions and adaptation, for the run's summary."""
        adapter = getattr(self, "_adapter", None)
        return {"online": self._serving is not None if adapter else False,
                "version": self.version, "updates": self.updates, "bins": self.bins,
                "adapt": self.params.adapt,
                "update_ms_p50": adapter.update_ms(50) if adapter else None,
                "update_ms_max": adapter.update_ms(100) if adapter else None}


class _Adapter:
    """The filter's twin that calibration and CLDA change, off the hot path.

    The worker owns its own filter and strategy; each changed filter goes back to
    the node as a deep copy (a new version), so the node and the worker never
    share an object. ``inline`` runs jobs on the caller's thread (simulated clock).
    """

    def __init__(self, params: CursorDecoderParams, dt: float, *, inline: bool,
                 archive: Any) -> None:
        self.params, self.dt, self.inline, self.archive = params, dt, inline, archive
        self._decoder: KalmanDecoder | None = None
        self._strategy: Any = None
        self._version = 0
        self._archived_at = -math.inf
        self._archived_version = 0
        self._results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._busy = threading.Event()
        self._durations: list[float] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._work, name="cursor-clda", daemon=True)
            self._thread.start()

    @property
    def busy(self) -> bool:
        """A job is queued or running."""
        return self._busy.is_set()

    def start_from(self, decoder: KalmanDecoder) -> None:
        """Adapt a copy of an already fitted filter (the initial model is version 1)."""
        self._decoder = copy.deepcopy(decoder)
        self._strategy = self._make_strategy(self._decoder)
        self._version = 1
        self._archive(1, self._decoder, {"reason": "initial_model"}, math.inf)

    def submit(self, job: _Job) -> None:
        self._busy.set()
        if self.inline:
            self._run(job)
        else:
            self._jobs.put(job)

    def take(self) -> _Result | None:
        """The newest version the worker made since the last call (older ones never serve)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        newest = None
        while True:
            try:
                newest = self._results.get_nowait()
            except queue.Empty:
                return newest

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception as exc:  # reaches the node's thread, which fails the run
                self._error = exc
                self._busy.clear()

    def _run(self, job: _Job) -> None:
        t0 = time.perf_counter()
        if job.kind == "calibrate":
            self._decoder = KalmanDecoder(shrinkage=_SHRINKAGE).fit(job.X, job.V)
            self._strategy = self._make_strategy(self._decoder)
            changed, details = True, {"source": "calibration", "bins": int(job.X.shape[0])}
        else:
            changed = bool(self._strategy.update(job.X, job.V, self._decoder,
                                                 sample_weight=job.weight))
            details = {"strategy": self.params.adapt, "bins": int(job.X.shape[0]),
                       "labelled": int(np.count_nonzero(job.weight))}
        self._durations.append(time.perf_counter() - t0)
        if changed:
            self._version += 1
            details["update_ms"] = round(self._durations[-1] * 1000, 3)
            decoder = copy.deepcopy(self._decoder)
            self._results.put(_Result(self._version, decoder, details))
            self._archive(self._version, decoder, {"reason": job.kind, **details}, job.t_end)
        self._busy.clear()

    def _make_strategy(self, decoder: KalmanDecoder) -> Any:
        if self.params.adapt == "none":
            return None
        from bci_runtime.decoders import clda

        cls = getattr(clda, STRATEGIES[self.params.adapt])
        extra: dict[str, Any] = {}
        if cls is clda.RML:
            # a version is published once per update: re-solving the model for every bin of
            # it would only hold the GIL longer against the hot path
            extra["update_every"] = max(1, int(round(self.params.update_s / self.dt)))
        return cls(half_life=self.params.half_life_s, dt=self.dt, **extra).fit(decoder)

    def _archive(self, version: int, decoder: KalmanDecoder, metrics: dict[str, Any],
                 t_end: float) -> None:
        due = version == 1 or t_end - self._archived_at >= self.params.archive_s
        if self.archive is None or not due:
            return
        self.archive(version, decoder, metrics, self._archived_version or None)
        self._archived_at = t_end if math.isfinite(t_end) else self._archived_at
        self._archived_version = version

    def archive_final(self, version: int, decoder: KalmanDecoder) -> None:
        """At the end: the version that served last, unless it is archived already."""
        if self.archive is not None and version > self._archived_version:
            self.archive(version, decoder, {"reason": "final"}, self._archived_version or None)
            self._archived_version = version

    def update_ms(self, q: float) -> float | None:
        if not self._durations:
            return None
        return round(float(np.percentile(self._durations, q)) * 1000, 3)

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=10.0)
            self._thread = None
