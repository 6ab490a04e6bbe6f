"""Tests of ``bci sessions``: list, show, verify, and BIDS export read back with MNE-BIDS.

Real sessions are made once per module by ``bci demo --fast`` (twice: ses-01 and
ses-02) and by a small ECoG pipeline on the simulated clock; tests that damage a
session work on a copy.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from bci_runtime import cli, sessions_cli
from bci_runtime.bids_export import (
    XdfStream,
    build_raw,
    channel_types,
    count_gaps,
    sample_positions,
    to_volts,
)
from bci_runtime.session_store import SessionInfo, load_session

mne_bids = pytest.importorskip("mne_bids")
pytest.importorskip("pybv")
pyxdf = pytest.importorskip("pyxdf")

ECOG_PIPELINE = """\
name: ecog-test
seed: 3
clock: simulated
duration: 5
nodes:
  grid:
    type: simulated_ecog
    params: {n_channels: 16, srate: 500, chunk_size: 25, kinematics: fingers}
  hg:
    type: bandpass
    params: {low: 70, high: 150, order: 4}
    inputs: {signal: grid.signal}
"""


def _quiet_main(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli.main(argv)


@pytest.fixture(autouse=True)
def _installed_command() -> None:
    """``bci sessions`` comes from the installed entry point."""
    if not any(ep.name == "sessions" for ep in entry_points(group=cli.COMMAND_GROUP)):
        pytest.fail("the 'sessions' entry point is not installed: pip install -e .")


def bci(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``bci sessions ARGV`` through :func:`bci_runtime.cli.main`: exit code, stdout, stderr."""
    capsys.readouterr()
    code = cli.main(["sessions", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


def bci_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code, out, _ = bci(capsys, *argv, "--json")
    return code, json.loads(out)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo sessions of subject 01 (ses-01, ses-02), 20 s each on the simulated clock."""
    sessions = tmp_path_factory.mktemp("demo") / "sessions"
    for _ in range(2):
        assert _quiet_main(["demo", "--fast", "--duration", "20", "--sessions-root",
                            str(sessions), "--json"]) == 0
    return sessions


@pytest.fixture(scope="module")
def ecog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 5 s ECoG session of subject P7."""
    folder = tmp_path_factory.mktemp("ecog")
    pipeline = folder / "ecog.yaml"
    pipeline.write_text(ECOG_PIPELINE)
    sessions = folder / "sessions"
    assert _quiet_main(["run", str(pipeline), "--sessions-root", str(sessions),
                        "--subject", "P7", "--json"]) == 0
    return sessions


@pytest.fixture
def root_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of the demo sessions that a test may damage."""
    return Path(shutil.copytree(root, tmp_path / "sessions"))


def xdf_streams(session: Path) -> dict[str, dict]:
    """The session's XDF streams by name, read with pyxdf itself (raw timestamps)."""
    (path,) = session.glob("*_recording.xdf")
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False,
                                dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def read_bids(out: Path, subject: str, session: str, task: str, datatype: str):
    bids_path = mne_bids.BIDSPath(subject=subject, session=session, task=task,
                                  datatype=datatype, root=out)
    with warnings.catch_warnings():  # iEEG without positions: mne-bids warns on reading
        warnings.simplefilter("ignore")
        raw = mne_bids.read_raw_bids(bids_path, verbose=False)
    return bids_path, raw.load_data()


# -- list ---------------------------------------------------------------------------------------
def test_list_shows_both_sessions_in_order(root: Path, capsys) -> None:
    code, data = bci_json(capsys, "list", "--root", root)
    assert code == 0 and data["ok"]
    rows = data["sessions"]
    assert [r["key"] for r in rows] == ["sub-01/ses-01", "sub-01/ses-02"]
    for r in rows:
        assert r["status"] == "completed" and r["task"] == "demo" and r["problem"] is None
        assert r["streams"] == 8 and r["recorded_s"] == pytest.approx(20.0)
        assert r["size_bytes"] > 0 and r["duration_s"] is not None

    code, out, _ = bci(capsys, "list", "--root", root)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("SESSION")
    assert lines[1].startswith("sub-01/ses-01") and lines[2].startswith("sub-01/ses-02")
    assert "completed" in lines[1] and "20.0 s" in lines[1]
    assert "2 session(s)" in lines[-1]


def test_list_filters_by_subject_and_says_when_empty(root: Path, tmp_path: Path,
                                                    capsys) -> None:
    code, data = bci_json(capsys, "list", "--root", root, "--subject", "sub-01")
    assert code == 0 and len(data["sessions"]) == 2
    code, out, _ = bci(capsys, "list", "--root", root, "--subject", "02")
    assert code == 0 and "no sessions of subject 02" in out
    code, out, _ = bci(capsys, "list", "--root", tmp_path)
    assert code == 0 and "no sessions" in out


def test_list_missing_root_is_a_usage_error(tmp_path: Path, capsys) -> None:
    code, out, err = bci(capsys, "list", "--root", tmp_path / "nowhere")
    assert code == 2
    assert "is not a folder" in err and "--root" in err


def test_corrupt_manifest_is_listed_as_unreadable(root_copy: Path, capsys) -> None:
    broken = root_copy / "sub-01" / "ses-03"
    shutil.copytree(root_copy / "sub-01" / "ses-01", broken)
    (broken / "manifest.json").write_text('{"subject": "01", "sess')
    (root_copy / "sub-02" / "ses-01").mkdir(parents=True)  # a folder with no manifest at all

    code, data = bci_json(capsys, "list", "--root", root_copy)
    assert code == 0
    rows = {r["key"]: r for r in data["sessions"]}
    assert list(rows) == ["sub-01/ses-01", "sub-01/ses-02", "sub-01/ses-03", "sub-02/ses-01"]
    assert rows["sub-01/ses-03"]["status"] == "unreadable"
    assert "not valid JSON" in rows["sub-01/ses-03"]["problem"]
    assert rows["sub-02/ses-01"]["problem"] == "no manifest.json"

    code, out, _ = bci(capsys, "list", "--root", root_copy)
    (line,) = [x for x in out.splitlines() if x.startswith("sub-01/ses-03")]
    assert code == 0 and "unreadable: manifest.json is not valid JSON" in line
    assert "2 unreadable" in out

    # show says why, and --verify still checks the files (the manifest is the modified one)
    code, out, err = bci(capsys, "show", "sub-01/ses-03", "--root", root_copy)
    assert code == 1 and "unreadable" in out and "cannot be read" in err
    code, data = bci_json(capsys, "show", "sub-01/ses-03", "--root", root_copy, "--verify")
    assert code == 1 and not data["ok"]
    assert data["verify"]["modified"] == ["manifest.json"]


# -- show ---------------------------------------------------------------------------------------
def test_show_with_verify_passes(root: Path, capsys) -> None:
    code, data = bci_json(capsys, "show", "sub-01/ses-02", "--root", root, "--verify")
    assert code == 0 and data["ok"]
    assert data["session"] == "sub-01/ses-02"
    manifest = data["manifest"]
    assert manifest["pipeline"] == "demo" and manifest["status"] == "completed"
    assert manifest["devices"]["eeg"]["type"] == "simulated_eeg"
    assert {s["name"] for s in manifest["streams"]} >= {"eeg.signal", "eeg.markers"}
    assert data["summary"]["samples"] == 5000
    verify = data["verify"]
    assert verify["ok"] and not (verify["modified"] or verify["missing"])
    assert "manifest.json" in verify["checked"] and len(verify["checked"]) == 5

    code, out, _ = bci(capsys, "show", "sub-01/ses-02", "--root", root, "--verify")
    assert code == 0
    assert "pipeline  demo" in out and manifest["config_sha256"] in out
    assert "eeg.signal" in out and "250 Hz" in out and "verify: ok" in out


def test_show_accepts_a_folder_or_the_subjects_latest(root: Path, capsys) -> None:
    code, data = bci_json(capsys, "show", root / "sub-01" / "ses-01")
    assert code == 0 and data["session"] == "sub-01/ses-01"
    code, data = bci_json(capsys, "show", "sub-01", "--root", root)
    assert code == 0 and data["session"] == "sub-01/ses-02"


def test_show_unknown_session_names_nearby_ones(root: Path, capsys) -> None:
    code, out, err = bci(capsys, "show", "sub-01/ses-07", "--root", root)
    assert code == 2
    assert "no session 'sub-01/ses-07'" in err and "sub-01/ses-01" in err
    code, data = bci_json(capsys, "show", "sub-09/ses-01", "--root", root)
    assert code == 2 and data == {"ok": False, "error": data["error"], "type": "ConfigError"}


def test_verify_names_modified_and_missing_files(root_copy: Path, capsys) -> None:
    session = root_copy / "sub-01" / "ses-01"
    with open(session / "events.jsonl", "a") as fh:
        fh.write('{"event": "forged"}\n')
    (session / "summary.json").unlink()
    (session / "notes.txt").write_text("added later\n")

    code, data = bci_json(capsys, "show", session, "--verify")
    assert code == 1 and not data["ok"]
    verify = data["verify"]
    assert verify["modified"] == ["events.jsonl"] and verify["missing"] == ["summary.json"]
    assert verify["unlisted"] == ["notes.txt"]  # reported, but not itself a failure

    code, out, err = bci(capsys, "show", session, "--verify")
    assert code == 1
    assert "MODIFIED  events.jsonl" in out and "MISSING   summary.json" in out
    assert "events.jsonl" in err and "summary.json" in err


def test_verify_catches_an_edited_manifest(root_copy: Path, capsys) -> None:
    session = root_copy / "sub-01" / "ses-02"
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["seed"] = 8
    (session / "manifest.json").write_text(json.dumps(manifest))
    code, data = bci_json(capsys, "show", session, "--verify")
    assert code == 1 and data["verify"]["modified"] == ["manifest.json"]


def test_verify_without_checksums_fails(root_copy: Path, capsys) -> None:
    session = root_copy / "sub-01" / "ses-02"
    (session / "SHA256SUMS").unlink()
    code, data = bci_json(capsys, "show", session, "--verify")
    assert code == 1 and "no SHA256SUMS" in data["verify"]["problems"][0]


# -- export-bids --------------------------------------------------------------------------------
def test_export_eeg_reads_back_with_mne_bids(root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bids"
    code, data = bci_json(capsys, "export-bids", "sub-01/ses-01", "--root", root, "--out", out)
    assert code == 0 and data["ok"]
    (run,) = data["runs"]
    assert run["stream"] == "eeg.signal" and run["datatype"] == "eeg"

    session = root / "sub-01" / "ses-01"
    manifest = json.loads((session / "manifest.json").read_text())
    xdf = xdf_streams(session)
    signal, markers = xdf["eeg.signal"], xdf["eeg.markers"]
    names = [c["label"][0] for c in signal["info"]["desc"][0]["channels"][0]["channel"]]

    bids_path, raw = read_bids(out, "01", "01", "demo", "eeg")
    assert raw.ch_names == names
    assert raw.info["sfreq"] == 250.0 and raw.n_times == len(signal["time_stamps"]) == 5000
    assert set(raw.get_channel_types()) == {"eeg"}
    expected = signal["time_series"].T  # recorded in volts
    np.testing.assert_allclose(raw.get_data(), expected, rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())
    # the markers are the events, on their samples
    t0 = signal["time_stamps"][0]
    assert list(raw.annotations.description) == [m[0] for m in markers["time_series"]]
    np.testing.assert_allclose(raw.annotations.onset, markers["time_stamps"] - t0, atol=1e-6)
    assert raw.info["line_freq"] == 50.0
    assert raw.get_montage() is not None  # 10-05 names: template positions

    folder = bids_path.directory
    events = (folder / "sub-01_ses-01_task-demo_events.tsv").read_text().splitlines()
    assert events[0].split("\t")[:3] == ["onset", "duration", "trial_type"]
    assert len(events) == 1 + len(markers["time_stamps"])
    assert (folder / "sub-01_ses-01_task-demo_channels.tsv").is_file()
    sidecar = json.loads((folder / "sub-01_ses-01_task-demo_eeg.json").read_text())
    assert sidecar["SamplingFrequency"] == 250.0 and sidecar["TaskName"] == "demo"
    assert sidecar["BciRuntime"]["config_sha256"] == manifest["config_sha256"]
    assert sidecar["BciRuntime"]["stream"] == "eeg.signal"
    assert sidecar["SoftwareVersions"].startswith("bci-runtime ")
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bci-runtime"
    assert "sub-01" in (out / "participants.tsv").read_text()

    # the next session goes to the same dataset; the first one is never overwritten
    code, out_text, _ = bci(capsys, "export-bids", "sub-01/ses-02", "--root", root, "--out", out)
    assert code == 0 and "sub-01/ses-02/eeg/sub-01_ses-02_task-demo_eeg.vhdr" in out_text
    _, raw2 = read_bids(out, "01", "02", "demo", "eeg")
    assert raw2.n_times == 5000
    before = (folder / "sub-01_ses-01_task-demo_eeg.eeg").read_bytes()
    code, _, err = bci(capsys, "export-bids", "sub-01/ses-01", "--root", root, "--out", out)
    assert code == 2 and "already exists" in err and "hint:" in err
    assert (folder / "sub-01_ses-01_task-demo_eeg.eeg").read_bytes() == before


def test_export_ecog_as_ieeg(ecog_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bids"
    code, out_text, _ = bci(capsys, "export-bids", "sub-P7", "--root", ecog_root, "--out", out)
    assert code == 0 and "(ieeg, 16 ch @ 500 Hz, 2500 samples" in out_text

    session = ecog_root / "sub-P7" / "ses-01"
    xdf = xdf_streams(session)
    signal, markers = xdf["grid.signal"], xdf["grid.markers"]
    bids_path, raw = read_bids(out, "P7", "01", "ecogtest", "ieeg")
    assert raw.ch_names == [f"G{i:02d}" for i in range(1, 17)]
    assert set(raw.get_channel_types()) == {"ecog"}
    assert raw.info["sfreq"] == 500.0 and raw.n_times == 2500
    expected = signal["time_series"].T
    np.testing.assert_allclose(raw.get_data(), expected, rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())
    assert list(raw.annotations.description) == [m[0] for m in markers["time_series"]]
    np.testing.assert_allclose(raw.annotations.onset,
                               markers["time_stamps"] - signal["time_stamps"][0], atol=1e-6)
    sidecar = json.loads((bids_path.directory / "sub-P7_ses-01_task-ecogtest_ieeg.json")
                         .read_text())
    assert sidecar["ECOGChannelCount"] == 16
    assert sidecar["BciRuntime"]["device_type"] == "simulated_ecog"
    assert (bids_path.directory / "sub-P7_ses-01_task-ecogtest_events.tsv").is_file()


def test_export_refuses_a_folder_that_is_not_bids_or_in_the_session(root: Path, tmp_path: Path,
                                                           capsys) -> None:
    out = tmp_path / "stuff"
    out.mkdir()
    (out / "thesis.tex").write_text("\\begin{document}")
    code, _, err = bci(capsys, "export-bids", "sub-01/ses-01", "--root", root, "--out", out)
    assert code == 2 and "not empty and is not a BIDS dataset" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]

    session = root / "sub-01" / "ses-01"
    code, _, err = bci(capsys, "export-bids", session, "--out", session / "bids")
    assert code == 2 and "inside the session folder" in err
    assert not (session / "bids").exists()


def test_export_unknown_session(root: Path, tmp_path: Path, capsys) -> None:
    code, _, err = bci(capsys, "export-bids", "sub-01/ses-99", "--root", root,
                       "--out", tmp_path / "bids")
    assert code == 2 and "no session" in err
    assert not (tmp_path / "bids").exists()


def test_export_session_without_recording(root_copy: Path, tmp_path: Path, capsys) -> None:
    session = root_copy / "sub-01" / "ses-01"
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["recording"] = None  # a run that stopped before recording started
    (session / "manifest.json").write_text(json.dumps(manifest))
    code, data = bci_json(capsys, "export-bids", session, "--out", tmp_path / "bids")
    assert code == 2 and "has no recording" in data["error"]

    manifest["recording"] = "gone.xdf"
    (session / "manifest.json").write_text(json.dumps(manifest))
    code, data = bci_json(capsys, "export-bids", session, "--out", tmp_path / "bids")
    assert code == 2 and "is missing" in data["error"]


def test_export_session_without_a_signal_source(root_copy: Path, tmp_path: Path,
                                                capsys) -> None:
    session = root_copy / "sub-01" / "ses-01"
    manifest = json.loads((session / "manifest.json").read_text())
    manifest["devices"] = {}
    (session / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = bci(capsys, "export-bids", session, "--out", tmp_path / "bids")
    assert code == 2 and "no EEG, ECoG or sEEG signal stream" in err


def test_export_without_mne_bids_gives_an_install_hint(root: Path, tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mne_bids", None)  # import mne_bids -> ImportError
    code, _, err = bci(capsys, "export-bids", "sub-01/ses-01", "--root", root,
                       "--out", tmp_path / "bids")
    assert code == 1 and "mne-bids" in err and "pip install" in err


def test_main_runs_without_the_entry_point(root: Path, capsys) -> None:
    """``sessions_cli.main`` (``python -m bci_runtime.sessions_cli``) needs no entry point."""
    capsys.readouterr()
    assert sessions_cli.main(["list", "--root", str(root)]) == 0
    assert "sub-01/ses-02" in capsys.readouterr().out
    assert sessions_cli.main(["show", "sub-05/ses-01", "--root", str(root)]) == 2
    assert "no session" in capsys.readouterr().err


def test_help_shows_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        bci(capsys, "export-bids", "--help")
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


# -- building the Raw ---------------------------------------------------------------------------
def _stream(data: np.ndarray, timestamps: np.ndarray, units: list[str],
            types: list[str] | None = None, kind: str = "EEG") -> XdfStream:
    n = data.shape[1]
    return XdfStream(name="amp.signal", type=kind, node="amp", port="signal", srate=100.0,
                     channel_names=["Cz", "C3", "X1"][:n], channel_types=types or [""] * n,
                     channel_units=units, timestamps=timestamps, data=data)


def test_microvolts_are_converted_to_volts() -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((50, 3))
    stream = _stream(data, np.arange(50) / 100.0, ["uV", "µV", "a.u."], ["eeg", "EEG", "misc"])
    types = channel_types(stream)
    assert types == ["eeg", "eeg", "misc"]
    volts, notes = to_volts(stream, types)
    assert volts.shape == (3, 50)
    np.testing.assert_allclose(volts[:2], data[:, :2].T * 1e-6)
    np.testing.assert_array_equal(volts[2], data[:, 2])  # not a voltage: as recorded
    assert notes == []
    _, notes = to_volts(_stream(data[:, :1], np.arange(50) / 100.0, [""]), ["eeg"])
    assert "taken as volts" in notes[0]


def test_untyped_channels_follow_the_stream_type() -> None:
    stream = _stream(np.zeros((2, 2)), np.arange(2) / 100.0, ["V", "V"], ["", "stim"], "ECoG")
    assert channel_types(stream) == ["ecog", "stim"]


def test_markers_stay_on_their_samples_across_a_gap() -> None:
    """After a gap the samples are written back to back; events follow their samples."""
    timestamps = np.r_[np.arange(100), np.arange(200, 300)] / 100.0  # 1 s missing at 1 s
    stream = _stream(np.zeros((200, 1)), timestamps, ["V"])
    assert count_gaps(stream) == 1
    np.testing.assert_allclose(sample_positions(timestamps, np.array([0.5, 2.5])), [50, 150])
    markers = XdfStream(name="amp.markers", type="Markers", node="amp", port="markers",
                        srate=0.0, channel_names=["marker"], channel_types=["stim"],
                        channel_units=[""], timestamps=np.array([-1.0, 0.5, 2.5, 9.0]),
                        data=["early", "a", "b", "late"])
    info = SessionInfo(Path("sub-01/ses-01"), {"devices": {"amp": {"params": {}}},
                                               "started": "2026-01-02T03:04:05+00:00"})
    raw, n_events, skipped, notes = build_raw(info, stream, [markers])
    assert (n_events, skipped) == (2, 2) and "2 marker(s)" in notes[0]
    assert list(raw.annotations.description) == ["a", "b"]
    np.testing.assert_allclose(raw.annotations.onset, [0.5, 1.5])
    assert raw.info["meas_date"].year == 2026


def test_load_session_reports_a_manifest_that_is_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[1, 2]")
    info = load_session(tmp_path)
    assert not info.readable and "not a JSON object" in info.problem
