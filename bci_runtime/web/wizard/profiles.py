"""Calibration profiles: what a patient's decoder needs to start again another day.

A profile is a folder ``<sessions root>/sub-<ID>/profiles/<stamp>_ses-<NN>/`` with
``profile.json`` (paradigm, classes, channels used and marked bad, decoder,
co-adaptation, trial window and band, the cue timing, the training verdict,
the session it came from) and ``model.bcimodel``, a copy of the model file
whose SHA-256 the JSON records. A profile is written after training and again
when an online session stops, then with the newest co-adapted model: reloading
it continues co-adaptation where it stopped. Profiles are never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bci_runtime.errors import ConfigError
from bci_runtime.session import check_label, sha256_of

PROFILE_JSON = "profile.json"
MODEL_FILE = "model.bcimodel"
#: what a profile must hold to start an online decoder
REQUIRED = ("paradigm", "classes", "channels", "decoder", "adapt", "tmin", "tmax", "band",
            "model")
#: ... a continuous cursor decoder (no trial window: it decodes bins)
REQUIRED_CURSOR = ("paradigm", "channels", "decoder", "adapt", "band", "bin_s", "model")


def profiles_dir(sessions_root: Path, subject: str) -> Path:
    return Path(sessions_root) / f"sub-{check_label('subject', subject)}" / "profiles"


def save_profile(sessions_root: Path, subject: str, session_label: str,
                 profile: dict[str, Any], model_file: Path, origin: str) -> dict[str, Any]:
    """Write a new profile folder with a copy of ``model_file``; the profile as written.

    Parameters
    ----------
    sessions_root : Path
    subject : str
    session_label : str
        The session it comes from (``ses-03``).
    profile : dict
        The :data:`REQUIRED` fields and anything worth keeping (verdict, timing).
    model_file : Path
        The model to start from (a ``*.bcimodel`` file).
    origin : str
        ``training`` or ``online`` (the newest co-adapted version).
    """
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    base = profiles_dir(sessions_root, subject)
    folder = base / f"{stamp}_{session_label}_{origin}"
    n = 1
    while folder.exists():  # two saves in the same second
        n += 1
        folder = base / f"{stamp}_{session_label}_{origin}-{n}"
    folder.mkdir(parents=True)
    shutil.copyfile(model_file, folder / MODEL_FILE)
    digest = sha256_of(folder / MODEL_FILE)
    written = {**profile, "subject": subject, "session": session_label, "origin": origin,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "model": {"path": str((folder / MODEL_FILE).resolve()), "sha256": digest}}
    tmp = folder / (PROFILE_JSON + ".tmp")
    tmp.write_text(json.dumps(written, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, folder / PROFILE_JSON)
    return {**written, "id": folder.name}


def list_profiles(sessions_root: Path, subject: str) -> list[dict[str, Any]]:
    """The subject's profiles, newest first (unreadable ones listed with their problem)."""
    base = profiles_dir(sessions_root, subject)
    if not base.is_dir():
        return []
    out = []
    for folder in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        try:
            out.append(load_profile(sessions_root, subject, folder.name))
        except ConfigError as exc:
            out.append({"id": folder.name, "error": exc.message})
    return out


def load_profile(sessions_root: Path, subject: str, profile_id: str) -> dict[str, Any]:
    """One profile, checked: its fields are there and its model file is the one it names.

    Raises
    ------
    ConfigError
        Unknown id, unreadable JSON, a missing field, or a model file that is
        missing or changed since the profile was written.
    """
    base = profiles_dir(sessions_root, subject)
    folder = base / profile_id
    if "/" in profile_id or profile_id.startswith(".") or not (folder / PROFILE_JSON).is_file():
        known = [p["id"] for p in list_profiles(sessions_root, subject)] \
            if folder != base and "/" not in profile_id else []
        raise ConfigError(f"subject {subject} has no profile {profile_id!r}",
                          hint=f"choose one of {', '.join(known)}" if known
                          else "calibrate this subject first")
    try:
        profile = json.loads((folder / PROFILE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"profile {profile_id} cannot be read: {exc}",
                          hint="calibrate again, or choose another profile") from None
    required = REQUIRED_CURSOR if profile.get("paradigm") == "cursor" else REQUIRED
    missing = [k for k in required if k not in profile]
    if missing:
        raise ConfigError(f"profile {profile_id} lacks {', '.join(missing)}",
                          hint="calibrate again, or choose another profile")
    model = folder / MODEL_FILE
    if not model.is_file() or sha256_of(model) != profile["model"].get("sha256"):
        raise ConfigError(f"profile {profile_id}: its model file is missing or was changed "
                          "after the profile was written",
                          hint="calibrate again, or choose another profile")
    profile["model"]["path"] = str(model.resolve())  # the folder may have moved
    profile["id"] = profile_id
    return profile



def summary(profile: dict[str, Any]) -> dict[str, Any]:
    """What a page lists of a profile (no paths)."""
    keys = ("id", "error", "created", "session", "origin", "paradigm", "classes", "channels",
            "decoder", "adapt", "accuracy", "chance", "r2", "chance_r2", "good_enough")
    return {k: profile[k] for k in keys if k in profile}
