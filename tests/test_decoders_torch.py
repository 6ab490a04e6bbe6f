"""Torch decoders (EEGNet, MVCNet): they learn real motor imagery, adapt to drift, and behave.

Real data: PhysioNet EEG Motor Movement/Imagery, subject 1, imagined both fists
(T1) vs both feet (T2), preprocessed as the evaluation harness does (causal
Butterworth band-pass, order 4, 1-40 Hz, ``sosfilt`` forward only on the
continuous recording; epochs from cue + 0.5 s to cue + 2.5 s). Calibration on
runs R06 + R10 (30 trials), test on R14 (15 trials).

The other tests run on small synthetic epochs, so that they take milliseconds.
torch runs on one thread here (the machine is shared); the previous thread
count is restored after the module.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

torch = pytest.importorskip("torch")

from bci_runtime.decoders.adaptation import (  # noqa: E402
    CoAdaptiveDecoder,
    FeatureNormalization,
    HeadPartialFit,
    PooledMeanBias,
)
from bci_runtime.decoders.torch_decoders import (  # noqa: E402
    EEGNetClassifier,
    MVCNetClassifier,
    TorchEpochClassifier,
)
from bci_runtime.errors import DecoderError, ModelFileError, NotFittedError  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EEGMMIDB = DATA / "physionet_eegmmidb" / "S001"
FS = 160.0
# what the real-data tests calibrate: a front 8-30 Hz band keeps 30 trials of 1-40 Hz EEG
# from being fitted on slow eye movements; short temporal kernels after that filter
EEGNET_REAL = dict(sfreq=FS, band=(8, 30), kernel_length=32, n_epochs=60, lr=3e-3)
MVCNET_REAL = dict(sfreq=FS, band=(8, 30), n_epochs=60)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- data -------------------------------------------------------------------------------

def load_run(run: int) -> tuple[np.ndarray, np.ndarray]:
    """Epochs (n_trials, 64, 320) and labels ('T1'/'T2') of one run, as the harness makes them."""
    import mne
    from scipy import signal as sps

    path = EEGMMIDB / f"S001R{run:02d}.edf"
    if not path.is_file():
        pytest.skip(f"PhysioNet data not found at {path}")
    raw = mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
    fs = raw.info["sfreq"]
    sos = sps.butter(4, [1.0, 40.0], btype="bandpass", fs=fs, output="sos")
    data = sps.sosfilt(sos, raw.get_data(), axis=1)  # causal, on the continuous recording
    start, length = int(round(0.5 * fs)), int(round(2.0 * fs))
    epochs, labels = [], []
    for onset, desc in zip(raw.annotations.onset, raw.annotations.description):
        if desc in ("T1", "T2"):
            first = int(round(onset * fs)) + start
            epochs.append(data[:, first:first + length])
            labels.append(desc)
    return np.stack(epochs), np.array(labels)


@pytest.fixture(scope="module")
def fists_feet() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Calibration (R06 + R10) and test (R14) epochs of imagined fists vs feet."""
    r06, r10, r14 = load_run(6), load_run(10), load_run(14)
    return {"train": (np.concatenate([r06[0], r10[0]]), np.concatenate([r06[1], r10[1]])),
            "test": r14}


@pytest.fixture(scope="module")
def eegnet_real(fists_feet) -> EEGNetClassifier:
    X, y = fists_feet["train"]
    return EEGNetClassifier(random_state=0, **EEGNET_REAL).fit(X, y)


def synthetic(n: int = 24, n_channels: int = 8, n_times: int = 128, n_classes: int = 2,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Epochs whose class sets the power of a 12 Hz rhythm on one channel per class (volts)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 10e-6, (n, n_channels, n_times))
    y = np.arange(n) % n_classes
    t = np.arange(n_times) / 128.0
    for i, label in enumerate(y):
        X[i, label] += 20e-6 * np.sin(2 * np.pi * 12 * t + rng.uniform(0, 2 * np.pi))
    return X, np.array([f"c{k}" for k in y])


SMALL = {
    EEGNetClassifier: dict(kernel_length=16, pool1=4, pool2=4, n_epochs=4, n_steps=3,
                           batch_size=8, replay_size=16),
    MVCNetClassifier: dict(sfreq=128.0, bands=[[8, 16], [16, 30]], kernel_length=16, pool1=4,
                           pool2=4, n_spatial=4, fir_length=17, d_model=16, n_heads=2,
                           d_ff=16, n_epochs=4, n_steps=3, batch_size=8, replay_size=16),
}


@pytest.fixture(params=[EEGNetClassifier, MVCNetClassifier], ids=["eegnet", "mvcnet"])
def small(request) -> tuple[TorchEpochClassifier, np.ndarray, np.ndarray]:
    """A small fitted model of each kind and its synthetic data."""
    X, y = synthetic()
    cls = request.param
    return cls(random_state=3, **SMALL[cls]).fit(X, y), X, y


def snapshot(model: TorchEpochClassifier) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.module_.state_dict().items()}


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- it learns --------------------------------------------------------------------------

@pytest.mark.slow
def test_eegnet_beats_chance_on_a_held_out_run(eegnet_real, fists_feet, record_property):
    from sklearn.metrics import roc_auc_score

    X, y = fists_feet["test"]
    accuracy = eegnet_real.score(X, y)
    auc = roc_auc_score(y == "T2", eegnet_real.decision_function(X))
    record_property("eegnet_r14_accuracy", accuracy)
    print(f"EEGNet R06+R10 -> R14: accuracy {accuracy:.3f}, AUC {auc:.3f} (chance 0.5)")
    assert eegnet_real.score(*fists_feet["train"]) >= 0.9
    assert accuracy >= 0.73  # >= 11 of 15; P(>= 11 | chance) = 0.06
    assert auc >= 0.8


@pytest.mark.slow
def test_mvcnet_beats_chance_on_a_held_out_run(fists_feet, record_property):
    model = MVCNetClassifier(random_state=0, **MVCNET_REAL).fit(*fists_feet["train"])
    accuracy = model.score(*fists_feet["test"])
    record_property("mvcnet_r14_accuracy", accuracy)
    print(f"MVCNet R06+R10 -> R14: accuracy {accuracy:.3f} (chance 0.5)")
    assert accuracy >= 0.73


def channel_gains(X: np.ndarray, seed: int) -> np.ndarray:
    """A drift: every electrode's gain changes, log-uniformly between x0.2 and x5."""
    gains = np.exp(np.random.default_rng(seed).uniform(np.log(0.2), np.log(5.0), X.shape[1]))
    return X * gains[:, None]


@pytest.mark.slow
def test_partial_fit_recovers_from_drift_and_replay_keeps_the_past(eegnet_real, fists_feet,
                                                                   record_property):
    """Drifted R14: each third is tested by a model fine-tuned on the other two thirds."""
    X, y = fists_feet["test"]
    Xd = channel_gains(X, seed=0)
    static = eegnet_real.score(Xd, y)
    folds = np.array_split(np.random.default_rng(1).permutation(len(y)), 3)
    results = {}
    for ratio in (0.5, 0.0):
        hits, kept = 0, []
        for test in folds:
            adapt = np.setdiff1d(np.arange(len(y)), test)
            model = copy.deepcopy(eegnet_real).set_params(n_steps=30, replay_ratio=ratio)
            model.partial_fit(Xd[adapt], y[adapt])
            hits += int((model.predict(Xd[test]) == y[test]).sum())
            kept.append(model.score(*fists_feet["train"]))  # the calibration runs, undrifted
        results[ratio] = hits / len(y), float(np.mean(kept))
    adapted, remembered = results[0.5]
    forgot = results[0.0][1]
    record_property("drift_static_accuracy", static)
    record_property("drift_adapted_accuracy", adapted)
    print(f"drifted R14: static {static:.3f}, after partial_fit {adapted:.3f}; calibration "
          f"accuracy after it: {remembered:.3f} with replay, {forgot:.3f} without")
    assert static <= 0.6  # the drift does hurt
    assert adapted >= static + 0.2
    assert remembered >= 0.9  # replay: the calibration runs are still decoded
    # without replay it may forget (0.64 here; how much depends on the seed), never less
    assert remembered >= forgot


# -- determinism ------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [EEGNetClassifier, MVCNetClassifier], ids=["eegnet", "mvcnet"])
def test_same_seed_same_model_whatever_the_global_generator(cls):
    X, y = synthetic()
    global_state = torch.random.get_rng_state()
    torch.manual_seed(1)
    a = cls(random_state=5, **SMALL[cls]).fit(X, y).partial_fit(X[:4], y[:4])
    torch.manual_seed(2)  # a different global stream changes nothing
    b = cls(random_state=5, **SMALL[cls]).fit(X, y).partial_fit(X[:4], y[:4])
    torch.random.set_rng_state(global_state)
    assert same_weights(snapshot(a), snapshot(b))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.replay_X_, b.replay_X_)
    c = cls(random_state=6, **SMALL[cls]).fit(X, y)
    assert not same_weights(snapshot(a), snapshot(c))


def test_fit_and_partial_fit_leave_the_global_generator_alone(small):
    model, X, y = small
    before = torch.random.get_rng_state()
    clone(model).fit(X, y)
    model.partial_fit(X[:3], y[:3])
    assert torch.equal(before, torch.random.get_rng_state())


# -- persistence ------------------------------------------------------------------------

def _json_or_array(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biufU"
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_or_array(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_or_array(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_state_round_trip_predicts_identically_and_continues_identically(small):
    model, X, y = small
    model.partial_fit(X[:5], y[:5])
    state = model.to_state()
    assert _json_or_array(state)
    json.dumps({k: v for k, v in state.items() if not isinstance(v, (np.ndarray, dict))})
    json.dumps(state["params"])
    restored = TorchEpochClassifier.from_state(state)
    assert type(restored) is type(model)
    assert restored.to_state()["params"] == state["params"]
    assert np.array_equal(restored.classes_, model.classes_)
    assert np.array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(restored.decision_function(X), model.decision_function(X))
    # the generator and the replay buffer travel too: the next update is the same
    model.partial_fit(X[5:9], y[5:9])
    restored.partial_fit(X[5:9], y[5:9])
    assert np.array_equal(restored.predict_proba(X), model.predict_proba(X))
    # the state is a copy: changing the model later does not change it
    assert not np.array_equal(state["rng_state"], model.to_state()["rng_state"])


def test_from_state_refuses_foreign_or_broken_states(small):
    model, X, _ = small
    state = model.to_state()
    with pytest.raises(ModelFileError):
        TorchEpochClassifier.from_state({"format": "something else"})
    with pytest.raises(ModelFileError):
        TorchEpochClassifier.from_state({**state, "format_version": 99})
    other = MVCNetClassifier if isinstance(model, EEGNetClassifier) else EEGNetClassifier
    with pytest.raises(ModelFileError):
        other.from_state(state)
    with pytest.raises(ModelFileError):
        TorchEpochClassifier.from_state({**state, "params": {**state["params"], "bogus": 1}})
    weights = dict(state["state_dict"])
    name = next(iter(weights))
    with pytest.raises(ModelFileError):
        TorchEpochClassifier.from_state({**state, "state_dict": {**weights,
                                                                 name: np.zeros(3)}})
    with pytest.raises(ModelFileError):  # object arrays could hide a pickle
        TorchEpochClassifier.from_state(
            {**state, "state_dict": {**weights, name: weights[name].astype(object)}})
    with pytest.raises(ModelFileError):
        TorchEpochClassifier.from_state({**state, "replay_X": state["replay_X"][:, :2]})


# -- validation: a bad call changes nothing -----------------------------------------------

def test_partial_fit_before_fit():
    X, y = synthetic()
    with pytest.raises(NotFittedError):
        EEGNetClassifier().partial_fit(X, y)
    with pytest.raises(NotFittedError):
        EEGNetClassifier().predict(X)
    with pytest.raises(NotFittedError):
        EEGNetClassifier().to_state()


def test_bad_calls_leave_the_model_exactly_as_it_was(small):
    model, X, y = small
    weights, proba = snapshot(model), model.predict_proba(X)
    replay, n_seen = model.replay_X_.copy(), model.n_seen_
    nan = X[:4].copy()
    nan[2, 1, 7] = np.nan
    bad_calls = [
        (X[:, :-1], y),  # a channel less
        (X[:, :, :-1], y),  # a shorter window
        (X[:4], np.array(["c0", "c1", "c9", "c0"])),  # unknown class
        (nan, y[:4]),  # NaN in a window
        (X[:4], y[:3]),  # labels do not match
        (X[0], y[:1]),  # no trial axis
    ]
    for bad_X, bad_y in bad_calls:
        with pytest.raises(DecoderError):
            model.partial_fit(bad_X, bad_y)
    with pytest.raises(DecoderError):
        model.partial_fit(X[:4], y[:4], sample_weight=[1, 1, -1, 1])
    with pytest.raises(DecoderError):
        model.partial_fit(X[:4], y[:4], classes=["c0", "c1", "c2"])
    with pytest.raises(DecoderError):
        model.predict(X[:, :-1])
    # a failure half-way through the steps (divergence) is rolled back too
    model.set_params(partial_fit_lr=1e30, n_steps=20)
    with pytest.raises(DecoderError, match="diverged"):
        model.partial_fit(X[:8], y[:8])
    model.set_params(partial_fit_lr=5e-4)
    assert same_weights(weights, snapshot(model))
    assert np.array_equal(proba, model.predict_proba(X))
    assert np.array_equal(replay, model.replay_X_) and n_seen == model.n_seen_
    assert model.n_updates_ == 0


def test_bad_hyper_parameters_are_decoder_errors():
    X, y = synthetic()
    for params in (dict(n_epochs=0), dict(replay_ratio=1.0), dict(lr=-1.0), dict(band=(8, 30)),
                   dict(sfreq=128.0, band=(30, 8)), dict(batch_size=1), dict(pool1=64)):
        with pytest.raises(DecoderError):
            EEGNetClassifier(**{**SMALL[EEGNetClassifier], **params}).fit(X, y)
    with pytest.raises(DecoderError):
        MVCNetClassifier(**{**SMALL[MVCNetClassifier], "bands": [[8, 90]]}).fit(X, y)
    with pytest.raises(DecoderError):
        EEGNetClassifier(**SMALL[EEGNetClassifier]).fit(X, np.full(len(y), "c0"))


def test_zero_weights_change_nothing_and_weights_are_used(small):
    model, X, y = small
    weights = snapshot(model)
    model.partial_fit(X[:4], y[:4], sample_weight=np.zeros(4))
    assert same_weights(weights, snapshot(model)) and model.n_updates_ == 0
    model.partial_fit(X[:4], y[:4], sample_weight=[1.0, 0.5, 0.0, 1.0])
    assert not same_weights(weights, snapshot(model)) and model.n_updates_ == 1
    assert model.n_seen_ == len(X) + 3  # the weight-0 trial is not learned from nor stored


# -- replay buffer ----------------------------------------------------------------------

def test_replay_buffer_is_bounded_and_samples_the_whole_history():
    X, y = synthetic(n=24)
    model = EEGNetClassifier(random_state=0, **{**SMALL[EEGNetClassifier],
                                               "replay_size": 10, "n_steps": 1}).fit(X, y)
    assert model.replay_X_.shape == (10, 8, 128) and model.n_seen_ == 24
    new_X, new_y = synthetic(n=40, seed=9)
    new_X *= 3.0  # tell new trials from calibration trials by their scale
    for start in range(0, 40, 4):
        model.partial_fit(new_X[start:start + 4], new_y[start:start + 4])
    assert model.replay_X_.shape == (10, 8, 128) and model.n_seen_ == 64
    n_new = int((np.abs(model.replay_X_).max(axis=(1, 2)) > 1e-4).sum())
    assert 1 <= n_new <= 9  # both old and new trials are kept (expected 40/64 * 10)


# -- the head and the co-adaptation strategies ---------------------------------------------

def test_head_is_a_view_of_the_last_layer(small):
    model, X, _ = small
    head = model.head_
    with torch.inference_mode():
        logits = model.module_(torch.from_numpy(X.astype(np.float32))).numpy()
    scores = model.decision_function(X)
    assert np.allclose(scores, logits[:, 0] if logits.shape[1] == 1 else logits, atol=1e-5)
    assert head.coef_.shape == (1, model.module_.n_features)
    head.intercept_ = head.intercept_ + 1.0  # assigning writes into the network
    assert np.allclose(model.decision_function(X), scores + 1.0, atol=1e-5)
    head.intercept_[:] -= 1.0  # and so does writing into the view
    assert np.allclose(model.decision_function(X), scores, atol=1e-5)
    with pytest.raises(DecoderError):
        head.coef_ = np.zeros(3)
    twin = copy.deepcopy(model)
    twin.head_.intercept_ = twin.head_.intercept_ + 5.0  # a copy has its own weights
    assert np.allclose(model.decision_function(X), scores, atol=1e-5)
    assert not np.allclose(twin.decision_function(X), scores, atol=1e-3)


def test_multiclass_uses_softmax():
    X, y = synthetic(n=30, n_classes=3)
    model = MVCNetClassifier(random_state=0, **SMALL[MVCNetClassifier]).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.head_.coef_.shape == (3, model.module_.n_features)
    assert set(model.predict(X)) <= {"c0", "c1", "c2"}
    model.partial_fit(X[:3], y[:3])


@pytest.mark.parametrize("strategies", [
    [PooledMeanBias()], [FeatureNormalization()], [PooledMeanBias(), HeadPartialFit()]],
    ids=["lda-bias", "normalize", "bias+partial-fit"])
def test_head_strategies_adapt_a_torch_decoder(strategies):
    X, y = synthetic(n=32)
    decoder = EEGNetClassifier(random_state=0, **SMALL[EEGNetClassifier])
    co = CoAdaptiveDecoder(decoder, strategies).fit(X, y)
    before = co.decision_function(X).copy()
    intercept = co.decoder_.head_.intercept_.copy()
    shifted = X * 2.0 + 5e-6  # a gain change the strategies should follow
    worker = co.copy()  # what the background worker updates
    worker.partial_fit(shifted[:16], y[:16])
    assert not np.array_equal(worker.decoder_.head_.intercept_, intercept)
    assert np.array_equal(co.decision_function(X), before)  # the serving copy is untouched
    assert worker.predict(shifted).shape == (32,)


def test_sklearn_api():
    model = EEGNetClassifier(n_epochs=3, random_state=1)
    assert clone(model).get_params() == model.get_params()
    X, y = synthetic()
    assert model.fit(X, y) is model
    assert model.n_features_in_ == 8 and model.n_channels_ == 8 and model.n_times_ == 128
    assert len(model.loss_curve_) == 3
    assert model.predict(X[:1]).shape == (1,)


def test_importing_the_decoders_does_not_import_torch():
    code = ("import sys, bci_runtime.decoders, bci_runtime.decoders.torch_decoders; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_published_versions_leave_the_replay_buffer_with_the_trainer(small):
    """The lifecycle publishes serving copies; a rollback keeps the working copy's buffer."""
    from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, HeadPartialFit
    from bci_runtime.decoders.training_worker import InlineTrainer, serving_copy

    model, X, y = small
    copy_ = serving_copy(model)
    assert copy_.replay_X_.shape[0] == 0 and copy_.replay_y_.shape == (0,)
    assert model.replay_X_.shape[0] == 16  # the original keeps it
    np.testing.assert_array_equal(copy_.predict_proba(X), model.predict_proba(X))

    cls = type(model)
    trainer = InlineTrainer(lambda: CoAdaptiveDecoder(cls(random_state=3, **SMALL[cls]),
                                                      [HeadPartialFit()]))

    class Job:
        def __init__(self, kind, X, y):
            self.kind, self.X, self.y, self.correct = kind, X, y, None

    first, _ = trainer.train(Job("calibrate", X, y))
    assert first.decoder_.replay_X_.shape[0] == 0
    new_X, new_y = synthetic(n=8, seed=5)
    trainer.train(Job("update", new_X, new_y))
    buffer = trainer.working.decoder_.replay_X_.copy()
    assert buffer.shape[0] == 16
    trainer.reset(first)  # a rollback to the first version
    assert same_weights(snapshot(trainer.working.decoder_), snapshot(first.decoder_))
    np.testing.assert_array_equal(trainer.working.decoder_.replay_X_, buffer)
    assert first.decoder_.replay_X_.shape[0] == 0  # the published version is untouched
