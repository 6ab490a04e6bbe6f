"""Training step of the calibration wizard for the continuous cursor, on real recordings.

Each recording is a run of the simulated ECoG grid (open loop: no decoded
feedback, the cursor follows the simulated user's intention) on the simulated
clock, recorded into a session folder by :class:`~bci_runtime.recorded_run.RecordedRun`
as ``bci run`` and the wizard record it; module-scoped, so each is made once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bci_runtime.decoders.continuous_recordings import load_binned
from bci_runtime.decoders.cursor_model import BinnedFeatureStream, CursorModel
from bci_runtime.decoders.cursor_training import grid_layout, train_cursor_from_recordings
from bci_runtime.decoders.model_store import file_sha256, load_model
from bci_runtime.drivers.recordings import load_recording
from bci_runtime.errors import ConfigError
from bci_runtime.graph import load_graph_text
from bci_runtime.recorded_run import RecordedRun

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_KEYS = {"paradigm", "decoder", "adapt", "channels", "bad_channels", "sfreq", "band",
               "features", "bin_s", "n_bins", "seconds", "recordings", "r2", "r2_per_axis",
               "correlation", "fold_r2", "chance_r2", "null_r2", "min_r2", "above_chance",
               "good_enough", "reasons", "patterns", "patterns_note", "model"}
GRID = [f"G{i:02d}" for i in range(1, 17)]


def record(folder: Path, seed: int, duration: float, **ecog: Any) -> Path:
    """Run a simulated ECoG calibration into the session folder ``folder``; its XDF file."""
    config = {"name": "cal", "seed": seed, "clock": "simulated", "duration": duration,
              "nodes": {"ecog": {"type": "simulated_ecog",
                                 "params": {"n_channels": 16, "srate": 500, "chunk_size": 25,
                                            **ecog}}}}
    graph = load_graph_text(yaml.safe_dump(config, sort_keys=False), "<cursor calibration>")
    run = RecordedRun(graph, "test:cursor-calibration", session_dir=folder)
    result = run.runner.run()
    run.finish(result)
    assert result.status == "completed", result.error
    return folder / run.session.manifest["recording"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cursor-calibration")
    return {
        "good": record(base / "good", seed=1, duration=40),
        # a second run of the same grid (same seed: the same subject), resumed later
        "resumed": record(base / "resumed", seed=1, duration=24),
        "untuned": record(base / "untuned", seed=2, duration=40, tuned_fraction=0.0),
        "short": record(base / "short", seed=1, duration=10),
    }


@pytest.fixture(scope="module")
def good(recordings: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """The report on the good recording, and the progress calls."""
    calls: list[tuple[str, float]] = []
    model = tmp_path_factory.mktemp("models") / "cursor.bcimodel"
    out = train_cursor_from_recordings([recordings["good"]], model_path=model,
                                       progress=lambda stage, f: calls.append((stage, f)))
    return out, calls


def test_good_calibration_is_good_enough(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    assert out["good_enough"] and out["above_chance"]
    assert out["r2"] >= out["min_r2"] == 0.3
    assert out["r2"] > out["chance_r2"] + 0.3
    assert out["chance_r2"] == pytest.approx(np.percentile(out["null_r2"], 95))
    assert len(out["null_r2"]) == 20 and max(out["null_r2"]) < out["r2"]
    assert len(out["fold_r2"]) == 5
    for axis in ("vx", "vy"):
        assert out["r2_per_axis"][axis] > 0.2
        assert out["correlation"][axis] > 0.5
    assert out["reasons"][0].startswith("The decoder explains")
    assert "above chance" in out["reasons"][1]
    assert out["reasons"][-1] == "Good enough to go on to the online session."


def test_report_describes_the_calibration(good: tuple[dict[str, Any], Any],
                                          recordings: dict[str, Path]) -> None:
    out, _ = good
    assert set(out) == REPORT_KEYS
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # plain JSON
    assert out["paradigm"] == "cursor" and out["decoder"] == "kalman" and out["adapt"] == "rml"
    assert out["channels"] == GRID and out["bad_channels"] == []
    assert out["sfreq"] == 500.0 and out["bin_s"] == pytest.approx(0.05)
    assert out["band"] == [70.0, 150.0]
    assert out["features"] == "log power 70-150 Hz, 50 ms bins"
    assert out["n_bins"] == 800 and out["seconds"] == pytest.approx(40.0)
    assert out["recordings"] == [str(recordings["good"])]


def test_figures_are_pngs(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    titles = [p["title"] for p in out["patterns"]]
    assert len(titles) == 2
    assert titles[0].startswith("Decoded and intended cursor velocity")
    assert titles[1].startswith("Tuning of each channel")
    for pattern in out["patterns"]:
        assert base64.b64decode(pattern["png"]).startswith(PNG_MAGIC)
    assert out["patterns_note"]


def test_progress_advances_to_one(good: tuple[dict[str, Any], Any]) -> None:
    _, calls = good
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions)
    assert fractions[0] >= 0.0 and calls[-1] == ("done", 1.0)
    assert any(stage.startswith("chance level") for stage, _ in calls)


def test_saved_model_computes_and_decodes_the_recording_features(
        good: tuple[dict[str, Any], Any], recordings: dict[str, Path]) -> None:
    out, _ = good
    path = Path(out["model"]["path"])
    assert out["model"]["sha256"] == file_sha256(path)
    model = load_model(path, sha256=out["model"]["sha256"])
    assert isinstance(model, CursorModel)
    assert model.channels == GRID and model.srate == 500.0
    assert model.features == "band-power" and model.band == [70.0, 150.0]
    assert model.per_bin == 25 and model.decoder.n_features_in_ == 16

    # the saved settings give, streamed chunk by chunk, the features it was trained on
    binned = load_binned(recordings["good"], target="vx,vy")
    signal = next(s for s in load_recording(recordings["good"]).signals()
                  if s.spec.type == "ECoG")
    stream = BinnedFeatureStream(model.srate, len(model.channels), tuple(model.band),
                                 model.per_bin)
    rows = [stream.push(signal.data[i:i + 37], signal.timestamps[i:i + 37])[0]
            for i in range(0, signal.n_samples, 37)]
    np.testing.assert_allclose(np.concatenate(rows), binned.X, rtol=1e-7, atol=1e-9)

    decoded = model.decoder.predict(binned.X)
    for k in range(2):
        assert np.corrcoef(decoded[:, k], binned.Y[:, k])[0, 1] > 0.6


def test_bad_channels_are_left_out(recordings: dict[str, Path], tmp_path: Path) -> None:
    bad = ["G06", "G07"]
    out = train_cursor_from_recordings([recordings["good"]], model_path=tmp_path / "m.bcimodel",
                                       bad_channels=bad, n_shifts=5)
    kept = [c for c in GRID if c not in bad]
    assert out["channels"] == kept and out["bad_channels"] == bad
    model = load_model(tmp_path / "m.bcimodel")
    assert model.channels == kept and model.decoder.n_features_in_ == 14


def test_unknown_bad_channel_names_the_recording_channels(recordings: dict[str, Path],
                                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        train_cursor_from_recordings([recordings["good"]], model_path=tmp_path / "m.bcimodel",
                                     bad_channels=["G06", "G99"])
    assert "'G99'" in str(info.value) and "'G06'" not in str(info.value)
    assert "G01" in info.value.hint and "G16" in info.value.hint
    assert not (tmp_path / "m.bcimodel").exists()


def test_untuned_signal_is_at_chance(recordings: dict[str, Path], tmp_path: Path) -> None:
    out = train_cursor_from_recordings([recordings["untuned"]],
                                       model_path=tmp_path / "m.bcimodel")
    assert not out["above_chance"] and not out["good_enough"]
    assert out["r2"] < out["min_r2"]
    assert any("not above chance" in r for r in out["reasons"])
    advice = out["reasons"][-1]
    assert advice.startswith("Not good enough yet")
    assert "impedance" in advice and "record a longer calibration" in advice


def test_too_short_a_calibration_asks_to_record_longer(recordings: dict[str, Path],
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        train_cursor_from_recordings([recordings["short"]], model_path=tmp_path / "m.bcimodel")
    assert "s of calibration" in str(info.value) and "at least 15 s" in str(info.value)
    assert "record" in info.value.hint and "kept" in info.value.hint


def test_resumed_calibration_concatenates_runs(good: tuple[dict[str, Any], Any],
                                               recordings: dict[str, Path],
                                               tmp_path: Path) -> None:
    runs = [recordings["good"], recordings["resumed"]]
    out = train_cursor_from_recordings(runs, model_path=tmp_path / "m.bcimodel", n_shifts=5)
    resumed = int(load_binned(recordings["resumed"], target="vx,vy").known.sum())
    assert out["n_bins"] == good[0]["n_bins"] + resumed
    assert out["seconds"] == pytest.approx(64.0, abs=0.1)
    assert out["recordings"] == [str(p) for p in runs]
    assert out["good_enough"]


def test_bin_means_are_saved_without_a_band(recordings: dict[str, Path],
                                            tmp_path: Path) -> None:
    out = train_cursor_from_recordings([recordings["good"]], model_path=tmp_path / "m.bcimodel",
                                       band="none", bin_s=0.1, n_shifts=5)
    assert out["band"] is None and out["features"].startswith("bin means")
    assert out["bin_s"] == pytest.approx(0.1) and out["n_bins"] == 400
    model = load_model(tmp_path / "m.bcimodel")
    assert model.features == "mean" and model.band is None and model.per_bin == 50


def test_bad_options_fail_before_reading(tmp_path: Path) -> None:
    missing = [tmp_path / "missing.xdf"]
    model = tmp_path / "m.bcimodel"
    with pytest.raises(ConfigError) as info:
        train_cursor_from_recordings(missing, model_path=model, adapt="ts-recenter")
    assert "ts-recenter" in str(info.value)
    assert all(name in info.value.hint for name in ("rml", "smoothbatch", "none"))
    with pytest.raises(ConfigError):
        train_cursor_from_recordings([], model_path=model)
    with pytest.raises(ConfigError):
        train_cursor_from_recordings(missing, model_path=model, band=(150, 70))
    with pytest.raises(ConfigError):
        train_cursor_from_recordings(missing, model_path=model, bin_s=0)
    with pytest.raises(ConfigError):
        train_cursor_from_recordings(missing, model_path=model, n_folds=1)


def test_grid_layout_from_names_or_count() -> None:
    cells, numbered = grid_layout([c for c in GRID if c != "G06"], bad=["G06"])
    assert numbered and len(cells) == 4 and cells[1] == ["G05", "G06", "G07", "G08"]
    cells, numbered = grid_layout([f"ch{i}" for i in range(1, 10)][::-1])
    assert numbered and cells[0] == ["ch1", "ch2", "ch3"]
    cells, numbered = grid_layout(["C3", "Cz", "C4", "Pz"])
    assert not numbered and cells == [["C3", "Cz"], ["C4", "Pz"]]
    assert grid_layout(["C3", "Cz", "C4"]) is None
