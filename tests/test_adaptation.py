"""Co-adaptation strategies and the CoAdaptiveDecoder around a decoder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bci_runtime.decoders.adaptation import (
    CoAdaptiveDecoder,
    ErrorWeighted,
    FeatureNormalization,
    HeadPartialFit,
    PooledMeanBias,
    make_strategy,
)
from bci_runtime.decoders.base import half_life_from_rate, rate_from_half_life
from bci_runtime.errors import DecoderError, NotFittedError
from decoders_for_tests import LogVarLDA, two_class_epochs


def pseudo_online(model: CoAdaptiveDecoder, X: np.ndarray, y: np.ndarray,
                  labels: bool = False) -> np.ndarray:
    """Predict each trial, then adapt to it; returns whether each was right."""
    correct = []
    for i in range(len(y)):
        predicted = model.predict(X[i:i + 1])
        correct.append(predicted[0] == y[i])
        model.partial_fit(X[i:i + 1], y[i:i + 1] if labels else None,
                          correct=predicted == y[i:i + 1])
    return np.array(correct)


@pytest.mark.parametrize("half_life", [1.0, 5.0, 20.0, 137.5])
def test_a_half_life_halves_an_observations_weight(half_life: float) -> None:
    rate = rate_from_half_life(half_life)
    weight = 1.0
    for _ in range(int(half_life)):
        weight *= 1.0 - rate
    if half_life.is_integer():
        assert weight == pytest.approx(0.5)
    assert half_life_from_rate(rate) == pytest.approx(half_life)
    assert rate_from_half_life(math.inf) == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_rate_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(DecoderError, match=r"rate must be in \[0, 1\]"):
        PooledMeanBias(rate=bad).rate_
    with pytest.raises(DecoderError, match="half_life must be > 0"):
        rate_from_half_life(-3)


def test_pooled_mean_bias_undoes_a_shift_of_every_feature_without_labels() -> None:
    rng = np.random.default_rng(1)
    X, y = two_class_epochs(rng, 80)
    gain = np.array([3.0, 1.0, 1.0, 1.0])  # channel 0's contact got worse
    Xt, yt = two_class_epochs(rng, 120, gain=gain)
    static = LogVarLDA().fit(X, y)
    assert np.mean(static.predict(Xt) == yt) < 0.7
    model = CoAdaptiveDecoder(LogVarLDA(), [PooledMeanBias(half_life=5)]).fit(X, y)
    correct = pseudo_online(model, Xt, yt)
    assert correct[40:].mean() > 0.9  # recovered, without a single label
    moved = model.strategies_[0].mean_ - model.strategies_[0].mean0_
    np.testing.assert_allclose(moved, 2 * np.log(gain), atol=0.35)


def test_feature_normalization_is_a_head_fitted_on_z_scores() -> None:
    rng = np.random.default_rng(2)
    X, y = two_class_epochs(rng, 60)
    model = CoAdaptiveDecoder(LogVarLDA(), [FeatureNormalization(half_life=10)]).fit(X, y)
    before = model.decision_function(X)
    # with no update the folded scaling is the identity: same scores as the plain decoder
    np.testing.assert_allclose(before, LogVarLDA().fit(X, y).decision_function(X))
    Xt, yt = two_class_epochs(rng, 150, gain=np.array([1.0, 0.3, 1.0, 1.0]))
    assert np.mean(LogVarLDA().fit(X, y).predict(Xt) == yt) < 0.75  # the drift hurts
    correct = pseudo_online(model, Xt, yt)
    assert correct[50:].mean() > 0.9
    s = model.strategies_[0]
    f = model.decoder_.features(Xt[-60:])
    np.testing.assert_allclose(s.mean_, f.mean(axis=0), atol=0.3)


def test_supervised_partial_fit_skips_unlabelled_trials_and_uses_labelled_ones() -> None:
    from sklearn.linear_model import SGDClassifier

    class SgdHead(LogVarLDA):
        def _make_head(self) -> SGDClassifier:
            return SGDClassifier(loss="log_loss", random_state=0)

    rng = np.random.default_rng(3)
    X, y = two_class_epochs(rng, 60)
    model = CoAdaptiveDecoder(SgdHead(), [HeadPartialFit()]).fit(X, y)
    coef = model.decoder_.head_.coef_.copy()
    model.partial_fit(X[:5])  # no labels: a supervised strategy does nothing
    np.testing.assert_array_equal(model.decoder_.head_.coef_, coef)
    model.partial_fit(X[:5], y[:5])
    assert not np.array_equal(model.decoder_.head_.coef_, coef)


def test_head_partial_fit_does_not_apply_to_a_head_without_it() -> None:
    rng = np.random.default_rng(4)
    X, y = two_class_epochs(rng, 40)
    with pytest.raises(DecoderError, match="cannot be updated online"):
        CoAdaptiveDecoder(LogVarLDA(), [HeadPartialFit()]).fit(X, y)


def test_error_weighted_learns_from_the_outcome_when_no_label_is_given() -> None:
    rng = np.random.default_rng(5)
    X, y = two_class_epochs(rng, 60)
    Xt, yt = two_class_epochs(rng, 30)
    inner = PooledMeanBias(half_life=2)
    model = CoAdaptiveDecoder(LogVarLDA(), [ErrorWeighted(inner, error_weight=0.0)]).fit(X, y)
    strategy = model.strategies_[0].inner_
    mean = strategy.mean_.copy()
    model.partial_fit(Xt[:1])  # no outcome: nothing to weight by
    np.testing.assert_array_equal(strategy.mean_, mean)
    model.partial_fit(Xt[:1], correct=[False])  # an error with weight 0: no update
    np.testing.assert_array_equal(strategy.mean_, mean)
    model.partial_fit(Xt[:1], correct=[True])
    assert not np.array_equal(strategy.mean_, mean)
    w = model.strategies_[0].weights_for(np.array([True, False]))
    np.testing.assert_array_equal(w, [1.0, 0.0])


def test_error_weighted_supervised_inner_infers_binary_labels_from_outcomes() -> None:
    rng = np.random.default_rng(6)
    X, y = two_class_epochs(rng, 40)
    model = CoAdaptiveDecoder(LogVarLDA(), [ErrorWeighted(PooledMeanBias())]).fit(X, y)
    ew = model.strategies_[0]
    predicted = model.predict(X[:6])
    truth = ew._labels_from_outcome(model._aligned(X[:6]), predicted == y[:6],
                                    model.decoder_)
    np.testing.assert_array_equal(truth, y[:6])  # right kept, wrong flipped: the true class


@pytest.mark.parametrize("bad_call, match", [
    (lambda m, X, y: m.partial_fit(X[:2, :3], y[:2]), "fitted on 4 channels"),
    (lambda m, X, y: m.partial_fit(np.where(np.arange(4)[None, :, None] == 1, np.nan, X[:2]),
                                   y[:2]), "NaN or Inf"),
    (lambda m, X, y: m.partial_fit(X[:2], np.array(["a", "z"])), r"unknown class label\(s\)"),
    (lambda m, X, y: m.partial_fit(X[:2], y[:2], sample_weight=[0.5, 2.0]),
     "sample_weight must hold"),
    (lambda m, X, y: m.predict(X[:2, :, :50]), "windows of 100 samples"),
])
def test_bad_input_is_refused_and_the_serving_model_is_unchanged(bad_call, match) -> None:
    rng = np.random.default_rng(7)
    X, y = two_class_epochs(rng, 50)
    model = CoAdaptiveDecoder(LogVarLDA(), [PooledMeanBias(half_life=3)]).fit(X, y)
    before = model.predict_proba(X)
    with pytest.raises(DecoderError, match=match):
        bad_call(model, X, y)
    np.testing.assert_array_equal(model.predict_proba(X), before)


def test_use_before_fit_says_so() -> None:
    rng = np.random.default_rng(8)
    X, y = two_class_epochs(rng, 4)
    with pytest.raises(NotFittedError, match="partial_fit before fit"):
        CoAdaptiveDecoder(LogVarLDA(), []).partial_fit(X, y)
    with pytest.raises(NotFittedError, match="predict before fit"):
        LogVarLDA().predict(X)
    with pytest.raises(NotFittedError):
        PooledMeanBias().update(X)


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(DecoderError, match="unknown adaptation strategy 'nope'") as info:
        make_strategy("nope")
    assert "lda-bias" in info.value.hint


def test_a_copy_adapts_independently() -> None:
    rng = np.random.default_rng(9)
    X, y = two_class_epochs(rng, 40)
    model = CoAdaptiveDecoder(LogVarLDA(), [PooledMeanBias(half_life=2)]).fit(X, y)
    twin = model.copy()
    twin.partial_fit(X[:10] * 5)
    assert not np.array_equal(twin.decision_function(X), model.decision_function(X))
    assert model.n_updates_ == 0 and twin.n_updates_ == 10
