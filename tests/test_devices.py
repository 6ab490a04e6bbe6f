"""``bci devices`` sees a real LSL outlet with its metadata, and lists BrainFlow's boards."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from bci_runtime.cli import main as cli_main
from bci_runtime.drivers.devices import brainflow_boards, lsl_streams

pylsl = pytest.importorskip("pylsl")


@pytest.mark.lsl
def test_devices_lists_a_live_outlet_with_its_metadata(capsys):
    source_id = f"test-devices-{uuid4().hex}"
    info = pylsl.StreamInfo(f"devices-{source_id[-8:]}", "EEG", 5, 512.0, pylsl.cf_float32,
                            source_id)
    outlet = pylsl.StreamOutlet(info)
    try:
        seen = [s for s in lsl_streams(wait_s=2.0) if s.source_id == source_id]
        assert len(seen) == 1
        s = seen[0]
        assert (s.name, s.type, s.channels, s.srate, s.format) == (
            info.name(), "EEG", 5, 512.0, "float32")
        assert s.host

        assert cli_main(["devices", "--wait", "2", "--no-boards", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is True and report["brainflow_boards"] == []
        assert source_id in [x["source_id"] for x in report["lsl_streams"]]
    finally:
        del outlet


def test_brainflow_boards_include_the_virtual_ones():
    boards = {b.name: b for b in brainflow_boards()}
    synthetic = boards["SYNTHETIC_BOARD"]
    assert synthetic.virtual and synthetic.id == -1
    assert synthetic.srate and synthetic.eeg_channels and synthetic.eeg_channels > 0
    assert any(not b.virtual for b in boards.values())  # real amplifiers are listed too


def test_devices_text_output_names_the_virtual_boards(capsys):
    assert cli_main(["devices", "--wait", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "LSL streams" in out and "SYNTHETIC_BOARD" in out
    assert "CYTON_BOARD" not in out  # hardware boards only with --hardware
    assert cli_main(["devices", "--wait", "0.2", "--hardware"]) == 0
    assert "CYTON_BOARD" in capsys.readouterr().out
