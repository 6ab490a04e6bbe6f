"""The generator ``bci simulate`` streams, built from command-line options.

Errors name the option, the valid values or range, and what was given.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from bci_runtime.errors import ConfigError
from bci_runtime.simulators.base import Generator
from bci_runtime.simulators.drift import PRESETS
from bci_runtime.simulators.paradigms import PARADIGMS, DriftParams, make_generator


def default_source_id(paradigm: str, seed: int) -> str:
    """The stable default ``source_id`` of a simulated stream, e.g. ``bci-sim-mi-seed0``."""
    return f"bci-sim-{paradigm}-seed{seed}"


def _field_bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """Inclusive-or-exclusive bounds of a numeric field, from its pydantic metadata."""
    lo = hi = None
    info = model.model_fields.get(name)
    for m in getattr(info, "metadata", ()):
        for attr in ("ge", "gt"):
            if getattr(m, attr, None) is not None:
                lo = getattr(m, attr)
        for attr in ("le", "lt"):
            if getattr(m, attr, None) is not None:
                hi = getattr(m, attr)
    return lo, hi


def _paradigm_model(paradigm: str) -> type[BaseModel]:
    """The paradigm's parameter model; ConfigError listing the valid (and installed) ones."""
    from bci_runtime.simulators.paradigms import paradigm_classes

    if paradigm not in PARADIGMS:
        raise ConfigError(f"unknown paradigm {paradigm!r}; valid paradigms: "
                          f"{', '.join(PARADIGMS)}", hint="e.g. --paradigm mi")
    try:
        return paradigm_classes(paradigm)[1]
    except ImportError as exc:
        raise ConfigError(f"paradigm {paradigm!r} is not available in this installation ({exc})",
                          hint=f"installed paradigms: {', '.join(available_paradigms())}") from None


def available_paradigms() -> list[str]:
    """Paradigms whose generator module can be imported."""
    import importlib.util

    return [p for p, (mod, _, _) in PARADIGMS.items()
            if importlib.util.find_spec(f"bci_runtime.simulators.{mod}") is not None]


def _check_range(option: str, value: float, lo: float | None, hi: float | None,
                 what: str) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "" if lo is None else f"{lo:g}"
        hi_s = "" if hi is None else f"{hi:g}"
        raise ConfigError(f"{option} must be within [{lo_s}, {hi_s}]{what}, got {value:g}",
                          hint=f"valid {option}: {lo_s} to {hi_s}")


def build_generator(paradigm: str, *, scenario: str = "stationary", channels: int | None = None,
                    srate: float | None = None, seed: int = 0, rho: float | None = None,
                    onset_s: float | None = None, ramp_s: float | None = None,
                    params: dict[str, Any] | None = None,
                    user: dict[str, Any] | None = None) -> Generator:
    """The generator ``bci simulate`` streams, with command-line-grade error messages.

    Parameters
    ----------
    paradigm : str
        One of ``mi``, ``ssvep``, ``ecog``, ``population``.
    scenario : str
        Drift preset (:data:`~bci_runtime.simulators.drift.PRESETS`).
    channels, srate : optional
        Override the paradigm's ``n_channels`` and ``srate``.
    seed : int
    rho, onset_s, ramp_s : float, optional
        Drift preset parameters.
    params, user : dict, optional
        Further paradigm and simulated-user parameters.

    Raises
    ------
    ConfigError
        Naming the option, the valid values or range, and what was given.
    """
    model = _paradigm_model(paradigm)
    if scenario not in PRESETS:
        raise ConfigError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(PRESETS)}",
                          hint="e.g. --scenario day-to-day")
    p = dict(params or {})
    for option, key, value in (("--channels", "n_channels", channels), ("--srate", "srate", srate)):
        if value is None:
            continue
        if key not in model.model_fields:
            raise ConfigError(f"{option} does not apply to paradigm {paradigm!r} "
                              f"(its parameters: {', '.join(model.model_fields)})",
                              hint=f"leave {option} out for {paradigm}")
        if not math.isfinite(value) or (key == "srate" and value <= 0):
            raise ConfigError(f"{option} must be a finite number above 0, got {value:g}",
                              hint=f"e.g. {option} 1000")
        lo, hi = _field_bounds(model, key)
        _check_range(option, value, lo, hi, f" for paradigm {paradigm}")
        p[key] = value
    drift: dict[str, Any] = {"scenario": scenario}
    for option, key, value, lo, hi in (("--rho", "rho", rho, 0.0, 1.0),
                                        ("--onset", "onset_s", onset_s, 0.0, None),
                                        ("--ramp", "ramp_s", ramp_s, 0.0, None)):
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{option} must be a finite number, got {value}",
                              hint=f"valid {option}: {lo:g} to {'' if hi is None else hi}")
        _check_range(option, value, lo, hi, "")
        drift[key] = value
    return make_generator(paradigm, p, seed=seed, drift=DriftParams.model_validate(drift),
                          user=user)
