"""The operator's live status panel of ``bci run``: is the session healthy, at a glance.

:class:`StatusPanel` draws a :class:`~bci_runtime.run_status.RunStatus` snapshot as a
rich ``Live`` panel on stderr, refreshed a few times a second from its own thread:
the streams with their nominal and measured rates, samples, dropped samples, bad
chunks and state; the decoders' serving version; the feedback's running accuracy;
the end-to-end latency of the last seconds; the stimulators' state; the last
notable events; and the keys the operator has.

While the panel runs, what the process writes to ``sys.stderr`` (the feedback's
trial lines, warnings) is printed above the panel instead of through it. Those
writes only queue: the panel's thread prints them at its next refresh, so a node
that prints on the hot path never waits for the panel to be drawn.

Use it only on a terminal, and not with ``--json`` (:func:`should_show`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.run_status import RunStatus

log = logging.getLogger(__name__)
QUEUED_WRITES = 10_000  # writes waiting for the next refresh, at most (the oldest go)
STOP_JOIN_S = 2.0

STREAM_STYLES = {"ok": "green", "waiting": "dim", "ended": "dim", "remote": "cyan",
                 "stalled": "bold yellow", "slow": "yellow", "fast": "yellow",
                 "silent": "bold red", "lost": "bold red", "blocked": "bold red"}
STIM_STYLES = {"armed": "bold red", "disarmed": "dim", "stopped": "yellow"}
STATUS_STYLES = {"starting": "dim", "running": "green", "stopping": "yellow",
                 "completed": "green", "stopped": "yellow", "failed": "bold red"}
LEVEL_STYLES = {"error": "bold red", "warning": "yellow", "info": ""}
FOOTER_ACTUATORS = "Ctrl-C stops · e/space emergency stop · a arm"
FOOTER = "Ctrl-C stops"


def should_show(json_mode: bool, stream: TextIO | None = None) -> bool:
    """Whether ``bci run`` shows the panel: not with ``--json``, only on a terminal.

    Parameters
    ----------
    json_mode : bool
        ``--json`` was given (the output is for a program).
    stream : text stream, optional
        Where the panel would go; default ``sys.stderr``.

    Returns
    -------
    bool
    """
    if json_mode or os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _QueuedStream:
    """A text stream whose writes queue while the panel runs, and pass through otherwise.

    ``deque.append`` never blocks, so a thread that writes (a node on the hot path)
    never waits for the panel. ``rich_proxied_file`` lets rich's consoles find the
    real stream behind it.
    """

    def __init__(self, target: TextIO) -> None:
        self.rich_proxied_file = target
        self.queue: deque[str] = deque(maxlen=QUEUED_WRITES)
        self.active = False

    def write(self, text: str) -> int:
        if self.active:
            self.queue.append(text)
        else:
            self.rich_proxied_file.write(text)
        return len(text)

    def flush(self) -> None:
        if not self.active:
            self.rich_proxied_file.flush()

    def isatty(self) -> bool:
        return self.rich_proxied_file.isatty()

    def fileno(self) -> int:
        return self.rich_proxied_file.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self.rich_proxied_file, "encoding", "utf-8")


class StatusPanel:
    """Live status panel of a run, drawn on stderr from its own thread.

    Parameters
    ----------
    status : RunStatus
        What to show (attached to the runner before :meth:`start`).
    console : rich.console.Console, optional
        Where to draw; default ``Console(stderr=True)``.
    refresh_hz : float
        Redraws per second.

    Examples
    --------
    >>> with StatusPanel(status):          # doctest: +SKIP
    ...     result = runner.run()
    """

    def __init__(self, status: RunStatus, console: Console | None = None,
                 refresh_hz: float = 4.0) -> None:
        if not refresh_hz > 0:
            raise ConfigError(f"status panel refresh_hz must be > 0, got {refresh_hz}",
                              hint="use e.g. 4 (redraws per second)")
        self.status = status
        self.console = console if console is not None else Console(stderr=True)
        self.refresh_hz = float(refresh_hz)
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # start/stop and drawing; the graph never takes it
        self._partial = ""
        self._render_failed = False
        self._out = _QueuedStream(sys.stderr)
        self._saved: dict[str, Any] = {}
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self.last_snapshot: dict[str, Any] | None = None

    @property
    def out(self) -> TextIO:
        """A stream that prints above the panel while it runs (e.g. the operator console's).

        Writes only queue while the panel runs; before and after, they go straight
        to stderr.
        """
        return self._out  # type: ignore[return-value]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> StatusPanel:
        """Show the panel and redraw it ``refresh_hz`` times a second; returns self."""
        with self._lock:
            if self._live is not None:
                return self
            self._stop.clear()
            self._capture_streams()
            live = Live(self._render_safely(), console=self.console, auto_refresh=False,
                        transient=False, redirect_stdout=False, redirect_stderr=False)
            try:
                live.start(refresh=True)
            except Exception as exc:  # e.g. the terminal is gone
                self._release_streams()
                self._print_queued(None)
                raise RunError(f"the status panel cannot start: {exc}",
                               hint="run with --json, or with stderr not on a terminal") \
                    from exc
            self._live = live
        self._thread = threading.Thread(target=self._run, name="status-panel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Draw the last frame, leave it on screen, and give the streams back."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_JOIN_S)
        with self._lock:
            live, self._live = self._live, None
            if live is None:
                return
            try:
                self._print_queued(live)
                live.update(self._render_safely(), refresh=True)
            finally:
                live.stop()
                self._release_streams()
                self._print_queued(None)  # anything written in between

    def __enter__(self) -> StatusPanel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- drawing ---------------------------------------------------------------------------
    def render(self, snapshot: dict[str, Any] | None = None) -> RenderableType:
        """The panel for ``snapshot`` (default: a new one from the status)."""
        if snapshot is None:
            snapshot = self.status.snapshot()
        self.last_snapshot = snapshot
        return render_status(snapshot)

    def _run(self) -> None:
        period = 1.0 / self.refresh_hz
        while not self._stop.wait(period):
            with self._lock:
                live = self._live
                if live is None:
                    return
                self._print_queued(live)
                live.update(self._render_safely(), refresh=True)

    def _render_safely(self) -> RenderableType:
        try:
            return self.render()
        except Exception as exc:  # a display bug must never stop the run
            if not self._render_failed:
                self._render_failed = True
                log.warning("the status panel cannot be drawn: %r", exc, exc_info=True)
            return Text(f"status unavailable: {exc!r}", style="red")

    def _print_queued(self, live: Live | None) -> None:
        """Print the complete lines written since the last refresh, above the panel."""
        queue = self._out.queue
        parts = [self._partial]
        while True:
            try:
                parts.append(queue.popleft())
            except IndexError:
                break
        text = "".join(parts)
        if live is None:  # the panel is gone: hand everything over as it is
            self._partial = ""
            if text:
                self._out.rich_proxied_file.write(text)
                self._out.rich_proxied_file.flush()
            return
        lines, newline, self._partial = text.rpartition("\n")
        if newline:
            live.console.print(Text.from_ansi(lines), soft_wrap=True, highlight=False)

    # -- streams ---------------------------------------------------------------------------
    def _capture_streams(self) -> None:
        """Queue writes to stderr (and logging to it) while the panel runs."""
        real = sys.stderr
        self._out.rich_proxied_file = real
        self._out.active = True
        self._saved = {"stderr": real}
        sys.stderr = self._out  # type: ignore[assignment]
        self._handlers = []
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and handler.stream is real:
                self._handlers.append((handler, handler.setStream(self._out)))  # type: ignore[arg-type]

    def _release_streams(self) -> None:
        self._out.active = False
        real = self._saved.get("stderr")
        if real is not None and sys.stderr is self._out:
            sys.stderr = real
        for handler, previous in self._handlers:
            if handler.stream is self._out:
                handler.setStream(previous)
        self._handlers = []
        self._saved = {}


# -- rendering ---------------------------------------------------------------------------------
# Lines are laid out here, column widths included, rather than by rich tables: drawing
# them costs about a fourth (~1 ms instead of ~4 ms a frame), and the panel's thread
# holds the interpreter lock while it draws.
Cell = Text | str


def render_status(s: dict[str, Any]) -> RenderableType:
    """Draw a :meth:`RunStatus.snapshot` as the panel (a rich renderable).

    Parameters
    ----------
    s : dict
        A snapshot.

    Returns
    -------
    rich.console.RenderableType
    """
    lines: list[Text] = [_header(s)]
    lines += _streams(s["streams"])
    lines += _loop(s)
    if s["stimulators"]:
        lines += _stimulators(s["stimulators"])
    if s["last_events"]:
        lines += _events(s["last_events"])
    body = Text("\n", no_wrap=True, overflow="ellipsis").join(lines)
    footer = FOOTER_ACTUATORS if s["has_actuators"] else FOOTER
    border = "red" if s["status"] == "failed" else (
        "red" if any(r["state"] == "armed" for r in s["stimulators"]) else "blue")
    return Panel(body, title=f"[bold]bci run[/bold] · {s['pipeline']}",
                 title_align="left", subtitle=footer, subtitle_align="left",
                 border_style=border)


def _columns(rows: list[list[Cell]], right: set[int], header: list[str] | None = None,
             title: str | None = None, gap: int = 2) -> list[Text]:
    """Rows of cells as aligned lines; columns in ``right`` are right-aligned."""
    table = ([list(header)] if header else []) + rows
    widths = [max(len(_plain(row[i])) for row in table) for i in range(len(table[0]))]
    lines = [Text(title, style="bold")] if title else []
    for k, row in enumerate(table):
        line = Text(style="dim" if header and k == 0 else "")
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - len(_plain(cell)))
            if i:
                line.append(" " * gap)
            if i in right:
                line.append(pad)
            if isinstance(cell, str):
                line.append(cell)
            else:
                line.append_text(cell)
            if i not in right and i < len(row) - 1:
                line.append(pad)
        lines.append(line)
    return lines


def _plain(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell.plain


def _header(s: dict[str, Any]) -> Text:
    status = s["status"]
    text = Text()
    text.append(status, style=STATUS_STYLES.get(status, ""))
    if s.get("reason") and s["reason"] != status:
        text.append(f" ({s['reason']})", style="dim")
    text.append(f" · {s['clock']} clock")
    if s["elapsed_s"] is not None:
        text.append(f" · {_clock(s['elapsed_s'])}")
        if s["duration_s"]:
            text.append(f" / {_clock(s['duration_s'])}")
        if s["remaining_s"] is not None:
            text.append(f" · {s['remaining_s']:.0f} s left")
    events = s["events"]
    problems = [f"{label} {events[k]}" for k, label in
                (("failures", "failures"), ("stalls", "stalls"), ("dropped", "dropped samples"),
                 ("bad_chunks", "bad chunks"), ("safe_states", "safe states"),
                 ("emergency_stops", "emergency stops")) if events.get(k)]
    if problems:
        text.append(" · " + ", ".join(problems), style="yellow")
    if s.get("events_overflowed"):
        text.append(" · event flood: counts are lower bounds", style="red")
    return text


def _streams(rows: list[dict[str, Any]]) -> list[Text]:
    cells: list[list[Cell]] = []
    for r in rows:
        nominal, measured = r["nominal_hz"], r["measured_hz"]
        rate = Text(f"{nominal:g} / " if nominal else "irregular / ")
        if measured is None:
            rate.append("—", style="dim")
        else:
            close = not nominal or abs(measured - nominal) <= 0.1 * nominal
            rate.append(f"{measured:.1f}", style="green" if close else "yellow")
        state = Text(r["state"], style=STREAM_STYLES.get(r["state"], ""))
        if r.get("reconnects"):
            state.append(f" ({r['reconnects']} reconnects)", style="dim")
        cells.append([r["name"], r["stream"] or "—", rate, _count(r["samples"]),
                      _problem(r["dropped"]), _problem(r["bad_chunks"]),
                      _problem(r["stalls"]), state])
    if not cells:
        return [Text("streams", style="bold"), Text("no source", style="dim")]
    return _columns(cells, right={2, 3, 4, 5, 6},
                    header=["source", "stream", "rate Hz (nominal / now)", "samples", "dropped",
                            "bad", "stalls", "state"], title="streams")


def _loop(s: dict[str, Any]) -> list[Text]:
    """One line per decoder and feedback sink, and the end-to-end latency."""
    rows: list[list[Cell]] = [[Text("decoder", style="bold"), r["name"], _decoder_line(r)]
                              for r in s["decoders"]]
    rows += [[Text("feedback", style="bold"), r["name"], _feedback_line(r)]
             for r in s["feedback"]]
    rows.append([Text("latency", style="bold"), "end-to-end", _latency_line(s["latency_ms"])])
    return _columns(rows, right=set())


def _decoder_line(r: dict[str, Any]) -> Text:
    state = r["state"] or "—"
    text = Text(state, style="green" if state == "serving" else "yellow" if state in (
        "calibrating", "fitting") else "")
    if r["version"] is not None:
        text.append(f" v{r['version']}")
        if r.get("versions"):
            text.append(f" ({r['versions']} versions)", style="dim")
    if r.get("candidate") is not None and not state.startswith("shadow"):
        text.append(f" · v{r['candidate']} in shadow")
    text.append(f" · {r['swaps']} swaps · ")
    text.append(f"{r['rollbacks']} rollbacks", style="yellow" if r["rollbacks"] else "")
    if r.get("drifts"):
        text.append(f" · {r['drifts']} drift recalibrations", style="yellow")
    if r["cv_accuracy"] is not None:
        text.append(f" · cross-validated {r['cv_accuracy']:.2f}")
    return text


def _feedback_line(r: dict[str, Any]) -> Text:
    chance = r["chance"]
    text = Text(f"{_count(r['decisions'])} decisions · accuracy ")
    text.append_text(_accuracy(r["accuracy"], chance))
    if chance is not None:
        text.append(f" (chance {chance:.2f})", style="dim")
    text.append(f" · {_count(r['trials_scored'])} trials, accuracy ")
    text.append_text(_accuracy(r["trial_accuracy"], chance))
    return text


def _latency_line(lat: dict[str, Any]) -> Text:
    if lat["p50"] is None:
        return Text("no output yet" if not lat["total"] else "no output in the last seconds",
                    style="dim")
    text = Text(f"p50 {lat['p50']:.2f} · p99 {lat['p99']:.2f} · max {lat['max']:.2f} ms")
    window = f" in the last {lat['window_s']:.0f} s" if lat.get("window_s") else ""
    text.append(f" · {_count(lat['count'])} outputs{window}", style="dim")
    return text


def _stimulators(rows: list[dict[str, Any]]) -> list[Text]:
    cells: list[list[Cell]] = []
    for r in rows:
        state = r["state"]
        cells.append([r["name"], Text(state.upper() if state == "armed" else state,
                                      style=STIM_STYLES.get(state, "")),
                      _count(r["requests"]), _problem(r["clamped"]), _problem(r["rejected"]),
                      _problem(r["stalls"]), _problem(r["safe_states"])])
    return _columns(cells, right={2, 3, 4, 5, 6}, title="stimulation",
                    header=["node", "state", "requests", "clamped", "rejected", "stalls",
                            "safe states"])


def _events(rows: list[dict[str, Any]]) -> list[Text]:
    cells: list[list[Cell]] = []
    for e in rows:
        kind = e["kind"] + (f" ×{e['repeat']}" if e["repeat"] > 1 else "")
        cells.append([e["time"], Text(kind, style=LEVEL_STYLES.get(e["level"], "")),
                      e["node"] or "", e["text"]])
    return _columns(cells, right=set(), title="last events",
                    header=["time", "event", "node", "what"])


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _problem(value: int | None) -> Text:
    if value is None:
        return Text("—", style="dim")
    return Text(f"{value:,}", style="bold yellow" if value else "dim")


def _accuracy(value: float | None, chance: float | None) -> Text:
    if value is None:
        return Text("—", style="dim")
    style = "" if chance is None else "green" if value >= chance + 0.1 else (
        "yellow" if value < chance else "")
    return Text(f"{value:.2f}", style=style)
