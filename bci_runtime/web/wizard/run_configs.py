"""The pipelines the wizard runs: the calibration run and the online closed loop.

Both are ordinary pipeline configurations (validated and recorded like any
``bci run``), built from the clinician's choices:

* **calibration**: the source, and the cue schedule (``cue_schedule``) whose
  markers the page shows and the recording keeps. The simulator cues its
  simulated user itself, so its own ``markers`` are the cues.
* **online**: the source, the cues, a causal band-pass, the co-adaptive decoder
  started from the calibration profile (only the good channels), a feedback sink
  that scores the decisions against the cues, and, when asked for, a simulated
  stimulator triggered by the decoder behind the safety envelope's limits.

The continuous cursor has no cues: its calibration is ``cursor_s`` seconds of
the center-out task in open loop (the simulated patient moves the cursor with
its intention; a real patient watches the ``center_out`` node move it by itself
and imagines moving it), and its online loop feeds the ``cursor_decoder``'s
velocity back to the simulator or to the ``center_out`` task.
"""

from __future__ import annotations

import zlib
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bci_runtime.web.wizard.choices import PatientChoice, source_node

SOURCE = "eeg"
CUES = "cues"
DECODER = "decoder"
STIMULATOR = "stimulator"
TASK = "task"  # the center-out task node, for a real patient's cursor
#: online co-adaptation of each paradigm's wizard decoder (bench/drift_recovery.py,
#: bench/clda_cursor.py)
ADAPT: dict[str, Any] = {"mi": ["ts-recenter", "partial-fit@200"], "ssvep": [],
                         "cursor": "rml"}
DECODERS = {"mi": "ts-lda", "ssvep": "ssvep-ensemble", "cursor": "kalman"}
#: the cursor task's stream: the simulator's ground truth, or the center_out node's cursor
CURSOR_STREAMS = {"simulator": (SOURCE, "truth"), "other": (TASK, "cursor")}


class TrialSettings(BaseModel):
    """How the calibration (and online) trials are cued, in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials_per_class: int = Field(20, ge=1, le=200, description="calibration trials per class")
    fixation_s: float = Field(1.0, ge=0.2, le=5, description="fixation cross before the cue")
    cue_s: float = Field(4.0, ge=1.0, le=10, description="imagery or flicker after the cue")
    rest_s: float = Field(2.0, ge=0.5, le=10, description="rest after each trial")
    cursor_s: float = Field(60.0, ge=20, le=600, description="continuous cursor: seconds of "
                            "open-loop calibration")

    def timing(self) -> dict[str, float]:
        """The cued-trial timing (:class:`~bci_runtime.cued_trials.TrialTiming` fields)."""
        return {"fixation_s": self.fixation_s, "imagery_s": self.cue_s,
                "rest_s": self.rest_s, "first_s": 1.0}

    @property
    def trial_s(self) -> float:
        return self.fixation_s + self.cue_s + self.rest_s


class OnlineSettings(BaseModel):
    """What the online loop adds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stimulation: bool = Field(False, description="a simulated stimulator triggered by the "
                                                 "decoder (armed only on request)")


def classes_of(choice: PatientChoice) -> list[str]:
    """The cued classes: motor-imagery classes, or one per SSVEP flicker frequency."""
    if choice.paradigm == "ssvep":
        return [f"{round(f, 2):g}Hz" for f in choice.freqs]
    if choice.paradigm == "cursor":
        return []  # continuous: no classes
    return list(choice.classes)


def cursor_stream(choice: PatientChoice) -> tuple[str, str]:
    """(node, port) of the stream that says where the cursor and the target are."""
    return CURSOR_STREAMS["simulator" if choice.source.kind == "simulator" else "other"]


def run_seed(session_dir: Path, run: str) -> int:
    """Each run's seed: another day's noise and cue order for every run (reproducible)."""
    return zlib.crc32(f"{session_dir.parent.name}/{session_dir.name}/{run}".encode()) \
        & 0x7FFFFFFF


def default_stim_limits() -> Path:
    """The shipped two-contact limits file (what the wizard's simulated stimulator obeys)."""
    return Path(str(files("bci_runtime.pipelines") / "limits" / "two_contacts.yaml"))


def calibration_config(choice: PatientChoice, trials: TrialSettings, simulator: dict[str, Any],
                       seed: int) -> dict[str, Any]:
    """The calibration run: the source and its cues (recorded into the session)."""
    if choice.paradigm == "cursor":
        return _cursor_calibration(choice, trials, simulator, seed)
    per_class = trials.trials_per_class
    nodes = _source_and_cues(choice, trials, simulator, per_class)
    return {"name": "calibration", "description": f"{choice.paradigm} calibration, "
            f"{per_class} trials per class", "seed": seed, "clock": "live", "nodes": nodes}


def online_config(choice: PatientChoice, trials: TrialSettings, simulator: dict[str, Any],
                  profile: dict[str, Any], settings: OnlineSettings, seed: int,
                  stim_limits: Path | None = None) -> dict[str, Any]:
    """The closed loop, its decoder starting from ``profile`` (see :mod:`.profiles`)."""
    if choice.paradigm == "cursor":
        return _cursor_online(choice, simulator, profile, settings, seed, stim_limits)
    nodes = _source_and_cues(choice, trials, simulator, None)
    cues = f"{SOURCE}.markers" if choice.source.kind == "simulator" else f"{CUES}.markers"
    if choice.source.kind == "simulator":  # the simulated user sees the decoded class
        nodes[SOURCE]["params"]["user"] = {"delay_s": 0.2, "learning_rate": 0.05}
        nodes[SOURCE]["inputs"] = {"feedback": {"from": f"{DECODER}.decision",
                                                "delayed": True}}
    low, high = profile["band"]
    nodes["bandpass"] = {"type": "bandpass", "params": {"low": low, "high": high, "order": 4},
                         "inputs": {"signal": f"{SOURCE}.signal"}}
    nodes[DECODER] = {"type": "coadaptive_decoder", "params": {
        "decoder": profile["decoder"], "classes": profile["classes"], "adapt": profile["adapt"],
        "tmin": profile["tmin"], "tmax": profile["tmax"], "step_s": 0.1,
        "channels": profile["channels"], "initial_model": profile["model"]["path"],
        "initial_model_sha256": profile["model"]["sha256"]},
        "inputs": {"signal": "bandpass.filtered", "labels": cues}}
    nodes["feedback"] = {"type": "feedback", "params": {"console": False, "lsl": False},
                         "inputs": {"decision": f"{DECODER}.decision", "truth": cues}}
    if settings.stimulation:
        nodes[STIMULATOR] = _stimulator(stim_limits, profile["classes"][0], 0.9,
                                        f"{DECODER}.decision")
    return {"name": "online", "description": f"{choice.paradigm} closed loop from the "
            "calibration profile", "seed": seed, "clock": "live", "nodes": nodes}


def _source_and_cues(choice: PatientChoice, trials: TrialSettings, simulator: dict[str, Any],
                     per_class: int | None) -> dict[str, Any]:
    source = source_node(choice, simulator)
    nodes: dict[str, Any] = {SOURCE: source}
    if choice.source.kind == "simulator":
        source["params"]["timing"] = trials.timing()
        return nodes
    cue_params: dict[str, Any] = {"classes": classes_of(choice), "timing": trials.timing()}
    if per_class is not None:
        cue_params["trials_per_class"] = per_class
    nodes[CUES] = {"type": "cue_schedule", "params": cue_params}
    return nodes


def _stimulator(stim_limits: Path | None, channel: str, threshold: float,
                control: str) -> dict[str, Any]:
    """A simulated stimulator triggered when ``channel`` of ``control`` crosses ``threshold``."""
    return {"type": "stimulator", "params": {
        "limits": str(stim_limits or default_stim_limits()),
        "driver": {"type": "simulated"}, "mode": "triggered", "stale_ms": 300,
        "trigger": {"channel": channel, "threshold": threshold, "refractory_s": 2.0,
                    "contact": "E2", "amplitude_ma": 1.5, "width_us": 90,
                    "frequency_hz": 130, "n_pulses": 20}},
        "inputs": {"control": control}}


def _cursor_calibration(choice: PatientChoice, trials: TrialSettings,
                        simulator: dict[str, Any], seed: int) -> dict[str, Any]:
    """``cursor_s`` seconds of the center-out task in open loop (it ends by itself)."""
    nodes: dict[str, Any] = {SOURCE: source_node(choice, simulator)}
    if choice.source.kind != "simulator":  # the cursor goes to each target by itself
        nodes[TASK] = {"type": "center_out", "params": {"open_loop": True}}
    return {"name": "calibration", "description": f"continuous cursor calibration, "
            f"{trials.cursor_s:g} s in open loop", "seed": seed, "clock": "live",
            "duration": trials.cursor_s, "nodes": nodes}


def _cursor_online(choice: PatientChoice, simulator: dict[str, Any], profile: dict[str, Any],
                   settings: OnlineSettings, seed: int,
                   stim_limits: Path | None) -> dict[str, Any]:
    """The cursor moved by the decoder, which keeps adapting (CLDA) from the profile."""
    nodes: dict[str, Any] = {SOURCE: source_node(choice, simulator)}
    feedback = {"from": f"{DECODER}.velocity", "delayed": True}
    if choice.source.kind == "simulator":  # the simulated patient sees the cursor move
        nodes[SOURCE]["params"]["user"] = {"delay_s": 0.2}
        nodes[SOURCE]["inputs"] = {"feedback": feedback}
    else:
        nodes[TASK] = {"type": "center_out", "inputs": {"velocity": feedback}}
    node, port = cursor_stream(choice)
    nodes[DECODER] = {"type": "cursor_decoder", "params": {
        "adapt": profile["adapt"], "initial_model": profile["model"]["path"],
        "initial_model_sha256": profile["model"]["sha256"]},
        "inputs": {"signal": f"{SOURCE}.signal", "task": f"{node}.{port}"}}
    # the decoded velocity, for a display or a device outside the runtime (and the loop's
    # end-to-end latency is measured where it leaves)
    nodes["velocity_out"] = {"type": "lsl_outlet", "params": {"name": "bci-wizard-velocity"},
                             "inputs": {"signal": f"{DECODER}.velocity"}}
    if settings.stimulation:  # a push to the right past half the task's speed
        nodes[STIMULATOR] = _stimulator(stim_limits, "vx", 0.2, f"{DECODER}.velocity")
    return {"name": "online", "description": "continuous cursor closed loop from the "
            "calibration profile", "seed": seed, "clock": "live", "nodes": nodes}
