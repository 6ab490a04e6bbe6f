"""The center-out task node: an open-loop calibration, and a cursor moved by a decoder."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.errors import ConfigError
from bci_runtime.node import NodeContext, NodeParams, Output, Source
from bci_runtime.registry import register_node
from bci_runtime.runner import Runner
from bci_runtime.spec import StreamSpec


class ConstantVelocityParams(NodeParams):
    vx: float = Field(0.0)
    vy: float = Field(0.0)
    channels: int = Field(2, ge=1)


class ConstantVelocity(Source):
    """A stand-in decoder: the same velocity 20 times a second."""

    type_name = "test_constant_velocity"
    Params = ConstantVelocityParams
    velocity = Output("signal", doc="(1, 2) vx, vy")

    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        names = tuple(f"v{i}" for i in range(self.params.channels))
        return {"velocity": StreamSpec(name="velocity", type="Control", channel_names=names,
                                       srate=20.0, source_id="test-velocity")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        self._t0, self._k = context.clock.now(), 0

    def next_due(self) -> float | None:
        return self._t0 + (self._k + 1) / 20.0

    def read(self) -> dict[str, AnyChunk]:
        self._k += 1
        row = np.zeros((1, self.params.channels))
        row[0, :2] = [self.params.vx, self.params.vy][:self.params.channels]
        return {"velocity": Chunk(row, np.array([self._t0 + self._k / 20.0]),
                                  self.output_specs["velocity"])}


register_node(ConstantVelocity)


def run_task(make_graph: Any, task: str, extra: str = "", seconds: float = 40.0
             ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]], dict]:
    graph = make_graph(f"""
        name: center-out
        clock: simulated
        seed: 4
        duration: {seconds}
        nodes:
          task:
            type: center_out
            params: {task}
        {extra}
        """)
    rows, times, markers = [], [], []

    def tap(node: str, outputs: Any, now: float, read: bool) -> None:
        if node != "task":
            return
        if "cursor" in outputs:
            rows.append(outputs["cursor"].data)
            times.append(outputs["cursor"].timestamps)
        if "markers" in outputs:
            markers.extend(zip(outputs["markers"].markers,
                               outputs["markers"].timestamps.tolist()))

    result = Runner(graph, tap=tap).run()
    if result.error is not None:
        raise result.error
    return np.concatenate(rows), np.concatenate(times), markers, result.summaries["task"]


def test_open_loop_the_cursor_reaches_every_target_by_itself(make_graph: Any) -> None:
    rows, times, markers, summary = run_task(make_graph, "{open_loop: true, speed: 0.4}")
    np.testing.assert_allclose(np.diff(times), 0.02, atol=1e-9)  # 50 Hz, on the grid
    # 0.8 out at 0.4/s, 0.5 s dwell: a target every 2.5 s or so, and no timeout
    assert summary["timeouts"] == 0 and summary["hits"] >= 12
    targets = [json.loads(m.partition(" ")[2]) for m, _ in markers if m.startswith("target/")]
    assert [m.split("/")[0] for m, _ in markers[:4]] == ["target", "hit", "target", "hit"]
    assert all(abs(np.hypot(t["x"], t["y"]) - 0.8) < 1e-3 for t in targets[::2])  # outer
    assert all(t == {"x": 0.0, "y": 0.0} for t in targets[1::2])  # and back to the center
    speed = np.hypot(rows[:, 4], rows[:, 5])
    assert speed.max() == pytest.approx(0.4) and np.all(speed <= 0.4 + 1e-12)
    # the velocity rows are the cursor's moves (the labels of an open-loop calibration)
    np.testing.assert_allclose(np.diff(rows[:, :2], axis=0), rows[1:, 4:] * 0.02, atol=1e-12)


def test_a_decoded_velocity_moves_the_cursor(make_graph: Any) -> None:
    extra = """
          decoder:
            type: test_constant_velocity
            params: {vx: 0.3, vy: 0.0}
        """
    rows, _, markers, summary = run_task(
        make_graph, "{task: {timeout_s: 4.0}}\n            inputs: {velocity: decoder.velocity}",
        extra, seconds=20)
    # always right at 0.3/s (after the first tick, before any velocity came, moved it by
    # itself): it ends on the workspace's edge and times out on the targets
    assert rows[-1, 0] == pytest.approx(1.5) and abs(rows[-1, 1]) < 0.05
    assert np.allclose(rows[50:, 4:], [0.3, 0.0])
    assert summary["timeouts"] >= 3


def test_a_velocity_with_one_channel_is_refused(make_graph: Any) -> None:
    extra = """
          decoder:
            type: test_constant_velocity
            params: {channels: 1}
        """
    with pytest.raises(ConfigError, match="needs two"):
        run_task(make_graph, "{}\n            inputs: {velocity: decoder.velocity}", extra)
