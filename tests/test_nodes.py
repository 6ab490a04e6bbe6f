"""Nodes tested alone: configure, open, feed chunks, look at what comes out (no scheduler)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nodes_for_tests import configure_alone
from pydantic import ValidationError
from scipy import signal as sps

from bci_runtime.chunk import Chunk, EventChunk
from bci_runtime.decoders.linear import LinearClassifier
from bci_runtime.errors import SpecMismatchError
from bci_runtime.node import Node, NodeContext
from bci_runtime.pipelines.filters import Bandpass
from bci_runtime.pipelines.windows import LogVariance
from bci_runtime.simulators.nodes import SimulatedEeg
from bci_runtime.spec import StreamSpec


def signal_spec(n_channels: int = 4, srate: float = 250.0, dtype: str = "float64") -> StreamSpec:
    return StreamSpec(name="sig", type="EEG", channel_names=tuple(f"ch{i}" for i in range(n_channels)),
                      srate=srate, dtype=dtype, source_id="test")  # type: ignore[arg-type]


def setup(node: Node, inputs: dict[str, StreamSpec] | None = None, seed: int = 0,
          events: list | None = None) -> dict[str, StreamSpec]:
    """Configure and open ``node`` alone; returns its output specs."""
    out = configure_alone(node, inputs)
    context = NodeContext.for_test(node.name, seed)
    if events is not None:
        context.emit_event = lambda kind, **fields: events.append((kind, fields))
    node.open(context)
    return out


def split(total: int, sizes) -> list[tuple[int, int]]:
    """Consecutive (start, stop) bounds covering ``total`` samples with the given sizes."""
    bounds, start = [], 0
    for size in sizes:
        if start >= total:
            break
        stop = min(total, start + int(size))
        bounds.append((start, stop))
        start = stop
    assert start == total
    return bounds


def chunk_sizes(mode: str, total: int, seed: int = 0) -> list[int]:
    if mode == "random":
        return list(np.random.default_rng(seed).integers(1, 38, size=total))
    return [int(mode)] * total


def read_source(node: SimulatedEeg, context: NodeContext, until: float):
    """Read a source on its simulated clock up to ``until``.

    Returns (chunks, markers, owners): ``owners[i]`` is the index of the signal
    chunk read together with ``markers[i]``.
    """
    chunks, markers, owners = [], [], []
    while (due := node.next_due()) is not None and due <= until:
        context.clock.advance_to(due)  # type: ignore[attr-defined]
        out = node.read()
        chunks.append(out["signal"])
        if "markers" in out:
            markers.append(out["markers"])
            owners.append(len(chunks) - 1)
    return chunks, markers, owners


# -- Bandpass --------------------------------------------------------------------------------
class TestBandpass:
    @pytest.mark.parametrize("kind", ["butter", "cheby1", "bessel"])
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_chunked_equals_whole_signal(self, kind, dtype):
        rng = np.random.default_rng(11)
        srate, n_ch, total = 250.0, 4, 3000
        t = np.arange(total) / srate
        x = (rng.standard_normal((total, n_ch)) + 3.0  # a DC offset, to exercise the initial state
             + np.sin(2 * np.pi * 10 * t)[:, None]).astype(dtype)
        node = Bandpass("bp", {"low": 8, "high": 30, "order": 4, "kind": kind})
        out_specs = setup(node, {"signal": signal_spec(n_ch, srate, dtype)})
        assert out_specs["filtered"].dtype == "float64"

        outputs = []
        for start, stop in split(total, rng.integers(1, 40, size=total)):
            chunk = Chunk(x[start:stop], t[start:stop], out_specs["filtered"])
            out = node.process("signal", chunk)["filtered"]
            np.testing.assert_array_equal(out.timestamps, t[start:stop])
            assert out.data.shape == (stop - start, n_ch)
            outputs.append(out.data)
        got = np.concatenate(outputs)

        design = {"butter": lambda: sps.butter(4, [8, 30], btype="bandpass", fs=srate, output="sos"),
                  "cheby1": lambda: sps.cheby1(4, 0.5, [8, 30], btype="bandpass", fs=srate,
                                               output="sos"),
                  "bessel": lambda: sps.bessel(4, [8, 30], btype="bandpass", fs=srate,
                                               output="sos")}[kind]
        sos = design()
        zi = sps.sosfilt_zi(sos)[:, :, None] * x[0].astype(np.float64)[None, None, :]
        expected, _ = sps.sosfilt(sos, x, axis=0, zi=zi)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)

    def test_is_causal(self):
        """Changing the future never changes the past."""
        rng = np.random.default_rng(3)
        x = rng.standard_normal((500, 2))
        y = x.copy()
        y[300:] = rng.standard_normal((200, 2)) * 50
        t = np.arange(500) / 250.0
        results = []
        for data in (x, y):
            node = Bandpass("bp", {"low": 8, "high": 30})
            spec = setup(node, {"signal": signal_spec(2)})["filtered"]
            results.append(np.concatenate([
                node.process("signal", Chunk(data[a:b], t[a:b], spec))["filtered"].data
                for a, b in split(500, [50] * 10)]))
        np.testing.assert_array_equal(results[0][:300], results[1][:300])
        assert not np.allclose(results[0][300:], results[1][300:])

    @pytest.mark.parametrize("high", [125.0, 130.0, 500.0])
    def test_nyquist(self, high):
        node = Bandpass("bp", {"low": 8, "high": high})
        with pytest.raises(SpecMismatchError, match="Nyquist") as info:
            node.configure({"signal": signal_spec(srate=250.0)})
        assert "'bp'" in str(info.value)

    def test_needs_regular_signal(self):
        node = Bandpass("bp", {"low": 8, "high": 30})
        with pytest.raises(SpecMismatchError):
            node.configure({"signal": StreamSpec.events("m")})
        with pytest.raises(SpecMismatchError):
            node.configure({"signal": signal_spec(srate=0.0)})

    def test_low_above_high_is_a_parameter_error(self):
        with pytest.raises(ValidationError, match="must be below"):
            Bandpass("bp", {"low": 30, "high": 8})


# -- LogVariance -----------------------------------------------------------------------------
def logvar_reference(x: np.ndarray, ts: np.ndarray, n: int, ends: list[int]):
    feats = np.array([np.log(np.var(x[e - n:e], axis=0)) for e in ends])
    return feats, ts[np.asarray(ends) - 1]


class TestLogVariance:
    SRATE = 250.0

    def run(self, x, ts, params, sizes):
        node = LogVariance("lv", params)
        spec = setup(node, {"signal": signal_spec(x.shape[1], self.SRATE)})["features"]
        rows, stamps = [], []
        for start, stop in split(len(ts), sizes):
            out = node.process("signal", Chunk(x[start:stop], ts[start:stop], spec))
            if out:
                feats = out["features"]
                assert feats.data.shape == (feats.timestamps.shape[0], x.shape[1])
                rows.append(feats.data)
                stamps.append(feats.timestamps)
        return np.concatenate(rows), np.concatenate(stamps)

    @pytest.mark.parametrize("mode", ["1", "2", "37", "random"])
    @pytest.mark.parametrize("window_s", [0.2, 0.008])
    def test_step_zero_one_window_per_chunk(self, mode, window_s):
        rng = np.random.default_rng(5)
        total = 1200
        x = rng.standard_normal((total, 3)) * rng.uniform(0.5, 3, size=3)
        ts = 100.0 + np.arange(total) / self.SRATE
        n = int(round(window_s * self.SRATE))
        sizes = chunk_sizes(mode, total, seed=17)
        ends = [stop for _, stop in split(total, sizes) if stop >= n]
        got, got_t = self.run(x, ts, {"window_s": window_s, "step_s": 0.0}, sizes)
        expected, expected_t = logvar_reference(x, ts, n, ends)
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        np.testing.assert_array_equal(got_t, expected_t)

    @pytest.mark.parametrize("mode", ["1", "3", "37", "random"])
    @pytest.mark.parametrize("step_s", [0.004, 0.04, 0.1, 0.3])
    def test_step_windows_at_fixed_hops(self, mode, step_s):
        rng = np.random.default_rng(6)
        total = 1500
        x = rng.standard_normal((total, 2)) * np.linspace(1, 4, total)[:, None]
        ts = np.arange(total) / self.SRATE
        n, step = 50, int(round(step_s * self.SRATE))  # window 0.2 s
        sizes = chunk_sizes(mode, total, seed=23)
        ends = [e for e in range(step, total + 1, step) if e >= n]
        got, got_t = self.run(x, ts, {"window_s": 0.2, "step_s": step_s}, sizes)
        expected, expected_t = logvar_reference(x, ts, n, ends)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-10)
        np.testing.assert_array_equal(got_t, expected_t)

    def test_output_spec(self):
        node = LogVariance("lv", {"window_s": 0.5})
        out = node.configure({"signal": signal_spec(3)})["features"]
        assert out.channel_names == ("ch0-logvar", "ch1-logvar", "ch2-logvar")
        assert out.srate == 0 and out.dtype == "float64" and out.n_channels == 3

    def test_window_too_short(self):
        node = LogVariance("lv", {"window_s": 0.004})
        with pytest.raises(SpecMismatchError, match="under two samples"):
            node.configure({"signal": signal_spec(srate=250.0)})


# -- LinearClassifier ------------------------------------------------------------------------
def features_spec(n: int) -> StreamSpec:
    return StreamSpec(name="feats", type="Features", channel_names=tuple(f"f{i}" for i in range(n)),
                      srate=0.0)


class TestLinearClassifierFixed:
    def test_binary_logistic(self):
        w, b = [0.5, -1.25, 2.0], 0.3
        node = LinearClassifier("dec", {"classes": ["left", "right"], "weights": [w], "bias": [b]})
        out_spec = setup(node, {"features": features_spec(3)})["decision"]
        assert out_spec.channel_names == ("left", "right")
        x = np.random.default_rng(0).standard_normal((20, 3))
        ts = np.arange(20) * 0.1
        out = node.process("features", Chunk(x, ts, features_spec(3)))["decision"]
        np.testing.assert_array_equal(out.timestamps, ts)
        assert out.spec == out_spec
        for row, probs in zip(x, out.data):
            score = sum(wi * xi for wi, xi in zip(w, row)) + b
            p_right = 1.0 / (1.0 + math.exp(-score))
            assert probs[1] == pytest.approx(p_right, abs=1e-12)
            assert probs[0] == pytest.approx(1.0 - p_right, abs=1e-12)

    def test_multiclass_softmax(self):
        classes = ["left", "right", "feet"]
        w = [[1.0, 0.0], [0.0, 1.0], [-1.0, -2.0]]
        b = [0.0, 0.5, -0.25]
        node = LinearClassifier("dec", {"classes": classes, "weights": w, "bias": b})
        setup(node, {"features": features_spec(2)})
        x = np.random.default_rng(1).standard_normal((15, 2)) * 10  # large scores: stability
        out = node.process("features", Chunk(x, np.arange(15.0), features_spec(2)))["decision"]
        assert out.data.shape == (15, 3)
        for row, probs in zip(x, out.data):
            scores = [sum(wi * xi for wi, xi in zip(wk, row)) + bk for wk, bk in zip(w, b)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            expected = [e / sum(exps) for e in exps]
            np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(out.data.sum(axis=1), 1.0)

    def test_default_bias_is_zero(self):
        node = LinearClassifier("dec", {"weights": [[1.0, 1.0]]})
        setup(node, {"features": features_spec(2)})
        out = node.process("features", Chunk(np.zeros((1, 2)), np.zeros(1), features_spec(2)))
        np.testing.assert_allclose(out["decision"].data, [[0.5, 0.5]])

    def test_markers_are_absorbed(self):
        node = LinearClassifier("dec", {"weights": [[1.0]]})
        setup(node, {"features": features_spec(1), "labels": StreamSpec.events("m")})
        assert node.process("labels", EventChunk.single("cue/left", 1.0, StreamSpec.events("m"))) is None

    def test_weight_width_mismatch(self):
        node = LinearClassifier("dec", {"weights": [[1.0, 2.0]]})
        with pytest.raises(SpecMismatchError, match="3 features"):
            node.configure({"features": features_spec(3)})

    def test_weight_rows_checked(self):
        with pytest.raises(ValidationError, match="row"):
            LinearClassifier("dec", {"classes": ["a", "b", "c"], "weights": [[1.0]]})
        with pytest.raises(ValidationError, match="bias"):
            LinearClassifier("dec", {"weights": [[1.0]], "bias": [0.0, 1.0]})


class TestLinearClassifierCalibration:
    def test_calibrates_above_chance(self):
        """SimulatedEeg -> Bandpass -> LogVariance -> LinearClassifier, nodes called directly."""
        events: list = []
        eeg = SimulatedEeg("eeg", {"n_channels": 8, "erd": 0.4, "timing": {
            "fixation_s": 0.5, "imagery_s": 2.5, "rest_s": 1.0}})
        eeg_specs = configure_alone(eeg)
        context = NodeContext.for_test("eeg", seed=3)
        eeg.open(context)
        bp = Bandpass("bp", {"low": 8, "high": 30})
        bp_spec = setup(bp, {"signal": eeg_specs["signal"]})["filtered"]
        lv = LogVariance("lv", {"window_s": 1.0, "step_s": 0.1})
        lv_spec = setup(lv, {"signal": bp_spec})["features"]
        dec = LinearClassifier("dec", {"calibration_s": 40, "min_windows": 10})
        setup(dec, {"features": lv_spec, "labels": eeg_specs["markers"]}, events=events)

        decisions = []
        while (due := eeg.next_due()) <= 60.0:
            context.clock.advance_to(due)  # type: ignore[attr-defined]
            out = eeg.read()
            if "markers" in out:  # the executor delivers them first, as here
                assert dec.process("labels", out["markers"]) is None
            feats = lv.process("signal", bp.process("signal", out["signal"])["filtered"])
            if feats:
                was_trained = dec.coef_ is not None
                dec_out = dec.process("features", feats["features"])
                if dec_out:
                    decisions.append(dec_out["decision"])
                else:
                    assert not was_trained  # silent only while calibrating

        assert dec.coef_ is not None and dec.coef_.shape == (1, 8)
        training = dec.training
        assert training is not None
        assert training["trials"] >= 5
        assert min(training["windows_per_class"]) >= 10
        assert training["chance"] == 0.5
        assert training["cv_accuracy"] is not None and training["cv_accuracy"] > 0.7
        assert [kind for kind, _ in events] == ["decoder_trained"]
        assert events[0][1]["cv_accuracy"] == training["cv_accuracy"]
        assert decisions, "the decoder went online after calibration"
        assert decisions[0].timestamps[0] >= 40.0
        # online decisions agree with the truth more often than chance
        probs = np.concatenate([d.data for d in decisions])
        times = np.concatenate([d.timestamps for d in decisions])
        truth = np.array(eeg.true_labels(times - 0.5))  # label the window's middle
        cued = truth != "rest"
        predicted = np.array(["left", "right"])[probs.argmax(axis=1)]
        assert (predicted[cued] == truth[cued]).mean() > 0.6
        assert dec.summary()["trained"] is True

    def test_needs_labels_or_weights(self):
        dec = LinearClassifier("dec", {"calibration_s": 1.0})
        with pytest.raises(SpecMismatchError, match="'labels' is not connected"):
            dec.bind({"features": features_spec(2)})

    def test_waits_for_enough_windows(self):
        """Without any cue the decoder never trains, says so once, and stays silent."""
        events: list = []
        dec = LinearClassifier("dec", {"calibration_s": 1.0})
        setup(dec, {"features": features_spec(2), "labels": StreamSpec.events("cues")},
              events=events)
        rng = np.random.default_rng(0)
        for k in range(50):
            out = dec.process("features", Chunk(rng.standard_normal((1, 2)), np.array([k * 0.1]),
                                                features_spec(2)))
            assert out is None
        assert dec.coef_ is None
        assert [kind for kind, _ in events] == ["calibration_extended"]


# -- the node API as documented --------------------------------------------------------------
def test_documented_standalone_usage():
    node = Bandpass("bp", {"low": 8, "high": 30})
    spec = signal_spec(2)
    node.bind({"signal": spec})
    node.open(NodeContext.for_test())
    out = node.process("signal", Chunk(np.zeros((4, 2)), np.arange(4) / 250.0, spec))
    assert out["filtered"].data.shape == (4, 2)
