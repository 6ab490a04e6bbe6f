"""The SSVEP generator: decodable by standard CCA, spectral peaks, latency, drift, bad input.

Statistics on seeded recordings of the default setup (8 occipital channels at
250 Hz, stimuli at 8.57, 10, 12 and 15 Hz plus a rest class).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bci_runtime.errors import ConfigError
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.simulators.ssvep import SsvepEeg, SsvepParams, class_name

SEED = 0
QUIET = {"alpha_uv": 0.0, "background_uv": 0.0, "sensor_noise_uv": 0.0, "line_uv": 0.0,
         "blink_uv": 0.0, "emg_uv": 0.0}  # nothing but the SSVEP


def record(gen: SsvepEeg, seconds: float, block: int = 50
           ) -> tuple[np.ndarray, list[tuple[str, int]], np.ndarray]:
    """Data (n, n_channels) in uV, markers, truth (n,) of the first ``seconds``."""
    data, markers, truth = [], [], []
    for _ in range(int(np.ceil(seconds * gen.srate / block))):
        b = gen.next_block(block)
        data.append(b.data)
        markers += b.markers
        truth.append(b.truth[:, 0])
    return np.vstack(data) * 1e6, markers, np.concatenate(truth)


def cues(gen: SsvepEeg, markers: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """(class index, sample) of every cue."""
    return [(gen.classes.index(m[4:]), i) for m, i in markers if m.startswith("cue/")]


def windows(data: np.ndarray, onsets: list[tuple[int, int]], srate: float, start_s: float,
            length_s: float) -> list[tuple[int, np.ndarray]]:
    """(class, segment (n, n_channels)) from ``start_s`` after each cue, complete ones only."""
    a, n = round(start_s * srate), round(length_s * srate)
    return [(c, data[i + a:i + a + n]) for c, i in onsets if i + a + n <= len(data)]


def references(f: float, srate: float, n: int, harmonics: int = 2) -> np.ndarray:
    """Sine and cosine at ``f`` and its harmonics, shape (n, 2 * harmonics)."""
    t = np.arange(n) / srate
    return np.column_stack([fn(2 * np.pi * h * f * t) for h in range(1, harmonics + 1)
                            for fn in (np.sin, np.cos)])


def canonical_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Largest canonical correlation between the columns of ``x`` and ``y`` (QR + SVD)."""
    qx, _ = np.linalg.qr(x - x.mean(axis=0))
    qy, _ = np.linalg.qr(y - y.mean(axis=0))
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False)[0])


def power_spectrum(segments: list[np.ndarray], srate: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean Hann-windowed power spectrum of 1-D segments, zero-padded 8x: (freqs, power)."""
    x = np.array(segments)
    n = x.shape[1]
    power = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n, axis=1)) ** 2
    return np.fft.rfftfreq(8 * n, 1 / srate), power.mean(axis=0)


def peak_snr(freqs: np.ndarray, power: np.ndarray, f: float) -> float:
    """Power at ``f`` over the mean power 0.8-1.6 Hz away on both sides."""
    distance = np.abs(freqs - f)
    neighbours = (distance >= 0.8) & (distance <= 1.6)
    return float(power[np.argmin(distance)] / power[neighbours].mean())


def class_spectra(gen: SsvepEeg, data: np.ndarray, markers: list[tuple[str, int]]
                  ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Spectrum at Oz over each class's trials (cue + 0.5 s to cue + 3 s)."""
    oz = gen.channel_names.index("Oz")
    by_class: dict[int, list[np.ndarray]] = {}
    for c, seg in windows(data, cues(gen, markers), gen.srate, 0.5, 2.5):
        by_class.setdefault(c, []).append(seg[:, oz])
    return {c: power_spectrum(s, gen.srate) for c, s in by_class.items()}


@pytest.fixture(scope="module")
def session() -> tuple[SsvepEeg, np.ndarray, list[tuple[str, int]], np.ndarray]:
    """Five minutes of the default setup: 60 trials, 12 of each class."""
    gen = make_generator("ssvep", {}, seed=SEED)
    return (gen, *record(gen, 12 * 5 * gen.task.trial_s + 1.0))


# -- decoding and spectra ------------------------------------------------------------------
def test_standard_cca_classifies_flicker_trials(session) -> None:
    gen, data, markers, _ = session
    assert gen.n_channels == 8
    n = int(2.0 * gen.srate)
    refs = [references(f, gen.srate, n) for f in gen.freqs]
    trials = [(c, seg) for c, seg in windows(data, cues(gen, markers), gen.srate, 0.5, 2.0)
              if c < len(gen.freqs)]
    predicted = [int(np.argmax([canonical_correlation(seg, r) for r in refs]))
                 for _, seg in trials]
    truth = [c for c, _ in trials]
    accuracy = np.mean(np.array(predicted) == np.array(truth))
    assert len(trials) >= 40
    assert accuracy >= 0.85, f"CCA accuracy {accuracy:.2f}"


def test_spectrum_at_oz_peaks_at_f_and_2f(session) -> None:
    gen, data, markers, _ = session
    spectra = class_spectra(gen, data, markers)
    for c, f in enumerate(gen.freqs):
        freqs, power = spectra[c]
        for h in (1, 2):
            snr = peak_snr(freqs, power, h * f)
            assert snr > 3.0, f"{gen.classes[c]}: power at {h * f:.2f} Hz only {snr:.1f}x"
        # and not at the other stimulus frequencies
        others = [peak_snr(freqs, power, g) for g in gen.freqs if g != f]
        assert max(others) < peak_snr(freqs, power, f)


def test_rest_trials_show_no_peak(session) -> None:
    gen, data, markers, _ = session
    spectra = class_spectra(gen, data, markers)
    rest = gen.classes.index("rest")
    freqs, power = spectra[rest]
    for c, f in enumerate(gen.freqs):
        flicker = peak_snr(*spectra[c], f)
        at_f, at_2f = peak_snr(freqs, power, f), peak_snr(freqs, power, 2 * f)
        # the fundamentals share the alpha band, which makes a broad bump, not a line
        assert at_f < 2.5 and at_f < flicker / 2, (f, at_f, flicker)
        assert at_2f < 2.5, (2 * f, at_2f)


def test_fatigue_lowers_ssvep_snr() -> None:
    def mean_snr(drift: dict | None) -> float:
        gen = make_generator("ssvep", {}, seed=SEED, drift=drift)
        data, markers, _ = record(gen, 15 * gen.task.trial_s)
        spectra = class_spectra(gen, data, markers)
        return float(np.mean([peak_snr(*spectra[c], f) for c, f in enumerate(gen.freqs)]))

    fresh = mean_snr(None)
    tired = mean_snr({"scenario": "fatigue", "onset_s": 0.0, "ramp_s": 0.0})
    assert tired < 0.6 * fresh, (fresh, tired)


# -- the response in time ------------------------------------------------------------------
def first_flicker_cue(gen: SsvepEeg, markers: list[tuple[str, int]]) -> tuple[int, int]:
    return next((c, i) for c, i in cues(gen, markers) if c < len(gen.freqs))


def test_response_starts_after_latency_and_ramps() -> None:
    gen = make_generator("ssvep", QUIET, seed=SEED)
    data, markers, _ = record(gen, 30.0)
    fs, oz = gen.srate, gen.channel_names.index("Oz")
    assert 0.080 <= gen.latency_s <= 0.160
    _, cue = first_flicker_cue(gen, markers)
    end = next(i for m, i in markers if m == "end" and i > cue)
    onset = cue + gen.latency_s * fs  # fractional sample index
    x = np.abs(data[:, oz])
    assert not x[:int(np.floor(onset))].any()  # nothing before the first response
    assert x[int(np.ceil(onset)) + 2] > 0
    steady = np.sqrt(np.mean(data[cue + int(fs):end, oz] ** 2))
    rising = np.sqrt(np.mean(data[int(np.ceil(onset)):int(onset + 0.1 * fs), oz] ** 2))
    assert rising < 0.4 * steady
    # the response outlasts the flicker by the latency, then decays within ramp_s
    assert np.sqrt(np.mean(data[end:int(end + gen.latency_s * fs), oz] ** 2)) > 0.5 * steady
    stop = int(np.ceil(end + (gen.latency_s + gen.params.ramp_s) * fs)) + 1
    assert not x[stop:stop + int(0.5 * fs)].any()


def test_phase_lags_stimulus_by_latency() -> None:
    gen = make_generator("ssvep", {**QUIET, "harmonics": 1}, seed=SEED)
    data, markers, _ = record(gen, 60.0)
    fs, oz = gen.srate, gen.channel_names.index("Oz")
    errors = []
    for c, cue in cues(gen, markers):
        if c >= len(gen.freqs):
            continue
        f = gen.freqs[c]
        seg = data[cue + int(fs):cue + int(2.5 * fs), oz]
        t = (int(fs) + np.arange(seg.size)) / fs  # time since the flicker began
        (a, b), *_ = np.linalg.lstsq(np.c_[np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)],
                                     seg, rcond=None)
        expected = gen.phases[c, 0] - 2 * np.pi * f * gen.latency_s
        errors.append(np.angle(np.exp(1j * (np.arctan2(b, a) - expected))))
    assert len(errors) >= 5
    # trial jitter (0.2 rad) and the small delays of the flanking sources only
    assert abs(np.angle(np.mean(np.exp(1j * np.array(errors))))) < 0.35
    assert np.std(errors) < 0.5


# -- markers, truth, channels, determinism -------------------------------------------------
def test_markers_truth_and_channels(session) -> None:
    gen, data, markers, truth = session
    assert gen.classes == ["8.57Hz", "10Hz", "12Hz", "15Hz", "rest"]
    assert gen.channel_names == ("O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8")
    assert gen.units == ("V",) * 8 and gen.truth_names == ("class",)
    assert np.isfinite(data).all() and 3 < data.std() < 40  # uV
    task = [(m, i) for m, i in markers if not m.startswith("artifact/")]
    labels = [m.split("/")[0] if m.startswith("cue/") else m for m, _ in task]
    assert labels[:8] == ["trial/start", "cue", "end", "trial/end"] * 2
    counts = np.bincount([c for c, _ in cues(gen, markers)], minlength=5)
    assert (counts == 12).all()
    for c, i in cues(gen, markers):
        end = next(j for m, j in task if m == "end" and j > i)
        assert end - i == int(gen.params.timing.imagery_s * gen.srate)
        assert (truth[i:end] == c).all() and truth[i - 1] == -1 and truth[end] == -1
    assert set(np.unique(truth)) == {-1, 0, 1, 2, 3, 4}


def test_more_channels_keep_the_occipital_ones_first() -> None:
    gen = make_generator("ssvep", {"n_channels": 64, "srate": 1000}, seed=1)
    assert gen.n_channels == 64 and len(set(gen.channel_names)) == 64
    assert gen.channel_names[:9] == ("O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8", "Pz")
    block = gen.next_block(20)
    assert block.data.shape == (20, 64) and block.truth.shape == (20, 1)


def test_same_seed_same_output() -> None:
    def run(seed: int) -> tuple[np.ndarray, list[tuple[str, int]], np.ndarray]:
        gen = SsvepEeg(SsvepParams(freqs=[9.0, 11.0, 13.5]), seed=seed)
        return record(gen, 20.0, block=37)

    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.allclose(a[0], c[0])


# -- drift and the simulated user ----------------------------------------------------------
def test_dropout_and_electrode_shift() -> None:
    gen = make_generator("ssvep", {}, seed=SEED,
                         drift={"scenario": "channel-dropout", "onset_s": 0.0, "ramp_s": 0.0})
    block = gen.next_block(250)
    assert any(m.startswith("drift/channel-dropout/start") for m, _ in block.markers)
    lost = np.ptp(block.data, axis=0) == 0  # flat or railed
    noisy = block.data.std(axis=0) > 30e-6
    assert (lost | noisy).sum() == 2  # a quarter of 8

    still = record(make_generator("ssvep", QUIET, seed=SEED), 10.0)[0]
    moved = record(make_generator("ssvep", QUIET, seed=SEED, drift={
        "scenario": "electrode-shift", "onset_s": 0.0, "ramp_s": 0.0}), 10.0)[0]
    assert not np.allclose(still, moved)
    assert (still == 0).all(axis=1).tolist() == (moved == 0).all(axis=1).tolist()  # same timing


def test_learning_user_attends_harder_after_wrong_feedback() -> None:
    def steady_rms(feedback: bool) -> float:
        gen = make_generator("ssvep", QUIET, seed=SEED, user={"learning_rate": 1.0})
        fs, tm, oz = gen.srate, gen.params.timing, gen.channel_names.index("Oz")
        k = next(k for k in range(10) if gen.task.class_of_trial(k) < len(gen.freqs))
        c = gen.task.class_of_trial(k)
        cue = round((tm.first_s + k * gen.task.trial_s + tm.fixation_s) * fs)
        before = gen.next_block(cue)
        if feedback:  # the decoder said another frequency when the flicker began
            gen.feedback(cue / fs, gen.classes[(c + 1) % len(gen.freqs)])
        during = [gen.next_block(25) for _ in range(int(tm.imagery_s * fs) // 25)]
        assert ("cue/" + gen.classes[c], cue) in during[0].markers
        assert before.data.shape[0] == cue
        x = np.vstack([b.data for b in during])[int(fs):, oz]  # the user sees it after 0.2 s
        return float(np.sqrt(np.mean(x ** 2)))

    assert steady_rms(True) > 1.3 * steady_rms(False)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "says"), [
    ({"freqs": [3.0, 10.0]}, "4-40 Hz"),
    ({"freqs": [10.0, 45.0]}, "4-40 Hz"),
    ({"freqs": [10.0, 12.0, 10.0]}, "distinct"),
    ({"freqs": [10.0, 10.001]}, "10Hz"),
    ({"freqs": [4.0 + 2 * i for i in range(13)]}, "1 to 12"),
    ({"freqs": []}, "1 to 12"),
    ({"srate": 125.0, "freqs": [8.0, 25.0]}, "below 20.83 Hz"),
    ({"freqs": [12.0], "rest_class": False}, "single class"),
    ({"flicker": True}, "valid fields: n_channels, channels, srate, timing"),
    ({"n_channels": 4}, "greater than or equal to 8"),
    ({"harmonics": 0}, "greater than or equal to 1"),
    ({"channels": ["O1", "Oz"]}, "one name per channel"),
])
def test_bad_params_are_clear_errors(params: dict, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        SsvepParams(**params)
    assert says in str(info.value)
    with pytest.raises(ConfigError) as info2:
        make_generator("ssvep", params, seed=0)
    assert says in str(info2.value)


def test_class_names() -> None:
    assert [class_name(f) for f in (8.57, 10.0, 12.5, 6.666)] == [
        "8.57Hz", "10Hz", "12.5Hz", "6.67Hz"]
    assert SsvepParams(rest_class=False).class_names() == ["8.57Hz", "10Hz", "12Hz", "15Hz"]
