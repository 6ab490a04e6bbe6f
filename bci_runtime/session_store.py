"""Finding and reading the session folders that runs leave behind.

A sessions root holds ``sub-<subject>/ses-<NN>/`` folders (see
:mod:`bci_runtime.session`). This module lists them, loads their manifest and
summary, checks every file against ``SHA256SUMS`` and the manifest's
``files``, and locates the XDF recording. It only reads: nothing here ever
changes a session folder.

A folder whose manifest is missing or damaged is still listed, as
*unreadable* with the reason, so one bad folder never hides the others.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bci_runtime.errors import ConfigError, RecordingError
from bci_runtime.session import CHECKSUMS, sha256_of

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
_SUBJECT_RE = re.compile(r"^sub-([A-Za-z0-9]+)$")
_SESSION_RE = re.compile(r"^ses-([A-Za-z0-9]+)$")
_SHA_LINE_RE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass
class SessionInfo:
    """One session folder and what its manifest says.

    Attributes
    ----------
    path : Path
        The session folder.
    manifest : dict or None
        The parsed ``manifest.json``; None when it is missing or damaged.
    problem : str or None
        Why the manifest could not be read (None when it was).
    """

    path: Path
    manifest: dict[str, Any] | None
    problem: str | None = None

    @property
    def readable(self) -> bool:
        """True when the manifest was read."""
        return self.manifest is not None

    @property
    def subject(self) -> str | None:
        """Subject label, from the manifest, else from the ``sub-<id>`` parent folder."""
        if self.manifest and self.manifest.get("subject"):
            return str(self.manifest["subject"])
        match = _SUBJECT_RE.match(self.path.parent.name)
        return match.group(1) if match else None

    @property
    def session(self) -> str | None:
        """Session label, from the manifest, else from the ``ses-<NN>`` folder name."""
        if self.manifest and self.manifest.get("session"):
            return str(self.manifest["session"])
        match = _SESSION_RE.match(self.path.name)
        return match.group(1) if match else None

    @property
    def key(self) -> str:
        """``sub-<id>/ses-<NN>`` (the folder name when it does not follow the layout)."""
        if self.subject is not None and self.session is not None:
            return f"sub-{self.subject}/ses-{self.session}"
        return self.path.name

    def get(self, name: str, default: Any = None) -> Any:
        """A manifest field, ``default`` when absent or when the manifest is unreadable."""
        return (self.manifest or {}).get(name, default)

    @property
    def duration_s(self) -> float | None:
        """Seconds from ``started`` to ``stopped``; None while unknown (running, crashed)."""
        start, stop = _parse_time(self.get("started")), _parse_time(self.get("stopped"))
        if start is None or stop is None:
            return None
        return (stop - start).total_seconds()

    @property
    def finalized(self) -> bool:
        """True when the run closed the session (``SHA256SUMS`` written, ``stopped`` set)."""
        return (self.path / CHECKSUMS).is_file() and self.get("stopped") is not None

    def size_bytes(self) -> int:
        """Total size of the files in the folder."""
        return sum(p.stat().st_size for p in _files(self.path))

    def as_row(self) -> dict[str, Any]:
        """What ``bci sessions list`` shows of the session (JSON-ready)."""
        streams = self.get("streams")
        return {
            "key": self.key, "path": str(self.path), "subject": self.subject,
            "session": self.session, "task": self.get("task"),
            "pipeline": self.get("pipeline"), "started": self.get("started"),
            "stopped": self.get("stopped"), "duration_s": self.duration_s,
            "status": self.get("status") if self.readable else "unreadable",
            "streams": len(streams) if isinstance(streams, list) and streams else None,
            "size_bytes": self.size_bytes(), "problem": self.problem,
        }


@dataclass
class VerifyReport:
    """What checking a session's files against ``SHA256SUMS`` and the manifest found.

    Attributes
    ----------
    checked : list of str
        Files whose SHA-256 matched (paths relative to the session folder).
    modified : list of str
        Files whose content differs from their recorded SHA-256.
    missing : list of str
        Files listed but absent.
    inconsistent : list of str
        Files whose SHA-256 differs between ``SHA256SUMS`` and the manifest, or that
        only one of the two lists (one of them was edited).
    unlisted : list of str
        Files in the folder that neither lists (reported, not an error: nothing
        recorded was changed).
    problems : list of str
        Anything else that prevents the check (no ``SHA256SUMS``, malformed lines).
    """

    checked: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every listed file is present and unchanged."""
        return not (self.modified or self.missing or self.inconsistent or self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "modified": self.modified,
                "missing": self.missing, "inconsistent": self.inconsistent,
                "unlisted": self.unlisted, "problems": self.problems}

    def describe(self) -> list[str]:
        """Human-readable lines, the failures first."""
        lines = [f"MODIFIED  {p}" for p in self.modified]
        lines += [f"MISSING   {p}" for p in self.missing]
        lines += [f"DIFFERS   {p} (SHA256SUMS and manifest.json disagree)"
                  for p in self.inconsistent]
        lines += [f"PROBLEM   {p}" for p in self.problems]
        lines += [f"unlisted  {p} (not part of the recorded session)" for p in self.unlisted]
        verdict = ("ok" if self.ok else "FAILED")
        lines.append(f"verify: {verdict}: {len(self.checked)} file(s) match their SHA-256")
        return lines


# -- reading one folder -------------------------------------------------------------------------
def load_session(path: Path) -> SessionInfo:
    """Read the session folder ``path``; a damaged manifest gives an unreadable SessionInfo.

    Parameters
    ----------
    path : Path
        A session folder (``.../sub-<id>/ses-<NN>``).

    Returns
    -------
    SessionInfo
        With ``manifest`` None and ``problem`` set when the manifest is missing,
        not JSON, or not a JSON object.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return SessionInfo(path, None, f"no {MANIFEST}")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return SessionInfo(path, None, f"{MANIFEST} is not valid JSON (line {exc.lineno}: "
                                       f"{exc.msg})")
    except (OSError, UnicodeDecodeError) as exc:
        return SessionInfo(path, None, f"{MANIFEST} cannot be read ({exc})")
    if not isinstance(data, dict):
        return SessionInfo(path, None, f"{MANIFEST} is not a JSON object")
    return SessionInfo(path, data)


def load_summary(info: SessionInfo) -> dict[str, Any] | None:
    """The session's ``summary.json``; None when absent or damaged (a crashed run)."""
    try:
        data = json.loads((info.path / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def recording_path(info: SessionInfo) -> Path:
    """The session's XDF recording.

    Raises
    ------
    ConfigError
        When the manifest is unreadable or names no recording.
    RecordingError
        When the recording file is absent.
    """
    if not info.readable:
        raise ConfigError(f"session '{info.path}' cannot be read: {info.problem}",
                          hint="`bci sessions show --verify` checks its files")
    name = info.get("recording")
    if not name:
        raise ConfigError(f"session {info.key} has no recording",
                          hint="the run stopped before its streams were recorded; "
                               f"see {info.path / 'events.jsonl'}")
    rel = PurePosixPath(str(name))
    if rel.is_absolute() or ".." in rel.parts:  # a manifest must not point outside its folder
        raise ConfigError(f"session {info.key}: the manifest's recording '{name}' is not a "
                          "file of the session folder", hint="the manifest was edited; "
                          "`bci sessions show --verify` checks it")
    path = info.path / rel
    if not path.is_file():
        raise RecordingError(f"session {info.key}: its recording '{path}' is missing",
                          hint="`bci sessions show --verify` lists the missing files")
    return path


def verify_session(info: SessionInfo) -> VerifyReport:
    """Check every file against ``SHA256SUMS`` and the manifest's ``files``.

    ``SHA256SUMS`` lists every file, the manifest included; the manifest lists
    every file but itself and ``SHA256SUMS``. Both must agree and match the
    files on disk.
    """
    report = VerifyReport()
    sums = _read_checksums(info.path / CHECKSUMS, report)
    if sums is None:
        return report
    for rel, expected in sums.items():
        path = info.path / rel
        if not path.is_file():
            report.missing.append(rel)
        elif sha256_of(path) != expected.lower():
            report.modified.append(rel)
        else:
            report.checked.append(rel)
    listed = info.get("files")
    if info.readable and isinstance(listed, dict):
        for rel in sorted(set(listed) | {r for r in sums if r != "manifest.json"}):
            if rel in (CHECKSUMS, "manifest.json") or rel in report.missing:
                continue
            if str(listed.get(rel, "")).lower() != sums.get(rel, "").lower():
                report.inconsistent.append(rel)
    elif info.readable:
        report.problems.append(f"{MANIFEST} has no 'files' (the run did not finish)")
    on_disk = {p.relative_to(info.path).as_posix() for p in _files(info.path)}
    report.unlisted = sorted(on_disk - set(sums) - {CHECKSUMS})
    return report


def _read_checksums(path: Path, report: VerifyReport) -> dict[str, str] | None:
    """``SHA256SUMS`` as relative path -> hex digest; None (and a problem) when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.problems.append(f"no {CHECKSUMS}: the run did not finish (still running, "
                               "or it crashed), so there is nothing to check against")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(f"{CHECKSUMS} cannot be read ({exc})")
        return None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SHA_LINE_RE.match(line)
        rel = PurePosixPath(match.group(2)) if match else None
        if match is None or rel is None or rel.is_absolute() or ".." in rel.parts:
            report.problems.append(f"{CHECKSUMS} line {number} is not '<sha256>  <file>' "
                                   "of a file in the session folder")
            continue
        sums[rel.as_posix()] = match.group(1)
    return sums


# -- finding sessions ---------------------------------------------------------------------------
def find_sessions(root: Path, subject: str | None = None) -> list[SessionInfo]:
    """Every ``sub-*/ses-*`` folder under ``root``, sorted by subject then session.

    Parameters
    ----------
    root : Path
        The sessions root (``--sessions-root`` of ``bci run``).
    subject : str, optional
        Only this subject (with or without the ``sub-`` prefix).

    Raises
    ------
    ConfigError
        When ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"sessions root '{root}' is not a folder",
                          hint="give the folder sessions were written to with --root DIR "
                               "(the --sessions-root of `bci run` / `bci demo`; default "
                               "./sessions)")
    wanted = subject[4:] if subject and subject.startswith("sub-") else subject
    found = []
    for subject_dir in _children(root, _SUBJECT_RE):
        if wanted is not None and subject_dir.name != f"sub-{wanted}":
            continue
        found.extend(load_session(d) for d in _children(subject_dir, _SESSION_RE))
    return sorted(found, key=lambda s: (_natural(s.path.parent.name), _natural(s.path.name)))


def resolve_session(spec: str, root: Path) -> SessionInfo:
    """The session that ``spec`` names.

    Parameters
    ----------
    spec : str
        A session folder path; or ``sub-<id>/ses-<NN>`` under ``root``; or
        ``sub-<id>`` for that subject's latest session.
    root : Path
        The sessions root.

    Raises
    ------
    ConfigError
        When nothing matches; names the nearest sessions under ``root``.
    """
    candidates = [Path(spec), Path(root) / spec]
    for path in candidates:
        if path.is_dir() and (_SESSION_RE.match(path.name) or (path / MANIFEST).exists()):
            return load_session(path)
    for path in candidates:  # a subject folder: its latest session
        if path.is_dir() and _SUBJECT_RE.match(path.name):
            sessions = sorted(_children(path, _SESSION_RE), key=lambda p: _natural(p.name))
            if sessions:
                return load_session(sessions[-1])
    raise ConfigError(f"no session '{spec}' (looked for the folders '{candidates[0]}' and "
                      f"'{candidates[1]}')", hint=_nearby_hint(spec, Path(root)))


def _nearby_hint(spec: str, root: Path) -> str:
    """Name the sessions under ``root`` closest to ``spec``."""
    try:
        keys = [s.key for s in find_sessions(root)]
    except ConfigError:
        return (f"the sessions root '{root}' does not exist: give the session's folder, or "
                "--root DIR")
    if not keys:
        return f"there are no sessions under '{root}'; give the session's folder, or --root DIR"
    near = difflib.get_close_matches(spec.strip("/"), keys, n=5, cutoff=0.5) or keys[-5:]
    return (f"sessions under '{root}' include {', '.join(near)}; "
            f"`bci sessions list --root {root}` lists them all")


def _children(folder: Path, pattern: re.Pattern[str]) -> Iterator[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return iter(())
    return (p for p in entries if p.is_dir() and pattern.match(p.name))


def _files(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key ordering ``ses-2`` before ``ses-10``."""
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", text))


def _parse_time(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
