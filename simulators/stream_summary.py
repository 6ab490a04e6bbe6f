"""What a run of ``bci simulate`` did: counts and pacing figures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bci_runtime.session import json_safe


@dataclass
class LateChunk:
    """A chunk pushed later than the threshold."""

    chunk: int  # index of the chunk (0-based)
    sample: int  # index of its first sample
    error_ms: float  # push time - due time
    generate_ms: float  # time spent generating since the previous push


@dataclass
class SimulationSummary:
    """What a simulation run did.

    Attributes
    ----------
    name, source_id : str
        The signal stream's LSL name and source id (markers: ``<source_id>-markers``,
        truth: ``<source_id>-truth``).
    paradigm, scenario : str
    seed : int
    stream_type : str
        ``EEG``, ``ECoG``, ``Spikes``...
    channels : int
    srate : float
    chunk_size : int
    t0 : float
        LSL time of sample 0; sample ``k`` is stamped ``t0 + k / srate`` (plus any
        transport fault).
    samples_generated : int
        Samples generated (including any generated ahead but never pushed).
    samples_pushed : int
    chunks_pushed, chunks_dropped, samples_dropped : int
        Chunks pushed, and those (and their samples) lost to transport faults.
    markers_sent : int
    truth_names : list of str
    duration_s : float
        Signal time streamed (pushed or dropped samples / ``srate``).
    wall_s : float
        Wall time from ``t0`` to the end.
    stop_reason : str
        ``duration`` or ``stopped`` (signal, stop event).
    pacing_ms : dict
        Pacing error (push time - due time) over every chunk: ``p50``, ``p99``,
        ``p999``, ``max``, ``mean`` (ms).
    late_threshold_ms : float
    late_chunks : int
        Chunks later than ``late_threshold_ms``.
    late : list of LateChunk
        The first of them.
    generate_ms : dict
        Time to generate one chunk: ``p50``, ``p99``, ``max`` (ms).
    feedback_stream : str or None
    feedback_connected : bool
    feedback_received : int
        Feedback samples pulled.
    feedback_seen : int or None
        Feedback the simulated user has taken in (it sees it ``delay_s`` later).
    record : str or None
        The XDF file written.
    realtime : bool
        Whether the pacing loop ran under real-time scheduling.
    pacing_errors_s : ndarray, shape (n_chunks,)
        Every chunk's pacing error (s); not part of :meth:`as_dict`.
    """

    name: str
    source_id: str
    paradigm: str
    scenario: str
    seed: int
    stream_type: str
    channels: int
    srate: float
    chunk_size: int
    t0: float = math.nan
    samples_generated: int = 0
    samples_pushed: int = 0
    chunks_pushed: int = 0
    chunks_dropped: int = 0
    samples_dropped: int = 0
    markers_sent: int = 0
    truth_names: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    wall_s: float = 0.0
    stop_reason: str = "duration"
    pacing_ms: dict[str, float] = field(default_factory=dict)
    late_threshold_ms: float = 1.0
    late_chunks: int = 0
    late: list[LateChunk] = field(default_factory=list)
    generate_ms: dict[str, float] = field(default_factory=dict)
    feedback_stream: str | None = None
    feedback_connected: bool = False
    feedback_received: int = 0
    feedback_seen: int | None = None
    record: str | None = None
    realtime: bool = False
    pacing_errors_s: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (without the per-chunk errors)."""
        out = asdict(self)
        out.pop("pacing_errors_s")
        return json_safe(out)


def summarize_errors(errors_s: np.ndarray) -> dict[str, float]:
    """Percentiles of timing errors, in ms.

    Parameters
    ----------
    errors_s : ndarray, shape (n,)
        Errors in seconds.

    Returns
    -------
    dict
        ``p50``, ``p99``, ``p999``, ``max``, ``mean`` in ms (NaN when empty).
    """
    if errors_s.size == 0:
        return {k: math.nan for k in ("p50", "p99", "p999", "max", "mean")}
    ms = errors_s * 1e3
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999), "max": float(ms.max()),
            "mean": float(ms.mean())}
