"""What tests of recorded sessions share: run ``bci`` for its JSON, read a session's streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pyxdf

from bci_runtime.cli import main as cli_main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run ``bci *argv --json``; its exit code and the JSON object it printed last."""
    code = cli_main([*argv, "--json"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, json.loads(out[-1])


def streams_of(session: Path) -> dict[str, dict[str, Any]]:
    """The session recording's streams by name, as pyxdf loads them (not dejittered)."""
    manifest = json.loads((session / "manifest.json").read_text())
    loaded, _ = pyxdf.load_xdf(str(session / manifest["recording"]),
                               dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in loaded}
