"""The decoders a user can pick by name (``bci evaluate --decoder``, pipelines).

Each entry names a class and says which paradigm it serves; :meth:`Entry.make`
builds it with what the recording tells (rate, classes, stimulation
frequencies, seed), passing only the parameters the class takes. Modules are
imported when a decoder is made, so listing the catalog never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from bci_runtime.errors import ConfigError

PARADIGMS = ("mi", "ssvep", "continuous")


@dataclass(frozen=True)
class DecoderContext:
    """What a decoder may need to know about the data it will see.

    Attributes
    ----------
    sfreq : float
    classes : list of str
    freqs : list of float
        SSVEP stimulation frequencies, one per flickering class (in the order
        their classes appear in ``--events``); empty otherwise.
    seed : int
    n_channels : int
    """

    sfreq: float
    classes: list[str]
    freqs: list[float] = field(default_factory=list)
    seed: int = 0
    n_channels: int = 0


@dataclass(frozen=True)
class Entry:
    """One decoder of the catalog."""

    name: str
    paradigm: str
    target: str  # "module:Class" under bci_runtime.decoders
    about: str
    params: dict[str, Any] = field(default_factory=dict)

    def make(self, context: DecoderContext) -> Any:
        """A new, unfitted decoder for data described by ``context``."""
        module, _, cls_name = self.target.partition(":")
        cls = getattr(importlib.import_module(f"bci_runtime.decoders.{module}"), cls_name)
        freqs = context.freqs
        if not freqs and self.paradigm == "ssvep" and context.classes:
            # the classes name their flicker ("10Hz"): what a pipeline node knows
            from bci_runtime.decoders.ssvep import stimulus_frequencies

            freqs = [f for f in stimulus_frequencies(context.classes).values() if f]
        accepted = inspect.signature(cls).parameters
        offered = {"sfreq": context.sfreq, "freqs": freqs or None,
                   "random_state": context.seed}
        kwargs = {k: v for k, v in offered.items() if k in accepted and v is not None}
        return cls(**{**kwargs, **self.params})


_ENTRIES = (
    Entry("csp-lda", "mi", "csp:CSPLDA", "CSP log-variance + adaptive shrinkage LDA (MNE)"),
    Entry("fbcsp", "mi", "csp:FilterBankCSP", "filter-bank CSP + shrinkage LDA"),
    Entry("ts-lr", "mi", "riemann:TangentSpaceLR",
          "covariances -> tangent space -> logistic regression (pyRiemann)"),
    Entry("ts-lda", "mi", "riemann:TangentSpaceLR",
          "covariances -> tangent space -> adaptive LDA (partial_fit by Sherman-Morrison)",
          {"head": "lda"}),
    Entry("mdm", "mi", "riemann:MDM", "minimum distance to Riemannian mean (pyRiemann)"),
    # 30 trials do not teach a CNN to ignore 1-4 Hz: both see the mu/beta band
    Entry("eegnet", "mi", "torch_decoders:EEGNetClassifier", "compact EEGNet CNN (torch)",
          {"band": (8.0, 30.0), "kernel_length": 32, "n_epochs": 60, "lr": 3e-3}),
    Entry("mvcnet", "mi", "torch_decoders:MVCNetClassifier",
          "multi-view CNN + Transformer (torch)", {"band": (8.0, 30.0)}),
    Entry("cca", "ssvep", "ssvep:CCA", "canonical correlation with reference sinusoids"),
    Entry("fbcca", "ssvep", "ssvep:FilterBankCCA", "filter-bank CCA (training-free)"),
    Entry("blockcov-ts", "ssvep", "ssvep:BlockCovTS",
          "block covariances around each frequency -> tangent space -> logistic regression"),
    Entry("ssvep-ensemble", "ssvep", "ssvep:SSVEPEnsemble",
          "FBCCA scores and block covariances, two logistic heads averaged"),
    Entry("ridge", "continuous", "continuous:RidgeDecoder",
          "ridge regression on band-power features, online sufficient statistics"),
    Entry("kalman", "continuous", "continuous:KalmanDecoder",
          "Kalman-filter velocity decoder (steady-state gain option)"),
)
_DEFAULTS = {"mi": "ts-lr", "ssvep": "ssvep-ensemble", "continuous": "kalman"}


def entries() -> list[Entry]:
    """Every decoder of the catalog."""
    return list(_ENTRIES)


def default_decoder(paradigm: str) -> str:
    """The decoder used when none is named."""
    return _DEFAULTS[paradigm]


def get(name: str, paradigm: str | None = None) -> Entry:
    """The entry called ``name``; :class:`ConfigError` listing the names otherwise."""
    for entry in _ENTRIES:
        if entry.name == name:
            if paradigm is not None and entry.paradigm != paradigm:
                raise ConfigError(f"decoder '{name}' is for --paradigm {entry.paradigm}, "
                                  f"not {paradigm}",
                                  hint=f"choose one of {', '.join(_names(paradigm))}")
            return entry
    raise ConfigError(f"unknown decoder '{name}'",
                      hint=f"choose one of {', '.join(_names(paradigm))}")


def _names(paradigm: str | None) -> list[str]:
    return [e.name for e in _ENTRIES if paradigm is None or e.paradigm == paradigm]
