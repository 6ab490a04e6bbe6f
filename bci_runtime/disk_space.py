"""Free disk space: how much a recording needs, and whether a write failed for lack of it.

Shared by every writer of recordings (``bci record``, session folders), so a
session is refused before it starts rather than cut short by a full disk.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from pathlib import Path

from bci_runtime.errors import ConfigError
from bci_runtime.xdf_writer import CHANNEL_FORMATS

MiB = 1024**2
GiB = 1024**3
FREE_SPAN_S = 600.0  # the free-space check wants 10 minutes of the streams...
FREE_CAP_BYTES = 1 * GiB  # ...at most 1 GiB...
FREE_FLOOR_BYTES = 32 * MiB  # ...at least 32 MiB
IRREGULAR_RATE_GUESS = 10.0  # samples/s assumed for irregular streams (space estimate)
STRING_BYTES_GUESS = 32  # bytes per string value (space estimate)
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def stream_bytes_per_s(srate: float, channel_count: int, channel_format: str) -> float:
    """Bytes per second a stream adds to an XDF file (estimate for the free-space check)."""
    dtype = CHANNEL_FORMATS.get(channel_format)
    value_bytes = STRING_BYTES_GUESS if dtype is None else dtype.itemsize
    rate = srate if srate > 0 else IRREGULAR_RATE_GUESS
    return rate * (9 + channel_count * value_bytes)


def required_free_bytes(streams: Sequence[tuple[float, int, str]]) -> int:
    """Free space asked for before recording: 10 min of ``streams``, capped at 1 GiB, >= 32 MiB.

    Parameters
    ----------
    streams : sequence of (srate, channel_count, channel_format)
        ``srate`` 0 for irregular streams; ``channel_format`` an XDF name.
    """
    rate = sum(stream_bytes_per_s(*s) for s in streams)
    return int(max(FREE_FLOOR_BYTES, min(FREE_CAP_BYTES, FREE_SPAN_S * rate)))


def check_free_space(folder: Path, need: int, what: str) -> None:
    """Raise :class:`ConfigError` when ``folder``'s disk has less than ``need`` bytes free.

    Parameters
    ----------
    folder : Path
        An existing folder on the disk to check.
    need : int
        Bytes required.
    what : str
        What is to be written there, for the message (``"session 'sessions/sub-01/ses-02'"``).
    """
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ConfigError(
            f"not enough free disk space for {what}: {free / MiB:.1f} MiB free, "
            f"at least {need / MiB:.1f} MiB needed (10 minutes of the streams, "
            f"at most 1 GiB, at least 32 MiB)",
            hint="free some space or write to another disk")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a write refused for lack of space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__
    return False
