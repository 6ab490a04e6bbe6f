"""ECoG finger flexion (``kinematics: fingers``): the task, its truth, the somatotopic
high gamma and the simulated user.

Statistics, not only shapes: high-gamma power is measured at each finger's spot
and decoded by least squares, trained on the first half of a seeded recording
and tested on the second.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import signal as sps

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.graph import load_graph_text
from bci_runtime.runner import Runner
from bci_runtime.simulators.cursor_task import TRUTH_NAMES
from bci_runtime.simulators.drift import ChannelDropout, Drift, ElectrodeShift, Fatigue, TuningDrift
from bci_runtime.simulators.ecog import EcogGenerator, EcogParams, shift_offset
from bci_runtime.simulators.fingers import FINGERS, FingerTaskParams
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.simulators.tasks import REST, CuedTrials, TrialTiming
from bci_runtime.simulators.user import UserParams

BIN = 50  # samples: 50 ms at 1 kHz


# -- helpers ------------------------------------------------------------------------------------
def fingers(seed: int = 3, drift: Drift | None = None, user: UserParams | None = None,
            **params: object) -> EcogGenerator:
    return EcogGenerator(EcogParams(kinematics="fingers", **params), seed=seed, drift=drift,
                         user=user)


def run(gen: EcogGenerator, seconds: float, block: int = 20
        ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    """Data (n, n_channels), truth (n, 5) and markers of ``seconds`` of the stream."""
    blocks = [gen.next_block(block) for _ in range(round(seconds * gen.srate / block))]
    return (np.vstack([b.data for b in blocks]), np.vstack([b.truth for b in blocks]),
            [m for b in blocks for m in b.markers])


def bin_mean(x: np.ndarray, size: int = BIN) -> np.ndarray:
    m = len(x) // size
    return x[:m * size].reshape(m, size, *x.shape[1:]).mean(axis=1)


def high_gamma(x: np.ndarray, srate: float) -> np.ndarray:
    """70-150 Hz power (band-pass, squared), averaged in 50 ms bins, (n_bins, n_channels)."""
    sos = sps.butter(4, [70, 150], btype="bandpass", fs=srate, output="sos")
    return bin_mean(sps.sosfiltfilt(sos, x, axis=0) ** 2)


def cued_per_sample(gen: EcogGenerator, n: int) -> np.ndarray:
    return gen.task.class_at(np.arange(n) / gen.srate)


@pytest.fixture(scope="module")
def recording() -> dict[str, object]:
    """200 s of a 64-electrode grid at 1 kHz, flexing the cued fingers."""
    gen = fingers(seed=3)
    x, truth, markers = run(gen, 200)
    power = high_gamma(x, gen.srate)
    centers = (np.arange(len(power)) * BIN + BIN / 2) / gen.srate
    return {"gen": gen, "x": x, "truth": truth, "markers": markers, "power": power,
            "bin_cued": gen.task.class_at(centers), "bin_t": centers}


# -- description and errors ---------------------------------------------------------------------
def test_stream_description_in_fingers_mode() -> None:
    gen = make_generator("ecog", {"kinematics": "fingers"}, seed=0)
    assert gen.truth_names == FINGERS == ("thumb", "index", "middle", "ring", "little")
    assert gen.classes == list(FINGERS)
    assert isinstance(gen.task, CuedTrials) and gen.task.classes == list(FINGERS)
    assert gen.stream_type == "ECoG" and gen.n_channels == 64 and set(gen.units) == {"V"}
    assert gen.somatotopy.spots.shape == (5, 2)
    # the spots run from thumb to little along one axis, about 6 mm apart
    steps = np.diff(gen.somatotopy.spots, axis=0)
    assert np.all((np.hypot(*steps.T) > 4.5) & (np.hypot(*steps.T) < 7.5))
    assert np.all(steps @ steps[0] > 0)
    with pytest.raises(RunError, match="kinematics='cursor'"):
        gen.preferred_directions(0.0)
    # the cursor mode is what it was
    cursor = make_generator("ecog", {}, seed=0)
    assert cursor.truth_names == TRUTH_NAMES and cursor.classes == []
    with pytest.raises(RunError, match="kinematics='fingers'"):
        cursor.finger_weights(0.0)


def test_unknown_kinematics_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"kinematics.*'cursor' or 'fingers'"):
        make_generator("ecog", {"kinematics": "hand"}, seed=0)
    with pytest.raises(ValidationError, match="'cursor' or 'fingers'"):
        EcogParams(kinematics="fingerflex")
    with pytest.raises(ValidationError, match="too short for one flexion"):
        FingerTaskParams(timing=TrialTiming(imagery_s=0.5))
    with pytest.raises(ValidationError, match="rate_hz"):
        FingerTaskParams(rate_hz=(2.0, 1.0))
    with pytest.raises(ConfigError, match="fingers.extra"):
        make_generator("ecog", {"kinematics": "fingers", "fingers": {"extra": 1}}, seed=0)


# -- task, truth and markers --------------------------------------------------------------------
def test_truth_is_smooth_flexion_of_the_cued_finger(recording: dict) -> None:
    gen, truth = recording["gen"], recording["truth"]
    n = len(truth)
    assert truth.shape == (n, 5)
    assert truth.min() >= 0.0 and truth.max() <= 1.0
    # smooth: at most pi * 2 Hz * peak per second, i.e. < 0.01 per sample at 1 kHz
    assert np.abs(np.diff(truth, axis=0)).max() < 0.01
    # not block-constant: it changes within the 20-sample blocks
    within = np.abs(np.diff(truth.reshape(-1, 20, 5), axis=1)).max(axis=(1, 2))
    assert np.mean(within > 0) > 0.2
    cued = cued_per_sample(gen, n)
    assert np.all(truth[cued == REST] == 0.0)  # nothing moves outside the flexing periods
    for f in range(5):
        during = truth[cued == f]
        others = np.delete(during, f, axis=1)
        neighbours = [j for j in (f - 1, f + 1) if 0 <= j < 5]
        far = [j for j in range(5) if j != f and j not in neighbours]
        assert np.all(during[:, far] == 0.0)
        co = during[:, neighbours].max(axis=0) / during[:, f].max()
        assert np.all((co > 0.05) & (co < 0.25))  # co-movement of about 15 %
        assert others.max() < 0.25 and during[:, f].max() > 0.6
    # each trial flexes 1-4 times at 1-2 Hz, each flexion peaking at 0.5-1
    cues = [(FINGERS.index(label[4:]), i) for label, i in recording["markers"]
            if label.startswith("cue/")]
    ends = [i for label, i in recording["markers"] if label == "end"]
    for (f, cue), end in zip(cues, ends):
        flex = truth[cue:end, f]
        peaks, _ = sps.find_peaks(flex, prominence=0.3)
        assert 1 <= len(peaks) <= 4
        assert np.all((flex[peaks] >= 0.5 - 1e-9) & (flex[peaks] <= 1.0))
        assert flex[0] == 0.0 and flex[-1] < 0.05  # starts after a reaction, ends by `end`


def test_markers_follow_the_trial_structure(recording: dict) -> None:
    gen, markers = recording["gen"], recording["markers"]
    tm, fs = gen.params.fingers.timing, gen.srate
    labels = [label for label, _ in markers]
    n_trials = len(labels) // 4
    assert n_trials >= 45
    for k in range(n_trials):
        (a, ia), (b, ib), (c, ic), (d, id_) = markers[4 * k:4 * k + 4]
        assert a == "trial/start" and b.startswith("cue/") and (c, d) == ("end", "trial/end")
        assert b[4:] in FINGERS
        assert ia == round((tm.first_s + k * gen.task.trial_s) * fs)
        assert (ib - ia, ic - ib, id_ - ic) == (round(tm.fixation_s * fs),
                                                round(tm.imagery_s * fs), 0)
    # balanced: every five trials cue each finger once
    cues = [label[4:] for label in labels if label.startswith("cue/")]
    for k in range(0, len(cues) - 4, 5):
        assert sorted(cues[k:k + 5]) == sorted(FINGERS)


# -- the encoding -------------------------------------------------------------------------------
def test_high_gamma_rises_at_the_moving_fingers_spot(recording: dict) -> None:
    gen, power, cued = recording["gen"], recording["power"], recording["bin_cued"]
    smooth = sps.lfilter(np.ones(5) / 5, 1, power, axis=0)  # 250 ms
    rest = smooth[cued == REST].mean(axis=0)
    for f, spot in enumerate(gen.somatotopy.spots):
        e = int(np.argmin(np.hypot(*(gen.positions - spot).T)))
        mean = np.array([smooth[cued == c, e].mean() for c in range(5)])
        others = np.delete(mean, f)
        assert mean[f] > 1.05 * others.max(), (FINGERS[f], mean / rest[e])
        assert mean[f] > 1.5 * rest[e]
    # electrodes far from every spot do not care which finger moves
    far = np.hypot(*(gen.positions[:, None] - gen.somatotopy.spots[None]).T).min(axis=0) > 12
    assert far.sum() >= 4
    ratio = np.array([smooth[cued == c][:, far].mean(axis=0) for c in range(5)]) / rest[far]
    assert np.all(np.abs(ratio - 1) < 0.12)


def test_a_linear_decoder_reads_the_fingers(recording: dict) -> None:
    gen, power, cued = recording["gen"], recording["power"], recording["bin_cued"]
    features = sps.lfilter(np.ones(5) / 5, 1, np.log(power), axis=0)  # causal, 250 ms
    x = np.c_[np.ones(len(features)), features]
    half = len(x) // 2
    first = np.arange(len(x)) < half
    train = first & (cued != REST)
    w, *_ = np.linalg.lstsq(x[train], np.eye(5)[cued[train]], rcond=None)
    # tested while the fingers move: from 0.5 s after the cue (reaction, envelope) to the end
    tm = gen.params.fingers.timing
    since_cue = (recording["bin_t"] - tm.first_s - tm.fixation_s) % gen.task.trial_s
    test = ~first & (cued != REST) & (since_cue > 0.5)
    accuracy = np.mean(np.argmax(x[test] @ w, axis=1) == cued[test])
    assert accuracy > 0.6  # chance: 0.2
    every = ~first & (cued != REST)
    assert np.mean(np.argmax(x[every] @ w, axis=1) == cued[every]) > 0.45
    # and the flexion itself, by least squares on the same features
    flexion = bin_mean(recording["truth"])
    w, *_ = np.linalg.lstsq(x[first], flexion[first], rcond=None)
    decoded = x[~first] @ w
    r = np.array([np.corrcoef(decoded[:, f], flexion[~first, f])[0, 1] for f in range(5)])
    assert np.sum(r > 0.4) >= 3 and r.min() > 0.3, r


def test_slow_potential_follows_flexion() -> None:
    gen = fingers(seed=4, n_channels=16, background_uv=2.0, hg_uv=0.0, line_uv=0.0)
    x, truth, _ = run(gen, 60, block=25)
    slow, flex = bin_mean(x, 100), bin_mean(truth, 100)  # 10 Hz
    coef, *_ = np.linalg.lstsq(np.c_[np.ones(len(flex)), flex], slow, rcond=None)
    expected = gen.somatotopy.at(gen.positions)[1].T * gen.params.lfp_uv * 1e-6  # (5, 16)
    strong = np.abs(expected) > 0.2 * np.abs(expected).max()
    assert strong.sum() >= 10
    fitted, true = coef[1:][strong], expected[strong]
    assert np.corrcoef(fitted, true)[0, 1] > 0.85
    assert 0.7 < (fitted @ true) / (true @ true) < 1.3  # lfp_uv at full flexion


# -- determinism --------------------------------------------------------------------------------
def test_same_seed_same_stream_whatever_the_blocks() -> None:
    a, b, c = (run(fingers(seed=s), 8.0, block=20) for s in (11, 11, 12))
    d = run(fingers(seed=11), 8.0, block=40)
    for u in (b, d):
        np.testing.assert_array_equal(a[0], u[0])
        np.testing.assert_array_equal(a[1], u[1])
        assert a[2] == u[2]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


# -- drift --------------------------------------------------------------------------------------
def test_drift_in_fingers_mode() -> None:
    shift = ElectrodeShift(onset_s=1.0, ramp_s=2.0, shift_mm=6.0, seed=2)
    gen = fingers(seed=5, drift=Drift([shift], 64, 64))
    hg_end, _ = gen.somatotopy.at(gen.positions + shift_offset(6.0, 2))
    np.testing.assert_allclose(gen.finger_weights(10.0), hg_end)
    np.testing.assert_allclose(gen.finger_weights(0.0), gen.somatotopy.at(gen.positions)[0])
    # tuning drift: preferred directions mean nothing here; only the baselines change
    rotate = TuningDrift(onset_s=0.0, ramp_s=0.0, rho=0.5, baseline_fraction=0.0, seed=1)
    turned = run(fingers(seed=5, drift=Drift([rotate], 64, 64)), 3.0)[0]
    still = run(fingers(seed=5), 3.0)[0]
    np.testing.assert_array_equal(turned, still)
    # fatigue shrinks the modulation; dropout flattens channels
    tired = Drift([Fatigue(onset_s=0.0, ramp_s=0.0, modulation_loss=1.0),
                   ChannelDropout(onset_s=1.0, ramp_s=0.0, fraction=0.25, mode="flat")], 64, 64)
    gen = fingers(seed=5, drift=tired)
    x, _, _ = run(gen, 30.0)
    lost = gen.drift.effects_at(2.0).dropout > 0
    assert lost.sum() == 16 and np.all(x[1000:, lost] == 0.0)
    fresh = fingers(seed=5)
    y, _, _ = run(fresh, 30.0)
    weight = np.where(lost[:, None], 0.0, fresh.finger_weights(0.0))
    best = np.argmax(weight, axis=0)  # the working electrode nearest each finger's spot
    cued = fresh.task.class_at((np.arange(len(x) // BIN) * BIN + BIN / 2) / fresh.srate)

    def modulation(data: np.ndarray) -> float:
        p = high_gamma(data, fresh.srate)
        return float(np.mean([p[cued == f, e].mean() / p[cued == REST, e].mean()
                              for f, e in enumerate(best)]))

    assert modulation(x) < 1.1 and modulation(y) > 1.4


# -- the simulated user -------------------------------------------------------------------------
def test_user_tries_harder_when_the_wrong_finger_is_shown() -> None:
    user = UserParams(learning_rate=0.05, max_effort=2.0)
    trying, relaxed = fingers(seed=6, user=user), fingers(seed=6, user=user)
    spots = [int(np.argmin(np.hypot(*(trying.positions - s).T)))
             for s in trying.somatotopy.spots]
    data = {}
    for name, gen in (("trying", trying), ("relaxed", relaxed)):
        blocks = []
        for _ in range(int(40 * gen.srate / 20)):
            block = gen.next_block(20)
            blocks.append(block.data)
            t = (block.start + 20) / gen.srate
            cued = int(gen.task.class_at(np.array([t]))[0])
            if cued != REST:
                wrong = FINGERS[(cued + 2) % 5]
                if name == "trying":
                    gen.feedback(t, wrong)
                else:  # the right finger, as five scores
                    gen.feedback(t, np.eye(5)[cued])
        data[name] = np.vstack(blocks)
    assert trying.user.feedback_seen > 500 and relaxed.user.feedback_seen > 500
    assert np.all(trying.user.effort > 1.8) and np.allclose(relaxed.user.effort, 1.0)
    late = slice(20 * 1000, None)  # once the effort has grown
    p_try = high_gamma(data["trying"][late], 1000.0)[:, spots]
    p_rel = high_gamma(data["relaxed"][late], 1000.0)[:, spots]
    assert np.mean(p_try) > 1.2 * np.mean(p_rel)
    with pytest.raises(RunError, match="5 finite scores"):
        trying.feedback(1.0, np.zeros(2))


# -- in a pipeline ------------------------------------------------------------------------------
def test_fingers_node_closes_the_loop_with_class_feedback() -> None:
    graph = load_graph_text("""
name: sim-fingers
seed: 4
clock: simulated
duration: 4
nodes:
  sim:
    type: simulated_ecog
    params: {n_channels: 32, srate: 1000, chunk_size: 20, kinematics: fingers}
    inputs:
      feedback: {from: decoder.out, delayed: true}
  decoder: {type: test_recorder, inputs: {x: sim.truth}}
  truth: {type: test_collector, inputs: {signal: sim.truth}}
""", "sim-fingers.yaml")
    result = Runner(graph).run()
    assert result.status == "completed", result.reason
    sim = graph.nodes["sim"]
    assert tuple(sim.output_specs["truth"].channel_names) == FINGERS
    assert graph.nodes["truth"].data().shape[1] == 5
    assert sim.summary()["feedback_seen"] > 0
