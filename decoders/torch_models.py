"""Compact torch networks for epoch decoding: EEGNet and a multi-view CNN + Transformer.

Every network here maps epochs ``x`` of shape ``(n_trials, n_channels, n_times)``
(float32, in the units of the calibration data) to logits, in two parts that the
scikit-learn wrappers of :mod:`bci_runtime.decoders.torch_decoders` expose
separately:

* ``embed(x) -> (n_trials, n_features)``: the penultimate embedding (the
  *features* of :class:`~bci_runtime.decoders.base.EpochClassifier`);
* ``classifier``: one :class:`torch.nn.Linear` on the embedding (the *head*), so
  co-adaptation strategies that move a linear head (bias, normalization) act on it.

Randomness never comes from torch's global generator, so a replayed session
reproduces its outputs even when other code draws random numbers meanwhile:

* modules are built on the ``meta`` device (no global draws) and initialised by
  :func:`init_parameters` from a :class:`torch.Generator` the caller seeds;
* dropout is :class:`Dropout`, which draws its masks from a generator the caller
  attaches during training (it is the identity in eval mode).

torch is imported at the top of this module; the rest of the package imports
this module lazily (only when a torch decoder is fitted or loaded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EEGNet", "MVCNet", "Dropout", "init_parameters", "build_on_meta",
           "filter_bank_kernels", "front_length"]


class Dropout(nn.Module):
    """Inverted dropout whose masks come from an attached generator.

    :class:`torch.nn.Dropout` draws from torch's global generator; this one draws
    from ``self.generator`` (set by the trainer for the duration of a fit), so
    training is reproducible without seeding anything global.

    Parameters
    ----------
    p : float
        Probability of zeroing an element, in [0, 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _renorm_(weight: torch.Tensor, max_norm: float) -> None:
    """Max-norm constraint of EEGNet: rescale each output filter to norm <= max_norm."""
    with torch.no_grad():
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=max_norm))


def _same_padding(kernel_length: int) -> tuple[int, int]:
    """(left, right) zero padding that keeps the length, as torch's ``padding="same"``."""
    return (kernel_length - 1) // 2, kernel_length // 2


def _temporal_spatial(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EEGNet's first block, temporal conv then depthwise spatial conv, spatial first.

    Both maps are linear and, without EEGNet's BatchNorm between them (the one
    after the spatial conv re-normalizes anyway), they commute: applying the
    ``F1 * D`` spatial filters first lets the temporal kernels filter ``F1 * D``
    signals instead of ``n_channels * F1``, about ``n_channels / D`` times fewer
    multiply-adds, in training and in prediction alike.

    Parameters
    ----------
    model : EEGNet or MVCNet
        Has ``front`` (see :func:`_front`), ``temporal`` (Conv2d 1 -> F1, kernel
        (1, K), no bias) and ``spatial``
        (Conv2d F1 -> F1 * D, kernel (n_channels, 1), groups=F1, no bias); their
        weights are used, not their forward.
    x : Tensor, shape (n_trials, n_channels, n_times)
        Scaled input.

    Returns
    -------
    Tensor, shape (n_trials, F1 * D, 1, n_times)
        Output ``o`` is spatial filter ``o``, then the front band-pass if any
        (valid part: ``n_times`` shrinks by its length - 1), then temporal kernel
        ``o // D`` (zero padding keeps the length, as ``padding="same"``).
    """
    temporal, spatial = model.temporal, model.spatial
    n_out = spatial.out_channels
    repeat = n_out // temporal.out_channels  # D: spatial filters per temporal filter
    kernels = temporal.weight.view(temporal.out_channels, 1, -1).repeat_interleave(repeat, 0)
    z = _front(model, torch.matmul(spatial.weight.view(n_out, -1), x))  # (n, F1 * D, T')
    z = F.pad(z, _same_padding(kernels.shape[-1]))
    return F.conv1d(z, kernels, groups=n_out).unsqueeze(2)


def front_length(sfreq: float) -> int:
    """Taps of the front band-pass filter: about 0.5 s, odd (a whole-sample delay)."""
    return 2 * round(0.25 * sfreq) + 1


def _front(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The model's fixed front band-pass (``model.front``), valid part only.

    Parameters
    ----------
    z : Tensor, shape (n_trials, n_signals, n_times)

    Returns
    -------
    Tensor, shape (n_trials, n_signals, n_times - front_length + 1)
        ``z`` itself when the model has no front filter.
    """
    if model.front is None:
        return z
    return F.conv1d(z, model.front.expand(z.shape[1], 1, -1), groups=z.shape[1])


def _register_front(model: nn.Module, sfreq: float | None,
                    band: tuple[float, float] | None, n_times: int) -> int:
    """Register the ``front`` buffer (or None); return the samples left after it."""
    if band is None:
        model.register_buffer("front", None)
        return n_times
    if sfreq is None:
        raise ValueError("a front band needs sfreq")
    length = front_length(sfreq)
    model.register_buffer("front", torch.empty(1, 1, length))
    return n_times - length + 1


def _front_buffer(model: nn.Module) -> dict[str, torch.Tensor]:
    if model.front is None:
        return {}
    kernel = filter_bank_kernels([tuple(model.band)], model.sfreq, model.front.shape[-1])
    return {"front": torch.from_numpy(kernel).view(1, 1, -1)}


class EEGNet(nn.Module):
    """EEGNet-style compact CNN (Lawhern et al. 2018, EEGNet-8,2).

    temporal conv (``F1`` filters of ``kernel_length`` samples) -> depthwise
    spatial conv over all channels (``D`` per temporal filter, max-norm 1) -> BN ->
    ELU -> average pooling (``pool1``) -> dropout -> separable conv
    (depthwise ``sep_length`` samples, then pointwise to ``F2``) -> BN -> ELU ->
    average pooling (``pool2``) -> dropout -> flatten (the embedding) -> linear.

    Unlike the paper's network there is no BatchNorm between the temporal and the
    spatial convolution (the one after the spatial convolution re-normalizes
    anyway), so the two linear maps run spatial filters first, many times cheaper
    (:func:`_temporal_spatial`).

    Parameters
    ----------
    n_channels, n_times : int
        Epoch shape.
    n_outputs : int
        Logits: 1 for two classes (sigmoid), else the number of classes.
    F1, D, F2 : int
        Temporal filters, spatial filters per temporal filter, separable filters.
    kernel_length, sep_length : int
        Lengths (samples) of the temporal and the separable convolutions.
    pool1, pool2 : int
        Average-pooling factors along time.
    dropout : float
        Dropout probability.
    sfreq : float, optional
        Sampling rate (Hz); needed by ``band``.
    band : (low, high), optional
        A fixed FIR band-pass (Hz, :func:`front_length` taps, needs ``sfreq``)
        applied after the spatial filters, before the temporal convolution; only
        its valid part is kept, so ``n_times - front_length + 1`` samples go on.
        With few calibration trials it keeps the network off the strong slow
        components (eye movements) that it would otherwise fit.
    input_scale : float
        Inputs are multiplied by it first (the calibration data's inverse scale,
        e.g. 1 / 40 µV for EEG in volts); a buffer, so it is saved with the weights.
    """

    def __init__(self, n_channels: int, n_times: int, n_outputs: int, *, F1: int = 8,
                 D: int = 2, F2: int = 16, kernel_length: int = 64, sep_length: int = 16,
                 pool1: int = 4, pool2: int = 8, dropout: float = 0.25,
                 sfreq: float | None = None, band: tuple[float, float] | None = None,
                 input_scale: float = 1.0) -> None:
        super().__init__()
        self._input_scale = float(input_scale)
        self.sfreq, self.band = sfreq, band
        self.register_buffer("input_scale", torch.tensor(self._input_scale))
        n_times = _register_front(self, sfreq, band, n_times)
        # weights only: _temporal_spatial applies them, spatial filters first
        self.temporal = nn.Conv2d(1, F1, (1, kernel_length), bias=False)
        self.spatial = nn.Conv2d(F1, F1 * D, (n_channels, 1), groups=F1, bias=False)
        self.bn2 = nn.BatchNorm2d(F1 * D)
        self.pool1 = nn.AvgPool2d((1, pool1))
        self.drop1 = Dropout(dropout)
        self.sep_pad = _same_padding(sep_length)
        self.sep_depth = nn.Conv2d(F1 * D, F1 * D, (1, sep_length), groups=F1 * D, bias=False)
        self.sep_point = nn.Conv2d(F1 * D, F2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(F2)
        self.pool2 = nn.AvgPool2d((1, pool2))
        self.drop2 = Dropout(dropout)
        self.n_features = F2 * ((n_times // pool1) // pool2)
        self.classifier = nn.Linear(self.n_features, n_outputs)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding.

        Parameters
        ----------
        x : Tensor, shape (n_trials, n_channels, n_times)

        Returns
        -------
        Tensor, shape (n_trials, n_features)
        """
        h = _temporal_spatial(self, x * self.input_scale)
        h = self.drop1(self.pool1(F.elu(self.bn2(h))))
        h = self.bn3(self.sep_point(self.sep_depth(F.pad(h, self.sep_pad))))
        h = self.drop2(self.pool2(F.elu(h)))
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (n_trials, n_outputs), of epochs (n_trials, n_channels, n_times)."""
        return self.classifier(self.embed(x))

    def constant_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers that are not learned, computed from the constructor's arguments."""
        return {"input_scale": torch.tensor(self._input_scale), **_front_buffer(self)}

    def constrain(self) -> None:
        """Apply EEGNet's max-norm constraints (after each optimizer step)."""
        _renorm_(self.spatial.weight, 1.0)
        _renorm_(self.classifier.weight, 0.25)


def filter_bank_kernels(bands: list[tuple[float, float]], sfreq: float,
                        length: int) -> np.ndarray:
    """Linear-phase FIR band-pass kernels (Hamming window), one per band.

    Parameters
    ----------
    bands : list of (low, high)
        Pass bands in Hz, ``0 < low < high < sfreq / 2``.
    sfreq : float
        Sampling rate in Hz.
    length : int
        Taps per kernel (odd, so the delay is a whole number of samples).

    Returns
    -------
    ndarray of float32, shape (n_bands, length)
    """
    from scipy.signal import firwin

    return np.stack([firwin(length, [lo, hi], pass_zero=False, fs=sfreq)
                     for lo, hi in bands]).astype(np.float32)


class _EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer with generator-driven dropout."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop1 = Dropout(dropout)
        self.drop2 = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (self.qkv(self.norm1(x)).view(n, t, 3, self.n_heads, d // self.n_heads)
                   .permute(2, 0, 3, 1, 4))
        a = F.scaled_dot_product_attention(q, k, v)  # no dropout inside: it would be global
        x = x + self.drop1(self.proj(a.transpose(1, 2).reshape(n, t, d)))
        return x + self.drop2(self.ff2(F.gelu(self.ff1(self.norm2(x)))))


class MVCNet(nn.Module):
    """Multi-view CNN + Transformer, small, in the spirit of MVCNet (2025).

    Three views of an epoch become tokens of width ``d_model`` that a small
    Transformer encoder fuses through a class token:

    * **time**: learned spatial filters, the front band-pass if any, temporal
      kernels (EEGNet's first block, :func:`_temporal_spatial`), BN, ELU and
      average pooling; one token per pooled step (``n_times' // (pool1 * pool2)``);
    * **spectral**: ``n_spatial`` learned spatial filters, then a fixed FIR filter
      bank (``bands``), then log-variance over time; one token per band;
    * **spatial covariance**: ``n_spatial`` other learned spatial filters, the
      front band-pass if any, and their covariance as log-variances (diagonal)
      and correlations (off-diagonal); one token per spatial filter (its row).

    The embedding is the layer-normed class token, ``d_model`` wide. Spatial
    filters come first in every view: they reduce ``n_channels`` signals to a
    few before any filtering in time.

    Parameters
    ----------
    n_channels, n_times : int
        Epoch shape.
    n_outputs : int
        Logits: 1 for two classes (sigmoid), else the number of classes.
    sfreq : float
        Sampling rate (Hz) the filters are designed for.
    bands : sequence of (low, high)
        Filter-bank pass bands in Hz.
    band : (low, high), optional
        Front band-pass of the time and covariance views (see :class:`EEGNet`).
    F1, D, kernel_length, pool1, pool2 : int
        Time view, as in :class:`EEGNet`.
    n_spatial : int
        Spatial filters of the spectral and of the covariance view.
    fir_length : int, optional
        Taps of the filter-bank kernels (odd); :func:`front_length` by default.
    d_model, n_heads, d_ff, n_layers : int
        Transformer width, heads, feed-forward width, layers.
    dropout : float
        Dropout probability.
    input_scale : float
        Inputs are multiplied by it first; a saved buffer.
    """

    def __init__(self, n_channels: int, n_times: int, n_outputs: int, *, sfreq: float = 160.0,
                 bands: Sequence[tuple[float, float]] = ((4, 8), (8, 13), (13, 20), (20, 30),
                                                         (30, 40)),
                 band: tuple[float, float] | None = None, F1: int = 8, D: int = 2,
                 kernel_length: int = 32, pool1: int = 8, pool2: int = 4, n_spatial: int = 8,
                 fir_length: int | None = None, d_model: int = 32, n_heads: int = 4,
                 d_ff: int = 64, n_layers: int = 1, dropout: float = 0.25,
                 input_scale: float = 1.0) -> None:
        super().__init__()
        self._input_scale = float(input_scale)
        self.sfreq, self.band = float(sfreq), band
        self.bands = [tuple(float(f) for f in b) for b in bands]
        self.register_buffer("input_scale", torch.tensor(self._input_scale))
        n_front = _register_front(self, sfreq, band, n_times)
        # time view
        self.temporal = nn.Conv2d(1, F1, (1, kernel_length), bias=False)  # weights only
        self.spatial = nn.Conv2d(F1, F1 * D, (n_channels, 1), groups=F1, bias=False)
        self.bn2 = nn.BatchNorm2d(F1 * D)
        self.pool = nn.AvgPool2d((1, pool1 * pool2))
        self.time_tokens = nn.Linear(F1 * D, d_model)
        self.n_time_tokens = n_front // (pool1 * pool2)
        # spectral view
        self.n_bands, self.n_spatial = len(self.bands), n_spatial
        fir_length = front_length(sfreq) if fir_length is None else fir_length
        self.spec_spatial = nn.Linear(n_channels, n_spatial, bias=False)
        self.register_buffer("fir", torch.empty(self.n_bands, 1, fir_length))
        self.spec_tokens = nn.Linear(n_spatial, d_model)
        # covariance view
        self.cov_spatial = nn.Linear(n_channels, n_spatial, bias=False)
        self.cov_tokens = nn.Linear(n_spatial, d_model)
        # fusion
        n_tokens = 1 + self.n_time_tokens + self.n_bands + n_spatial
        self.cls = nn.Parameter(torch.empty(1, 1, d_model))
        self.pos = nn.Parameter(torch.empty(1, n_tokens, d_model))
        self.token_drop = Dropout(dropout)
        self.layers = nn.ModuleList(_EncoderLayer(d_model, n_heads, d_ff, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.n_features = d_model
        self.classifier = nn.Linear(d_model, n_outputs)

    def _time_view(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.elu(self.bn2(_temporal_spatial(self, x))))  # (n, F1*D, 1, tokens)
        return self.time_tokens(h.squeeze(2).transpose(1, 2))

    def _spectral_view(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.matmul(self.spec_spatial.weight, x)  # (n, n_spatial, n_times)
        # every spatial signal through every band: (n * n_spatial, n_bands, n_times'),
        # the valid part only (no edge effects)
        z = F.conv1d(z.reshape(-1, 1, z.shape[-1]), self.fir)
        logvar = torch.log(z.var(dim=2) + 1e-6).view(-1, self.n_spatial, self.n_bands)
        return self.spec_tokens(logvar.transpose(1, 2))  # (n, n_bands, d_model)

    def _covariance_view(self, x: torch.Tensor) -> torch.Tensor:
        z = _front(self, torch.matmul(self.cov_spatial.weight, x))  # (n, n_spatial, T')
        z = z - z.mean(dim=2, keepdim=True)
        cov = z @ z.transpose(1, 2) / z.shape[2]
        var = torch.diagonal(cov, dim1=1, dim2=2) + 1e-6
        corr = cov / torch.sqrt(var.unsqueeze(2) * var.unsqueeze(1))
        rows = (corr - torch.diag_embed(torch.diagonal(corr, dim1=1, dim2=2))
                + torch.diag_embed(torch.log(var)))
        return self.cov_tokens(rows)  # (n, n_spatial, d_model)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (the class token after the encoder).

        Parameters
        ----------
        x : Tensor, shape (n_trials, n_channels, n_times)

        Returns
        -------
        Tensor, shape (n_trials, d_model)
        """
        x = x * self.input_scale
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), self._time_view(x),
                            self._spectral_view(x), self._covariance_view(x)], dim=1)
        h = self.token_drop(tokens + self.pos)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (n_trials, n_outputs), of epochs (n_trials, n_channels, n_times)."""
        return self.classifier(self.embed(x))

    def constant_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers that are not learned: ``input_scale``, the filter bank ``fir`` and
        the front band-pass ``front`` if any.

        ``fir`` has shape (n_bands, 1, fir_length).
        """
        kernels = torch.from_numpy(filter_bank_kernels(self.bands, self.sfreq,
                                                       self.fir.shape[-1]))
        return {"input_scale": torch.tensor(self._input_scale), "fir": kernels.unsqueeze(1),
                **_front_buffer(self)}

    def constrain(self) -> None:
        """Max-norm on the depthwise spatial filters of the time view."""
        _renorm_(self.spatial.weight, 1.0)


def build_on_meta(cls: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    """Construct ``cls`` without touching torch's global generator.

    The module is built on the ``meta`` device (its default initialisation draws
    nothing), then given uninitialised CPU storage: call :func:`init_parameters`
    or ``load_state_dict`` next.
    """
    with torch.device("meta"):
        module = cls(*args, **kwargs)
    return module.to_empty(device="cpu")


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter and buffer of ``module`` from ``generator``.

    Same schemes as torch's defaults (Kaiming-uniform weights and fan-in uniform
    biases for conv and linear layers, ones/zeros for norms), but reproducible.

    Parameters
    ----------
    module : nn.Module
        Built by :func:`build_on_meta`.
    generator : torch.Generator
        Seeded by the caller.

    Raises
    ------
    RuntimeError
        A parameter or buffer no rule covers (a new layer type was added here
        without an initialisation rule).
    """
    done: set[str] = set()
    with torch.no_grad():
        for prefix, sub in module.named_modules():
            dot = f"{prefix}." if prefix else ""
            if isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
                done.add(f"{dot}weight")
                if sub.bias is not None:
                    fan_in = sub.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    sub.bias.uniform_(-bound, bound, generator=generator)
                    done.add(f"{dot}bias")
            elif isinstance(sub, (nn.BatchNorm2d, nn.LayerNorm)):
                sub.weight.fill_(1.0)
                sub.bias.fill_(0.0)
                done.update({f"{dot}weight", f"{dot}bias"})
                if isinstance(sub, nn.BatchNorm2d):
                    sub.reset_running_stats()
                    done.update({f"{dot}running_mean", f"{dot}running_var",
                                 f"{dot}num_batches_tracked"})
        for name in ("cls", "pos"):
            param = getattr(module, name, None)
            if isinstance(param, nn.Parameter):
                param.normal_(0.0, 0.02, generator=generator)
                done.add(name)
        for name, value in module.constant_buffers().items():
            getattr(module, name).copy_(value)
            done.add(name)
    missing = [n for n, _ in (*module.named_parameters(), *module.named_buffers())
               if n not in done]
    if missing:
        raise RuntimeError(f"init_parameters: no rule initialises {missing}")
