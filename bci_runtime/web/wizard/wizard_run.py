"""One run of the wizard (the calibration run, the online loop), recorded, on its own thread.

A :class:`WizardRun` is a :class:`~bci_runtime.recorded_run.RecordedRun` of a
pipeline configuration built by :mod:`.run_configs`, in a folder of the wizard's
session (``calibration-01``, ``online-01``...). As its chunks pass it

* follows the cue markers (:class:`~.cue_progress.CueProgress`) and tells the
  page each cue the moment it is emitted;
* passes the decoder's newest class probabilities to the page, at most
  ``DECISIONS_HZ`` times a second;
* stops a calibration run once the expected trials are complete and recorded;
* for the continuous cursor, follows the task (:class:`~.cursor_progress.CursorProgress`)
  and sends the page the cursor and the target, at most ``CURSOR_HZ`` times a second.

A stream lost during a calibration ends the run as ``interrupted``: what was
recorded stays in its XDF and a new run can complete the trials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bci_runtime.chunk import Chunk, EventChunk
from bci_runtime.graph import load_graph_text
from bci_runtime.recorded_run import RecordedRun
from bci_runtime.run_status import describe_event
from bci_runtime.web.wizard.cue_progress import CueProgress
from bci_runtime.web.wizard.cursor_progress import CursorProgress
from bci_runtime.web.wizard.run_configs import CUES, DECODER, SOURCE

DECISIONS_HZ = 10.0
TAIL_S = 0.3  # signal recorded past the last trial's end before a calibration stops
#: runtime events the page shows as they happen
SHOWN_EVENTS = frozenset({
    "stream_lost", "stream_stalled", "stream_resumed", "stream_reconnected", "stream_blocked",
    "samples_dropped", "bad_chunk", "failure", "model_online", "model_swap", "model_rollback",
    "model_drift", "model_shadow", "armed", "arm_refused", "safe_state", "emergency_stop",
    "stimulator_error"})
INTERRUPTING = frozenset({"stream_lost"})  # a calibration cannot go on without its signal


class WizardRun:
    """A recorded pipeline run for one wizard step.

    Parameters
    ----------
    kind : {"calibration", "online"}
    config : dict
        The pipeline configuration (:mod:`.run_configs`).
    folder : Path
        Its session folder (absent or empty).
    subject : str
    classes : list of str
        The cued classes.
    expected_trials : int or None
        Trials after which a calibration run stops by itself.
    publish : callable
        ``publish(message)``: to the page (must not block).
    on_event : callable
        ``on_event(kind, **fields)``: runtime events, for the wizard's audit trail.
    on_end : callable, optional
        ``on_end(run)`` on the run's thread once its session is finalized, before
        :meth:`wait` returns.
    cursor : (str, str), optional
        The continuous cursor's task stream, ``(node, port)``; its node's markers
        are the task's.
    """

    def __init__(self, kind: str, config: dict[str, Any], folder: Path, subject: str,
                 classes: list[str], expected_trials: int | None,
                 publish: Callable[[dict[str, Any]], None],
                 on_event: Callable[..., None],
                 on_end: Callable[[WizardRun], None] | None = None,
                 cursor: tuple[str, str] | None = None) -> None:
        self.kind = kind
        self.folder = Path(folder)
        self.cues = CueProgress(classes, expected_trials)
        self._cursor_stream = cursor
        # the simulator's truth holds the intended velocity; a center_out task's does not
        self.cursor = None if cursor is None else CursorProgress(intended=cursor[1] == "truth")
        self.outcome = "starting"  # then running; completed, interrupted, stopped or failed
        self.message: str | None = None
        self.summary: dict[str, Any] | None = None
        self._publish, self._on_event, self._on_end = publish, on_event, on_end
        self._stop_reason: str | None = None
        self._next_decision = 0.0
        graph = load_graph_text(yaml.safe_dump(config, sort_keys=False), f"<wizard {kind}>")
        self.recorded = RecordedRun(graph, f"wizard:{kind}", session_dir=self.folder,
                                    subject=subject, on_event=self._event, tap=self._tap)
        self.runner = self.recorded.runner
        self._cue_node = SOURCE if SOURCE in graph.nodes and CUES not in graph.nodes else CUES
        self._thread = threading.Thread(target=self._run, name=f"wizard-{kind}", daemon=True)
        self.done = threading.Event()

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        self.outcome = "running"
        self._thread.start()

    def stop(self, outcome: str = "stopped", message: str | None = None) -> None:
        """End the run (any thread); ``outcome`` and ``message`` say why."""
        if self.done.is_set():
            return  # it ended already, and says how
        if self._stop_reason is None:
            self._stop_reason, self.message = outcome, message
        self.runner.request_stop(message or outcome)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run is over and its session finalized."""
        return self.done.wait(timeout)

    @property
    def recording(self) -> Path | None:
        """The run's XDF file (None before the recording opened)."""
        name = self.recorded.session.manifest.get("recording")
        return self.folder / name if name else None

    def state(self) -> dict[str, Any]:
        """The run as the page draws it."""
        state = {"kind": self.kind, "folder": self.folder.name, "outcome": self.outcome,
                 "message": self.message, **self.cues.snapshot()}
        if self.cursor is not None:
            state["cursor"] = self.cursor.snapshot()
        return state

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            result = self.runner.run()
            self.summary = self.recorded.finish(result)
        except Exception as exc:  # the page must hear of it; the session keeps the rest
            self.outcome, self.message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if result.error is not None:
                self.outcome, self.message = "failed", str(result.error)
            elif self._stop_reason is not None:
                self.outcome = self._stop_reason
            else:
                self.outcome = "completed" if result.status == "completed" else "stopped"
        finally:
            self._publish({"type": "run_ended", **self.state()})
            try:
                if self._on_end is not None:
                    self._on_end(self)
            finally:
                self.done.set()

    def _tap(self, node: str, outputs: Mapping[str, Any], now: float, read: bool) -> None:
        if self.cursor is not None:
            self._follow_cursor(node, outputs, now)
            return
        if node == self._cue_node:
            markers = outputs.get("markers")
            if isinstance(markers, EventChunk):
                for label, t in zip(markers.markers, markers.timestamps.tolist()):
                    message = self.cues.update(label, t)
                    if message is not None:
                        self._publish(message)
        if node == SOURCE:
            signal = outputs.get("signal")
            done_at = self.cues.completed_at
            if done_at is not None and isinstance(signal, Chunk) and signal.n_samples \
                    and signal.newest >= done_at + TAIL_S:
                self.stop("completed", f"{self.cues.done} trials recorded")
        elif node == DECODER:
            decision = outputs.get("decision")
            if isinstance(decision, Chunk) and decision.n_samples and now >= self._next_decision:
                self._next_decision = now + 1.0 / DECISIONS_HZ
                row = np.asarray(decision.data[-1], dtype=np.float64)
                self._publish({"type": "decision", "t": decision.newest,
                               "classes": list(decision.spec.channel_names),
                               "p": [round(float(v), 3) for v in row]})

    def _follow_cursor(self, node: str, outputs: Mapping[str, Any], now: float) -> None:
        cursor, (task_node, port) = self.cursor, self._cursor_stream  # type: ignore[misc]
        if node == task_node:
            task = outputs.get(port)
            if isinstance(task, Chunk) and task.n_samples:
                message = cursor.update_task(task.spec.channel_names, task.data,  # type: ignore[union-attr]
                                             task.timestamps, now)
                if message is not None:
                    self._publish(message)
            markers = outputs.get("markers")
            if isinstance(markers, EventChunk):
                cursor.update_markers(markers.markers, markers.timestamps)  # type: ignore[union-attr]
        elif node == DECODER:
            velocity = outputs.get("velocity")
            if isinstance(velocity, Chunk) and velocity.n_samples:
                cursor.update_decoded(velocity.data, velocity.timestamps)  # type: ignore[union-attr]

    def _event(self, kind: str, **fields: Any) -> None:
        self._on_event(kind, **fields)
        if kind in SHOWN_EVENTS:
            self._publish({"type": "event", "kind": kind, "text": describe_event(kind, fields),
                           **{k: v for k, v in fields.items() if _plain(v)}})
        if self.kind == "calibration" and kind in INTERRUPTING:
            done = self.cues.done
            self.stop("interrupted", f"the signal was lost during trial {self.cues.trial}; "
                      f"the {done} complete trials are saved")


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None
