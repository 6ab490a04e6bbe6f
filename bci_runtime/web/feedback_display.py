"""The built-in feedback display: a local web page updated over a WebSocket.

:class:`FeedbackDisplay` serves one self-contained page (``static/feedback.html``)
at ``/`` and a WebSocket at ``/ws``. The runtime calls :meth:`FeedbackDisplay.show`
for every decision, from its hot path; the page draws the newest state on its
next animation frame: the cue in the centre, and the feedback as one bar per
class, a cursor in a square or one arrow per class. A big red button (also the
Escape key and the space bar) sends an emergency stop back to the runtime.

Threads
-------
``show()`` only stores a reference to the newest state and sets a
:class:`threading.Event` if it is not set already (at most once per frame): no
I/O, no JSON, no lock of ours. A *sender* thread waits on that event, encodes the
newest state once (intermediate states are dropped: latest wins) and hands the
text to every client, at most ``max_rate_hz`` times per second. Each client
has a *writer* thread of its own with a one-slot mailbox (latest wins again),
and its socket sends time out after ``send_timeout_s``: a slow client skips
states, a stuck one is dropped, and neither delays the others or the hot path.
The connection's own thread (from ``websockets``) reads what the page sends.

State fields (the mapping given to :meth:`FeedbackDisplay.show`)
----------------------------------------------------------------
All optional; unknown keys are ignored, non-finite numbers become ``null``.

``t`` : float
    Runtime clock (s) of the decision.
``cue`` : str or None
    The class the user is asked to imagine; ``None`` between trials (the page
    shows a ``+`` fixation cross).
``scores`` : sequence of float, shape (n_classes,)
    One probability or score per class, in the order of ``classes``. Bars use
    them as they are when all lie in [0, 1], else a softmax of them.
``decided`` : str or None
    The decoded class (highlighted arrow).
``cursor`` : sequence of 2 float
    ``[x, y]`` in -1..1 (y up) for the cursor style. Without it, and with two
    classes, the cursor's x is ``scores[1] - scores[0]``.
``armed`` : str or bool
    Actuator status for the status line ("stimulator armed"; a bool becomes
    "armed" / "disarmed").
``safety`` : str
    Safety status for the status line ("SAFE: stale input").

Messages (JSON text frames)
---------------------------
Server to page:

- ``{"type": "hello", "version": 1, "classes": [...], "style": "bar", "title": "...",
  "max_rate_hz": 60.0}``, first on every connection, then the newest state if any;
- ``{"type": "state", "seq": 17, "shown_at": <epoch s of show()>, "t": ..., "cue": ...,
  "scores": [...], "decided": ..., "cursor": [x, y] or null, "armed": ..., "safety": ...}``;
- ``{"type": "emergency_stopped", "source": "web page", "at": <epoch s>}`` after the
  emergency-stop callback returned;
- ``{"type": "emergency_stop_failed", "reason": "..."}`` when there is no callback or
  it raised (the page then tells the user to use the hardware stop).

Page to server: ``{"type": "emergency_stop"}``. Anything else is logged and ignored.

Security: the server answers only loopback ``Host`` names when bound to a
loopback address, and accepts WebSocket connections only from its own origin
(or from clients that send no ``Origin``, i.e. not a browser page).
"""

from __future__ import annotations

import collections
import errno
import importlib.resources
import ipaddress
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from bci_runtime.errors import ConfigError, DependencyError, RunError

log = logging.getLogger(__name__)

#: the display styles the page can draw
STYLES = ("bar", "cursor", "arrows")
#: version of the message formats, sent in ``hello``
PROTOCOL_VERSION = 1
#: the largest message accepted from a page (bytes)
MAX_CLIENT_MESSAGE = 64 * 1024
#: bad messages logged per client before going quiet
_BAD_MESSAGES_LOGGED = 10
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class FeedbackDisplay:
    """Serves the feedback page and pushes the newest decision state to it.

    Parameters
    ----------
    host : str
        Interface to listen on; the default serves this machine only.
    port : int
        TCP port; 0 takes any free port (see :attr:`url`).
    max_rate_hz : float
        At most this many state messages per second go to each page (display rate).
    style : {"bar", "cursor", "arrows"}
        How the page shows the decoder's output.
    classes : sequence of str
        Class names, in the order of ``scores``.
    title : str
        Page title.
    on_emergency_stop : callable, optional
        ``on_emergency_stop(source)`` with ``source="web page"``, called at once
        from the connection's thread when the page's stop button is pressed. It
        must be thread-safe and quick (it forces the safe state).
    send_timeout_s : float
        A client whose socket accepts nothing for this long is dropped.

    Raises
    ------
    ConfigError
        A parameter is out of range.

    Examples
    --------
    >>> with FeedbackDisplay(classes=["left", "right"]) as display:  # doctest: +SKIP
    ...     print(display.url)
    ...     display.show({"t": 1.0, "cue": "left", "scores": [0.7, 0.3]})
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_rate_hz: float = 60.0,
                 style: Literal["bar", "cursor", "arrows"] = "bar",
                 classes: Sequence[str] = (), title: str = "bci-runtime feedback",
                 on_emergency_stop: Callable[[str], None] | None = None,
                 send_timeout_s: float = 2.0) -> None:
        self.host = _check_host(host)
        self.port = _check_port(port)
        self.max_rate_hz = _check_positive("max_rate_hz", max_rate_hz)
        self.send_timeout_s = _check_positive("send_timeout_s", send_timeout_s)
        if style not in STYLES:
            raise ConfigError(f"feedback display: unknown style {style!r}",
                              hint=f"use one of {', '.join(STYLES)}")
        self.style = style
        self.classes = _check_classes(classes)
        if not isinstance(title, str):
            raise ConfigError(f"feedback display: title must be a string, got {title!r}")
        self.title = title
        self.on_emergency_stop = on_emergency_stop

        # hot path: show() writes _latest and sets _wake, nothing else
        self._seq = itertools.count(1)
        self._latest: tuple[int, float, Mapping[str, Any]] | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()

        self._lock = threading.Lock()  # clients, newest encoded state, counters
        self._clients: set[_Client] = set()
        self._last_encoded: str | None = None
        self._counts = collections.Counter({
            "states_broadcast": 0, "states_dropped": 0, "states_invalid": 0,
            "messages_sent": 0, "messages_skipped": 0, "clients_dropped": 0,
            "bad_messages": 0, "emergency_stops": 0})

        self._page: bytes | None = None
        self._server: Any = None
        self._bound_port: int | None = None
        self._server_thread: threading.Thread | None = None
        self._sender_thread: threading.Thread | None = None
        self._closed = False
        self._closed_event = threading.Event()
        self._handler_threads: set[int] = set()  # idents of the connection threads
        self._hello = json.dumps({
            "type": "hello", "version": PROTOCOL_VERSION, "classes": list(self.classes),
            "style": self.style, "title": self.title, "max_rate_hz": self.max_rate_hz,
        }, separators=(",", ":"))

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FeedbackDisplay:
        """Listen and serve in background threads; returns ``self``.

        Raises
        ------
        ConfigError
            The port is in use or the host cannot be bound.
        DependencyError
            ``websockets`` is not installed.
        RunError
            The display was closed already, or its page is missing from the install.
        """
        if self._closed:
            raise RunError("feedback display: start() after close()",
                           hint="create a new FeedbackDisplay")
        if self._server is not None:
            return self
        serve = _import_serve()
        self._page = _load_page()
        sock = self._bind()
        self._bound_port = sock.getsockname()[1]
        self._server = serve(
            self._handle, sock=sock, process_request=self._process_request,
            compression=None,  # small messages on a local link: not worth the CPU
            max_size=MAX_CLIENT_MESSAGE, close_timeout=1.0, server_header=None,
            logger=logging.getLogger(__name__ + ".websockets"))
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, name="feedback-display-server", daemon=True)
        self._sender_thread = threading.Thread(
            target=self._send_loop, name="feedback-display-sender", daemon=True)
        self._server_thread.start()
        self._sender_thread.start()
        log.info("feedback display at %s", self.url)
        return self

    def close(self) -> None:
        """Stop serving, close every connection and join the threads (idempotent).

        Returns once everything is closed; called from ``on_emergency_stop`` (a
        connection's thread, which closing must join) it closes in the background.
        """
        own_thread = threading.get_ident() in self._handler_threads
        with self._lock:
            first = not self._closed
            self._closed = True
        if first and own_thread:
            threading.Thread(target=self._close, name="feedback-display-close",
                             daemon=True).start()
        elif first:
            self._close()
        elif not own_thread:
            self._closed_event.wait()

    def _close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._sender_thread is not None:
            self._sender_thread.join()
        with self._lock:
            clients = tuple(self._clients)
        for client in clients:
            client.stop()
            if client.sending_since is not None:  # stuck in a send: do not wait for it
                client.abort()
        if self._server is not None:
            self._server.shutdown()  # closes connections, joins the connection threads
        if self._server_thread is not None:
            self._server_thread.join()
        for client in clients:
            client.join()
        self._closed_event.set()

    def __enter__(self) -> FeedbackDisplay:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Address of the page, ``http://HOST:PORT/`` (after :meth:`start`)."""
        if self._bound_port is None:
            raise RunError("feedback display: no url before start()",
                           hint="call start() (or use the display as a context manager)")
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._bound_port}/"

    # -- hot path --------------------------------------------------------------------

    def show(self, state: Mapping[str, Any]) -> None:
        """Display ``state`` (see the module docstring for its fields).

        O(1) and never blocks: keeps a reference to the mapping (do not mutate
        it afterwards) and wakes the sender thread. States arriving faster than
        ``max_rate_hz`` replace each other; the newest is always sent.

        Parameters
        ----------
        state : mapping
            ``t``, ``cue``, ``scores``, ``decided``, ``cursor``, ``armed``, ``safety``.
        """
        self._latest = (next(self._seq), time.time(), state)
        if not self._wake.is_set():
            self._wake.set()

    def stats(self) -> dict[str, int]:
        """Counters since start.

        Returns
        -------
        dict
            ``states_shown`` (calls of :meth:`show`), ``states_broadcast`` (encoded
            and handed to the clients), ``states_dropped`` (replaced by a newer
            state before encoding), ``states_invalid`` (could not be encoded),
            ``messages_sent`` (frames written to clients, all types),
            ``messages_skipped`` (states a slow client skipped), ``clients_connected``,
            ``clients_dropped`` (too slow, disconnected), ``bad_messages`` (from
            pages, ignored), ``emergency_stops``.
        """
        latest = self._latest
        with self._lock:
            out = dict(self._counts)
            out["clients_connected"] = len(self._clients)
        out["states_shown"] = latest[0] if latest is not None else 0
        return out

    # -- sender ----------------------------------------------------------------------

    def _send_loop(self) -> None:
        period = 1.0 / self.max_rate_hz
        last_seq = 0
        next_at = 0.0
        while True:
            self._wake.wait()
            if self._closing.is_set():
                return
            delay = next_at - time.monotonic()
            if delay > 0 and self._closing.wait(delay):  # a deadline, not a poll
                return
            self._wake.clear()  # before reading _latest: a later show() sets it again
            if self._closing.is_set():  # close() set both between the wake-up and the clear
                return
            latest = self._latest
            if latest is None or latest[0] == last_seq:
                continue
            seq, shown_at, state = latest
            dropped = max(0, seq - last_seq - 1)
            last_seq = seq
            next_at = time.monotonic() + period
            try:
                text = _encode_state(seq, shown_at, state)
            except Exception as exc:  # never let a bad state kill the display
                with self._lock:
                    self._counts["states_dropped"] += dropped
                    self._counts["states_invalid"] += 1
                    n_invalid = self._counts["states_invalid"]
                if n_invalid == 1 or n_invalid % 1000 == 0:
                    log.warning("feedback display: cannot show state #%d (%d so far): %s",
                                seq, n_invalid, exc)
                continue
            with self._lock:
                self._counts["states_dropped"] += dropped
                self._counts["states_broadcast"] += 1
                self._last_encoded = text
                clients = tuple(self._clients)
            for client in clients:
                client.offer_state(text)

    def _broadcast_control(self, text: str) -> None:
        with self._lock:
            clients = tuple(self._clients)
        for client in clients:
            client.offer_control(text)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # -- server ----------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            return socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            if exc.errno in _ADDR_IN_USE:
                raise ConfigError(
                    f"feedback display: port {self.port} on {self.host} is already in use",
                    hint="set `port: 0` to take any free port, or choose another port",
                ) from exc
            raise ConfigError(
                f"feedback display: cannot listen on {self.host}:{self.port}: {exc}",
                hint="check `host` (an address of this machine, e.g. 127.0.0.1) and `port`",
            ) from exc

    def _process_request(self, connection: Any, request: Any) -> Any:
        """Answer plain HTTP GETs; let WebSocket upgrades on ``/ws`` through."""
        path = request.path.split("?", 1)[0]
        host = request.headers.get("Host", "")
        if self._loopback_only() and not _is_loopback_host(host):
            log.warning("feedback display: refused a request for Host %r", host)
            return connection.respond(403, "forbidden host\n")
        if path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and origin.lower() != f"http://{host}".lower():
                log.warning("feedback display: refused a WebSocket from origin %r", origin)
                return connection.respond(403, "forbidden origin\n")
            return None
        if path in ("/", "/index.html"):
            response = connection.respond(200, "")
            response.body = self._page
            headers = response.headers
            for name in ("Content-Type", "Content-Length"):
                del headers[name]
            headers["Content-Type"] = "text/html; charset=utf-8"
            headers["Content-Length"] = str(len(self._page or b""))
            headers["Cache-Control"] = "no-store"
            headers["X-Content-Type-Options"] = "nosniff"
            headers["Content-Security-Policy"] = (
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")
            return response
        return connection.respond(404, "not found\n")

    def _loopback_only(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def _handle(self, connection: Any) -> None:
        """One WebSocket connection: register, then read what the page sends."""
        try:
            connection.socket.settimeout(self.send_timeout_s)
        except OSError:
            return
        client = _Client(connection, self)
        client.offer_control(self._hello)  # before registering: hello comes first
        with self._lock:
            if self._closing.is_set():
                return
            self._clients.add(client)
            self._handler_threads.add(threading.get_ident())
            last = self._last_encoded
        if last is not None:
            client.offer_state(last)
        client.start()
        log.info("feedback display: client %s connected", client.name)
        try:
            for message in connection:
                self._on_message(client, message)
        except Exception as exc:  # ConnectionClosedError and friends: the client is gone
            log.debug("feedback display: client %s: %s", client.name, exc)
        finally:
            with self._lock:
                self._clients.discard(client)
                self._handler_threads.discard(threading.get_ident())
            client.stop()
            log.info("feedback display: client %s disconnected", client.name)

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                raise ValueError("binary frame")
            data = json.loads(message)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind != "emergency_stop":
                raise ValueError(f"unknown message type {kind!r}")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self._count("bad_messages")
            client.bad_messages += 1
            if client.bad_messages <= _BAD_MESSAGES_LOGGED:
                log.warning("feedback display: ignored a message from %s (%s): %.80r%s",
                            client.name, exc, message,
                            " (further ones not logged)"
                            if client.bad_messages == _BAD_MESSAGES_LOGGED else "")
            return
        self._emergency_stop(client)

    def _emergency_stop(self, client: _Client) -> None:
        self._count("emergency_stops")
        log.warning("feedback display: EMERGENCY STOP pressed on the web page (%s)",
                    client.name)
        callback = self.on_emergency_stop
        if callback is None:
            log.error("feedback display: emergency stop pressed but no on_emergency_stop "
                      "callback is set; nothing was stopped")
            reply = {"type": "emergency_stop_failed",
                     "reason": "this display is not connected to any emergency stop"}
        else:
            try:
                callback("web page")
            except Exception as exc:
                log.exception("feedback display: the emergency-stop callback failed")
                reply = {"type": "emergency_stop_failed", "reason": f"{type(exc).__name__}: {exc}"}
            else:
                reply = {"type": "emergency_stopped", "source": "web page", "at": time.time()}
        self._broadcast_control(json.dumps(reply, separators=(",", ":")))


class _Client:
    """One connected page: a writer thread with a one-slot state mailbox."""

    def __init__(self, connection: Any, display: FeedbackDisplay) -> None:
        self.connection = connection
        self.display = display
        try:
            address = connection.remote_address
            self.name = f"{address[0]}:{address[1]}"
        except Exception:
            self.name = "?"
        self.bad_messages = 0
        self.sending_since: float | None = None
        self._controls: collections.deque[str] = collections.deque()
        self._state: str | None = None
        self._slot_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"feedback-display-writer-{self.name}")

    def start(self) -> None:
        self._thread.start()

    def offer_state(self, text: str) -> None:
        with self._slot_lock:
            skipped = self._state is not None
            self._state = text
        if skipped:
            self.display._count("messages_skipped")
        self._wake.set()

    def offer_control(self, text: str) -> None:
        self._controls.append(text)
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def abort(self) -> None:
        """Break a send stuck on a full socket (the peer reads nothing)."""
        try:
            self.connection.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def join(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.display.send_timeout_s + 1.0)

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            with self._slot_lock:
                state, self._state = self._state, None
            messages = []
            while self._controls:
                messages.append(self._controls.popleft())
            if state is not None:
                messages.append(state)
            for text in messages:
                if not self._send(text):
                    return

    def _send(self, text: str) -> bool:
        self.sending_since = time.monotonic()
        try:
            self.connection.send(text)
        except Exception as exc:  # ConnectionClosed (its cause may be a send timeout)
            if isinstance(exc.__cause__, TimeoutError) and not self.display._closing.is_set():
                self.display._count("clients_dropped")
                log.warning("feedback display: client %s read nothing for %.1f s; dropped",
                            self.name, self.display.send_timeout_s)
            self.stop()
            return False
        finally:
            self.sending_since = None
        self.display._count("messages_sent")
        return True


_ADDR_IN_USE = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}


def _encode_state(seq: int, shown_at: float, state: Mapping[str, Any]) -> str:
    """The ``state`` message for one shown state, as JSON text."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a state must be a mapping, got {type(state).__name__}")
    cursor = state.get("cursor")
    if cursor is not None:
        cursor = [_number(v) for v in _as_list(cursor)]
        if len(cursor) != 2:
            raise ValueError(f"cursor must be [x, y], got {len(cursor)} values")
    scores = state.get("scores")
    armed = state.get("armed")
    if isinstance(armed, bool):
        armed = "armed" if armed else "disarmed"
    message = {
        "type": "state", "seq": seq, "shown_at": shown_at,
        "t": _number(state.get("t")),
        "cue": _text(state.get("cue")),
        "scores": [] if scores is None else [_number(v) for v in _as_list(scores)],
        "decided": _text(state.get("decided")),
        "cursor": cursor,
        "armed": _text(armed),
        "safety": _text(state.get("safety")),
    }
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def _as_list(values: Any) -> list[Any]:
    if hasattr(values, "tolist"):  # numpy arrays
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        values = list(values)
    return list(values)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _check_host(host: Any) -> str:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"feedback display: host must be a non-empty string, got {host!r}",
                          hint="use 127.0.0.1 to serve this machine only")
    return host


def _check_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"feedback display: port must be an integer in 0..65535, got {port!r}",
                          hint="use `port: 0` to take any free port")
    return port


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"feedback display: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_classes(classes: Any) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(f"feedback display: classes must be a list of names, got {classes!r}",
                          hint='for example classes: ["left", "right"]')
    names = tuple(classes)
    bad = [c for c in names if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ConfigError(f"feedback display: class names must be non-empty strings, got {bad!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"feedback display: class names repeat: {list(names)}")
    return names


def _is_loopback_host(host_header: str) -> bool:
    host = host_header.lower()
    if host.startswith("["):
        name = host[:host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0]
    return name in _LOOPBACK_NAMES


def _load_page() -> bytes:
    try:
        return (importlib.resources.files("bci_runtime.web") / "static"
                / "feedback.html").read_bytes()
    except OSError as exc:
        raise RunError("feedback display: the page static/feedback.html is missing",
                       hint="reinstall bci-runtime (the package data was not installed)") from exc


def _import_serve() -> Callable[..., Any]:
    try:
        from websockets.sync.server import serve
    except ImportError as exc:
        raise DependencyError("the feedback display needs the websockets package",
                              hint="pip install 'websockets>=13'") from exc
    return serve
