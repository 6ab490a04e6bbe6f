"""Latency telemetry: preallocated recorders and percentile summaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PERCENTILES = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


class LatencyRecorder:
    """Records latencies (seconds) into a preallocated ring; never grows.

    Percentiles are computed over the newest ``capacity`` values; ``count`` and
    ``max`` cover the whole run.

    Parameters
    ----------
    capacity : int
        Number of values kept for percentiles.
    """

    def __init__(self, capacity: int = 1 << 17) -> None:
        # written once now so the pages are resident from the start: memory stays flat
        self._values = np.full(capacity, 0.0, dtype=np.float64)
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        """Record one latency in seconds."""
        self._values[self.count % self._values.shape[0]] = value
        self.count += 1
        if value > self.max:
            self.max = value

    def values(self) -> NDArray[np.float64]:
        """Kept values, shape (min(count, capacity),), oldest first not guaranteed."""
        return self._values[: min(self.count, self._values.shape[0])].copy()

    def merge_values(self, values: NDArray[np.float64], count: int, max_value: float) -> None:
        """Fold in values recorded elsewhere (another process)."""
        for v in values:
            self.add(float(v))
        self.count += max(0, count - len(values))
        self.max = max(self.max, max_value)

    def summary_ms(self) -> dict[str, float | int | None]:
        """Percentiles and max in milliseconds (None when nothing was recorded)."""
        return summarize_ms(self.values(), self.count, self.max)


def summarize_ms(values: NDArray[np.float64], count: int | None = None,
                 max_value: float | None = None) -> dict[str, float | int | None]:
    """p50/p99/p99.9/max of latencies given in seconds, in milliseconds."""
    count = len(values) if count is None else count
    if len(values) == 0:
        return {"count": 0, **{k: None for k in PERCENTILES}, "max": None}
    pct = np.percentile(values, list(PERCENTILES.values())) * 1e3
    top = float(values.max()) if max_value is None else max_value
    out: dict[str, float | int | None] = {"count": count}
    out.update({k: round(float(v), 4) for k, v in zip(PERCENTILES, pct)})
    out["max"] = round(top * 1e3, 4)
    return out


@dataclass
class NodeTelemetry:
    """Per-node figures: processing time per call and latency of each emission."""

    processing: LatencyRecorder
    latency: LatencyRecorder
    calls: int = 0

    @classmethod
    def create(cls, capacity: int = 1 << 16) -> NodeTelemetry:
        """Recorders of the given capacity."""
        return cls(LatencyRecorder(capacity), LatencyRecorder(capacity))

    def to_state(self) -> dict:
        """Picklable state, for sending to the main process."""
        return {
            "processing": (self.processing.values(), self.processing.count, self.processing.max),
            "latency": (self.latency.values(), self.latency.count, self.latency.max),
            "calls": self.calls,
        }

    def merge_state(self, state: dict) -> None:
        """Fold in :meth:`to_state` output from another process."""
        self.processing.merge_values(*state["processing"])
        self.latency.merge_values(*state["latency"])
        self.calls += state["calls"]
