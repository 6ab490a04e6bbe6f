"""Pseudo-online evaluation of a decoder with and without co-adaptation.

Three arms see the same test trials in chronological order:

* **static**: trained once on the training trials, never changed;
* **adaptive** (one per strategy): the same training, then each test trial is
  predicted with the model of that moment and only then shown to the strategy
  (with its label when the strategy is supervised, as a cued task would give it,
  and whether the output was right, for error-driven ones);
* **oracle**: before each test trial, recalibrated with supervision on current
  data: the ``window`` most recent labelled trials before it (test trials
  first, topped up with the last training trials), the same amount the static
  arm had, leaving out channels that are flat in all of them.

Nothing is fitted on a trial before that trial has been predicted, so every
arm is strictly causal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bci_runtime.decoders import metrics
from bci_runtime.decoders.adaptation import (
    CoAdaptiveDecoder,
    make_strategies,
    make_strategy,
    strategy_names,
)
from bci_runtime.decoders.trials import Trials
from bci_runtime.errors import ConfigError, DecoderError


@dataclass
class Arm:
    """What one arm predicted for each test trial.

    Attributes
    ----------
    name : str
    predictions : ndarray of str, shape (n_test,)
    correct : ndarray of bool, shape (n_test,)
    scores : dict
        :func:`~bci_runtime.decoders.metrics.classification_scores`, plus the
        drift figures for adaptive arms when an onset is known.
    failed_updates : list of str
        Updates the adaptive arm's decoder refused (the trial and why); the
        model it had kept predicting, as it would online.
    """

    name: str
    predictions: np.ndarray
    correct: np.ndarray
    scores: dict[str, Any] = field(default_factory=dict)
    failed_updates: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`."""

    arms: dict[str, Arm]
    adaptive: list[str]
    n_train: int
    n_test: int
    classes: list[str]
    trial_s: float
    drift_onset: int | None
    skipped: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form: arms, counts, and the adaptive arm's drift figures."""
        out: dict[str, Any] = {"arms": {}, "n_train": self.n_train, "n_test": self.n_test,
                               "classes": self.classes, "trial_s": round(self.trial_s, 3)}
        keep = ("accuracy", "kappa", "itr_bits_min")
        out["arms"]["static"] = {k: self.arms["static"].scores[k] for k in keep}
        if self.adaptive:
            first = self.arms[f"adaptive:{self.adaptive[0]}"]
            out["arms"]["adaptive"] = {"strategy": self.adaptive[0],
                                       **{k: first.scores[k] for k in keep}}
            for k in ("tau90_trials", "recovery_fraction", "regret"):
                if k in first.scores:
                    out[k] = first.scores[k]
        out["arms"]["oracle"] = {k: self.arms["oracle"].scores[k] for k in keep}
        out["strategies"] = {name: self.arms[f"adaptive:{name}"].scores
                             for name in self.adaptive}
        if self.skipped:
            out["strategies_skipped"] = self.skipped
        if self.drift_onset is not None:
            out["drift_onset_trial"] = self.drift_onset
            out["static_after_onset"] = self.arms["static"].scores.get("accuracy_after_onset")
            out["oracle_after_onset"] = self.arms["oracle"].scores.get("accuracy_after_onset")
        return out


def resolve_strategies(adapt: str, decoder: Any) -> tuple[list[str], dict[str, str]]:
    """``--adapt`` -> strategy names to run, and those ``all`` left out (with why).

    Parameters
    ----------
    adapt : str
        ``none``, ``all``, a strategy name, or several joined by commas (one
        arm each); ``a+b`` stacks strategies in one arm.
    decoder : estimator
        A fitted decoder, to ask each strategy whether it applies.
    """
    if adapt == "none":
        return [], {}
    if adapt == "all":
        names, skipped = [], {}
        for name in strategy_names():
            reason = make_strategy(name).applies_to(decoder)
            if reason is None:
                names.append(name)
            else:
                skipped[name] = reason
        return names, skipped
    names = [a.strip() for a in adapt.split(",") if a.strip()]
    for name in names:
        for strategy, part in zip(make_strategies(name), name.split("+")):
            reason = strategy.applies_to(decoder)  # unknown names raise at make_strategies
            if reason is not None:
                raise ConfigError(f"--adapt {name}: {part} cannot adapt "
                                  f"{type(decoder).__name__}: {reason}",
                                  hint="--adapt all picks the strategies that apply")
    return names, {}


def evaluate(make_decoder: Callable[[], Any], train: Trials, test: Trials, adapt: str = "all",
             *, drift_onset_s: float | None = None, oracle_window: int | None = None,
             half_life: float | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> Evaluation:
    """Run the static, adaptive and oracle arms over ``test``, in time order.

    Parameters
    ----------
    make_decoder : callable
        Returns a new, unfitted decoder (an epoch classifier).
    train, test : Trials
    adapt : str
        See :func:`resolve_strategies`.
    drift_onset_s : float, optional
        When the drift began (seconds, on the test recording's clock): adds
        τ90, recovery fraction and regret.
    oracle_window : int, optional
        Trials the oracle recalibrates on; the training set's size by default.
    half_life : float, optional
        Overrides each strategy's default half-life (trials).
    progress : callable, optional
        ``progress(arm, done, total)`` after each trial.
    """
    classes = sorted(set(train.y.tolist()))
    unknown = sorted(set(test.y.tolist()) - set(classes))
    if unknown:
        raise ConfigError(f"the test trials have classes {unknown} that no training trial has",
                          hint="train on recordings that hold every class you test")
    if len(classes) < 2:
        raise ConfigError(f"the training trials hold one class only ({classes})",
                          hint="check --events: every class needs training trials")
    static = make_decoder().fit(train.X, train.y)
    names, skipped = resolve_strategies(adapt, static)
    trial_s = _trial_seconds(test)
    onset = None
    if drift_onset_s is not None:
        after = np.flatnonzero(test.onsets >= drift_onset_s)
        onset = int(after[0]) if after.size else None
    arms = {"static": _arm("static", static.predict(test.X), test.y)}
    params = {} if half_life is None else {"half_life": half_life}
    for name in names:
        model = CoAdaptiveDecoder(make_decoder(), make_strategies(name, **params))
        arms[f"adaptive:{name}"] = _adaptive(f"adaptive:{name}", model.fit(train.X, train.y),
                                             test, progress)
    arms["oracle"] = _oracle(make_decoder, train, test, oracle_window or len(train), progress)
    for arm in arms.values():
        arm.scores = metrics.classification_scores(test.y, arm.predictions, len(classes),
                                                   trial_s)
        if onset is not None:
            arm.scores["accuracy_after_onset"] = round(float(arm.correct[onset:].mean()), 4)
        if arm.failed_updates:
            arm.scores["updates_failed"] = len(arm.failed_updates)
            arm.scores["first_failure"] = arm.failed_updates[0]
    if onset is not None:
        _drift_figures(arms, onset)
    return Evaluation(arms, names, len(train), len(test), classes, trial_s, onset, skipped)


def _arm(name: str, predictions: np.ndarray, y: np.ndarray) -> Arm:
    predictions = np.asarray(predictions)
    return Arm(name, predictions, predictions == y)


def _adaptive(name: str, model: CoAdaptiveDecoder, test: Trials,
              progress: Callable[[str, int, int], None] | None) -> Arm:
    predictions, failed = [], []
    for i in range(len(test)):
        x, y = test.X[i:i + 1], test.y[i:i + 1]
        predicted = model.predict(x)
        predictions.append(predicted[0])
        try:  # then learn from it: the label came with the cue, the outcome with feedback
            model.partial_fit(x, y, correct=predicted == y)
        except DecoderError as exc:
            # as online: a refused update leaves the serving model as it was
            failed.append(f"trial {i}: {exc.message}")
        if progress is not None:
            progress(name, i + 1, len(test))
    arm = _arm(name, np.array(predictions), test.y)
    arm.failed_updates = failed
    return arm


def _oracle(make_decoder: Callable[[], Any], train: Trials, test: Trials, window: int,
            progress: Callable[[str, int, int], None] | None) -> Arm:
    X = np.concatenate([train.X, test.X])
    y = np.concatenate([train.y, test.y])
    n_train, predictions = len(train), []
    n_classes = len(set(train.y.tolist()))
    model, live = None, slice(None)
    for i in range(len(test)):
        end = n_train + i  # trials before test trial i
        start = max(0, end - window)
        labels = y[start:end]
        if model is None or len(np.unique(labels)) == n_classes:
            # as a person recalibrating would: channels dead in the whole window are left out
            moving = np.ptp(X[start:end], axis=2).max(axis=0) > 0
            live = slice(None) if moving.all() else np.flatnonzero(moving)
            model = make_decoder().fit(X[start:end][:, live], labels)
        predictions.append(model.predict(test.X[i:i + 1][:, live])[0])
        if progress is not None:
            progress("oracle", i + 1, len(test))
    return _arm("oracle", np.array(predictions), test.y)


def _drift_figures(arms: dict[str, Arm], onset: int) -> None:
    static, oracle = arms["static"], arms["oracle"]
    for name, arm in arms.items():
        if not name.startswith("adaptive:"):
            continue
        arm.scores["tau90_trials"] = metrics.tau90(arm.correct, onset)
        arm.scores["recovery_fraction"] = metrics.recovery_fraction(
            arm.scores["accuracy_after_onset"], static.scores["accuracy_after_onset"],
            oracle.scores["accuracy_after_onset"])
        arm.scores["regret"] = metrics.regret(arm.correct, oracle.correct, onset)


def _trial_seconds(test: Trials) -> float:
    """Seconds per selection: the median spacing of the test trials."""
    gaps = np.diff(test.onsets)
    gaps = gaps[gaps > 0]
    if gaps.size:
        return float(np.median(gaps))
    return test.X.shape[2] / test.sfreq
