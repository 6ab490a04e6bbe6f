"""Stream specs, chunks, event chunks and the ring buffer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bci_runtime.chunk import Chunk, EventChunk
from bci_runtime.errors import BciError, SpecMismatchError
from bci_runtime.ringbuffer import RingBuffer
from bci_runtime.spec import StreamSpec, require_regular, require_signal


def eeg_spec(n_channels: int = 3, srate: float = 250.0, **changes) -> StreamSpec:
    fields = dict(name="eeg", type="EEG", channel_names=tuple(f"C{i}" for i in range(n_channels)),
                  srate=srate)
    fields.update(changes)
    return StreamSpec(**fields)


# -- StreamSpec ------------------------------------------------------------------------------
class TestStreamSpec:
    def test_defaults_fill_types_and_units(self):
        spec = eeg_spec(4)
        assert spec.n_channels == 4
        assert spec.channel_types == ("misc",) * 4
        assert spec.units == ("a.u.",) * 4
        assert not spec.is_events

    def test_lists_become_tuples(self):
        spec = StreamSpec("s", "EEG", ["a", "b"], 100.0, channel_types=["eeg", "eeg"],
                          units=["V", "V"])
        assert spec.channel_names == ("a", "b")
        assert spec.channel_types == ("eeg", "eeg")
        assert spec.units == ("V", "V")

    def test_no_channels(self):
        with pytest.raises(SpecMismatchError, match="no channels"):
            StreamSpec("empty", "EEG", (), 250.0)

    @pytest.mark.parametrize("field", ["channel_types", "units"])
    @pytest.mark.parametrize("length", [1, 4])
    def test_wrong_lengths(self, field, length):
        with pytest.raises(SpecMismatchError, match=f"3 channels but {length} {field}"):
            eeg_spec(3, **{field: ("x",) * length})

    @pytest.mark.parametrize("dtype", ["int16", "float16", "double", ""])
    def test_bad_dtype(self, dtype):
        with pytest.raises(SpecMismatchError, match="dtype") as info:
            eeg_spec(dtype=dtype)
        assert "float32" in str(info.value)  # the hint names the allowed types

    def test_negative_rate(self):
        with pytest.raises(SpecMismatchError, match="negative rate"):
            eeg_spec(srate=-1.0)

    def test_errors_are_rooted(self):
        with pytest.raises(BciError):
            StreamSpec("empty", "EEG", (), 250.0)

    def test_round_trip(self):
        spec = eeg_spec(3, dtype="float32", channel_types=("eeg", "eeg", "eog"),
                        units=("V", "V", "uV"), source_id="amp-1")
        data = spec.to_dict()
        assert data["channel_names"] == ["C0", "C1", "C2"]
        assert StreamSpec.from_dict(data) == spec
        # and through JSON, as it travels between processes and into session files
        again = StreamSpec.from_dict(json.loads(json.dumps(data)))
        assert again == spec
        assert again.channel_names == spec.channel_names
        assert isinstance(again.channel_names, tuple)

    def test_round_trip_events(self):
        spec = StreamSpec.events("markers", "src-1")
        assert spec.is_events and spec.n_channels == 1 and spec.srate == 0
        assert StreamSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec

    def test_with_changes_validates(self):
        spec = eeg_spec(2)
        assert spec.with_changes(dtype="float32").dtype == "float32"
        with pytest.raises(SpecMismatchError):
            spec.with_changes(dtype="int8")

    def test_require_helpers(self):
        require_regular(eeg_spec(), node="n", port="p")
        with pytest.raises(SpecMismatchError, match="node 'n' port 'p'"):
            require_signal(StreamSpec.events("m"), node="n", port="p")
        with pytest.raises(SpecMismatchError, match="no nominal rate"):
            require_regular(eeg_spec(srate=0.0), node="n", port="p")


# -- Chunk -----------------------------------------------------------------------------------
class TestChunk:
    def make(self, n=5, n_channels=3, spec_channels=3):
        data = np.arange(n * n_channels, dtype=np.float64).reshape(n, n_channels)
        ts = np.arange(n) / 250.0
        return Chunk(data, ts, eeg_spec(spec_channels))

    def test_good_chunk(self):
        chunk = self.make()
        assert chunk.problem() is None
        assert chunk.n_samples == 5
        assert chunk.newest == pytest.approx(4 / 250.0)

    @pytest.mark.parametrize("n_channels", [2, 4])
    def test_wrong_channel_count(self, n_channels):
        problem = self.make(n_channels=n_channels).problem()
        assert problem is not None
        assert f"{n_channels} channels" in problem and "declares 3" in problem

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_data(self, bad):
        chunk = self.make()
        chunk.data[2, 1] = bad
        chunk.data[4, 0] = bad
        problem = chunk.problem()
        assert problem is not None and "NaN/Inf" in problem and "2 " in problem

    def test_non_finite_timestamps(self):
        chunk = self.make()
        chunk.timestamps[1] = np.nan
        assert "timestamps" in chunk.problem()

    @pytest.mark.parametrize("n_ts", [4, 6])
    def test_mismatched_timestamps(self, n_ts):
        chunk = Chunk(np.zeros((5, 3)), np.arange(n_ts, dtype=np.float64), eeg_spec(3))
        problem = chunk.problem()
        assert problem is not None and "5 samples" in problem

    def test_two_dimensional_timestamps(self):
        chunk = Chunk(np.zeros((5, 3)), np.zeros((5, 1)), eeg_spec(3))
        assert chunk.problem() is not None

    def test_one_dimensional_data(self):
        chunk = Chunk(np.zeros(5), np.arange(5, dtype=np.float64), eeg_spec(1))
        assert "dimensions" in chunk.problem()

    def test_empty_chunk(self):
        chunk = Chunk(np.zeros((0, 3)), np.zeros(0), eeg_spec(3))
        assert "empty" in chunk.problem()

    def test_frozen(self):
        chunk = self.make()
        with pytest.raises(AttributeError):
            chunk.data = np.zeros((5, 3))  # type: ignore[misc]


# -- EventChunk ------------------------------------------------------------------------------
class TestEventChunk:
    def test_single(self):
        spec = StreamSpec.events("markers")
        chunk = EventChunk.single("cue/left", 1.5, spec)
        assert chunk.markers == ("cue/left",)
        assert chunk.n_samples == 1
        assert chunk.newest == 1.5
        assert chunk.timestamps.dtype == np.float64
        assert chunk.problem() is None

    def test_several(self):
        chunk = EventChunk(("a", "b", "c"), np.array([1.0, 2.0, 3.0]), StreamSpec.events("m"))
        assert chunk.n_samples == 3 and chunk.newest == 3.0 and chunk.problem() is None

    def test_mismatched_timestamps(self):
        chunk = EventChunk(("a", "b"), np.array([1.0]), StreamSpec.events("m"))
        assert "2 markers but 1 timestamps" in chunk.problem()

    def test_empty(self):
        chunk = EventChunk((), np.zeros(0), StreamSpec.events("m"))
        assert "empty" in chunk.problem()

    def test_non_finite_timestamp(self):
        chunk = EventChunk(("a",), np.array([np.inf]), StreamSpec.events("m"))
        assert "NaN/Inf" in chunk.problem()


# -- RingBuffer ------------------------------------------------------------------------------
def _pointer(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class TestRingBuffer:
    def test_never_reallocates(self):
        rng = np.random.default_rng(1)
        rb = RingBuffer(50, 4)
        data_obj, times_obj = rb._data, rb._times
        data_ptr, times_ptr = _pointer(rb._data), _pointer(rb._times)
        written = 0
        # small writes, wrap-arounds, exact-capacity and larger-than-capacity writes
        sizes = list(rng.integers(0, 30, size=200)) + [50, 51, 123, 1, 49, 200, 0, 7]
        for n in sizes:
            n = int(n)
            rb.write(rng.standard_normal((n, 4)), np.arange(written, written + n, dtype=float))
            written += n
            assert rb._data is data_obj and rb._times is times_obj
            assert _pointer(rb._data) == data_ptr
            assert _pointer(rb._times) == times_ptr
        assert rb.count == written
        assert len(rb) == 50

    @pytest.mark.parametrize("capacity", [1, 7, 32])
    def test_latest_matches_concatenation(self, capacity):
        rng = np.random.default_rng(capacity)
        rb = RingBuffer(capacity, 3)
        all_data, all_times = np.empty((0, 3)), np.empty(0)
        t = 0.0
        for _ in range(120):
            n = int(rng.integers(0, 3 * capacity + 2))
            data = rng.standard_normal((n, 3))
            times = t + np.arange(n) * 0.01
            t += n * 0.01
            rb.write(data, times)
            all_data = np.concatenate([all_data, data])
            all_times = np.concatenate([all_times, times])
            assert len(rb) == min(len(all_times), capacity)
            for k in range(1, len(rb) + 1):
                got, got_t = rb.latest(k)
                np.testing.assert_array_equal(got, all_data[-k:])
                np.testing.assert_array_equal(got_t, all_times[-k:])

    def test_latest_is_a_view(self):
        rb = RingBuffer(10, 2)
        rb.write(np.ones((25, 2)), np.arange(25, dtype=float))  # wrapped several times
        rb.write(np.full((3, 2), 2.0), np.arange(25, 28, dtype=float))
        for n in (1, 3, 10):
            data, times = rb.latest(n)
            assert np.shares_memory(data, rb._data)
            assert np.shares_memory(times, rb._times)
            assert data.base is not None and times.base is not None
            assert data.flags.c_contiguous
        data, _ = rb.latest(10)
        np.testing.assert_array_equal(data[-3:], 2.0)

    def test_dtype_kept(self):
        rb = RingBuffer(4, 2, np.float32)
        rb.write(np.ones((3, 2), dtype=np.float64), np.arange(3, dtype=float))
        assert rb.latest(3)[0].dtype == np.float32

    def test_wrong_channel_count(self):
        rb = RingBuffer(10, 3)
        with pytest.raises(SpecMismatchError, match="3 channels"):
            rb.write(np.zeros((4, 2)), np.zeros(4))

    def test_one_dimensional_data(self):
        rb = RingBuffer(10, 3)
        with pytest.raises(SpecMismatchError):
            rb.write(np.zeros(3), np.zeros(3))

    def test_latest_bounds(self):
        rb = RingBuffer(10, 1)
        with pytest.raises(ValueError):
            rb.latest(1)  # empty
        rb.write(np.zeros((4, 1)), np.zeros(4))
        for n in (0, 5, 11):
            with pytest.raises(ValueError, match="buffer holds 4"):
                rb.latest(n)

    @pytest.mark.parametrize("capacity,n_channels", [(0, 1), (1, 0), (-3, 2)])
    def test_bad_construction(self, capacity, n_channels):
        with pytest.raises(ValueError):
            RingBuffer(capacity, n_channels)
