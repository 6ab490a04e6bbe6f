"""Continuous simulators: velocity-tuned ECoG and a cosine-tuned Poisson population.

Statistics, not only shapes: tuning is recovered by least squares from the
generated data and compared with the generator's ground truth, before and after
drift. Every test is seeded and the whole file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import signal as sps

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.simulators.base import Generator
from bci_runtime.simulators.cursor_task import TRUTH_NAMES
from bci_runtime.simulators.drift import (
    ChannelDropout,
    Drift,
    ElectrodeShift,
    TuningDrift,
    rotate_2d,
)
from bci_runtime.simulators.ecog import EcogGenerator, EcogParams, shift_offset
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.simulators.population import PopulationGenerator, PopulationParams
from bci_runtime.simulators.scalp import RAIL_V
from bci_runtime.simulators.user import UserParams


# -- helpers ------------------------------------------------------------------------------------
def run(gen: Generator, seconds: float, block: int = 1
        ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    """Data (n, n_channels), truth (n, 6) and markers of ``seconds`` of the stream."""
    blocks = [gen.next_block(block) for _ in range(round(seconds * gen.srate / block))]
    return (np.vstack([b.data for b in blocks]), np.vstack([b.truth for b in blocks]),
            [m for b in blocks for m in b.markers])


def fit_cosine(y: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``y ~ b + cx vx + cy vy`` per channel.

    Returns
    -------
    pd : ndarray, shape (n_channels,)
        Fitted preferred directions (rad).
    baseline : ndarray, shape (n_channels,)
    coef : ndarray, shape (3, n_channels)
    """
    x = np.c_[np.ones(len(velocity)), velocity]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return np.arctan2(coef[2], coef[1]), coef[0], coef


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` wrapped to [-pi, pi)."""
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def high_gamma_power(x: np.ndarray, srate: float, bin_s: float = 0.05) -> np.ndarray:
    """70-150 Hz power, averaged in bins, shape (n_bins, n_channels)."""
    sos = sps.butter(4, [70, 150], btype="bandpass", fs=srate, output="sos")
    power = sps.sosfiltfilt(sos, x, axis=0) ** 2
    return bin_mean(power, int(bin_s * srate))


def bin_mean(x: np.ndarray, size: int) -> np.ndarray:
    m = len(x) // size
    return x[:m * size].reshape(m, size, *x.shape[1:]).mean(axis=1)


def held_out_r2(y: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """R² per channel of the cosine fit on the first half, evaluated on the second."""
    half = len(y) // 2
    _, _, coef = fit_cosine(y[:half], velocity[:half])
    pred = np.c_[np.ones(len(y) - half), velocity[half:]] @ coef
    rest = y[half:]
    return 1 - ((rest - pred) ** 2).sum(0) / ((rest - rest.mean(0)) ** 2).sum(0)


def ecog(seed: int = 2, drift: Drift | None = None, **params: object) -> EcogGenerator:
    return EcogGenerator(EcogParams(**params), seed=seed, drift=drift)


# -- stream descriptions --------------------------------------------------------------------------
def test_stream_descriptions() -> None:
    e = make_generator("ecog", {}, seed=0)
    assert e.stream_type == "ECoG" and e.srate == 1000.0 and e.n_channels == 64
    assert e.channel_names[0] == "G01" and e.channel_names[-1] == "G64"
    assert set(e.channel_types) == {"ecog"} and set(e.units) == {"V"}
    assert e.truth_names == TRUTH_NAMES
    gaps = np.diff(np.unique(e.positions[:, 0]))
    np.testing.assert_allclose(gaps, 4.0)  # 4 mm pitch, 8 x 8
    big = make_generator("ecog", {"n_channels": 256, "srate": 2000}, seed=0)
    assert big.channel_names[0] == "G001" and big.channel_names[-1] == "G256"
    assert EcogGenerator.n_units_for(big.params) == 256

    p = make_generator("population", {"n_channels": 128, "srate": 20}, seed=0)
    assert p.stream_type == "Spikes" and p.channel_names[:2] == ("U001", "U002")
    assert set(p.channel_types) == {"spikes"} and set(p.units) == {"count"}
    assert PopulationGenerator.n_units_for(p.params) == 128
    assert p.drift is not None and p.drift.n_units == 128


def test_invalid_parameters_name_the_valid_range() -> None:
    with pytest.raises(ValidationError, match=r"500\.\.2000"):
        EcogParams(srate=250)
    with pytest.raises(ValidationError, match=r"16\.\.256"):
        EcogParams(n_channels=8)
    with pytest.raises(ValidationError, match="bins of 20-50 ms"):
        PopulationParams(srate=100)
    with pytest.raises(ValidationError, match=r"96\.\.192"):
        PopulationParams(n_channels=40)
    with pytest.raises(ValidationError, match="depth"):
        EcogParams(depth=(0.8, 0.3))
    with pytest.raises(ValidationError, match="extra"):
        PopulationParams(n_units=96)
    with pytest.raises(ConfigError, match="bins of 20-50 ms"):
        make_generator("population", {"srate": 10}, seed=0)
    with pytest.raises(ConfigError, match="Drift"):  # built for other counts
        PopulationGenerator(PopulationParams(), drift=Drift([], 96, 0))
    gen = make_generator("population", {}, seed=0)
    with pytest.raises(RunError, match="two finite values"):
        gen.feedback(0.0, np.array([1.0]))


# -- population ---------------------------------------------------------------------------------
def test_population_cosine_tuning_is_recovered() -> None:
    gen = make_generator("population", {"n_channels": 96, "srate": 50}, seed=3)
    counts, truth, _ = run(gen, 120)
    assert counts.shape == (6000, 96) and truth.shape == (6000, 6)
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    pd, baseline, _ = fit_cosine(counts, truth[:, :2])
    err = np.abs(angle_diff(pd, gen.preferred_directions(0.0)))
    assert np.degrees(np.median(err)) < 15
    # the intercept is the baseline rate times the bin
    assert np.corrcoef(baseline * gen.srate, gen.baseline)[0, 1] > 0.95
    # Poisson counts: the residual variance is about the mean count
    resid = counts - np.c_[np.ones(len(truth)), truth[:, :2]] @ fit_cosine(counts, truth[:, :2])[2]
    dispersion = resid.var(axis=0) / counts.mean(axis=0)
    assert 0.85 < np.median(dispersion) < 1.15


def test_tuning_drift_rotates_preferred_directions_and_shifts_baselines() -> None:
    rho, onset = 0.91, 150.0
    n = 192
    drift = Drift([TuningDrift(onset_s=onset, ramp_s=0, rho=rho, baseline_fraction=0.84,
                               baseline_change=0.5, seed=7)], n, n)
    gen = PopulationGenerator(PopulationParams(n_channels=n), seed=4, drift=drift)
    counts, truth, markers = run(gen, 2 * onset, block=5)
    assert any(label.startswith("drift/tuning-drift/start") for label, _ in markers)
    split = int(onset * gen.srate)
    pd1, b1, _ = fit_cosine(counts[:split], truth[:split, :2])
    pd2, b2, _ = fit_cosine(counts[split:], truth[split:, :2])
    expected = np.arccos(rho)  # 24.5 degrees
    true_rotation = angle_diff(gen.preferred_directions(onset + 1), gen.preferred_directions(0))
    np.testing.assert_allclose(np.abs(true_rotation), expected, atol=1e-9)
    rotation = angle_diff(pd2, pd1)
    assert abs(np.degrees(np.median(np.abs(rotation)) - expected)) < 6
    assert np.mean(np.sign(rotation) == np.sign(true_rotation)) > 0.9  # random sense per unit
    shifted = np.abs(b2 - b1) / b1 > 0.15
    assert abs(shifted.mean() - 0.84) < 0.1
    truly_shifted = drift.effects_at(onset + 1).rate_gain != 1.0
    assert np.mean(shifted == truly_shifted) > 0.9


def test_population_dropout_and_make_generator_drift() -> None:
    drift = {"components": [{"kind": "channel-dropout", "onset_s": 2.0, "ramp_s": 0.0,
                             "fraction": 0.1, "mode": "flat", "seed": 1}]}
    gen = make_generator("population", {}, seed=1, drift=drift)
    counts, _, markers = run(gen, 4, block=10)
    flat = gen.drift.effects_at(3.0).dropout == 1
    assert flat.sum() == 10
    after = int(2.0 * gen.srate)
    assert np.all(counts[after:, flat] == 0) and counts[:after, flat].sum() > 0
    assert counts[after:, ~flat].sum() > 0
    assert [label.split()[0] for label, _ in markers if label.startswith("drift/")] == [
        "drift/channel-dropout/start", "drift/channel-dropout/end"]


# -- ECoG ---------------------------------------------------------------------------------------
def test_ecog_high_gamma_follows_velocity_tuning() -> None:
    gen = make_generator("ecog", {"n_channels": 64, "srate": 1000}, seed=2)
    x, truth, _ = run(gen, 60, block=20)
    assert x.shape == (60000, 64) and np.all(np.isfinite(x))
    assert 5e-6 < np.median(x.std(axis=0)) < 100e-6  # tens of microvolts
    power = high_gamma_power(x, gen.srate)
    velocity = bin_mean(truth[:, :2], 50)
    tuned = np.hypot(*gen.tuning_vectors(0.0).T) > 0
    assert 0.45 < tuned.mean() < 0.75  # about 60 % of the electrodes
    r2 = held_out_r2(power, velocity)
    assert np.median(r2[tuned]) > 0.05
    assert np.median(r2[~tuned]) < 0.02
    pd, _, _ = fit_cosine(power, velocity)
    err = np.abs(angle_diff(pd[tuned], gen.preferred_directions(0.0)[tuned]))
    assert np.degrees(np.median(err)) < 20
    # the background is spatially correlated: neighbours far more than distant electrodes
    c = np.corrcoef(x[:, [0, 1, 63]].T)
    assert c[0, 1] > 0.5 > c[0, 2]


def test_ecog_slow_potential_is_tuned() -> None:
    gen = ecog(seed=5, n_channels=16, background_uv=5.0)
    x, truth, _ = run(gen, 60, block=20)
    slow = bin_mean(x, 100)  # 10 Hz bins: the slow potential
    velocity = bin_mean(truth[:, :2], 100)
    assert np.median(held_out_r2(slow, velocity)) > 0.1


def test_ecog_electrode_shift_changes_the_tuning_seen() -> None:
    onset, shift = 20.0, ElectrodeShift(onset_s=20.0, ramp_s=0.0, shift_mm=10.0, seed=3)
    gen = ecog(seed=6, drift=Drift([shift], 64, 64))
    still = ecog(seed=6)
    x, truth, markers = run(gen, 80, block=20)
    y, _, _ = run(still, 80, block=20)
    split = int(onset * gen.srate)
    np.testing.assert_array_equal(x[:split], y[:split])  # nothing changes before the onset
    assert not np.allclose(x[split:], y[split:])
    assert any(label.startswith("drift/electrode-shift/start") for label, _ in markers)
    expected, _ = gen.cortex.at(gen.positions + shift_offset(10.0, 3))
    np.testing.assert_allclose(gen.tuning_vectors(onset + 1), expected)
    # the high gamma after the shift follows the tuning at the displaced positions
    power = high_gamma_power(x[split:], gen.srate)
    velocity = bin_mean(truth[split:, :2], 50)
    pd, _, _ = fit_cosine(power, velocity)
    tuned = (np.hypot(*expected.T) > 0.4) & (np.hypot(*gen.tuning_vectors(0.0).T) > 0.4)
    new = np.median(np.abs(angle_diff(pd[tuned], gen.preferred_directions(onset + 1)[tuned])))
    old = np.median(np.abs(angle_diff(pd[tuned], gen.preferred_directions(0.0)[tuned])))
    assert np.degrees(new) < 20 and new < old


def test_ecog_electrode_shift_ramps() -> None:
    shift = ElectrodeShift(onset_s=1.0, ramp_s=2.0, shift_mm=8.0, seed=1)
    gen = ecog(seed=1, drift=Drift([shift], 64, 64))
    start = gen.tuning_vectors(0.0)
    end, _ = gen.cortex.at(gen.positions + shift_offset(8.0, 1))
    np.testing.assert_allclose(gen.tuning_vectors(2.0), 0.5 * (start + end))


@pytest.mark.parametrize("mode", ["flat", "railed"])
def test_ecog_channel_dropout(mode: str) -> None:
    dropout = ChannelDropout(onset_s=1.0, ramp_s=0.0, fraction=0.25, mode=mode, seed=2)
    gen = ecog(seed=3, drift=Drift([dropout], 64, 64))
    still = ecog(seed=3)
    x, _, _ = run(gen, 2, block=50)
    y, _, _ = run(still, 2, block=50)
    lost = gen.drift.effects_at(1.5).dropout > 0
    assert lost.sum() == 16
    after = int(gen.srate)
    expected = 0.0 if mode == "flat" else RAIL_V
    assert np.all(x[after:, lost] == expected)
    np.testing.assert_array_equal(x[:after], y[:after])
    np.testing.assert_array_equal(x[:, ~lost], y[:, ~lost])  # the others do not notice


def test_ecog_tuning_drift_rotates_electrodes() -> None:
    drift = Drift([TuningDrift(onset_s=1.0, ramp_s=0.0, rho=0.91, seed=1)], 64, 64)
    gen = ecog(seed=4, drift=drift)
    tuned = np.hypot(*gen.tuning_vectors(0.0).T) > 0
    rotation = angle_diff(gen.preferred_directions(2.0), gen.preferred_directions(0.0))[tuned]
    np.testing.assert_allclose(np.abs(rotation), np.arccos(0.91), atol=1e-9)


# -- determinism ---------------------------------------------------------------------------------
@pytest.mark.parametrize("paradigm, seconds, block", [("ecog", 2.0, 20), ("population", 20.0, 3)])
def test_same_seed_same_stream(paradigm: str, seconds: float, block: int) -> None:
    drift = {"scenario": "session-jump", "onset_s": 0.5}

    def stream(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
        return run(make_generator(paradigm, {}, seed=seed, drift=drift), seconds, block)

    a, b, c = stream(11), stream(11), stream(12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


# -- task and user ---------------------------------------------------------------------------------
def test_center_out_open_loop_hits_targets() -> None:
    gen = make_generator("population", {}, seed=8)
    _, truth, markers = run(gen, 60, block=4)
    labels = [label.split()[0].split("/")[0] for label, _ in markers]
    assert labels[0] == "target" and markers[0][1] == 0
    assert labels.count("hit") >= 20 and "timeout" not in labels
    indices = [i for _, i in markers]
    assert indices == sorted(indices) and indices[-1] < len(truth)
    # the cursor follows the intention: its steps are the intended velocity times the bin
    steps = np.diff(truth[:, 2:4], axis=0) * gen.srate
    np.testing.assert_allclose(steps, truth[1:, 0:2], atol=1e-9)
    # every hit happens inside the target it announces
    for label, index in markers:
        if label.startswith("hit/"):
            assert np.hypot(*(truth[index, 2:4] - truth[index, 4:6])) <= 0.15 + 1e-9


def test_center_out_times_out_when_the_decoder_does_not_move() -> None:
    gen = make_generator("population", {}, seed=8)
    markers = []
    for _ in range(int(40 * gen.srate)):
        block = gen.next_block(1)
        markers += block.markers
        gen.feedback((block.start + 1) / gen.srate, np.zeros(2))
    labels = [label.split()[0] for label, _ in markers]
    outer_timeouts = [lb for lb in labels if lb.startswith("timeout/") and lb != "timeout/0"]
    assert len(outer_timeouts) >= 3  # the outer targets are never reached
    assert "hit/0" in labels  # the center is, the cursor sits on it
    assert gen.task.timeouts >= 3
    assert np.hypot(*gen.task.cursor) < 0.01  # moved in the first bin only, before any feedback


@pytest.mark.parametrize("learning_rate", [0.0, 0.02])
def test_user_compensates_a_rotated_decoder(learning_rate: float) -> None:
    gen = make_generator("population", {}, seed=5,
                         user=UserParams(learning_rate=learning_rate))
    rotation = np.array([np.radians(30.0)])
    for _ in range(int(60 * gen.srate)):
        block = gen.next_block(1)
        decoded = rotate_2d(block.truth[-1:, 0:2], rotation)[0]
        gen.feedback((block.start + 1) / gen.srate, decoded)
    assert gen.user.feedback_seen > 2000
    if learning_rate == 0:
        assert gen.user.aim_correction == 0.0
    else:
        assert abs(np.degrees(gen.user.aim_correction) + 30.0) < 3.0
    assert gen.task.hits > 10  # the rotated cursor still gets there
