"""``bci doctor``: check that this installation can run sessions, and say how to fix it.

Each check is a small function returning a :class:`CheckResult`: what was found
(versions, milliseconds, free space) and, when something is wrong, a one-line fix.
:func:`run_checks` runs a list of :class:`Check` one after the other, each in a
daemon thread with its own time limit, so a check that raises or hangs (a native
library stuck in a call) becomes a ``fail`` result instead of an exception or a
frozen command.

The checks, in order (the slow ones are skipped with ``quick=True``):

=================  ======  ==========================================================
name               slow    what it checks
=================  ======  ==========================================================
python                     Python >= 3.10
liblsl                     pylsl imports and liblsl loads (versions, configuration)
lsl-loopback       yes     an outlet is resolved by its source_id; 100 samples round trip
brainflow                  BrainFlow imports and its native library loads
brainflow-board    yes     the synthetic board streams for 0.3 s
torch                      torch imports, CPU or CUDA build, a tensor operation works
chromium                   Debian's Chromium, the browser of the calibration wizard
playwright                 the ``playwright`` package imports (warn only)
disk                       the sessions folder is writable and its disk has room
pyserial                   pyserial imports (warn only: the serial stimulator)
websockets                 websockets imports (warn only: the feedback page)
cpu-wakeup                 ``/dev/cpu_dma_latency`` can be opened (warn only)
=================  ======  ==========================================================

It lives with the drivers because most of what it checks is theirs (LSL, BrainFlow,
the serial port library, the browser); the BrainFlow checks use the drivers' own
import helper.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from bci_runtime.disk_space import GiB, MiB
from bci_runtime.errors import DependencyError
from bci_runtime.lsl import import_pylsl, linger_for_consumers
from bci_runtime.realtime import CPU_DMA_LATENCY

Status = Literal["ok", "warn", "fail"]

MIN_PYTHON = (3, 10)
TORCH_PIN = "2.13.0"  # the local CPU build (pyproject.toml)
TORCH_FIX = (f"pip install torch=={TORCH_PIN} (the local CPU build; an unpinned torch pulls "
             "GB of CUDA packages)")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FIX = "apt-get install chromium chromium-driver"
LSL_SAMPLES = 100
LSL_RESOLVE_TIMEOUT_S = 5.0
LSL_OPEN_TIMEOUT_S = 5.0
LSL_DATA_TIMEOUT_S = 5.0
BOARD_STREAM_S = 0.3
BRAINFLOW_LOG_WARN = 3  # BrainFlow's LogLevels.LEVEL_WARN: keep its INFO lines off stderr
DISK_WARN_BYTES = 2 * GiB
DISK_FAIL_BYTES = 200 * MiB
RECORDING_BYTES_PER_S = 64 * 1000 * 4  # 64 channels at 1 kHz in float32
GENERIC_FIX = "run `bci -v doctor` and report the message above"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes
    ----------
    name : str
        The check (``liblsl``, ``disk``...).
    status : {"ok", "warn", "fail"}
        ``warn``: works, or is optional, but something should be looked at;
        ``fail``: sessions will not run as they should.
    detail : str
        What was found: versions, timings, free space.
    fix : str or None
        How to fix it, one line; None when ok.
    duration_ms : float
        How long the check took (set by :func:`run_checks`).
    """

    name: str
    status: Status
    detail: str
    fix: str | None = None
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """A check to run.

    Attributes
    ----------
    name : str
        Name given to its result.
    run : callable
        ``run() -> CheckResult``; may raise (the result is then a ``fail``).
    timeout_s : float
        Longest it may take; past it the result is a ``fail`` and the check's
        thread is left behind (a daemon: it does not keep the process alive).
    slow : bool
        Skipped by ``run_checks(..., quick=True)``.
    fix : str
        The fix given when the check raises or runs out of time.
    """

    name: str
    run: Callable[[], CheckResult]
    timeout_s: float = 10.0
    slow: bool = False
    fix: str = GENERIC_FIX


# -- running ----------------------------------------------------------------------------------
def run_checks(sessions_root: Path, quick: bool = False,
               checks: Sequence[Check] | None = None,
               on_start: Callable[[Check], None] | None = None) -> list[CheckResult]:
    """Run the checks one after the other; never raises for a failing check.

    Parameters
    ----------
    sessions_root : Path
        Where sessions will be written (the disk check); used by the default checks.
    quick : bool
        Skip the slow checks (LSL round trip, BrainFlow board session).
    checks : sequence of Check, optional
        The checks to run instead of :func:`default_checks` (``sessions_root``
        is then unused).
    on_start : callable, optional
        ``on_start(check)`` before each check runs (progress display).

    Returns
    -------
    list of CheckResult
        One per check run, in order.
    """
    todo = default_checks(sessions_root) if checks is None else list(checks)
    results = []
    for check in todo:
        if quick and check.slow:
            continue
        if on_start is not None:
            on_start(check)
        results.append(run_check(check))
    return results


def run_check(check: Check) -> CheckResult:
    """Run one check in a daemon thread, bounded by ``check.timeout_s``.

    A check that raises, returns something other than a :class:`CheckResult`,
    or does not finish in time gives a ``fail`` result with ``check.fix``.
    """
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(check.run())
        except BaseException as exc:  # a crashing check is a result, whatever it raised
            box.append(exc)

    thread = threading.Thread(target=target, name=f"bci-doctor-{check.name}", daemon=True)
    start = time.perf_counter()
    thread.start()
    thread.join(check.timeout_s)
    duration_ms = round((time.perf_counter() - start) * 1000.0, 1)
    if thread.is_alive():
        return CheckResult(check.name, "fail",
                           f"did not finish within {check.timeout_s:g} s", check.fix,
                           duration_ms)
    outcome = box[0]
    if isinstance(outcome, BaseException):
        return CheckResult(check.name, "fail",
                           f"check crashed: {type(outcome).__name__}: {outcome}", check.fix,
                           duration_ms)
    if not isinstance(outcome, CheckResult):
        return CheckResult(check.name, "fail",
                           f"check returned {type(outcome).__name__}, not a CheckResult",
                           check.fix, duration_ms)
    return replace(outcome, name=check.name, duration_ms=duration_ms)


def default_checks(sessions_root: Path) -> list[Check]:
    """The checks of ``bci doctor``, in the order they run.

    Parameters
    ----------
    sessions_root : Path
        Where sessions will be written (the disk check).
    """
    lsl_fix = lsl_discovery_fix()
    return [
        Check("python", check_python, 5.0),
        Check("liblsl", check_liblsl, 15.0, fix=LIBLSL_FIX),
        Check("lsl-loopback", check_lsl_loopback, 25.0, slow=True, fix=lsl_fix),
        Check("brainflow", check_brainflow, 30.0, fix=BRAINFLOW_FIX),
        Check("brainflow-board", check_brainflow_board, 20.0, slow=True, fix=BRAINFLOW_FIX),
        Check("torch", check_torch, 120.0, fix=TORCH_FIX),
        Check("chromium", check_chromium, 15.0, fix=CHROMIUM_FIX),
        Check("playwright", check_playwright, 30.0, fix=PLAYWRIGHT_FIX),
        Check("disk", partial(check_disk, sessions_root), 10.0,
              fix="choose another --sessions-root"),
        Check("pyserial", check_pyserial, 10.0, fix=PYSERIAL_FIX),
        Check("websockets", check_websockets, 10.0, fix=WEBSOCKETS_FIX),
        Check("cpu-wakeup", check_cpu_wakeup, 5.0, fix=CPU_WAKEUP_FIX),
    ]


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "ok", detail)


def _warn(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "warn", detail, fix)


def _fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "fail", detail, fix)


def _dist_version(dist: str) -> str:
    """Installed version of a distribution, or ``?``."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# -- python -----------------------------------------------------------------------------------
def check_python() -> CheckResult:
    """Python is 3.10 or newer."""
    detail = f"Python {platform.python_version()} ({sys.executable})"
    if sys.version_info[:2] < MIN_PYTHON:
        return _fail("python", detail, "install Python 3.10 or newer and recreate the virtual "
                     "environment with it")
    return _ok("python", detail)


# -- LSL --------------------------------------------------------------------------------------
LIBLSL_FIX = "pip install --force-reinstall pylsl (its wheels bundle liblsl)"


def lsl_config_path() -> str | None:
    """The liblsl configuration file in use (``LSLAPICFG``; bci-runtime sets it on import)."""
    return os.environ.get("LSLAPICFG") or None


def lsl_discovery_fix() -> str:
    """How to fix an LSL stream on this machine that cannot be found or connected to."""
    cfg = lsl_config_path() or "an lsl_api.cfg named by LSLAPICFG"
    return ("allow UDP multicast and ports 16571-16604 (UDP+TCP) on loopback in the firewall, "
            f"or add 'KnownPeers = {{127.0.0.1}}' under [lab] in {cfg}")


def check_liblsl() -> CheckResult:
    """pylsl imports, liblsl loads; report their versions and the configuration file."""
    try:
        pylsl = import_pylsl()
    except DependencyError as exc:
        return _fail("liblsl", exc.message, LIBLSL_FIX)
    lib = pylsl.library_version()
    info = str(pylsl.library_info())
    tag = re.search(r"branch:(?:refs/tags/)?([^/]+)", info)
    build = tag.group(1) if tag else info[:40]
    detail = (f"pylsl {getattr(pylsl, '__version__', _dist_version('pylsl'))}, "
              f"liblsl {lib // 100}.{lib % 100} ({build})")
    cfg = lsl_config_path()
    if cfg is not None and not Path(cfg).is_file():
        return _warn("liblsl", f"{detail}; LSLAPICFG names a missing file: {cfg}",
                     "unset LSLAPICFG or point it at an existing lsl_api.cfg")
    return _ok("liblsl", f"{detail}, config {cfg or 'liblsl defaults'}")


def check_lsl_loopback() -> CheckResult:
    """A real outlet, resolved by its unique source_id; 100 samples there and back.

    Each sample carries its index and is pulled before the next is pushed, so the
    round trip is the latency of one sample through liblsl on this machine, and a
    lost or reordered sample shows as a wrong index.
    """
    name = "lsl-loopback"
    fix = lsl_discovery_fix()
    try:
        pylsl = import_pylsl()
    except DependencyError as exc:
        return _fail(name, exc.message, LIBLSL_FIX)
    source_id = f"bci-doctor-{uuid.uuid4().hex}"
    info = pylsl.StreamInfo("bci-doctor-loopback", "Doctor", 1, pylsl.IRREGULAR_RATE,
                            "double64", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=1, max_buffered=LSL_SAMPLES)
    inlet = None
    try:
        start = time.perf_counter()
        found = pylsl.resolve_byprop("source_id", source_id, 1, LSL_RESOLVE_TIMEOUT_S)
        resolve_ms = (time.perf_counter() - start) * 1000.0
        if not found:
            return _fail(name, f"a stream of this machine was not found within "
                         f"{LSL_RESOLVE_TIMEOUT_S:g} s (multicast discovery blocked?)", fix)
        inlet = pylsl.StreamInlet(found[0], max_buflen=LSL_SAMPLES, max_chunklen=1,
                                  recover=False)
        try:
            inlet.open_stream(LSL_OPEN_TIMEOUT_S)
        except TimeoutError:
            return _fail(name, f"stream found in {resolve_ms:.0f} ms but no connection within "
                         f"{LSL_OPEN_TIMEOUT_S:g} s (TCP blocked?)", fix)
        outlet.wait_for_consumers(LSL_OPEN_TIMEOUT_S)
        received, round_trips = _ping_pong(pylsl, outlet, inlet)
    finally:
        if inlet is not None:
            inlet.close_stream()
            del inlet
        linger_for_consumers([outlet])
        del outlet
    got = f"{len(received)}/{LSL_SAMPLES} samples"
    if received != list(range(len(received))):
        return _fail(name, f"{got} but out of order or duplicated", fix)
    if len(received) < LSL_SAMPLES:
        return _fail(name, f"resolved in {resolve_ms:.0f} ms but only {got} arrived within "
                     f"{LSL_DATA_TIMEOUT_S:g} s", fix)
    median = statistics.median(round_trips) * 1000.0
    worst = max(round_trips) * 1000.0
    return _ok(name, f"resolved in {resolve_ms:.0f} ms, {got} in order, round trip median "
               f"{median:.2f} ms, max {worst:.2f} ms")


def _ping_pong(pylsl: Any, outlet: Any, inlet: Any) -> tuple[list[int], list[float]]:
    """Push sample i, pull it back, for i < LSL_SAMPLES (stops at the first missing one).

    Returns
    -------
    (list of int, list of float)
        The indices received and each one's round trip in seconds.
    """
    received: list[int] = []
    round_trips: list[float] = []
    deadline = time.monotonic() + LSL_DATA_TIMEOUT_S
    for i in range(LSL_SAMPLES):
        sent = pylsl.local_clock()
        outlet.push_sample([float(i)], sent)
        sample, _ = inlet.pull_sample(timeout=max(0.0, deadline - time.monotonic()))
        if sample is None:
            break
        round_trips.append(pylsl.local_clock() - sent)
        received.append(int(sample[0]))
    return received, round_trips


# -- BrainFlow --------------------------------------------------------------------------------
BRAINFLOW_FIX = "pip install --force-reinstall brainflow 'setuptools<81'"
SETUPTOOLS_FIX = "pip install 'setuptools<81' (BrainFlow imports pkg_resources, gone in 81)"


def _import_board_shim() -> Any:
    """BrainFlow's ``board_shim`` through the drivers' helper (native library loaded)."""
    from bci_runtime.drivers.brainflow_board import import_board_shim

    return import_board_shim()


def brainflow_import_failure(exc: BaseException) -> CheckResult:
    """The result for BrainFlow failing to import, naming the missing ``pkg_resources``.

    Parameters
    ----------
    exc : BaseException
        What importing raised (a :class:`DependencyError` wrapping the ImportError).
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError) and (cause.name == "pkg_resources"
                                               or "pkg_resources" in str(cause)):
            return _fail("brainflow", f"BrainFlow needs pkg_resources, which setuptools "
                         f"{_dist_version('setuptools')} no longer has", SETUPTOOLS_FIX)
        cause = cause.__cause__
    message = exc.message if isinstance(exc, DependencyError) else f"{type(exc).__name__}: {exc}"
    return _fail("brainflow", message, BRAINFLOW_FIX)


def check_brainflow() -> CheckResult:
    """BrainFlow imports and its native BoardController library loads."""
    try:
        shim = _import_board_shim()
    except (DependencyError, ImportError) as exc:
        return brainflow_import_failure(exc)
    return _ok("brainflow", f"brainflow {shim.BoardShim.get_version()} "
               f"(setuptools {_dist_version('setuptools')})")


def check_brainflow_board() -> CheckResult:
    """The synthetic board: prepare, stream for 0.3 s, read, stop, release."""
    name = "brainflow-board"
    try:
        shim = _import_board_shim()
    except (DependencyError, ImportError) as exc:
        return replace(brainflow_import_failure(exc), name=name)
    board_id = shim.BoardIds.SYNTHETIC_BOARD.value
    shim.BoardShim.set_log_level(BRAINFLOW_LOG_WARN)
    board = shim.BoardShim(board_id, shim.BrainFlowInputParams())
    try:
        board.prepare_session()
        board.start_stream()
        time.sleep(BOARD_STREAM_S)
        data = board.get_board_data()
        board.stop_stream()
    except shim.BrainFlowError as exc:
        hint = ("another session or program holds the synthetic board: close it"
                if getattr(exc, "exit_code", None) == 16 else BRAINFLOW_FIX)
        return _fail(name, f"the synthetic board did not stream: {exc}", hint)
    finally:
        if board.is_prepared():
            board.release_session()
    srate = shim.BoardShim.get_sampling_rate(board_id)
    n_eeg = len(shim.BoardShim.get_eeg_channels(board_id))
    samples = int(data.shape[1])
    detail = (f"synthetic board: {samples} samples in {BOARD_STREAM_S:g} s "
              f"({srate} Hz, {n_eeg} EEG ch)")
    if samples == 0:
        return _fail(name, detail, BRAINFLOW_FIX)
    return _ok(name, detail)


# -- torch ------------------------------------------------------------------------------------
def check_torch() -> CheckResult:
    """torch imports, is the pinned CPU build (or names its CUDA), and computes."""
    try:
        import torch
    except ImportError as exc:
        return _fail("torch", f"torch does not import: {exc}", TORCH_FIX)
    cuda = torch.version.cuda
    build = "CPU build" if cuda is None else (
        f"CUDA {cuda} build, GPU {'available' if torch.cuda.is_available() else 'not found'}")
    product = (torch.ones(2, 3) @ torch.ones(3, 2)).sum().item()
    detail = f"torch {torch.__version__}, {build}"
    if product != 12.0:
        return _fail("torch", f"{detail}; a 2x3 @ 3x2 product of ones summed to {product}, "
                     "not 12", TORCH_FIX)
    if torch.__version__.split("+")[0] != TORCH_PIN:
        return _warn("torch", f"{detail} (bci-runtime pins {TORCH_PIN})", TORCH_FIX)
    return _ok("torch", f"{detail}, tensor op ok")


# -- browser ----------------------------------------------------------------------------------
PLAYWRIGHT_FIX = "pip install playwright (only the browser tests need it)"


def find_chromium() -> Path | None:
    """Debian's Chromium at /usr/bin/chromium, else ``chromium`` on PATH."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def check_chromium() -> CheckResult:
    """A Chromium for the calibration wizard, and that it runs (``--version``)."""
    path = find_chromium()
    if path is None:
        return _fail("chromium", "no chromium at /usr/bin/chromium or on PATH", CHROMIUM_FIX)
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=10.0, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _warn("chromium", f"{path} does not run: {exc}", CHROMIUM_FIX)
    found = re.match(r"\S+ [\d.]+", proc.stdout.strip())  # "Chromium 150.0.7871.100 built on..."
    if proc.returncode != 0 or found is None:
        return _warn("chromium", f"`{path} --version` exited {proc.returncode}",
                     "apt-get install --reinstall chromium chromium-driver")
    return _ok("chromium", f"{found.group(0)} at {path}")


def check_playwright() -> CheckResult:
    """The ``playwright`` package imports (warn only: the browser tests need it)."""
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as exc:
        return _warn("playwright", f"playwright does not import: {exc}", PLAYWRIGHT_FIX)
    return _ok("playwright", f"playwright {_dist_version('playwright')}")


# -- disk -------------------------------------------------------------------------------------
def free_space_status(free_bytes: int) -> Status:
    """``fail`` below 200 MiB free, ``warn`` below 2 GiB, else ``ok``."""
    if free_bytes < DISK_FAIL_BYTES:
        return "fail"
    if free_bytes < DISK_WARN_BYTES:
        return "warn"
    return "ok"


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest existing parent (absolute)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(sessions_root: Path) -> CheckResult:
    """The sessions folder can be written and its disk has room for recordings.

    Parameters
    ----------
    sessions_root : Path
        Where sessions will be written; need not exist yet (its nearest existing
        parent is checked, as that is where it will be created).
    """
    name = "disk"
    root = sessions_root.expanduser()
    there = nearest_existing(root)
    if not there.is_dir():
        what = "is a file" if there == root.absolute() else f"is under a file ({there})"
        return _fail(name, f"sessions root {root} {what}: no folder can be made there",
                     f"choose another --sessions-root, or move {there} away")
    try:
        with tempfile.NamedTemporaryFile(dir=there, prefix=".bci-doctor-"):
            pass  # created, then deleted on close
    except OSError as exc:
        return _fail(name, f"cannot write in {there}: {exc.strerror or exc}",
                     f"make {there} writable for this user, or choose another --sessions-root")
    free = shutil.disk_usage(there).free
    hours = free / RECORDING_BYTES_PER_S / 3600.0
    where = str(root) if there == root.absolute() else f"{root} (to be created in {there})"
    detail = (f"{free / GiB:.1f} GiB free for {where}, writable; ~{hours:,.0f} h of "
              f"64-ch 1 kHz float32")
    status = free_space_status(free)
    if status == "ok":
        return _ok(name, detail)
    limit = "200 MiB" if status == "fail" else "2 GiB"
    return CheckResult(name, status, f"{detail} (below {limit})",
                       "free space on that disk, or choose --sessions-root on a larger one")


# -- optional pieces --------------------------------------------------------------------------
PYSERIAL_FIX = "pip install pyserial (only the serial stimulator needs it)"
WEBSOCKETS_FIX = "pip install 'websockets>=13' (the feedback page needs it)"
CPU_WAKEUP_FIX = f"run live sessions as root (or grant write access to {CPU_DMA_LATENCY})"


def check_pyserial() -> CheckResult:
    """pyserial imports (the serial stimulator driver; warn only)."""
    try:
        serial = importlib.import_module("serial")
    except ImportError as exc:
        return _warn("pyserial", f"pyserial does not import: {exc}", PYSERIAL_FIX)
    if not hasattr(serial, "Serial"):  # another package named 'serial' shadows pyserial
        return _warn("pyserial", f"'serial' is not pyserial ({getattr(serial, '__file__', '?')})",
                     "pip uninstall serial && " + PYSERIAL_FIX)
    return _ok("pyserial", f"pyserial {getattr(serial, '__version__', '?')}")


def check_websockets() -> CheckResult:
    """websockets imports (the feedback display's WebSocket; warn only)."""
    try:
        module = importlib.import_module("websockets")
    except ImportError as exc:
        return _warn("websockets", f"websockets does not import: {exc}", WEBSOCKETS_FIX)
    return _ok("websockets", f"websockets {getattr(module, '__version__', '?')}")


def check_cpu_wakeup() -> CheckResult:
    """``/dev/cpu_dma_latency`` can be opened for writing (low wake-up latency; warn only).

    Opening it without writing a value asks for nothing, and closing it drops
    the (empty) request.
    """
    name = "cpu-wakeup"
    if os.environ.get("BCI_CPU_WAKEUP", "low").lower() == "normal":
        return _ok(name, "left alone (BCI_CPU_WAKEUP=normal)")
    try:
        fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
    except FileNotFoundError:
        return _warn(name, f"{CPU_DMA_LATENCY} does not exist: live runs wake slower from idle",
                     "nothing to do off Linux; on Linux use a kernel with PM QoS")
    except OSError as exc:
        return _warn(name, f"{CPU_DMA_LATENCY} not writable ({exc.strerror}): live runs wake "
                     "slower from idle", CPU_WAKEUP_FIX)
    os.close(fd)
    return _ok(name, f"{CPU_DMA_LATENCY} writable: live runs keep CPUs out of deep idle")
