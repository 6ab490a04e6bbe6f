"""``bci doctor``: the checks on this machine's real parts, and how failures are reported.

The machine checks use the real liblsl (an outlet with a unique source_id, on
loopback), BrainFlow's synthetic board and torch: no mocks. Failures are made
real too (a sessions root under a regular file, where no folder can be made; we
run as root, so permissions would not stop a write) or injected as check
functions that raise or hang.
"""

from __future__ import annotations

import json
import re
import threading
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from bci_runtime.cli import COMMAND_GROUP, EXIT_FAILURE, EXIT_OK
from bci_runtime.drivers import doctor_cli
from bci_runtime.drivers.doctor import (
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    Check,
    CheckResult,
    brainflow_import_failure,
    check_disk,
    default_checks,
    free_space_status,
    run_checks,
)
from bci_runtime.errors import DependencyError

REQUIRED = ("python", "liblsl", "lsl-loopback", "brainflow", "brainflow-board", "torch", "disk")
SLOW = {"lsl-loopback", "brainflow-board"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CheckResult]:
    """Every default check, run once on this machine."""
    root = tmp_path_factory.mktemp("doctor") / "sessions"
    return {r.name: r for r in run_checks(root)}


# -- this machine -----------------------------------------------------------------------------
@pytest.mark.lsl
@pytest.mark.slow
def test_required_checks_are_ok_on_this_machine(full_run: dict[str, CheckResult]) -> None:
    for name in REQUIRED:
        result = full_run[name]
        assert result.status == "ok", f"{name}: {result.detail} (fix: {result.fix})"
        assert result.fix is None
    assert "100/100 samples in order" in full_run["lsl-loopback"].detail
    samples = re.search(r"(\d+) samples", full_run["brainflow-board"].detail)
    assert samples is not None and int(samples.group(1)) > 0
    assert "CPU build" in full_run["torch"].detail


@pytest.mark.lsl
@pytest.mark.slow
def test_every_default_check_reports_once_with_a_fix_unless_ok(
        full_run: dict[str, CheckResult]) -> None:
    assert list(full_run) == [c.name for c in default_checks(Path("sessions"))]
    for result in full_run.values():
        assert result.status in ("ok", "warn", "fail")
        assert result.detail
        assert (result.fix is None) == (result.status == "ok"), result
        assert result.duration_ms >= 0.0


# -- the sessions folder ----------------------------------------------------------------------
def test_sessions_root_under_a_file_fails_with_a_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where a folder should be")
    root = blocker / "sessions"
    checks = [c for c in default_checks(root) if c.name == "disk"]
    (result,) = run_checks(root, checks=checks)
    assert result.status == "fail"
    assert str(blocker) in result.detail
    assert result.fix is not None and "--sessions-root" in result.fix
    assert blocker.is_file()  # nothing was changed


def test_sessions_root_that_is_a_file_fails(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    root.write_text("")
    result = check_disk(root)
    assert result.status == "fail"
    assert "is a file" in result.detail
    assert result.fix is not None


def test_missing_sessions_root_is_checked_where_it_will_be_made(tmp_path: Path) -> None:
    root = tmp_path / "a" / "sessions"
    result = check_disk(root)
    assert result.status == "ok", result
    assert f"to be created in {tmp_path}" in result.detail
    assert re.search(r"~[\d,]+ h of 64-ch 1 kHz float32", result.detail)
    assert not (tmp_path / "a").exists()
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_free_space_thresholds() -> None:
    assert free_space_status(0) == "fail"
    assert free_space_status(DISK_FAIL_BYTES - 1) == "fail"
    assert free_space_status(DISK_FAIL_BYTES) == "warn"
    assert free_space_status(DISK_WARN_BYTES - 1) == "warn"
    assert free_space_status(DISK_WARN_BYTES) == "ok"


# -- the runner -------------------------------------------------------------------------------
def _ok_check(name: str, calls: list[str] | None = None) -> Check:
    def run() -> CheckResult:
        if calls is not None:
            calls.append(name)
        return CheckResult(name, "ok", "fine")

    return Check(name, run)


def test_a_crashing_check_becomes_a_fail_result(tmp_path: Path) -> None:
    def boom() -> CheckResult:
        raise RuntimeError("liblsl exploded")

    checks = [Check("boom", boom, fix="reinstall it"), _ok_check("after")]
    crashed, after = run_checks(tmp_path, checks=checks)
    assert crashed.name == "boom" and crashed.status == "fail"
    assert "RuntimeError: liblsl exploded" in crashed.detail
    assert crashed.fix == "reinstall it"
    assert after.status == "ok"  # the checks after it still ran


def test_a_hanging_check_is_cut_off(tmp_path: Path) -> None:
    release = threading.Event()

    def hang() -> CheckResult:
        release.wait(30.0)
        return CheckResult("hang", "ok", "too late")

    try:
        (result,) = run_checks(tmp_path, checks=[Check("hang", hang, timeout_s=0.2)])
    finally:
        release.set()
    assert result.status == "fail"
    assert "did not finish within 0.2 s" in result.detail
    assert result.fix


def test_a_check_returning_something_else_fails(tmp_path: Path) -> None:
    (result,) = run_checks(tmp_path, checks=[Check("odd", lambda: "ok")])  # type: ignore[arg-type]
    assert result.status == "fail"
    assert "not a CheckResult" in result.detail


def test_quick_skips_the_slow_checks(tmp_path: Path) -> None:
    assert {c.name for c in default_checks(tmp_path) if c.slow} == SLOW
    calls: list[str] = []
    checks = [_ok_check("fast", calls), Check("slow", _ok_check("slow", calls).run, slow=True)]
    assert [r.name for r in run_checks(tmp_path, quick=True, checks=checks)] == ["fast"]
    assert calls == ["fast"]
    assert [r.name for r in run_checks(tmp_path, checks=checks)] == ["fast", "slow"]


def test_brainflow_without_pkg_resources_says_which_setuptools() -> None:
    missing = ModuleNotFoundError("No module named 'pkg_resources'", name="pkg_resources")
    wrapped = DependencyError(f"BrainFlow is not importable ({missing})", hint="...")
    wrapped.__cause__ = missing
    result = brainflow_import_failure(wrapped)
    assert result.status == "fail"
    assert "pkg_resources" in result.detail
    assert result.fix is not None and "setuptools<81" in result.fix

    other = DependencyError("BrainFlow is not importable (libBoardController.so: cannot open)")
    other.__cause__ = OSError("cannot open")
    result = brainflow_import_failure(other)
    assert result.status == "fail" and "pkg_resources" not in result.detail
    assert result.fix is not None and "brainflow" in result.fix


# -- the command ------------------------------------------------------------------------------
def test_json_output_parses_and_ok_matches_the_exit_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = doctor_cli.main(["--quick", "--json", "--sessions-root", str(tmp_path / "s")])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is (code == EXIT_OK)
    assert code == EXIT_OK  # this machine is fine
    names = [c["name"] for c in out["checks"]]
    assert not SLOW & set(names) and set(out["skipped"]) == SLOW
    assert set(out["checks"][0]) == {"name", "status", "detail", "fix", "duration_ms"}

    blocker = tmp_path / "file"
    blocker.write_text("")
    code = doctor_cli.main(["--quick", "--json", "--sessions-root", str(blocker / "s")])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_FAILURE and out["ok"] is False
    (disk,) = [c for c in out["checks"] if c["name"] == "disk"]
    assert disk["status"] == "fail" and disk["fix"]


def test_table_ends_with_the_number_of_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = doctor_cli.main(["--quick", "--sessions-root", str(blocker / "s")])
    out = capsys.readouterr().out
    assert code == EXIT_FAILURE
    lines = out.strip().splitlines()
    assert lines[-1].startswith("1 problem")
    assert any(line.startswith("disk") and "✗" in line for line in lines)
    assert "choose another --sessions-root" in out
    assert "skipped (--quick): lsl-loopback, brainflow-board" in out

    code = doctor_cli.main(["--quick", "--sessions-root", str(tmp_path / "s")])
    assert code == EXIT_OK
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("all good")


def test_help_gives_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        doctor_cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "bci doctor --quick" in capsys.readouterr().out


def test_bci_doctor_through_the_installed_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not entry_points(group=COMMAND_GROUP, name="doctor"):
        pytest.skip("`bci doctor` is not registered yet (pyproject entry point, reinstall)")
    from bci_runtime.cli import main

    code = main(["doctor", "--quick", "--json", "--sessions-root", str(tmp_path / "s")])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is (code == EXIT_OK)
