"""The wizard's state: one patient's session, step by step, every choice audited.

Steps:

1. ``patient``: who (a pseudonymous id), which paradigm, which signal source, and
   optionally a calibration profile of an earlier day to start from;
2. ``signal``: live traces and per-channel quality; bad channels marked; too few
   good channels stop here unless the clinician overrides, with a reason;
3. ``calibration``: cued trials recorded into the session (``calibration-NN/``,
   one folder per run: an interrupted calibration is completed by another run);
4. ``training``: the decoder trained on every calibration run, cross-validated
   against chance, its patterns, a verdict; the profile is saved;
5. ``online``: the closed loop (``online-NN/``) from the profile, co-adapting;
   stimulation armed only through the safety envelope; stop saves the newest
   co-adapted model as a new profile;
6. ``done``.

With a profile, the signal check leads straight to ``online``. The session
folder is created at the first step and locked for this wizard
(:class:`~.session_lock.SessionLock`); its ``audit.jsonl`` receives every choice
with who made it. Nothing recorded is ever deleted: a step that fails leaves its
folder as it was and the step can be taken again.

What the engine does not own (signal quality, device discovery) comes from the
packages around it through the ``bci_runtime.wizard`` entry points, so the
engine keeps importing none of them.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from bci_runtime.audit_log import AuditLog
from bci_runtime.errors import BciError, ConfigError, DependencyError, StepOrderError
from bci_runtime.graph import load_graph_text
from bci_runtime.run_status import describe_event
from bci_runtime.session import check_label, json_safe, new_session_dir
from bci_runtime.web.wizard import profiles
from bci_runtime.web.wizard.acquisition import Acquisition
from bci_runtime.web.wizard.broadcast import Broadcast
from bci_runtime.web.wizard.choices import PatientChoice, source_node
from bci_runtime.web.wizard.run_configs import (
    ADAPT,
    DECODERS,
    OnlineSettings,
    TrialSettings,
    calibration_config,
    classes_of,
    cursor_stream,
    online_config,
    run_seed,
)
from bci_runtime.web.wizard.session_lock import SessionLock
from bci_runtime.web.wizard.wizard_run import WizardRun

STEPS = ("patient", "signal", "calibration", "training", "online", "done")
ENTRY_POINT_GROUP = "bci_runtime.wizard"
WIZARD_STATE = "wizard.json"  # in the session folder: what resuming it needs
STOP_WAIT_S = 30.0  # how long stopping a run may take before the wizard says so
#: runtime events worth a line in the wizard's audit trail (the run's own events.jsonl
#: keeps all of them)
AUDITED_EVENTS = frozenset({
    "stream_lost", "stream_stalled", "stream_blocked", "bad_chunk", "failure",
    "stream_reconnected", "samples_dropped", "model_online", "model_swap", "model_rollback",
    "model_drift", "armed", "arm_refused", "safe_state", "emergency_stop",
    "stimulator_error"})


def plugin(name: str) -> Any:
    """The ``bci_runtime.wizard`` entry point ``name`` (quality, enough_good_channels, ...)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise DependencyError(f"the wizard's '{name}' is not installed",
                          hint="reinstall bci-runtime: pip install -e .")


class Wizard:
    """One calibration wizard (one patient session at a time).

    Parameters
    ----------
    sessions_root : Path
        Where sessions are kept (``sub-<ID>/ses-<NN>``, profiles in ``sub-<ID>/profiles``).
    preset : str
        The simulator's drift preset, when the source is the simulator.
    sim_params : dict, optional
        More parameters of the simulator (``{"erd": 0.1}``: a patient with a weak
        rhythm), validated when the simulator starts.
    min_good : float
        Fewest good channels to go on: a fraction of the channels (``<= 1``) or a count.
    stim_limits : Path, optional
        The safety limits of the online step's simulated stimulator (default: the
        shipped two-contact limits).
    """

    def __init__(self, sessions_root: Path, preset: str = "stationary",
                 min_good: float = 0.75, stim_limits: Path | None = None,
                 sim_params: dict[str, Any] | None = None) -> None:
        self.sessions_root = Path(sessions_root)
        self.preset = preset
        self.simulator = {**(sim_params or {}), "drift": {"scenario": preset}}
        self.min_good = min_good
        self.stim_limits = stim_limits
        self.step = "patient"
        self.choice: PatientChoice | None = None
        self.session_dir: Path | None = None
        self.bad_channels: set[str] = set()
        self.override: str | None = None
        self.acquisition: Acquisition | None = None
        self.trials = TrialSettings()
        # runs that ended, as records (what wizard.json keeps for a resumed session)
        self.calibration_runs: list[dict[str, Any]] = []
        self.online_runs: list[dict[str, Any]] = []
        self.run: WizardRun | None = None  # the run under way, calibration or online
        self.last_online: WizardRun | None = None  # for its final status
        self.resume_step: str | None = None  # where a resumed session goes after its check
        self.training: dict[str, Any] = {"state": "idle"}
        self.profile: dict[str, Any] | None = None  # what the online step starts from
        self.profile_reused = False
        self.saved_profile: dict[str, Any] | None = None  # written when online stopped
        self.broadcast = Broadcast()
        self._audit: AuditLog | None = None
        self._lock_file: SessionLock | None = None
        self._lock = threading.RLock()  # requests come from the server's threads
        self._save_lock = threading.Lock()

    def check_simulator(self) -> None:
        """Refuse simulator parameters (``sim_params``) that do not validate, before serving."""
        # a parameter of one paradigm's simulator ("erd", "tuned_fraction") is fine
        errors = []
        for paradigm in ("mi", "ssvep", "cursor"):
            choice = PatientChoice(subject="check", paradigm=paradigm,
                                   source={"kind": "simulator"})
            config = {"name": "check", "nodes": {"eeg": source_node(choice, self.simulator)}}
            try:
                load_graph_text(yaml.safe_dump(config), "--sim-param")
                return
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]

    # -- step 1 ------------------------------------------------------------------------
    def choose_patient(self, choice: PatientChoice, by: str = "clinician") -> dict[str, Any]:
        """Create and lock the session, start the signal; on to the signal check."""
        with self._lock:
            self._expect("patient")
            profile = self._reloadable_profile(choice) if choice.profile else None
            session_dir = new_session_dir(self.sessions_root, choice.subject)
            self._open_session(choice, session_dir, "wizard_patient", by=by,
                               choice=choice.model_dump(),
                               simulator=self.simulator if choice.source.kind == "simulator"
                               else None)
            self.profile = profile
            self._save()
            return self.state()

    def _open_session(self, patient: PatientChoice, session_dir: Path, event: str,
                      **fields: Any) -> None:
        """Lock the session, open its audit trail (``event`` first), start the signal check."""
        lock = SessionLock(session_dir)
        audit = AuditLog(session_dir / "audit.jsonl")
        audit.write(event, **fields)
        try:
            acquisition = Acquisition(source_node(patient, self.simulator),
                                      monitor_factory=plugin("quality"),
                                      emit_event=self._runtime_event)
            acquisition.start()
        except Exception as exc:  # the folder stays, with why it could not go on
            audit.write("wizard_source_failed", error=str(exc))
            audit.close()
            lock.release()
            raise
        self.choice, self.session_dir = patient, session_dir
        self._lock_file, self._audit, self.acquisition = lock, audit, acquisition
        self.step = "signal"

    def _reloadable_profile(self, choice: PatientChoice) -> dict[str, Any]:
        profile = profiles.load_profile(self.sessions_root, choice.subject,
                                        choice.profile or "")
        if profile["paradigm"] != choice.paradigm \
                or sorted(profile["classes"]) != sorted(classes_of(choice)):
            raise ConfigError(
                f"profile {choice.profile} is for {profile['paradigm']} with classes "
                f"{', '.join(profile['classes'])}, not {choice.paradigm} with "
                f"{', '.join(classes_of(choice))}",
                hint="choose the profile's paradigm and classes, or calibrate anew")
        return profile

    # -- step 2 ------------------------------------------------------------------------
    def quality(self) -> dict[str, Any]:
        """Per-channel quality of the newest seconds, the clinician's marks, and the verdict."""
        with self._lock:
            self._expect("signal")
            acquisition, marked = self._signal(), sorted(self.bad_channels)
        assessed = acquisition.monitor.assess(marked_bad=marked)
        if assessed is None:  # the first second of signal is not there yet
            return {"channels": [], "enough": False, "message": "waiting for the signal…"}
        rows = [q.as_dict() for q in assessed]
        for row in rows:
            row["marked_bad"] = row["name"] in marked
            row["usable"] = row["status"] == "good"
        minimum = self.min_good if self.min_good <= 1 else int(self.min_good)
        ok, message = plugin("enough_good_channels")(assessed, minimum)
        return {"channels": rows, "enough": ok, "message": message}

    def mark_channel(self, channel: str, bad: bool, by: str = "clinician") -> dict[str, Any]:
        """Mark a channel bad (left out of calibration and decoding) or good again."""
        with self._lock:
            self._expect("signal")
            names = self._signal().channel_names
            if channel not in names:
                raise ConfigError(f"no channel {channel!r}; the signal has {', '.join(names)}")
            (self.bad_channels.add if bad else self.bad_channels.discard)(channel)
            self._log("wizard_mark_channel", by=by, channel=channel, bad=bad)
            return self.state()

    def finish_signal_check(self, override_reason: str | None = None,
                            by: str = "clinician") -> dict[str, Any]:
        """Go on: to calibration, or with a usable profile straight to online.

        Too few good channels need a reason (logged).
        """
        with self._lock:
            self._expect("signal")
            verdict = self.quality()
            if not verdict["enough"]:
                reason = (override_reason or "").strip()
                if not reason:
                    raise ConfigError(verdict["message"],
                                      hint="fix the electrodes, unmark channels, or override "
                                           "with a reason (it is logged)")
                self.override = reason
                self._log("wizard_override", by=by, reason=reason, verdict=verdict["message"])
            self._log("wizard_signal_checked", by=by, bad_channels=sorted(self.bad_channels),
                      channels=[{k: c[k] for k in ("name", "status", "reasons")}
                                for c in verdict["channels"]])
            self._signal().stop()  # each run opens the source again
            self.step = "calibration"
            if self.resume_step is not None:
                self.step = self._resumed_step()
                self._log("wizard_resumed_at", by=by, step=self.step)
            elif self.profile is not None:
                unusable = sorted(set(self.profile["channels"]) & self.bad_channels)
                if unusable:
                    self._log("wizard_profile_dropped", by=by, profile=self.profile["id"],
                              reason=f"its decoder uses {', '.join(unusable)}, marked bad")
                    self.profile = None
                else:
                    self.profile_reused = True
                    self._log("wizard_profile_reused", by=by, profile=self.profile["id"])
                    self.step = "online"
            self._save()
            return self.state()

    def _resumed_step(self) -> str:
        """Where a resumed session goes on: as far as what it kept allows."""
        wanted = self.resume_step
        self.resume_step = None
        if wanted == "online" and self.profile is not None:
            return "online"
        if wanted in ("training", "online") and self.training.get("state") == "done":
            return "training"
        return "calibration"

    # -- step 3 ------------------------------------------------------------------------
    def start_calibration(self, trials: TrialSettings, by: str = "clinician") -> dict[str, Any]:
        """Start a calibration run of ``trials.trials_per_class`` trials of each class."""
        with self._lock:
            self._expect("calibration")
            self._expect_no_run()
            choice, session = self._opened()
            classes = classes_of(choice)
            folder = session / f"calibration-{self._next_index('calibration'):02d}"
            config = calibration_config(choice, trials, self.simulator,
                                        run_seed(session, folder.name))
            # a cursor calibration ends after its duration; cued trials after their count
            run = self._new_run("calibration", config, folder, classes,
                                trials.trials_per_class * len(classes) if classes else None)
            self.trials = trials
            self._log("wizard_calibration_started", by=by, run=folder.name,
                      settings=trials.model_dump())
            return self._start(run)

    def stop_calibration(self, by: str = "clinician") -> dict[str, Any]:
        """Stop the calibration run early: the trials recorded so far are kept."""
        with self._lock:
            self._expect("calibration")
            run = self._current("calibration")
            self._log("wizard_calibration_stop", by=by, run=run.folder.name,
                      trials=run.cues.done)
            run.stop("stopped", "stopped by the clinician; the recorded trials are kept")
        self._wait_ended(run)
        return self.state()

    def recorded_trials(self) -> dict[str, int]:
        """Complete trials of each class over every calibration run."""
        total: Counter[str] = Counter()
        for record in self.calibration_runs:
            total.update(record["per_class"])
        run = self.run
        if run is not None and run.kind == "calibration":
            total.update(run.cues.completed)
        return {c: total[c] for c in classes_of(self.choice)} if self.choice else {}

    def recorded_cursor(self) -> dict[str, float]:
        """Seconds of open-loop cursor calibration and targets reached, over every run."""
        seconds, hits = 0.0, 0
        records = [r.get("cursor") or {} for r in self.calibration_runs]
        run = self.run
        if run is not None and run.kind == "calibration" and run.cursor is not None:
            records.append(run.cursor.snapshot())
        for record in records:
            seconds += float(record.get("seconds", 0.0))
            hits += int(record.get("hits", 0))
        return {"seconds": round(seconds, 1), "hits": hits}

    # -- step 4 ------------------------------------------------------------------------
    def start_training(self, by: str = "clinician") -> dict[str, Any]:
        """Train the decoder on every calibration run, in the background."""
        with self._lock:
            if self.step not in ("calibration", "training"):
                self._expect("training")
            self._expect_no_run()
            if self.training.get("state") == "running":
                raise ConfigError("the decoder is being trained already",
                                  hint="wait for the result")
            recordings = [r["recording"] for r in self.calibration_runs
                          if r["recording"] and Path(r["recording"]).exists()]
            if not recordings:
                raise ConfigError("no calibration has been recorded yet",
                                  hint="run the calibration first")
            folder = self.session_dir / f"training-{self._next_index('training'):02d}"
            self.step = "training"
            self.training = {"state": "running", "stage": "starting", "progress": 0.0,
                             "folder": folder.name}
            self._log("wizard_training_started", by=by, recordings=recordings,
                      folder=folder.name)
            threading.Thread(target=self._train, args=(recordings, folder), daemon=True,
                             name="wizard-training").start()
            return self.state()

    def _train(self, recordings: list[str], folder: Path) -> None:
        choice, session = self._opened()
        fit = self._fit_cursor if choice.paradigm == "cursor" else self._fit_trials
        try:
            folder.mkdir(parents=True, exist_ok=False)
            report, fields, scores = fit([Path(r) for r in recordings], folder)
            (folder / "report.json").write_text(json.dumps(json_safe(report), indent=1))
            profile = profiles.save_profile(
                self.sessions_root, choice.subject, session.name,
                {**fields, "bad_channels": sorted(self.bad_channels),
                 "trials": self.trials.model_dump(), "good_enough": report["good_enough"],
                 "source": choice.source.model_dump()},
                Path(report["model"]["path"]), origin="training")
        except BciError as exc:
            self._training_failed(exc.message, exc.hint)
        except Exception as exc:  # a bug: said as it is; the recordings are untouched
            self._training_failed(f"training failed: {type(exc).__name__}: {exc}",
                                  "the calibration recordings are kept; try again")
        else:
            self._trained(folder, report, profile, **scores)

    def _fit_trials(self, recordings: list[Path], folder: Path
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Cued trials: the report, the profile's fields, the scores the audit trail keeps."""
        choice = self._opened()[0]
        paradigm = choice.paradigm
        tmin, tmax = 0.5, min(self.trials.cue_s, 2.5 if paradigm == "mi" else 4.0)
        report = plugin("train")(
            recordings, paradigm=paradigm, classes=classes_of(choice),
            model_path=folder / profiles.MODEL_FILE, decoder=DECODERS[paradigm],
            adapt=ADAPT[paradigm], bad_channels=sorted(self.bad_channels), tmin=tmin,
            tmax=tmax, progress=self._training_progress)
        fields = {**{k: report[k] for k in ("paradigm", "channels", "decoder", "adapt", "tmin",
                                            "tmax", "band", "accuracy", "chance")},
                  "classes": report["model_classes"]}  # the decision columns' order
        return report, fields, {"accuracy": report["accuracy"], "chance": report["chance"],
                                "threshold": report["chance_threshold"]}

    def _fit_cursor(self, recordings: list[Path], folder: Path
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The continuous decoder: blocked cross-validated R² against shifted-label chance."""
        report = plugin("train_cursor")(
            recordings, model_path=folder / profiles.MODEL_FILE,
            bad_channels=sorted(self.bad_channels), adapt=ADAPT["cursor"],
            progress=self._training_progress)
        fields = {**{k: report[k] for k in ("paradigm", "channels", "decoder", "adapt", "band",
                                            "bin_s", "features", "r2", "chance_r2")},
                  "classes": []}
        return report, fields, {"r2": report["r2"], "chance_r2": report["chance_r2"]}

    def _trained(self, folder: Path, report: dict[str, Any], profile: dict[str, Any],
                 **scores: Any) -> None:
        with self._lock:
            self.profile = profile
            self.training = {"state": "done", "progress": 1.0, "folder": folder.name,
                             "report": report}
            self._log("wizard_trained", **scores, good_enough=report["good_enough"],
                      reasons=report["reasons"], model_sha256=report["model"]["sha256"],
                      profile=profile["id"])
        self._publish_state()

    def _training_progress(self, stage: str, fraction: float) -> None:
        self.training.update(stage=stage, progress=round(float(fraction), 3))
        self.broadcast.publish({"type": "training", "stage": stage,
                                "progress": round(float(fraction), 3)})

    def _training_failed(self, message: str, hint: str | None) -> None:
        with self._lock:
            self.training = {"state": "failed", "error": message, "hint": hint}
            self._log("wizard_training_failed", error=message)
        self._publish_state()

    def back_to_calibration(self, by: str = "clinician") -> dict[str, Any]:
        """From the training result back to calibration, to record more trials."""
        with self._lock:
            self._expect("training")
            if self.training.get("state") == "running":
                raise ConfigError("the decoder is being trained", hint="wait for the result")
            self.step = "calibration"
            self._log("wizard_more_trials", by=by, recorded=self.recorded_trials())
            return self.state()

    # -- step 5 ------------------------------------------------------------------------
    def start_online(self, settings: OnlineSettings, override_reason: str | None = None,
                     by: str = "clinician") -> dict[str, Any]:
        """Start the closed loop from the profile; a decoder not good enough needs a reason."""
        with self._lock:
            if self.step != "online":
                self._expect("training")
                if self.training.get("state") != "done":
                    raise ConfigError("there is no trained decoder to go online with",
                                      hint="train the decoder first")
                report = self.training["report"]
                if not report["good_enough"]:
                    reason = (override_reason or "").strip()
                    if not reason:
                        raise ConfigError(
                            "the decoder is not good enough to go online: "
                            + " ".join(report["reasons"]),
                            hint="record more trials, or go online anyway with a reason "
                                 "(it is logged)")
                    self._log("wizard_online_override", by=by, reason=reason,
                              **{k: report[k] for k in ("accuracy", "r2") if k in report})
            self._expect_no_run()
            choice, session = self._opened()
            profile = self._usable_profile()
            folder = session / f"online-{self._next_index('online'):02d}"
            config = online_config(choice, self.trials, self.simulator, profile, settings,
                                   run_seed(session, folder.name), self.stim_limits)
            run = self._new_run("online", config, folder, profile["classes"], None)
            self.last_online = run
            self.step = "online"
            self._log("wizard_online_started", by=by, run=folder.name,
                      settings=settings.model_dump(), profile=profile["id"])
            return self._start(run)

    def arm(self, by: str = "clinician") -> dict[str, Any]:
        """Arm the stimulator through the safety envelope's arming (limits enforced there)."""
        with self._lock:
            run = self._current("online")
            if not run.runner.actuators:
                raise ConfigError("this online session has no stimulator",
                                  hint="stop, and start online with stimulation ticked")
            armed = run.runner.arm(by)
            self._log("wizard_arm", by=by, result=armed)
            return {"armed": armed}

    def emergency_stop(self, by: str = "clinician") -> dict[str, Any]:
        """Every actuator of the online run to its safe state at once."""
        run = self.run
        if run is None or run.kind != "online":
            raise ConfigError("nothing is running", hint="there is nothing to stop")
        run.runner.emergency_stop(f"emergency stop in the wizard by the {by}")
        self._log("wizard_emergency_stop", by=by)
        return {"stopped": True}

    def stop_online(self, by: str = "clinician") -> dict[str, Any]:
        """Stop the loop, save the session and a profile of the newest co-adapted model.

        After a loop that ended by itself (its stream lost, a failure) this finishes the
        session the same way.
        """
        with self._lock:
            self._expect("online")
            run = self.run if self.run is not None else self.last_online
            if run is None:
                raise ConfigError("the closed loop has not been started",
                                  hint="start it, or close the wizard")
            self._log("wizard_online_stop", by=by, run=run.folder.name)
            run.stop("stopped", "stopped by the clinician")
        self._wait_ended(run)
        with self._lock:
            try:
                latest = plugin("latest_model")(run.folder).path
            except ConfigError as exc:  # it never served: the profile it started from stays
                latest = None
                self._log("wizard_profile_not_saved", reason=exc.message)
            if latest is not None and self.profile is not None:
                choice, session = self._opened()
                self.saved_profile = profiles.save_profile(
                    self.sessions_root, choice.subject, session.name,
                    {k: v for k, v in self.profile.items() if k not in ("id", "model")},
                    latest, origin="online")
                self._log("wizard_profile_saved", profile=self.saved_profile["id"],
                          model_sha256=self.saved_profile["model"]["sha256"])
            self.step = "done"
            self._log("wizard_done", by=by, summary=run.summary)
        self._publish_state()
        return self.state()

    def online_status(self) -> dict[str, Any] | None:
        """The online run's status panel (streams, decoder, accuracy, latency, stimulation)."""
        run = self.last_online
        if run is None:
            return None
        return {**run.recorded.status.snapshot(), "run": run.state()}

    def cue_shown(self, marker_time: float) -> None:
        """The page drew the cue of ``marker_time`` now (its display lag is kept)."""
        run = self.run
        if run is not None:
            run.cues.shown(run.runner.clock.now() - marker_time)

    # -- everywhere --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the page needs to draw itself (also after a reload)."""
        acquisition, profile = self.acquisition, self.profile
        return {"step": self.step, "steps": list(STEPS),
                "choice": self.choice.model_dump() if self.choice else None,
                "classes": classes_of(self.choice) if self.choice else [],
                "session_dir": str(self.session_dir) if self.session_dir else None,
                "channels": acquisition.channel_names if acquisition else [],
                "bad_channels": sorted(self.bad_channels), "override": self.override,
                "signal_error": str(acquisition.error) if acquisition and acquisition.error
                else None,
                "trials": self.trials.model_dump(),
                "recorded": self.recorded_trials(),
                "recorded_cursor": self.recorded_cursor(),
                "calibration_runs": self.calibration_runs + (
                    [self.run.state()] if self.run and self.run.kind == "calibration" else []),
                "run": self.run.state() if self.run else None,
                "training": self.training,
                "profile": profiles.summary(profile) if profile else None,
                "profile_reused": self.profile_reused,
                "saved_profile": profiles.summary(self.saved_profile)
                if self.saved_profile else None,
                "online_runs": self.online_runs,
                "resume_step": self.resume_step}

    def close(self) -> None:
        """Stop any run and the signal, close the audit trail and release the session."""
        run = self.run
        if run is not None:
            run.stop("stopped", "the wizard was closed")
            run.wait(STOP_WAIT_S)
        with self._lock:
            if self.acquisition is not None:
                self.acquisition.stop()
                self.acquisition = None
            if self._audit is not None:
                self._audit.write("wizard_closed", step=self.step)
                self._audit.close()
                self._audit = None
            if self._lock_file is not None:
                self._lock_file.release()
                self._lock_file = None

    # -- runs --------------------------------------------------------------------------
    def _new_run(self, kind: str, config: dict[str, Any], folder: Path, classes: list[str],
                 expected: int | None) -> WizardRun:
        try:
            choice = self._opened()[0]
            return WizardRun(kind, config, folder, choice.subject,
                             classes, expected, self.broadcast.publish, self._runtime_event,
                             on_end=self._run_ended,
                             cursor=cursor_stream(choice) if choice.paradigm == "cursor"
                             else None)
        except BciError as exc:
            self._log(f"wizard_{kind}_failed", error=str(exc))
            raise

    def _start(self, run: WizardRun) -> dict[str, Any]:
        self.run = run
        run.start()
        return self.state()

    def _run_ended(self, run: WizardRun) -> None:
        """A run is over (on its thread): say how in the audit trail and free the step."""
        with self._lock:
            record = {**run.state(), "recording": str(run.recording) if run.recording and
                      run.recording.exists() else None}
            (self.calibration_runs if run.kind == "calibration" else self.online_runs).append(
                record)
            if self.run is run:
                self.run = None
            self._save()
            progress = ({"cursor": run.cursor.snapshot()} if run.cursor is not None else
                        {"trials": run.cues.snapshot(),
                         "cue_display_lag_ms": run.cues.display_lag_ms()})
            self._log(f"wizard_{run.kind}_ended", run=run.folder.name, outcome=run.outcome,
                      message=run.message, **progress)
        self._publish_state()

    def _wait_ended(self, run: WizardRun) -> None:
        if not run.wait(STOP_WAIT_S):
            raise ConfigError(f"the {run.kind} run did not stop within {STOP_WAIT_S:g} s",
                              hint="its session folder keeps what was recorded; see its "
                                   "events.jsonl")

    def _opened(self) -> tuple[PatientChoice, Path]:
        """The patient and the session folder (set at step 1, there at every later step)."""
        if self.choice is None or self.session_dir is None:
            raise StepOrderError("no session is open", hint="start at step 1")
        return self.choice, self.session_dir

    def _signal(self) -> Acquisition:
        if self.acquisition is None:
            raise StepOrderError("the signal check is not running", hint="reload the page")
        return self.acquisition

    def _usable_profile(self) -> dict[str, Any]:
        if self.profile is None:
            raise ConfigError("there is no decoder profile to start from",
                              hint="train the decoder first, or choose a profile at step 1")
        return self.profile

    def _current(self, kind: str) -> WizardRun:
        run = self.run
        if run is None or run.kind != kind:
            raise ConfigError(f"no {kind} run is under way", hint="reload the page")
        return run

    def _expect_no_run(self) -> None:
        if self.run is not None:
            raise ConfigError(f"a {self.run.kind} run is under way",
                              hint="wait for it to end, or stop it")

    def _next_index(self, prefix: str) -> int:
        """The next free ``<prefix>-NN`` folder number (folders are never reused)."""
        taken = [int(p.name.rpartition("-")[2]) for p in
                 self._opened()[1].glob(f"{prefix}-*")
                 if p.name.rpartition("-")[2].isdigit()]
        return max(taken, default=0) + 1

    def _publish_state(self) -> None:
        self.broadcast.publish({"type": "state", **json_safe(self.state())})

    def _expect(self, step: str) -> None:
        if self.step != step:
            raise StepOrderError(f"the wizard is at step '{self.step}', not '{step}'",
                                 hint="reload the page: it shows the current step")

    def _log(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.write(event, **fields)
            if event.startswith("wizard_"):
                self._save()

    # -- resuming ----------------------------------------------------------------------
    def _save(self) -> None:
        """Write ``wizard.json``: what a wizard started later needs to resume the session."""
        if self.session_dir is None or self.choice is None:
            return
        training = {k: v for k, v in self.training.items() if k in ("state", "folder")}
        if training.get("state") == "running":
            training = {"state": "idle"}  # a training cut off is simply done again
        saved = {"format": 1, "step": self.step, "resume_step": self.resume_step,
                 "choice": self.choice.model_dump(), "bad_channels": sorted(self.bad_channels),
                 "override": self.override, "trials": self.trials.model_dump(),
                 "calibration_runs": self.calibration_runs, "online_runs": self.online_runs,
                 "training": training, "profile": self.profile["id"] if self.profile else None,
                 "profile_reused": self.profile_reused}
        with self._save_lock:  # the emergency stop logs from outside the wizard's lock
            tmp = self.session_dir / (WIZARD_STATE + ".tmp")
            tmp.write_text(json.dumps(json_safe(saved), indent=1), encoding="utf-8")
            os.replace(tmp, self.session_dir / WIZARD_STATE)

    def unfinished_sessions(self, subject: str) -> list[dict[str, Any]]:
        """The subject's sessions a wizard left before the end (newest first), resumable."""
        out = []
        base = self.sessions_root / f"sub-{check_label('subject', subject)}"
        for path in sorted(base.glob(f"ses-*/{WIZARD_STATE}"), reverse=True):
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if saved.get("step") == "done":
                continue
            recorded: Counter[str] = Counter()
            for record in saved.get("calibration_runs", []):
                recorded.update(record.get("per_class", {}))
            out.append({"session": path.parent.name, "step": saved.get("resume_step")
                        or saved.get("step"), "paradigm": saved["choice"]["paradigm"],
                        "recorded": dict(recorded), "in_use": SessionLock.held(path.parent)})
        return out

    def resume(self, subject: str, session: str, by: str = "clinician") -> dict[str, Any]:
        """Take up a session a wizard left (closed, crashed): its signal is checked again,
        then it goes on where it was, with everything recorded so far."""
        with self._lock:
            self._expect("patient")
            label = check_label("session", session.removeprefix("ses-"))
            session_dir = self.sessions_root / f"sub-{check_label('subject', subject)}" \
                / f"ses-{label}"
            try:
                saved = json.loads((session_dir / WIZARD_STATE).read_text(encoding="utf-8"))
                choice = PatientChoice.model_validate(saved["choice"])
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"{session_dir} cannot be resumed: {exc}",
                                  hint="start a new session") from None
            if saved.get("step") == "done":
                raise ConfigError(f"{session_dir.name} of {subject} was finished",
                                  hint="start a new session (its profile can be reloaded)")
            self._open_session(choice, session_dir, "wizard_resumed", by=by,
                               step=saved.get("step"))
            self.bad_channels = set(saved.get("bad_channels", []))
            self.override = saved.get("override")
            self.trials = TrialSettings.model_validate(saved.get("trials", {}))
            self.calibration_runs = list(saved.get("calibration_runs", []))
            self.online_runs = list(saved.get("online_runs", []))
            self._restore_training(saved.get("training") or {})
            self._restore_profile(saved.get("profile"), bool(saved.get("profile_reused")))
            step = saved.get("resume_step") or saved.get("step")
            self.resume_step = step if step in ("calibration", "training", "online") else None
            return self.state()

    def _restore_training(self, saved: dict[str, Any]) -> None:
        folder = saved.get("folder")
        if saved.get("state") == "done" and folder:
            try:
                report = json.loads((self._opened()[1] / folder / "report.json").read_text())
            except (OSError, ValueError):
                return  # the result is gone: train again
            self.training = {"state": "done", "progress": 1.0, "folder": folder,
                             "report": report}

    def _restore_profile(self, profile_id: str | None, reused: bool) -> None:
        if not profile_id:
            return
        try:
            self.profile = profiles.load_profile(self.sessions_root, self._opened()[0].subject,
                                                 profile_id)
            self.profile_reused = reused
        except ConfigError as exc:
            self._log("wizard_profile_dropped", profile=profile_id, reason=exc.message)

    def _runtime_event(self, kind: str, **fields: Any) -> None:
        if kind in AUDITED_EVENTS:
            self._log(f"signal_{kind}" if kind.startswith("stream") or kind in (
                "bad_chunk", "samples_dropped") else kind,
                      text=describe_event(kind, fields), **fields)

