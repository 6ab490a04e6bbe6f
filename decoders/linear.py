"""A linear classifier node, calibrated on the first labelled windows of a run."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from scipy.special import expit

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.labels import LabelTracker
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec, require_signal


def decision_outputs(node: str, classes: list[str], source_id: str) -> dict[str, StreamSpec]:
    """The output specs of a decoder node: class probabilities, and its model events.

    Parameters
    ----------
    node : str
        The node's name.
    classes : list of str
        One probability channel per class, in this order.
    source_id : str
        The input stream's source_id; the outputs' derive from it.
    """
    n = len(classes)
    return {"decision": StreamSpec(
        name=f"{node}-decision", type="Decision", channel_names=tuple(classes),
        srate=0.0, dtype="float64", channel_types=("misc",) * n, units=("prob",) * n,
        source_id=f"{source_id}-{node}"),
        "model": StreamSpec.events(f"{node}-model", f"{source_id}-{node}-model")}


class LinearClassifierParams(NodeParams):
    classes: list[str] = Field(["left", "right"], min_length=2, description="class names")
    weights: list[list[float]] | None = Field(
        None, description="fixed model, (n_classes, n_features) (binary: one row, positive "
        "= second class); omit to calibrate on labelled windows")
    bias: list[float] | None = Field(None, description="fixed intercepts, one per weight row")
    calibration_s: float = Field(15.0, gt=0, description="seconds of labelled data to "
                                 "calibrate on before going online")
    min_windows: int = Field(10, ge=2, description="fewest windows per class to train")
    label_prefix: str = Field("cue/", description="cue marker prefix")
    end_marker: str = Field("end", description="marker ending a cued span")
    label_delay_s: float = Field(0.5, ge=0, description="skip this long after each cue")
    shrinkage: Literal["auto"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "auto", description="LDA covariance shrinkage, 'auto' (Ledoit-Wolf) or 0-1")
    install_at: list[float] | None = Field(
        None, description="timestamps of the first window each model served in a recorded "
        "session (its 'model' stream); the fit then runs inline and each model goes online "
        "at that window, as it did in the recording. `bci replay` sets it")

    @model_validator(mode="after")
    def _model(self) -> LinearClassifierParams:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {self.classes}")
        if self.weights is not None:
            rows = 1 if len(self.classes) == 2 else len(self.classes)
            if len(self.weights) != rows:
                raise ValueError(f"weights need {rows} row(s) for {len(self.classes)} classes")
            if self.bias is not None and len(self.bias) != rows:
                raise ValueError(f"bias needs {rows} value(s)")
        return self


class LinearClassifier(Node):
    """Shrinkage LDA on feature windows; emits class probabilities.

    Without fixed ``weights`` it collects the windows that fall inside cued
    spans (from the ``labels`` event input) during the first ``calibration_s``
    seconds, fits scikit-learn's LDA once, logs cross-validated accuracy
    (folds by trial, so windows of one trial never straddle train and test) and
    goes online. On the live clock the fit runs in a background thread and the
    model is swapped in between two chunks, so training never delays a chunk; on
    the simulated clock it runs inline, keeping runs deterministic. Online
    prediction is one matrix product, not a scikit-learn call, to keep the hot
    path short.
    """

    type_name = "linear_classifier"
    Params = LinearClassifierParams
    features = Input("signal", doc="feature windows, (n_windows, n_features)")
    labels = Input("events", required=False, doc="cue markers for calibration")
    decision = Output("signal", doc="(n_windows, n_classes) class probabilities")
    model = Output("events", doc="'model/online {json}' when a model goes online, stamped "
                   "with the first window it serves")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        spec = inputs["features"]
        require_signal(spec, node=self.name, port="features")
        p = self.params
        if p.weights is None and "labels" not in inputs:
            raise self.spec_error("labels", "without fixed 'weights' the classifier calibrates "
                                  "on cued windows, but 'labels' is not connected",
                                  hint="connect 'labels' to a cue marker stream, or give "
                                  "'weights' (and 'bias')")
        if p.weights is not None:
            widths = {len(row) for row in p.weights}
            if widths != {spec.n_channels}:
                raise self.spec_error("features", f"weights have {sorted(widths)} columns but "
                                      f"'{spec.name}' has {spec.n_channels} features",
                                      hint="give one weight per feature channel")
        return decision_outputs(self.name, p.classes, spec.source_id)

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p = self.params
        self._tracker = LabelTracker(p.label_prefix, p.end_marker, p.label_delay_s)
        self._x: list[np.ndarray] = []
        self._y: list[int] = []
        self._groups: list[int] = []
        self._start: float | None = None
        self._class_index = {c: i for i, c in enumerate(p.classes)}
        self._spec = self.output_specs["decision"]
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None
        self.training: dict | None = None
        self._fitting: threading.Thread | None = None
        self._fit_error: BaseException | None = None
        self._warned = False
        self._fitted: tuple[np.ndarray, np.ndarray, dict] | None = None
        self._inline_fit = context.clock.simulated or p.install_at is not None
        self._install_at = list(p.install_at or [])
        self._version = 0
        if p.weights is not None:
            self.coef_ = np.asarray(p.weights, dtype=np.float64)
            self.intercept_ = np.asarray(p.bias or [0.0] * len(p.weights), dtype=np.float64)

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if isinstance(chunk, EventChunk):
            self._tracker.update(chunk)
            return None
        x = chunk.data
        if self._fit_error is not None:  # the background fit failed: fail the run, loudly
            raise RuntimeError(f"calibration failed: {self._fit_error!r}") from self._fit_error
        first = float(chunk.timestamps[0])
        announce = None
        if self.coef_ is None and self._fitted is not None and self._due(first):
            announce = self._install(*self._fitted, first_window=first)  # between two chunks
        if self.coef_ is None:
            if self._fitting is None and self._fitted is None:
                self._collect(x, chunk.timestamps)
                if self._fitted is not None and self._due(first):  # fitted inline: serve now
                    announce = self._install(*self._fitted, first_window=first)
            if self.coef_ is None:
                return None
        out: dict[str, AnyChunk] = {
            "decision": Chunk(self.predict_proba(x), chunk.timestamps, self._spec)}
        if announce is not None:
            out["model"] = announce
        return out

    def _due(self, first_window: float) -> bool:
        """Whether a fitted model may go online at the window stamped ``first_window``."""
        if self.params.install_at is None:
            return True
        return bool(self._install_at) and first_window >= self._install_at[0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        x : ndarray, shape (n_windows, n_features)

        Returns
        -------
        ndarray, shape (n_windows, n_classes)
        """
        scores = x @ self.coef_.T + self.intercept_  # type: ignore[union-attr]
        if scores.shape[1] == 1:  # binary: logistic of the decision value
            p1 = expit(scores[:, 0])
            return np.column_stack([1.0 - p1, p1])
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def _collect(self, x: np.ndarray, ts: np.ndarray) -> None:
        if self._start is None:
            self._start = float(ts[0])
        for row, t in zip(x, ts.tolist()):  # one iteration per window, not per sample
            span = self._tracker.span_at(t)
            if span is not None and span.label in self._class_index:
                self._x.append(row)
                self._y.append(self._class_index[span.label])
                self._groups.append(span.index)
        if ts[-1] - self._start >= self.params.calibration_s:
            counts = np.bincount(np.asarray(self._y, dtype=int), minlength=len(self.params.classes))
            if counts.min() >= self.params.min_windows:
                x_, y_, g_ = np.asarray(self._x), np.asarray(self._y), np.asarray(self._groups)
                if self._inline_fit:
                    self._fitted = self._fit(x_, y_, g_)
                else:
                    self._fitting = threading.Thread(target=self._fit_in_background,
                                                     args=(x_, y_, g_), daemon=True,
                                                     name=f"fit-{self.name}")
                    self._fitting.start()
            elif self.context is not None and not self._warned:
                self._warned = True
                self.context.emit_event("calibration_extended", node=self.name,
                                        windows_per_class=counts.tolist(),
                                        needed=self.params.min_windows)

    def _fit_in_background(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        try:
            self._fitted = self._fit(x, y, groups)
        except Exception as exc:  # raised on the graph's thread at the next chunk
            self._fit_error = exc

    def _fit(self, x: np.ndarray, y: np.ndarray,
             groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Fit shrinkage LDA; returns (coef, intercept, training figures)."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.model_selection import GroupKFold, cross_val_score

        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=self.params.shrinkage)
        n_groups = len(np.unique(groups))
        # folds by trial; only when every class has trials to spare: with fewer than three
        # a held-out trial leaves one of its class to train on, and the score says more
        # about that one trial than about the decoder (often far below chance)
        trials_per_class = [len(np.unique(groups[y == k])) for k in np.unique(y)]
        cv = None
        if n_groups >= 3 and min(trials_per_class) >= 3:
            folds = min(5, n_groups)
            scores = cross_val_score(lda, x, y, groups=groups, cv=GroupKFold(folds))
            cv = float(np.mean(scores)) if np.isfinite(scores).all() else None
        lda.fit(x, y)
        training = {"windows": len(y), "trials": n_groups, "cv_accuracy": cv,
                    "windows_per_class": np.bincount(y).tolist(),
                    "chance": 1.0 / len(self.params.classes)}
        return lda.coef_.copy(), lda.intercept_.copy(), training

    def _install(self, coef: np.ndarray, intercept: np.ndarray, training: dict, *,
                 first_window: float) -> EventChunk:
        """Serve the fitted model from now on; returns its ``model/online`` marker."""
        self.coef_, self.intercept_, self.training = coef, intercept, training
        self._fitted = None
        if self._install_at:
            self._install_at.pop(0)
        self._version += 1
        # only what a replay computes identically goes into the recorded marker
        info = {"version": self._version, "first_window": first_window, **training}
        if self.context is not None:
            self.context.emit_event("decoder_trained", node=self.name, **info)
        return EventChunk.single(f"model/online {json.dumps(info, sort_keys=True)}",
                                 first_window, self.output_specs["model"])

    def close(self) -> None:
        if self._fitting is not None:
            self._fitting.join(30.0)

    def summary(self) -> dict:
        """Training figures for the run's summary."""
        return {"trained": self.coef_ is not None, "training": self.training}
