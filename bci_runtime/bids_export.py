"""Export a session's recorded signals to a BIDS dataset through MNE-BIDS.

For each source node of the session (the manifest's ``devices``) whose signal
stream in the XDF recording is EEG, ECoG or sEEG, the export builds an
:class:`mne.io.RawArray` (in volts) and writes it with
:func:`mne_bids.write_raw_bids`: the data as BrainVision, ``channels.tsv``, the
``*_eeg.json`` / ``*_ieeg.json`` sidecar, ``events.tsv`` from the same node's
marker stream, ``scans.tsv``, ``participants.tsv`` and
``dataset_description.json``.

========== ============== ============================================
XDF type   BIDS datatype  channels
========== ============== ============================================
EEG        ``eeg``        a standard 10-05 montage when names match
ECoG       ``ieeg``       no electrode positions (none are recorded)
sEEG       ``ieeg``       no electrode positions
========== ============== ============================================

Several sessions (and subjects) can go to one BIDS folder; a session already
there is never overwritten. The runtime's own metadata (pipeline, code
version, configuration hash, seed, stream) go to the sidecar under
``BciRuntime``, and ``SoftwareVersions`` names the runtime's version.

``mne-bids`` and ``pybv`` (the BrainVision writer) are imported lazily, with
an install hint when missing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError, DependencyError, RecordingError, RunError
from bci_runtime.session import bids_label
from bci_runtime.session_store import SessionInfo, recording_path

log = logging.getLogger(__name__)

# XDF stream type (lower case) -> (BIDS datatype, MNE channel type of untyped channels)
SIGNAL_TYPES: dict[str, tuple[str, str]] = {
    "eeg": ("eeg", "eeg"), "ecog": ("ieeg", "ecog"), "seeg": ("ieeg", "seeg"),
    "ieeg": ("ieeg", "seeg"),
}
# XDF channel type (lower case) -> MNE channel type; anything else becomes "misc"
_CHANNEL_TYPES = {
    "eeg": "eeg", "ecog": "ecog", "seeg": "seeg", "dbs": "dbs", "eog": "eog", "emg": "emg",
    "ecg": "ecg", "stim": "stim", "trigger": "stim", "resp": "resp", "bio": "bio",
    "gsr": "gsr", "temperature": "temperature", "misc": "misc",
}
_VOLTAGE_TYPES = {"eeg", "ecog", "seeg", "dbs", "eog", "emg", "ecg"}
# channel unit (lower case) -> factor to volts
_TO_VOLTS = {
    "v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3,
    "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "microvolt": 1e-6, "microvolts": 1e-6,
    "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9,
}
_INSTALL_HINT = "install it: pip install 'mne-bids>=0.15' pybv"


@dataclass
class XdfStream:
    """One stream of a session recording.

    Attributes
    ----------
    name, type : str
        XDF stream name (``<node>.<port>``) and content type.
    node, port : str or None
        The runtime node and port that emitted it (from ``<desc><bci_runtime>``).
    srate : float
        Nominal rate (Hz); 0 for irregular streams.
    channel_names, channel_types, channel_units : list of str, shape (n_channels,)
        Channel metadata as recorded ("" when absent).
    timestamps : ndarray, shape (n_samples,)
        Runtime clock times of the samples.
    data : ndarray, shape (n_samples, n_channels), or list of str, shape (n_samples,)
        The samples; the first channel's strings for string (marker) streams.
    """

    name: str
    type: str
    node: str | None
    port: str | None
    srate: float
    channel_names: list[str]
    channel_types: list[str]
    channel_units: list[str]
    timestamps: np.ndarray
    data: Any

    @property
    def is_markers(self) -> bool:
        return isinstance(self.data, list)


@dataclass
class ExportedRun:
    """One stream written to the BIDS dataset."""

    stream: str
    datatype: str
    bids_path: str
    channels: int
    srate: float
    n_times: int
    events: int
    skipped_events: int = 0
    gaps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ExportReport:
    """What ``export_bids`` wrote."""

    root: Path
    session: str
    runs: list[ExportedRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "session": self.session,
                "runs": [r.as_dict() for r in self.runs], "warnings": self.warnings}

    def describe(self) -> list[str]:
        lines = [f"exported {self.session} to BIDS dataset {self.root}:"]
        for r in self.runs:
            lines.append(f"  {r.stream} -> {r.bids_path}  ({r.datatype}, {r.channels} ch @ "
                         f"{r.srate:g} Hz, {r.n_times} samples, {r.events} events)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines


# -- reading the recording ----------------------------------------------------------------------
def read_recording(path: Path) -> list[XdfStream]:
    """Every stream of an XDF recording, with raw (runtime clock) timestamps.

    Raises
    ------
    RecordingError
        When pyxdf cannot read the file.
    """
    import pyxdf

    try:
        raw_streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False,
                                        dejitter_timestamps=False)
    except Exception as exc:  # noqa: BLE001 - pyxdf raises anything on a damaged file
        raise RecordingError(f"recording '{path}' cannot be read: {exc}",
                          hint="`bci sessions show --verify` checks the file; after a crash, "
                               "`bci record repair FILE` rewrites its footers") from None
    return [_stream(s) for s in raw_streams]


def _stream(raw: dict[str, Any]) -> XdfStream:
    info = raw["info"]
    desc = _first(info, "desc") or {}
    runtime = _first(desc, "bci_runtime") or {}
    channels_node = _first(desc, "channels")
    channels = (channels_node.get("channel") or []) if isinstance(channels_node, dict) else []
    count = int(_first(info, "channel_count") or 0)
    names = [_text(_first(c, "label")) for c in channels] or [f"ch{i + 1}" for i in range(count)]
    timestamps = np.asarray(raw["time_stamps"], dtype=np.float64)
    series = raw["time_series"]
    if _first(info, "channel_format") == "string":
        data: Any = [str(row[0]) if len(row) else "" for row in series]
    else:
        data = np.asarray(series, dtype=np.float64).reshape(len(timestamps), count)
    return XdfStream(
        name=_text(_first(info, "name")), type=_text(_first(info, "type")),
        node=_text(_first(runtime, "node")) or None, port=_text(_first(runtime, "port")) or None,
        srate=float(_first(info, "nominal_srate") or 0.0), channel_names=names,
        channel_types=[_text(_first(c, "type")) for c in channels] or [""] * count,
        channel_units=[_text(_first(c, "unit")) for c in channels] or [""] * count,
        timestamps=timestamps, data=data)


def _first(mapping: Any, key: str) -> Any:
    """pyxdf's XML dicts hold every value in a list: the first one, else None."""
    if not isinstance(mapping, dict):
        return None
    value = mapping.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


# -- choosing what to export --------------------------------------------------------------------
def signal_streams(info: SessionInfo, streams: list[XdfStream]) -> list[XdfStream]:
    """The EEG / ECoG / sEEG streams that the session's source nodes emitted."""
    devices = info.get("devices") or {}
    return [s for s in streams
            if s.node in devices and s.type.lower() in SIGNAL_TYPES and not s.is_markers]


def marker_streams(node: str, streams: list[XdfStream]) -> list[XdfStream]:
    """The string (marker) streams of ``node``."""
    return [s for s in streams if s.node == node and s.is_markers]


# -- building the Raw ---------------------------------------------------------------------------
def to_volts(stream: XdfStream, ch_types: list[str]) -> tuple[np.ndarray, list[str]]:
    """The stream's data as MNE wants it, and warnings about units.

    Voltage channels are scaled to volts from their recorded unit; a voltage
    channel without a known unit is taken as volts (the runtime's own unit).

    Returns
    -------
    data : ndarray, shape (n_channels, n_times)
    notes : list of str
    """
    scales = np.ones(len(ch_types))
    unknown = []
    for i, (ch_type, unit) in enumerate(zip(ch_types, stream.channel_units)):
        if ch_type not in _VOLTAGE_TYPES:
            continue
        factor = _TO_VOLTS.get(unit.lower())
        if factor is None:
            unknown.append(stream.channel_names[i])
        else:
            scales[i] = factor
    notes = []
    if unknown:
        notes.append(f"{stream.name}: {len(unknown)} channel(s) without a voltage unit "
                     f"({', '.join(unknown[:4])}{'...' if len(unknown) > 4 else ''}) "
                     "taken as volts")
    return stream.data.T * scales[:, None], notes


def channel_types(stream: XdfStream) -> list[str]:
    """MNE channel type of each channel, shape (n_channels,); untyped ones follow the stream."""
    default = SIGNAL_TYPES[stream.type.lower()][1]
    return [_CHANNEL_TYPES.get(t.lower(), "misc") if t else default
            for t in stream.channel_types]


def sample_positions(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Fractional sample index of each time in ``times``, shape (n_times,).

    Interpolated over the recorded timestamps rather than computed from the
    first one, so that events stay on the right sample after a gap.
    """
    return np.interp(times, timestamps, np.arange(len(timestamps), dtype=np.float64))


def build_raw(info: SessionInfo, stream: XdfStream, markers: list[XdfStream]
              ) -> tuple[Any, int, int, list[str]]:
    """An ``mne.io.RawArray`` of ``stream`` with the markers as annotations.

    Returns
    -------
    raw : mne.io.RawArray
    events : int
        Annotations added.
    skipped : int
        Markers outside the recorded samples (not exported).
    notes : list of str
        Warnings for the report.
    """
    import mne

    ch_types = channel_types(stream)
    data, notes = to_volts(stream, ch_types)
    mne_info = mne.create_info(stream.channel_names, stream.srate, ch_types, verbose=False)
    line_freq = ((info.get("devices") or {}).get(stream.node) or {}).get("params", {}) \
        .get("line_freq")
    if isinstance(line_freq, (int, float)):
        mne_info["line_freq"] = float(line_freq)
    raw = mne.io.RawArray(data, mne_info, verbose=False)
    started = info.get("started")
    if isinstance(started, str):
        try:
            raw.set_meas_date(_dt.datetime.fromisoformat(started).astimezone(_dt.timezone.utc))
        except ValueError:
            notes.append(f"manifest 'started' ({started!r}) is not a date: no measurement date")

    times = np.concatenate([m.timestamps for m in markers]) if markers else np.empty(0)
    labels = [label for m in markers for label in m.data]
    t0, t_end = stream.timestamps[0], stream.timestamps[-1] + 1.0 / stream.srate
    inside = (times >= t0) & (times < t_end)  # markers before the first or after the last
    skipped = int(np.count_nonzero(~inside))  # sample have no place in the recording
    onsets = sample_positions(stream.timestamps, times[inside]) / stream.srate
    kept = [label for label, keep in zip(labels, inside) if keep]
    if len(onsets):
        order = np.argsort(onsets, kind="stable")
        raw.set_annotations(mne.Annotations(onsets[order], 0.0, [kept[i] for i in order]))
    if skipped:
        notes.append(f"{stream.name}: {skipped} marker(s) outside the recorded samples "
                     "were not exported")
    if stream.type.lower() == "eeg":
        _set_standard_montage(raw)
    return raw, len(onsets), skipped, notes


def _set_standard_montage(raw: Any) -> None:
    """10-05 positions for the channels named after it; the others get none."""
    import mne

    # MNE 1.13 renamed the 10-05 template ("standard_1005" is deprecated, then removed)
    name = ("colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages()
            else "standard_1005")
    montage = mne.channels.make_standard_montage(name)
    known = {name.lower() for name in montage.ch_names}
    if any(name.lower() in known for name in raw.ch_names):
        raw.set_montage(montage, match_case=False, on_missing="ignore", verbose=False)


def count_gaps(stream: XdfStream) -> int:
    """Places where consecutive samples are more than 1.5 sample periods apart."""
    if stream.srate <= 0 or len(stream.timestamps) < 2:
        return 0
    return int(np.count_nonzero(np.diff(stream.timestamps) > 1.5 / stream.srate))


# -- writing ------------------------------------------------------------------------------------
def _import_mne_bids() -> Any:
    try:
        import mne_bids
        import pybv  # noqa: F401 - mne-bids writes BrainVision through it
    except ImportError as exc:
        raise DependencyError(f"exporting to BIDS needs mne-bids and pybv ({exc})",
                              hint=_INSTALL_HINT) from None
    return mne_bids


def check_out_folder(out: Path) -> None:
    """``out`` must be absent, empty, or an existing BIDS dataset (to add sessions to it)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file", hint="give a folder for the BIDS dataset")
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset_description.json").is_file():
        raise ConfigError(f"--out '{out}' is not empty and is not a BIDS dataset",
                          hint="give a new or empty folder, or a BIDS dataset that "
                               "`bci sessions export-bids` wrote before")


def export_bids(info: SessionInfo, out: Path) -> ExportReport:
    """Write the session's EEG / iEEG signal streams to the BIDS dataset ``out``.

    Parameters
    ----------
    info : SessionInfo
        A readable session with a recording.
    out : Path
        BIDS root: a new or empty folder, or a BIDS dataset to add the session to.

    Returns
    -------
    ExportReport

    Raises
    ------
    ConfigError
        Unreadable session, no recording, no EEG/iEEG stream, ``out`` not
        usable, or the session already exported there.
    DependencyError
        mne-bids or pybv missing.
    """
    mne_bids = _import_mne_bids()
    out = Path(out)
    if out.resolve().is_relative_to(info.path.resolve()):
        raise ConfigError(f"--out '{out}' is inside the session folder '{info.path}'",
                          hint="sessions are kept as recorded (their files are checksummed): "
                               "export to a folder outside them")
    check_out_folder(out)
    path = recording_path(info)
    streams = read_recording(path)
    signals = [s for s in signal_streams(info, streams) if s.srate > 0 and len(s.timestamps)]
    if not signals:
        found = ", ".join(f"{s.name} ({s.type})" for s in streams) or "none"
        raise ConfigError(f"session {info.key} has no EEG, ECoG or sEEG signal stream from a "
                          f"source node to export (streams: {found})",
                          hint="BIDS export takes the raw signals of the session's devices")
    report = ExportReport(root=out, session=info.key)
    plans = _plan(info, signals, out, mne_bids)
    _check_not_exported(plans)
    _describe_dataset(info, out, mne_bids)
    for stream, bids_path in plans:
        report.runs.append(_write_one(info, stream, marker_streams(stream.node or "", streams),
                                      bids_path, report, mne_bids))
    return report


def _plan(info: SessionInfo, signals: list[XdfStream], out: Path, mne_bids: Any
          ) -> list[tuple[XdfStream, Any]]:
    """The BIDS path of each stream; ``acq-<node>`` tells apart streams of one datatype."""
    datatypes = [SIGNAL_TYPES[s.type.lower()][0] for s in signals]
    subject = bids_label(info.subject or "01")
    session = bids_label(info.session) if info.session else None
    task = bids_label(str(info.get("task") or info.get("pipeline") or "run"))
    plans = []
    for stream, datatype in zip(signals, datatypes):
        acq = bids_label(f"{stream.node}{stream.port}") if datatypes.count(datatype) > 1 \
            else None
        plans.append((stream, mne_bids.BIDSPath(
            subject=subject, session=session, task=task, acquisition=acq, datatype=datatype,
            suffix=datatype, extension=".vhdr", root=out)))
    return plans


def _check_not_exported(plans: list[tuple[XdfStream, Any]]) -> None:
    """Refuse before writing anything when one of the recordings is already there."""
    for _, bids_path in plans:
        if bids_path.fpath.exists():
            raise ConfigError(f"'{bids_path.fpath}' already exists: this session was exported "
                              "there before", hint="exports never overwrite; give another "
                              "--out, or delete that subject's session folder first")


def _describe_dataset(info: SessionInfo, out: Path, mne_bids: Any) -> None:
    """``dataset_description.json`` naming the runtime, for a new dataset only."""
    if (out / "dataset_description.json").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    version = (info.get("code_version") or {}).get("package", "unknown")
    mne_bids.make_dataset_description(
        path=out, name="bci-runtime sessions", dataset_type="raw",
        generated_by=[{"Name": "bci-runtime", "Version": str(version),
                       "Description": "bci sessions export-bids"}], verbose=False)


def _write_one(info: SessionInfo, stream: XdfStream, markers: list[XdfStream], bids_path: Any,
               report: ExportReport, mne_bids: Any) -> ExportedRun:
    raw, n_events, skipped, notes = build_raw(info, stream, markers)
    report.warnings.extend(notes)
    gaps = count_gaps(stream)
    if gaps:
        report.warnings.append(f"{stream.name}: {gaps} gap(s) in the timestamps; the samples "
                               "are written back to back (events stay on their samples)")
    with warnings.catch_warnings(record=True) as caught:
        # MNE/MNE-BIDS warn about every conversion (to BrainVision, float32); keep them in
        # the debug log rather than on the operator's terminal
        warnings.simplefilter("always")
        try:
            mne_bids.write_raw_bids(raw, bids_path, format="BrainVision", allow_preload=True,
                                    overwrite=False, verbose=False)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RunError(f"mne-bids could not write {stream.name} of {info.key} to "
                           f"'{bids_path.fpath}': {exc}",
                           hint=f"what was written of this session under '{bids_path.root}' "
                                "may be incomplete: delete it before exporting again") from exc
    for w in caught:
        log.debug("mne-bids: %s", w.message)
    if raw.info["dig"]:
        _note_template_positions(bids_path)
    mne_bids.update_sidecar_json(
        bids_path.copy().update(extension=".json"), _sidecar(info, stream), verbose=False)
    return ExportedRun(stream=stream.name, datatype=bids_path.datatype,
                       bids_path=str(bids_path.fpath.relative_to(bids_path.root)),
                       channels=len(stream.channel_names), srate=stream.srate,
                       n_times=len(stream.timestamps), events=n_events,
                       skipped_events=skipped, gaps=gaps)


def _note_template_positions(bids_path: Any) -> None:
    """Say in ``coordsystem.json`` that the electrode positions are a template."""
    prefix = f"sub-{bids_path.subject}" + (f"_ses-{bids_path.session}" if bids_path.session
                                           else "")
    for path in Path(bids_path.directory).glob(f"{prefix}_*coordsystem.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["EEGCoordinateSystemDescription"] = (
            "template positions of the 10-05 system (MNE-Python's standard montage) "
            "matched by channel name, not digitized")
        path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def _sidecar(info: SessionInfo, stream: XdfStream) -> dict[str, Any]:
    """What the runtime adds to the ``*_eeg.json`` / ``*_ieeg.json`` sidecar."""
    code = info.get("code_version") or {}
    version = f"bci-runtime {code.get('package', 'unknown')}"
    if code.get("git_commit"):
        dirty = ", modified" if code.get("git_dirty") else ""
        version += f" (git {code['git_commit'][:12]}{dirty})"
    device = (info.get("devices") or {}).get(stream.node) or {}
    return {
        # mne-bids guesses the manufacturer from the file format (BrainVision): not known here
        "Manufacturer": "n/a",
        "SoftwareVersions": version,
        "BciRuntime": {
            "pipeline": info.get("pipeline"), "pipeline_file": info.get("pipeline_file"),
            "config_sha256": info.get("config_sha256"), "seed": info.get("seed"),
            "code_version": code, "session": info.key, "stream": stream.name,
            "node": stream.node, "device_type": device.get("type"),
            "started": info.get("started"), "stopped": info.get("stopped"),
            "status": info.get("status"),
        },
    }
