"""The center-out cursor task for a real subject, as a graph node on the runtime's clock.

The ``center_out`` node runs :class:`~bci_runtime.center_out.CenterOut` (the task
the simulated user plays) ``rate_hz`` times a second:

* while a decoded velocity arrives on its ``velocity`` input (a ``delayed`` edge
  from the decoder), the cursor moves with it: the closed loop;
* otherwise (nothing for ``hold_s``, or ``open_loop``) the cursor moves by itself
  straight to the target at ``speed`` and waits on it: an open-loop calibration,
  where the subject watches the cursor and imagines moving it.

It emits the task's markers (``target/<k> {"x", "y"}``, ``hit/<k>``,
``timeout/<k>``) and a ``cursor`` stream, one row per tick: the cursor and the
target positions and the velocity the cursor moved with. In open loop that
velocity is what a decoder is calibrated to (the subject intends the cursor's
movement); the display follows the cursor stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from bci_runtime.center_out import CenterOut, CenterOutParams
from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.node import Emitted, Input, NodeContext, NodeParams, Output, Source
from bci_runtime.spec import StreamSpec

CURSOR_CHANNELS = ("cursor_x", "cursor_y", "target_x", "target_y", "vx", "vy")


class CenterOutTaskParams(NodeParams):
    task: CenterOutParams = Field(default_factory=CenterOutParams,
                                  description="targets, their size, dwell and timeout")
    rate_hz: float = Field(50.0, ge=5, le=500, description="cursor updates per second")
    speed: float = Field(0.4, gt=0, le=5, description="the open-loop cursor's speed "
                         "(workspace units/s; targets are 0.8 from the center)")
    hold_s: float = Field(0.5, gt=0, le=10, description="a decoded velocity steers the cursor "
                          "this long; with none for longer the cursor moves by itself")
    open_loop: bool = Field(False, description="the cursor always moves by itself "
                            "(a calibration); decoded velocities are ignored")


class CenterOutTask(Source):
    """Runs the center-out task; the cursor moves with the decoder, or by itself."""

    type_name = "center_out"
    Params = CenterOutTaskParams
    velocity = Input("signal", required=False,
                     doc="decoded velocity (vx, vy): moves the cursor (delayed edge)")
    markers = Output("events", doc="target/<k> {x, y}, hit/<k>, timeout/<k>")
    cursor = Output("signal", doc="(n, 6) cursor_x, cursor_y, target_x, target_y, vx, vy")

    def configure(self, inputs: dict[str, StreamSpec]) -> dict[str, StreamSpec]:
        spec = inputs.get("velocity")
        if spec is not None and spec.n_channels < 2:
            raise self.spec_error("velocity", f"'{spec.name}' has {spec.n_channels} channel; "
                                  "a cursor velocity needs two (vx, vy)")
        sid = f"task-{self.name}"
        return {"markers": StreamSpec.events(f"{self.name}-markers", f"{sid}-markers"),
                "cursor": StreamSpec(name=f"{self.name}-cursor", type="Kinematics",
                                     channel_names=CURSOR_CHANNELS, srate=self.params.rate_hz,
                                     dtype="float64", units=("",) * len(CURSOR_CHANNELS),
                                     channel_types=("misc",) * len(CURSOR_CHANNELS),
                                     source_id=f"{sid}-cursor")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self.task = CenterOut(self.params.task, context.rng("center-out"))
        self._dt = 1.0 / self.params.rate_hz
        self._t0: float | None = None
        self._tick = 0
        self._decoded = np.zeros(2)
        self._decoded_at = -np.inf
        self._cursor_spec = self.output_specs["cursor"]
        self._marker_spec = self.output_specs["markers"]

    def next_due(self) -> float | None:
        if self._t0 is None:
            self._t0 = self.context.clock.now()  # type: ignore[union-attr]
        return self._t0 + (self._tick + 1) * self._dt

    def read(self) -> dict[str, AnyChunk]:
        now = self.context.clock.now()  # type: ignore[union-attr]
        t0, dt = self._t0, self._dt
        # every tick that is due (one, unless the process was held up)
        n = max(1, int(np.floor((now - t0) / dt + 1e-9)) - self._tick)  # type: ignore[operator]
        rows = np.empty((n, len(CURSOR_CHANNELS)))
        for i in range(n):  # n is 1 per wake-up: the task is a small state machine
            self._tick += 1
            t = self._tick * dt
            v = self._velocity(t0 + t)  # type: ignore[operator]
            self.task.advance(t, v, dt)
            rows[i, :2], rows[i, 2:4], rows[i, 4:] = self.task.cursor, self.task.target, v
        times = t0 + dt * np.arange(self._tick - n + 1, self._tick + 1)  # type: ignore[operator]
        out: dict[str, AnyChunk] = {"cursor": Chunk(rows, times, self._cursor_spec)}
        marks = self.task.take_markers()
        if marks:
            labels, at = zip(*marks)
            out["markers"] = EventChunk(tuple(labels), t0 + np.asarray(at, dtype=np.float64),
                                        self._marker_spec)
        return out

    def _velocity(self, now: float) -> np.ndarray:
        """The decoded velocity while it is fresh, else straight to the target and stop."""
        p = self.params
        if not p.open_loop and now - self._decoded_at <= p.hold_s:
            return self._decoded
        to_target = self.task.target - self.task.cursor
        distance = float(np.hypot(*to_target))
        if distance < 1e-9:
            return np.zeros(2)
        return to_target / distance * min(p.speed, distance / self._dt)

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        if port == "velocity" and isinstance(chunk, Chunk) and chunk.n_samples:
            row = np.asarray(chunk.data[-1, :2], dtype=np.float64)
            if np.all(np.isfinite(row)):  # a NaN velocity must not teleport the cursor
                self._decoded = row
                self._decoded_at = self.context.clock.now()  # type: ignore[union-attr]
        return None

    def summary(self) -> dict[str, Any]:
        return {"hits": self.task.hits, "timeouts": self.task.timeouts}
