"""A co-adaptive decoder's managed lifecycle: versions, background updates, shadow, rollback.

The hot path only ever calls :meth:`ModelLifecycle.predict_proba` on the
*serving* version and, between two chunks, :meth:`ModelLifecycle.poll`. Every
change of the model is computed elsewhere:

1. :meth:`~ModelLifecycle.submit` queues a job (calibrate, adapt to trials,
   recalibrate on recent trials) for one background worker thread;
2. the worker applies jobs in queue order to its own working copy, and after
   each job publishes a snapshot: a new :class:`ModelVersion` (parent, the
   trials it learned from, a hash of its parameters);
3. :meth:`~ModelLifecycle.poll` installs a published version between two
   chunks: the first one goes straight online; later ones enter **shadow**,
   predicting the next ``shadow_trials`` labelled trials next to the serving
   version, and are then promoted (swap) or **rolled back** when they did worse
   by more than ``tolerance``. A version published while another is in shadow
   descends from it and takes its place; the branch's shadow record goes on.
   A rollback also resets the worker's copy to the serving version.

Instead of a calibration, :meth:`~ModelLifecycle.start_from` can make a model
fitted elsewhere (an earlier session's serving version) the first version; the
worker's copy then continues from it.

Training runs in the worker thread, or in a child process for models whose
training holds the GIL (``isolation="process"``, see
:mod:`~bci_runtime.decoders.training_worker`).

Everything that decides what the model is happens on the hot path's thread, in
chunk order, and the worker is a pure function of its job queue: the one thing
that depends on the machine is *when* a job's result is ready. The lifecycle
reports each install with the timestamp of the first window it served, and
:class:`ModelLifecycle` given those timestamps (``install_at``) computes every job
inline and installs each result at its recorded window, so a replay reproduces
every update, swap and rollback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bci_runtime.decoders.training_worker import (  # noqa: F401 - model_digest re-exported
    InlineTrainer,
    ProcessTrainer,
    model_digest,
    serving_copy,
)
from bci_runtime.errors import DecoderError


@dataclass
class ModelVersion:
    """One version of the decoder.

    Attributes
    ----------
    version : int
        1 for the calibrated (or initial) model, then one more per published update.
    parent : int or None
        The version it was derived from.
    reason : str
        ``calibration``, ``initial_model`` (fitted elsewhere, see
        :meth:`ModelLifecycle.start_from`), ``update`` or ``recalibration``.
    model : estimator
        The fitted model (owned by the lifecycle; never mutated once published).
    trained_on : dict
        The data window it learned from: ``trials`` (count) and ``first``/``last``
        timestamps of those trials.
    digest : str
        SHA-256 of its parameters (see :func:`model_digest`).
    metrics : dict
        Shadow evaluation: ``shadow_trials``, ``accuracy``, ``serving_accuracy``.
    origin : dict
        Where a version not trained here came from (e.g. ``source``, ``path``,
        ``sha256`` of an initial model file); empty otherwise.
    """

    version: int
    parent: int | None
    reason: str
    model: Any
    trained_on: dict[str, Any]
    digest: str
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    stored: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (no parameters)."""
        return {"version": self.version, "parent": self.parent, "reason": self.reason,
                "trained_on": self.trained_on, "digest": self.digest, "metrics": self.metrics,
                **self.origin, **self.stored}


@dataclass
class Job:
    """Work for the background worker.

    Attributes
    ----------
    kind : {"calibrate", "update", "recalibrate", "reset"}
    X : ndarray, shape (n_trials, n_channels, n_times), or None
    y : ndarray, shape (n_trials,), or None
    correct : ndarray of bool, shape (n_trials,), or None
    times : ndarray, shape (n_trials,)
        Trial timestamps (what the version's ``trained_on`` reports).
    model : estimator or None
        ``reset``: the version to continue from.
    parent : int or None
        ``reset``: that version's number.
    """

    kind: str
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    correct: np.ndarray | None = None
    times: np.ndarray | None = None
    model: Any = None
    parent: int | None = None
    epoch: int = 0


class ModelLifecycle:
    """Serve one version, update a copy in the background, shadow, swap, roll back.

    Parameters
    ----------
    make_model : callable
        Returns a new unfitted model (e.g. a
        :class:`~bci_runtime.decoders.adaptation.CoAdaptiveDecoder`), for
        calibration and recalibration.
    shadow_trials : int
        Labelled trials a new version predicts in shadow before it is promoted
        or rolled back; 0 swaps every new version in at once.
    tolerance : float
        How much lower the candidate's shadow accuracy may be than the serving
        version's before it is rolled back.
    on_event : callable
        ``on_event(kind, details)`` for every install, swap, rollback and
        failure; ``details`` is JSON-ready.
    background : bool
        Run jobs on a worker thread (live); False runs them inline at
        :meth:`submit` (simulated clock, replay).
    install_at : list of float, optional
        Replay: the first-window timestamps at which the recorded run installed
        each published version, in order. Jobs run inline and each result is
        held until its timestamp.
    archive : callable, optional
        ``archive(version) -> dict`` called by the worker right after a version is
        published, e.g. to write its model file; what it returns (``file``,
        ``sha256``) is added to the version's description. Versions that are
        neither serving nor in shadow then drop their in-memory model.
    isolation : {"thread", "process"}
        Where background training runs: the worker thread, or a child process
        (:class:`~bci_runtime.decoders.training_worker.ProcessTrainer`) for
        models whose training holds the GIL (torch fine-tuning). Inline runs
        (``background=False``, replay) always train in process.
    """

    def __init__(self, make_model: Callable[[], Any], *, shadow_trials: int = 10,
                 tolerance: float = 0.0, on_event: Callable[[str, dict], None] | None = None,
                 background: bool = True, install_at: list[float] | None = None,
                 archive: Callable[[ModelVersion], dict] | None = None,
                 isolation: str = "thread") -> None:
        if shadow_trials < 0:
            raise DecoderError(f"shadow_trials must be >= 0, got {shadow_trials}")
        self.make_model = make_model
        self.shadow_trials = shadow_trials
        self.tolerance = tolerance
        self.on_event = on_event or (lambda kind, details: None)
        self.archive = archive
        self.install_at = None if install_at is None else list(install_at)
        self.background = background and install_at is None
        self.versions: list[ModelVersion] = []
        self.serving: ModelVersion | None = None
        self.candidate: ModelVersion | None = None
        self._shadow: list[tuple[bool, bool]] = []  # (candidate right, serving right)
        self._ready: list[ModelVersion] = []  # published, not installed yet
        self._ready_lock = threading.Lock()
        if isolation not in ("thread", "process"):
            raise DecoderError(f"isolation must be 'thread' or 'process', got {isolation!r}")
        # the working copy lives in the trainer; a child process only for background work
        self._trainer = (ProcessTrainer(make_model()) if isolation == "process"
                         and self.background else InlineTrainer(make_model))
        self._working_parent: int | None = None
        self._next_version = 1
        self._epoch = 0  # rollbacks so far
        self._error: BaseException | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        if self.background:
            self._worker = threading.Thread(target=self._work, daemon=True,
                                            name="decoder-lifecycle")
            self._worker.start()

    # -- hot path -------------------------------------------------------------------

    @property
    def online(self) -> bool:
        """Whether a version is serving."""
        return self.serving is not None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The serving version's class probabilities, shape (n_windows, n_classes)."""
        return self.serving.model.predict_proba(X)  # type: ignore[union-attr]

    def poll(self, first_window: float) -> list[tuple[str, dict]]:
        """Between two chunks: install what the worker published, if it is due.

        Parameters
        ----------
        first_window : float
            Timestamp of the first window the next chunk will serve.

        Returns
        -------
        list of (str, dict)
            The events raised (also sent to ``on_event``).
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise DecoderError(f"the background update failed: {error!r}",
                               hint="the serving version keeps serving; see the traceback "
                               "in the events log") from error
        events: list[tuple[str, dict]] = []
        while True:
            with self._ready_lock:
                if not self._ready:
                    break
                if self.install_at is not None:
                    if not self.install_at or first_window < self.install_at[0]:
                        break
                    self.install_at.pop(0)
                version = self._ready.pop(0)
                if version.epoch != self._epoch:
                    continue  # learned on a branch that was rolled back
            events.append(self._install(version, first_window))
        return events

    def observe(self, X: np.ndarray, y: np.ndarray, t: float) -> list[tuple[str, dict]]:
        """A labelled trial for the shadow evaluation (before anyone learns from it).

        Parameters
        ----------
        X : ndarray, shape (1, n_channels, n_times)
        y : ndarray, shape (1,)
        t : float
            The trial's timestamp.
        """
        if self.candidate is None or self.serving is None:
            return []
        serving_right = bool(self.serving.model.predict(X)[0] == y[0])
        candidate_right = bool(self.candidate.model.predict(X)[0] == y[0])
        self._shadow.append((candidate_right, serving_right))
        if len(self._shadow) < self.shadow_trials:
            return []
        return [self._decide(t)]

    # -- jobs -----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job for the worker (or run it now, inline)."""
        job.epoch = self._epoch
        if self.background:
            self._jobs.put(job)
        else:
            self._run(job)

    def start_from(self, model: Any, *, origin: dict[str, Any] | None = None) -> ModelVersion:
        """Serve ``model``, fitted elsewhere, as version 1 instead of calibrating.

        The version is published at once (and archived, in the calling thread),
        so the next :meth:`poll` installs it (with ``install_at``: at its first
        recorded install); the worker's copy continues from ``model``, so
        updates, shadow, rollbacks and recalibrations go on as after a
        calibration.

        Parameters
        ----------
        model : estimator
            A fitted model (e.g. a loaded
            :class:`~bci_runtime.decoders.adaptation.CoAdaptiveDecoder`); the
            lifecycle works on copies of it.
        origin : dict, optional
            JSON-ready description of where it came from, added to the version's
            description (its events and markers).

        Returns
        -------
        ModelVersion
            The published version.

        Raises
        ------
        DecoderError
            When a version or a job came first: only the first version can start
            from a model.
        """
        if self._next_version != 1 or self.versions or self._ready or self.pending():
            raise DecoderError("start_from: the lifecycle already has a version or a job",
                               hint="start from a model before submitting any job")
        published = serving_copy(model)
        version = ModelVersion(
            version=self._next_version, parent=None, reason="initial_model", model=published,
            trained_on={"trials": 0, "first": None, "last": None},
            digest=model_digest(published), epoch=self._epoch, origin=dict(origin or {}))
        self._next_version += 1
        if self.archive is not None:
            version.stored = dict(self.archive(version))
        with self._ready_lock:
            self._ready.append(version)
        # the worker continues from the full model (training buffers included), in queue order
        self.submit(Job("reset", model=model, parent=version.version))
        return version

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after the jobs already queued."""
        if self._worker is not None and self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join(timeout)
        self._trainer.close()

    def pending(self) -> int:
        """Jobs queued and not done yet."""
        return self._jobs.unfinished_tasks if self.background else 0

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                self._run(job)
            except Exception as exc:  # reported on the hot path's thread at the next poll
                self._error = exc
            finally:
                self._jobs.task_done()

    def _run(self, job: Job) -> None:
        if job.kind == "reset":
            self._trainer.reset(job.model)
            self._working_parent = job.parent
            return
        published = self._trainer.train(job)
        if published is None:
            return  # an update before calibration: nothing to adapt
        model, digest = published
        times = job.times if job.times is not None and len(job.times) else np.array([np.nan])
        version = ModelVersion(
            version=self._next_version, parent=self._working_parent, reason={
                "calibrate": "calibration", "recalibrate": "recalibration"}.get(job.kind,
                                                                                 "update"),
            model=model,
            trained_on={"trials": int(len(job.X)), "first": float(times[0]),
                        "last": float(times[-1])},
            digest=digest, epoch=job.epoch)
        self._working_parent = version.version
        self._next_version += 1
        if self.archive is not None:
            version.stored = dict(self.archive(version))
        with self._ready_lock:
            self._ready.append(version)

    # -- decisions ------------------------------------------------------------------

    def _install(self, version: ModelVersion, first_window: float) -> tuple[str, dict]:
        self.versions.append(version)
        if self.serving is None or self.shadow_trials == 0:
            previous = self.serving
            self.serving, self.candidate, self._shadow = version, None, []
            details = {**version.describe(), "first_window": first_window,
                       "replaces": None if previous is None else previous.version}
            kind = "online" if previous is None else "swap"
        else:
            # a newer candidate replaces one still in shadow: it descends from it (same
            # epoch), so the branch's shadow record goes on instead of starting over
            if self.candidate is None:
                self._shadow = []
            self.candidate = version
            details = {**version.describe(), "first_window": first_window,
                       "serving": self.serving.version}
            kind = "shadow"
        self.on_event(kind, details)
        self._release()
        return kind, details

    def _release(self) -> None:
        """Drop the in-memory model of versions that neither serve nor shadow (archived)."""
        if self.archive is None:
            return
        for v in self.versions:
            if v is not self.serving and v is not self.candidate:
                v.model = None

    def _decide(self, t: float) -> tuple[str, dict]:
        candidate, serving = self.candidate, self.serving
        hits = np.array(self._shadow, dtype=float)
        cand_acc, serv_acc = float(hits[:, 0].mean()), float(hits[:, 1].mean())
        candidate.metrics = {"shadow_trials": len(hits), "accuracy": round(cand_acc, 4),  # type: ignore[union-attr]
                             "serving_accuracy": round(serv_acc, 4)}
        self.candidate, self._shadow = None, []
        details = {**candidate.describe(), "at": t, "serving": serving.version}  # type: ignore[union-attr]
        if cand_acc + self.tolerance >= serv_acc:
            self.serving = candidate
            kind = "swap"
        else:
            kind = "rollback"
            # the worker continues from what serves, not from the rejected branch
            self._epoch += 1
            self.submit(Job("reset", model=serving.model, parent=serving.version))  # type: ignore[union-attr]
        self.on_event(kind, details)
        self._release()
        return kind, details
