"""Session folders under bad conditions: full disk, no space, unwritable or existing folders.

Each case: a clear message, the right exit code, and nothing already recorded lost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bci_runtime.cli import main as cli_main

from fault_injection import FillingDisk

pyxdf = pytest.importorskip("pyxdf")


def demo(tmp_path: Path, *extra: str) -> list[str]:
    return ["demo", "--fast", "--duration", "30", "--json",
            "--sessions-root", str(tmp_path / "sessions"), *extra]


def test_a_full_disk_stops_the_run_cleanly_and_keeps_what_was_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bci_runtime import xdf_writer

    # room for the headers and the largest first batch (a backlog of queued chunks, ~330 kB
    # at --fast speed), not for the whole 30 s (~1 MB): the disk fills mid-run
    disk = FillingDisk(budget=600_000)
    monkeypatch.setattr(xdf_writer, "os", disk)
    code = cli_main(demo(tmp_path))
    out, err = capsys.readouterr()
    assert code == 1
    assert disk.failures >= 1
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "failed"
    assert "the disk is full" in err and "stays readable" in err
    session = Path(summary["session_dir"])
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "the disk is full" in manifest["error"]
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "failure" and "disk is full" in e["error"] for e in events)
    # what reached the disk before it filled up is readable, samples intact
    streams, _ = pyxdf.load_xdf(str(session / manifest["recording"]))
    signal = next(s for s in streams if s["info"]["name"][0] == "eeg.signal")
    assert 0 < len(signal["time_stamps"]) < 30 * 250
    assert signal["time_series"].shape[1] == 8
    # the folder's other files are whole and hashed
    sums = (session / "SHA256SUMS").read_text()
    assert "summary.json" in sums and "events.jsonl" in sums


def test_not_enough_free_space_refuses_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5 * 1024**2))
    assert cli_main(demo(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "not enough free disk space for session" in err and "5.0 MiB free" in err
    assert "free some space" in err
    session = next((tmp_path / "sessions").glob("sub-01/ses-*"))
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "not enough free disk space" in manifest["error"]
    assert manifest["recording"] is None  # nothing was started


def test_an_unwritable_session_location_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert cli_main(demo(tmp_path, "--session-dir", str(blocker / "s"))) == 2
    assert "cannot create session folder" in capsys.readouterr().err
    assert cli_main(["demo", "--fast", "--duration", "1", "--sessions-root", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "cannot create a session folder under" in err and "--sessions-root" in err
    assert blocker.read_text() == "not a folder"


def test_an_existing_session_is_never_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "kept"
    assert cli_main(demo(tmp_path, "--session-dir", str(first))) == 0
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    capsys.readouterr()
    assert cli_main(demo(tmp_path, "--session-dir", str(first))) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    # numbered sessions just take the next number
    assert cli_main(demo(tmp_path)) == 0 and cli_main(demo(tmp_path)) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "sessions" / "sub-01").iterdir()) == \
        ["ses-01", "ses-02"]


def test_a_subject_id_must_be_a_bids_label(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(demo(tmp_path, "--subject", "P_01")) == 2
    assert "letters and digits only" in capsys.readouterr().err
    assert not (tmp_path / "sessions").exists()
