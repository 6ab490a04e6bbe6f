"""An emulated serial stimulator on a pseudo-terminal: the ``serial`` driver without hardware.

:class:`EmulatedStimulator` opens a pty pair, puts it in raw mode and speaks the
protocol of :mod:`.serial_stimulator` on the master side, on its own thread; the
driver opens the slave side (:attr:`EmulatedStimulator.port`, ``/dev/pts/N``)
as it would a USB serial port. It keeps what a test needs to check: the output
state, every train started, every stop (by ``STOP`` or by its watchdog), every
line received; and it can inject faults (an ``ERR``, silence, a corrupt reply).

Like the firmware it stands for, it has a watchdog: after ``WDT <ms>``, when no
valid line (right checksum) arrived for ``<ms>`` while a train is running, it
stops every output by itself. That is what keeps the patient safe when the host
process is killed or hangs.

Times are the device's ``time.monotonic()`` (the same clock as the test process
on one machine). Trains end by themselves after ``n_pulses / frequency``.

Run it from a shell to try the driver without hardware::

    python -m bci_runtime.drivers.serial_emulator --contacts 4 --verbose

It prints the port to use as the driver's ``port`` and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from bci_runtime.drivers.serial_stimulator import MAX_LINE, frame, unframe
from bci_runtime.errors import ConfigError, StimulatorError

UINT32_END = 2**32
TRAIN_FIELDS = ("contact", "amp_ua", "width_us", "freq_mhz", "n_pulses", "phase2_amp_ua",
                "phase2_width_us")


@dataclass(frozen=True)
class EmulatedTrain:
    """A train the device started (the integer fields of its ``TRAIN`` line).

    Attributes
    ----------
    seq : int
        The device's train counter (1 for the first), as in the ``OK <seq>`` reply.
    contact, amp_ua, width_us, freq_mhz, n_pulses, phase2_amp_ua, phase2_width_us : int
        As received: contact index, µA, µs, mHz, pulses, µA, µs.
    t_start : float
        Device time the train started (``time.monotonic()``, s).
    """

    seq: int
    contact: int
    amp_ua: int
    width_us: int
    freq_mhz: int
    n_pulses: int
    phase2_amp_ua: int
    phase2_width_us: int
    t_start: float

    @property
    def t_end(self) -> float:
        """Device time the train ends unless stopped or replaced (s)."""
        return self.t_start + self.n_pulses * 1000.0 / self.freq_mhz


@dataclass(frozen=True)
class EmulatedStop:
    """A stop of every output: a ``STOP`` command, or the device's watchdog.

    Attributes
    ----------
    t : float
        Device time of the stop (``time.monotonic()``, s).
    cause : {"command", "watchdog"}
    """

    t: float
    cause: Literal["command", "watchdog"]


class EmulatedStimulator:
    """A stimulator speaking the serial protocol on a pty (see the module docstring).

    Parameters
    ----------
    n_contacts : int
        Contacts the device announces in its ``HELLO`` reply.
    model, firmware : str
        Announced in the ``HELLO`` reply (no spaces).
    on_line : callable, optional
        ``on_line(line, reply)`` after each line is handled (``reply`` None when
        nothing was sent), on the emulator's thread.

    Examples
    --------
    >>> with EmulatedStimulator(n_contacts=2) as device:  # doctest: +SKIP
    ...     driver = SerialStimulator({"port": device.port})
    """

    def __init__(self, n_contacts: int = 4, *, model: str = "EMU-STIM", firmware: str = "1.0",
                 on_line: Callable[[str, str | None], None] | None = None) -> None:
        if n_contacts < 1:
            raise ConfigError(f"an emulated stimulator needs at least 1 contact, got "
                              f"{n_contacts}")
        if " " in model or " " in firmware:
            raise ConfigError(f"model and firmware must not contain spaces: {model!r}, "
                              f"{firmware!r}")
        self.n_contacts = n_contacts
        self.model = model
        self.firmware = firmware
        self.on_line = on_line
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._trains: list[EmulatedTrain] = []
        self._active: dict[int, EmulatedTrain] = {}
        self._slots: dict[int, float] = {}  # next pulse slot of stopped trains, per contact
        self._stops: list[EmulatedStop] = []
        self._commands: list[str] = []
        self._watchdog_ms = 0
        self._last_valid = time.monotonic()
        self._seq = 0
        self._fail_next: tuple[int, str] | None = None
        self._silent = False
        self._corrupt_next = False
        self._master: int | None = None
        self._slave: int | None = None
        self._port: str | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> str:
        """Path of the pty's slave side, for the driver (``/dev/pts/N``)."""
        if self._port is None:
            raise StimulatorError("the emulated stimulator is not started", hint="call start()")
        return self._port

    def start(self) -> EmulatedStimulator:
        """Open the pty and start answering; returns self."""
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, no newline translation
        os.set_blocking(self._master, False)  # a host that does not read loses replies
        self._port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._last_valid = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"emulated-stimulator-{self._port}")
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close the pty (idempotent)."""
        if self._thread is None:
            return
        self._closing = True
        os.write(self._wake_w, b"x")  # type: ignore[arg-type]
        self._thread.join(2.0)
        self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = None

    def __enter__(self) -> EmulatedStimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    @property
    def output_on(self) -> bool:
        """Whether a train is running on some contact now."""
        now = time.monotonic()
        with self._lock:
            return any(t.t_end > now for t in self._active.values())

    def active_trains(self) -> dict[int, EmulatedTrain]:
        """The train running on each contact index now."""
        now = time.monotonic()
        with self._lock:
            return {c: t for c, t in self._active.items() if t.t_end > now}

    @property
    def trains(self) -> list[EmulatedTrain]:
        """Every train started, in order (a copy)."""
        with self._lock:
            return list(self._trains)

    @property
    def stops(self) -> list[EmulatedStop]:
        """Every ``STOP`` command and watchdog stop, in order (a copy)."""
        with self._lock:
            return list(self._stops)

    @property
    def commands(self) -> list[str]:
        """Every non-empty line received, as received without its ``\\n`` (a copy)."""
        with self._lock:
            return list(self._commands)

    @property
    def watchdog_ms(self) -> int:
        """The watchdog period the host set (0: off)."""
        with self._lock:
            return self._watchdog_ms

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` is true (re-checked after every line and stop).

        Returns
        -------
        bool
            The predicate's last value (False when ``timeout_s`` passed first).
        """
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    # ------------------------------------------------------------------ faults

    def fail_next(self, code: int, message: str) -> None:
        """Answer the next ``TRAIN`` with ``ERR <code> <message>`` (and start nothing)."""
        with self._lock:
            self._fail_next = (code, message.replace("*", " "))

    def go_silent(self) -> None:
        """Stop answering (commands are still received and obeyed: a broken TX wire)."""
        with self._lock:
            self._silent = True

    def corrupt_next_reply(self) -> None:
        """Send the next reply with a wrong checksum."""
        with self._lock:
            self._corrupt_next = True

    # ------------------------------------------------------------------ device thread

    def _run(self) -> None:
        buf = bytearray()
        while True:
            readable, _, _ = select.select([self._master, self._wake_r], [], [],
                                           self._watchdog_timeout())
            if self._closing:
                return
            if self._master in readable:
                try:
                    data = os.read(self._master, 4096)  # type: ignore[arg-type]
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:  # the pty went away
                    return
                buf += data
                end = buf.find(b"\n")
                while end >= 0:
                    line = bytes(buf[:end])
                    del buf[:end + 1]
                    self._handle(line)
                    end = buf.find(b"\n")
                if len(buf) >= MAX_LINE:
                    self._handle(bytes(buf))  # answered "line too long"
                    buf.clear()
            self._check_watchdog()

    def _watchdog_timeout(self) -> float | None:
        with self._lock:
            if not self._watchdog_ms or not self._active:
                return None
            deadline = self._last_valid + self._watchdog_ms / 1000.0
        return max(0.0, deadline - time.monotonic())

    def _check_watchdog(self) -> None:
        now = time.monotonic()
        with self._changed:
            if not self._active:
                return
            if self._watchdog_ms:
                deadline = self._last_valid + self._watchdog_ms / 1000.0
                if now >= deadline and any(t.t_end > deadline for t in self._active.values()):
                    self._stop_all(now)
                    self._stops.append(EmulatedStop(now, "watchdog"))
                    self._changed.notify_all()
                    return
            for contact in [c for c, t in self._active.items() if t.t_end <= now]:
                del self._active[contact]  # ended by itself

    def _handle(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return
        now = time.monotonic()
        text = line.decode("ascii", "replace")
        with self._changed:
            self._commands.append(text[:MAX_LINE])
            if len(line) >= MAX_LINE:
                reply = "ERR 2 line too long"
            else:
                body = unframe(line)
                if body is None:
                    reply = "ERR 1 checksum"
                else:
                    self._last_valid = now
                    reply = self._execute(body.decode("ascii", "replace").split(" "), now)
            silent = self._silent
            corrupt = self._corrupt_next and not silent
            if corrupt:
                self._corrupt_next = False
            self._changed.notify_all()
        if not silent:
            self._send(reply.encode("ascii"), corrupt)
        if self.on_line is not None:
            self.on_line(text, None if silent else reply)

    def _execute(self, words: list[str], now: float) -> str:
        """Obey one valid command (lock held); return the reply's body."""
        command, args = words[0], words[1:]
        if command == "PING" and not args:
            return "OK"
        if command == "STOP" and not args:
            self._stop_all(now)
            self._stops.append(EmulatedStop(now, "command"))
            return "OK"
        if command == "HELLO" and not args:
            return f"OK HELLO {self.model} {self.firmware} {self.n_contacts}"
        if command == "WDT" and len(args) == 1:
            value = _uint(args[0])
            if value is None or value > 65535:
                return f"ERR 2 bad watchdog period {args[0][:16]}"
            self._watchdog_ms = value
            return "OK"
        if command == "TRAIN":
            return self._train(args, now)
        if command in ("PING", "STOP", "HELLO", "WDT"):
            return f"ERR 2 wrong number of arguments to {command}"
        return f"ERR 2 unknown command {command[:16]}"

    def _train(self, args: list[str], now: float) -> str:
        if len(args) != len(TRAIN_FIELDS):
            return f"ERR 2 TRAIN takes {len(TRAIN_FIELDS)} arguments, got {len(args)}"
        values = [_uint(a) for a in args]
        for name, arg, value in zip(TRAIN_FIELDS, args, values):
            if value is None:
                return f"ERR 2 bad {name} {arg[:16]}"
        fields = dict(zip(TRAIN_FIELDS, values))
        if fields["contact"] >= self.n_contacts:
            return f"ERR 3 no contact {fields['contact']} (the device has {self.n_contacts})"
        for name in ("freq_mhz", "n_pulses", "width_us", "phase2_width_us"):
            if fields[name] < 1:
                return f"ERR 2 {name} must be at least 1"
        if self._fail_next is not None:
            code, message = self._fail_next
            self._fail_next = None
            return f"ERR {code} {message}"
        self._seq += 1
        # the contact keeps its pulse clock: a train starts at the next pulse slot of the
        # train it replaces (or that was stopped), never closer than that train's period
        start = max(now, self._next_slot(fields["contact"], now))
        train = EmulatedTrain(seq=self._seq, t_start=start, **fields)  # type: ignore[arg-type]
        self._trains.append(train)
        self._active[train.contact] = train  # replaces a train still running there
        return f"OK {self._seq}"

    def _next_slot(self, contact: int, now: float) -> float:
        """When the contact's next pulse would be: its running train's, or a stopped one's."""
        running = self._active.get(contact)
        if running is not None and running.t_end > now:
            return _slot(running, now)
        return self._slots.get(contact, now)

    def _stop_all(self, now: float) -> None:
        for contact, train in self._active.items():
            self._slots[contact] = _slot(train, now)
        self._active.clear()

    def _send(self, body: bytes, corrupt: bool) -> None:
        data = frame(body)
        if corrupt:
            wrong = (int(data[-3:-1], 16) ^ 0x5A) & 0xFF
            data = b"%s*%02X\n" % (body, wrong)
        try:
            os.write(self._master, data)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            pass  # nobody reads the port: the reply is lost, as on a real UART
        except OSError:
            pass


def _slot(train: EmulatedTrain, t: float) -> float:
    """The time of ``train``'s first pulse not delivered before ``t``."""
    period = 1000.0 / train.freq_mhz
    delivered = min(train.n_pulses, max(0, math.ceil((t - train.t_start) / period - 1e-9)))
    return train.t_start + delivered * period


def _uint(text: str) -> int | None:
    """An unsigned decimal below 2**32, or None."""
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        return None
    value = int(text)
    return value if value < UINT32_END else None


def main(argv: list[str] | None = None) -> int:
    """Run an emulated stimulator until Ctrl-C; print its port first."""
    parser = argparse.ArgumentParser(
        prog="python -m bci_runtime.drivers.serial_emulator",
        description="An emulated serial stimulator on a pseudo-terminal; give the port it "
                    "prints to the 'serial' stimulator driver (params: {port: ...}).")
    parser.add_argument("--contacts", type=int, default=4, help="contacts it has (default 4)")
    parser.add_argument("--verbose", action="store_true", help="print every line and reply")
    args = parser.parse_args(argv)

    def show(line: str, reply: str | None) -> None:
        print(f"> {line}\n< {reply if reply is not None else '(silent)'}", flush=True)

    def interrupt(signum: int, stack: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    signal.signal(signal.SIGTERM, interrupt)  # close the pty cleanly on `kill` too
    try:
        device = EmulatedStimulator(n_contacts=args.contacts,
                                    on_line=show if args.verbose else None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    with device:
        print(device.port, flush=True)
        print(f"emulated stimulator ({args.contacts} contacts) on {device.port}; Ctrl-C to stop",
              file=sys.stderr, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
