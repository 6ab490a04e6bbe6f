"""Replays a recording as LSL outlets, with the original timing.

Every stream of the file (signals and markers) gets an outlet carrying its
metadata (name, type, channel labels, types and units, rate). One pacing
thread pushes each chunk when it is due, ``t0 + (t - t_first) / speed`` on
LSL's clock, against absolute deadlines computed once: a late wake-up is made
up on the next chunk instead of shifting everything after it (the drift
compensation of mne-lsl's player). Timestamps are moved the same way, so the
recording's own jitter and gaps are replayed too. Looping restarts the file
one median chunk interval after its end.

The thread sleeps on an event, so :meth:`LslPlayer.stop` wakes it at once.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError
from bci_runtime.lsl import import_pylsl, linger_for_consumers, spec_to_info
from bci_runtime.spec import StreamSpec

DEFAULT_CHUNK_MS = 20.0


@dataclass
class _PlayedStream:
    spec: StreamSpec
    data: np.ndarray  # (n_samples, n_channels); markers: (n_samples, 1) of str
    timestamps: np.ndarray  # (n_samples,) recording clock
    ends: np.ndarray  # (n_chunks,) exclusive end index of each chunk
    outlet: Any = None
    pushed: int = 0


class LslPlayer:
    """Publishes a recording's streams as LSL outlets, paced like the recording.

    Parameters
    ----------
    recording : Recording
        What :func:`~bci_runtime.drivers.recordings.load_recording` returned.
    speed : float
        Replay speed (1 = real time).
    loop : bool
        Start again at the end, until stopped.
    chunk_ms : float
        Wall time between two pushes of a regular stream (its chunks hold
        ``chunk_ms * speed`` ms of recording).
    source_prefix : str
        Prefix of the outlets' source ids (``<prefix>:<stream name>``).
    streams : sequence of str, optional
        Names of the streams to publish; default all.
    """

    def __init__(self, recording: Any, speed: float = 1.0, loop: bool = False,
                 chunk_ms: float = DEFAULT_CHUNK_MS, source_prefix: str = "bci-replay",
                 streams: Sequence[str] | None = None) -> None:
        if not speed > 0 or not np.isfinite(speed):
            raise ConfigError(f"replay speed must be a finite number above 0, got {speed!r}",
                              hint="use e.g. --speed 1 (real time) or --speed 10")
        chosen = ([recording.stream(n) for n in streams] if streams
                  else list(recording.streams))
        if not chosen:
            raise ConfigError(f"'{recording.path}' holds no stream to replay",
                              hint="check the file with `bci replay FILE --list`")
        self.recording = recording
        self.speed = float(speed)
        self.loop = loop
        self.source_prefix = source_prefix
        self._streams = [self._prepare(s, chunk_ms * self.speed) for s in chosen]
        self._first = min(float(s.timestamps[0]) for s in self._streams)
        last = max(float(s.timestamps[-1]) for s in self._streams)
        steps = [np.median(np.diff(s.timestamps)) for s in self._streams if len(s.timestamps) > 1]
        self._period = last - self._first + (float(min(steps)) if steps else 1.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.error: BaseException | None = None
        self.t0: float | None = None  # LSL time at which the recording's first sample plays

    @staticmethod
    def _prepare(stream: Any, chunk_ms: float) -> _PlayedStream:
        n = len(stream.timestamps)
        if stream.is_markers or stream.spec.srate <= 0:
            ends = np.arange(1, n + 1)  # irregular: each sample when it is due
        else:
            step = max(1, int(round(chunk_ms / 1e3 * stream.spec.srate)))
            ends = np.append(np.arange(step, n, step), n)
        return _PlayedStream(stream.spec, stream.data, stream.timestamps, ends)

    @property
    def source_ids(self) -> dict[str, str]:
        """Stream name -> source id of its outlet."""
        return {s.spec.name: f"{self.source_prefix}:{s.spec.name}" for s in self._streams}

    @property
    def pushed(self) -> dict[str, int]:
        """Stream name -> samples pushed so far (all cycles)."""
        return {s.spec.name: s.pushed for s in self._streams}

    @property
    def duration_s(self) -> float:
        """Wall time of one pass at this speed."""
        return self._period / self.speed

    def start(self, wait_for_consumers_s: float = 0.0) -> None:
        """Create the outlets and start pushing (returns once pushing has started).

        Parameters
        ----------
        wait_for_consumers_s : float
            Wait up to this long for every outlet to have a consumer (a recorder,
            a pipeline) before the first sample, so that nothing plays unheard.
        """
        pylsl = import_pylsl()
        for s in self._streams:
            info = spec_to_info(s.spec, f"{self.source_prefix}:{s.spec.name}")
            s.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        deadline = time.monotonic() + wait_for_consumers_s
        for s in self._streams:
            left = deadline - time.monotonic()
            if left > 0 and not s.outlet.wait_for_consumers(left):
                break
        self._t0 = self.t0 = pylsl.local_clock()
        self._thread = threading.Thread(target=self._run, name="lsl-player", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the replay ends (never, when looping); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        """Ask the pacing thread to stop (safe from signal handlers); :meth:`stop` cleans up."""
        self._stop.set()

    def stop(self, linger_s: float = 0.5) -> None:
        """Stop pushing; keep the outlets up to ``linger_s`` for inlets to drain them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        linger_for_consumers([s.outlet for s in self._streams], linger_s)
        for s in self._streams:
            s.outlet = None

    # -- pacing ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._play_once()
                if not self.loop or self._stop.is_set():
                    return
                self.cycles += 1
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits on the player
            self.error = exc

    def _play_once(self) -> None:
        """Push one pass of every stream, each chunk at its deadline."""
        base = self._t0 + self.cycles * self._period / self.speed
        scale = 1.0 / self.speed
        # one heap entry per stream: (deadline of its next chunk, stream index, chunk index)
        heap = [(base + (float(s.timestamps[s.ends[0] - 1]) - self._first) * scale, i, 0)
                for i, s in enumerate(self._streams) if len(s.ends)]
        heapq.heapify(heap)
        clock = time.monotonic  # == LSL local_clock on Linux (CLOCK_MONOTONIC)
        while heap:
            deadline, i, k = heap[0]
            delay = deadline - clock()
            if delay > 0 and self._stop.wait(delay):
                return
            heapq.heappop(heap)
            s = self._streams[i]
            lo = int(s.ends[k - 1]) if k else 0
            hi = int(s.ends[k])
            stamps = base + (s.timestamps[lo:hi] - self._first) * scale
            if s.spec.dtype == "string":
                for marker, ts in zip(s.data[lo:hi, 0], stamps.tolist()):
                    s.outlet.push_sample([str(marker)], ts)
            else:
                s.outlet.push_chunk(np.ascontiguousarray(s.data[lo:hi]), stamps.tolist(),
                                    pushthrough=True)
            s.pushed += hi - lo
            if k + 1 < len(s.ends):
                nxt = base + (float(s.timestamps[s.ends[k + 1] - 1]) - self._first) * scale
                heapq.heappush(heap, (nxt, i, k + 1))
