"""Real-time settings: scheduling of a thread that keeps time, math pools, lock hand-over."""

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


#: how long a thread may hold the interpreter lock while another waits for it (s)
SWITCH_INTERVAL_S = 0.0005


def short_lock_slices() -> None:
    """Let a waiting thread take the interpreter lock after 0.5 ms instead of 5 ms.

    The hot path shares the lock with the session's other threads (a decoder
    lifecycle unpickling a new model version, the recorder's writer): with
    Python's default interval a window that arrives while one of them runs can
    wait up to 5 ms. Measured with a lifecycle publishing a fine-tuned EEGNet
    every ~40 ms (``bench/coadaptation_speed.py``), the serving decoder's p99
    rose 27% at 5 ms and ~2% at 0.5 ms. Set ``BCI_SWITCH_INTERVAL_MS`` to change it.
    """
    import sys

    interval = SWITCH_INTERVAL_S
    text = os.environ.get("BCI_SWITCH_INTERVAL_MS")
    if text:
        try:
            interval = float(text) / 1000.0
            if not interval > 0:
                raise ValueError(text)
        except ValueError:
            log.warning("BCI_SWITCH_INTERVAL_MS=%r is not a positive number of "
                        "milliseconds; using %g ms", text, SWITCH_INTERVAL_S * 1000)
            interval = SWITCH_INTERVAL_S
    sys.setswitchinterval(interval)


#: the Linux PM QoS file: while it is held open with a value, CPUs stay in idle states
#: that wake within that many microseconds
CPU_DMA_LATENCY = "/dev/cpu_dma_latency"
_wakeup_fd: int | None = None


def low_wakeup_latency() -> bool:
    """Keep the CPUs out of deep idle states for the rest of the process (Linux PM QoS).

    A live loop idles between chunks; on a virtual machine or a power-saving
    CPU, the first Python to run after an idle spell runs many times slower than
    warm code (measured here: a small ``json.dumps`` 1.9 µs back to back, 51 µs
    after 40 ms asleep; ``bench/actuation_path.py``). Holding
    ``/dev/cpu_dma_latency`` at 0 µs, as real-time audio and robotics stacks do,
    brought it to 2.8 µs. It costs power while the process runs and is released
    when it exits. Needs root (or write access to the file); set
    ``BCI_CPU_WAKEUP=normal`` to leave the CPUs alone. Returns whether it is held.
    """
    global _wakeup_fd
    if _wakeup_fd is not None:
        return True
    if os.environ.get("BCI_CPU_WAKEUP", "low").lower() == "normal":
        return False
    try:
        fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
    except OSError as exc:
        log.info("CPU wake-up latency left as is (%s): live runs wake slower from idle; "
                 "run as root or grant write access to %s", exc.strerror, CPU_DMA_LATENCY)
        return False
    try:
        os.write(fd, (0).to_bytes(4, "little", signed=True))
    except OSError as exc:
        os.close(fd)
        log.info("CPU wake-up latency left as is (%s)", exc.strerror)
        return False
    _wakeup_fd = fd  # held open on purpose: closing it releases the request
    return True
