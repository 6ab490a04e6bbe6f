"""Declared stimulation limits: what a stimulator may ever be asked to deliver.

The limits are validated when they load, before anything can stimulate: a
value above the hard maxima below, or a combination that would let a pulse
within the limits exceed the charge a contact can take, is refused with the
field named (:class:`~bci_runtime.errors.ConfigError`, exit code 2).

Charge per phase ``Q = I * PW`` (µC from mA and µs: ``I * PW / 1000``) and
charge density ``D = Q / A`` (µC/cm²) are bounded two ways for each contact:

* **Shannon's criterion** (Shannon 1992): ``log10(D) + log10(Q) <= k``, i.e.
  ``Q <= sqrt(10**k * A)``; ``k`` 1.5 by default and never above 1.85;
* a **ceiling on charge density** per phase, 25 µC/cm² by default (what
  NeuroPace's RNS enforces), never above 30 µC/cm².

The effective charge limit of a contact is the lower of the two, and its
current cap times the longest allowed pulse width must stay within it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bci_runtime.errors import ConfigError

#: hard maxima no configuration may exceed
MAX_SHANNON_K = 1.85
MAX_CHARGE_DENSITY_UC_CM2 = 30.0
MAX_BALANCE_TOLERANCE = 0.01
MAX_DOSE_CURRENT_MA = 4.0
MAX_DOSE_MINUTES = 40.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Strict):
    """One stimulation contact (electrode)."""

    name: str = Field(min_length=1)
    area_cm2: float = Field(gt=0, le=10, description="geometric surface area (cm²)")
    max_current_ma: float = Field(gt=0, le=25, description="current cap of this contact (mA)")


class Range(_Strict):
    """A closed range ``[min, max]``."""

    min: float = Field(gt=0)
    max: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Dose(_Strict):
    """Cumulative dose of a session (a tDCS-like profile)."""

    max_current_ma: float = Field(4.0, gt=0, le=MAX_DOSE_CURRENT_MA,
                                  description="highest current of the profile (mA)")
    max_minutes: float = Field(40.0, gt=0, le=MAX_DOSE_MINUTES,
                               description="stimulation time per session (min)")


class StimulationLimits(_Strict):
    """The safety envelope of one stimulator, as declared in configuration."""

    contacts: list[Contact] = Field(min_length=1)
    max_total_current_ma: float = Field(gt=0, le=50, description="sum over contacts (mA)")
    pulse_width_us: Range = Field(description="per phase (µs)")
    frequency_hz: Range
    shannon_k: float = Field(1.5, gt=0, le=MAX_SHANNON_K)
    max_charge_density_uc_cm2: float = Field(25.0, gt=0, le=MAX_CHARGE_DENSITY_UC_CM2)
    balance_tolerance: float = Field(MAX_BALANCE_TOLERANCE, ge=0, le=MAX_BALANCE_TOLERANCE,
                                     description="|Q1 - Q2| / Q1 of a biphasic pulse")
    max_pulses_per_s: float = Field(gt=0, description="rate limit over any 1 s")
    max_burst_pulses: int = Field(gt=0, description="pulses in one burst")
    dose: Dose = Field(default_factory=Dose)
    on_violation: Literal["clamp", "reject"] = "reject"
    lockout_s: float = Field(10.0, ge=0, description="no stimulation after a violation")
    ramp_s: float = Field(1.0, ge=0.1, description="time to ramp up to the requested amplitude")

    @model_validator(mode="after")
    def _consistent(self) -> StimulationLimits:
        names = [c.name for c in self.contacts]
        if len(set(names)) != len(names):
            raise ValueError(f"contact names must be unique, got {names}")
        if self.frequency_hz.max > self.max_pulses_per_s:
            raise ValueError(f"frequency_hz.max {self.frequency_hz.max} is above "
                             f"max_pulses_per_s {self.max_pulses_per_s}")
        return self


def shannon_max_charge_uc(area_cm2: float, k: float) -> float:
    """Largest charge per phase (µC) Shannon's criterion allows: ``sqrt(10**k * A)``."""
    return math.sqrt(10.0 ** k * area_cm2)


def shannon_k_of(charge_uc: float, area_cm2: float) -> float:
    """The ``k`` of a charge per phase on a contact: ``log10(Q) + log10(Q / A)``."""
    return math.log10(charge_uc) + math.log10(charge_uc / area_cm2)


def contact_limits(limits: StimulationLimits) -> list[dict[str, Any]]:
    """The effective limits of each contact, JSON-ready.

    Returns
    -------
    list of dict
        Per contact: ``area_cm2``; ``max_charge_uc`` (the lower of
        ``shannon_charge_uc`` and ``density_charge_uc``); the charge, density
        and Shannon ``k`` of its current cap at the longest pulse width
        (``worst_*``); and ``max_current_at_max_width_ma``.
    """
    out = []
    width = limits.pulse_width_us.max
    for c in limits.contacts:
        shannon = shannon_max_charge_uc(c.area_cm2, limits.shannon_k)
        density = limits.max_charge_density_uc_cm2 * c.area_cm2
        allowed = min(shannon, density)
        worst = c.max_current_ma * width / 1000.0
        out.append({
            "contact": c.name, "area_cm2": c.area_cm2,
            "shannon_charge_uc": round(shannon, 4), "density_charge_uc": round(density, 4),
            "max_charge_uc": round(allowed, 4),
            "max_current_at_max_width_ma": round(allowed * 1000.0 / width, 4),
            "current_cap_ma": c.max_current_ma,
            "worst_charge_uc": round(worst, 4),
            "worst_density_uc_cm2": round(worst / c.area_cm2, 4),
            "worst_shannon_k": round(shannon_k_of(worst, c.area_cm2), 4),
        })
    return out


def check_limits(limits: StimulationLimits) -> list[dict[str, Any]]:
    """:func:`contact_limits`, or :class:`ConfigError` naming the first unsafe field."""
    rows = contact_limits(limits)
    for i, row in enumerate(rows):
        if row["worst_charge_uc"] > row["max_charge_uc"] * (1 + 1e-9):
            which = ("Shannon's criterion (k = %g)" % limits.shannon_k
                     if row["shannon_charge_uc"] <= row["density_charge_uc"]
                     else f"the density ceiling {limits.max_charge_density_uc_cm2:g} µC/cm²")
            raise ConfigError(
                f"contacts[{i}].max_current_ma: {row['current_cap_ma']:g} mA at "
                f"pulse_width_us.max {limits.pulse_width_us.max:g} µs is "
                f"{row['worst_charge_uc']:g} µC per phase on {row['area_cm2']:g} cm², above "
                f"the {row['max_charge_uc']:g} µC that {which} allows",
                hint=f"lower contacts[{i}].max_current_ma to at most "
                f"{row['max_current_at_max_width_ma']:g} mA, or pulse_width_us.max")
    return rows


def load_limits(path: Path) -> StimulationLimits:
    """Read limits from YAML: the document itself, or its ``safety:`` section.

    Raises
    ------
    ConfigError
        Unreadable file, not a mapping, or a field out of range (the field named).
    """
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read '{path}': {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"'{path}' is not valid YAML: {exc}") from None
    return parse_limits(document, str(path))


def parse_limits(document: Any, where: str) -> StimulationLimits:
    """Validate limits given as a mapping (or one with a ``safety:`` section).

    Parameters
    ----------
    document : Any
        What the YAML held.
    where : str
        Where it came from, for the error (a file, a node's parameter).
    """
    if isinstance(document, dict) and "safety" in document:
        document = document["safety"]
    if not isinstance(document, dict):
        raise ConfigError(f"'{where}' holds no stimulation limits (a mapping, or a 'safety:' "
                          "section)", hint="see `bci safety check --help` for an example")
    try:
        return StimulationLimits.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
        field = field.replace(".[", "[")
        raise ConfigError(f"{where}: {field or 'limits'}: {first['msg']}",
                          hint=_hint(field)) from None


def _hint(field: str) -> str | None:
    hard = {"shannon_k": f"k may not exceed {MAX_SHANNON_K}",
            "max_charge_density_uc_cm2": f"the ceiling may not exceed "
                                         f"{MAX_CHARGE_DENSITY_UC_CM2:g} µC/cm²",
            "balance_tolerance": "biphasic phases must balance within 1%",
            "dose.max_current_ma": f"a tDCS-like profile stays at or below "
                                   f"{MAX_DOSE_CURRENT_MA:g} mA",
            "dose.max_minutes": f"a session stimulates at most {MAX_DOSE_MINUTES:g} min"}
    return hard.get(field)
