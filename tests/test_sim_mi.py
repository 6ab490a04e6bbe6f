"""The motor-imagery simulator: statistics of its signals, drift, ground truth, the user.

Most tests drive the generator directly (plain numpy); the node tests go through
``SimulatedEeg`` on a simulated clock.
"""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest
from mne.decoding import CSP
from nodes_for_tests import configure_alone
from scipy import signal as sps
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline

from bci_runtime.errors import ConfigError
from bci_runtime.node import NodeContext
from bci_runtime.simulators.drift import Drift, DriftEffects, Transport, preset
from bci_runtime.simulators.motor_imagery import MotorImageryEeg, MotorImageryParams
from bci_runtime.simulators.nodes import SimulatedEeg
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.simulators.scalp import RAIL_V
from bci_runtime.simulators.user import SimulatedUser, UserParams

mne.set_log_level("ERROR")
FS = 250.0
BLOCK = 25


def generate(seconds: float, seed: int = 3, scenario: str = "stationary", onset_s: float = 0.0,
             ramp_s: float = 60.0, **params):
    """Run a generator for ``seconds``; returns (data (n, ch), truth (n,), markers, generator)."""
    p = MotorImageryParams(srate=FS, **params)
    drift = Drift(preset(scenario, onset_s=onset_s, ramp_s=ramp_s, seed=seed), p.n_channels)
    gen = MotorImageryEeg(p, seed=seed, drift=drift)
    blocks = [gen.next_block(BLOCK) for _ in range(int(seconds * FS / BLOCK))]
    data = np.concatenate([b.data for b in blocks])
    truth = np.concatenate([b.truth[:, 0] for b in blocks])
    markers = [m for b in blocks for m in b.markers]
    return data, truth, markers, gen


def epochs(data: np.ndarray, markers, tmin: float = 0.5, tmax: float = 2.5):
    """Band-passed (8-30 Hz) epochs after each cue: X (n_trials, n_ch, n_times), y (n_trials,)."""
    sos = sps.butter(4, [8, 30], btype="bandpass", fs=FS, output="sos")
    filtered = sps.sosfilt(sos, data, axis=0)
    a, b = int(tmin * FS), int(tmax * FS)
    cues = [(label[4:], i) for label, i in markers
            if label.startswith("cue/") and i + b <= len(data)]
    x = np.stack([filtered[i + a:i + b].T for _, i in cues])
    return x, np.array([c for c, _ in cues]), np.array([i for _, i in cues])


def csp_lda():
    return make_pipeline(CSP(n_components=4), LinearDiscriminantAnalysis())


# -- ERD and decoding ------------------------------------------------------------------------
def test_erd_lowers_mu_power_over_the_contralateral_hand_area():
    data, truth, markers, gen = generate(240, seed=5)
    names = gen.channel_names
    c3, c4 = names.index("C3"), names.index("C4")
    sos = sps.butter(4, [8, 13], btype="bandpass", fs=FS, output="sos")
    mu = sps.sosfiltfilt(sos, data, axis=0) ** 2
    left, right = truth == gen.classes.index("left"), truth == gen.classes.index("right")
    p_left, p_right = mu[left].mean(axis=0), mu[right].mean(axis=0)
    # left-hand imagery desynchronises the right hand area (C4), and vice versa
    assert p_left[c4] < 0.75 * p_right[c4]
    assert p_right[c3] < 0.75 * p_left[c3]
    # a far-away channel changes much less
    oz = names.index("Oz")
    contrast = np.abs(np.log(p_left / p_right))
    assert contrast[oz] < 0.5 * contrast[c4]


def test_csp_lda_reaches_85_percent_on_held_out_stationary_trials():
    data, _, markers, _ = generate(700, seed=11)
    x, y, _ = epochs(data, markers)
    half = len(y) // 2
    assert half >= 50
    clf = csp_lda().fit(x[:half], y[:half])
    accuracy = clf.score(x[half:], y[half:])
    assert accuracy >= 0.85, accuracy


@pytest.mark.parametrize("classes", [["left", "right", "feet"],
                                     ["left", "right", "feet", "tongue"]])
def test_more_classes_are_decodable_above_chance(classes):
    data, _, markers, _ = generate(600, seed=4, classes=classes, n_channels=32)
    x, y, _ = epochs(data, markers)
    half = len(y) // 2
    clf = csp_lda().fit(x[:half], y[:half])
    assert clf.score(x[half:], y[half:]) > 1.0 / len(classes) + 0.2


DRIFTS = ["electrode-shift", "impedance-drift", "channel-dropout", "fatigue", "session-jump",
          "day-to-day"]


def static_decoder_accuracy(scenario: str, seed: int) -> float:
    """Train CSP+LDA before the drift (first 400 s), test after it has fully set in.

    The drift draws from its own generator, so a run with and without it shares
    every other random draw: the difference in accuracy is the drift's doing.
    """
    data, _, markers, _ = generate(800, seed=seed, scenario=scenario, onset_s=400, ramp_s=60)
    x, y, at = epochs(data, markers)
    train, test = at < 400 * FS, at >= 460 * FS
    return csp_lda().fit(x[train], y[train]).score(x[test], y[test])


def test_each_drift_preset_degrades_a_static_decoder():
    seeds = (11, 12)
    baseline = np.mean([static_decoder_accuracy("stationary", s) for s in seeds])
    assert baseline >= 0.85
    drop = {name: round(baseline - np.mean([static_decoder_accuracy(name, s) for s in seeds]), 3)
            for name in DRIFTS}
    degraded = {name: d for name, d in drop.items() if d >= 0.05}
    assert degraded == drop, f"drop in accuracy per preset: {drop}"


# -- ground truth ----------------------------------------------------------------------------
def test_markers_describe_each_trial_and_agree_with_the_truth_column():
    _, truth, markers, gen = generate(90, seed=9, classes=["left", "right", "feet"])
    timing = gen.params.timing
    trial = [(label, i) for label, i in markers if not label.startswith(("artifact/", "drift/"))]
    labels = [label for label, _ in trial]
    assert labels[:4] == ["trial/start", labels[1], "end", "trial/end"]
    for k in range(0, len(labels) - 3, 4):
        start, cue, end, stop = trial[k:k + 4]
        assert start[0] == "trial/start" and cue[0].startswith("cue/")
        assert end[0] == "end" and stop[0] == "trial/end"
        assert cue[1] - start[1] == round(timing.fixation_s * FS)
        assert end[1] - cue[1] == round(timing.imagery_s * FS)
        cls = gen.classes.index(cue[0][4:])
        assert (truth[cue[1]:end[1]] == cls).all()
        assert truth[end[1]] == -1 and truth[cue[1] - 1] == -1
    cues = [label[4:] for label in labels if label.startswith("cue/")]
    for k in range(0, len(cues) - 2, 3):  # balanced blocks of the three classes
        assert sorted(cues[k:k + 3]) == ["feet", "left", "right"]


def test_drift_markers_say_what_changed_when_and_by_how_much():
    _, _, markers, _ = generate(40, scenario="electrode-shift", onset_s=10, ramp_s=20)
    drift = [(label, i) for label, i in markers if label.startswith("drift/")]
    assert [label.split(" ")[0] for label, _ in drift] == ["drift/electrode-shift/start",
                                                           "drift/electrode-shift/end"]
    assert [i for _, i in drift] == [10 * FS, 30 * FS]
    details = json.loads(drift[0][0].split(" ", 1)[1])
    assert details["shift_mm"] == 20.0 and details["ramp_s"] == 20.0


def test_blinks_are_frontal_and_announced():
    data, _, markers, gen = generate(120, seed=2, blink_rate_hz=0.5, n_channels=32)
    names = gen.channel_names
    onsets = [i for label, i in markers if label == "artifact/blink"]
    assert len(onsets) > 20
    fp1, oz = names.index("Fp1"), names.index("Oz")
    # 0.1-0.4 s after a blink starts: large frontal deflection, none at the back
    lows = sps.sosfiltfilt(sps.butter(2, 4, fs=FS, output="sos"), data, axis=0)
    peaks = np.array([lows[i + 25:i + 100].max(axis=0) - lows[max(0, i - 50):i].mean(axis=0)
                      for i in onsets if i + 100 < len(data)])
    assert np.median(peaks[:, fp1]) > 40e-6
    assert np.median(peaks[:, oz]) < 5e-6


def test_line_noise_at_the_configured_mains_frequency():
    for mains in (50, 60):
        data, _, _, _ = generate(20, seed=1, line_freq=mains, line_uv=5.0)
        f, pxx = sps.welch(data[:, 0], fs=FS, nperseg=1024)
        at = pxx[np.argmin(np.abs(f - mains))]
        around = np.median(pxx[(np.abs(f - mains) > 3) & (np.abs(f - mains) < 10)])
        assert at > 20 * around


# -- drift components --------------------------------------------------------------------------
def test_channel_dropout_makes_channels_flat_railed_or_noisy():
    data, _, _, gen = generate(60, scenario="channel-dropout", onset_s=10, ramp_s=20)
    end = data[40 * int(FS):]
    flat = np.all(end == 0.0, axis=0)
    railed = np.all(end == RAIL_V, axis=0)
    dead = flat | railed
    assert dead.any()
    assert not np.any(data[:10 * int(FS)] == RAIL_V)
    lost = gen.drift.effects_at(60.0).dropout
    assert (lost > 0).sum() == round(0.25 * gen.n_channels)
    np.testing.assert_array_equal(flat, lost == 1)
    np.testing.assert_array_equal(railed, lost == 2)


def test_impedance_drift_changes_gain_and_noise_of_some_channels():
    """Paired with a drift-free run of the same seed: only the hit channels differ, by their
    gain and by added noise of the announced size."""
    kw = {"seed": 6, "blink_rate_hz": 0.0, "emg_rate_hz": 0.0}
    drifted, _, _, gen = generate(120, scenario="impedance-drift", onset_s=20, ramp_s=40, **kw)
    clean, _, _, _ = generate(120, **kw)
    np.testing.assert_array_equal(drifted[: 20 * int(FS)], clean[: 20 * int(FS)])
    e = gen.drift.effects_at(100.0)
    hit = e.noise_scale > 1.0
    assert hit.sum() == round(0.3 * gen.n_channels)
    after = slice(60 * int(FS), None)
    np.testing.assert_array_equal(drifted[after][:, ~hit], clean[after][:, ~hit])
    added = drifted[after][:, hit] / e.gain[hit] - clean[after][:, hit]
    expected = (e.noise_scale[hit] - 1.0) * gen.params.sensor_noise_uv * 1e-6
    np.testing.assert_allclose(added.std(axis=0), expected, rtol=0.05)
    assert np.all(np.abs(e.gain[hit] - 1.0) <= 0.5) and np.any(e.gain[hit] != 1.0)


def test_fatigue_weakens_the_erd():
    _, _, _, gen = generate(1, scenario="fatigue", onset_s=0, ramp_s=10)
    assert gen.drift.effects_at(20.0).modulation == pytest.approx(0.5)
    assert gen.drift.effects_at(20.0).alpha == pytest.approx(1.6)
    assert gen.drift.effects_at(5.0).modulation == pytest.approx(0.75)


def test_drift_components_are_independent_of_each_other():
    """Adding a component does not change what another one draws."""
    alone = Drift(preset("impedance-drift", seed=3), 16).effects_at(200.0)
    both = Drift(preset("impedance-drift", seed=3) + preset("fatigue", seed=3), 16)
    both = both.effects_at(200.0)
    np.testing.assert_array_equal(alone.gain, both.gain)
    np.testing.assert_array_equal(alone.noise_scale, both.noise_scale)


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_same_data_other_seed_other_data():
    a = generate(20, seed=4, scenario="day-to-day", onset_s=5)
    b = generate(20, seed=4, scenario="day-to-day", onset_s=5)
    c = generate(20, seed=5, scenario="day-to-day", onset_s=5)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


# -- the simulated user --------------------------------------------------------------------------
def test_user_sees_feedback_after_the_visual_delay_and_learns_from_errors():
    user = SimulatedUser(UserParams(delay_s=0.2, learning_rate=0.2), 2, ["left", "right"])
    user.show(1.0, "right")
    user.perceive(1.1, cued=0)
    assert user.feedback_seen == 0  # not yet visible
    user.perceive(1.2, cued=0)
    assert user.feedback_seen == 1
    assert user.effort[0] > 1.0 and user.effort[1] == 1.0  # tries harder at 'left'
    effort = user.effort[0]
    for k in range(30):
        user.show(2.0 + k, "right")
        user.perceive(2.3 + k, cued=0)
    assert effort < user.effort[0] <= user.params.max_effort


def test_a_fixed_user_does_not_change():
    user = SimulatedUser(UserParams(learning_rate=0.0), 2, ["left", "right"])
    for k in range(10):
        user.show(k, "right")
        user.perceive(k + 1.0, cued=0)
    assert user.feedback_seen == 10
    np.testing.assert_array_equal(user.effort, [1.0, 1.0])


def test_a_learning_user_strengthens_its_erd():
    """Always shown the wrong class, the user's ERD for the cued class deepens."""
    p = MotorImageryParams(srate=FS, classes=["left", "right"])
    gen = MotorImageryEeg(p, seed=1, user=UserParams(learning_rate=0.3))
    for _ in range(int(60 * FS / BLOCK)):
        block = gen.next_block(BLOCK)
        cued = int(block.truth[-1, 0])
        if cued >= 0:
            wrong = gen.classes[1 - cued]
            gen.feedback(block.start / FS, wrong)
    assert np.all(gen.user.effort > 1.3)


# -- the node --------------------------------------------------------------------------------
def read_node(node: SimulatedEeg, context: NodeContext, until: float):
    outs = []
    while (due := node.next_due()) is not None and due <= until:
        context.clock.advance_to(due)  # type: ignore[attr-defined]
        outs.append(node.read())
    return outs


def open_node(params: dict, seed: int = 0) -> tuple[SimulatedEeg, NodeContext]:
    node = SimulatedEeg("eeg", {"n_channels": 8, "chunk_size": 10, **params})
    configure_alone(node)
    context = NodeContext.for_test("eeg", seed=seed)
    node.open(context)
    return node, context


def test_node_streams_regular_chunks_with_truth_and_markers_on_sample_times():
    node, context = open_node({"dtype": "float32"})
    outs = read_node(node, context, 20.0)
    spec = node.output_specs["signal"]
    assert spec.channel_names[:3] == ("C3", "C4", "Cz") and spec.units == ("V",) * 8
    signal = [o["signal"] for o in outs]
    assert all(c.problem() is None and c.data.dtype == np.float32 for c in signal)
    ts = np.concatenate([c.timestamps for c in signal])
    assert ts[0] == 0.0
    np.testing.assert_allclose(np.diff(ts), 1 / FS, rtol=1e-9)
    truth = np.concatenate([o["truth"].data[:, 0] for o in outs])
    assert truth.shape == ts.shape and set(np.unique(truth)) == {-1.0, 0.0, 1.0}
    grid = set(np.round(ts * FS).astype(int).tolist())
    for o in outs:
        if "markers" in o:
            assert set(np.round(o["markers"].timestamps * FS).astype(int).tolist()) <= grid
    cues = [(m, t) for o in outs if "markers" in o
            for m, t in zip(o["markers"].markers, o["markers"].timestamps) if m.startswith("cue/")]
    assert node.true_labels(np.array([t for _, t in cues]) + 0.1) == [m[4:] for m, _ in cues]


def test_node_is_deterministic_for_a_seed():
    a = read_node(*open_node({}, seed=42), 10.0)
    b = read_node(*open_node({}, seed=42), 10.0)
    c = read_node(*open_node({}, seed=43), 10.0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["signal"].data, y["signal"].data)
    assert not np.array_equal(a[0]["signal"].data, c[0]["signal"].data)


def test_node_transport_faults_drop_chunks_and_jump_the_clock():
    drift = {"components": [{"kind": "transport", "onset_s": 5.0, "ramp_s": 0.0,
                             "drop_prob": 0.3, "jitter_ms": 0.0, "clock_jump_s": 2.0}]}
    node, context = open_node({"drift": drift}, seed=1)
    outs = read_node(node, context, 30.0)
    signal = [o["signal"] for o in outs if "signal" in o]
    assert node.dropped_chunks > 0
    assert len(signal) + node.dropped_chunks == len(outs)
    assert node.summary()["dropped_chunks"] == node.dropped_chunks
    late = [c for c in signal if c.timestamps[0] >= 5.0]
    # after the onset every timestamp is 2 s ahead of the sample's true time
    for chunk in late:
        truth = outs[[id(o.get("signal")) for o in outs].index(id(chunk))]["truth"].timestamps
        np.testing.assert_allclose(chunk.timestamps - truth, 2.0)


def test_node_feedback_reaches_the_simulated_user():
    node, context = open_node({"user": {"delay_s": 0.2}})
    read_node(node, context, 2.0)
    from bci_runtime.chunk import Chunk
    from bci_runtime.spec import StreamSpec

    spec = StreamSpec(name="dec", type="Decision", channel_names=("left", "right"), srate=0.0,
                      source_id="dec")
    node.process("feedback", Chunk(np.array([[0.2, 0.8]]), np.array([2.0]), spec))
    assert node.generator.user.last_seen() == "right"
    read_node(node, context, 3.0)
    assert node.summary()["feedback_seen"] == 1


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "drift", "says"), [
    ({"srate": -250}, None, "srate"),
    ({"classes": ["left", "right", "feet", "tongue", "left"]}, None,
     "5 classes requested, but the simulator has sources for 4: left, right, feet, tongue"),
    ({"classes": ["left", "jaw"]}, None, "unknown class(es) jaw; valid classes: left, right"),
    ({"n_channels": 300}, None, "n_channels"),
    ({"n_channels": 8, "channels": ["C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "X9"]}, None,
     "X9"),
    ({}, {"scenario": "earthquake"}, "stationary, electrode-shift"),
    ({}, {"rho": 1.2}, "rho"),
])
def test_invalid_parameters_say_what_is_valid(params, drift, says):
    with pytest.raises(ConfigError) as err:
        make_generator("mi", params, drift=drift)
    assert says in str(err.value)


def test_unknown_paradigm_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        make_generator("fmri")
    assert "mi, ssvep, ecog, population" in str(err.value.hint)


def test_neutral_effects_change_nothing():
    e = DriftEffects.neutral(4, 3)
    assert e.modulation == 1.0 and not e.dropout.any() and not e.shifts
    assert Transport().kind == "transport"


def test_a_subject_seed_keeps_the_subject_across_runs_of_other_seeds():
    params = MotorImageryParams(n_channels=8, subject_seed=42)
    a, b = MotorImageryEeg(params, seed=1), MotorImageryEeg(params, seed=2)
    other = MotorImageryEeg(MotorImageryParams(n_channels=8, subject_seed=43), seed=1)
    # the same head and sources (the same patient)...
    np.testing.assert_array_equal(a._mixing.base, b._mixing.base)
    assert not np.allclose(a._mixing.base, other._mixing.base)
    # ...but another day's noise and cue order
    assert not np.allclose(a.next_block(500).data, b.next_block(500).data)
