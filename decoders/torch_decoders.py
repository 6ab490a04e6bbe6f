"""Torch epoch classifiers as scikit-learn estimators: EEGNet and MVCNet, CPU-trainable.

Both are :class:`~bci_runtime.decoders.base.EpochClassifier` subclasses: epochs
``X`` of shape ``(n_trials, n_channels, n_times)`` in, class labels out. The
network's penultimate embedding is the decoder's :meth:`features` and its last
linear layer is ``head_``, a :class:`TorchLinearHead` whose ``coef_`` and
``intercept_`` are views of that layer's weights; so the head strategies of
:mod:`bci_runtime.decoders.adaptation` (``lda-bias``, ``normalize``) adapt a
torch model as they adapt an LDA, and what they write is what the network uses.

Online updates
    :meth:`~TorchEpochClassifier.partial_fit` takes ``n_steps`` Adam steps on
    the new labelled trials mixed with trials replayed from a bounded buffer
    (reservoir sampling over the calibration trials and every later update), so
    fine-tuning on drifted data does not erase what calibration taught.
    BatchNorm statistics stay frozen while fine-tuning: a handful of new trials
    would make them noisy.

Determinism
    Every random draw (initialisation, batch order, dropout masks, replay
    sampling) comes from one :class:`torch.Generator` seeded from
    ``random_state``, whose state is kept between calls and saved by
    :meth:`~TorchEpochClassifier.to_state`; torch's global generator is neither
    used nor seeded. The same calls on the same data, with the same torch
    thread count, give the same outputs.

Persistence
    :meth:`~TorchEpochClassifier.to_state` returns JSON-able values and numpy
    arrays only (no pickle) and :meth:`~TorchEpochClassifier.from_state`
    rebuilds an estimator that predicts identically.

Speed
    Prediction runs the network in eval mode under :func:`torch.inference_mode`.
    The networks apply their spatial filters before any filtering in time, so
    64 channels cost little more than 8 (see
    :mod:`~bci_runtime.decoders.torch_models`); a single-trial predict of
    64 channels x 320 samples takes about 0.3 ms (EEGNet) or 1 ms (MVCNet) of
    one core (``bench/decoder_speed_torch.py``). The estimator never sets
    torch's thread count, which is process-wide: the decoder node or the
    benchmark does (one thread leaves the other cores to the pipeline).

A serving model is never updated in place by the runtime (a background worker
updates a copy); an instance is not meant to be used from two threads at once.

torch is imported lazily (first fit or :meth:`from_state`), with an install hint
when it is missing.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils import check_random_state

from bci_runtime.decoders.base import EpochClassifier, check_epochs, check_labels
from bci_runtime.errors import DecoderError, DependencyError, ModelFileError

__all__ = ["TorchEpochClassifier", "EEGNetClassifier", "MVCNetClassifier", "TorchLinearHead"]

STATE_FORMAT = "bci_runtime.decoders.torch"
STATE_VERSION = 1


def _import_torch() -> tuple[Any, Any]:
    """``(torch, torch_models)``, or :class:`DependencyError` with an install hint."""
    try:
        import torch

        from bci_runtime.decoders import torch_models
    except ImportError as exc:  # pragma: no cover - torch is a declared dependency
        raise DependencyError(
            f"torch decoders need PyTorch, which failed to import ({exc})",
            hint="pip install 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu"
        ) from exc
    return torch, torch_models


class TorchLinearHead:
    """The last linear layer of a torch decoder, seen as a scikit-learn linear classifier.

    ``coef_`` and ``intercept_`` are float32 numpy views of the layer's weight
    and bias: reading them costs nothing, writing into them (in place, or by
    assigning a new array) changes the network. Binary models have one logit,
    as scikit-learn's linear classifiers: ``coef_`` is (1, n_features) and a
    positive score means ``classes_[1]``.

    Parameters
    ----------
    linear : torch.nn.Linear
        ``n_features`` in, 1 (two classes) or ``n_classes`` out.
    classes : ndarray, shape (n_classes,)
    """

    def __init__(self, linear: Any, classes: np.ndarray) -> None:
        self._linear = linear
        self.classes_ = classes

    @property
    def coef_(self) -> np.ndarray:
        """Weights, shape (1, n_features) for two classes, else (n_classes, n_features)."""
        return self._linear.weight.detach().numpy()

    @coef_.setter
    def coef_(self, value: Any) -> None:
        self._assign(self._linear.weight, value, "coef_")

    @property
    def intercept_(self) -> np.ndarray:
        """Biases, shape (1,) for two classes, else (n_classes,)."""
        return self._linear.bias.detach().numpy()

    @intercept_.setter
    def intercept_(self, value: Any) -> None:
        self._assign(self._linear.bias, value, "intercept_")

    @staticmethod
    def _assign(param: Any, value: Any, name: str) -> None:
        import torch

        arr = np.asarray(value, dtype=np.float64)
        if arr.size != param.numel() or not np.isfinite(arr).all():
            raise DecoderError(f"head {name}: need {param.numel()} finite values of shape "
                               f"{tuple(param.shape)}, got shape {arr.shape}")
        with torch.no_grad():
            param.copy_(torch.from_numpy(arr.reshape(tuple(param.shape))))

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Logits of features (n_trials, n_features): (n_trials,) for two classes, else
        (n_trials, n_classes)."""
        scores = features @ self.coef_.T.astype(np.float64) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (n_trials, n_classes): sigmoid or softmax of the logits."""
        scores = self.decision_function(features)
        if scores.ndim == 1:
            p1 = 0.5 * (1.0 + np.tanh(0.5 * scores))  # sigmoid without overflow warnings
            return np.column_stack([1.0 - p1, p1])
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Most probable class per trial, shape (n_trials,)."""
        return self.classes_[np.argmax(self.predict_proba(features), axis=1)]


class TorchEpochClassifier(EpochClassifier):
    """Base of the torch epoch classifiers: training, fine-tuning with replay, state.

    Subclasses give the network (:attr:`_module_name`) and its hyper-parameters
    (:meth:`_module_kwargs`); their ``__init__`` lists every parameter, as
    scikit-learn's ``get_params`` requires.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    n_channels_, n_times_ : int
        The epoch shape the model was fitted on.
    module_ : torch.nn.Module
        The network, in eval mode.
    head_ : TorchLinearHead
        Its last layer.
    input_scale_ : float
        Inputs are multiplied by it before the network (1 / std of the calibration epochs).
    replay_X_ : ndarray of float32, shape (n_replay, n_channels, n_times)
    replay_y_ : ndarray of int64, shape (n_replay,)
        The replay buffer (indices into ``classes_``), at most ``replay_size`` trials.
    n_seen_ : int
        Labelled trials seen (fit and partial_fit), for reservoir sampling.
    n_updates_ : int
        Successful ``partial_fit`` calls.
    loss_curve_ : list of float
        Mean training loss per epoch of ``fit``.
    """

    _module_name: ClassVar[str] = ""

    # -- for subclasses -------------------------------------------------------------

    def _module_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _min_n_times(self) -> int:
        """Shortest window (samples) the network accepts."""
        raise NotImplementedError

    # -- fit ------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> TorchEpochClassifier:
        """Train the network from scratch.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)

        Returns
        -------
        self
        """
        who = type(self).__name__
        X = check_epochs(X, who=who)
        y = check_labels(y, None, X.shape[0], who=who)
        classes = np.unique(y)
        if classes.size < 2:
            raise DecoderError(f"{who}: need trials of at least 2 classes, got "
                               f"{classes.tolist()}")
        self._check_params()
        if X.shape[2] < self._min_n_times():
            raise DecoderError(f"{who}: windows of {X.shape[2]} samples are too short for "
                               f"the network (at least {self._min_n_times()})",
                               hint="use longer windows, or smaller pooling factors")
        scale = float(X.std())
        if not scale > 0:
            raise DecoderError(f"{who}: the calibration epochs are flat (std 0)",
                               hint="check the amplifier and the channel selection")
        torch, models = _import_torch()
        seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 1))
        gen = torch.Generator().manual_seed(seed)
        module = models.build_on_meta(getattr(models, self._module_name), X.shape[1],
                                      X.shape[2], _n_outputs(classes.size),
                                      input_scale=1.0 / scale, **self._module_kwargs())
        models.init_parameters(module, gen)
        targets = np.searchsorted(classes, y)
        Xf = X.astype(np.float32)
        losses = self._train(module, gen, torch.from_numpy(Xf), torch.from_numpy(targets),
                             classes.size)
        # replay buffer: a uniform sample of the calibration trials
        keep = torch.randperm(X.shape[0], generator=gen)[:self.replay_size].sort().values
        keep = keep.numpy()
        self.classes_ = classes
        self.n_channels_, self.n_times_ = X.shape[1], X.shape[2]
        self.n_features_in_ = X.shape[1]
        self.module_ = module.eval()
        self.head_ = TorchLinearHead(module.classifier, classes)
        self.input_scale_ = 1.0 / scale
        self.replay_X_, self.replay_y_ = Xf[keep], targets[keep].astype(np.int64)
        self.n_seen_, self.n_updates_ = X.shape[0], 0
        self.loss_curve_ = losses
        self._rng_state = gen.get_state()
        return self

    def _train(self, module: Any, gen: Any, X: Any, y: Any, n_classes: int) -> list[float]:
        import torch

        opt = torch.optim.Adam(module.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)
        n, losses = X.shape[0], []
        with _training(module, gen):
            for _ in range(self.n_epochs):
                order, total = torch.randperm(n, generator=gen), 0.0
                for start in range(0, n, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    if idx.numel() < 2 and n >= 2:  # BatchNorm cannot train on one trial
                        continue
                    loss = _loss(module(X[idx]), y[idx], n_classes)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    module.constrain()
                    total += float(loss.detach()) * idx.numel()
                losses.append(total / n)
                if not math.isfinite(losses[-1]):
                    raise DecoderError(f"{type(self).__name__}: training diverged (loss "
                                       f"{losses[-1]})", hint="lower lr")
        return losses

    # -- predict --------------------------------------------------------------------

    def _features(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            emb = self.module_.embed(torch.from_numpy(X.astype(np.float32)))
            return emb.numpy().astype(np.float64)

    # -- online update --------------------------------------------------------------

    @property
    def supports_partial_fit(self) -> bool:
        """Always: :meth:`partial_fit` fine-tunes the whole network, not a separate head."""
        return True

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> TorchEpochClassifier:
        """Fine-tune on labelled trials mixed with replayed ones.

        Takes ``n_steps`` Adam steps (fresh optimizer, learning rate
        ``partial_fit_lr`` times the mean sample weight) on the loss
        ``(1 - replay_ratio) * L_new + replay_ratio * L_replay``, where ``L_new``
        is the sample-weighted loss of (up to ``batch_size`` of) the new trials and
        ``L_replay`` the loss of ``batch_size`` trials drawn from the replay
        buffer. Then the new trials enter the buffer by reservoir sampling.
        Dropout is on; BatchNorm layers keep using (and do not update) their
        calibration statistics.

        Everything is validated first, and a failure while stepping restores the
        weights: a call that raises leaves the model as it was.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
            Labels among ``classes_``.
        classes : array-like, optional
            Accepted for scikit-learn's API; must be the fitted classes.
        sample_weight : array-like, shape (n_trials,), optional
            Non-negative weights (1 when omitted); trials of weight 0 are ignored.

        Returns
        -------
        self
        """
        who = type(self).__name__
        X, y = self._update_inputs(X, y, classes)
        weights = _check_weights(sample_weight, X.shape[0], who)
        self._check_params()
        keep = weights > 0
        if not keep.any():
            return self
        X, y, weights = X[keep].astype(np.float32), y[keep], weights[keep]
        targets = np.searchsorted(self.classes_, y).astype(np.int64)

        import torch

        module = self.module_
        saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
        gen = torch.Generator()
        gen.set_state(self._rng_state)
        try:
            self._fine_tune(module, gen, torch.from_numpy(X), torch.from_numpy(targets),
                            torch.from_numpy(weights.astype(np.float32)))
            replay_X, replay_y, n_seen = self._reservoir(gen, X, targets)
        except BaseException:
            module.load_state_dict(saved)  # no partial update survives a failure
            raise
        finally:
            module.eval()
        self.replay_X_, self.replay_y_, self.n_seen_ = replay_X, replay_y, n_seen
        self._rng_state = gen.get_state()
        self.n_updates_ += 1
        return self

    def _fine_tune(self, module: Any, gen: Any, X: Any, y: Any, w: Any) -> None:
        import torch

        if self.n_steps == 0:
            return
        n_classes = self.classes_.size
        lr = self.partial_fit_lr * float(w.mean())  # Adam ignores loss scale; the rate does not
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        ratio = float(self.replay_ratio)
        buffer_X = torch.from_numpy(self.replay_X_)
        buffer_y = torch.from_numpy(self.replay_y_)
        n_new, n_buf = X.shape[0], buffer_X.shape[0]
        with _training(module, gen, freeze_bn=True):
            for _ in range(self.n_steps):
                idx = (torch.randperm(n_new, generator=gen)[:self.batch_size]
                       if n_new > self.batch_size else slice(None))
                wi = w[idx]
                per_trial = _loss(module(X[idx]), y[idx], n_classes, reduction="none")
                loss = (per_trial * wi).sum() / wi.sum()
                if ratio > 0 and n_buf > 0:
                    ridx = torch.randperm(n_buf, generator=gen)[:self.batch_size]
                    replay = _loss(module(buffer_X[ridx]), buffer_y[ridx], n_classes)
                    loss = (1.0 - ratio) * loss + ratio * replay
                if not torch.isfinite(loss):
                    raise DecoderError(f"{type(self).__name__}: partial_fit diverged (loss "
                                       f"{float(loss.detach())}); the model was not changed",
                                       hint="lower partial_fit_lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                module.constrain()

    def _reservoir(self, gen: Any, X: np.ndarray, y: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, int]:
        """The replay buffer after offering it ``X``, ``y`` (reservoir sampling).

        Returns new arrays: the old ones stay intact until the update succeeds.
        """
        import torch

        size = int(self.replay_size)
        buf_X, buf_y = list(self.replay_X_[:size]), list(self.replay_y_[:size])
        n_seen = self.n_seen_
        for x, label in zip(X, y):
            n_seen += 1
            if len(buf_X) < size:
                buf_X.append(x)
                buf_y.append(label)
                continue
            j = int(torch.randint(n_seen, (1,), generator=gen))
            if j < size:  # each trial seen so far is in the buffer with probability size/n
                buf_X[j], buf_y[j] = x, label
        shape = (0, self.n_channels_, self.n_times_)
        return (np.stack(buf_X).astype(np.float32, copy=False) if buf_X
                else np.zeros(shape, np.float32), np.asarray(buf_y, np.int64), n_seen)

    # -- state ----------------------------------------------------------------------

    def detach_training_data(self) -> dict[str, np.ndarray]:
        """Take the replay buffer out (left empty); what a serving copy does without.

        Returns
        -------
        dict
            ``replay_X_`` (n_replay, n_channels, n_times) and ``replay_y_``
            (n_replay,), for :meth:`attach_training_data`.
        """
        data = {"replay_X_": self.replay_X_, "replay_y_": self.replay_y_}
        self.replay_X_, self.replay_y_ = self.replay_X_[:0], self.replay_y_[:0]
        return data

    def attach_training_data(self, data: dict[str, np.ndarray]) -> None:
        """Put back a replay buffer taken by :meth:`detach_training_data`."""
        self.replay_X_, self.replay_y_ = data["replay_X_"], data["replay_y_"]

    def to_state(self) -> dict[str, Any]:
        """The fitted estimator as JSON-able values and numpy arrays (no pickle).

        Returns
        -------
        dict
            ``format``, ``format_version``, ``estimator`` (class name),
            ``params`` (hyper-parameters), ``classes`` (ndarray), ``n_channels``,
            ``n_times``, ``input_scale``, ``state_dict`` (name -> ndarray, the
            network's parameters and buffers), ``replay_X`` (float32,
            (n_replay, n_channels, n_times)), ``replay_y`` (int64, (n_replay,)),
            ``n_seen``, ``n_updates``, ``rng_state`` (uint8 ndarray),
            ``loss_curve``, ``torch_version``.
        """
        self._require_fitted("to_state")
        import torch

        params = self.get_params(deep=False)
        if not (params["random_state"] is None or isinstance(params["random_state"], Integral)):
            params["random_state"] = None  # a RandomState object is not data; the rng is saved
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "estimator": type(self).__name__,
            "params": _jsonable(params),
            "classes": np.array(self.classes_, copy=True),
            "n_channels": int(self.n_channels_),
            "n_times": int(self.n_times_),
            "input_scale": float(self.input_scale_),
            "state_dict": {k: v.detach().numpy().copy()
                           for k, v in self.module_.state_dict().items()},
            "replay_X": self.replay_X_.copy(),
            "replay_y": self.replay_y_.copy(),
            "n_seen": int(self.n_seen_),
            "n_updates": int(self.n_updates_),
            "rng_state": self._rng_state.numpy().copy(),
            "loss_curve": [float(v) for v in self.loss_curve_],
            "torch_version": torch.__version__,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TorchEpochClassifier:
        """Rebuild an estimator from :meth:`to_state`'s output; it predicts identically.

        Called on :class:`TorchEpochClassifier`, the class is chosen by
        ``state["estimator"]``; called on a subclass, the state must be of it.

        Raises
        ------
        ModelFileError
            The state is not one of ours, of another estimator, or inconsistent
            (missing keys, unknown parameters, arrays of the wrong shape or dtype).
        """
        torch, models = _import_torch()
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ModelFileError("not a torch decoder state (format "
                                 f"{state.get('format') if isinstance(state, dict) else None!r})")
        if state.get("format_version") != STATE_VERSION:
            raise ModelFileError(f"torch decoder state version {state.get('format_version')!r}"
                                 f" is not {STATE_VERSION}",
                                 hint="load it with the version of bci-runtime that wrote it")
        name = state.get("estimator")
        klass = _ESTIMATORS.get(name) if isinstance(name, str) else None
        if klass is None or not issubclass(klass, cls):
            raise ModelFileError(f"state of {state.get('estimator')!r} cannot load as "
                                 f"{cls.__name__}")
        try:
            est = klass(**state["params"])
            classes = _plain_array(state["classes"], "classes", "iubU")
            n_channels, n_times = int(state["n_channels"]), int(state["n_times"])
            scale = float(state["input_scale"])
            module = models.build_on_meta(getattr(models, klass._module_name), n_channels,
                                          n_times, _n_outputs(classes.size),
                                          input_scale=scale, **est._module_kwargs())
            tensors = {k: torch.from_numpy(_plain_array(v, k, "fiub").copy())
                       for k, v in state["state_dict"].items()}
            module.load_state_dict(tensors, strict=True)
            replay_X = _plain_array(state["replay_X"], "replay_X", "f").astype(np.float32)
            replay_y = _plain_array(state["replay_y"], "replay_y", "iu").astype(np.int64)
            if (replay_X.ndim != 3 or replay_X.shape[1:] != (n_channels, n_times)
                    or replay_y.shape != replay_X.shape[:1]
                    or (replay_y.size and not 0 <= replay_y.min() <= replay_y.max()
                        < classes.size)):
                raise ValueError("replay buffer does not match the model")
            rng = torch.from_numpy(_plain_array(state["rng_state"], "rng_state", "u")
                                   .astype(np.uint8))
            torch.Generator().set_state(rng)  # raises on a malformed state
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{klass.__name__} state is inconsistent: {exc}") from exc
        est.classes_ = classes
        est.n_channels_, est.n_times_ = n_channels, n_times
        est.n_features_in_ = n_channels
        est.module_ = module.eval()
        est.head_ = TorchLinearHead(module.classifier, classes)
        est.input_scale_ = scale
        est.replay_X_, est.replay_y_ = replay_X, replay_y
        est.n_seen_, est.n_updates_ = int(state["n_seen"]), int(state["n_updates"])
        est.loss_curve_ = [float(v) for v in state.get("loss_curve", [])]
        est._rng_state = rng
        return est

    # -- validation -----------------------------------------------------------------

    def _check_params(self) -> None:
        who = type(self).__name__
        ints = {"n_epochs": 1, "batch_size": 2, "n_steps": 0, "replay_size": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, Integral) or value < low:
                raise DecoderError(f"{who}: {name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "partial_fit_lr"):
            value = getattr(self, name)
            if not isinstance(value, Real) or not 0 < value < math.inf:
                raise DecoderError(f"{who}: {name} must be > 0, got {value!r}")
        if not isinstance(self.weight_decay, Real) or not 0 <= self.weight_decay < math.inf:
            raise DecoderError(f"{who}: weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.replay_ratio, Real) or not 0 <= self.replay_ratio < 1:
            raise DecoderError(f"{who}: replay_ratio must be in [0, 1), got "
                               f"{self.replay_ratio!r}",
                               hint="0 fine-tunes on the new trials only; 0.5 weighs new and "
                               "replayed trials equally")
        if not isinstance(self.dropout, Real) or not 0 <= self.dropout < 1:
            raise DecoderError(f"{who}: dropout must be in [0, 1), got {self.dropout!r}")


def _n_outputs(n_classes: int) -> int:
    return 1 if n_classes == 2 else n_classes


def _loss(logits: Any, target: Any, n_classes: int, reduction: str = "mean") -> Any:
    import torch.nn.functional as F

    if n_classes == 2:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype),
                                                  reduction=reduction)
    return F.cross_entropy(logits, target, reduction=reduction)


class _training:
    """Context: module in train mode with dropout drawing from ``gen``; eval mode after.

    With ``freeze_bn`` the BatchNorm layers stay in eval mode (running statistics
    neither used from the batch nor updated), as fine-tuning on a few trials wants.
    """

    def __init__(self, module: Any, gen: Any, freeze_bn: bool = False) -> None:
        self.module, self.gen, self.freeze_bn = module, gen, freeze_bn

    def __enter__(self) -> None:
        import torch

        from bci_runtime.decoders.torch_models import Dropout

        self.module.train()
        for sub in self.module.modules():
            if isinstance(sub, Dropout):
                sub.generator = self.gen
            elif self.freeze_bn and isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                sub.eval()

    def __exit__(self, *exc: object) -> None:
        from bci_runtime.decoders.torch_models import Dropout

        for sub in self.module.modules():
            if isinstance(sub, Dropout):
                sub.generator = None  # a Generator is not data; keep the module copyable
        self.module.eval()


def _check_weights(sample_weight: Any, n: int, who: str) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if w.shape[0] != n or not np.isfinite(w).all() or (w < 0).any():
        raise DecoderError(f"{who}: sample_weight must hold {n} finite values >= 0, got "
                           f"{w.tolist()[:5]}")
    return w


def _jsonable(value: Any) -> Any:
    """Tuples to lists, numpy scalars to Python ones (hyper-parameters only)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise DecoderError(f"hyper-parameter value {value!r} cannot be saved",
                       hint="use numbers, strings, lists or None")


def _plain_array(value: Any, name: str, kinds: str) -> np.ndarray:
    """``value`` as an ndarray of a plain dtype (never object: nothing executes on load)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in kinds:
        raise ModelFileError(f"state array '{name}' has dtype {arr.dtype}, expected one of "
                             f"kinds {kinds!r}")
    return arr


def _check_band(who: str, sfreq: Any, band: Any, *, required: bool = False
                ) -> tuple[float | None, tuple[float, float] | None]:
    """Validated ``(sfreq, band)`` as floats, or :class:`DecoderError`."""
    if sfreq is None:
        if required or band is not None:
            raise DecoderError(f"{who}: sfreq (Hz) is needed"
                               + (" by band" if band is not None else ""),
                               hint="give the sampling rate of the epochs, e.g. sfreq=160")
        return None, None
    if not isinstance(sfreq, Real) or not 0 < sfreq < math.inf:
        raise DecoderError(f"{who}: sfreq must be > 0 Hz, got {sfreq!r}")
    if band is None:
        return float(sfreq), None
    pair = _band_pair(band)
    if pair is None or not 0 < pair[0] < pair[1] < sfreq / 2:
        raise DecoderError(f"{who}: band must be [low, high] with 0 < low < high < sfreq / 2 "
                           f"= {sfreq / 2}, got {band!r}", hint="e.g. band=[8, 30]")
    return float(sfreq), pair


def _band_pair(band: Any) -> tuple[float, float] | None:
    try:
        low, high = (float(f) for f in band)
    except (TypeError, ValueError):
        return None
    return low, high


class EEGNetClassifier(TorchEpochClassifier):
    """EEGNet (Lawhern et al. 2018) as a scikit-learn classifier.

    See :class:`~bci_runtime.decoders.torch_models.EEGNet` for the network.
    With few calibration trials give ``sfreq`` and a ``band`` (e.g. 8-30 Hz for
    motor imagery): on 30 trials of 1-40 Hz EEG the network otherwise fits the
    strong slow components and generalizes poorly.

    Parameters
    ----------
    F1, D, F2 : int
        Temporal filters, spatial filters per temporal filter, separable filters.
    kernel_length : int
        Temporal kernel in samples (the paper: half the sampling rate, 64 at 128 Hz).
    sep_length : int
        Separable-convolution kernel in samples.
    pool1, pool2 : int
        Average pooling factors.
    dropout : float
        Dropout probability.
    sfreq : float, optional
        Sampling rate (Hz) of the epochs; needed by ``band``.
    band : [low, high], optional
        Fixed FIR band-pass (Hz, about 0.5 s of taps) in front of the temporal
        convolution; windows then need ``n_times >= pool1 * pool2 + taps - 1``.
    n_epochs : int
        Passes over the calibration trials in ``fit``.
    batch_size : int
        Trials per step (``fit``), and new / replayed trials per step (``partial_fit``).
    lr : float
        Adam learning rate of ``fit``.
    weight_decay : float
        Adam L2 penalty of ``fit``.
    n_steps : int
        Adam steps per ``partial_fit`` call.
    partial_fit_lr : float
        Adam learning rate of ``partial_fit`` (times the mean sample weight).
    replay_ratio : float
        Share of replayed trials in the fine-tuning loss, in [0, 1).
    replay_size : int
        Capacity of the replay buffer (trials).
    random_state : int, RandomState or None
        Seeds the model's torch generator.
    """

    _module_name = "EEGNet"

    def __init__(self, *, F1: int = 8, D: int = 2, F2: int = 16, kernel_length: int = 64,
                 sep_length: int = 16, pool1: int = 4, pool2: int = 8, dropout: float = 0.25,
                 sfreq: float | None = None, band: Any = None, n_epochs: int = 60,
                 batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.0,
                 n_steps: int = 10, partial_fit_lr: float = 5e-4, replay_ratio: float = 0.5,
                 replay_size: int = 128, random_state: int | None = None) -> None:
        self.F1 = F1
        self.D = D
        self.F2 = F2
        self.kernel_length = kernel_length
        self.sep_length = sep_length
        self.pool1 = pool1
        self.pool2 = pool2
        self.dropout = dropout
        self.sfreq = sfreq
        self.band = band
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_steps = n_steps
        self.partial_fit_lr = partial_fit_lr
        self.replay_ratio = replay_ratio
        self.replay_size = replay_size
        self.random_state = random_state

    def _module_kwargs(self) -> dict[str, Any]:
        sfreq, band = _check_band(type(self).__name__, self.sfreq, self.band)
        return {"F1": self.F1, "D": self.D, "F2": self.F2, "kernel_length": self.kernel_length,
                "sep_length": self.sep_length, "pool1": self.pool1, "pool2": self.pool2,
                "dropout": self.dropout, "sfreq": sfreq, "band": band}

    def _min_n_times(self) -> int:
        from bci_runtime.decoders.torch_models import front_length

        sfreq, band = _check_band(type(self).__name__, self.sfreq, self.band)
        front = front_length(sfreq) - 1 if band is not None else 0
        return self.pool1 * self.pool2 + front


class MVCNetClassifier(TorchEpochClassifier):
    """Multi-view CNN + Transformer (after MVCNet, 2025) as a scikit-learn classifier.

    Time (EEGNet-like conv), spectral (filter-bank log-power) and spatial
    covariance views become tokens fused by a small Transformer encoder; see
    :class:`~bci_runtime.decoders.torch_models.MVCNet`.

    Parameters
    ----------
    sfreq : float
        Sampling rate (Hz) of the epochs, for the filters.
    bands : list of [low, high]
        Filter-bank pass bands of the spectral view, Hz (below ``sfreq / 2``).
    band : [low, high], optional
        Front band-pass of the time and covariance views (see
        :class:`EEGNetClassifier`).
    F1, D, kernel_length, pool1, pool2 : int
        Time view, as in :class:`EEGNetClassifier`.
    n_spatial : int
        Spatial filters of the spectral and covariance views.
    fir_length : int, optional
        Taps of the filter-bank kernels (odd); about 0.5 s by default.
    d_model, n_heads, d_ff, n_layers : int
        Transformer width (``d_model`` divisible by ``n_heads``), heads,
        feed-forward width, layers.
    dropout : float
        Dropout probability.
    n_epochs, batch_size, lr, weight_decay, n_steps, partial_fit_lr, replay_ratio, \
replay_size, random_state
        As in :class:`EEGNetClassifier`.
    """

    _module_name = "MVCNet"

    def __init__(self, *, sfreq: float = 160.0,
                 bands: Any = ((4, 8), (8, 13), (13, 20), (20, 30), (30, 40)),
                 band: Any = None, F1: int = 8, D: int = 2, kernel_length: int = 32,
                 pool1: int = 8, pool2: int = 4, n_spatial: int = 8,
                 fir_length: int | None = None, d_model: int = 32, n_heads: int = 4,
                 d_ff: int = 64, n_layers: int = 1, dropout: float = 0.25,
                 n_epochs: int = 60, batch_size: int = 16, lr: float = 1e-3,
                 weight_decay: float = 0.0, n_steps: int = 10, partial_fit_lr: float = 5e-4,
                 replay_ratio: float = 0.5, replay_size: int = 128,
                 random_state: int | None = None) -> None:
        self.sfreq = sfreq
        self.bands = bands
        self.band = band
        self.F1 = F1
        self.D = D
        self.kernel_length = kernel_length
        self.pool1 = pool1
        self.pool2 = pool2
        self.n_spatial = n_spatial
        self.fir_length = fir_length
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.n_layers = n_layers
        self.dropout = dropout
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_steps = n_steps
        self.partial_fit_lr = partial_fit_lr
        self.replay_ratio = replay_ratio
        self.replay_size = replay_size
        self.random_state = random_state

    def _module_kwargs(self) -> dict[str, Any]:
        who = type(self).__name__
        sfreq, band = _check_band(who, self.sfreq, self.band, required=True)
        try:
            bands = [_band_pair(b) for b in self.bands]
        except TypeError:
            bands = [None]
        if not bands or any(b is None or not 0 < b[0] < b[1] < sfreq / 2 for b in bands):
            raise DecoderError(f"{who}: bands must be [low, high] pairs with 0 < low < high < "
                               f"sfreq / 2 = {sfreq / 2}, got {self.bands!r}")
        if self.d_model % self.n_heads:
            raise DecoderError(f"{who}: d_model ({self.d_model}) must be divisible by n_heads "
                               f"({self.n_heads})")
        if self.fir_length is not None and (not isinstance(self.fir_length, Integral)
                                            or self.fir_length < 1 or self.fir_length % 2 == 0):
            raise DecoderError(f"{who}: fir_length must be an odd number of taps or None, got "
                               f"{self.fir_length!r}")
        return {"sfreq": sfreq, "bands": bands, "band": band, "F1": self.F1, "D": self.D,
                "kernel_length": self.kernel_length, "pool1": self.pool1, "pool2": self.pool2,
                "n_spatial": self.n_spatial, "fir_length": self.fir_length,
                "d_model": self.d_model, "n_heads": self.n_heads, "d_ff": self.d_ff,
                "n_layers": self.n_layers, "dropout": self.dropout}

    def _min_n_times(self) -> int:
        from bci_runtime.decoders.torch_models import front_length

        kw = self._module_kwargs()
        front = front_length(kw["sfreq"]) - 1 if kw["band"] is not None else 0
        fir = kw["fir_length"] or front_length(kw["sfreq"])
        return max(self.pool1 * self.pool2 + front, fir)


_ESTIMATORS: dict[str, type[TorchEpochClassifier]] = {
    c.__name__: c for c in (EEGNetClassifier, MVCNetClassifier)}
