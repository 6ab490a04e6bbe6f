"""Trial labels from cue markers: which class was cued at a given time.

Convention of the runtime's task streams: ``<prefix><class>`` (``cue/left``)
starts a labelled span, ``end`` closes it. A decision or window stamped at time
``t`` belongs to a span when ``onset + delay <= t <= end``; the delay skips the
user's reaction time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from bci_runtime.chunk import EventChunk

KEEP_SPANS = 256  # recent spans kept; decisions and windows are only ever recent


@dataclass
class Span:
    """One cued trial."""

    label: str
    onset: float
    end: float | None
    index: int


class LabelTracker:
    """Keeps the cued spans seen so far and answers "what was cued at t?".

    Parameters
    ----------
    prefix : str
        Marker prefix of a cue (``cue/``).
    end_marker : str
        Marker that ends a span.
    delay_s : float
        Seconds after onset before the span counts.
    """

    def __init__(self, prefix: str = "cue/", end_marker: str = "end", delay_s: float = 0.5) -> None:
        self.prefix = prefix
        self.end_marker = end_marker
        self.delay_s = delay_s
        self.spans: list[Span] = []
        self._onsets: list[float] = []
        self.count = 0  # spans seen in total

    def update(self, chunk: EventChunk) -> None:
        """Take the markers of an event chunk into account."""
        for marker, t in zip(chunk.markers, chunk.timestamps.tolist()):
            if marker.startswith(self.prefix):
                self._close(t)
                self.spans.append(Span(marker[len(self.prefix):], t, None, self.count))
                self._onsets.append(t)
                self.count += 1
                if len(self.spans) > 2 * KEEP_SPANS:  # bounded memory over long sessions
                    del self.spans[:-KEEP_SPANS], self._onsets[:-KEEP_SPANS]
            elif marker == self.end_marker:
                self._close(t)

    def _close(self, t: float) -> None:
        if self.spans and self.spans[-1].end is None:
            self.spans[-1].end = t

    def span_at(self, t: float) -> Span | None:
        """The span that labels time ``t`` (after the delay), or None."""
        i = bisect.bisect_right(self._onsets, t) - 1
        if i < 0:
            return None
        span = self.spans[i]
        if t < span.onset + self.delay_s or (span.end is not None and t > span.end):
            return None
        return span
