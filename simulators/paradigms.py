"""The simulator's paradigms, and one way to build any of them with its drift and user.

Both the in-process source nodes and ``bci simulate`` (LSL mode) go through
:func:`make_generator`, so a seed gives the same data in either.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bci_runtime.errors import ConfigError
from bci_runtime.simulators.base import Generator
from bci_runtime.simulators.drift import PRESETS, Drift, DriftComponent, preset
from bci_runtime.simulators.user import UserParams

# paradigm name -> (module, generator class, parameter model)
PARADIGMS: dict[str, tuple[str, str, str]] = {
    "mi": ("motor_imagery", "MotorImageryEeg", "MotorImageryParams"),
    "ssvep": ("ssvep", "SsvepEeg", "SsvepParams"),
    "ecog": ("ecog", "EcogGenerator", "EcogParams"),
    "population": ("population", "PopulationGenerator", "PopulationParams"),
}


class DriftParams(BaseModel):
    """Which drift: a named preset plus any explicit components."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str = Field("stationary", description=f"preset: {', '.join(PRESETS)}")
    onset_s: float = Field(30.0, ge=0, description="when the preset's drift starts (s)")
    ramp_s: float = Field(60.0, ge=0, description="how long the preset's drift ramps (s)")
    day_s: float = Field(120.0, gt=0, description="length of a simulated day (day-to-day)")
    days: int = Field(4, ge=1, le=100, description="simulated days (day-to-day)")
    rho: float = Field(0.91, ge=0, le=1, description="PD correlation across a day")
    shift_mm: float | None = Field(None, gt=0, le=50, description="electrode displacement "
                                   "(default: the paradigm's, 20 mm for a cap, 2 mm for a grid)")
    components: list[DriftComponent] = Field(default_factory=list,
                                             description="extra drift components")

    @field_validator("scenario")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(PRESETS)}")
        return name

    def build(self, seed: int, default_shift_mm: float = 20.0) -> list[DriftComponent]:
        """The components of the preset (seeded by ``seed``) followed by the explicit ones."""
        shift = self.shift_mm if self.shift_mm is not None else default_shift_mm
        return preset(self.scenario, self.onset_s, self.ramp_s, self.day_s, self.days, self.rho,
                      seed, shift) + list(self.components)


def paradigm_classes(paradigm: str) -> tuple[type[Generator], type[BaseModel]]:
    """Generator class and parameter model of a paradigm.

    Raises
    ------
    ConfigError
        For an unknown paradigm (the message lists the valid ones).
    """
    if paradigm not in PARADIGMS:
        raise ConfigError(f"unknown paradigm {paradigm!r}",
                          hint=f"use one of: {', '.join(PARADIGMS)}")
    module, gen, params = PARADIGMS[paradigm]
    mod = importlib.import_module(f"bci_runtime.simulators.{module}")
    return getattr(mod, gen), getattr(mod, params)


def make_generator(paradigm: str, params: dict[str, Any] | BaseModel | None = None, *,
                   seed: int = 0, drift: DriftParams | dict[str, Any] | None = None,
                   user: UserParams | dict[str, Any] | None = None) -> Generator:
    """Build a generator with its drift and simulated user.

    Parameters
    ----------
    paradigm : {"mi", "ssvep", "ecog", "population"}
    params : dict or the paradigm's parameter model
        Paradigm parameters (channels, rate, classes...).
    seed : int
        Seed of everything random; the drift's components derive theirs from it.
    drift : DriftParams or dict, optional
    user : UserParams or dict, optional

    Raises
    ------
    ConfigError
        For an unknown paradigm or scenario, or invalid parameters; the message
        names the field and the valid values.
    """
    gen_cls, params_cls = paradigm_classes(paradigm)
    try:
        p = params if isinstance(params, params_cls) else params_cls.model_validate(
            dict(params or {}) if not isinstance(params, BaseModel) else params.model_dump())
        d = drift if isinstance(drift, DriftParams) else DriftParams.model_validate(drift or {})
        u = user if isinstance(user, UserParams) else UserParams.model_validate(user or {})
    except ValidationError as exc:
        raise ConfigError(f"invalid {paradigm} simulator parameters: {_first_error(exc)}",
                          hint="see `bci simulate --help` or `bci nodes` for valid values") from exc
    components = d.build(seed, gen_cls.default_shift_mm)
    bound = Drift(components, gen_cls.n_channels_for(p), gen_cls.n_units_for(p))
    return gen_cls(p, seed=seed, drift=bound, user=u)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "parameters"
    return f"{where}: {err['msg']}"
