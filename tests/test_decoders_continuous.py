"""Continuous decoders and CLDA building blocks: math, streaming, validation.

Ridge is checked against scikit-learn and weighted least squares, the Kalman
filter against the textbook (full-dimension) Riccati recursion and against its
own streaming form, the CLDA strategies against their update rules, all on
seeded data (synthetic linear-Gaussian, or the cortical-population simulator).
The closed loop itself is in ``test_clda_cursor.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from bci_runtime.decoders.clda import (
    RML,
    RidgePartialFit,
    SmoothBatch,
    random_kalman_seed,
    refit_intention,
    retrospective_targets,
)
from bci_runtime.decoders.continuous import KalmanDecoder, RidgeDecoder
from bci_runtime.decoders.cursor_loop import r2_score, record_open_loop
from bci_runtime.errors import DecoderError, NotFittedError
from bci_runtime.simulators.paradigms import make_generator


# -- data -----------------------------------------------------------------------------------------
def linear_gaussian(n: int, n_features: int = 40, seed: int = 0, a: float = 0.95,
                    noise: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Velocity from an AR(1) process, features linear in it plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    A = np.array([[a, 0.02], [-0.02, a]])
    W = np.diag([0.01, 0.015])
    V = np.zeros((n, 2))
    for t in range(1, n):
        V[t] = A @ V[t - 1] + rng.multivariate_normal(np.zeros(2), W)
    C = rng.normal(size=(n_features, 2)) * 3.0
    d = rng.uniform(1, 5, n_features)
    X = V @ C.T + d + noise * rng.normal(size=(n, n_features))
    return X, V, {"A": A, "W": W, "C": C, "d": d}


@pytest.fixture(scope="module")
def population_block() -> tuple[np.ndarray, np.ndarray]:
    """Two minutes of open-loop spike counts (96 units, 50 ms bins) and velocity."""
    gen = make_generator("population", {"n_channels": 96, "srate": 20}, seed=1)
    return record_open_loop(gen, 120.0)


def fitted_kalman(steady_state: bool = True) -> tuple[KalmanDecoder, np.ndarray]:
    X, V, _ = linear_gaussian(1500, seed=3)
    return KalmanDecoder(steady_state=steady_state).fit(X[:1000], V[:1000]), X[1000:]


# -- ridge ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 1.0, 50.0])
def test_ridge_fit_matches_scikit_learn(alpha: float) -> None:
    X, V, _ = linear_gaussian(400, seed=1)
    ours = RidgeDecoder(alpha=alpha).fit(X, V)
    ref = Ridge(alpha=alpha).fit(X, V)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-8)
    one = RidgeDecoder(alpha=alpha).fit(X, V[:, 0])  # a 1-D target gives 1-D predictions
    assert one.predict(X).shape == (400,)


def test_ridge_partial_fit_without_forgetting_is_recursive_least_squares() -> None:
    X, V, _ = linear_gaussian(600, seed=2)
    full = RidgeDecoder(alpha=3.0).fit(X, V)
    online = RidgeDecoder(alpha=3.0).fit(X[:200], V[:200])
    for lo in range(200, 600, 37):  # uneven chunks
        online.partial_fit(X[lo:lo + 37], V[lo:lo + 37])
    np.testing.assert_allclose(online.coef_, full.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(online.intercept_, full.intercept_, rtol=1e-8, atol=1e-10)
    assert online.n_samples_seen_ == pytest.approx(600)


def test_ridge_partial_fit_forgets_with_its_half_life() -> None:
    X, V, _ = linear_gaussian(500, seed=4)
    half_life = 50.0
    dec = RidgeDecoder(alpha=2.0, half_life=half_life).fit(X[:100], V[:100])
    dec.partial_fit(X[100:300], V[100:300])
    for i in range(300, 500):  # one sample at a time == one chunk
        dec.partial_fit(X[i:i + 1], V[i:i + 1])
    # weighted least squares: a sample followed by k newer ones weighs 0.5 ** (k / half_life)
    age = np.r_[np.full(100, 400.0), np.arange(399, -1, -1.0)]
    ref = Ridge(alpha=2.0).fit(X, V, sample_weight=0.5 ** (age / half_life))
    np.testing.assert_allclose(dec.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dec.intercept_, ref.intercept_, rtol=1e-6, atol=1e-9)


def test_ridge_partial_fit_tracks_a_changed_mapping() -> None:
    X, V, truth = linear_gaussian(3000, seed=5, noise=0.5)
    rng = np.random.default_rng(0)
    C2 = rng.normal(size=truth["C"].shape) * 3.0  # the tuning changes completely
    X2 = V @ C2.T + truth["d"] + 0.5 * rng.normal(size=X.shape)
    static = RidgeDecoder(alpha=1.0).fit(X[:1000], V[:1000])
    adaptive = RidgeDecoder(alpha=1.0, half_life=200.0).fit(X[:1000], V[:1000])
    adaptive.partial_fit(X2[1000:2000], V[1000:2000])
    assert r2_score(V[2000:], adaptive.predict(X2[2000:])) > 0.9
    assert r2_score(V[2000:], static.predict(X2[2000:])) < 0.2


# -- Kalman ---------------------------------------------------------------------------------------
def test_kalman_recovers_a_linear_gaussian_model() -> None:
    X, V, truth = linear_gaussian(20000, seed=6)
    dec = KalmanDecoder().fit(X, V)
    np.testing.assert_allclose(dec.A_, truth["A"], atol=0.01)
    np.testing.assert_allclose(dec.W_, truth["W"], rtol=0.05, atol=5e-4)
    np.testing.assert_allclose(dec.C_, truth["C"], rtol=0.05, atol=0.05)
    np.testing.assert_allclose(dec.d_, truth["d"], atol=0.05)
    np.testing.assert_allclose(np.diag(dec.Q_), 1.0, atol=0.05)


def test_kalman_steady_gain_solves_the_full_riccati_equation() -> None:
    dec, _ = fitted_kalman()
    A, W, C, Q, P = dec.A_, dec.W_, dec.C_, dec.Q_, dec.P_
    # textbook (n_features-dimensional innovation) form of the Riccati equation and the gain
    S = C @ P @ C.T + Q
    K = P @ C.T @ np.linalg.inv(S)
    post = P - K @ C @ P
    np.testing.assert_allclose(A @ post @ A.T + W, P, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dec.K_, K, rtol=1e-7, atol=1e-12)
    # the time-varying filter from rest converges to the same gain
    Pk = np.zeros((2, 2))
    for _ in range(500):
        prior = A @ Pk @ A.T + W
        Kk = prior @ C.T @ np.linalg.inv(C @ prior @ C.T + Q)
        Pk = prior - Kk @ C @ prior
    np.testing.assert_allclose(Kk, dec.K_, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("steady_state", [True, False])
def test_kalman_step_streams_what_predict_filters(steady_state: bool) -> None:
    dec, X = fitted_kalman(steady_state)
    batch = dec.predict(X)
    dec.reset()
    stream = np.array([dec.step(x) for x in X])
    np.testing.assert_allclose(stream, batch, rtol=1e-9, atol=1e-12)
    dec.reset()  # reset starts over from rest
    np.testing.assert_allclose(dec.step(X[0][None]), batch[0], atol=1e-12)
    np.testing.assert_allclose(dec.velocity_, batch[0], atol=1e-12)


def test_kalman_time_varying_and_steady_filters_agree_after_settling() -> None:
    X, V, _ = linear_gaussian(1500, seed=3)
    steady = KalmanDecoder(steady_state=True).fit(X[:1000], V[:1000]).predict(X[1000:])
    varying = KalmanDecoder(steady_state=False).fit(X[:1000], V[:1000]).predict(X[1000:])
    assert np.abs(steady[:5] - varying[:5]).max() > 1e-6  # the gain differs at first
    np.testing.assert_allclose(steady[100:], varying[100:], atol=1e-8)


def test_kalman_decodes_population_velocity(population_block) -> None:
    X, V = population_block
    half = len(X) // 2
    kalman = KalmanDecoder().fit(X[:half], V[:half])
    ridge = RidgeDecoder(alpha=100.0).fit(X[:half], V[:half])
    r2_kalman = r2_score(V[half:], kalman.predict(X[half:]))
    r2_ridge = r2_score(V[half:], ridge.predict(X[half:]))
    assert r2_kalman > 0.9
    assert r2_ridge > 0.8
    assert r2_kalman > r2_ridge  # the dynamics smooth the Poisson noise out


def test_kalman_set_model_keeps_the_streaming_state() -> None:
    dec, X = fitted_kalman()
    for x in X[:20]:
        dec.step(x)
    v = dec.velocity_
    dec.set_model(C=dec.C_ * 1.1)
    np.testing.assert_array_equal(dec.velocity_, v)
    fresh = fitted_kalman()[0]  # and the gain was recomputed for the new C
    assert not np.allclose(dec.K_, fresh.K_)
    np.testing.assert_allclose(dec.K_, fresh.set_model(C=fresh.C_ * 1.1).K_)


# -- validation: a bad call changes nothing -------------------------------------------------------
def snapshot(dec: KalmanDecoder | RidgeDecoder, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of ``dec``, and what its streaming state would step to next."""
    pred = dec.predict(X)
    nxt = copy.deepcopy(dec).step(X[0]) if isinstance(dec, KalmanDecoder) else pred[0]
    return pred, nxt


def assert_unchanged(dec: KalmanDecoder | RidgeDecoder, X: np.ndarray,
                     before: tuple[np.ndarray, np.ndarray]) -> None:
    after = snapshot(dec, X)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


def test_calls_before_fit_raise_not_fitted() -> None:
    X, V, _ = linear_gaussian(50, seed=0)
    kalman = KalmanDecoder()
    for call in (lambda: kalman.step(X[0]), lambda: kalman.predict(X), kalman.reset,
                 lambda: kalman.set_model(C=np.zeros((40, 2)))):
        with pytest.raises(NotFittedError):
            call()
    with pytest.raises(NotFittedError, match="partial_fit before fit"):
        RidgeDecoder().partial_fit(X, V)
    with pytest.raises(NotFittedError, match="predict before fit"):
        RidgeDecoder().predict(X)
    with pytest.raises(NotFittedError, match="update before fit"):
        SmoothBatch().update(X, V, kalman)
    with pytest.raises(NotFittedError, match="update before fit"):
        RML().update(X, V, kalman)
    with pytest.raises(NotFittedError, match="not fitted"):
        SmoothBatch().fit(KalmanDecoder())
    assert issubclass(NotFittedError, DecoderError)


def test_kalman_bad_inputs_leave_it_unchanged() -> None:
    dec, X = fitted_kalman()
    for x in X[:10]:
        dec.step(x)
    before = snapshot(dec, X)
    nan = X[0].copy()
    nan[3] = np.nan
    bad_calls = [
        (lambda: dec.step(nan), "NaN"),
        (lambda: dec.step(np.r_[X[0], 1.0]), "40 features"),
        (lambda: dec.step(X[:2]), "one bin"),
        (lambda: dec.predict(X[:, :-1]), "fitted on 40 features"),
        (lambda: dec.predict(np.where(np.arange(len(X))[:, None] == 7, np.inf, X)), "NaN or Inf"),
        (lambda: dec.set_model(Q=-np.eye(40)), "not positive definite"),
        (lambda: dec.set_model(C=np.zeros((39, 2))), "C has shape"),
        (lambda: dec.set_model(d=np.full(40, np.nan)), "NaN"),
        (lambda: KalmanDecoder(shrinkage=1.5).fit(X, X[:, :2]), r"\[0, 1\]"),
    ]
    for call, message in bad_calls:
        with pytest.raises(DecoderError, match=message):
            call()
        assert_unchanged(dec, X, before)


def test_ridge_bad_inputs_leave_it_unchanged() -> None:
    X, V, _ = linear_gaussian(300, seed=8)
    dec = RidgeDecoder(alpha=1.0, half_life=100.0).fit(X[:200], V[:200])
    before = snapshot(dec, X)
    nan = X[200:210].copy()
    nan[4, 0] = np.nan
    bad_calls = [
        (lambda: dec.partial_fit(nan, V[200:210]), "NaN or Inf"),
        (lambda: dec.partial_fit(X[200:210, :-2], V[200:210]), "fitted on 40 features"),
        (lambda: dec.partial_fit(X[200:210], V[200:210, :1]), "fitted on 2 outputs"),
        (lambda: dec.partial_fit(X[200:210], np.full((10, 2), np.inf)), "NaN or Inf"),
        (lambda: dec.partial_fit(X[200:210], V[200:210], sample_weight=-np.ones(10)), ">= 0"),
        (lambda: dec.set_params(rate=1.5).partial_fit(X[200:210], V[200:210]), r"\[0, 1\]"),
        (lambda: dec.set_params(rate=-0.1).partial_fit(X[200:210], V[200:210]), r"\[0, 1\]"),
        (lambda: dec.set_params(rate=None, half_life=0.0).partial_fit(X[200:210], V[200:210]),
         "half_life"),
    ]
    for call, message in bad_calls:
        with pytest.raises(DecoderError, match=message):
            call()
        assert_unchanged(dec, X, before)
    dec.set_params(half_life=100.0)
    dec.partial_fit(X[200:210], V[200:210])  # and it still learns afterwards
    assert not np.array_equal(dec.predict(X), before[0])


@pytest.mark.parametrize("make", [lambda: SmoothBatch(batch_s=0.5, dt=0.05),
                                  lambda: RML(half_life=30.0, dt=0.05)])
def test_strategy_bad_updates_leave_the_decoder_unchanged(make) -> None:
    dec, X = fitted_kalman()
    strategy = make().fit(dec)
    V = np.ones((10, 2)) * 0.1
    before = snapshot(dec, X)
    nan = X[:10].copy()
    nan[2, 5] = np.nan
    other = KalmanDecoder().fit(X[:, :30], linear_gaussian(len(X), seed=1)[1])
    bad_calls = [
        (lambda: strategy.update(nan, V, dec), "NaN or Inf"),
        (lambda: strategy.update(X[:10, :-1], V, dec), "fitted on 40 features"),
        (lambda: strategy.update(X[:10], V[:, :1], dec), "fitted on 2 outputs"),
        (lambda: strategy.update(X[:10], V * np.nan, dec), "NaN or Inf"),
        (lambda: strategy.update(X[:10], V, other), "decoder of 40 features"),
        (lambda: strategy.set_params(rate=2.0).update(X[:10], V, dec), r"\[0, 1\]"),
        (lambda: strategy.set_params(rate=-1.0).update(X[:10], V, dec), r"\[0, 1\]"),
    ]
    for call, message in bad_calls:
        with pytest.raises(DecoderError, match=message):
            call()
        assert_unchanged(dec, X, before)
    with pytest.raises(DecoderError, match="adapts a KalmanDecoder"):
        make().fit(RidgeDecoder().fit(X, X[:, :2]))


# -- intention estimation -------------------------------------------------------------------------
def test_refit_intention_rotates_toward_the_target_and_stops_on_it() -> None:
    decoded = np.array([[0.3, 0.0], [0.0, -0.2], [0.1, 0.1], [0.2, 0.0]])
    cursor = np.array([[0.0, 0.0], [0.0, 0.0], [0.75, 0.05], [0.0, 0.0]])
    target = np.array([[0.0, 0.8], [-0.8, 0.0], [0.8, 0.0], [np.nan, np.nan]])
    v = refit_intention(decoded, cursor, target, target_radius=0.15)
    np.testing.assert_allclose(v[0], [0.0, 0.3], atol=1e-12)  # speed kept, pointing at it
    np.testing.assert_allclose(v[1], [-0.2, 0.0], atol=1e-12)
    np.testing.assert_array_equal(v[2], [0.0, 0.0])  # on the target: hold still
    assert np.isnan(v[3]).all()  # no target known
    fixed = refit_intention(decoded, cursor, target, target_radius=0.15, speed=0.4)
    np.testing.assert_allclose(np.hypot(*fixed[:2].T), 0.4)


def test_retrospective_targets_label_each_reach_with_its_end() -> None:
    t = np.arange(12, dtype=float)
    cursor = np.c_[t, -t]
    labels = retrospective_targets(cursor, acquired=[3, 9], failed=[6])
    np.testing.assert_array_equal(labels[:4], np.tile([3.0, -3.0], (4, 1)))
    assert np.isnan(labels[4:7]).all()  # the failed reach says nothing
    np.testing.assert_array_equal(labels[7:10], np.tile([9.0, -9.0], (3, 1)))
    assert np.isnan(labels[10:]).all()  # not ended yet
    named = retrospective_targets(cursor, [3], positions=[[0.5, 0.5]])
    np.testing.assert_array_equal(named[:4], np.tile([0.5, 0.5], (4, 1)))
    with pytest.raises(DecoderError, match="bins in 0..11"):
        retrospective_targets(cursor, [12])


def test_retrospective_targets_agree_with_the_shown_targets() -> None:
    gen = make_generator("population", {"n_channels": 96, "srate": 20}, seed=2)
    blocks = [gen.next_block(1) for _ in range(20 * 60)]
    truth = np.vstack([b.truth for b in blocks])
    hits = [i for i, b in enumerate(blocks) for label, _ in b.markers
            if label.startswith("hit/")]
    inferred = retrospective_targets(truth[:, 2:4], hits)
    known = np.isfinite(inferred).all(axis=1)
    assert known.mean() > 0.95
    # the dwell ends inside the target: the inferred target is within its radius
    assert np.hypot(*(inferred[known] - truth[known, 4:6]).T).max() <= 0.15 + 1e-9


# -- CLDA strategies ------------------------------------------------------------------------------
def test_smoothbatch_blends_each_batch_with_its_half_life() -> None:
    X, V, _ = linear_gaussian(2000, seed=9)
    dec = KalmanDecoder(shrinkage=0.0).fit(X[:500], V[:500])
    C0, d0, Q0 = dec.C_.copy(), dec.d_.copy(), dec.Q_.copy()
    sb = SmoothBatch(half_life=30.0, batch_s=10.0, dt=0.05).fit(dec)  # batches of 200 bins
    r = 1 - 0.5 ** (10.0 / 30.0)
    assert sb.rate_ == pytest.approx(r)
    assert not sb.update(X[500:650], V[500:650], dec)  # 150 bins: not a batch yet
    np.testing.assert_array_equal(dec.C_, C0)
    assert sb.update(X[650:700], V[650:700], dec)  # 200 bins: blend
    batch = KalmanDecoder(shrinkage=0.0).fit(X[500:700], V[500:700])
    np.testing.assert_allclose(dec.C_, (1 - r) * C0 + r * batch.C_, rtol=1e-9)
    np.testing.assert_allclose(dec.d_, (1 - r) * d0 + r * batch.d_, rtol=1e-9)
    np.testing.assert_allclose(dec.Q_, (1 - r) * Q0 + r * batch.Q_, rtol=1e-7)
    np.testing.assert_array_equal(dec.A_, KalmanDecoder().fit(X[:500], V[:500]).A_)  # kept
    assert sb.n_batches_ == 1


def test_rml_starts_from_the_seed_and_converges_to_the_data() -> None:
    X, V, truth = linear_gaussian(8000, seed=10)
    rng = np.random.default_rng(1)
    # a poor seed: noisy features paired with the kinematics reversed in time
    seed = KalmanDecoder().fit(X[:300] + rng.normal(size=(300, 40)) * 5, V[:300][::-1])
    C_seed = seed.C_.copy()
    rml = RML(half_life=50.0, dt=0.05, update_every=1000).fit(seed)
    assert not rml.update(X[:999], V[:999], seed)  # not yet a re-solve
    np.testing.assert_array_equal(seed.C_, C_seed)
    assert rml.update(X[999:1000], V[999:1000], seed)
    for lo in range(1000, 8000, 250):
        rml.update(X[lo:lo + 250], V[lo:lo + 250], seed)
    assert rml.n_updates_ == 8
    error = np.abs(seed.C_ - truth["C"]).mean()
    assert error < 0.15
    assert error < 0.1 * np.abs(C_seed - truth["C"]).mean()


def test_rml_chunking_does_not_change_the_result() -> None:
    X, V, _ = linear_gaussian(800, seed=11)
    a = KalmanDecoder().fit(X[:300], V[:300])
    b = copy.deepcopy(a)
    ra = RML(half_life=5.0, dt=0.05, update_every=500).fit(a)
    rb = RML(half_life=5.0, dt=0.05, update_every=500).fit(b)
    ra.update(X[300:800], V[300:800], a)
    for i in range(300, 800):
        rb.update(X[i:i + 1], V[i:i + 1], b)
    np.testing.assert_allclose(a.C_, b.C_, rtol=1e-8)
    np.testing.assert_allclose(a.Q_, b.Q_, rtol=1e-8)


def test_rml_forgetting_follows_the_half_life_in_seconds() -> None:
    rml = RML(half_life=30.0, dt=0.05)
    assert (1 - rml.rate_) ** 600 == pytest.approx(0.5)  # 600 bins of 50 ms = 30 s
    assert RML(half_life=30.0, dt=1.0).rate_ == pytest.approx(1 - 0.5 ** (1 / 30))  # updates
    assert RML(rate=0.25).rate_ == 0.25


def test_ridge_partial_fit_strategy_uses_its_own_half_life() -> None:
    X, V, _ = linear_gaussian(500, seed=12)
    dec = RidgeDecoder(alpha=1.0).fit(X[:200], V[:200])
    ref = RidgeDecoder(alpha=1.0, half_life=100.0).fit(X[:200], V[:200])
    strategy = RidgePartialFit(half_life=5.0, dt=0.05).fit(dec)  # 100 bins
    assert strategy.update(X[200:], V[200:], dec)
    ref.partial_fit(X[200:], V[200:])
    np.testing.assert_allclose(dec.coef_, ref.coef_, rtol=1e-10)
    assert dec.rate is None  # the decoder's own setting is restored


def test_random_seed_moves_at_the_given_speed_in_unrelated_directions(population_block) -> None:
    X, V = population_block
    seed = random_kalman_seed(X[:600], speed=0.4, dt=0.05, rng=np.random.default_rng(0))
    decoded = seed.predict(X[600:])
    # the features are noise to it: it moves, but slower than a decoder that knows the tuning
    assert 0.1 < np.sqrt(np.mean(np.sum(decoded ** 2, axis=1))) <= 0.4 + 1e-6
    assert r2_score(V[600:], decoded) < 0.0  # knows nothing of the tuning
    again = random_kalman_seed(X[:600], speed=0.4, dt=0.05, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.C_, seed.C_)  # deterministic with the seed
