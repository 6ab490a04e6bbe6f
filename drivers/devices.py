"""What can be recorded here: LSL streams on the network and the boards BrainFlow drives."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from bci_runtime.errors import DependencyError
from bci_runtime.lsl import import_pylsl

# boards that need no hardware: they work on any machine
VIRTUAL_BOARDS = {"SYNTHETIC_BOARD", "PLAYBACK_FILE_BOARD", "STREAMING_BOARD"}


@dataclass(frozen=True)
class LslStreamInfo:
    """One LSL stream seen on the network."""

    name: str
    type: str
    channels: int
    srate: float
    format: str
    source_id: str
    host: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BoardInfo:
    """One board BrainFlow supports."""

    id: int
    name: str
    srate: float | None
    eeg_channels: int | None
    virtual: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lsl_streams(wait_s: float = 1.0) -> list[LslStreamInfo]:
    """LSL streams visible within ``wait_s`` seconds, sorted by name then source id."""
    pylsl = import_pylsl()
    formats = {pylsl.cf_float32: "float32", pylsl.cf_double64: "double64",
               pylsl.cf_string: "string", pylsl.cf_int32: "int32", pylsl.cf_int16: "int16",
               pylsl.cf_int8: "int8", pylsl.cf_int64: "int64"}
    found = [LslStreamInfo(i.name(), i.type(), i.channel_count(), i.nominal_srate(),
                           formats.get(i.channel_format(), str(i.channel_format())),
                           i.source_id(), i.hostname())
             for i in pylsl.resolve_streams(wait_s)]
    return sorted(found, key=lambda s: (s.name, s.source_id))


def brainflow_boards() -> list[BoardInfo]:
    """Every board of the installed BrainFlow, with its rate and EEG channels when known.

    Raises
    ------
    DependencyError
        When BrainFlow cannot be imported (with the install hint).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brainflow loads its library through pkg_resources
        return _boards()


def _boards() -> list[BoardInfo]:
    try:
        from brainflow.board_shim import BoardIds, BoardShim
    except ImportError as exc:
        raise DependencyError(f"BrainFlow is not importable ({exc})",
                              hint="pip install brainflow 'setuptools<81'") from exc
    boards = []
    for board in BoardIds:
        if board.value == BoardIds.NO_BOARD.value:
            continue
        try:
            descr = BoardShim.get_board_descr(board.value)
        except Exception:  # boards without a description (e.g. streaming): list them anyway
            descr = {}
        eeg = descr.get("eeg_channels")
        boards.append(BoardInfo(board.value, board.name, descr.get("sampling_rate"),
                                len(eeg) if eeg is not None else None,
                                board.name in VIRTUAL_BOARDS))
    return boards
