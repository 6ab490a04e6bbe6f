"""Riemannian co-adaptation: re-centring, Procrustes rotation, Euclidean alignment.

What the strategies compute (their references against pyRiemann, the meaning of
the half-life), that they undo a change of the mixing without labels (a random
SPD matrix applied to every test epoch), and that a bad call leaves them, and
the decoder they serve, exactly as they were.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pyriemann.estimation import Covariances
from pyriemann.geometry.geodesic import geodesic_riemann
from pyriemann.geometry.mean import mean_riemann
from scipy import signal as sps
from scipy.linalg import expm

from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategy, strategy_names
from bci_runtime.decoders.base import rate_from_half_life
from bci_runtime.decoders.csp import CSPLDA
from bci_runtime.decoders.riemann import MDM, TangentSpaceLR
from bci_runtime.decoders.riemann_adaptation import (
    EuclideanAlignment,
    RiemannianProcrustes,
    RiemannianRecentering,
    TangentSpaceRecentering,
)
from bci_runtime.errors import DecoderError, NotFittedError

SFREQ = 160.0
N_TIMES = 320
N_CHANNELS = 12


def mi_trials(rng: np.random.Generator, n: int,
              mixing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class 'imagery': source 0 (left) or 1 (right) twice as strong, then mixed.

    Returns
    -------
    X : ndarray, shape (n, N_CHANNELS, N_TIMES)
    y : ndarray of str, shape (n,)
    """
    y = np.array(["left", "right"])[np.arange(n) % 2]
    rng.shuffle(y)
    gain = np.ones((n, N_CHANNELS))
    gain[y == "left", 0] = 2.0
    gain[y == "right", 1] = 2.0
    return mixing @ (rng.normal(size=(n, N_CHANNELS, N_TIMES)) * gain[:, :, None]), y


def random_spd(rng: np.random.Generator, scale: float) -> np.ndarray:
    B = rng.normal(size=(N_CHANNELS, N_CHANNELS))
    return expm(scale * (B + B.T) / 2)


@pytest.fixture(scope="module")
def shifted() -> dict[str, np.ndarray]:
    """Calibration epochs, and test epochs after a random SPD change of the mixing."""
    rng = np.random.default_rng(11)
    mixing = rng.normal(size=(N_CHANNELS, N_CHANNELS)) + 3 * np.eye(N_CHANNELS)
    X, y = mi_trials(rng, 60, mixing)
    Xt, yt = mi_trials(rng, 100, mixing)
    shift = random_spd(rng, 0.35)
    assert np.linalg.cond(shift) > 10  # a large change: electrodes see other mixtures
    return {"X": X, "y": y, "Xt": Xt, "yt": yt, "Xs": shift @ Xt}


def pseudo_online(model: CoAdaptiveDecoder, X: np.ndarray, y: np.ndarray,
                  labels: bool = False) -> np.ndarray:
    """Predict each trial with the model of that moment, then adapt; hits per trial."""
    hits = []
    for i in range(len(X)):
        hits.append(model.predict(X[i:i + 1])[0] == y[i])
        model.partial_fit(X[i:i + 1], y[i:i + 1] if labels else None)
    return np.asarray(hits)


def test_strategies_are_registered_by_name() -> None:
    names = strategy_names()
    for name, cls in [("recenter", RiemannianRecentering),
                      ("recenter-rotate", RiemannianProcrustes),
                      ("euclidean", EuclideanAlignment),
                      ("ts-recenter", TangentSpaceRecentering)]:
        assert name in names
        assert type(make_strategy(name, half_life=7)) is cls
    assert make_strategy("recenter-rotate").rotate
    assert not make_strategy("recenter").rotate
    assert make_strategy("recenter").stage == "signal"
    assert make_strategy("ts-recenter").stage == "head"
    assert not make_strategy("ts-recenter").supervised


# -- what the references are -------------------------------------------------------------

def test_recenter_reference_is_the_riemannian_mean_and_whitens_to_identity(shifted) -> None:
    X = shifted["X"]
    s = make_strategy("recenter").fit(X, shifted["y"])
    covs = Covariances("scm").transform(X)
    np.testing.assert_allclose(s.reference_, mean_riemann(covs), rtol=1e-7)
    # the SCM is equivariant: the whitened calibration covariances are centred at I
    centred = Covariances("scm").transform(s.transform(X))
    np.testing.assert_allclose(mean_riemann(centred), np.eye(N_CHANNELS), atol=1e-7)


def test_recenter_reference_on_a_band(shifted) -> None:
    X = shifted["X"]
    s = make_strategy("recenter", estimator="oas", sfreq=SFREQ, l_freq=8.0,
                      h_freq=30.0).fit(X, shifted["y"])
    sos = sps.butter(4, (8, 30), btype="bandpass", fs=SFREQ, output="sos")
    covs = Covariances("oas").transform(sps.sosfiltfilt(sos, X, axis=-1))
    # the band's covariances take one float32 product (band_scm_operator)
    np.testing.assert_allclose(s.reference_, mean_riemann(covs), rtol=1e-5)
    assert s.transform(X[:2]).shape == X[:2].shape  # the epochs stay broadband


def test_euclidean_alignment_reference_is_the_arithmetic_mean(shifted) -> None:
    X = shifted["X"]
    s = make_strategy("euclidean").fit(X, shifted["y"])
    covs = Covariances("scm").transform(X)
    np.testing.assert_allclose(s.reference_, covs.mean(axis=0), rtol=1e-10)
    aligned = Covariances("scm").transform(s.transform(X))
    np.testing.assert_allclose(aligned.mean(axis=0), np.eye(N_CHANNELS), atol=1e-10)


@pytest.mark.parametrize("name", ["recenter", "euclidean"])
def test_half_life_moves_the_reference_halfway(name: str, shifted) -> None:
    """``half_life`` updates towards one covariance: exactly halfway along the path."""
    X = shifted["X"]
    s = make_strategy(name, half_life=8).fit(X, shifted["y"])
    ref0 = s.reference_.copy()
    trial = shifted["Xs"][:1]
    c = Covariances("scm").transform(trial)[0]
    s.update(trial)
    step = rate_from_half_life(8)
    first = geodesic_riemann(ref0, c, step) if name == "recenter" else (1 - step) * ref0 + step * c
    np.testing.assert_allclose(s.reference_, first, rtol=1e-7)  # covariances of cond ~1e6
    for _ in range(7):
        s.update(trial)
    half = geodesic_riemann(ref0, c, 0.5) if name == "recenter" else (ref0 + c) / 2
    np.testing.assert_allclose(s.reference_, half, rtol=1e-6)
    np.testing.assert_allclose(s.whitener_ @ s.reference_ @ s.whitener_, np.eye(N_CHANNELS),
                               atol=1e-9)
    assert s.n_updates_ == 8


def test_sample_weight_scales_the_step(shifted) -> None:
    X, trial = shifted["X"], shifted["Xs"][:1]
    c = Covariances("scm").transform(trial)[0]
    s = make_strategy("recenter", rate=0.2).fit(X, shifted["y"])
    ref0 = s.reference_.copy()
    s.update(trial, sample_weight=np.array([0.0]))
    np.testing.assert_array_equal(s.reference_, ref0)  # weight 0: nothing learnt
    s.update(trial, sample_weight=np.array([0.5]))
    np.testing.assert_allclose(s.reference_, geodesic_riemann(ref0, c, 0.1), rtol=1e-7)


# -- what they are for: a change of the mixing, undone without labels --------------------

@pytest.mark.parametrize(("decoder", "strategy"), [
    (TangentSpaceLR(), "recenter"), (MDM(), "recenter"), (CSPLDA(), "recenter"),
    (TangentSpaceLR(), "euclidean"), (CSPLDA(), "euclidean"), (TangentSpaceLR(), "ts-recenter"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_unsupervised_recentering_recovers_accuracy_after_a_mixing_change(
        decoder, strategy, shifted) -> None:
    X, y, Xt, yt, Xs = (shifted[k] for k in ("X", "y", "Xt", "yt", "Xs"))
    static = CoAdaptiveDecoder(decoder, []).fit(X, y)
    assert (static.predict(Xt) == yt).mean() >= 0.9  # it decodes the unchanged signals
    broken = (static.predict(Xs) == yt).mean()
    assert broken <= 0.7  # and the change breaks it

    model = CoAdaptiveDecoder(decoder, [make_strategy(strategy, half_life=10)]).fit(X, y)
    hits = pseudo_online(model, Xs, yt)  # never sees a label
    assert hits[30:].mean() >= 0.9  # after ~3 half-lives the reference has followed
    assert hits[30:].mean() >= broken + 0.25
    # without a change, adapting costs nothing
    calm = CoAdaptiveDecoder(decoder, [make_strategy(strategy, half_life=10)]).fit(X, y)
    assert pseudo_online(calm, Xt, yt).mean() >= 0.9


@pytest.mark.parametrize("decoder", [CSPLDA(), MDM()], ids=lambda d: type(d).__name__)
def test_procrustes_rotation_recovers_what_recentering_cannot_see(decoder, shifted) -> None:
    """A rotation of the whitened signals keeps the mean covariance: re-centring is blind
    to it, the rotation of Rodrigues et al. matches the labelled class means again."""
    X, y, Xt, yt = (shifted[k] for k in ("X", "y", "Xt", "yt"))
    rng = np.random.default_rng(12)
    calibration = make_strategy("recenter").fit(X, y)
    B = rng.normal(size=(N_CHANNELS, N_CHANNELS))
    rotation = expm(0.5 * (B - B.T))  # orthogonal
    Xr = calibration.sqrt_ @ rotation @ calibration.whitener_ @ Xt  # same mean covariance

    plain = CoAdaptiveDecoder(decoder, [make_strategy("recenter", half_life=10)]).fit(X, y)
    rotated = CoAdaptiveDecoder(decoder, [make_strategy("recenter-rotate", half_life=10)]
                                ).fit(X, y)
    strategy = rotated.strategies_[0]
    np.testing.assert_array_equal(strategy.rotation_, np.eye(N_CHANNELS))
    plain_hits = pseudo_online(plain, Xr, yt, labels=True)
    rotated_hits = pseudo_online(rotated, Xr, yt, labels=True)  # the label after each trial
    assert plain_hits[30:].mean() <= 0.75
    assert rotated_hits[30:].mean() >= 0.95
    U = strategy.rotation_
    np.testing.assert_allclose(U @ U.T, np.eye(N_CHANNELS), atol=1e-9)
    # it matched the labelled online class means to the calibration's
    before = np.linalg.norm(strategy.online_means_ - strategy.class_means_)
    after = np.linalg.norm(U @ strategy.online_means_ @ U.T - strategy.class_means_)
    assert after < 0.5 * before


def test_rotation_waits_for_labels(shifted) -> None:
    s = make_strategy("recenter-rotate").fit(shifted["X"], shifted["y"])
    s.update(shifted["Xs"][:5])  # no labels: re-centring only
    np.testing.assert_array_equal(s.rotation_, np.eye(N_CHANNELS))
    assert s.n_updates_ == 5


def test_ts_recenter_needs_a_tangent_space_decoder(shifted) -> None:
    strategy = make_strategy("ts-recenter")
    assert strategy.applies_to(MDM()) is not None
    with pytest.raises(DecoderError, match="ts-recenter"):
        CoAdaptiveDecoder(MDM(), [strategy]).fit(shifted["X"], shifted["y"])


# -- bad input: an error, and nothing changed -----------------------------------------------

def _bad_updates(Xs: np.ndarray, yt: np.ndarray) -> dict:
    nan = Xs[:2].copy()
    nan[1, 4, 7] = np.nan
    return {
        "channel count": lambda s: s.update(Xs[:2, :-1]),
        "NaN window": lambda s: s.update(nan),
        "2-D window": lambda s: s.update(Xs[0]),
        "weight above 1": lambda s: s.update(Xs[:2], sample_weight=np.array([0.5, 1.5])),
        "rate outside [0, 1]": lambda s: s.set_params(rate=1.5).update(Xs[:2]),
        "unknown label": lambda s: s.update(Xs[:2], np.array(["left", "feet"])),
        "window length (band)": lambda s: s.update(Xs[:2, :, :-4]),
        "transform channel count": lambda s: s.transform(Xs[:2, :-1]),
    }


@pytest.mark.parametrize("bad", list(_bad_updates(np.zeros((2, N_CHANNELS, N_TIMES)), np.zeros(2))))
@pytest.mark.parametrize("name", ["recenter", "recenter-rotate", "euclidean"])
def test_bad_update_raises_and_changes_nothing(name: str, bad: str, shifted) -> None:
    X, y, Xs, yt = shifted["X"], shifted["y"], shifted["Xs"], shifted["yt"]
    s = make_strategy(name, sfreq=SFREQ, l_freq=8.0, h_freq=30.0).fit(X, y)
    s.update(Xs[:3], yt[:3])
    before = s.transform(Xs[:5])
    state = pickle.dumps(s)
    with pytest.raises(DecoderError):
        _bad_updates(Xs, yt)[bad](s)
    s.set_params(rate=None)
    np.testing.assert_array_equal(s.transform(Xs[:5]), before)
    assert pickle.dumps(s) == state


@pytest.mark.parametrize("name", ["recenter", "recenter-rotate", "euclidean", "ts-recenter"])
def test_update_before_fit_and_bad_rates(name: str, shifted) -> None:
    X, y = shifted["X"], shifted["y"]
    if name != "ts-recenter":
        with pytest.raises(NotFittedError):
            make_strategy(name).update(X[:1])
        with pytest.raises(NotFittedError):
            make_strategy(name).transform(X[:1])
    else:
        with pytest.raises(NotFittedError):
            make_strategy(name).update(X[:1], decoder=TangentSpaceLR().fit(X, y))
    for bad in ({"rate": -0.1}, {"rate": 1.5}, {"half_life": 0}, {"half_life": float("nan")}):
        with pytest.raises(DecoderError):
            CoAdaptiveDecoder(TangentSpaceLR(), [make_strategy(name, **bad)]).fit(X, y)


@pytest.mark.parametrize("name", ["recenter", "ts-recenter"])
def test_bad_partial_fit_leaves_the_served_model_unchanged(name: str, shifted) -> None:
    X, y, Xs = shifted["X"], shifted["y"], shifted["Xs"]
    model = CoAdaptiveDecoder(TangentSpaceLR(), [make_strategy(name)]).fit(X, y)
    model.partial_fit(Xs[:4])
    before = model.predict_proba(Xs[:10])
    state = pickle.dumps(model)
    nan = Xs[:2].copy()
    nan[0, 0, 0] = np.inf
    for call in (lambda: model.partial_fit(nan), lambda: model.partial_fit(Xs[:2, :-1]),
                 lambda: model.partial_fit(Xs[:2], np.array(["left", "up"])),
                 lambda: model.partial_fit(Xs[:2], sample_weight=np.array([2.0, 1.0]))):
        with pytest.raises(DecoderError):
            call()
        np.testing.assert_array_equal(model.predict_proba(Xs[:10]), before)
        assert pickle.dumps(model) == state


@pytest.mark.parametrize("name", ["recenter", "recenter-rotate", "euclidean"])
def test_a_dead_channel_at_calibration_is_named(name: str, shifted) -> None:
    X = shifted["X"].copy()
    X[:, 5] = 0.0
    with pytest.raises(DecoderError, match=r"channel\(s\) \[5\] are flat"):
        make_strategy(name).fit(X, shifted["y"])


@pytest.mark.parametrize("name", ["recenter", "euclidean", "ts-recenter"])
def test_a_channel_that_dies_online_does_not_stop_the_adaptation(shifted, name) -> None:
    """A flat or railed channel makes the trial covariance singular; updates go on."""
    X, y, Xt, yt = shifted["X"], shifted["y"], shifted["Xt"], shifted["yt"]
    model = CoAdaptiveDecoder(TangentSpaceLR(sfreq=SFREQ), [make_strategy(name)])
    model.fit(X, y)
    dead = Xt.copy()
    dead[:, 3] = 0.0  # flat
    dead[:, 7] = 0.4  # railed: a constant
    hits = pseudo_online(model, dead, yt)  # an update refused would raise here
    strategy = model.strategies_[0]
    if name != "ts-recenter":  # the covariance-level references take every trial
        assert strategy.n_updates_ == len(dead)
        assert np.isfinite(strategy.whitener_).all()
    # the two dead channels carried no class information: the last trials decode
    assert hits[-50:].mean() >= 0.8
