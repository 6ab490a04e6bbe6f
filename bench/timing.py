"""Timing helpers shared by the decoder benchmarks: repeated calls, wall and CPU percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(call: Callable[[int], Any], n: int, warmup: int = 10) -> list[tuple[float, float]]:
    """(wall, cpu) seconds of ``n`` calls ``call(i)`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        call(i)
    out = []
    for i in range(n):
        c0, t0 = time.thread_time(), time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t0, time.thread_time() - c0))
    return out


def percentiles(samples: list[tuple[float, float]]) -> dict[str, float]:
    """Wall-clock p50, p90, p99 and max, and the median CPU time, in ms, of (wall, cpu) s."""
    a = np.asarray(samples).reshape(-1, 2) * 1e3
    wall, cpu = a[:, 0], a[:, 1]
    return {"n": int(wall.size), "p50_ms": float(np.median(wall)),
            "p90_ms": float(np.percentile(wall, 90)), "p99_ms": float(np.percentile(wall, 99)),
            "max_ms": float(wall.max()), "cpu_p50_ms": float(np.median(cpu))}
