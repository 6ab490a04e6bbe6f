"""What the clinician chooses in the wizard, validated like any configuration."""

from __future__ import annotations

import re
import zlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the classes a motor-imagery calibration can cue, in the order they are offered
MI_CLASSES = ("left", "right", "feet", "tongue")
#: flicker frequencies a 60 Hz screen draws exactly (60/7, 60/6, 60/5, 60/4)
SSVEP_FREQS = (8.57, 10.0, 12.0, 15.0)
SUBJECT_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceChoice(_Strict):
    """Where the signal comes from: the simulator, an LSL stream or a BrainFlow board."""

    kind: Literal["simulator", "lsl", "brainflow"]
    name: str | None = Field(None, description="LSL stream name, or the BrainFlow board")
    source_id: str | None = Field(None, description="LSL source_id")
    channels: int | None = Field(None, ge=1, description="LSL channel count")
    srate: float | None = Field(None, gt=0, description="LSL nominal rate (Hz)")

    @model_validator(mode="after")
    def _complete(self) -> SourceChoice:
        if self.kind == "lsl" and not (self.name and self.channels and self.srate):
            raise ValueError("an LSL stream needs its name, channel count and rate")
        if self.kind == "brainflow" and not self.name:
            raise ValueError("a BrainFlow source needs the board's name")
        return self


class PatientChoice(_Strict):
    """Step 1: who, which paradigm, which signal."""

    subject: str = Field(description="pseudonymous id: letters and digits, no names")
    paradigm: Literal["mi", "ssvep", "cursor"]
    classes: list[str] = Field(default_factory=lambda: ["left", "right"],
                               description="motor imagery: 2-4 of " + ", ".join(MI_CLASSES))
    freqs: list[float] = Field(default_factory=lambda: list(SSVEP_FREQS),
                               description="SSVEP: the flicker frequencies (Hz), 2-4")
    source: SourceChoice
    profile: str | None = Field(None, description="a calibration profile of this subject to "
                                "start from (its id); none: calibrate anew")

    @field_validator("subject")
    @classmethod
    def _pseudonymous(cls, value: str) -> str:
        if not SUBJECT_RE.match(value):
            raise ValueError("use 1-32 letters and digits (a pseudonymous id, never a name)")
        return value

    @model_validator(mode="after")
    def _classes_fit(self) -> PatientChoice:
        if self.paradigm == "mi":
            unknown = [c for c in self.classes if c not in MI_CLASSES]
            if unknown or not 2 <= len(set(self.classes)) == len(self.classes) <= 4:
                raise ValueError(f"motor imagery takes 2 to 4 distinct classes of "
                                 f"{', '.join(MI_CLASSES)}")
        elif self.paradigm == "ssvep" and (not 2 <= len(set(self.freqs)) == len(self.freqs) <= 4
                                           or not all(4.0 <= f <= 40.0 for f in self.freqs)):
            raise ValueError("SSVEP takes 2 to 4 distinct flicker frequencies of 4-40 Hz")
        return self


def source_node(choice: PatientChoice, simulator: dict[str, Any]) -> dict[str, Any]:
    """The pipeline entry of the chosen source.

    ``simulator``: parameters given to the simulator when it is the source (its
    drift, and what ``bci calibrate --sim-param`` sets), over the wizard's defaults.
    """
    src = choice.source
    if src.kind == "lsl":
        params: dict[str, Any] = {"name": src.name, "channels": src.channels, "srate": src.srate}
        if src.source_id:
            params["source_id"] = src.source_id
        return {"type": "lsl_inlet", "params": params}
    if src.kind == "brainflow":
        return {"type": "brainflow_board", "params": {"board": src.name}}
    if choice.paradigm == "cursor":  # a 32-contact ECoG grid over the motor cortex
        return {"type": "simulated_ecog", "params": {
            "n_channels": 32, "srate": 1000, "chunk_size": 20, "kinematics": "cursor",
            "subject_seed": subject_seed(choice.subject), **simulator}}
    if choice.paradigm == "ssvep":
        return {"type": "simulated_ssvep", "params": {
            "freqs": list(choice.freqs), "rest_class": False, "chunk_size": 10,
            "subject_seed": subject_seed(choice.subject), **simulator}}
    return {"type": "simulated_eeg", "params": {
        "n_channels": 8, "channels": ["C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "Pz"],
        "srate": 250, "chunk_size": 10, "classes": choice.classes, "erd": 0.4, "mu_uv": 16,
        "background_uv": 5, "subject_seed": subject_seed(choice.subject), **simulator}}


def subject_seed(subject: str) -> int:
    """The simulated patient of a subject id: the same head and rhythms in every run."""
    return zlib.crc32(subject.encode("utf-8")) & 0x7FFFFFFF
