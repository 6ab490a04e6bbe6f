"""Where a model lifecycle's training runs: in the worker thread, or in a child process.

:class:`InlineTrainer` keeps the working copy and applies jobs to it in the
calling thread. Fine for covariance decoders (an update is a few small matrix
products that release the GIL), not for torch fine-tuning: its Python-level
steps hold the GIL and the second core, and the hot path's p99 triples.
:class:`ProcessTrainer` runs the same :class:`InlineTrainer` in a child process
(spawned, one BLAS/torch thread, lower CPU priority) and receives each
published model through a pipe; the hot path's process then only spends the
unpickling of a model without its training buffers.

Both publish *serving copies* (:func:`serving_copy`): the model without the data
buffers only training needs (a torch decoder's replay buffer), so a published
version is small to send, archive and hash, and is the same whichever trainer
made it. The working copy keeps them; after a rollback the restored version
takes over the working copy's buffers (:meth:`InlineTrainer.reset`).

Pickle only carries objects between this process and its own child here;
nothing read from disk is ever unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import multiprocessing
import os
import traceback
from typing import Any, Protocol

import numpy as np

from bci_runtime.errors import DecoderError


class Trainable(Protocol):
    """What a trainer needs from a job (see :class:`~bci_runtime.decoders.lifecycle.Job`)."""

    kind: str
    X: np.ndarray | None
    y: np.ndarray | None
    correct: np.ndarray | None


def _inner(model: Any) -> Any:
    """The fitted decoder holding training data: the model, or a co-adaptive wrapper's."""
    return getattr(model, "decoder_", model)


def serving_copy(model: Any) -> Any:
    """A deep copy of ``model`` without its training-only data buffers.

    Parameters
    ----------
    model : estimator
        A decoder, or a :class:`~bci_runtime.decoders.adaptation.CoAdaptiveDecoder`.
        A decoder with ``detach_training_data`` / ``attach_training_data`` (the
        torch ones) loses its replay buffer in the copy; others are copied whole.
    """
    inner = _inner(model)
    if not hasattr(inner, "detach_training_data"):
        return copy.deepcopy(model)
    data = inner.detach_training_data()
    try:
        return copy.deepcopy(model)
    finally:
        inner.attach_training_data(data)


def model_digest(model: Any) -> str:
    """SHA-256 over a model's fitted arrays and scalars, in attribute order.

    Two models with the same parameters have the same digest; it identifies a
    version in events and manifests without writing a file.
    """
    h = hashlib.sha256()

    def walk(obj: Any, depth: int) -> None:
        if depth > 8:
            return
        if isinstance(obj, np.ndarray):
            h.update(str(obj.dtype).encode() + str(obj.shape).encode())
            if obj.dtype != object:
                h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, (int, float, str, bool, type(None), np.generic)):
            h.update(repr(obj).encode())
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, depth + 1)
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                h.update(str(key).encode())
                walk(obj[key], depth + 1)
        elif hasattr(obj, "state_dict") and callable(obj.state_dict):  # torch modules
            for key, tensor in obj.state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().cpu().numpy().tobytes())
        elif hasattr(obj, "__dict__"):
            h.update(type(obj).__qualname__.encode())
            walk(vars(obj), depth + 1)

    walk(model, 0)
    return h.hexdigest()


class InlineTrainer:
    """Applies jobs to a working copy in the calling thread.

    Parameters
    ----------
    make_model : callable
        Returns a new unfitted model, for calibration and recalibration.
    """

    def __init__(self, make_model: Any) -> None:
        self.make_model = make_model
        self.working: Any = None

    def train(self, job: Trainable) -> tuple[Any, str] | None:
        """Run a calibrate, recalibrate or update job.

        Returns
        -------
        (estimator, str) or None
            The serving copy of the result and its :func:`model_digest` (computed
            where the training ran: in a child process, off the hot path's
            interpreter); None for an update before anything was calibrated.
        """
        if job.kind in ("calibrate", "recalibrate"):
            model = self.make_model().fit(job.X, job.y)
        elif job.kind == "update":
            if self.working is None:
                return None
            model = self.working
            model.partial_fit(job.X, job.y, correct=job.correct)
        else:
            raise DecoderError(f"unknown job kind '{job.kind}'")
        self.working = model
        published = serving_copy(model)
        return published, model_digest(published)

    def reset(self, model: Any) -> None:
        """Continue from ``model`` (a serving copy), keeping the working copy's buffers."""
        restored = copy.deepcopy(model)
        if self.working is not None:
            _graft(restored, self.working)
        self.working = restored

    def close(self) -> None:
        """Nothing to release."""


def _graft(model: Any, donor: Any) -> None:
    """Give ``model`` the training buffers of ``donor`` when both keep them."""
    inner, source = _inner(model), _inner(donor)
    if hasattr(inner, "attach_training_data") and hasattr(source, "detach_training_data") \
            and type(inner) is type(source):
        inner.attach_training_data(source.detach_training_data())


class ProcessTrainer:
    """An :class:`InlineTrainer` in a child process.

    Parameters
    ----------
    template : estimator
        A new unfitted model; each calibration fits a deep copy of it (a factory
        function may not survive the trip to a spawned process, an estimator does).
    nice : int
        CPU priority increment of the child, so the hot path wins a contended core.
    """

    def __init__(self, template: Any, nice: int = 10) -> None:
        ctx = multiprocessing.get_context("spawn")  # forking a threaded process is unsafe
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_child_main, args=(child, template, nice),
                                    name="decoder-training", daemon=True)
        self._process.start()
        child.close()

    def train(self, job: Trainable) -> tuple[Any, str] | None:
        """As :meth:`InlineTrainer.train`, in the child process."""
        return self._call(("train", job))

    def reset(self, model: Any) -> None:
        self._call(("reset", model))

    def _call(self, message: tuple) -> Any:
        try:
            self._conn.send(message)
            status, payload = self._conn.recv()  # blocks without the GIL until it is done
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            code = self._process.exitcode
            raise DecoderError(f"the training process stopped (exit code {code})",
                               hint="the serving version keeps serving; restart the session "
                               "to train again") from exc
        if status == "error":
            kind, text = payload
            raise DecoderError(f"training failed in the child process: {kind}",
                               hint=text.strip().splitlines()[-1] if text.strip() else None)
        return payload

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child after the job it is on."""
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
        self._conn.close()


def _child_main(conn: Any, template: Any, nice: int) -> None:
    """The child's loop: one job at a time, the serving copy (or the error) back."""
    import signal

    from bci_runtime.realtime import single_threaded_math

    # Ctrl-C reaches the whole process group: the parent stops the session and then us
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    single_threaded_math()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # a covariance decoder does not need torch
        pass
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not permitted here: run at the same priority
            pass
    trainer = InlineTrainer(lambda: copy.deepcopy(template))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        try:
            if message[0] == "train":
                conn.send(("ok", trainer.train(message[1])))
            else:
                trainer.reset(message[1])
                conn.send(("ok", None))
        except Exception as exc:  # reported to the parent, which keeps serving
            conn.send(("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc())))
