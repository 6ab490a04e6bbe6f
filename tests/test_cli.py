"""The ``bci`` command line, run as a real process (the installed console script).

Exit codes: 0 success, 2 usage or configuration error (nothing started), 1 failure
while running. ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

from bci_runtime.cli import build_parser
from bci_runtime.config import load_pipeline_text

REPO = Path(__file__).resolve().parents[1]
SHIPPED_PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))
_SCRIPT = Path(sys.executable).parent / "bci"
BCI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "bci_runtime.cli"]
SHIPPED_TYPES = sorted(ep.name for ep in entry_points(group="bci_runtime.nodes"))

BAD_PIPELINE = """\
name: bad
clock: simulated
nodes:
  eeg:
    type: simulated_eeg
    params: {n_channels: 8, srate: 250}
  bp:
    type: band_pass
    params: {low: 8, high: 30}
    inputs: {signal: eeg.signal}
  lv:
    type: log_variance
    params: {window_s: 1.0, hop_s: 0.1}
    inputs: {signal: eeg.signal}
"""


def bci(*args: str | Path, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``bci ARGS`` and return the finished process (text output)."""
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([*BCI, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_json_object(stdout: str) -> dict[str, Any]:
    """Parse stdout that must hold exactly one JSON object, on one line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line of JSON on stdout, got {len(lines)}:\n{stdout}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + (name,))
                found.extend(_subcommands(sub, prefix + (name,)))
    return found


SUBCOMMANDS = _subcommands(build_parser())


# -- help ------------------------------------------------------------------------------------
def test_top_level_help_lists_commands_and_examples() -> None:
    proc = bci("--help")
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout
    for (name, *_rest) in SUBCOMMANDS:
        assert name in proc.stdout


def test_the_parser_has_the_documented_subcommands() -> None:
    assert {s[0] for s in SUBCOMMANDS} >= {"demo", "run", "validate", "nodes", "bench"}


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=[" ".join(c) for c in SUBCOMMANDS])
def test_every_subcommand_help_has_examples(command: tuple[str, ...]) -> None:
    proc = bci(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout
    # the examples are real invocations of this very subcommand
    assert f"bci {' '.join(command)}" in proc.stdout.split("examples:", 1)[1]


def test_no_command_prints_help_and_exits_2() -> None:
    proc = bci()
    assert proc.returncode == 2
    assert "examples:" in proc.stdout


@pytest.mark.parametrize("args", [
    ("frobnicate",),
    ("validate", "--bogus", "pipelines/demo.yaml"),
    ("--no-such-flag",),
    ("nodes", "--colour"),
    ("run",),  # missing the pipeline argument
    ("bench", "latency", "--channels", "many"),
], ids=["unknown-subcommand", "unknown-flag", "unknown-global-flag", "unknown-nodes-flag",
        "missing-argument", "bad-argument-type"])
def test_usage_errors_exit_2_with_a_hint(args: tuple[str, ...]) -> None:
    proc = bci(*args)
    assert proc.returncode == 2
    assert "bci: error:" in proc.stderr
    assert "--help` shows examples" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- validate --------------------------------------------------------------------------------
def test_validate_demo() -> None:
    proc = bci("validate", "pipelines/demo.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "ok: 1 pipeline(s) valid" in proc.stdout
    assert proc.stderr == ""


def test_there_are_shipped_pipelines() -> None:
    assert REPO / "pipelines" / "demo.yaml" in SHIPPED_PIPELINES


@pytest.mark.parametrize("path", SHIPPED_PIPELINES, ids=[p.name for p in SHIPPED_PIPELINES])
def test_every_shipped_pipeline_validates(path: Path) -> None:
    proc = bci("validate", "--json", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert one_json_object(proc.stdout) == {"ok": True, "errors": []}


def test_validate_json_of_a_bad_pipeline(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_PIPELINE, encoding="utf-8")
    proc = bci("validate", "--json", bad)
    assert proc.returncode == 2
    out = one_json_object(proc.stdout)
    assert set(out) == {"ok", "errors"} and out["ok"] is False
    for error in out["errors"]:
        assert set(error) == {"file", "line", "node", "field", "message"}
    located = [(e["file"], e["line"], e["node"], e["field"]) for e in out["errors"]]
    assert sorted(located, key=str) == sorted([
        (str(bad), 8, "bp", "nodes.bp.type"),
        (str(bad), 13, "lv", "nodes.lv.params.hop_s"),
    ], key=str)
    messages = {e["node"]: e["message"] for e in out["errors"]}
    assert "did you mean 'bandpass'" in messages["bp"]
    assert "remove it or check its spelling" in messages["lv"]


def test_validate_text_output_names_file_line_node_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_PIPELINE, encoding="utf-8")
    proc = bci("validate", bad)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{bad}:8: node 'bp', field 'nodes.bp.type': unknown node type 'band_pass'" in proc.stderr
    assert f"{bad}:13: node 'lv', field 'nodes.lv.params.hop_s': unknown key 'hop_s'" in proc.stderr


def test_validate_several_files_reports_only_the_bad_one(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_PIPELINE, encoding="utf-8")
    proc = bci("validate", "--json", "pipelines/demo.yaml", bad)
    assert proc.returncode == 2
    out = one_json_object(proc.stdout)
    assert out["ok"] is False and {e["file"] for e in out["errors"]} == {str(bad)}


@pytest.mark.parametrize(("text", "line", "phrase"), [
    ("name: x\nnodes:\n  eeg:\n    type: [simulated_eeg\n", 5, "YAML syntax error"),
    ("", 1, "must be a mapping"),
], ids=["syntax-error", "empty-file"])
def test_validate_json_of_unparsable_files(tmp_path: Path, text: str, line: int, phrase: str) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(text, encoding="utf-8")
    proc = bci("validate", "--json", bad)
    assert proc.returncode == 2
    (error,) = one_json_object(proc.stdout)["errors"]
    assert (error["file"], error["line"], error["node"], error["field"]) == (str(bad), line, None, None)
    assert phrase in error["message"]


def test_validate_json_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    proc = bci("validate", "--json", missing)
    assert proc.returncode == 2
    (error,) = one_json_object(proc.stdout)["errors"]
    assert error["file"] == str(missing) and "file not found" in error["message"]


# -- nodes -----------------------------------------------------------------------------------
def test_nodes_lists_every_registered_type_with_its_params() -> None:
    proc = bci("nodes")
    assert proc.returncode == 0, proc.stderr
    blocks = {}
    for block in proc.stdout.strip().split("\n\n"):
        name = block.split()[0]
        blocks[name] = block
    assert sorted(blocks) == SHIPPED_TYPES
    from bci_runtime.registry import get_node_class

    for name in SHIPPED_TYPES:
        cls = get_node_class(name)
        for port in (*cls.inputs, *cls.outputs):
            assert re.search(rf"^  (in |out) {port}: ", blocks[name], re.M), (name, port)
        for param, info in cls.Params.model_fields.items():
            assert f"  param {param}: " in blocks[name], (name, param)
            if info.is_required():
                assert re.search(rf"param {param}: .*, required", blocks[name])
    assert "param low: float, required  lower edge (Hz)" in blocks["bandpass"]
    assert "param order: int, default 4" in blocks["bandpass"]


def test_nodes_json() -> None:
    proc = bci("nodes", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes = one_json_object(proc.stdout)["nodes"]
    assert sorted(nodes) == SHIPPED_TYPES
    for name, info in nodes.items():
        assert {"class", "doc", "inputs", "outputs", "params"} <= set(info), name
        assert info["doc"], f"{name} has no one-line description"
    bp = nodes["bandpass"]
    assert bp["class"] == "bci_runtime.pipelines.filters.Bandpass"
    assert bp["inputs"] == {"signal": {"kind": "signal", "required": True, "doc": bp["inputs"]["signal"]["doc"]}}
    assert set(bp["outputs"]) == {"filtered"}
    assert bp["params"]["low"]["required"] is True and bp["params"]["low"]["default"] is None
    assert bp["params"]["order"] == {**bp["params"]["order"], "required": False, "default": 4}
    eeg = nodes["simulated_eeg"]
    assert set(eeg["inputs"]) == {"feedback"} and eeg["inputs"]["feedback"]["required"] is False
    assert set(eeg["outputs"]) == {"signal", "markers", "truth"}
    assert eeg["outputs"]["markers"]["kind"] == "events"
    # nested parameter models show their defaults, not a placeholder
    assert eeg["params"]["drift"]["default"]["scenario"] == "stationary"
    assert eeg["params"]["timing"]["default"]["imagery_s"] > 0


def test_nodes_of_one_type() -> None:
    proc = bci("nodes", "--json", "bandpass")
    assert proc.returncode == 0, proc.stderr
    assert list(one_json_object(proc.stdout)["nodes"]) == ["bandpass"]


@pytest.mark.parametrize(("name", "hint"), [
    ("NOSUCH", "`bci nodes` lists the"),
    ("bandpas", "did you mean 'bandpass'"),
])
def test_nodes_of_an_unknown_type_exits_2_with_a_hint(name: str, hint: str) -> None:
    proc = bci("nodes", name)
    assert proc.returncode == 2
    assert f"unknown node type '{name}'" in proc.stderr
    assert hint in proc.stderr
    assert "Traceback" not in proc.stderr


# -- run: nothing starts when the configuration is wrong ------------------------------------
def test_run_missing_file_exits_2(tmp_path: Path) -> None:
    session = tmp_path / "s"
    proc = bci("run", "missing.yaml", "--session-dir", session)
    assert proc.returncode == 2
    assert "missing.yaml" in proc.stderr and "file not found" in proc.stderr
    assert not session.exists()


def test_run_invalid_pipeline_exits_2_and_creates_no_session(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_PIPELINE, encoding="utf-8")
    session = tmp_path / "s"
    proc = bci("run", bad, "--session-dir", session, "--duration", "1")
    assert proc.returncode == 2
    assert not session.exists()
    assert f"{bad}:8, node 'bp', field 'nodes.bp.type'" in proc.stderr
    assert f"{bad}:13, node 'lv', field 'nodes.lv.params.hop_s'" in proc.stderr
    assert "running" not in proc.stderr  # the run banner never appeared


def test_run_invalid_pipeline_json_prints_one_error_object(tmp_path: Path) -> None:
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_PIPELINE, encoding="utf-8")
    session = tmp_path / "s"
    proc = bci("run", bad, "--json", "--session-dir", session)
    assert proc.returncode == 2
    out = one_json_object(proc.stdout)
    assert out["ok"] is False and out["type"] == "PipelineError"
    assert "nodes.bp.type" in out["error"]
    assert not session.exists()


def test_run_into_a_used_session_folder_exits_2_and_keeps_it(tmp_path: Path) -> None:
    session = tmp_path / "s"
    session.mkdir()
    keep = session / "notes.txt"
    keep.write_text("earlier session", encoding="utf-8")
    proc = bci("run", "pipelines/demo.yaml", "--clock", "simulated", "--duration", "1",
               "--session-dir", session)
    assert proc.returncode == 2
    assert "already exists and is not empty" in proc.stderr
    assert sorted(p.name for p in session.iterdir()) == ["notes.txt"]
    assert keep.read_text(encoding="utf-8") == "earlier session"


# -- demo ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_fast_json_writes_a_complete_session(tmp_path: Path) -> None:
    session = tmp_path / "session"
    proc = bci("demo", "--fast", "--duration", "20", "--json", "--session-dir", session)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = one_json_object(proc.stdout)

    assert isinstance(summary["samples"], int) and summary["samples"] > 0
    assert isinstance(summary["decisions"], int) and summary["decisions"] > 0
    accuracy = summary["accuracy"]
    assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
    assert accuracy > 0.5, f"seeded demo decoded at chance or worse: {accuracy}"
    assert set(summary["latency_ms"]) >= {"p50", "p99", "p999", "max"}
    lat = summary["latency_ms"]
    assert all(isinstance(lat[k], float) and lat[k] >= 0 for k in ("p50", "p99", "p999", "max"))
    assert lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert Path(summary["session_dir"]) == session
    assert summary["status"] == "completed"

    assert {p.name for p in session.iterdir()} >= {
        "config.yaml", "events.jsonl", "manifest.json", "summary.json"}

    manifest = json.loads((session / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    assert manifest["seed"] == 7  # the demo pipeline's seed
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["config_sha256"])
    assert manifest["code_version"]["package"]
    assert manifest["started"] and manifest["stopped"] and manifest["stopped"] >= manifest["started"]

    # the resolved configuration is what ran, and the manifest's hash is its hash
    config_text = (session / "config.yaml").read_text(encoding="utf-8")
    resolved = yaml.safe_load(config_text)
    assert resolved["name"] == "demo" and resolved["clock"] == "simulated"
    assert resolved["duration"] == 20
    config, _ = load_pipeline_text(config_text, "config.yaml")
    assert config.canonical_hash() == manifest["config_sha256"]

    events = [json.loads(line) for line in
              (session / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert events and all(isinstance(e, dict) and "event" in e for e in events)
    kinds = [e["event"] for e in events]
    # what nodes log while they open (the feedback page's URL) comes before the start
    assert kinds[:2] == ["display_started", "run_started"]
    assert events[0]["url"].startswith("http://127.0.0.1:")
    assert "decoder_trained" in kinds

    on_disk = json.loads((session / "summary.json").read_text(encoding="utf-8"))
    for key in ("samples", "decisions", "accuracy", "latency_ms", "status", "session_dir"):
        assert on_disk[key] == summary[key], key
