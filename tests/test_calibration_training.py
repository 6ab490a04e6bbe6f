"""Training step of the calibration wizard, on XDF recordings made by the runtime itself.

Each recording is a ``bci run`` of a simulator pipeline with the simulated clock
(module-scoped: made once), read back as the wizard would read a session's runs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

from bci_runtime.decoders import calibration_training as ct
from bci_runtime.decoders.adaptation import CoAdaptiveDecoder
from bci_runtime.decoders.calibration_training import snr_at, train_from_recordings
from bci_runtime.decoders.model_store import file_sha256, load_model
from bci_runtime.decoders.ssvep import stimulus_frequencies
from bci_runtime.decoders.trials import cut_trials
from bci_runtime.errors import ConfigError

BCI = Path(sys.executable).with_name("bci")
CHANNELS = ["C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "Pz"]
MI_CLASSES = ["left", "right"]
SSVEP_CLASSES = ["8.57Hz", "12Hz", "rest"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mi_pipeline(seed: int, duration: float, erd: float = 0.4) -> str:
    """A motor imagery calibration: 4 s per trial (cue at 0.5 s, imagery 2.5 s)."""
    return textwrap.dedent(f"""\
        name: calib
        seed: {seed}
        clock: simulated
        duration: {duration}
        nodes:
          eeg:
            type: simulated_eeg
            params: {{n_channels: 8, channels: [{', '.join(CHANNELS)}], srate: 250,
                     chunk_size: 10, classes: [left, right], erd: {erd}, mu_uv: 16,
                     background_uv: 5,
                     timing: {{fixation_s: 0.5, imagery_s: 2.5, rest_s: 1.0, first_s: 0.5}}}}
        """)


SSVEP_PIPELINE = textwrap.dedent("""\
    name: ssvep
    seed: 5
    clock: simulated
    duration: 130
    nodes:
      eeg:
        type: simulated_ssvep
        params: {n_channels: 8, srate: 250, chunk_size: 25, freqs: [8.57, 12.0],
                 rest_class: true,
                 timing: {fixation_s: 0.5, imagery_s: 5.0, rest_s: 1.0, first_s: 0.5}}
    """)


def record(folder: Path, pipeline: str) -> Path:
    """Run ``pipeline`` with ``bci run`` into its own sessions root; its XDF recording."""
    folder.mkdir(parents=True)
    config = folder / "pipeline.yaml"
    config.write_text(pipeline)
    root = folder / "sessions"
    done = subprocess.run([str(BCI), "run", str(config), "--clock", "simulated",
                           "--sessions-root", str(root), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    session = Path(json.loads(done.stdout.strip().splitlines()[-1])["session_dir"])
    (xdf,) = session.glob("*_recording.xdf")
    return xdf


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good MI (20 trials), a resumed run (12), a short run (3), no ERD (20), SSVEP (20)."""
    base = tmp_path_factory.mktemp("calibration")
    return {
        "good": record(base / "good", mi_pipeline(seed=3, duration=80)),
        "resumed": record(base / "resumed", mi_pipeline(seed=4, duration=48)),
        "short": record(base / "short", mi_pipeline(seed=3, duration=12)),
        "no_erd": record(base / "no_erd", mi_pipeline(seed=7, duration=80, erd=0.0)),
        "ssvep": record(base / "ssvep", SSVEP_PIPELINE),
    }


@pytest.fixture(scope="module")
def good(recordings: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """The report of the good MI recording (with co-adaptation), and the progress calls."""
    calls: list[tuple[str, float]] = []
    model = tmp_path_factory.mktemp("model") / "calibration.bcimodel"
    out = train_from_recordings([recordings["good"]], paradigm="mi", classes=MI_CLASSES,
                                model_path=model, adapt=["ts-recenter"],
                                progress=lambda stage, f: calls.append((stage, f)))
    return out, calls


def n_cued(path: Path, classes: list[str]) -> int:
    """Trials of ``classes`` with a full MI window in a recording (counted independently)."""
    from bci_runtime.decoders.evaluate_cli import _continuous

    events = {f"cue/{c}": c for c in classes}
    return len(cut_trials(_continuous(path), events, 0.5, 2.5, None))


# -- a good calibration ---------------------------------------------------------------------

def test_good_recording_is_good_enough(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    assert out["good_enough"] is True
    assert out["decoder"] == "ts-lr" and out["adapt"] == ["ts-recenter"]
    assert out["n_trials"] == 20
    assert sum(out["trials_per_class"].values()) == out["n_trials"]
    assert min(out["trials_per_class"].values()) >= 5
    assert out["chance"] == 0.5
    assert out["chance_threshold"] == pytest.approx(binom.ppf(0.95, 20, 0.5) / 20)
    assert out["accuracy"] >= 0.85 > out["chance_threshold"]
    assert out["min_accuracy"] == pytest.approx(0.70)
    assert len(out["fold_accuracies"]) == 5
    assert (out["sfreq"], out["tmin"], out["tmax"], out["band"]) == (250.0, 0.5, 2.5, [1, 40])
    assert out["channels"] == CHANNELS
    assert "above chance" in out["reasons"][0]


def test_confusion_matrix_counts_every_trial(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    matrix = np.array(out["confusion"]["matrix"])
    assert out["confusion"]["labels"] == MI_CLASSES
    assert matrix.shape == (2, 2) and matrix.sum() == out["n_trials"]
    assert matrix.sum(axis=1).tolist() == [out["trials_per_class"][c] for c in MI_CLASSES]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(out["accuracy"])


def test_saved_model_is_the_fitted_coadaptive_decoder(good: tuple[dict[str, Any], Any],
                                                     recordings: dict[str, Path]) -> None:
    out, _ = good
    path = Path(out["model"]["path"])
    assert out["model"]["sha256"] == file_sha256(path)
    model = load_model(path, sha256=out["model"]["sha256"])
    assert isinstance(model, CoAdaptiveDecoder)
    assert [type(s).__name__ for s in model.strategies_] and model.classes_.tolist() == MI_CLASSES
    from bci_runtime.decoders.evaluate_cli import _continuous

    trials = cut_trials(_continuous(recordings["good"]),
                        {f"cue/{c}": c for c in MI_CLASSES}, 0.5, 2.5, (1.0, 40.0))
    assert np.mean(model.predict(trials.X) == trials.y) >= 0.9


def test_mi_patterns_are_png_scalp_maps(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    titles = [p["title"] for p in out["patterns"]]
    assert any("CSP" in t for t in titles) and any("r²" in t for t in titles)
    for p in out["patterns"]:
        assert base64.b64decode(p["png"]).startswith(PNG_MAGIC)
    assert out["patterns_note"] is None


def test_progress_advances_to_one(good: tuple[dict[str, Any], Any]) -> None:
    _, calls = good
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    stages = " | ".join(stage for stage, _ in calls)
    assert "reading" in stages and "fold 5 of 5" in stages and "scalp maps" in stages
    assert "all trials" in stages


def test_report_is_plain_json(good: tuple[dict[str, Any], Any]) -> None:
    out, _ = good
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    expected = {"paradigm", "decoder", "adapt", "classes", "channels", "bad_channels", "sfreq",
                "tmin", "tmax", "band", "n_trials", "trials_per_class", "recordings",
                "accuracy", "fold_accuracies", "chance", "chance_threshold", "min_accuracy",
                "confusion", "good_enough", "reasons", "patterns", "patterns_note", "model"}
    assert expected <= set(out)


# -- several runs, bad channels -------------------------------------------------------------

def test_resumed_calibration_concatenates_runs(good: tuple[dict[str, Any], Any],
                                               recordings: dict[str, Path],
                                               tmp_path: Path) -> None:
    runs = [recordings["good"], recordings["resumed"]]
    out = train_from_recordings(runs, paradigm="mi", classes=MI_CLASSES,
                                model_path=tmp_path / "m.bcimodel")
    n_resumed = n_cued(recordings["resumed"], MI_CLASSES)
    assert n_resumed >= 10
    assert out["n_trials"] == good[0]["n_trials"] + n_resumed
    assert np.array(out["confusion"]["matrix"]).sum() == out["n_trials"]
    assert out["recordings"] == [str(p) for p in runs]
    assert out["good_enough"] is True


def test_bad_channels_are_left_out(recordings: dict[str, Path], tmp_path: Path) -> None:
    out = train_from_recordings([recordings["good"]], paradigm="mi", classes=MI_CLASSES,
                                model_path=tmp_path / "m.bcimodel", bad_channels=["Pz", "FC3"])
    assert out["channels"] == [c for c in CHANNELS if c not in ("Pz", "FC3")]
    assert out["bad_channels"] == ["Pz", "FC3"]
    model = load_model(tmp_path / "m.bcimodel")
    X = np.random.default_rng(0).normal(0, 1e-5, (2, 6, 500))
    assert model.predict(X).shape == (2,)  # a 6-channel model
    with pytest.raises(ValueError):  # DecoderError: the 8-channel montage no longer fits
        model.predict(np.random.default_rng(0).normal(0, 1e-5, (2, 8, 500)))


def test_unknown_bad_channel_names_the_recording_channels(recordings: dict[str, Path],
                                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'T7'") as info:
        train_from_recordings([recordings["good"]], paradigm="mi", classes=MI_CLASSES,
                              model_path=tmp_path / "m.bcimodel", bad_channels=["T7"])
    assert "C3, C4, Cz" in info.value.hint
    assert not (tmp_path / "m.bcimodel").exists()


# -- not enough, not good enough ------------------------------------------------------------

def test_too_few_trials_asks_for_more(recordings: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"only \d trials of '(left|right)'") as info:
        train_from_recordings([recordings["short"]], paradigm="mi", classes=MI_CLASSES,
                              model_path=tmp_path / "m.bcimodel")
    assert "at least 5 per class" in info.value.message
    assert info.value.hint == "record more calibration trials: the ones recorded are kept"


def test_a_class_without_trials_is_named(recordings: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no complete trial of 'feet'") as info:
        train_from_recordings([recordings["good"]], paradigm="mi",
                              classes=["left", "right", "feet"],
                              model_path=tmp_path / "m.bcimodel")
    assert "'left' ×" in info.value.message


def test_no_cue_markers_names_the_markers_found(recordings: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from bci_runtime.decoders import trials

    real = trials.load_continuous

    def without_cues(path: Path) -> Any:
        rec, warnings = real(path)
        keep = [i for i, m in enumerate(rec.markers) if not m.startswith("cue/")]
        return replace(rec, markers=[rec.markers[i] for i in keep],
                       marker_times=rec.marker_times[keep]), warnings

    monkeypatch.setattr(trials, "load_continuous", without_cues)
    with pytest.raises(ConfigError, match="no cue markers") as info:
        train_from_recordings([recordings["good"]], paradigm="mi", classes=MI_CLASSES,
                              model_path=tmp_path / "m.bcimodel")
    assert "'trial/start' ×" in info.value.message


def test_no_erd_is_not_good_enough(recordings: dict[str, Path], tmp_path: Path) -> None:
    out = train_from_recordings([recordings["no_erd"]], paradigm="mi", classes=MI_CLASSES,
                                model_path=tmp_path / "m.bcimodel")
    assert out["good_enough"] is False
    assert out["accuracy"] <= out["chance_threshold"]
    assert "not clearly above chance" in out["reasons"][0]
    assert any("Record more calibration trials" in r and "electrodes" in r
               for r in out["reasons"])
    assert Path(out["model"]["path"]).exists()  # the clinician may still go on, knowingly


def test_duplicate_cues_from_two_marker_streams_count_once() -> None:
    from bci_runtime.decoders.trials import Continuous

    rec = Continuous(np.zeros((10, 2)), np.arange(10.0), 1.0, ("C3", "C4"),
                     ["cue/left", "cue/left", "end", "cue/left"], np.array([1.0, 1.0, 2.0, 5.0]),
                     "x.xdf")
    assert ct._one_cue_per_trial(rec).markers == ["cue/left", "end", "cue/left"]


def test_bad_options_fail_before_reading(tmp_path: Path) -> None:
    missing = [tmp_path / "never-read.xdf"]
    model = tmp_path / "m.bcimodel"
    with pytest.raises(ConfigError, match="paradigm 'continuous'"):
        train_from_recordings(missing, paradigm="continuous", classes=MI_CLASSES,
                              model_path=model)
    with pytest.raises(ConfigError, match="at least two"):
        train_from_recordings(missing, paradigm="mi", classes=["left"], model_path=model)
    with pytest.raises(ConfigError, match="unknown decoder"):
        train_from_recordings(missing, paradigm="mi", classes=MI_CLASSES, model_path=model,
                              decoder="nope")
    with pytest.raises(ConfigError, match="window"):
        train_from_recordings(missing, paradigm="mi", classes=MI_CLASSES, model_path=model,
                              tmin=2.0, tmax=1.0)


# -- SSVEP ----------------------------------------------------------------------------------

def test_ssvep_trains_with_its_default_decoder(recordings: dict[str, Path],
                                               tmp_path: Path) -> None:
    out = train_from_recordings([recordings["ssvep"]], paradigm="ssvep", classes=SSVEP_CLASSES,
                                model_path=tmp_path / "ssvep.bcimodel")
    assert out["decoder"] == "ssvep-ensemble"
    assert out["freqs"] == {"8.57Hz": 8.57, "12Hz": 12.0, "rest": None}
    assert (out["tmin"], out["tmax"], out["band"]) == (2.0, 5.0, [3, 45])
    assert out["chance"] == pytest.approx(1 / 3)
    assert out["min_accuracy"] == pytest.approx(0.6)
    assert out["good_enough"] is True and out["accuracy"] > out["chance_threshold"]
    assert np.array(out["confusion"]["matrix"]).sum() == out["n_trials"] >= 15
    (pattern,) = out["patterns"]
    assert "signal-to-noise" in pattern["title"]
    assert base64.b64decode(pattern["png"]).startswith(PNG_MAGIC)
    model = load_model(tmp_path / "ssvep.bcimodel")
    assert sorted(model.classes_.tolist()) == sorted(SSVEP_CLASSES)
    json.dumps(out, allow_nan=False)


def test_snr_peaks_where_the_response_is() -> None:
    rng = np.random.default_rng(0)
    sfreq, t = 250.0, np.arange(750) / 250.0
    X = rng.normal(0, 1.0, (6, 3, t.size))
    X[:, 1] += 1.0 * np.sin(2 * np.pi * 12.0 * t + rng.uniform(0, 6, (6, 1)))
    snr = snr_at(X, sfreq, 12.0)
    assert snr.shape == (3,)
    assert snr[1] > 20 and snr[0] < 5 and snr[2] < 5
    assert snr_at(X, sfreq, 17.0)[1] < 5


def test_stimulus_frequencies_from_names_or_given() -> None:
    assert stimulus_frequencies(["8.57Hz", "10Hz", "12 Hz", "rest"]) == {
        "8.57Hz": 8.57, "10Hz": 10.0, "12 Hz": 12.0, "rest": None}
    assert stimulus_frequencies(["A", "B", "Rest"], [13, 21]) == {"A": 13.0, "B": 21.0,
                                                                  "Rest": None}
    with pytest.raises(ConfigError, match="do not name"):
        stimulus_frequencies(["A", "B"])
    with pytest.raises(ConfigError, match="one frequency per class"):
        stimulus_frequencies(["A", "B", "rest"], [13])

