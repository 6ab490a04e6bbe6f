"""BrainFlow board source: EEG/ECoG from any board BrainFlow drives, in volts.

The board is named by its BrainFlow name (``synthetic``, ``CYTON_BOARD``...) or
id. The node reads the board's EEG (or ExG, for ECoG) rows, converts them from
BrainFlow's microvolts to volts, and maps the board's timestamp row to the
runtime clock. The board's package counter row is checked for gaps, which are
reported as ``samples_dropped`` events.

Two boards need no hardware: ``synthetic`` (BrainFlow's generator) and
``playback_file``, which plays a file written by BrainFlow (``DataFilter.write_file``
or a streamer) at the pace of its timestamps; ``master_board`` names the board
whose data the file holds. A playback that does not loop ends the source when the
file's last row has been delivered.

Timestamps
----------
BrainFlow stamps every sample with the host's wall clock (unix time, the clock of
:func:`time.time`) when the sample arrives (the synthetic and playback boards: when
they generate it). The runtime clock is LSL's monotonic ``local_clock()``. When the
board opens, the node measures the offset between the two clocks once (the
closest of a few back-to-back readings, so to a few microseconds) and adds it to
every timestamp for the rest of the run. The mapping is therefore exact as long as
the wall clock is not stepped during the run; an NTP slew (a few ppm) accumulates
as a small drift. Timestamps that fail to increase (a board stamping several
samples at once, a backward step of the wall clock) are repaired to increase by
1 µs and reported as a ``timestamps_not_increasing`` event.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from bci_runtime.chunk import AnyChunk, Chunk
from bci_runtime.errors import ConfigError, DependencyError, RunError, SpecMismatchError
from bci_runtime.node import BlockingSource, NodeContext, NodeParams, Output
from bci_runtime.spec import StreamSpec

log = logging.getLogger(__name__)

UV_TO_V = 1e-6  # BrainFlow delivers ExG rows in microvolts
MASTER_BOARDS = ("PLAYBACK_FILE_BOARD", "STREAMING_BOARD")  # boards that replay another board
MAX_BUFFER_SAMPLES = 86400 * 250  # BrainFlow's ring buffer limit (MAX_CAPTURE_SAMPLES)
REPAIR_STEP_S = 1e-6  # spacing given to timestamps that did not increase
MAX_GAP_EVENTS = 8  # per chunk; more gaps than this are summed into one event
PLAYBACK_QUIET_S = 2.0  # see BrainflowBoard.exhausted
_LOG_LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4, "off": 6}


def import_board_shim() -> Any:
    """Import ``brainflow.board_shim``, with an install hint when it cannot be loaded.

    Raises
    ------
    DependencyError
        When BrainFlow (or its native library) cannot be imported.
    """
    with warnings.catch_warnings():
        # brainflow finds its native library through pkg_resources (deprecated), on first use
        warnings.simplefilter("ignore")
        try:
            import brainflow.board_shim as board_shim

            loader = getattr(board_shim, "BoardControllerDLL", None)
            if loader is not None:  # load it now, warnings silenced, not at the first call
                loader.get_instance()
        except (ImportError, OSError) as exc:
            raise DependencyError(f"BrainFlow is not importable ({exc})",
                                  hint="pip install brainflow 'setuptools<81'") from exc
    return board_shim


def resolve_board(value: str | int, field: str = "board") -> tuple[int, str]:
    """Find a BrainFlow board by name or id.

    Names are case-insensitive and may omit the ``_BOARD`` suffix: ``synthetic``,
    ``SYNTHETIC_BOARD`` and ``-1`` all name the synthetic board.

    Parameters
    ----------
    value : str or int
        Board name or id.
    field : str
        Parameter name used in error messages.

    Returns
    -------
    (int, str)
        Board id and its ``BoardIds`` name.

    Raises
    ------
    ConfigError
        When no board has that name or id; the hint suggests close names.
    """
    board_ids = import_board_shim().BoardIds
    boards = {b.name: int(b.value) for b in board_ids if b.name != "NO_BOARD"}
    hint_all = "`bci devices --hardware` lists every board BrainFlow supports"
    text = str(value).strip()
    if isinstance(value, int) or re.fullmatch(r"[+-]?\d+", text):
        number = int(text)
        for name, board_id in boards.items():
            if board_id == number:
                return board_id, name
        raise ConfigError(f"'{field}': no BrainFlow board has id {number}", hint=hint_all)
    key = re.sub(r"[\s-]+", "_", text.upper())
    for candidate in (key, f"{key}_BOARD"):
        if candidate in boards:
            return boards[candidate], candidate
    # match on the names without their common suffix, so 'sinthetic' finds SYNTHETIC_BOARD
    short = {name.removesuffix("_BOARD"): name for name in boards}
    close = difflib.get_close_matches(key.removesuffix("_BOARD"), list(short), n=3, cutoff=0.6)
    suggestion = f"did you mean {', '.join(short[c] for c in close)}? " if close else ""
    raise ConfigError(f"'{field}': unknown BrainFlow board '{value}'",
                      hint=f"{suggestion}{hint_all}")


@dataclass(frozen=True)
class BoardLayout:
    """Where a board's data sit in BrainFlow's (n_rows, n_samples) array.

    Attributes
    ----------
    board_id, board_name : int, str
        The board opened.
    descr_id, descr_name : int, str
        The board whose description applies: the master board of a playback or
        streaming board, else the board itself.
    rows : slice or ndarray of int, shape (n_channels,)
        Signal rows; a slice when they are evenly spaced, so reading them is a view.
    n_channels : int
        Number of signal rows.
    timestamp_row : int
        Row of the unix timestamps.
    counter_row : int or None
        Row of the package counter, when the board has one.
    num_rows : int
        Rows per sample (the width of a playback file).
    srate : float
        Nominal rate in Hz.
    eeg_names : tuple of str
        Electrode labels from the description (may be empty).
    """

    board_id: int
    board_name: str
    descr_id: int
    descr_name: str
    rows: slice | NDArray[np.intp]
    n_channels: int
    timestamp_row: int
    counter_row: int | None
    num_rows: int
    srate: float
    eeg_names: tuple[str, ...]

    @property
    def label(self) -> str:
        """The board as named in messages."""
        if self.descr_id != self.board_id:
            return f"{self.board_name} (data of {self.descr_name})"
        return self.board_name


def _rows_index(rows: list[int]) -> slice | NDArray[np.intp]:
    """A slice when ``rows`` are evenly spaced (indexing is then a view), else an index array."""
    r = np.asarray(rows, dtype=np.intp)
    if len(r) == 1:
        return slice(int(r[0]), int(r[0]) + 1)
    step = int(r[1] - r[0])
    if step > 0 and np.all(np.diff(r) == step):
        return slice(int(r[0]), int(r[-1]) + 1, step)
    return r


def count_playback_rows(path: Path, num_rows: int) -> tuple[int, int, int | None]:
    """Count the rows BrainFlow's playback board will play from ``path``.

    The playback board splits each line on tabs (commas when a line has no tab)
    and skips lines whose field count is not the master board's row count; this
    counts the same way.

    Parameters
    ----------
    path : Path
        The playback file.
    num_rows : int
        Fields per line the master board needs.

    Returns
    -------
    (int, int, int or None)
        Lines that will play, lines in the file, and the field count of the
        first line that will not play (None if all will).
    """
    valid = total = 0
    first_bad: int | None = None
    with path.open("rb") as f:
        for line in f:
            total += 1
            sep = b"\t" if b"\t" in line else b","
            # BrainFlow drops a token that is just the newline (a line ending in a separator)
            fields = line.count(sep) + 1 - (line == b"\n" or line.endswith(sep + b"\n"))
            if fields == num_rows:
                valid += 1
            elif first_bad is None:
                first_bad = fields
    return valid, total, first_bad


def wall_to_runtime_offset(now: Any, readings: int = 9) -> float:
    """Offset to add to a unix timestamp to get the runtime clock's time.

    Reads the runtime clock, the wall clock and the runtime clock again, several
    times, and keeps the pair read closest together (the least disturbed by a
    thread switch).

    Parameters
    ----------
    now : callable
        The runtime clock's ``now``.
    readings : int
        Number of back-to-back readings.
    """
    best_span, best = float("inf"), 0.0
    for _ in range(readings):
        before = now()
        wall = time.time()
        after = now()
        if after - before < best_span:
            best_span, best = after - before, (before + after) / 2.0 - wall
    return best


def increasing_timestamps(ts: NDArray[np.float64], previous: float,
                          step: float = REPAIR_STEP_S) -> NDArray[np.float64]:
    """Repair ``ts`` so that it increases by at least ``step`` after ``previous``.

    The result is ``y[i] = max(ts[i], y[i-1] + step)`` with ``y[-1] = previous``,
    computed without a loop from its closed form
    ``y[i] = i * step + max_{j <= i} (x[j] - j * step)`` over ``x = [previous, ts]``.

    Parameters
    ----------
    ts : ndarray, shape (n_samples,)
        Timestamps that do not all increase.
    previous : float
        Timestamp of the sample before ``ts[0]`` (``-inf`` if none).
    step : float
        Smallest spacing given to repaired samples, in seconds.

    Returns
    -------
    ndarray, shape (n_samples,)
        Increasing timestamps.
    """
    if not np.isfinite(previous):
        previous = float(ts[0]) - step
    x = np.concatenate(([previous], ts))
    ramp = np.arange(x.shape[0], dtype=np.float64) * step
    return (np.maximum.accumulate(x - ramp) + ramp)[1:]


class BrainflowBoardParams(NodeParams):
    board: str | int = Field(..., description="BrainFlow board name (synthetic, playback_file, "
                             "CYTON_BOARD...; any case, '_BOARD' optional) or id")
    # BrainFlowInputParams: what the board needs to be found (see BrainFlow's board list)
    serial_port: str = Field("", description="serial port (/dev/ttyUSB0, COM3)")
    mac_address: str = Field("", description="Bluetooth MAC address")
    ip_address: str = Field("", description="IP address (Wi-Fi boards, streaming board)")
    ip_port: int = Field(0, ge=0, le=65535, description="IP port")
    serial_number: str = Field("", description="device serial number")
    other_info: str = Field("", description="board-specific extra information")
    timeout: int = Field(0, ge=0, description="seconds BrainFlow looks for the device "
                         "(Bluetooth boards); 0: the board's default")
    file: str = Field("", description="playback_file board: the file to play")
    master_board: str | int | None = Field(
        None, description="playback_file/streaming board: the board whose data it carries")
    loop: bool = Field(False, description="playback_file board: start again at the end of the "
                       "file (else the source ends there)")
    # what the pipeline expects; checked against the board's description
    channels: int | None = Field(None, ge=1, description="channel count the pipeline expects")
    srate: float | None = Field(None, gt=0, description="nominal rate the pipeline expects (Hz)")
    channel_names: list[str] | None = Field(
        None, description="labels to give the channels (default: the board's electrode "
        "names for EEG, ch1..chN otherwise)")
    kind: Literal["eeg", "ecog"] = Field(
        "eeg", description="eeg: the board's EEG rows; ecog: its ExG rows, typed ECoG")
    # delivery
    dtype: Literal["float32", "float64"] = Field("float32", description="sample type downstream")
    chunk_ms: float | None = Field(
        None, gt=0, le=100, description="pause between two polls of the board (BrainFlow has "
        "no blocking read); default two sample periods, at least 1 ms")
    buffer_s: float = Field(5.0, gt=0, le=600, description="BrainFlow ring buffer, in seconds "
                            "of signal; older samples are lost (and reported) when it fills")
    counter_modulus: int | None = Field(
        256, ge=2, description="the package counter counts 0..modulus-1 by one; null: do not "
        "check it (boards whose counter does not step by one)")
    log_level: Literal["trace", "debug", "info", "warn", "error", "off"] = Field(
        "warn", description="BrainFlow's own log on stderr (one setting for the whole process)")


class BrainflowBoard(BlockingSource):
    """A BrainFlow board as a source: its EEG (or ECoG) channels in volts.

    BrainFlow fills a ring buffer from its own thread and has no blocking read,
    so :meth:`read_blocking` polls it every ``chunk_ms`` and returns as soon as it
    holds samples; the pause between polls is a wait on the run's stop event, so
    a stop is seen at once.

    Attributes
    ----------
    dropped : int
        Samples the package counter showed missing so far.
    delivered : int
        Samples delivered so far.
    timestamp_repairs : int
        Chunks whose timestamps had to be repaired to increase.
    """

    type_name = "brainflow_board"
    Params = BrainflowBoardParams
    signal = Output("signal", doc="(n_samples, n_channels) EEG/ECoG in volts")

    def __init__(self, name: str, params: Any = None) -> None:
        super().__init__(name, params)
        self.dropped = 0
        self.delivered = 0
        self.timestamp_repairs = 0
        self.layout: BoardLayout | None = None
        self._board: Any = None
        self._expected_rows: int | None = None  # rows of a playback that does not loop
        self._last_data = 0.0  # time.monotonic() of the last data read

    # -- configuration (pure: descriptions only, no session) -------------------------------
    def configure(self, inputs: Any) -> dict[str, StreamSpec]:
        p = self.params
        layout = self._layout()
        n = layout.n_channels
        problems = []
        if p.channels is not None and p.channels != n:
            problems.append(f"it has {n} {p.kind.upper()} channels, the pipeline expects "
                            f"{p.channels}")
        if p.srate is not None and abs(layout.srate - p.srate) > 1e-6 * max(1.0, p.srate):
            problems.append(f"its rate is {layout.srate:g} Hz, the pipeline expects {p.srate:g} Hz")
        if p.channel_names is not None and len(p.channel_names) != n:
            problems.append(f"it has {n} channels but 'channel_names' lists "
                            f"{len(p.channel_names)}")
        if problems:
            raise SpecMismatchError(
                f"node '{self.name}': BrainFlow board {layout.label} does not fit: "
                + "; ".join(problems),
                hint="fix 'channels'/'srate'/'channel_names' in the pipeline or choose the "
                "right board")
        if p.channel_names is not None:
            names = tuple(p.channel_names)
        elif p.kind == "eeg" and len(layout.eeg_names) == n:
            names = layout.eeg_names
        else:
            names = tuple(f"ch{i + 1}" for i in range(n))
        self.layout = layout
        spec = StreamSpec(
            name=layout.board_name, type="EEG" if p.kind == "eeg" else "ECoG",
            channel_names=names, srate=layout.srate, dtype=p.dtype,
            channel_types=(p.kind,) * n, units=("V",) * n, source_id=self._source_id(layout),
            extra={"board_id": layout.board_id, "descr_board_id": layout.descr_id})
        return {"signal": spec}

    def _layout(self) -> BoardLayout:
        p = self.params
        board_id, board_name = resolve_board(p.board)
        descr_id, descr_name = board_id, board_name
        if board_name in MASTER_BOARDS:
            if p.master_board is None:
                raise ConfigError(
                    f"node '{self.name}': board {board_name} needs 'master_board'",
                    hint="name the board whose data it carries, e.g. master_board: synthetic")
            descr_id, descr_name = resolve_board(p.master_board, "master_board")
            if descr_name in MASTER_BOARDS:
                raise ConfigError(f"node '{self.name}': 'master_board' cannot be {descr_name}",
                                  hint="name the board that recorded the data")
        if board_name == "PLAYBACK_FILE_BOARD" and not p.file:
            raise ConfigError(f"node '{self.name}': board {board_name} needs 'file'",
                              hint="give the path of a file written by BrainFlow")
        shim = import_board_shim()
        try:
            descr = shim.BoardShim.get_board_descr(descr_id)
        except shim.BrainFlowError as exc:
            raise ConfigError(f"node '{self.name}': BrainFlow has no description of board "
                              f"{descr_name} ({exc})",
                              hint="choose another board or update brainflow") from exc
        if p.kind == "eeg":
            rows = list(descr.get("eeg_channels") or [])
        else:  # ECoG amplifiers are ExG inputs: every row BrainFlow reports in microvolts
            rows = sorted({r for key in ("eeg_channels", "emg_channels", "ecg_channels",
                                         "eog_channels") for r in descr.get(key) or []})
        if not rows:
            raise ConfigError(f"node '{self.name}': board {descr_name} has no "
                              f"{'EEG' if p.kind == 'eeg' else 'ExG'} channels",
                              hint="choose a board with EEG/ExG inputs")
        if "timestamp_channel" not in descr or "sampling_rate" not in descr:
            raise ConfigError(f"node '{self.name}': board {descr_name} has no timestamp row "
                              "or sampling rate in its description",
                              hint="choose another board or update brainflow")
        names = str(descr.get("eeg_names") or "")
        return BoardLayout(
            board_id=board_id, board_name=board_name, descr_id=descr_id, descr_name=descr_name,
            rows=_rows_index(rows), n_channels=len(rows),
            timestamp_row=int(descr["timestamp_channel"]),
            counter_row=(int(descr["package_num_channel"])
                         if descr.get("package_num_channel") is not None else None),
            num_rows=int(descr.get("num_rows", 0)), srate=float(descr["sampling_rate"]),
            eeg_names=tuple(s.strip() for s in names.split(",")) if names else ())

    def _source_id(self, layout: BoardLayout) -> str:
        p = self.params
        where = (p.serial_number or p.mac_address or p.serial_port or p.file
                 or (f"{p.ip_address}:{p.ip_port}" if p.ip_address else ""))
        return f"brainflow:{layout.board_name}" + (f":{where}" if where else "")

    # -- session ---------------------------------------------------------------------------
    def open(self, context: NodeContext) -> None:
        super().open(context)
        shim = import_board_shim()
        p = self.params
        if self.layout is None or "signal" not in self.output_specs:
            self.bind({})  # used alone without bind(): configure now
        layout = self._opened_layout = cast(BoardLayout, self.layout)
        self._spec = self.output_specs["signal"]
        playback = layout.board_name == "PLAYBACK_FILE_BOARD"
        if playback:
            self._expected_rows = None if p.loop else self._check_playback_file(layout)
        shim.BoardShim.set_log_level(_LOG_LEVELS[p.log_level])

        inputs = shim.BrainFlowInputParams()
        for key in ("serial_port", "mac_address", "ip_address", "ip_port", "serial_number",
                    "other_info", "timeout", "file"):
            setattr(inputs, key, getattr(p, key))
        if layout.descr_id != layout.board_id:
            inputs.master_board = layout.descr_id
        board = shim.BoardShim(layout.board_id, inputs)
        buffer_size = int(min(MAX_BUFFER_SAMPLES, max(1024, p.buffer_s * layout.srate)))
        try:
            board.prepare_session()
            if playback:
                board.config_board("loopback_true" if p.loop else "loopback_false")
                # samples stamped when played, so they are on today's clock, not the file's
                board.config_board("new_timestamps")
            board.start_stream(buffer_size)
        except BaseException as exc:
            _release_quietly(board)
            if isinstance(exc, shim.BrainFlowError):
                raise RunError(
                    f"node '{self.name}': BrainFlow could not start board {layout.label}: {exc}",
                    hint=_start_hint(exc, p)) from exc
            raise
        self._board = board
        self._brainflow_error = shim.BrainFlowError
        self._emit = context.emit_event
        self._stop = context.stop_requested
        self._offset = wall_to_runtime_offset(context.clock.now)
        self._poll_s = (p.chunk_ms / 1e3 if p.chunk_ms is not None
                        else max(1e-3, 2.0 / layout.srate))
        self._dtype = np.dtype(p.dtype)
        self._last_ts = -np.inf
        self._last_counter: int | None = None
        # a live board's samples from before the run are stale: dropped at the first read, as
        # the LSL inlet does; a playback file is data, every row of it is delivered
        self._flushed = playback
        self._last_data = time.monotonic()
        self.dropped = self.delivered = self.timestamp_repairs = 0
        context.emit_event("stream_connected", node=self.name, stream=layout.board_name,
                           board_id=layout.board_id, source_id=self._spec.source_id,
                           channels=layout.n_channels, srate=layout.srate,
                           clock_offset=self._offset)

    def _check_playback_file(self, layout: BoardLayout) -> int:
        """Check the playback file before BrainFlow opens it; the rows it will play."""
        path = Path(self.params.file).expanduser()
        if not path.is_file():
            raise ConfigError(f"node '{self.name}': playback file '{path}' does not exist"
                              + (" (it is a folder)" if path.is_dir() else ""),
                              hint="give the path of a file written by BrainFlow "
                              "(DataFilter.write_file or a file streamer)")
        try:
            valid, total, first_bad = count_playback_rows(path, layout.num_rows)
        except OSError as exc:
            raise ConfigError(f"node '{self.name}': cannot read playback file '{path}': {exc}",
                              hint="check the file's permissions") from exc
        if valid == 0:
            found = f"its lines have {first_bad} values" if first_bad is not None else "it is empty"
            raise ConfigError(
                f"node '{self.name}': playback file '{path}' has no row of {layout.descr_name} "
                f"({layout.num_rows} values per line); {found}",
                hint="set 'master_board' to the board that recorded the file")
        if valid < total:
            log.warning("node '%s': %d of %d lines of '%s' do not have %d values; BrainFlow "
                        "skips them", self.name, total - valid, total, path, layout.num_rows)
        return valid

    # -- data ------------------------------------------------------------------------------
    def read_blocking(self, timeout: float) -> dict[str, AnyChunk] | None:
        deadline = time.monotonic() + timeout
        layout = self._opened_layout
        while True:
            try:
                raw = self._board.get_board_data()  # takes (and removes) all buffered samples
            except self._brainflow_error as exc:
                raise RunError(f"node '{self.name}': reading board {layout.label} failed: {exc}",
                               hint="check the device's connection") from exc
            if not self._flushed:
                self._flushed = True
                if raw.shape[1] and layout.counter_row is not None:  # counting goes on from here
                    self._last_counter = int(raw[layout.counter_row, -1])
                raw = raw[:, :0]
            if raw.shape[1]:
                self._last_data = time.monotonic()
                return {"signal": self._chunk(raw)}
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.exhausted:
                return None
            if self._stop.wait(min(self._poll_s, remaining)):  # a stop ends the wait at once
                return None

    def _chunk(self, raw: NDArray[np.float64]) -> Chunk:
        """Turn BrainFlow's (n_rows, n_samples) array into a chunk.

        Parameters
        ----------
        raw : ndarray, shape (n_rows, n_samples)
            What ``get_board_data`` returned (microvolts, unix timestamps).

        Returns
        -------
        Chunk
            Data (n_samples, n_channels) in volts, timestamps (n_samples,) on the
            runtime clock.
        """
        layout = self._opened_layout
        n = raw.shape[1]
        # one pass from BrainFlow's buffer into a C-ordered (n_samples, n_channels) array:
        # the transpose is a view, the unit conversion and dtype cast write the output
        data = np.empty((n, layout.n_channels), dtype=self._dtype)
        np.multiply(raw[layout.rows].T, UV_TO_V, out=data)
        ts = raw[layout.timestamp_row] + self._offset
        previous = self._last_ts
        if ts[0] <= previous or (n > 1 and np.any(np.diff(ts) <= 0)):
            bad = int(ts[0] <= previous) + int(np.count_nonzero(np.diff(ts) <= 0))
            ts = increasing_timestamps(ts, previous)
            self.timestamp_repairs += 1
            self._emit("timestamps_not_increasing", node=self.name, count=bad, at=float(ts[0]))
        self._last_ts = float(ts[-1])
        modulus = self.params.counter_modulus
        if layout.counter_row is not None and modulus is not None:
            self._check_counter(raw[layout.counter_row], ts, modulus)
        self.delivered += n
        return Chunk(data, ts, self._spec)

    def _check_counter(self, counter: NDArray[np.float64], ts: NDArray[np.float64],
                       modulus: int) -> None:
        """Report gaps in the package counter as ``samples_dropped`` events.

        Parameters
        ----------
        counter : ndarray, shape (n_samples,)
            The package counter row (whole numbers, 0..modulus-1).
        ts : ndarray, shape (n_samples,)
            The samples' timestamps on the runtime clock.
        modulus : int
            The counter wraps to 0 after ``modulus - 1``.
        """
        values = np.rint(counter).astype(np.int64)
        previous = self._last_counter
        self._last_counter = int(values[-1])
        if previous is not None:
            values = np.concatenate(([previous], values))
            after = 0  # step k leads to sample k of this chunk
        else:
            after = 1  # step k leads to sample k + 1
        if values.shape[0] < 2:
            return
        steps = np.diff(values) % modulus
        gaps = np.flatnonzero(steps != 1)
        if gaps.size == 0:
            return
        # a repeated counter (step 0) reads as modulus - 1 lost samples: a counter alone
        # cannot tell a duplicate from a whole lost cycle
        missing = (steps[gaps] - 1) % modulus
        self.dropped += int(missing.sum())
        emit = self._emit
        shown = gaps[:MAX_GAP_EVENTS]
        for k, (gap, count) in enumerate(zip(shown, missing[:MAX_GAP_EVENTS])):
            rest = k == len(shown) - 1 and gaps.size > MAX_GAP_EVENTS
            total = int(missing[k:].sum()) if rest else int(count)
            fields = {"gaps": int(gaps.size - k)} if rest else {}
            emit("samples_dropped", node=self.name, count=total,
                 at=float(ts[gap + after]), **fields)
        log.debug("node '%s': %d sample(s) dropped in %d gap(s)", self.name,
                  int(missing.sum()), gaps.size)

    @property
    def exhausted(self) -> bool:
        """True once a non-looping playback has delivered its file's last row.

        The playback board gives no end-of-file signal (it idles at the end), so
        the node counts the file's rows when it opens. Should rows be lost on the
        way (a ring buffer overflow, reported as ``samples_dropped``), the count is
        never reached: the source then ends once delivered plus dropped rows
        account for the file and no data came for ``PLAYBACK_QUIET_S``.
        """
        expected = self._expected_rows
        if expected is None:  # a live board, a looping playback, or not opened
            return False
        if self.delivered >= expected:
            return True
        return (self.delivered + self.dropped >= expected
                and time.monotonic() - self._last_data > PLAYBACK_QUIET_S)

    def close(self) -> None:
        board, self._board = self._board, None
        if board is None:
            return
        shim = import_board_shim()
        try:
            board.stop_stream()
        except shim.BrainFlowError:
            pass  # not streaming: nothing to stop
        try:
            board.release_session()
        except shim.BrainFlowError as exc:
            raise RunError(f"node '{self.name}': releasing BrainFlow board failed: {exc}",
                           hint="the device may need to be reset") from exc


def _release_quietly(board: Any) -> None:
    """Release a session after a failed start; its own error is not the interesting one."""
    try:
        board.release_session()
    except Exception as exc:  # the start's error is raised instead
        log.debug("release_session after a failed start: %s", exc)


def _start_hint(exc: Any, params: BrainflowBoardParams) -> str:
    """How to fix a failed ``prepare_session``/``start_stream``, from BrainFlow's exit code."""
    code = getattr(exc, "exit_code", None)
    if code in (1, 2, 3):  # PORT_ALREADY_OPEN, UNABLE_TO_OPEN_PORT, SER_PORT_ERROR
        return (f"check 'serial_port' ({params.serial_port or 'not set'}), that the device is "
                "plugged in, and that no other program holds the port")
    if code in (6, 7, 18):  # INITIAL_MSG, BOARD_NOT_READY, SYNC_TIMEOUT
        return "check that the device is switched on and in range, then start again"
    if code == 13:  # INVALID_ARGUMENTS
        return "check the board's connection parameters (serial_port, mac_address, " \
               "ip_address, ip_port, serial_number, file, master_board)"
    if code == 16:  # ANOTHER_BOARD_IS_CREATED
        return "another session holds this board: close it (or the other program) first"
    return "check the device and its connection; log_level: info shows BrainFlow's own log"
