"""Common spatial patterns (MNE) with an adaptive shrinkage-LDA head.

* :class:`CSPLDA`: band-pass each epoch (8-30 Hz by default), MNE's
  :class:`mne.decoding.CSP` log-variance features, :class:`AdaptiveLDA` head.
* :class:`FilterBankCSP`: the same on several bands (Ang et al. 2008), the
  features of all bands concatenated, optionally the ``n_select`` most
  informative kept by mutual information, then the shrinkage LDA.

The head's :meth:`~bci_runtime.decoders.lda.AdaptiveLDA.partial_fit` is what
:meth:`EpochClassifier.partial_fit` updates online; the spatial filters stay
as calibrated (a drift of the mixing is the job of a ``signal`` strategy).
"""

from __future__ import annotations

from typing import Any, Sequence

import mne
import numpy as np
from mne.decoding import CSP
from sklearn.feature_selection import mutual_info_classif

from bci_runtime.decoders.base import EpochClassifier
from bci_runtime.decoders.lda import AdaptiveLDA, UnfittedError, atomic
from bci_runtime.decoders.riemann import (
    Phase,
    _check_filter,
    _sos,
    band_pass_epochs,
    check_bands,
    check_class_targets,
    check_not_flat,
)
from bci_runtime.errors import DecoderError

__all__ = ["CSPLDA", "FilterBankCSP"]

#: Ang et al.'s 4-Hz bank, cut at 32 Hz (the recordings are low-passed at 40 Hz)
DEFAULT_BANK: tuple[tuple[float, float], ...] = (
    (8.0, 12.0), (12.0, 16.0), (16.0, 20.0), (20.0, 24.0), (24.0, 28.0), (28.0, 32.0))


class _CSPBank(EpochClassifier):
    """CSP per band, log-variance features, concatenated; shared by both decoders."""

    sfreq: float
    n_components: int
    reg: Any
    shrinkage: Any
    half_life: float
    filter_order: int
    phase: Phase

    def _bands(self) -> list[tuple[float, float]]:
        raise NotImplementedError

    def _check(self, y: np.ndarray) -> list[tuple[float, float]]:
        who = type(self).__name__
        check_class_targets(y, who)
        bands = check_bands(self._bands(), self.sfreq, who)
        if not (isinstance(self.n_components, (int, np.integer)) and self.n_components >= 1):
            raise DecoderError(f"{who}: n_components must be a positive integer, got "
                               f"{self.n_components!r}")
        _check_filter(self.filter_order, self.phase, who)
        return bands

    def _fit_bank(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        bands = self._check(y)
        check_not_flat(X, type(self).__name__)
        if self.n_components > X.shape[1]:
            raise DecoderError(f"{type(self).__name__}: n_components={self.n_components} "
                               f"> {X.shape[1]} channels")
        self.sos_ = [_sos(self.sfreq, b, self.filter_order) for b in bands]
        self.csp_ = []
        feats = []
        for sos in self.sos_:
            Xb = band_pass_epochs(X, sos, self.phase)
            # MNE logs at INFO level on every fit; the runtime logs what matters itself
            csp = CSP(n_components=self.n_components, reg=self.reg, log=True,
                      norm_trace=False)
            with mne.utils.use_log_level("WARNING"):
                feats.append(csp.fit_transform(Xb, y))
            self.csp_.append(csp)
        return np.hstack(feats)

    def _bank(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([csp.transform(band_pass_epochs(X, sos, self.phase))
                          for sos, csp in zip(self.sos_, self.csp_)])

    def _make_head(self) -> Any:
        return AdaptiveLDA(shrinkage=self.shrinkage, half_life=self.half_life)

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "head_"):
            raise UnfittedError(f"{type(self).__name__}: {what} before fit",
                                hint="fit it on calibration trials first")

    @atomic
    def fit(self, X: Any, y: Any) -> _CSPBank:
        """Fit the CSP bank, then the LDA head; a failed fit changes nothing.

        Parameters
        ----------
        X : array-like, shape (n_trials, n_channels, n_times)
        y : array-like, shape (n_trials,)
        """
        return super().fit(X, y)


class CSPLDA(_CSPBank):
    """Band-pass, CSP log-variance features (MNE), adaptive shrinkage LDA.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the epochs in Hz.
    l_freq, h_freq : float
        Pass band in Hz (mu and beta rhythms by default).
    n_components : int
        CSP components (MNE orders them by mutual information with the classes).
    reg : str or float, optional
        Covariance regularization of the CSP (MNE's ``reg``; e.g. ``"ledoit_wolf"``).
    shrinkage : "auto", float or None
        LDA shrinkage (:class:`AdaptiveLDA`).
    half_life : float
        Trials after which a trial's weight in the LDA head halves when
        updated by :meth:`partial_fit`.
    filter_order : int
        Butterworth order.
    phase : {"zero", "causal"}
        Filtering inside each epoch.

    Attributes
    ----------
    csp_ : list of mne.decoding.CSP
        One fitted CSP (a single band).
    head_ : AdaptiveLDA
    """

    def __init__(self, sfreq: float = 160.0, l_freq: float = 8.0, h_freq: float = 30.0,
                 n_components: int = 4, reg: Any = None, shrinkage: Any = "auto",
                 half_life: float = 50.0, filter_order: int = 4, phase: Phase = "zero") -> None:
        self.sfreq = sfreq
        self.l_freq = l_freq
        self.h_freq = h_freq
        self.n_components = n_components
        self.reg = reg
        self.shrinkage = shrinkage
        self.half_life = half_life
        self.filter_order = filter_order
        self.phase = phase

    def _bands(self) -> list[tuple[float, float]]:
        return [(self.l_freq, self.h_freq)]

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._fit_bank(X, y)

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self._bank(X)


class FilterBankCSP(_CSPBank):
    """Filter-bank CSP: CSP per band, features concatenated (and selected), shrinkage LDA.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the epochs in Hz.
    bands : sequence of (low, high)
        Pass bands in Hz; default: 4-Hz bands from 8 to 32 Hz.
    n_components : int
        CSP components per band.
    n_select : int, optional
        Keep the features with the highest mutual information with the class
        (estimated on the calibration trials, seeded); None keeps all and lets
        the LDA shrinkage regularize.
    reg, shrinkage, half_life, filter_order, phase
        As :class:`CSPLDA`.

    Attributes
    ----------
    csp_ : list of mne.decoding.CSP
        One per band.
    selected_ : ndarray of int, shape (n_kept,)
        Indices of the kept features among the concatenated ones.
    """

    def __init__(self, sfreq: float = 160.0,
                 bands: Sequence[tuple[float, float]] = DEFAULT_BANK, n_components: int = 4,
                 n_select: int | None = None, reg: Any = 0.1, shrinkage: Any = "auto",
                 half_life: float = 50.0, filter_order: int = 4, phase: Phase = "zero") -> None:
        self.sfreq = sfreq
        self.bands = bands
        self.n_components = n_components
        self.n_select = n_select
        self.reg = reg
        self.shrinkage = shrinkage
        self.half_life = half_life
        self.filter_order = filter_order
        self.phase = phase

    def _bands(self) -> list[tuple[float, float]]:
        return list(self.bands)

    def _fit_features(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        feats = self._fit_bank(X, y)
        n_all = feats.shape[1]
        if self.n_select is None:
            self.selected_ = np.arange(n_all)
        else:
            if not (isinstance(self.n_select, (int, np.integer)) and 1 <= self.n_select <= n_all):
                raise DecoderError(f"{type(self).__name__}: n_select must be in [1, {n_all}] "
                                   f"(bands x n_components), got {self.n_select!r}")
            mi = mutual_info_classif(feats, y, random_state=0)
            # stable order: ties keep the band order
            self.selected_ = np.sort(np.argsort(-mi, kind="stable")[: self.n_select])
        return feats[:, self.selected_]

    def _features(self, X: np.ndarray) -> np.ndarray:
        return self._bank(X)[:, self.selected_]
