"""SSVEP decoders: statistics on synthetic flicker, the real-data target, bad inputs.

The real-data tests use the Kalunga et al. 2016 SSVEP exoskeleton recordings in
``<repo>/../shared/data/ssvep_exo_kalunga2016`` (skipped when absent) with the
evaluation harness's protocol: read with MNE, causal Butterworth band-pass
(order 4, 3-45 Hz, ``sosfilt`` forward only) over the whole recording, epochs
``[onset + 2 s, onset + 5 s)``, 4 classes (rest, 13, 21, 17 Hz); for each
subject and session, train on the subject's other session(s), test on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bci_runtime.decoders.adaptation import (
    CoAdaptiveDecoder,
    FeatureNormalization,
    HeadPartialFit,
    PooledMeanBias,
    Strategy,
)
from bci_runtime.decoders.ssvep import (
    CCA,
    BlockCovTS,
    FilterBankCCA,
    SSVEPEnsemble,
    class_frequencies,
)
from bci_runtime.errors import DecoderError, NotFittedError

SFREQ = 256.0
N_TIMES = 512
FREQS = {"10Hz": 10.0, "12Hz": 12.0, "15Hz": 15.0}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ssvep_exo_kalunga2016"
EVENTS = {1: "rest", 2: "13Hz", 3: "21Hz", 4: "17Hz"}


def flicker_trials(rng: np.random.Generator, classes: dict[str, float | None], n_per_class: int,
                   amplitude: float, n_channels: int = 6,
                   pattern: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SSVEP-like trials: a fundamental and a second harmonic of random phase, in noise.

    Each class flickers at its frequency (None: noise only, a rest class); the
    response reaches the channels through one spatial ``pattern``; white noise of
    unit variance on every channel.

    Returns
    -------
    X : ndarray, shape (n_classes * n_per_class, n_channels, N_TIMES)
    y : ndarray of str, shape (n_classes * n_per_class,)
    """
    pattern = rng.normal(size=n_channels) if pattern is None else pattern
    t = np.arange(N_TIMES) / SFREQ
    X, y = [], []
    for label, f in classes.items():
        for _ in range(n_per_class):
            x = rng.normal(size=(n_channels, N_TIMES))
            if f is not None:
                phase = rng.uniform(0, 2 * np.pi, size=2)  # not locked to the onset
                s = np.sin(2 * np.pi * f * t + phase[0]) + 0.5 * np.sin(
                    2 * np.pi * 2 * f * t + phase[1])
                x += amplitude * pattern[:, None] * s
            X.append(x)
            y.append(label)
    order = rng.permutation(len(y))
    return np.array(X)[order], np.array(y)[order]


# -- statistics on synthetic flicker --------------------------------------------------


@pytest.mark.parametrize("cls", [CCA, FilterBankCCA])
def test_training_free_picks_the_flicker_frequency(cls: type) -> None:
    rng = np.random.default_rng(11)
    X, y = flicker_trials(rng, FREQS, 30, amplitude=0.2)
    clf = cls(freqs=FREQS, sfreq=SFREQ).fit(X[:3], y[:3])  # records the classes only
    assert (clf.predict(X) == y).mean() >= 0.95  # chance 1/3


@pytest.mark.parametrize("cls", [CCA, FilterBankCCA])
def test_training_free_is_at_chance_on_noise(cls: type) -> None:
    rng = np.random.default_rng(12)
    X, y = flicker_trials(rng, FREQS, 30, amplitude=0.0)
    clf = cls(freqs=FREQS, sfreq=SFREQ).fit(X[:3], y[:3])
    # 90 trials, 3 classes: 0.55 is 4.4 standard deviations above chance
    assert (clf.predict(X) == y).mean() < 0.55


@pytest.mark.parametrize("cls", [CCA, FilterBankCCA])
def test_rest_threshold_learned_from_rest_trials(cls: type) -> None:
    rng = np.random.default_rng(13)
    classes = {**FREQS, "rest": None}
    pattern = rng.normal(size=6)
    X, y = flicker_trials(rng, classes, 20, amplitude=0.2, pattern=pattern)
    X_new, y_new = flicker_trials(rng, classes, 20, amplitude=0.2, pattern=pattern)
    clf = cls(freqs=[10, 12, 15], sfreq=SFREQ).fit(X, y)
    assert clf.class_freqs_ == [10.0, 12.0, 15.0, None]
    assert clf.head_.threshold_ is not None
    predicted = clf.predict(X_new)
    assert (predicted == y_new).mean() >= 0.85  # chance 1/4
    assert (predicted[y_new == "rest"] == "rest").mean() >= 0.8


def test_cca_scores_ignore_channel_mixing() -> None:
    """A new cap position mixes the channels: CCA correlations do not change."""
    rng = np.random.default_rng(14)
    X, y = flicker_trials(rng, FREQS, 5, amplitude=0.2)
    mixing = rng.normal(size=(6, 6)) + 3 * np.eye(6)
    clf = CCA(freqs=FREQS, sfreq=SFREQ).fit(X, y)
    np.testing.assert_allclose(clf.features(mixing @ X), clf.features(X), atol=1e-9)


def test_ensemble_learns_rest_and_flicker() -> None:
    rng = np.random.default_rng(15)
    classes = {**FREQS, "rest": None}
    pattern = rng.normal(size=6)
    X, y = flicker_trials(rng, classes, 15, amplitude=0.2, pattern=pattern)
    X_new, y_new = flicker_trials(rng, classes, 15, amplitude=0.2, pattern=pattern)
    for clf in (SSVEPEnsemble(freqs=[10, 12, 15], sfreq=SFREQ),
                BlockCovTS(freqs=[10, 12, 15], sfreq=SFREQ),
                FilterBankCCA(freqs=[10, 12, 15], sfreq=SFREQ, head="logistic")):
        clf.fit(X, y)
        assert (clf.predict(X_new) == y_new).mean() >= 0.75, type(clf).__name__
        proba = clf.predict_proba(X_new)
        assert proba.shape == (len(y_new), 4)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_partial_fit_follows_a_new_spatial_pattern() -> None:
    """Covariance features move with the montage; labelled refits recover the accuracy."""
    rng = np.random.default_rng(16)
    classes = {**FREQS, "rest": None}
    X, y = flicker_trials(rng, classes, 12, amplitude=0.25, pattern=np.eye(6)[0] * 2)
    clf = BlockCovTS(freqs=[10, 12, 15], sfreq=SFREQ, memory=40).fit(X, y)
    # the response now reaches another electrode, and the noise is twice as large there
    gain = np.ones(6)
    gain[3] = 2.0
    X2, y2 = flicker_trials(rng, classes, 12, amplitude=0.25, pattern=np.eye(6)[3] * 4)
    X3, y3 = flicker_trials(rng, classes, 12, amplitude=0.25, pattern=np.eye(6)[3] * 4)
    X2, X3 = gain[:, None] * X2, gain[:, None] * X3
    before = (clf.predict(X3) == y3).mean()
    clf.partial_fit(X2, y2)
    after = (clf.predict(X3) == y3).mean()
    assert before <= 0.6 and after >= 0.85, (before, after)


# -- frequencies of the classes -------------------------------------------------------


def test_labels_naming_frequencies_are_matched_and_the_rest_is_rest() -> None:
    classes = np.array(["13Hz", "17Hz", "21Hz", "rest"])
    assert class_frequencies([13, 21, 17], classes) == [13.0, 17.0, 21.0, None]
    assert class_frequencies({"13Hz": 13, "17Hz": 17, "21Hz": 21, "rest": None},
                             classes) == [13.0, 17.0, 21.0, None]
    # numeric labels that are the frequencies
    assert class_frequencies([13, 21, 17], np.array([13, 17, 21])) == [13.0, 17.0, 21.0]
    # neither names nor lengths tell: sorted-label order
    assert class_frequencies([None, 13, 21, 17], np.array([1, 2, 3, 4])) == [
        None, 13.0, 21.0, 17.0]


@pytest.mark.parametrize("freqs, labels", [
    ([13, 21, 17], np.array([1, 2, 3, 4])),  # which class is which cannot be told
    ([13, 21], np.array(["13Hz", "a", "b"])),  # two classes without a frequency
    ({"13Hz": 13}, np.array(["13Hz", "rest"])),  # the mapping misses a class
])
def test_unmatched_frequencies_are_an_error(freqs: object, labels: np.ndarray) -> None:
    with pytest.raises(DecoderError):
        class_frequencies(freqs, labels)


def test_mapping_names_classes_without_calibration_trials() -> None:
    """Training-free: a mapping and a rest threshold need no trial of every class."""
    rng = np.random.default_rng(17)
    X, y = flicker_trials(rng, FREQS, 10, amplitude=0.2)
    clf = FilterBankCCA(freqs={**FREQS, "rest": None}, sfreq=SFREQ,
                        rest_threshold=0.05).fit(X[:4], y[:4])
    assert clf.classes_.tolist() == ["10Hz", "12Hz", "15Hz", "rest"]
    assert (clf.predict(X) == y).mean() >= 0.9
    with pytest.raises(DecoderError, match="rest"):  # a rest class but nothing to learn from
        FilterBankCCA(freqs={**FREQS, "rest": None}, sfreq=SFREQ).fit(X[:4], y[:4])


# -- bad inputs -----------------------------------------------------------------------


def _fitted(cls: type, rng: np.random.Generator) -> tuple[object, np.ndarray, np.ndarray]:
    classes = {**FREQS, "rest": None}
    X, y = flicker_trials(rng, classes, 6, amplitude=0.3)
    kwargs = {"head": "logistic"} if cls is FilterBankCCA else {}
    return cls(freqs=[10, 12, 15], sfreq=SFREQ, **kwargs).fit(X, y), X, y


DECODERS = [CCA, FilterBankCCA, BlockCovTS, SSVEPEnsemble]


@pytest.mark.parametrize("cls", DECODERS)
def test_bad_calls_leave_the_model_serving(cls: type) -> None:
    rng = np.random.default_rng(18)
    clf, X, y = _fitted(cls, rng)
    before = clf.predict_proba(X)
    memory = clf.memory_[0].copy()
    nan = X[:2].copy()
    nan[1, 2, 100] = np.nan
    bad_calls = [
        (lambda: clf.predict(X[:, :5]), "channels"),
        (lambda: clf.predict(X[:, :, :300]), "samples"),
        (lambda: clf.predict(nan), "NaN"),
        (lambda: clf.partial_fit(nan, y[:2]), "NaN"),
        (lambda: clf.partial_fit(X[:2, :5], y[:2]), "channels"),
        (lambda: clf.partial_fit(X[:2], np.array(["10Hz", "99Hz"])), "unknown class"),
        (lambda: clf.partial_fit(X[:2], y[:1]), "one label per trial"),
        (lambda: clf.partial_fit(X[:2], y[:2], sample_weight=[1.0, -1.0]), "sample_weight"),
        (lambda: clf.partial_fit(X[:2], y[:2], classes=["a", "b"]), "classes"),
        (lambda: clf.predict(X[0]), "n_trials"),
        (lambda: clf.fit(nan, y[:2]), "NaN"),
        (lambda: clf.fit(X, np.full(len(y), "10Hz")), "2 classes"),
    ]
    for call, match in bad_calls:
        with pytest.raises(DecoderError, match=match):
            call()
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    np.testing.assert_array_equal(clf.memory_[0], memory)


@pytest.mark.parametrize("cls", DECODERS)
def test_use_before_fit_is_not_fitted_error(cls: type) -> None:
    rng = np.random.default_rng(19)
    X, y = flicker_trials(rng, FREQS, 2, amplitude=0.3)
    clf = cls(freqs=[10, 12, 15], sfreq=SFREQ)
    for call in (lambda: clf.partial_fit(X, y), lambda: clf.predict(X),
                 lambda: clf.predict_proba(X), lambda: clf.features(X)):
        with pytest.raises(NotFittedError):
            call()
    assert not clf.supports_partial_fit


@pytest.mark.parametrize("params, match", [
    ({"sfreq": -1.0}, "sfreq"),
    ({"sfreq": float("nan")}, "sfreq"),
    ({"freqs": []}, "no stimulation frequency"),
    ({"freqs": [10, -3]}, "positive"),
    ({"freqs": [10, 120]}, "Nyquist"),
    ({"freqs": "10,12"}, "freqs"),
    ({"n_harmonics": 0}, "n_harmonics"),
    ({"n_harmonics": 2.5}, "n_harmonics"),
    ({"memory": 0}, "memory"),
    ({"C": 0.0}, "C must"),
])
@pytest.mark.parametrize("cls", DECODERS)
def test_bad_parameters_fail_at_fit(cls: type, params: dict, match: str) -> None:
    rng = np.random.default_rng(20)
    X, y = flicker_trials(rng, FREQS, 2, amplitude=0.3)
    kwargs = {"freqs": [10, 12, 15], "sfreq": SFREQ}
    if cls in (CCA, FilterBankCCA):
        kwargs["head"] = "logistic"  # so C is used
    with pytest.raises(DecoderError, match=match):
        cls(**{**kwargs, **params}).fit(X, y)


def test_decoder_specific_bad_parameters() -> None:
    rng = np.random.default_rng(21)
    X, y = flicker_trials(rng, FREQS, 2, amplitude=0.3)
    freqs = [10, 12, 15]
    with pytest.raises(DecoderError, match="head"):
        CCA(freqs, SFREQ, head="svm").fit(X, y)
    with pytest.raises(DecoderError, match="Nyquist"):
        CCA(freqs, SFREQ, n_harmonics=9).fit(X, y)
    with pytest.raises(DecoderError, match="band"):
        FilterBankCCA(freqs, SFREQ, bands=[(20, 10)]).fit(X, y)
    with pytest.raises(DecoderError, match="sub-band"):
        FilterBankCCA(freqs, SFREQ, bands=[]).fit(X, y)
    with pytest.raises(DecoderError, match="pairs"):
        SSVEPEnsemble(freqs, SFREQ, bands=[8.0, 88.0]).fit(X, y)
    with pytest.raises(DecoderError, match="cca_harmonics"):
        SSVEPEnsemble(freqs, SFREQ, cca_harmonics=0).fit(X, y)
    with pytest.raises(DecoderError, match="a must"):
        FilterBankCCA(freqs, SFREQ, a=-1.0).fit(X, y)
    with pytest.raises(DecoderError, match="estimator"):
        BlockCovTS(freqs, SFREQ, estimator="bogus").fit(X, y)
    with pytest.raises(DecoderError, match="2 classes"):
        BlockCovTS(freqs, SFREQ).fit(X, np.full(len(y), "10Hz"))


def test_partial_fit_with_zero_weight_keeps_the_head() -> None:
    rng = np.random.default_rng(22)
    clf, X, y = _fitted(SSVEPEnsemble, rng)
    head = clf.head_
    clf.partial_fit(X[:2], y[:2], sample_weight=[0.0, 0.0])
    assert clf.head_ is head
    clf.partial_fit(X[:2], y[:2])
    assert clf.head_ is not head  # refitted, then swapped


# -- co-adaptation --------------------------------------------------------------------


def test_strategies_apply_to_the_ssvep_decoders() -> None:
    rng = np.random.default_rng(23)
    classes = {**FREQS, "rest": None}
    X, y = flicker_trials(rng, classes, 8, amplitude=0.25)
    cases = [
        (FilterBankCCA(freqs=[10, 12, 15], sfreq=SFREQ), PooledMeanBias()),  # argmax: linear
        (FilterBankCCA(freqs=[10, 12, 15], sfreq=SFREQ, head="logistic"),
         FeatureNormalization()),
        (SSVEPEnsemble(freqs=[10, 12, 15], sfreq=SFREQ), HeadPartialFit()),
        (BlockCovTS(freqs=[10, 12, 15], sfreq=SFREQ), HeadPartialFit()),
    ]
    for decoder, strategy in cases:
        assert strategy.applies_to(decoder.fit(X, y)) is None
        model = CoAdaptiveDecoder(decoder, [strategy]).fit(X, y)
        assert model.decoder_ is not decoder
        for i in range(4):
            model.predict(X[i:i + 1])
            model.partial_fit(X[i:i + 1], y[i:i + 1])
        assert model.n_updates_ == 4


# -- the real data --------------------------------------------------------------------


def _recenter() -> Strategy:
    """The runtime's ``recenter`` strategy, or a minimal stand-in while it is missing.

    The stand-in whitens epochs by the inverse square root of a reference
    covariance: the Riemannian mean of the calibration trials, moved a geodesic
    step of the half-life rate towards each new trial (Zanini et al. 2018).
    """
    try:
        from bci_runtime.decoders.riemann_adaptation import RiemannianRecentering
    except ImportError:
        pass
    else:
        return RiemannianRecentering(half_life=20)
    from pyriemann.estimation import Covariances
    from pyriemann.geometry.base import invsqrtm
    from pyriemann.geometry.geodesic import geodesic_riemann
    from pyriemann.geometry.mean import mean_riemann

    class Recenter(Strategy):
        name = "test-recenter"
        stage = "signal"

        def fit(self, X: np.ndarray, y: np.ndarray, decoder: object = None) -> Recenter:
            self.reference_ = mean_riemann(Covariances("lwf").transform(X))
            self.whitener_ = invsqrtm(self.reference_)
            return self

        def transform(self, X: np.ndarray) -> np.ndarray:
            return self.whitener_ @ X

        def update(self, X: np.ndarray, y: np.ndarray | None = None,
                   sample_weight: np.ndarray | None = None, decoder: object = None,
                   correct: np.ndarray | None = None) -> None:
            for c, w in zip(Covariances("lwf").transform(X), self._weights(len(X),
                                                                          sample_weight)):
                self.reference_ = geodesic_riemann(self.reference_, c, self.rate_ * w)
            self.whitener_ = invsqrtm(self.reference_)

    return Recenter(half_life=20)


@dataclass
class Session:
    subject: str
    name: str
    X: np.ndarray  # (n_trials, n_channels, n_times), in time order
    y: np.ndarray  # (n_trials,) str


def _load_session(raw_path: Path) -> Session:
    """The harness's preprocessing: causal 3-45 Hz on the whole recording, then epochs."""
    mne = pytest.importorskip("mne")
    from scipy.signal import butter, sosfilt

    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    events = mne.read_events(raw_path.with_name(raw_path.name.replace("_raw.fif", "-eve.fif")),
                             verbose="error")
    sfreq = raw.info["sfreq"]
    sos = butter(4, [3.0, 45.0], btype="bandpass", fs=sfreq, output="sos")
    data = sosfilt(sos, raw.get_data(), axis=-1)  # (n_channels, n_samples)
    first, n_times = int(round(2.0 * sfreq)), int(round(3.0 * sfreq))
    keep = np.isin(events[:, 2], list(EVENTS))
    onsets = events[keep, 0] - raw.first_samp + first
    X = np.stack([data[:, o:o + n_times] for o in onsets])
    y = np.array([EVENTS[c] for c in events[keep, 2]])
    return Session(raw_path.parent.name, raw_path.name, X, y)


@pytest.fixture(scope="module")
def kalunga() -> dict[str, list[Session]]:
    if not DATA.is_dir():
        pytest.skip(f"real SSVEP data not found at {DATA}")
    subjects = {}
    for folder in sorted(DATA.glob("subject*")):
        sessions = [_load_session(p) for p in sorted(folder.glob("*_raw.fif"))]
        if len(sessions) >= 2:
            subjects[folder.name] = sessions
    if not subjects:
        pytest.skip(f"no subject with two sessions in {DATA}")
    return subjects


def _splits(subjects: dict[str, list[Session]]
            ) -> Iterator[tuple[Session, np.ndarray, np.ndarray]]:
    """(test session, training epochs, training labels): leave one session out per subject."""
    for sessions in subjects.values():
        for i, test in enumerate(sessions):
            train = [s for j, s in enumerate(sessions) if j != i]
            yield test, np.concatenate([s.X for s in train]), np.concatenate(
                [s.y for s in train])


def _make() -> SSVEPEnsemble:
    return SSVEPEnsemble(freqs=[13, 21, 17], sfreq=256.0)


@pytest.fixture(scope="module")
def static_accuracy(kalunga: dict[str, list[Session]]) -> dict[tuple[str, str], float]:
    out = {}
    for test, X, y in _splits(kalunga):
        clf = _make().fit(X, y)
        out[test.subject, test.name] = float((clf.predict(test.X) == test.y).mean())
    return out


@pytest.mark.slow
def test_real_data_mean_accuracy_meets_the_target(
        static_accuracy: dict[tuple[str, str], float]) -> None:
    mean = np.mean(list(static_accuracy.values()))
    assert mean >= 0.80, static_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("subject", [f"subject{i:02d}" for i in range(1, 7)])
def test_real_data_every_subject_above_chance(
        static_accuracy: dict[tuple[str, str], float], subject: str) -> None:
    accs = [a for (s, _), a in static_accuracy.items() if s == subject]
    if not accs:
        pytest.skip(f"{subject} not in the data")
    # 32 trials, 4 classes: 16 right has probability < 1e-3 under chance (0.25)
    assert min(accs) >= 0.5, accs


@pytest.mark.slow
def test_real_data_shuffled_labels_are_at_chance(kalunga: dict[str, list[Session]]) -> None:
    """Guards against leakage: with the training labels permuted nothing is learned."""
    rng = np.random.default_rng(24)
    accs = []
    for test, X, y in _splits(kalunga):
        clf = _make().fit(X, rng.permutation(y))
        accs.append((clf.predict(test.X) == test.y).mean())
    assert np.mean(accs) < 0.4  # chance 0.25, sd of the mean of 12 tests ~0.025


@pytest.mark.slow
def test_real_data_pseudo_online_with_recentering(kalunga: dict[str, list[Session]]) -> None:
    """Test trials one at a time in time order, unsupervised re-centring after each."""
    accs = []
    for test, X, y in _splits(kalunga):
        model = CoAdaptiveDecoder(_make(), [_recenter()]).fit(X, y)
        right = []
        for i in range(len(test.y)):
            right.append(model.predict(test.X[i:i + 1])[0] == test.y[i])
            model.partial_fit(test.X[i:i + 1])  # no label
        accs.append(np.mean(right))
    assert np.mean(accs) >= 0.80, accs


@pytest.mark.slow
def test_real_data_training_free_fbcca_tells_the_flickers_apart(
        kalunga: dict[str, list[Session]]) -> None:
    """FBCCA without any training on the three flicker classes (chance 1/3)."""
    accs = []
    for sessions in kalunga.values():
        for s in sessions:
            flicker = s.y != "rest"
            clf = FilterBankCCA(freqs=[13, 21, 17], sfreq=256.0).fit(s.X[flicker][:6],
                                                                      s.y[flicker][:6])
            accs.append((clf.predict(s.X[flicker]) == s.y[flicker]).mean())
    assert np.mean(accs) >= 0.75, accs
