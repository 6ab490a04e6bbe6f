"""Feedback sink: shows decoded output to the user and scores it against the cues.

Three outputs, each optional:

* an LSL outlet of the decisions (class scores), for stimulus software such as
  PsychoPy;
* a pyzmq PUB socket (``zmq_publish: tcp://127.0.0.1:5557``): one message per
  decision, two frames, the topic ``decision`` and JSON
  ``{"t": ..., "scores": [...], "decided": "left", "cue": "left" | null}``;
* the built-in web display (``display: true``): a local page at the URL printed
  when the run starts, updated over a WebSocket at display rate, with the cue,
  bars/cursor/arrows and an emergency-stop button that stops every actuator of
  the run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bci_runtime.chunk import AnyChunk, EventChunk
from bci_runtime.errors import ConfigError
from bci_runtime.labels import LabelTracker, Span
from bci_runtime.lsl import import_pylsl, linger_for_consumers, spec_to_info
from bci_runtime.node import Emitted, Input, Node, NodeContext, NodeParams


class FeedbackParams(NodeParams):
    console: bool = Field(True, description="print each trial's outcome (to stderr)")
    lsl: bool = Field(True, description="publish decisions as an LSL outlet")
    lsl_name: str = Field("bci-feedback", description="LSL stream name of the decisions")
    source_id: str | None = Field(None, description="LSL source_id (default: unique per run)")
    label_prefix: str = Field("cue/", description="cue marker prefix")
    end_marker: str = Field("end", description="marker ending a cued span")
    label_delay_s: float = Field(0.5, ge=0, description="decisions this soon after a cue "
                                 "are not scored (reaction time)")
    zmq_publish: str | None = Field(None, description="pyzmq PUB address for decisions, "
                                    "e.g. tcp://127.0.0.1:5557")
    display: bool = Field(False, description="serve the feedback web page")
    display_port: int = Field(0, ge=0, le=65535, description="its port (0: any free one)")
    display_style: Literal["bar", "cursor", "arrows"] = Field("bar", description="feedback "
                                                              "drawn on the page")
    display_rate_hz: float = Field(60.0, gt=0, le=240, description="most page updates per s")


class Feedback(Node):
    """Displays decisions (console, LSL) and keeps running accuracy.

    A decision is the argmax of a row of class scores. With the ``truth`` input
    connected, decisions inside cued spans are scored per window and per trial
    (majority of the trial's windows).
    """

    type_name = "feedback"
    Params = FeedbackParams
    decision = Input("signal", doc="(n, n_classes) class scores or probabilities")
    truth = Input("events", required=False, doc="cue markers giving the true class")

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p = self.params
        self._classes = list(self.input_specs["decision"].channel_names)
        self._tracker = LabelTracker(p.label_prefix, p.end_marker, p.label_delay_s)
        self.decisions = 0
        self.scored = 0
        self.correct = 0
        self._trial_votes: dict[int, np.ndarray] = {}
        self._last_reported = -1  # index of the newest trial reported
        self.trials_scored = 0
        self.trials_correct = 0
        self._outlet = None
        if p.lsl:
            pylsl = import_pylsl()
            spec = self.input_specs["decision"].with_changes(name=p.lsl_name)
            sid = p.source_id or f"bci-feedback-{os.getpid()}-{id(self):x}"
            self._outlet = pylsl.StreamOutlet(spec_to_info(spec, sid), chunk_size=1,
                                              max_buffered=60)
        self._publisher = self._zmq_context = None
        if p.zmq_publish:
            self._open_publisher(p.zmq_publish)
        self.display = None
        self._shown: dict[str, Any] = {}
        if p.display:
            from bci_runtime.web.feedback_display import FeedbackDisplay

            self.display = FeedbackDisplay(
                port=p.display_port, max_rate_hz=p.display_rate_hz, style=p.display_style,
                classes=self._classes, title=f"bci-runtime: {self.name}",
                on_emergency_stop=context.emergency_stop).start()
            print(f"feedback display: {self.display.url}", file=sys.stderr, flush=True)
            context.emit_event("display_started", node=self.name, url=self.display.url)

    def _open_publisher(self, address: str) -> None:
        import zmq

        self._zmq_context = zmq.Context.instance()
        self._noblock, self._zmq_again = zmq.NOBLOCK, zmq.Again  # no import on the hot path
        self._publisher = self._zmq_context.socket(zmq.PUB)
        self._publisher.setsockopt(zmq.SNDHWM, 1000)  # a slow subscriber loses, never blocks us
        self._publisher.setsockopt(zmq.LINGER, 0)
        try:
            self._publisher.bind(address)
        except zmq.ZMQError as exc:
            self._publisher.close()
            self._publisher = None
            raise ConfigError(f"node '{self.name}': zmq_publish cannot bind {address!r}: {exc}",
                              hint="use tcp://127.0.0.1:<free port> or ipc:///tmp/<name>") \
                from None

    def _publish(self, scores: np.ndarray, times: list[float], predicted: np.ndarray) -> None:
        """Hand each decision to the zmq subscribers and the newest to the web page."""
        cue = self._current_cue()
        if self._publisher is not None:
            for row, t, k in zip(scores.tolist(), times, predicted.tolist()):
                message = json.dumps({"t": t, "scores": row, "decided": self._classes[k],
                                      "cue": cue}).encode()
                try:
                    self._publisher.send_multipart([b"decision", message], flags=self._noblock)
                except self._zmq_again:  # nobody keeps up: drop, never wait
                    pass
        if self.display is not None:
            self._shown = {"t": times[-1], "cue": cue, "scores": scores[-1],
                           "decided": self._classes[int(predicted[-1])]}
            self.display.show(self._shown)

    def _current_cue(self) -> str | None:
        """The class cued now (an open span), None between trials."""
        spans = self._tracker.spans
        return spans[-1].label if spans and spans[-1].end is None else None

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if isinstance(chunk, EventChunk):
            self._tracker.update(chunk)
            self._report_closed()
            if self.display is not None:  # the cue shows when it is given, not at a decision
                self._shown = {**self._shown, "t": float(chunk.timestamps[-1]),
                               "cue": self._current_cue()}
                self.display.show(self._shown)
            return None
        scores = chunk.data
        if self._outlet is not None:
            self._outlet.push_chunk(scores, chunk.timestamps.tolist(), pushthrough=True)
        predicted = scores.argmax(axis=1)
        self.decisions += len(predicted)
        if self._publisher is not None or self.display is not None:
            self._publish(scores, chunk.timestamps.tolist(), predicted)
        for k, t in zip(predicted.tolist(), chunk.timestamps.tolist()):  # per decision
            span = self._tracker.span_at(t)
            if span is None or span.label not in self._classes:
                continue
            truth = self._classes.index(span.label)
            self.scored += 1
            self.correct += int(k == truth)
            votes = self._trial_votes.setdefault(span.index, np.zeros(len(self._classes), int))
            votes[k] += 1
        return None

    def _report_closed(self) -> None:
        for span in self._tracker.spans:
            if span.end is None or span.index <= self._last_reported:
                continue
            self._last_reported = span.index
            votes = self._trial_votes.pop(span.index, None)
            if votes is None or votes.sum() == 0:
                continue
            self._score_trial(span, votes)

    def _score_trial(self, span: Span, votes: np.ndarray) -> None:
        guess = self._classes[int(votes.argmax())]
        ok = guess == span.label
        self.trials_scored += 1
        self.trials_correct += int(ok)
        if self.params.console:
            acc = self.correct / self.scored if self.scored else 0.0
            print(f"  trial {span.index + 1:3d}: cued {span.label:>6s}  decoded {guess:>6s}  "
                  f"{'ok ' if ok else 'MISS'}  ({int(votes.max())}/{int(votes.sum())} windows; "
                  f"running accuracy {acc:.2f})", file=sys.stderr, flush=True)
        if self.context is not None:
            self.context.emit_event("trial_scored", node=self.name, trial=span.index + 1,
                                    cued=span.label, decoded=guess, correct=ok,
                                    votes=votes.tolist())

    @property
    def accuracy(self) -> float | None:
        """Fraction of scored decisions that were right, None before any."""
        return self.correct / self.scored if self.scored else None

    def summary(self) -> dict[str, Any]:
        """Decision counts and accuracies for the run's summary."""
        trial_acc = self.trials_correct / self.trials_scored if self.trials_scored else None
        return {"decisions": self.decisions, "scored": self.scored, "accuracy": self.accuracy,
                "trials_scored": self.trials_scored, "trial_accuracy": trial_acc,
                "chance": 1.0 / len(self._classes)}

    def close(self) -> None:
        if getattr(self, "display", None) is not None:
            self.display.close()
            self.display = None
        if getattr(self, "_publisher", None) is not None:
            self._publisher.close()
            self._publisher = None
        linger_for_consumers([getattr(self, "_outlet", None)])  # None if open failed
        self._outlet = None
