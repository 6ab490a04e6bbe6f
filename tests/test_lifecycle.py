"""The model lifecycle: versions, background updates, shadow evaluation, swap, rollback, replay."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, HeadPartialFit, PooledMeanBias
from bci_runtime.decoders.lifecycle import Job, ModelLifecycle, model_digest
from bci_runtime.errors import DecoderError
from decoders_for_tests import LogVarLDA, two_class_epochs


class SgdHead(LogVarLDA):
    def _make_head(self) -> SGDClassifier:
        return SGDClassifier(loss="log_loss", random_state=0)


def make_model() -> CoAdaptiveDecoder:
    return CoAdaptiveDecoder(SgdHead(), [HeadPartialFit()])


def run_session(life: ModelLifecycle, seed: int, flip_after: int | None = None,
                wait: bool = False) -> list[tuple[str, dict]]:
    """Calibrate, then 40 labelled trials: shadow-evaluate each, then learn from it."""
    rng = np.random.default_rng(seed)
    X, y = two_class_epochs(rng, 40)
    Xt, yt = two_class_epochs(rng, 40)
    events: list[tuple[str, dict]] = []
    life.submit(Job("calibrate", X, y, times=np.arange(40.0)))
    t = 100.0
    for i in range(40):
        if wait:  # a live run: whatever the worker finished by now
            life._jobs.join()
        events += life.poll(t)
        x, label = Xt[i:i + 1], yt[i:i + 1]
        if life.online:
            events += life.observe(x, label, t)
        taught = label if flip_after is None or i < flip_after else \
            np.where(label == "a", "b", "a")  # a labelling bug: the task swapped the cues
        life.submit(Job("update", x, taught, correct=None, times=np.array([t])))
        t += 4.0
    return events


def test_calibration_goes_online_then_updates_are_shadowed_and_swapped_in() -> None:
    life = ModelLifecycle(make_model, shadow_trials=5, background=False)
    events = run_session(life, 1)
    kinds = [k for k, _ in events]
    assert kinds[0] == "online" and events[0][1]["version"] == 1
    assert "shadow" in kinds and "swap" in kinds and "rollback" not in kinds
    swapped = [d for k, d in events if k == "swap"]
    assert all(d["metrics"]["shadow_trials"] == 5 for d in swapped)
    assert life.serving.version > 1 and life.serving.parent is not None
    # every version is kept, with its lineage and the trials it learned from
    numbers = [v.version for v in life.versions]
    assert numbers == sorted(numbers) and numbers[0] == 1
    assert life.versions[0].trained_on == {"trials": 40, "first": 0.0, "last": 39.0}
    assert life.serving.digest == model_digest(life.serving.model)


def test_a_candidate_that_does_worse_is_rolled_back_and_the_worker_resets() -> None:
    life = ModelLifecycle(make_model, shadow_trials=5, background=False)
    events = run_session(life, 2, flip_after=10)
    kinds = [k for k, _ in events]
    assert "rollback" in kinds
    rolled = [d for k, d in events if k == "rollback"]
    assert all(d["metrics"]["accuracy"] < d["metrics"]["serving_accuracy"] for d in rolled)
    # what serves never learned from the swapped labels for long: it still decodes
    rng = np.random.default_rng(99)
    X, y = two_class_epochs(rng, 200)
    assert np.mean(life.serving.model.predict(X) == y) > 0.8


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_failing_update_is_reported_and_the_serving_version_keeps_serving(
        isolation: str) -> None:
    life = ModelLifecycle(make_model, shadow_trials=0, background=True, isolation=isolation)
    try:
        rng = np.random.default_rng(4)
        X, y = two_class_epochs(rng, 30)
        life.submit(Job("calibrate", X, y, times=np.arange(30.0)))
        life._jobs.join()
        life.poll(0.0)
        before = life.predict_proba(X)
        life.submit(Job("update", X[:2], np.array(["a", "nope"]), times=np.arange(2.0)))
        life._jobs.join()
        with pytest.raises(DecoderError, match="background update failed") as info:
            life.poll(1.0)
        assert "nope" in str(info.value)  # the unknown label, also from the child process
        np.testing.assert_array_equal(life.predict_proba(X), before)
        assert life.poll(2.0) == []  # reported once; the lifecycle goes on
        # the worker (and the child process) is still there: the next update is published
        life.submit(Job("update", X[:2], y[:2], times=np.arange(2.0)))
        life._jobs.join()
        assert [k for k, _ in life.poll(3.0)] == ["swap"]
    finally:
        life.close()


def test_unsupervised_updates_without_shadow_swap_in_at_once() -> None:
    life = ModelLifecycle(lambda: CoAdaptiveDecoder(LogVarLDA(), [PooledMeanBias()]),
                          shadow_trials=0, background=False)
    rng = np.random.default_rng(5)
    X, y = two_class_epochs(rng, 30)
    life.submit(Job("calibrate", X, y, times=np.arange(30.0)))
    assert [k for k, _ in life.poll(0.0)] == ["online"]
    life.submit(Job("update", X[:3], None, times=np.arange(3.0)))
    (kind, details), = life.poll(1.0)
    assert kind == "swap" and details["version"] == 2 and details["replaces"] == 1


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_background_updates_replay_exactly_from_the_recorded_install_points(
        isolation: str) -> None:
    """Training in the worker thread or a spawned child; a replay installs the same versions."""
    recorded: list[tuple[str, dict]] = []
    live = ModelLifecycle(make_model, shadow_trials=4, background=True, isolation=isolation,
                          on_event=lambda k, d: recorded.append((k, d)))
    try:
        run_session(live, 3, flip_after=20, wait=True)
    finally:
        live.close()
    if isolation == "process":
        assert not live._trainer._process.is_alive()
    kinds = [k for k, _ in recorded]
    assert kinds[0] == "online" and "swap" in kinds and "rollback" in kinds
    installs = [d["first_window"] for k, d in recorded if "first_window" in d]
    replayed: list[tuple[str, dict]] = []
    again = ModelLifecycle(make_model, shadow_trials=4, install_at=installs,
                           on_event=lambda k, d: replayed.append((k, d)))
    run_session(again, 3, flip_after=20)
    assert [(k, d["version"], d["digest"]) for k, d in replayed] == \
        [(k, d["version"], d["digest"]) for k, d in recorded]
    assert again.serving.digest == live.serving.digest


def test_an_unknown_isolation_is_refused() -> None:
    with pytest.raises(DecoderError, match="isolation"):
        ModelLifecycle(make_model, isolation="gpu")
