"""A stimulator behind a serial line: a line protocol a microcontroller can speak.

:class:`SerialStimulator` (driver type ``serial``) drives a microcontroller-based
stimulator over a serial port (USB CDC, a UART adapter, a pty, or any pyserial
URL such as ``socket://host:port``). :mod:`.serial_emulator` is a device that
speaks the same protocol on a pseudo-terminal, to try the driver without
hardware (``python -m bci_runtime.drivers.serial_emulator`` prints its port).

Protocol
--------
Framing
    ASCII lines, each terminated by ``\\n`` (a ``\\r`` before it is ignored). A
    line is ``<body>*HH``: ``HH`` is two hexadecimal digits (sent uppercase,
    accepted in either case) of the XOR of every byte of ``<body>``, i.e. of
    all the bytes before the ``*`` (as in NMEA 0183), so that line noise is
    detected. ``PING`` is sent as ``PING*10``. Tokens are separated by single
    spaces. A line is at most :data:`MAX_LINE` bytes, the ``\\n`` included.
    Empty lines are ignored and get no reply (the host sends one before
    ``STOP`` when it forces the output safe, to terminate a line a failed write
    may have cut short).
Exchange
    The host sends commands; the device answers **every** non-empty line with
    exactly one reply, in the order received, and sends nothing else. The
    replies are ``OK`` (possibly followed by values) or ``ERR <code> <message>``.
Units
    Integers only, so that the firmware needs no float parsing: amplitude in µA,
    phase width in µs, frequency in mHz. Every number is an unsigned decimal
    below 2**32. Contacts are numbered ``0..n-1``, in the order of the
    ``contacts`` of the :class:`~bci_runtime.stim_limits.StimulationLimits`
    (the driver maps names to indices).

Commands (host → device) and their replies:

``HELLO``
    ``OK HELLO <model> <firmware> <n_contacts>`` (no spaces inside the fields).
``WDT <ms>``
    ``OK``; from now on the device stops every output by itself when no valid
    line (right checksum) arrived for ``<ms>`` while an output is on; 0 disables.
``TRAIN <contact> <amp_uA> <width_us> <freq_mHz> <n_pulses> <phase2_amp_uA> <phase2_width_us>``
    ``OK <seq>`` (the device's train counter, from 1), or ``ERR <code> <message>``.
``STOP``
    ``OK``; every output off (also when it was off already).
``PING``
    ``OK`` (keeps the watchdog fed).

``TRAIN`` starts ``n_pulses`` biphasic pulses (first phase ``amp_uA`` for
``width_us``, then the charge-recovery phase ``phase2_amp_uA`` for
``phase2_width_us``) at ``freq_mHz`` on one contact, replacing a train still
running on that contact. It starts now, or at the contact's next pulse slot if
that is later: the first pulse the replaced (or stopped) train did not deliver,
so pulses on a contact never come closer than that train's period.
``n_pulses``, ``freq_mHz`` and both widths are at least 1.

Error codes: ``ERR 1 checksum`` for a line whose checksum is wrong or missing;
``ERR 2 <message>`` for an unknown command, a wrong number of arguments, a
malformed or out-of-range number, a line too long; ``ERR 3 <message>`` for a
contact the device does not have; codes 4 and above are device faults
(compliance, impedance, temperature...), the message says which. A ``TRAIN``
answered by ``ERR`` starts nothing.

Example (contact 1, 1.5 mA, 90 µs, 130 Hz, 13 pulses, symmetric)::

    > TRAIN 1 1500 90 130000 13 1500 90*51
    < OK 1*15

The driver
----------
``open`` opens the port, sends ``HELLO`` (resent every
:data:`HELLO_RESEND_S` until :attr:`SerialStimulator.handshake_timeout_s`, for
boards that reboot when their port opens), checks that the device has at least
the declared contacts, then sends ``STOP`` and ``WDT`` and waits for their
``OK``. Two threads then run: a reader that matches every reply to the oldest
outstanding command and measures its round trip, and a monitor that sends
``PING`` when nothing was written for ``ping_s`` (so the device watchdog stays
fed while the host is alive) and fails the device when the oldest command had
no reply after ``reply_timeout_s``. If the host process dies or hangs, the pings
stop and the device turns its output off within ``device_watchdog_ms``.

``deliver`` writes one ``TRAIN`` line and returns without waiting for the reply.
An ``ERR``, a missing reply, a corrupt or unexpected reply, or a lost port makes
the driver force the output safe (``STOP``), record a ``stimulator_error``
event and remember the error: every later ``deliver`` raises
:class:`~bci_runtime.errors.StimulatorError` with the device's message (the
driver has to be closed and opened again).
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bci_runtime.drivers.stimulator_driver import DriverContext, StimulatorDriver
from bci_runtime.errors import ConfigError, DependencyError, StimulatorError
from bci_runtime.safety import PulseRequest

if TYPE_CHECKING:
    import serial

log = logging.getLogger(__name__)

MAX_LINE = 128  # bytes of one protocol line, "\n" included
HELLO_RESEND_S = 0.25  # HELLO is resent this often until the device answers
HANDSHAKE_POLL_S = 0.02  # read timeout of the port while opening
READ_POLL_S = 0.1  # read timeout of the reader on ports whose reads cannot be cancelled
JOIN_TIMEOUT_S = 2.0  # how long close() waits for each thread
PORT_HINT = ("check the cable and the port name (`ls /dev/tty*`, `ls /dev/serial/by-id`); to try "
             "the driver without hardware run `python -m bci_runtime.drivers.serial_emulator` "
             "and use the port it prints")


# --------------------------------------------------------------------------- protocol


def checksum(body: bytes) -> int:
    """XOR of every byte of ``body`` (0..255), the protocol's line checksum."""
    return functools.reduce(operator.xor, body, 0)


def frame(body: bytes) -> bytes:
    """Return ``body`` as a protocol line: ``<body>*HH\\n``."""
    return b"%s*%02X\n" % (body, checksum(body))


def unframe(line: bytes) -> bytes | None:
    """Return the body of a received line, or None when its checksum is wrong or missing.

    Parameters
    ----------
    line : bytes
        One line without its ``\\n`` (a trailing ``\\r`` is ignored).
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) < 3 or line[-3] != 0x2A:  # "*"
        return None
    body = line[:-3]
    try:
        expected = int(line[-2:], 16)
    except ValueError:
        return None
    if b"*" in body or checksum(body) != expected:
        return None
    return body


HELLO_LINE = frame(b"HELLO")
PING_LINE = frame(b"PING")
STOP_LINE = frame(b"STOP")
SAFE_LINE = b"\n" + STOP_LINE  # the empty line ends whatever a failed write left behind


# --------------------------------------------------------------------------- parameters


class SerialStimulatorParams(BaseModel):
    """Parameters of the ``serial`` stimulator driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1, description="serial port (/dev/ttyACM0, COM3) or pyserial "
                      "URL (socket://host:port)")
    baudrate: int = Field(115200, gt=0, description="line speed (bit/s); ignored by USB CDC")
    reply_timeout_s: float = Field(0.05, gt=0, le=10, description="a command without a reply "
                                   "after this long fails the device (s)")
    device_watchdog_ms: int = Field(100, ge=20, le=1000, description="the device stops its "
                                    "output by itself after this long without a line (ms)")
    ping_s: float | None = Field(None, gt=0, description="PING when nothing was written for "
                                 "this long (s); default: a quarter of the device watchdog")

    @model_validator(mode="after")
    def _ping_within_watchdog(self) -> SerialStimulatorParams:
        if self.ping_s is not None and self.ping_s * 1000.0 > self.device_watchdog_ms / 2:
            raise ValueError(f"ping_s {self.ping_s:g} s must be at most half of "
                             f"device_watchdog_ms ({self.device_watchdog_ms} ms), or the device "
                             f"stops its output between two pings")
        return self

    @property
    def ping_interval_s(self) -> float:
        """The ping period in use (s)."""
        return self.ping_s if self.ping_s is not None else self.device_watchdog_ms / 4000.0


def _validate_params(params: SerialStimulatorParams | Mapping[str, Any]) -> SerialStimulatorParams:
    if isinstance(params, SerialStimulatorParams):
        return params
    try:
        return SerialStimulatorParams.model_validate(dict(params))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"serial stimulator parameters: {problems}",
                          hint="fields: port, baudrate, reply_timeout_s, device_watchdog_ms, "
                               "ping_s") from exc


def _import_serial() -> Any:
    try:
        import serial
    except ImportError as exc:
        raise DependencyError(f"pyserial is not importable ({exc})",
                              hint="pip install pyserial") from exc
    return serial


# --------------------------------------------------------------------------- driver


class SerialStimulator(StimulatorDriver):
    """A microcontroller stimulator on a serial line (see the module docstring).

    Parameters
    ----------
    params : SerialStimulatorParams or mapping
        The port and the timing of the link; a mapping is validated
        (:class:`~bci_runtime.errors.ConfigError` when it does not fit).

    Attributes
    ----------
    handshake_timeout_s : float
        How long ``open`` waits for the device to answer ``HELLO``, ``STOP`` and
        ``WDT`` (s); long enough for a board that reboots when its port opens.
    device : dict or None
        ``model``, ``firmware`` and ``n_contacts`` the device announced.
    """

    type_name = "serial"
    Params = SerialStimulatorParams
    handshake_timeout_s = 2.0

    def __init__(self, params: SerialStimulatorParams | Mapping[str, Any]) -> None:
        self.params = _validate_params(params)
        self.device: dict[str, Any] | None = None
        self._ser: Any = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._outstanding: deque[tuple[bytes, float]] = deque()  # (line, monotonic time sent)
        self._wake = threading.Event()  # wakes the monitor (new deadline, error, close)
        self._drained = threading.Event()  # set by the reader when nothing is outstanding
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: str | None = None
        self._prefixes: dict[str, tuple[bytes, int]] = {}  # contact -> (b"TRAIN i ", checksum)
        self._last_write = 0.0
        self._trains_sent = 0
        self._pings_sent = 0
        self._safe_requests = 0
        self._errors = 0
        self._replies = 0
        self._rtt_sum = 0.0
        self._rtt_max = 0.0

    # ------------------------------------------------------------------ lifecycle

    def open(self, context: DriverContext) -> None:
        """Connect, check the device, turn its output off and arm its watchdog.

        Raises
        ------
        StimulatorError
            The port cannot be opened, or the device does not answer as it should.
        ConfigError
            The device has fewer contacts than the limits declare.
        """
        if self._ser is not None:
            raise StimulatorError(f"stimulator '{context.name}': {self.params.port} is already "
                                  f"open", hint="close() the driver before opening it again")
        super().open(context)
        ser = self._open_port()
        try:
            leftover = self._handshake(ser, context)
            ser.timeout = None if hasattr(ser, "cancel_read") else READ_POLL_S
        except BaseException:
            ser.close()
            raise
        self._ser = ser
        self._error = None
        self._outstanding.clear()
        self._closing.clear()
        self._last_write = time.monotonic()
        self._threads = [
            threading.Thread(target=self._read_loop, args=(leftover,), daemon=True,
                             name=f"serial-stim-reader-{context.name}"),
            threading.Thread(target=self._monitor_loop, daemon=True,
                             name=f"serial-stim-monitor-{context.name}"),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Turn the output off (waiting briefly for the device's ``OK``), stop, release."""
        ser = self._ser
        if ser is None:
            return
        self._drained.clear()
        self.safe_state("driver closed")
        if self._error is None:
            self._drained.wait(self.params.reply_timeout_s)
        self._closing.set()
        self._wake.set()
        cancel = getattr(ser, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        with self._write_lock:
            self._ser = None
        try:
            ser.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ hot path

    def deliver(self, pulse: PulseRequest, t: float) -> None:
        """Send ``pulse`` as one ``TRAIN`` line; the reply is checked in the background.

        Parameters
        ----------
        pulse : PulseRequest
            What the supervisor let through; amplitudes are rounded to µA,
            widths to µs, the frequency to mHz.
        t : float
            Runtime clock time of the decision (s).

        Raises
        ------
        StimulatorError
            The device failed earlier (refused a command, stopped answering,
            answered garbage, vanished), the contact is not in the limits, or
            the write failed; the output has been forced safe.
        """
        prefix = self._prefixes.get(pulse.contact)
        if prefix is None:
            if not self._prefixes:
                raise self._as_error()
            raise StimulatorError(
                f"stimulator '{self._name}': unknown contact {pulse.contact!r}",
                hint=f"contacts of the limits: {', '.join(self._prefixes)}")
        amp = round(pulse.amplitude_ma * 1000.0)
        width = round(pulse.width_us)
        amp2 = amp if pulse.phase2_amplitude_ma is None else round(pulse.phase2_amplitude_ma * 1e3)
        width2 = width if pulse.phase2_width_us is None else round(pulse.phase2_width_us)
        args = b"%d %d %d %d %d %d" % (amp, width, round(pulse.frequency_hz * 1000.0),
                                       pulse.n_pulses, amp2, width2)
        line = b"%s%s*%02X\n" % (prefix[0], args, checksum(args) ^ prefix[1])
        failure: str | None = None
        with self._write_lock:
            if self._error is not None or self._ser is None:
                raise self._as_error()
            idle = not self._outstanding
            now = time.monotonic()
            self._outstanding.append((line, now))
            try:
                self._ser.write(line)
            except OSError as exc:
                failure = f"writing to {self.params.port} failed: {exc}"
            self._last_write = now
            self._trains_sent += 1
        if failure is not None:
            self._fail(failure)
            raise self._as_error()
        if idle:
            self._wake.set()  # the monitor has a reply deadline to keep

    def safe_state(self, reason: str) -> None:
        """Write ``STOP`` without waiting for the reply; never raises, any thread.

        Should the write lock stay taken (a write stuck on a dead port, a signal
        handler that interrupted ``deliver`` on the same thread), ``STOP`` is
        written without it after ``2 * reply_timeout_s``: the line is
        self-delimiting (it starts with an empty line).
        """
        self._safe_requests += 1
        log.info("stimulator '%s': safe state (%s)", self._name, reason)
        locked = self._write_lock.acquire(timeout=2 * self.params.reply_timeout_s)
        idle = False
        try:
            ser = self._ser
            if ser is None:
                return
            idle = not self._outstanding
            now = time.monotonic()
            self._outstanding.append((STOP_LINE, now))
            self._last_write = now
            ser.write(SAFE_LINE)
        except (OSError, ValueError) as exc:  # the port is gone: nothing left to stop
            log.warning("stimulator '%s': STOP not sent (%s)", self._name, exc)
        finally:
            if locked:
                self._write_lock.release()
        if idle:
            self._wake.set()  # the monitor has a reply deadline to keep

    # ------------------------------------------------------------------ reporting

    @property
    def error(self) -> str | None:
        """The error that failed the device (None while it works)."""
        return self._error

    def summary(self) -> dict[str, Any]:
        """Trains sent, pings, errors, reply round trips (ms)."""
        n = self._replies
        return {
            "driver": self.type_name,
            "port": self.params.port,
            "device": self.device,
            "trains_sent": self._trains_sent,
            "pings_sent": self._pings_sent,
            "safe_state_requests": self._safe_requests,
            "replies": n,
            "errors": self._errors,
            "error": self._error,
            "reply_rtt_mean_ms": 1000.0 * self._rtt_sum / n if n else None,
            "reply_rtt_max_ms": 1000.0 * self._rtt_max if n else None,
        }

    # ------------------------------------------------------------------ opening

    @property
    def _name(self) -> str:
        context = getattr(self, "context", None)
        return context.name if context is not None else "?"

    def _open_port(self) -> Any:
        serial = _import_serial()
        port = self.params.port
        try:
            return serial.serial_for_url(port, baudrate=self.params.baudrate,
                                         timeout=HANDSHAKE_POLL_S,
                                         write_timeout=self.params.reply_timeout_s,
                                         exclusive=True)
        except (OSError, ValueError) as exc:
            raise StimulatorError(f"stimulator '{self._name}': cannot open serial port "
                                  f"{port!r}: {exc}", hint=PORT_HINT) from exc

    def _handshake(self, ser: serial.Serial, context: DriverContext) -> bytes:
        """HELLO, contact count, STOP, WDT; return bytes read past the last reply."""
        port = self.params.port
        lines = _SyncLines(ser)
        try:
            ser.reset_input_buffer()
            deadline = time.monotonic() + self.handshake_timeout_s
            hello = None
            while hello is None and time.monotonic() < deadline:
                ser.write(HELLO_LINE)
                hello = lines.wait_for(lambda b: b.startswith(b"OK HELLO "),
                                       min(deadline, time.monotonic() + HELLO_RESEND_S))
            if hello is None:
                raise StimulatorError(
                    f"stimulator '{context.name}': no answer from {port!r} to HELLO within "
                    f"{self.handshake_timeout_s:g} s", hint="is it a stimulator speaking this "
                    f"protocol, at {self.params.baudrate} bit/s, powered on? " + PORT_HINT)
            self.device = self._parse_hello(hello, context)
            self._command_sync(ser, lines, b"STOP")
            self._command_sync(ser, lines, b"WDT %d" % self.params.device_watchdog_ms)
        except OSError as exc:
            raise StimulatorError(f"stimulator '{context.name}': serial port {port!r} failed "
                                  f"while opening: {exc}", hint=PORT_HINT) from exc
        names = [c.name for c in context.limits.contacts]
        self._prefixes = {}
        for index, name in enumerate(names):
            prefix = b"TRAIN %d " % index
            self._prefixes[name] = (prefix, checksum(prefix))
        return bytes(lines.buffer)

    def _parse_hello(self, body: bytes, context: DriverContext) -> dict[str, Any]:
        parts = body.decode("ascii", "replace").split(" ")
        if len(parts) != 5 or not parts[4].isdigit():
            raise StimulatorError(f"stimulator '{context.name}': {self.params.port!r} answered "
                                  f"HELLO with {body!r}, expected 'OK HELLO <model> <firmware> "
                                  f"<n_contacts>'", hint="is the firmware up to date?")
        device = {"model": parts[2], "firmware": parts[3], "n_contacts": int(parts[4])}
        declared = len(context.limits.contacts)
        if device["n_contacts"] < declared:
            raise ConfigError(
                f"stimulator '{context.name}': the device on {self.params.port!r} "
                f"({device['model']} {device['firmware']}) has {device['n_contacts']} contacts "
                f"but the limits declare {declared}",
                hint=f"connect the right device, or declare at most {device['n_contacts']} "
                     f"contacts in the stimulation limits")
        return device

    def _command_sync(self, ser: serial.Serial, lines: _SyncLines, body: bytes) -> None:
        """Send ``body`` and wait for its ``OK`` (late HELLO replies are skipped)."""
        ser.write(frame(body))
        reply = lines.wait_for(lambda b: not b.startswith(b"OK HELLO "),
                               time.monotonic() + self.handshake_timeout_s)
        if reply != b"OK":
            got = "no answer" if reply is None else f"{reply.decode('ascii', 'replace')!r}"
            raise StimulatorError(f"stimulator '{self._name}': {self.params.port!r} answered "
                                  f"{body.decode()} with {got}, expected 'OK'",
                                  hint="check the device and its firmware version")

    # ------------------------------------------------------------------ background

    def _read_loop(self, buffer: bytes) -> None:
        ser = self._ser
        buf = bytearray(buffer)
        while not self._closing.is_set():
            try:
                data = ser.read(ser.in_waiting or 1)
            except (OSError, ValueError) as exc:
                if not self._closing.is_set():
                    self._fail(f"lost the device on {self.params.port}: {exc}")
                return
            if not data:
                continue
            now = time.monotonic()
            buf += data
            end = buf.find(b"\n")
            while end >= 0:
                self._on_reply(bytes(buf[:end]), now)
                del buf[:end + 1]
                end = buf.find(b"\n")
            if len(buf) >= MAX_LINE:
                self._fail(f"the device on {self.params.port} sent {len(buf)} bytes without "
                           f"an end of line: {bytes(buf[:40])!r}...")
                buf.clear()

    def _on_reply(self, line: bytes, now: float) -> None:
        body = unframe(line)
        try:
            sent, t_sent = self._outstanding.popleft()
        except IndexError:
            self._fail(f"the device on {self.params.port} sent {line!r} unasked")
            return
        if not self._outstanding:
            self._drained.set()
        rtt = now - t_sent
        self._replies += 1
        self._rtt_sum += rtt
        if rtt > self._rtt_max:
            self._rtt_max = rtt
        command = sent.rsplit(b"*", 1)[0].decode("ascii", "replace")
        if body is None:
            self._fail(f"corrupt reply (bad checksum) to '{command}' from the device on "
                       f"{self.params.port}: {line!r}")
        elif body.startswith(b"ERR"):
            self._fail(f"the device on {self.params.port} refused '{command}': "
                       f"{body.decode('ascii', 'replace')}")
        elif body != b"OK" and not body.startswith(b"OK "):
            self._fail(f"unexpected reply to '{command}' from the device on "
                       f"{self.params.port}: {body!r}")

    def _monitor_loop(self) -> None:
        ping_s = self.params.ping_interval_s
        while True:
            self._wake.clear()
            if self._closing.is_set():
                return
            if self._error is not None:
                self._wake.wait()  # nothing to watch any more; wait for close()
                continue
            now = time.monotonic()
            deadline = self._reply_deadline(now)
            if deadline is None:
                continue  # failed
            if now - self._last_write >= ping_s:
                self._ping(now)
                deadline = min(deadline, now + self.params.reply_timeout_s)
            self._wake.wait(max(0.0, min(deadline, self._last_write + ping_s) - now))

    def _reply_deadline(self, now: float) -> float | None:
        """When the oldest command's reply is due (inf: none due); None after failing it.

        A reply already waiting in the port's input buffer at the deadline (a reader
        thread the scheduler kept waiting) gets one more ``reply_timeout_s``.
        """
        reply_timeout = self.params.reply_timeout_s
        try:
            sent, t_sent = self._outstanding[0]
        except IndexError:
            return math.inf
        deadline = t_sent + reply_timeout
        if now < deadline:
            return deadline
        if now < deadline + reply_timeout and self._bytes_pending():
            return min(deadline + reply_timeout, now + reply_timeout / 4)
        command = sent.rsplit(b"*", 1)[0].decode("ascii", "replace")
        self._fail(f"no answer from the device on {self.params.port} to '{command}' within "
                   f"{1000 * reply_timeout:g} ms")
        return None

    def _bytes_pending(self) -> bool:
        try:
            return bool(self._ser.in_waiting)
        except (OSError, AttributeError):  # the port is gone or closing: the reader will say
            return False

    def _ping(self, now: float) -> None:
        failure = None
        with self._write_lock:
            if self._ser is None:
                return
            self._outstanding.append((PING_LINE, now))
            self._last_write = now
            try:
                self._ser.write(PING_LINE)
            except OSError as exc:
                failure = f"writing to {self.params.port} failed: {exc}"
            self._pings_sent += 1
        if failure is not None:
            self._fail(failure)

    def _fail(self, message: str) -> None:
        """Force the output safe and remember the first error (any thread)."""
        with self._state_lock:
            self._errors += 1
            first = self._error is None
            if first:
                self._error = message
        log.error("stimulator '%s': %s", self._name, message)
        self.safe_state(f"stimulator error: {message}")
        self._wake.set()
        if first:
            try:
                self.context.emit_event("stimulator_error", stimulator=self._name,
                                        port=self.params.port, message=message)
            except Exception:  # a broken events log must not kill the reader thread
                log.exception("stimulator '%s': could not record the error", self._name)

    def _as_error(self) -> StimulatorError:
        if self._ser is None and self._error is None:
            return StimulatorError(f"stimulator '{self._name}': the serial driver is not open",
                                   hint="open() it first")
        return StimulatorError(f"stimulator '{self._name}': {self._error}; the output was "
                               f"stopped", hint="check the device, its cable and its power, "
                               "then restart the run")


class _SyncLines:
    """Blocking line reads with a deadline, used while opening (before the reader runs)."""

    def __init__(self, ser: serial.Serial) -> None:
        self.ser = ser
        self.buffer = bytearray()

    def wait_for(self, accept: Callable[[bytes], bool], deadline: float) -> bytes | None:
        """Return the first valid body ``accept(body)`` likes before ``deadline``, else None.

        Corrupt lines and bodies ``accept`` rejects are skipped.
        """
        while True:
            end = self.buffer.find(b"\n")
            while end >= 0:
                body = unframe(bytes(self.buffer[:end]))
                del self.buffer[:end + 1]
                if body is not None and accept(body):
                    return body
                end = self.buffer.find(b"\n")
            if len(self.buffer) >= MAX_LINE:
                self.buffer.clear()
            if time.monotonic() >= deadline:
                return None
            self.buffer += self.ser.read(self.ser.in_waiting or 1)
