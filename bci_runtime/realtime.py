"""Real-time scheduling for a thread that must keep time (a device emulator, a pacer)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def realtime_priority(enabled: bool = True, priority: int = 10) -> Iterator[bool]:
    """Run the calling thread under ``SCHED_FIFO`` while the block runs, if allowed.

    Yields whether the priority was obtained. Without the permission (Linux
    ``CAP_SYS_NICE`` or an ``rtprio`` limit) the thread keeps its normal policy
    and a warning says how to grant it. The thread must block regularly (sleep,
    wait) or it starves the rest of the machine.
    """
    if not enabled:
        yield False
        return
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, PermissionError, OSError) as exc:
        log.warning("real-time scheduling not available (%s); running at normal priority. "
                    "Grant it with `ulimit -r %d` (limits.conf rtprio) or CAP_SYS_NICE",
                    exc, priority)
        yield False
        return
    try:
        yield True
    finally:
        policy, param = before
        os.sched_setscheduler(0, policy, param)


def single_threaded_math() -> None:
    """Limit BLAS/OpenMP pools to one thread for the rest of the process.

    On a small machine a multi-threaded BLAS wakes its pool for every 64x64
    eigendecomposition, and on a loaded core that wake-up costs milliseconds: a
    covariance decoder's prediction measured 118 ms with the default pools and
    4 ms with one thread. The hot path does many small operations, never one
    large one, so one thread is what a real-time run wants. Set
    ``BCI_MATH_THREADS`` to keep more.
    """
    threads = int(os.environ.get("BCI_MATH_THREADS", "1"))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it the pools keep their size
        return
    threadpool_limits(limits=threads)
