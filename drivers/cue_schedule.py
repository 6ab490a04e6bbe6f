"""Cues for a real subject: the cued-trial schedule as a marker stream on the live clock.

The ``cue_schedule`` node emits ``trial/start``, ``cue/<class>``, ``end`` and
``trial/end`` markers (:mod:`bci_runtime.cued_trials`, the schedule the simulated
user follows too) at their times: classes in balanced blocks of random order, a
fixed timing. Whatever shows the cues (the calibration wizard's page, a
stimulus program reading the recorded stream) follows this stream, and the
recording keeps each marker at the time it was due, on the signal's clock.

With ``trials_per_class`` the schedule ends after that many trials of each class
(its source is then exhausted); without, it cues until the run stops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from bci_runtime.chunk import AnyChunk, EventChunk
from bci_runtime.cued_trials import CuedTrials, TrialTiming
from bci_runtime.node import NodeContext, NodeParams, Output, Source
from bci_runtime.spec import StreamSpec

TICKS_PER_S = 1000.0  # the schedule's resolution: markers fall on whole milliseconds


class CueScheduleParams(NodeParams):
    classes: list[str] = Field(..., min_length=2, max_length=8,
                               description="class names, cued as 'cue/<class>'")
    trials_per_class: int | None = Field(None, ge=1, le=1000, description="trials of each "
                                         "class, then the schedule ends (none: until stopped)")
    timing: TrialTiming = Field(default_factory=TrialTiming, description="trial timing (s)")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not c or "/" in c for c in value):
            raise ValueError("give distinct class names without '/'")
        return value


class CueSchedule(Source):
    """Emits the cued-trial markers of a calibration or feedback run at their times."""

    type_name = "cue_schedule"
    Params = CueScheduleParams
    markers = Output("events", doc="trial/start, cue/<class>, end, trial/end")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        return {"markers": StreamSpec.events(f"{self.name}-markers", f"cues-{self.name}")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p = self.params
        self.trials = CuedTrials(p.classes, p.timing, TICKS_PER_S, context.rng("cues"))
        total = None if p.trials_per_class is None else p.trials_per_class * len(p.classes)
        # the last trial's markers end at its trial/end: nothing is cued after it
        self._end_tick = None if total is None else int(np.ceil(
            (p.timing.first_s + (total - 1) * self.trials.trial_s + p.timing.fixation_s
             + p.timing.imagery_s) * TICKS_PER_S - 1e-9)) + 1
        self._t0: float | None = None
        self._tick = 0  # markers before this tick were emitted
        self._pending: list[tuple[str, int]] = []

    def _next_marker(self) -> tuple[str, int] | None:
        """The next marker at or after the current tick (searching one trial ahead)."""
        while not self._pending:
            if self._end_tick is not None and self._tick >= self._end_tick:
                return None
            span = int(self.trials.trial_s * TICKS_PER_S) + 1
            stop = span if self._end_tick is None else min(span, self._end_tick - self._tick)
            self._pending = self.trials.markers(self._tick, stop)
            self._tick += stop
        return self._pending[0]

    def next_due(self) -> float | None:
        if self._t0 is None:
            self._t0 = self.context.clock.now()  # type: ignore[union-attr]
        marker = self._next_marker()
        return None if marker is None else self._t0 + marker[1] / TICKS_PER_S

    def read(self) -> dict[str, AnyChunk]:
        now = self.context.clock.now()  # type: ignore[union-attr]
        due: list[tuple[str, int]] = []
        while (marker := self._next_marker()) is not None \
                and self._t0 + marker[1] / TICKS_PER_S <= now:  # type: ignore[operator]
            due.append(self._pending.pop(0))
        if not due:
            return {}
        labels, ticks = zip(*due)
        times = self._t0 + np.asarray(ticks, dtype=np.float64) / TICKS_PER_S
        return {"markers": EventChunk(tuple(labels), times, self.output_specs["markers"])}

    def summary(self) -> dict[str, Any]:
        return {"trials_per_class": self.params.trials_per_class,
                "classes": list(self.params.classes)}
