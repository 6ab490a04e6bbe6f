"""The wizard's state: one patient's session, step by step, every choice audited.

Steps: ``patient`` (who, paradigm, signal source) -> ``signal`` (live traces and
per-channel quality; bad channels marked; too few good channels stop here unless
the clinician overrides, with a reason) -> ``calibration`` -> ``training`` ->
``online``. The session folder is created at the first step and locked for this
wizard (:class:`~.session_lock.SessionLock`); its ``audit.jsonl`` receives every
choice with who made it.

What the engine does not own (signal quality, device discovery) comes from the
packages around it through the ``bci_runtime.wizard`` entry points, so the
engine keeps importing none of them.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from bci_runtime.audit_log import AuditLog
from bci_runtime.errors import ConfigError, DependencyError, StepOrderError
from bci_runtime.session import new_session_dir
from bci_runtime.web.wizard.acquisition import Acquisition
from bci_runtime.web.wizard.choices import PatientChoice, source_node
from bci_runtime.web.wizard.session_lock import SessionLock

STEPS = ("patient", "signal", "calibration", "training", "online")
ENTRY_POINT_GROUP = "bci_runtime.wizard"


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
        Where sessions are kept (``sub-<ID>/ses-<NN>``).
    preset : str
        The simulator's drift preset, when the source is the simulator.
    min_good : float
        Fewest good channels to go on: a fraction of the channels (``<= 1``) or a count.
    """

    def __init__(self, sessions_root: Path, preset: str = "stationary",
                 min_good: float = 0.75) -> None:
        self.sessions_root = Path(sessions_root)
        self.preset = preset
        self.min_good = min_good
        self.step = "patient"
        self.choice: PatientChoice | None = None
        self.session_dir: Path | None = None
        self.bad_channels: set[str] = set()
        self.override: str | None = None
        self.acquisition: Acquisition | None = None
        self._audit: AuditLog | None = None
        self._lock_file: SessionLock | None = None
        self._lock = threading.RLock()  # requests come from the server's threads

    # -- step 1 ------------------------------------------------------------------------
    def choose_patient(self, choice: PatientChoice, by: str = "clinician") -> dict[str, Any]:
        """Create and lock the session, start the signal; on to the signal check."""
        with self._lock:
            self._expect("patient")
            source = source_node(choice, self.preset)
            session_dir = new_session_dir(self.sessions_root, choice.subject)
            lock = SessionLock(session_dir)
            audit = AuditLog(session_dir / "audit.jsonl")
            audit.write("wizard_patient", by=by, choice=choice.model_dump(), preset=self.preset)
            try:
                acquisition = Acquisition(source, monitor_factory=plugin("quality"),
                                          emit_event=self._runtime_event)
                acquisition.start()
            except Exception as exc:  # the folder stays, with why it could not go on
                audit.write("wizard_source_failed", error=str(exc))
                audit.close()
                lock.release()
                raise
            self.choice, self.session_dir = choice, session_dir
            self._lock_file, self._audit, self.acquisition = lock, audit, acquisition
            self.step = "signal"
            return self.state()

    # -- step 2 ------------------------------------------------------------------------
    def quality(self) -> dict[str, Any]:
        """Per-channel quality of the newest seconds, the clinician's marks, and the verdict."""
        with self._lock:
            self._expect("signal")
            acquisition, marked = self.acquisition, sorted(self.bad_channels)
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
            names = self.acquisition.channel_names  # type: ignore[union-attr]
            if channel not in names:
                raise ConfigError(f"no channel {channel!r}; the signal has {', '.join(names)}")
            (self.bad_channels.add if bad else self.bad_channels.discard)(channel)
            self._log("wizard_mark_channel", by=by, channel=channel, bad=bad)
            return self.state()

    def finish_signal_check(self, override_reason: str | None = None,
                            by: str = "clinician") -> dict[str, Any]:
        """Go on to calibration; with too few good channels only with a reason (logged)."""
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
            self.step = "calibration"
            return self.state()

    # -- everywhere --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the page needs to draw itself (also after a reload)."""
        acquisition = self.acquisition
        return {"step": self.step, "steps": list(STEPS),
                "choice": self.choice.model_dump() if self.choice else None,
                "session_dir": str(self.session_dir) if self.session_dir else None,
                "channels": acquisition.channel_names if acquisition else [],
                "bad_channels": sorted(self.bad_channels), "override": self.override,
                "signal_error": str(acquisition.error) if acquisition and acquisition.error
                else None}

    def close(self) -> None:
        """Stop the signal, close the audit trail and release the session."""
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

    def _expect(self, step: str) -> None:
        if self.step != step:
            raise StepOrderError(f"the wizard is at step '{self.step}', not '{step}'",
                              hint="reload the page: it shows the current step")

    def _log(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.write(event, **fields)

    def _runtime_event(self, kind: str, **fields: Any) -> None:
        if kind in ("stream_lost", "stream_stalled", "stream_blocked", "bad_chunk", "failure",
                    "stream_reconnected", "samples_dropped"):
            self._log(f"signal_{kind}", **fields)

