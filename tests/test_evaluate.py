"""Pseudo-online evaluation: causal trials, metrics, and the static/adaptive/oracle arms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bci_runtime.decoders import metrics
from bci_runtime.decoders.evaluate import evaluate
from bci_runtime.decoders.trials import Continuous, Trials, cut_trials, event_code, parse_events
from bci_runtime.errors import ConfigError
from decoders_for_tests import LogVarLDA, two_class_epochs


def continuous(rng: np.random.Generator, seconds: float = 60.0, sfreq: float = 100.0,
               codes: tuple[str, ...] = ("1", "2")) -> Continuous:
    n = int(seconds * sfreq)
    onsets = np.arange(2.0, seconds - 3.0, 2.5)
    markers = [codes[i % len(codes)] for i in range(len(onsets))]
    return Continuous(rng.normal(size=(n, 3)), np.arange(n) / sfreq, sfreq, ("a", "b", "c"),
                      markers, onsets, "test-recording")


def as_trials(X: np.ndarray, y: np.ndarray, start: float = 0.0) -> Trials:
    return Trials(X, y, start + 4.0 * np.arange(len(y)), 100.0,
                  tuple(f"ch{i}" for i in range(X.shape[1])), ["mem"] * len(y))


# -- trials -------------------------------------------------------------------------

def test_epochs_are_cut_after_each_mapped_event_and_are_causal() -> None:
    rng = np.random.default_rng(0)
    rec = continuous(rng)
    trials = cut_trials(rec, {"1": "left", "2": "right"}, 0.5, 1.5, (1.0, 30.0))
    assert trials.X.shape == (len(rec.markers), 3, 100)
    assert trials.y.tolist()[:3] == ["left", "right", "left"]
    # changing what comes after a trial never changes that trial (forward-only filter)
    later = Continuous(rec.data.copy(), rec.times, rec.sfreq, rec.channel_names, rec.markers,
                       rec.marker_times, rec.source)
    cut = int((rec.marker_times[3] + 1.5) * rec.sfreq)
    later.data[cut:] = rng.normal(size=later.data[cut:].shape) * 50
    again = cut_trials(later, {"1": "left", "2": "right"}, 0.5, 1.5, (1.0, 30.0))
    np.testing.assert_array_equal(again.X[:4], trials.X[:4])
    assert not np.array_equal(again.X[5], trials.X[5])


def test_epochs_follow_timestamps_across_a_dropout() -> None:
    rng = np.random.default_rng(1)
    rec = continuous(rng, seconds=20)
    keep = np.r_[0:500, 800:len(rec.times)]  # 3 s of samples lost after t = 5 s
    gappy = Continuous(rec.data[keep], rec.times[keep], rec.sfreq, rec.channel_names,
                       rec.markers, rec.marker_times, rec.source)
    trials = cut_trials(gappy, {"1": "x", "2": "y"}, 0.0, 1.0, None)
    late = rec.marker_times > 8.0
    idx = np.flatnonzero(late)[0]
    start = int(round(rec.marker_times[idx] * rec.sfreq))
    k = list(rec.marker_times).index(rec.marker_times[idx])
    np.testing.assert_array_equal(trials.X[k], rec.data[start:start + 100].T)


def test_events_that_match_nothing_list_what_the_recording_has() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ConfigError, match=r"none of the events \['7', '8'\]") as info:
        cut_trials(continuous(rng), {"7": "a", "8": "b"}, 0.0, 1.0, None)
    assert "'1' ×" in str(info.value) and "'2' ×" in str(info.value)


def test_numeric_codes_match_markers_written_as_floats() -> None:
    assert event_code("1.000000000000000") == "1" and event_code("T1") == "T1"
    assert parse_events("1=left, 2.0=right") == {"1": "left", "2": "right"}
    rng = np.random.default_rng(3)
    rec = continuous(rng, codes=("1.0000", "2.0000"))
    assert len(cut_trials(rec, parse_events("1=l,2=r"), 0.0, 1.0, None)) == len(rec.markers)


@pytest.mark.parametrize("text, match", [("T1", "not CODE=LABEL"), ("T1=a,T1=b", "mapped twice"),
                                         ("T1=a", "fewer than 2 classes")])
def test_bad_event_mappings(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_events(text)


# -- metrics ------------------------------------------------------------------------

def test_wolpaw_itr_matches_the_formula() -> None:
    bits = 1 + 0.9 * math.log2(0.9) + 0.1 * math.log2(0.1)  # N = 2, P = 0.9
    assert metrics.wolpaw_itr(0.9, 2, 4.0) == pytest.approx(bits * 15)
    assert metrics.wolpaw_itr(1.0, 4, 6.0) == pytest.approx(2 * 10)
    assert metrics.wolpaw_itr(0.25, 4, 4.0) == 0.0  # chance carries nothing


def test_tau90_recovery_and_regret() -> None:
    before = np.ones(30, dtype=bool)
    drop = np.r_[np.zeros(10, dtype=bool), np.ones(60, dtype=bool)]
    correct = np.r_[before, drop]
    # 10 errors from the onset on: the 20-trial window holds at most 2 of them (accuracy
    # 0.9) from the window ending at trial 57 on, 27 trials after the onset
    assert metrics.tau90(correct, 30, window=20) == 27
    assert metrics.tau90(np.r_[before, np.zeros(40, dtype=bool)], 30) is None  # never
    assert metrics.tau90(np.ones(50, dtype=bool), 30) == 0
    assert metrics.recovery_fraction(0.85, 0.6, 0.9) == pytest.approx(0.833, abs=1e-3)
    assert metrics.recovery_fraction(0.9, 0.9, 0.905) is None  # nothing to recover
    assert metrics.regret(np.r_[before, drop], np.ones(100, dtype=bool), 30) == 10


def test_classification_scores() -> None:
    y = np.array(["a", "b"] * 10)
    scores = metrics.classification_scores(y, y, 2, 4.0)
    assert scores == {"accuracy": 1.0, "kappa": 1.0, "itr_bits_min": 15.0}
    flipped = metrics.classification_scores(y, y[::-1], 2, 4.0)
    assert flipped["accuracy"] == 0.0 and flipped["kappa"] < 0


# -- the arms -----------------------------------------------------------------------

def drifting_session(seed: int) -> tuple[Trials, Trials, float]:
    """Training trials, then test trials whose channel 0 loses contact after trial 20."""
    rng = np.random.default_rng(seed)
    X, y = two_class_epochs(rng, 60)
    Xa, ya = two_class_epochs(rng, 20)
    Xb, yb = two_class_epochs(rng, 100, gain=np.array([3.0, 1.0, 1.0, 1.0]))
    test = as_trials(np.concatenate([Xa, Xb]), np.concatenate([ya, yb]), start=1000.0)
    return as_trials(X, y), test, float(test.onsets[20])


def test_adaptation_recovers_what_drift_took_and_the_oracle_bounds_it() -> None:
    train, test, onset = drifting_session(4)
    result = evaluate(LogVarLDA, train, test, "lda-bias", drift_onset_s=onset,
                      half_life=5)
    static, adaptive, oracle = (result.arms[k].scores for k in
                                ("static", "adaptive:lda-bias", "oracle"))
    assert static["accuracy_after_onset"] < 0.7
    assert oracle["accuracy_after_onset"] > 0.85
    assert adaptive["accuracy_after_onset"] > 0.85
    assert adaptive["recovery_fraction"] >= 0.9 and adaptive["tau90_trials"] <= 40
    out = result.as_dict()
    assert set(out["arms"]) == {"static", "adaptive", "oracle"}
    assert out["n_train"] == 60 and out["n_test"] == 120 and out["drift_onset_trial"] == 20
    assert out["recovery_fraction"] == adaptive["recovery_fraction"]


def test_every_arm_is_causal() -> None:
    """What comes after a test trial never changes the prediction for it."""
    train, test, onset = drifting_session(5)
    first = evaluate(LogVarLDA, train, test, "lda-bias,normalize", drift_onset_s=onset)
    scrambled = Trials(test.X.copy(), test.y.copy(), test.onsets, test.sfreq,
                       test.channel_names, test.sources)
    rng = np.random.default_rng(0)
    scrambled.X[60:] = rng.normal(size=scrambled.X[60:].shape) * 10
    scrambled.y[60:] = scrambled.y[60:][::-1]
    second = evaluate(LogVarLDA, train, scrambled, "lda-bias,normalize", drift_onset_s=onset)
    for name, arm in first.arms.items():
        np.testing.assert_array_equal(arm.predictions[:60], second.arms[name].predictions[:60],
                                      err_msg=name)


def test_a_stationary_session_loses_nothing_by_adapting() -> None:
    rng = np.random.default_rng(6)
    X, y = two_class_epochs(rng, 60)
    Xt, yt = two_class_epochs(rng, 150)
    result = evaluate(LogVarLDA, as_trials(X, y), as_trials(Xt, yt, 1000.0), "all")
    static = result.arms["static"].scores["accuracy"]
    for name in result.adaptive:
        assert result.arms[f"adaptive:{name}"].scores["accuracy"] >= static - 0.01, name
    assert "partial-fit" in result.skipped  # LDA from scikit-learn has no partial_fit


def test_classes_missing_from_training_are_an_error() -> None:
    rng = np.random.default_rng(7)
    X, y = two_class_epochs(rng, 20)
    yt = y.copy()
    yt[0] = "c"
    with pytest.raises(ConfigError, match=r"classes \['c'\] that no training trial has"):
        evaluate(LogVarLDA, as_trials(X, y), as_trials(X, yt), "none")


def test_a_refused_update_leaves_the_arm_serving_and_is_counted(monkeypatch) -> None:
    """As online: an update the strategy refuses changes nothing; the run goes on."""
    from bci_runtime.decoders import adaptation
    from bci_runtime.decoders.adaptation import PooledMeanBias
    from bci_runtime.errors import DecoderError

    class RefusesOddTrials(PooledMeanBias):
        name = "test-refuses-odd"

        def update(self, X, y=None, sample_weight=None, decoder=None, correct=None):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls % 2:
                raise DecoderError("this trial is refused")
            super().update(X, y, sample_weight, decoder, correct)

    # registered for this test only
    monkeypatch.setitem(adaptation._REGISTRY, RefusesOddTrials.name, RefusesOddTrials)
    rng = np.random.default_rng(7)
    X, y = two_class_epochs(rng, 40)
    Xt, yt = two_class_epochs(rng, 20, gain=1.5)
    result = evaluate(LogVarLDA, as_trials(X, y), as_trials(Xt, yt, 200.0),
                      "test-refuses-odd")
    arm = result.arms["adaptive:test-refuses-odd"]
    assert len(arm.predictions) == 20  # every trial predicted
    assert arm.scores["updates_failed"] == 10
    assert arm.scores["first_failure"] == "trial 0: this trial is refused"
