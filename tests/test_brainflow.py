"""BrainFlow boards as sources, through BrainFlow's real code paths (no mocks).

The synthetic board streams in a real :class:`Runner`; the playback-file board
plays a file this module writes with BrainFlow's own ``DataFilter.write_file``,
whose package counter has two blocks of rows removed (one across the counter's
wrap from 255 to 0), so the samples delivered and the drops reported can be
checked exactly.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bci_runtime.chunk import Chunk
from bci_runtime.clock import LslClock
from bci_runtime.errors import ConfigError, PipelineError, SpecMismatchError
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.node import NodeContext
from bci_runtime.runner import Runner, RunResult

brainflow_board = pytest.importorskip("bci_runtime.drivers.brainflow_board")
BrainflowBoard = brainflow_board.BrainflowBoard

NODE_TYPE = "bci_runtime.drivers.brainflow_board:BrainflowBoard"
SYNTHETIC_ID = -1
SRATE = 250.0  # the synthetic board's rate; playback files of it play at this rate


def _brainflow() -> tuple[Any, Any]:
    shim = brainflow_board.import_board_shim()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources, when DataFilter loads its library
        from brainflow.data_filter import DataFilter
    return shim.BoardShim, DataFilter


def pipeline(params: dict, *, duration: float, process: str = "main") -> Graph:
    doc = {
        "name": "test-brainflow", "clock": "live", "duration": duration,
        "nodes": {
            "board": {"type": NODE_TYPE, "params": params, "process": process},
            "sink": {"type": "test_collector", "inputs": {"signal": "board.signal"}},
        },
    }
    return load_graph_text(yaml.safe_dump(doc, sort_keys=False), "test_brainflow.yaml")


def run(graph: Graph) -> tuple[RunResult, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    result = Runner(graph, emit_event=lambda kind, **f: events.append((kind, f))).run()
    return result, events


def of_kind(events: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [fields for k, fields in events if k == kind]


# -- board names, descriptions, start-time checks (no session) -----------------------------

@pytest.mark.parametrize("value", ["synthetic", "SYNTHETIC_BOARD", "Synthetic_Board", -1, "-1"])
def test_board_resolves_by_name_or_id(value: str | int) -> None:
    assert brainflow_board.resolve_board(value) == (SYNTHETIC_ID, "SYNTHETIC_BOARD")


def test_playback_board_resolves_without_its_suffix() -> None:
    assert brainflow_board.resolve_board("playback_file") == (-3, "PLAYBACK_FILE_BOARD")


def test_unknown_board_is_a_config_error_suggesting_close_names() -> None:
    node = BrainflowBoard("board", {"board": "sinthetic"})
    with pytest.raises(ConfigError) as info:
        node.bind({})
    assert "unknown BrainFlow board 'sinthetic'" in str(info.value)
    assert "did you mean SYNTHETIC_BOARD" in str(info.value)
    # the same through a pipeline file: reported before anything starts
    with pytest.raises(PipelineError) as info:
        pipeline({"board": "sinthetic"}, duration=1.0)
    assert "node 'board'" in str(info.value) and "SYNTHETIC_BOARD" in str(info.value)


def test_unknown_board_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no BrainFlow board has id 9999"):
        BrainflowBoard("board", {"board": 9999}).bind({})


def test_spec_comes_from_the_board_description() -> None:
    board_shim, _ = _brainflow()
    spec = BrainflowBoard("board", {"board": "synthetic"}).bind({})["signal"]
    n = len(board_shim.get_eeg_channels(SYNTHETIC_ID))
    assert spec.n_channels == n
    assert list(spec.channel_names) == board_shim.get_eeg_names(SYNTHETIC_ID)
    assert spec.srate == board_shim.get_sampling_rate(SYNTHETIC_ID) == SRATE
    assert spec.type == "EEG" and spec.units == ("V",) * n and spec.channel_types == ("eeg",) * n
    assert spec.dtype == "float32" and spec.source_id == "brainflow:SYNTHETIC_BOARD"


def test_ecog_uses_the_exg_rows_typed_ecog() -> None:
    board_shim, _ = _brainflow()
    spec = BrainflowBoard("board", {"board": "synthetic", "kind": "ecog",
                                    "dtype": "float64"}).bind({})["signal"]
    n = len(board_shim.get_exg_channels(SYNTHETIC_ID))
    assert spec.n_channels == n and spec.type == "ECoG"
    assert spec.channel_types == ("ecog",) * n and spec.units == ("V",) * n
    assert spec.channel_names == tuple(f"ch{i + 1}" for i in range(n))  # not 10-20 labels
    assert spec.dtype == "float64"


@pytest.mark.parametrize(
    ("expected", "numbers"),
    [({"channels": 8}, ("16 EEG channels", "expects 8")),
     ({"srate": 500}, ("250 Hz", "expects 500 Hz"))],
    ids=["channels", "srate"])
def test_expectations_that_do_not_fit_the_board_fail(expected: dict,
                                                     numbers: tuple[str, str]) -> None:
    node = BrainflowBoard("board", {"board": "synthetic", **expected})
    with pytest.raises(SpecMismatchError) as info:
        node.bind({})
    message = str(info.value)
    assert "node 'board'" in message and "SYNTHETIC_BOARD" in message
    for text in numbers:
        assert text in message
    with pytest.raises(PipelineError) as info:  # a pipeline file: before anything starts
        pipeline({"board": "synthetic", **expected}, duration=1.0)
    for text in numbers:
        assert text in str(info.value)


def test_expectations_that_fit_pass() -> None:
    spec = BrainflowBoard("board", {"board": "synthetic", "channels": 16,
                                    "srate": 250}).bind({})["signal"]
    assert spec.n_channels == 16


def test_playback_needs_master_board_and_file() -> None:
    with pytest.raises(ConfigError, match="needs 'master_board'"):
        BrainflowBoard("board", {"board": "playback_file", "file": "x.csv"}).bind({})
    with pytest.raises(ConfigError, match="needs 'file'"):
        BrainflowBoard("board", {"board": "playback_file", "master_board": "synthetic"}).bind({})


def test_increasing_timestamps_repairs_without_moving_good_ones() -> None:
    ts = np.array([10.0, 10.0, 9.5, 10.5, 10.5, 11.0])
    fixed = brainflow_board.increasing_timestamps(ts, previous=10.0, step=0.001)
    np.testing.assert_allclose(fixed, [10.001, 10.002, 10.003, 10.5, 10.501, 11.0], atol=1e-12)


# -- the synthetic board in a real run -----------------------------------------------------

@pytest.mark.parametrize("board", ["synthetic", SYNTHETIC_ID], ids=["by-name", "by-id"])
def test_synthetic_board_streams_volts_on_the_runtime_clock(board: str | int) -> None:
    board_shim, _ = _brainflow()
    graph = pipeline({"board": board}, duration=2.0)
    clock = LslClock()
    before = clock.now()
    result, events = run(graph)
    after = clock.now()
    assert result.status == "completed", result.reason
    sink, node = graph.nodes["sink"], graph.nodes["board"]
    data, stamps = sink.data(), sink.timestamps()
    n = len(board_shim.get_eeg_channels(SYNTHETIC_ID))
    assert data.ndim == 2 and data.shape[1] == n and data.dtype == np.float32
    assert len(stamps) >= 100, f"only {len(stamps)} samples in 2 s at 250 Hz"
    assert result.samples == len(stamps) == node.delivered
    # volts: the synthetic EEG is tens to hundreds of microvolts
    peak = float(np.abs(data).max())
    assert 1e-6 < peak < 1e-2, f"peak {peak} is not a microvolt-range signal in volts"
    assert np.all(np.isfinite(data))
    # runtime clock: increasing across chunks, and within the run (a unix-time or unmapped
    # stamp would be off by decades)
    assert np.all(np.diff(stamps) > 0)
    assert before - 1.0 <= stamps[0] and stamps[-1] <= after
    assert node.dropped == 0 and not of_kind(events, "samples_dropped")
    connected = of_kind(events, "stream_connected")
    assert len(connected) == 1 and connected[0]["channels"] == n and connected[0]["srate"] == SRATE


def test_node_alone_reads_and_closes_twice() -> None:
    node = BrainflowBoard("board", {"board": "synthetic", "dtype": "float64", "chunk_ms": 5})
    node.bind({})
    context = NodeContext(name="board", clock=LslClock())
    node.open(context)
    try:
        got = None
        deadline = time.monotonic() + 10.0
        while got is None and time.monotonic() < deadline:
            got = node.read_blocking(0.25)
    finally:
        node.close()
    node.close()  # idempotent
    assert got is not None, "no data from the synthetic board within 10 s"
    chunk = got["signal"]
    assert isinstance(chunk, Chunk) and chunk.problem() is None
    assert chunk.data.dtype == np.float64 and chunk.data.flags.c_contiguous
    # a released session can be prepared again
    again = BrainflowBoard("board", {"board": "synthetic"})
    again.bind({})
    again.open(NodeContext(name="board", clock=LslClock()))
    again.close()


# -- the playback-file board ----------------------------------------------------------------

N_ROWS_WRITTEN = 600
REMOVED = [(240, 290), (400, 403)]  # [start, stop) rows removed: 50 across the wrap, then 3


def write_playback_file(path: Path) -> np.ndarray:
    """Write a synthetic-board file with known values and gaps; return its (n_rows, n) array."""
    board_shim, data_filter = _brainflow()
    descr = board_shim.get_board_descr(SYNTHETIC_ID)
    rng = np.random.default_rng(7)
    table = np.zeros((descr["num_rows"], N_ROWS_WRITTEN))
    table[descr["package_num_channel"]] = np.arange(N_ROWS_WRITTEN) % 256
    # eighths of a microvolt: exact in the file's six decimals
    eeg = descr["eeg_channels"]
    table[eeg] = rng.integers(-1600, 1600, size=(len(eeg), N_ROWS_WRITTEN)) / 8.0
    # recorded an hour ago at 250 Hz: the board paces playback by these stamps
    table[descr["timestamp_channel"]] = time.time() - 3600.0 + np.arange(N_ROWS_WRITTEN) / SRATE
    keep = np.ones(N_ROWS_WRITTEN, dtype=bool)
    for start, stop in REMOVED:
        keep[start:stop] = False
    table = np.ascontiguousarray(table[:, keep])
    data_filter.write_file(table, str(path), "w")
    return table


def test_playback_file_delivers_the_file_and_reports_the_removed_rows(tmp_path: Path) -> None:
    board_shim, _ = _brainflow()
    path = tmp_path / "session.csv"
    table = write_playback_file(path)
    graph = pipeline({"board": "playback_file", "file": str(path), "master_board": "synthetic",
                      "dtype": "float64"}, duration=60.0)
    result, events = run(graph)
    assert result.status == "completed", result.reason
    node, sink = graph.nodes["board"], graph.nodes["sink"]
    assert node.exhausted and result.wall_s < 60.0  # the file's end ended the run
    data, stamps = sink.data(), sink.timestamps()
    eeg = board_shim.get_eeg_channels(SYNTHETIC_ID)
    expected = table[eeg].T * 1e-6
    assert data.shape == expected.shape == (table.shape[1], len(eeg))
    np.testing.assert_array_equal(data, expected)
    assert np.all(np.diff(stamps) > 0)
    assert graph.specs[("board", "signal")].source_id == f"brainflow:PLAYBACK_FILE_BOARD:{path}"

    dropped = of_kind(events, "samples_dropped")
    assert [d["count"] for d in dropped] == [stop - start for start, stop in REMOVED]
    assert all(d["node"] == "board" for d in dropped)
    # each is stamped with the first sample after its gap
    first_after = [REMOVED[0][0], REMOVED[1][0] - (REMOVED[0][1] - REMOVED[0][0])]
    assert [d["at"] for d in dropped] == [stamps[i] for i in first_after]
    assert node.dropped == sum(stop - start for start, stop in REMOVED)
    assert node.delivered == table.shape[1] == result.samples


def test_missing_playback_file_fails_the_run_clearly(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    graph = pipeline({"board": "playback_file", "file": str(path), "master_board": "synthetic"},
                     duration=30.0)
    result, _ = run(graph)
    assert result.status == "failed"
    assert isinstance(result.error, ConfigError)
    assert f"playback file '{path}' does not exist" in str(result.error)
    assert result.samples == 0


def test_playback_file_of_another_board_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("\n".join("\t".join(["0.0"] * 10) for _ in range(5)) + "\n")
    node = BrainflowBoard("board", {"board": "playback_file", "file": str(path),
                                    "master_board": "synthetic"})
    node.bind({})
    with pytest.raises(ConfigError) as info:
        node.open(NodeContext(name="board", clock=LslClock()))
    message = str(info.value)
    assert "no row of SYNTHETIC_BOARD (32 values per line)" in message
    assert "its lines have 10 values" in message and "master_board" in message


def test_board_in_a_worker_process_streams_to_main() -> None:
    """The board node placed in worker process 'acq' (imported there by its path)."""
    graph = pipeline({"board": "synthetic", "channels": 16, "srate": 250}, duration=2.0,
                     process="acq")
    result, events = run(graph)
    assert result.status == "completed", result.reason
    assert set(result.processes) == {"acq"}
    data, stamps = graph.nodes["sink"].data(), graph.nodes["sink"].timestamps()
    assert len(stamps) > 0 and data.shape[1] == 16
    assert 1e-6 < float(np.abs(data).max()) < 1e-2
    assert np.all(np.diff(stamps) > 0)
