"""Motor-imagery decoders: adaptive LDA, CSP, tangent space, MDM.

Statistics rather than shapes: the Sherman-Morrison update against a weighted
refit, the half-life meaning of every rate, the fast paths against pyRiemann,
scikit-learn's estimator checks, bad inputs that must leave a serving model
exactly as it was, and the real-data targets.

The real-data test uses PhysioNet EEGMMIDB subject S001 in
``<repo>/../shared/data/physionet_eegmmidb`` (skipped when absent) with the
evaluation harness's protocol: read with MNE, causal Butterworth band-pass
(order 4, 1-40 Hz, ``sosfilt`` forward only) over the whole recording, epochs
``[onset + 0.5 s, onset + 2.5 s)`` of the T1/T2 events.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pyriemann.classification import MDM as PyriemannMDM
from pyriemann.estimation import Covariances
from pyriemann.geometry.geodesic import geodesic_riemann
from pyriemann.tangentspace import TangentSpace
from scipy import signal as sps
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.utils.estimator_checks import estimator_checks_generator, parametrize_with_checks

from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategy
from bci_runtime.decoders.base import rate_from_half_life
from bci_runtime.decoders.csp import CSPLDA, FilterBankCSP
from bci_runtime.decoders.lda import AdaptiveLDA
from bci_runtime.decoders.riemann import (
    MDM,
    TangentSpaceLR,
    band_covariances,
    band_pass_epochs,
    band_scm_operator,
)
from bci_runtime.errors import DecoderError, NotFittedError

SFREQ = 160.0
N_TIMES = 320
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "physionet_eegmmidb" / "S001"


# -- synthetic motor imagery ------------------------------------------------------------

def mi_trials(rng: np.random.Generator, n: int, n_channels: int = 12,
              mixing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-class 'imagery': source 0 stronger for left, source 1 for right, mixed.

    White sources (their 8-30 Hz part is what the decoders see), the class
    changes one source's standard deviation by a factor of 2.

    Returns
    -------
    X : ndarray, shape (n, n_channels, N_TIMES)
    y : ndarray of str, shape (n,)
    """
    y = np.array(["left", "right"])[np.arange(n) % 2]
    rng.shuffle(y)
    gain = np.ones((n, n_channels))
    gain[y == "left", 0] = 2.0
    gain[y == "right", 1] = 2.0
    S = rng.normal(size=(n, n_channels, N_TIMES)) * gain[:, :, None]
    mixing = np.eye(n_channels) if mixing is None else mixing
    return mixing @ S, y


@pytest.fixture(scope="module")
def mi_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(12, 12)) + 3 * np.eye(12)
    X, y = mi_trials(rng, 48, mixing=mixing)
    Xt, yt = mi_trials(rng, 40, mixing=mixing)
    return X, y, Xt, yt


def epoch_decoders() -> list:
    return [TangentSpaceLR(), TangentSpaceLR(head="lda", bands=[(8, 14), (14, 30)]), MDM(),
            CSPLDA(), FilterBankCSP(bands=[(8, 14), (14, 30)])]


def _id(est: object) -> str:
    return repr(est).replace(" ", "").replace("\n", "")


# -- AdaptiveLDA ------------------------------------------------------------------------

def _lda_expected_failures(estimator: AdaptiveLDA) -> dict[str, str]:
    if estimator.shrinkage is None:
        # 30 features from 15 samples: without shrinkage the pooled covariance is
        # singular (only the rounding-level ridge keeps it invertible), so weighted and
        # repeated sums that differ in the last bit give coefficients differing at 1e-5
        return {"check_sample_weight_equivalence_on_dense_data":
                "singular covariance without shrinkage amplifies rounding"}
    return {}


@parametrize_with_checks([AdaptiveLDA(), AdaptiveLDA(shrinkage=None),
                          AdaptiveLDA(shrinkage=0.3, rate=0.1)],
                         expected_failed_checks=_lda_expected_failures)
def test_adaptive_lda_is_a_scikit_learn_classifier(estimator, check) -> None:
    check(estimator)


def blobs(rng: np.random.Generator, n: int, n_features: int = 5,
          n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes with a shared, correlated covariance."""
    y = np.arange(n) % n_classes
    means = rng.normal(scale=2.0, size=(n_classes, n_features))
    L = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features) + np.eye(n_features)
    return means[y] + rng.normal(size=(n, n_features)) @ L.T, y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_adaptive_lda_without_shrinkage_is_scikit_learns_lda(n_classes: int) -> None:
    rng = np.random.default_rng(0)
    X, y = blobs(rng, 90, n_classes=n_classes)
    ours = AdaptiveLDA(shrinkage=None).fit(X, y)
    ref = LinearDiscriminantAnalysis(solver="lsqr").fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-7)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)


def test_adaptive_lda_auto_shrinkage_is_ledoit_wolf_on_standardised_residuals() -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    X, y = blobs(rng, 40, n_features=12)
    lda = AdaptiveLDA().fit(X, y)
    residuals = X - lda.means_[y]
    expected = ledoit_wolf_shrinkage(StandardScaler().fit_transform(residuals),
                                     assume_centered=True)
    assert 0 < lda.shrinkage_ < 1
    assert lda.shrinkage_ == pytest.approx(expected, rel=1e-9)


def test_partial_fit_sherman_morrison_equals_a_weighted_refit() -> None:
    """Rank-one updates with forgetting == refit with exponentially decayed weights."""
    rng = np.random.default_rng(2)
    X, y = blobs(rng, 60)
    Xn, yn = blobs(rng, 25)
    Xn += 0.7  # the new trials come from a drifted distribution
    wn = rng.uniform(0.2, 1.0, size=25)
    rate = 0.08
    lda = AdaptiveLDA(shrinkage=None, rate=rate).fit(X, y)
    for batch in np.array_split(np.arange(25), [1, 2, 7, 8, 20]):  # single trials and batches
        lda.partial_fit(Xn[batch], yn[batch], sample_weight=wn[batch])

    steps = rate * wn
    later = np.concatenate([np.cumprod((1 - steps)[::-1])[::-1][1:], [1.0]])  # prod_{j>i}
    w_new = steps * later
    w_cal = np.full(60, np.prod(1 - steps) / 60)
    refit = AdaptiveLDA(shrinkage=None).fit(np.vstack([X, Xn]), np.concatenate([y, yn]),
                                            sample_weight=np.concatenate([w_cal, w_new]))
    np.testing.assert_allclose(lda.means_, refit.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lda.covariance_, refit.covariance_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lda.precision_, refit.precision_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(lda.priors_, refit.priors_, rtol=1e-10)
    np.testing.assert_allclose(lda.coef_, refit.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(lda.intercept_, refit.intercept_, rtol=1e-7, atol=1e-9)
    assert lda.n_updates_ == 25


def test_sherman_morrison_precision_stays_the_inverse_over_many_updates() -> None:
    rng = np.random.default_rng(3)
    X, y = blobs(rng, 60, n_features=8)
    lda = AdaptiveLDA(half_life=10).fit(X, y)
    Xn, yn = blobs(rng, 2000, n_features=8)
    for i in range(0, 2000, 4):
        lda.partial_fit(Xn[i:i + 4], yn[i:i + 4])
    np.testing.assert_allclose(lda.precision_ @ lda.covariance_, np.eye(8), atol=1e-8)


def test_half_life_halves_the_weight_of_what_came_before() -> None:
    rng = np.random.default_rng(4)
    X, y = blobs(rng, 40, n_classes=2)
    lda = AdaptiveLDA(half_life=12).fit(X, y)
    before = lda.class_weights_.copy()
    xa = X[y == 0][:1]
    for _ in range(12):  # twelve updates, all of class 0
        lda.partial_fit(xa, [0])
    # class 1 saw nothing new: its calibration weight has exactly halved
    assert lda.class_weights_[1] == pytest.approx(before[1] / 2, rel=1e-12)
    assert lda._rate() == pytest.approx(rate_from_half_life(12))
    assert AdaptiveLDA(half_life=12, rate=0.3)._rate() == 0.3  # rate overrides


def test_partial_fit_before_fit_needs_classes() -> None:
    rng = np.random.default_rng(5)
    X, y = blobs(rng, 30, n_classes=2)
    with pytest.raises(DecoderError, match="before fit"):
        AdaptiveLDA().partial_fit(X, y)
    with pytest.raises(DecoderError, match="every class"):
        AdaptiveLDA().partial_fit(X[y == 0], y[y == 0], classes=[0, 1])
    first = AdaptiveLDA().partial_fit(X, y, classes=[0, 1])
    np.testing.assert_allclose(first.coef_, AdaptiveLDA().fit(X, y).coef_)


def _bad_lda_calls(X: np.ndarray, y: np.ndarray) -> dict:
    nan = X[:2].copy()
    nan[1, 2] = np.nan
    return {
        "feature count": lambda m: m.partial_fit(X[:2, :-1], y[:2]),
        "unknown class": lambda m: m.partial_fit(X[:2], np.array([0, 7])),
        "NaN window": lambda m: m.partial_fit(nan, y[:2]),
        "rate above 1": lambda m: m.set_params(rate=1.5).partial_fit(X[:2], y[:2]),
        "negative rate": lambda m: m.set_params(rate=-0.1).partial_fit(X[:2], y[:2]),
        "weight above 1": lambda m: m.partial_fit(X[:2], y[:2], sample_weight=[1.0, 2.0]),
        "other classes": lambda m: m.partial_fit(X[:2], y[:2], classes=[0, 1, 2]),
        "predict feature count": lambda m: m.predict(X[:2, :-1]),
        "predict NaN": lambda m: m.predict_proba(nan),
    }


@pytest.mark.parametrize("bad", list(_bad_lda_calls(np.zeros((2, 3)), np.zeros(2))))
def test_adaptive_lda_bad_input_changes_nothing(bad: str) -> None:
    rng = np.random.default_rng(6)
    X, y = blobs(rng, 40, n_classes=2)
    lda = AdaptiveLDA(half_life=5).fit(X, y)
    lda.partial_fit(X[:3], y[:3])
    before = lda.predict_proba(X)
    state = pickle.dumps(lda)
    with pytest.raises(DecoderError):
        _bad_lda_calls(X, y)[bad](lda)
    lda.set_params(rate=None)  # undo what the call itself set
    np.testing.assert_array_equal(lda.predict_proba(X), before)
    assert pickle.dumps(lda) == state


def test_a_failed_refit_leaves_the_model_serving() -> None:
    rng = np.random.default_rng(9)
    X, y = blobs(rng, 40, n_classes=2)
    lda = AdaptiveLDA(shrinkage=None).fit(X, y)
    before, state = lda.predict_proba(X), pickle.dumps(lda)
    with pytest.raises(DecoderError, match="singular"):  # found after validation
        lda.fit(np.zeros((10, 8)), np.arange(10) % 2)
    np.testing.assert_array_equal(lda.predict_proba(X), before)
    assert pickle.dumps(lda) == state


# -- fast paths against pyRiemann -------------------------------------------------------

@pytest.mark.parametrize("phase", ["zero", "causal"])
@pytest.mark.parametrize("estimator", ["scm", "oas", "cov"])
def test_band_covariances_are_band_pass_then_pyriemann(phase: str, estimator: str) -> None:
    rng = np.random.default_rng(8)
    X = rng.normal(size=(4, 10, N_TIMES)) * rng.uniform(0.5, 3, size=(1, 10, 1))
    sos = sps.butter(4, (8, 30), btype="bandpass", fs=SFREQ, output="sos")
    fast = band_covariances(X, estimator, sos, band_scm_operator(sos, N_TIMES, phase), phase)
    slow = Covariances(estimator).transform(band_pass_epochs(X, sos, phase))
    # the operator's product runs in float32
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6 * np.abs(slow).max())
    exact = band_scm_operator(sos, N_TIMES, phase, dtype=np.float64)
    np.testing.assert_allclose(band_covariances(X, estimator, sos, exact, phase), slow,
                               rtol=1e-8, atol=1e-8 * np.abs(slow).max())
    if phase == "zero":  # a DC offset 10^4 times the signal costs nothing
        offset = band_covariances(X + 1e4, estimator, sos,
                                  band_scm_operator(sos, N_TIMES, phase), phase)
        np.testing.assert_allclose(offset, slow, rtol=1e-5, atol=1e-6 * np.abs(slow).max())


def test_tangent_space_features_are_pyriemanns(mi_data) -> None:
    X, y, Xt, _ = mi_data
    dec = TangentSpaceLR(bands=[(8, 14), (14, 30)], estimator="lwf").fit(X, y)
    expected = []
    for lo, hi in [(8, 14), (14, 30)]:
        sos = sps.butter(4, (lo, hi), btype="bandpass", fs=SFREQ, output="sos")
        covs = Covariances("lwf").transform(sps.sosfiltfilt(sos, X, axis=-1))
        covs_t = Covariances("lwf").transform(sps.sosfiltfilt(sos, Xt, axis=-1))
        expected.append(TangentSpace().fit(covs).transform(covs_t))
    # the logarithm's eigendecomposition runs in float32 (riemann.log_spd): ~1e-6
    np.testing.assert_allclose(dec.features(Xt), np.hstack(expected), rtol=0, atol=1e-5)
    # the logistic head in one product: the same probabilities as scikit-learn's
    np.testing.assert_allclose(dec.predict_proba(Xt),
                               dec.head_.predict_proba(dec.features(Xt)), atol=1e-12)


def test_mdm_features_are_pyriemanns_distances(mi_data) -> None:
    X, y, Xt, _ = mi_data
    dec = MDM().fit(X, y)
    sos = sps.butter(4, (8, 30), btype="bandpass", fs=SFREQ, output="sos")
    covs = Covariances("oas").transform(sps.sosfiltfilt(sos, X, axis=-1))
    covs_t = Covariances("oas").transform(sps.sosfiltfilt(sos, Xt, axis=-1))
    ref = PyriemannMDM().fit(covs, y)
    # the band covariances' product runs in float32 (band_scm_operator): ~1e-7 relative
    np.testing.assert_allclose(dec.features(Xt), ref.transform(covs_t), rtol=1e-5)
    np.testing.assert_allclose(dec.predict_proba(Xt), ref.predict_proba(covs_t), atol=1e-5)


# -- epoch decoders: scikit-learn's checks that apply to epochs -------------------------

#: checks that feed 2-D (n_samples, n_features) data: an epoch decoder takes
#: (n_trials, n_channels, n_times) and rightly refuses it; their 3-D counterparts
#: are the tests below (fit returns self, idempotence, pickling, subset and order
#: invariance, NaN, dtypes, read-only input, one class, continuous targets)
TWO_D_CHECKS = (
    "check_classifier_data_not_an_array", "check_classifiers_classes",
    "check_classifiers_one_label", "check_classifiers_regression_target",
    "check_classifiers_train", "check_complex_data", "check_decision_proba_consistency",
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimator_sparse_tag", "check_estimators_dtypes",
    "check_estimators_empty_data_messages", "check_estimators_fit_returns_self",
    "check_estimators_nan_inf", "check_estimators_overwrite_params",
    "check_estimators_partial_fit_n_features", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_1sample",
    "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
    "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in",
    "check_n_features_in_after_fitting", "check_pipeline_consistency",
    "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
    "check_requires_y_none", "check_supervised_y_2d",
)


def _epoch_checks():
    skip = {name: "feeds 2-D data; epoch decoders take (n_trials, n_channels, n_times)"
            for name in TWO_D_CHECKS}
    for est in epoch_decoders():
        for estimator, check in estimator_checks_generator(
                est, legacy=True, expected_failed_checks=skip, mark="skip"):
            name = getattr(check, "func", check).__name__
            yield pytest.param(estimator, check, id=f"{type(est).__name__}-{name}")


@pytest.mark.parametrize(("estimator", "check"), list(_epoch_checks()))
def test_epoch_decoders_pass_scikit_learns_api_checks(estimator, check) -> None:
    check(estimator)


# -- epoch decoders: the same properties on epochs --------------------------------------

@pytest.mark.parametrize("decoder", epoch_decoders(), ids=_id)
def test_epoch_decoder_learns_and_behaves_like_an_estimator(decoder, mi_data) -> None:
    X, y, Xt, yt = mi_data
    params = decoder.get_params()
    fitted = decoder.fit(X, y)
    assert fitted is decoder
    assert decoder.get_params() == params  # fit does not touch the parameters
    assert (decoder.predict(Xt) == yt).mean() >= 0.85

    proba = decoder.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(decoder.classes_) == ["left", "right"]
    np.testing.assert_array_equal(decoder.classes_[proba.argmax(axis=1)], decoder.predict(Xt))
    # one trial at a time is the batch; the order of trials does not matter
    single = np.vstack([decoder.predict_proba(Xt[i:i + 1]) for i in range(len(Xt))])
    np.testing.assert_allclose(single, proba, rtol=1e-9, atol=1e-12)
    order = np.random.default_rng(0).permutation(len(Xt))
    np.testing.assert_allclose(decoder.predict_proba(Xt[order]), proba[order], atol=1e-12)
    # fitting again on the same data gives the same model; a pickle predicts the same
    again = clone(decoder).fit(X, y)
    np.testing.assert_allclose(again.predict_proba(Xt), proba, atol=1e-9)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(decoder)).predict_proba(Xt), proba)
    # float32 and read-only inputs are fine
    X32 = Xt.astype(np.float32)
    X32.setflags(write=False)
    np.testing.assert_allclose(decoder.predict_proba(X32), proba, atol=1e-4)


@pytest.mark.parametrize("decoder", epoch_decoders()[:1] + epoch_decoders()[2:4], ids=_id)
def test_epoch_decoder_refuses_bad_training_data(decoder, mi_data) -> None:
    X, y, _, _ = mi_data
    with pytest.raises(DecoderError, match="2 classes"):
        clone(decoder).fit(X, np.full(len(y), "left"))
    with pytest.raises(ValueError):
        clone(decoder).fit(X, np.linspace(0, 1, len(y)))  # a regression target
    bad = X.copy()
    bad[3, 1, 10] = np.inf
    with pytest.raises(DecoderError, match="NaN or Inf"):
        clone(decoder).fit(bad, y)
    with pytest.raises(DecoderError, match="sfreq"):
        clone(decoder).set_params(sfreq=-1.0).fit(X, y)
    with pytest.raises(DecoderError, match="Nyquist"):
        clone(decoder).set_params(sfreq=50.0).fit(X, y)


def _bad_epoch_calls(X: np.ndarray, y: np.ndarray) -> dict:
    nan = X[:2].copy()
    nan[0, 3, 50] = np.nan
    return {
        "channel count": lambda d: d.partial_fit(X[:2, :-1], y[:2]),
        "window length": lambda d: d.partial_fit(X[:2, :, :-5], y[:2]),
        "unknown class": lambda d: d.partial_fit(X[:2], np.array(["left", "feet"])),
        "NaN window": lambda d: d.partial_fit(nan, y[:2]),
        "weight above 1": lambda d: d.partial_fit(X[:2], y[:2], sample_weight=[1.0, 1.5]),
        "rate outside [0, 1]": _set_bad_rate_then_update(X, y),
        "predict channel count": lambda d: d.predict(X[:2, :-1]),
        "predict NaN": lambda d: d.predict_proba(nan),
        "2-D input": lambda d: d.predict(X[0]),
    }


def _set_bad_rate_then_update(X: np.ndarray, y: np.ndarray):
    def call(d) -> None:
        if isinstance(d, MDM):
            d.set_params(rate=1.5)
            try:
                d.partial_fit(X[:2], y[:2])
            finally:
                d.set_params(rate=None)
        elif isinstance(d, TangentSpaceLR):
            d.update_reference(X[:2], rate=1.5)
        else:
            d.head_.set_params(rate=-0.5)
            try:
                d.partial_fit(X[:2], y[:2])
            finally:
                d.head_.set_params(rate=None)
    return call


@pytest.mark.parametrize("bad", list(_bad_epoch_calls(np.zeros((2, 12, N_TIMES)), np.zeros(2))))
@pytest.mark.parametrize("decoder", [MDM(), CSPLDA(), TangentSpaceLR(head="lda")], ids=_id)
def test_epoch_decoder_bad_input_raises_and_changes_nothing(decoder, bad, mi_data) -> None:
    X, y, Xt, yt = mi_data
    decoder.fit(X, y)
    decoder.partial_fit(Xt[:2], yt[:2])
    before = decoder.predict_proba(Xt)
    state = pickle.dumps(decoder)
    with pytest.raises(DecoderError):
        _bad_epoch_calls(Xt, yt)[bad](decoder)
    np.testing.assert_array_equal(decoder.predict_proba(Xt), before)
    assert pickle.dumps(decoder) == state


@pytest.mark.parametrize("decoder", epoch_decoders(), ids=_id)
def test_epoch_decoder_failed_refit_changes_nothing(decoder, mi_data) -> None:
    X, y, Xt, _ = mi_data
    decoder.fit(X, y)
    before, state = decoder.predict_proba(Xt), pickle.dumps(decoder)
    flat = X[:, :6].copy()
    flat[:, 0] = 0.0  # a dead channel: singular covariances, found after the filters are made
    with pytest.raises(DecoderError):
        decoder.fit(flat[:, :, :200] * 0.0, y)
    np.testing.assert_array_equal(decoder.predict_proba(Xt), before)
    assert pickle.dumps(decoder) == state


@pytest.mark.parametrize("decoder", epoch_decoders(), ids=_id)
def test_epoch_decoder_partial_fit_before_fit_is_a_decoder_error(decoder, mi_data) -> None:
    X, y, _, _ = mi_data
    with pytest.raises(NotFittedError, match="before fit") as info:
        decoder.partial_fit(X[:2], y[:2])
    assert isinstance(info.value, DecoderError)
    with pytest.raises(NotFittedError):
        decoder.predict(X[:2])


def test_which_decoders_update_online(mi_data) -> None:
    X, y, _, _ = mi_data
    assert MDM().fit(X, y).supports_partial_fit
    assert CSPLDA().fit(X, y).supports_partial_fit
    assert TangentSpaceLR(head="lda").fit(X, y).supports_partial_fit
    logreg = TangentSpaceLR().fit(X, y)
    assert not logreg.supports_partial_fit
    with pytest.raises(DecoderError, match="cannot be updated online"):
        logreg.partial_fit(X[:1], y[:1])


def test_csp_partial_fit_is_the_lda_heads_update(mi_data) -> None:
    X, y, Xt, yt = mi_data
    dec = CSPLDA(half_life=8).fit(X, y)
    head = clone(dec.head_).fit(dec.features(X), y)
    dec.partial_fit(Xt[:6], yt[:6])
    head.partial_fit(dec.features(Xt[:6]), yt[:6])
    np.testing.assert_allclose(dec.head_.coef_, head.coef_, rtol=1e-12)
    assert dec.head_.n_updates_ == 6


def test_mdm_partial_fit_is_a_geodesic_step_with_a_half_life(mi_data) -> None:
    X, y, Xt, yt = mi_data
    dec = MDM(half_life=6).fit(X, y)
    m0 = dec.mdm_.covmeans_.copy()
    trial = Xt[yt == "right"][:1]
    c = dec._band_covariances(trial)[0][0]
    dec.partial_fit(trial, ["right"])
    rate = rate_from_half_life(6)
    np.testing.assert_allclose(dec.mdm_.covmeans_[1], geodesic_riemann(m0[1], c, rate),
                               rtol=1e-9)
    np.testing.assert_array_equal(dec.mdm_.covmeans_[0], m0[0])  # the other class stays
    for _ in range(5):  # six steps towards the same covariance: halfway along the geodesic
        dec.partial_fit(trial, ["right"])
    np.testing.assert_allclose(dec.mdm_.covmeans_[1], geodesic_riemann(m0[1], c, 0.5),
                               rtol=1e-8)
    # the kept roots follow the mean, so the distances stay pyRiemann's
    np.testing.assert_allclose(dec.features(Xt), dec.mdm_.transform(dec._band_covariances(Xt)[0]),
                               rtol=1e-5)  # float32 eigenvalues (log_eigenvalues)


def test_tangent_space_reference_update_has_a_half_life(mi_data) -> None:
    X, y, Xt, _ = mi_data
    dec = TangentSpaceLR().fit(X, y)
    ref0 = dec.ts_[0].reference_.copy()
    c = dec._band_covariances(Xt[:1])[0][0]
    for _ in range(10):
        dec.update_reference(Xt[:1], rate=rate_from_half_life(10))
    np.testing.assert_allclose(dec.ts_[0].reference_, geodesic_riemann(ref0, c, 0.5), rtol=1e-8)
    # the features are pyRiemann's tangent space at the moved reference
    covs = dec._band_covariances(Xt)[0]
    np.testing.assert_allclose(dec.features(Xt), dec.ts_[0].transform(covs), rtol=0,
                               atol=1e-5)  # float32 eigendecomposition (log_spd)
    assert dec.n_reference_updates_ == 10
    before = dec.features(Xt)
    dec.update_reference(Xt[:3], sample_weight=np.zeros(3))  # weight 0: no change
    np.testing.assert_array_equal(dec.features(Xt), before)


# -- the real-data targets ----------------------------------------------------------------

def _load_run(run: int, tmin: float = 0.5, tmax: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """The harness's protocol: MNE, causal 1-40 Hz Butterworth over the recording, epochs."""
    mne = pytest.importorskip("mne")
    path = DATA / f"S001R{run:02d}.edf"
    if not path.is_file():
        pytest.skip(f"PhysioNet EEGMMIDB S001 not found at {DATA}")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    sfreq = raw.info["sfreq"]
    sos = sps.butter(4, [1.0, 40.0], btype="bandpass", fs=sfreq, output="sos")
    data = sps.sosfilt(sos, raw.get_data(), axis=1)
    n = int(round((tmax - tmin) * sfreq))
    X, y = [], []
    for onset, label in zip(raw.annotations.onset, raw.annotations.description):
        if label in ("T1", "T2"):
            start = int(round((onset + tmin) * sfreq))
            if start + n <= data.shape[1]:
                X.append(data[:, start:start + n])
                y.append(label)
    return np.asarray(X), np.asarray(y)


def _pseudo_online(model: CoAdaptiveDecoder, X: np.ndarray, y: np.ndarray) -> float:
    """Each trial predicted by the model of that moment, then shown without its label."""
    hits = []
    for i in range(len(X)):
        hits.append(model.predict(X[i:i + 1])[0] == y[i])
        model.partial_fit(X[i:i + 1])
    return float(np.mean(hits))


@pytest.mark.slow
@pytest.mark.parametrize(("train", "test", "target"), [((4, 8), 12, 0.90),
                                                        ((6, 10), 14, 0.93)],
                         ids=["left-vs-right", "fists-vs-feet"])
def test_default_mi_decoder_meets_the_real_data_targets(train, test, target) -> None:
    """ts-lr (8-30 Hz, OAS, C=1) with unsupervised ts-recenter (half-life 20 trials)."""
    parts = [_load_run(r) for r in train]
    X, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    Xt, yt = _load_run(test)
    assert X.shape[1:] == (64, N_TIMES) and len(Xt) == 15

    static = (TangentSpaceLR(sfreq=SFREQ).fit(X, y).predict(Xt) == yt).mean()
    model = CoAdaptiveDecoder(TangentSpaceLR(sfreq=SFREQ),
                              [make_strategy("ts-recenter", half_life=20)]).fit(X, y)
    adaptive = _pseudo_online(model, Xt, yt)
    assert adaptive >= target, f"pseudo-online {adaptive:.3f} (static {static:.3f})"
    assert adaptive >= static  # re-centring without labels did not cost a trial
