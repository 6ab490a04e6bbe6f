"""The calibration wizard's signal check (``bci_runtime.pipelines.quality``).

Real recordings come from ``<repo>/../shared/data`` (skipped when absent):
PhysioNet EEGMMIDB subject 1, run 1 (64 channels, 160 Hz, EDF) and SSVEP-Exo
subject 1 (8 channels, 256 Hz, FIF).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from bci_runtime.errors import ConfigError, SpecMismatchError
from bci_runtime.pipelines.quality import (
    ChannelQuality,
    QualityMonitor,
    QualityThresholds,
    assess,
    enough_good_channels,
    mark_bad,
)
from bci_runtime.simulators.drift import ChannelDropout, Drift
from bci_runtime.simulators.motor_imagery import MotorImageryEeg, MotorImageryParams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHYSIONET_R01 = DATA / "physionet_eegmmidb" / "S001" / "S001R01.edf"
KALUNGA = DATA / "ssvep_exo_kalunga2016" / "subject01" / "record-[2012.07.06-19.02.16]_raw.fif"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real recording {path} is not available (expected ../shared/data "
                    "next to the repository)")
    return path


@pytest.fixture(scope="module")
def physionet() -> tuple[np.ndarray, float, list[str]]:
    """PhysioNet S001R01 (eyes-open baseline): data (n_samples, 64) in V, rate, names."""
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(_need(PHYSIONET_R01), preload=True, verbose="error")
    return raw.get_data().T, float(raw.info["sfreq"]), list(raw.ch_names)


@pytest.fixture(scope="module")
def clean_window(physionet: tuple[np.ndarray, float, list[str]]) -> np.ndarray:
    """The first 2 s of S001R01, shape (320, 64), a copy (tests corrupt it)."""
    data, srate, _ = physionet
    return data[: int(2 * srate)].copy()


def _simulated(seconds: float, seed: int = 7, drift_components: list | None = None,
               ) -> tuple[np.ndarray, float, tuple[str, ...]]:
    p = MotorImageryParams()
    drift = Drift(drift_components, p.n_channels) if drift_components else None
    gen = MotorImageryEeg(p, seed=seed, drift=drift)
    return gen.next_block(int(seconds * p.srate)).data, p.srate, gen.channel_names


def _same(a: ChannelQuality, b: ChannelQuality) -> bool:
    """Same verdict and (to rounding) the same measures."""
    return (a.name == b.name and a.status == b.status and a.reasons == b.reasons
            and a.flat == b.flat and a.railed == b.railed and a.line_freq_hz == b.line_freq_hz
            and np.isclose(a.std_uv, b.std_uv, rtol=1e-9, equal_nan=True)
            and np.isclose(a.line_ratio, b.line_ratio, rtol=1e-9, atol=1e-15, equal_nan=True)
            and np.isclose(a.rail_fraction, b.rail_fraction))


def _by_name(qualities: list[ChannelQuality]) -> dict[str, ChannelQuality]:
    return {q.name: q for q in qualities}


# -- real recordings ------------------------------------------------------------------------
def test_physionet_baseline_comes_out_good(physionet: tuple) -> None:
    data, srate, names = physionet
    w = int(2 * srate)
    windows = [assess(data[s:s + w], srate, names) for s in range(0, len(data) - w + 1, w)]
    assert len(windows) == 30
    first = windows[0]
    assert all(q.good for q in first), [(q.name, q.reasons) for q in first if not q.good]
    assert enough_good_channels(first, 1.0)[0]
    every = [q for window in windows for q in window]
    assert not any(q.flat or q.railed for q in every)
    assert all(q.line_ratio < 0.25 for q in every)
    assert np.mean([q.good for q in every]) > 0.99
    # the only failures: eye movements on the frontal channels, named as too large
    for q in every:
        if not q.good:
            assert q.name.startswith(("Fp", "Af", "F")), q
            assert len(q.reasons) == 1 and q.reasons[0].startswith("very large signal")


@pytest.mark.parametrize("corruption", ["clip-at-70th-percentile", "held-at-negative-rail"])
def test_physionet_corrupted_channels_are_flagged(clean_window: np.ndarray, physionet: tuple,
                                                  corruption: str) -> None:
    _, srate, names = physionet
    t = QualityThresholds(line_freq=50)
    clean = assess(clean_window, srate, names, t)
    x = clean_window.copy()
    i_flat, i_rail, i_line = names.index("Cz.."), names.index("C3.."), names.index("C4..")
    x[:, i_flat] = 12e-6  # a constant: the channel carries nothing
    if corruption == "clip-at-70th-percentile":  # the top 30% of samples at the clip level
        x[:, i_rail] = np.minimum(x[:, i_rail], np.percentile(x[:, i_rail], 70))
    else:  # the amplifier saturates for 30% of the window, at -3 mV
        x[100:196, i_rail] = -3e-3
    t_s = np.arange(len(x)) / srate
    x[:, i_line] += 50e-6 * np.sin(2 * np.pi * 50.0 * t_s + 0.3)

    got = assess(x, srate, names, t)

    flat, railed, line = got[i_flat], got[i_rail], got[i_line]
    assert flat.flat and not flat.railed and flat.status == "bad"
    assert flat.reasons == [flat.reasons[0]] and flat.reasons[0].startswith("flat:")
    assert "connected" in flat.reasons[0]
    assert railed.railed and not railed.flat and railed.status == "bad"
    assert len(railed.reasons) == 1 and railed.reasons[0].startswith("railed:")
    assert railed.rail_fraction >= 0.25  # single samples above the clip level do not count
    if corruption == "held-at-negative-rail":
        assert "-3 mV" in railed.reasons[0]
    assert not line.flat and not line.railed and line.status == "bad"
    assert len(line.reasons) == 1 and line.reasons[0].startswith("line noise")
    assert "50 Hz" in line.reasons[0] and "ground" in line.reasons[0]
    assert line.line_ratio > 0.5 and 30 < line.line_uv < 40  # 50 uV peak = 35 uV RMS
    others = [k for k in range(len(names)) if k not in (i_flat, i_rail, i_line)]
    assert all(_same(got[k], clean[k]) for k in others)
    assert all(clean[k].good for k in others)


def test_physionet_line_freq_auto_follows_the_mains(clean_window: np.ndarray,
                                                    physionet: tuple) -> None:
    _, srate, names = physionet
    t_s = np.arange(len(clean_window)) / srate
    for mains in (50.0, 60.0):
        x = clean_window + 60e-6 * np.sin(2 * np.pi * mains * t_s)[:, None]
        got = assess(x, srate, names)  # line_freq="auto" by default
        assert {q.line_freq_hz for q in got} == {mains}
        assert all(q.reasons and q.reasons[0].startswith("line noise") for q in got)


def test_ssvep_recording_mains_is_50hz_and_nothing_is_flat_railed_or_humming() -> None:
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_fif(_need(KALUNGA), preload=True, verbose="error")
    data, srate = raw.get_data().T, float(raw.info["sfreq"])
    w = int(2 * srate)
    for s in range(0, len(data) - w + 1, 20 * w):  # a window every 40 s
        got = assess(data[s:s + w], srate, raw.ch_names)
        assert {q.line_freq_hz for q in got} == {50.0}  # recorded in France
        assert not any(q.flat or q.railed for q in got)
        assert not any("line noise" in r for q in got for r in q.reasons)


# -- simulator ------------------------------------------------------------------------------
def test_simulated_eeg_comes_out_good() -> None:
    data, srate, names = _simulated(10.0)
    w = int(2 * srate)
    for s in range(0, len(data) - w + 1, w):
        got = assess(data[s:s + w], srate, names)
        assert all(q.good for q in got), [(q.name, q.reasons) for q in got if not q.good]
        assert all(3.0 < q.std_uv < 50.0 for q in got)


@pytest.mark.parametrize("mode", ["flat", "railed"])
def test_simulated_channel_dropout_is_flagged(mode: str) -> None:
    drift = [ChannelDropout(onset_s=0.0, ramp_s=0.0, seed=2, fraction=0.25, mode=mode)]
    data, srate, names = _simulated(4.0, drift_components=drift)
    dropped = set(np.flatnonzero(Drift(drift, len(names)).effects_at(1.0).dropout))
    assert len(dropped) == 4
    got = assess(data[-int(2 * srate):], srate, names)
    for k, q in enumerate(got):
        if k in dropped:
            assert q.status == "bad" and len(q.reasons) == 1
            assert q.reasons[0].startswith(f"{mode}:"), q.reasons
            assert (q.flat, q.railed) == (mode == "flat", mode == "railed")
            if mode == "railed":
                assert "+187.5 mV" in q.reasons[0]  # the simulator's ADS1299 rail
        else:
            assert q.good, (q.name, q.reasons)


# -- impedance, marking, verdict ------------------------------------------------------------
def test_impedance_above_the_limit_is_bad_with_its_reason() -> None:
    data, srate, names = _simulated(2.0)
    z = np.full(len(names), 4.0)
    z[0], z[1], z[2], z[3] = 80.0, np.nan, 15.0, np.inf
    got = assess(data, srate, names, impedance_kohm=z)
    assert got[0].status == "bad" and got[0].impedance_kohm == 80.0
    assert got[0].reasons == ["impedance 80 kΩ (limit 25 kΩ) — re-gel or re-seat the electrode"]
    assert got[1].good and got[1].impedance_kohm is None  # not measured
    assert got[2].good and got[2].notes and "above 10 kΩ" in got[2].notes[0]
    assert got[3].status == "bad" and got[3].reasons[0].startswith("impedance beyond measure")
    assert all(q.good and q.impedance_kohm == 4.0 and not q.notes for q in got[4:])
    strict = assess(data, srate, names, QualityThresholds(impedance_max_kohm=3.0,
                                                          impedance_warn_kohm=None), z)
    assert sum(q.good for q in strict) == 1  # only the channel without a measure


def test_impedance_of_the_wrong_shape_or_sign_is_an_error() -> None:
    data, srate, names = _simulated(2.0)
    with pytest.raises(SpecMismatchError, match=r"shape \(16,\)"):
        assess(data, srate, names, impedance_kohm=np.ones(15))
    with pytest.raises(SpecMismatchError, match="negative"):
        assess(data, srate, names, impedance_kohm=-np.ones(16))


def test_marked_channels_are_bad_and_unknown_names_are_an_error() -> None:
    data, srate, names = _simulated(2.0)
    got = assess(data, srate, names, marked_bad={"C3", "Pz"})
    bad = {q.name: q.reasons for q in got if not q.good}
    assert bad == {"C3": ["marked bad by the clinician"], "Pz": ["marked bad by the clinician"]}
    assert mark_bad(got, []) == got
    with pytest.raises(ConfigError, match="unknown channel.*XX"):
        mark_bad(got, ["XX"])


def _qualities(statuses: str) -> list[ChannelQuality]:
    return [ChannelQuality(f"E{i}", 10.0, 0.01, False, False, None,
                           "good" if s == "g" else "bad",
                           [] if s == "g" else ["flat: 0 µV std — is the electrode connected?"])
            for i, s in enumerate(statuses)]


def test_enough_good_channels_by_count_and_fraction() -> None:
    q = _qualities("ggbgbggg")  # 6 of 8 good
    ok, message = enough_good_channels(q, 6)
    assert ok and message.startswith("6 of 8 channels are good (at least 6 needed)")
    assert "E2 (flat: 0 µV std)" in message and "E4" in message
    ok, message = enough_good_channels(q, 7)
    assert not ok and "only 6 of 8" in message and "override" in message
    assert enough_good_channels(q, 0.75)[0]  # ceil(0.75 * 8) = 6
    ok, message = enough_good_channels(q, 0.76)  # ceil(6.08) = 7
    assert not ok and "at least 7 needed" in message
    assert enough_good_channels(_qualities("gggg"), 1.0) == (
        True, "4 of 4 channels are good (at least 4 needed)")


@pytest.mark.parametrize("minimum", [0, 9, 1.5, 0.0, -0.5, True, "6"])
def test_enough_good_channels_rejects_a_bad_minimum(minimum: object) -> None:
    with pytest.raises(ConfigError):
        enough_good_channels(_qualities("ggbgbggg"), minimum)  # type: ignore[arg-type]


# -- missing data and bad input -------------------------------------------------------------
def test_nan_channel_is_bad_and_the_others_unchanged() -> None:
    data, srate, names = _simulated(2.0)
    clean = assess(data, srate, names)
    x = data.copy()
    x[100:105, 3] = np.nan
    x[:, 5] = np.inf
    got = assess(x, srate, names)
    for k in (3, 5):
        assert got[k].status == "bad" and got[k].reasons[0].startswith("no signal")
        assert np.isnan(got[k].std_uv) and np.isnan(got[k].line_ratio)
    assert "5 of 500 samples" in got[3].reasons[0]
    assert all(_same(got[k], clean[k]) for k in range(len(names)) if k not in (3, 5))
    json.dumps([q.as_dict() for q in got], allow_nan=False)  # ready for the web page


def test_bad_shapes_and_rates_raise_with_clear_messages() -> None:
    data, srate, names = _simulated(2.0)
    with pytest.raises(SpecMismatchError, match=r"2-D \(n_samples, n_channels\)"):
        assess(data[:, 0], srate, names[:1])
    with pytest.raises(SpecMismatchError, match="transposed.*data.T"):
        assess(data.T, srate, names)
    with pytest.raises(SpecMismatchError, match="17 channel names"):
        assess(data, srate, [*names, "X"])
    with pytest.raises(SpecMismatchError, match="duplicate channel names: C3"):
        assess(data, srate, ["C3", *names[1:-1], "C3"])
    with pytest.raises(SpecMismatchError, match=r"125 samples \(0.50 s.*at least 250"):
        assess(data[:125], srate, names)
    with pytest.raises(SpecMismatchError, match="positive"):
        assess(data, 0.0, names)
    with pytest.raises(SpecMismatchError, match="real numbers"):
        assess(data.astype(complex), srate, names)
    # 100 Hz cannot show 60 Hz (nor 50 +- 1 Hz) mains; None skips the line check
    with pytest.raises(SpecMismatchError, match="100 Hz stream cannot show 50 Hz") as err:
        assess(data[::2][:200], 100.0, names)
    assert "line_freq=None" in str(err.value)
    skipped = assess(data[::2][:200], 100.0, names, QualityThresholds(line_freq=None))
    assert all(q.line_freq_hz is None and np.isnan(q.line_ratio) for q in skipped)


def test_thresholds_are_validated_and_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        QualityThresholds(max_std=100)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="min_std_uv"):
        QualityThresholds(min_std_uv=300.0)
    with pytest.raises(ValidationError, match="overlaps the mains band"):
        QualityThresholds(eeg_band_hz=(1.0, 55.0))
    with pytest.raises(ValidationError):
        QualityThresholds(line_freq=55)  # type: ignore[arg-type]
    t = QualityThresholds()
    with pytest.raises(ValidationError):
        t.max_std_uv = 1.0  # type: ignore[misc]


# -- online ---------------------------------------------------------------------------------
def test_monitor_matches_assess_on_the_last_window() -> None:
    data, srate, names = _simulated(6.0)
    monitor = QualityMonitor(srate, names, window_s=2.0)
    assert monitor.capacity == 500
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 40, 400)
    sizes = np.concatenate([[600], sizes])  # a first chunk bigger than the window
    bounds = np.cumsum(sizes)
    bounds = bounds[bounds < len(data)]
    start = 0
    for k, end in enumerate(bounds):
        monitor.update(data[start:end], timestamps=np.arange(start, end) / srate)
        start = end
        if k % 50 == 0:
            got = monitor.assess(marked_bad=["Cz"])
            want = assess(data[end - 500:end], srate, names, marked_bad=["Cz"])
            assert got is not None and all(_same(a, b) for a, b in zip(got, want))
    np.testing.assert_array_equal(monitor.window(), data[start - 500:start])


def test_monitor_waits_for_one_second_then_uses_what_it_has() -> None:
    data, srate, names = _simulated(2.0)
    monitor = QualityMonitor(srate, names, window_s=2.0)
    monitor.update(data[:200])
    assert not monitor.ready and monitor.assess() is None and monitor.window() is None
    monitor.update(data[200:300])
    assert monitor.ready and monitor.n_buffered == 300
    got = monitor.assess()
    assert got is not None and all(_same(a, b) for a, b in
                                   zip(got, assess(data[:300], srate, names)))
    monitor.update(np.empty((0, len(names))))  # an empty chunk changes nothing
    assert monitor.n_buffered == 300


def test_monitor_rejects_bad_chunks_and_settings() -> None:
    data, srate, names = _simulated(2.0)
    monitor = QualityMonitor(srate, names)
    with pytest.raises(SpecMismatchError, match="transposed"):
        monitor.update(data[:20].T)  # (16, 20): MNE's orientation
    with pytest.raises(SpecMismatchError, match="chunk has 15 channels"):
        monitor.update(data[:, :15])
    with pytest.raises(SpecMismatchError, match="one timestamp per sample"):
        monitor.update(data[:10], timestamps=np.zeros(9))
    with pytest.raises(ConfigError, match="too short"):
        QualityMonitor(srate, names, window_s=0.5)
    with pytest.raises(SpecMismatchError, match="cannot show 60 Hz"):
        QualityMonitor(110.0, names, thresholds=QualityThresholds(line_freq="auto"))
