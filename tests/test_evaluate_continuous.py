"""``bci evaluate --paradigm continuous`` on real recording files and on the simulator.

The recordings are written here with the project's own XDF writer (and MNE for
a FIF file): a simulated open-loop center-out session, its neural signal (spike
counts of a cortical population, or ECoG) in one stream and the simulator's
ground-truth velocity (``block.truth``) in another, as a kinematics tracker
recorded beside the amplifier would give them. The command reads them back
through ``load_recording``, as it would a user's files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bci_runtime.cli import main as cli_main
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.xdf_writer import XdfWriter

POPULATION = ("population", {"n_channels": 96, "srate": 20})
ECOG = ("ecog", {"n_channels": 32, "srate": 1000})
TRAIN_S = 60.0


@dataclass
class Part:
    """A stretch of a simulated session: signal, truth and markers, on the stream's clock."""

    data: np.ndarray  # (n_samples, n_channels)
    truth: np.ndarray  # (n_samples, n_truth): vx, vy, cursor_x, cursor_y, target_x, target_y
    t: np.ndarray  # (n_samples,)
    markers: list[tuple[str, float]]
    srate: float
    channels: list[str]


def session(kind: tuple[str, dict[str, Any]], seconds: list[float], *, seed: int = 4,
            drift: dict[str, Any] | None = None) -> list[Part]:
    """One open-loop session cut into consecutive parts of ``seconds`` each."""
    gen = make_generator(kind[0], kind[1], seed=seed, drift=drift)
    srate, parts, start = float(gen.srate), [], 0
    for length in seconds:
        blocks = [gen.next_block(int(srate)) for _ in range(int(length))]
        data = np.concatenate([b.data for b in blocks])
        t = (start + np.arange(data.shape[0])) / srate
        marks = [(label, i / srate) for b in blocks for label, i in b.markers]
        parts.append(Part(data, np.concatenate([b.truth for b in blocks]), t, marks, srate,
                          list(gen.channel_names)))
        start += data.shape[0]
    return parts


def write_xdf(path: Path, part: Part, *, signal_type: str = "Spikes", velocity: bool = True,
              position: bool = False, channels: slice = slice(None),
              nan_velocity: bool = False) -> Path:
    with XdfWriter(path) as w:
        names = part.channels[channels]
        sid = w.add_stream(name="Neural", type=signal_type, channel_count=len(names),
                           srate=part.srate, channel_format="float32",
                           channel_labels=names, source_id=f"test-neural-{path.name}")
        w.write_samples(sid, part.data[:, channels], part.t)
        if velocity:
            vel = np.full((len(part.t), 2), np.nan) if nan_velocity else part.truth[:, :2]
            vid = w.add_stream(name="Velocity", type="Kinematics", channel_count=2,
                               srate=part.srate, channel_format="double64",
                               channel_labels=["vx", "vy"], source_id=f"test-vel-{path.name}")
            w.write_samples(vid, vel, part.t)
        if position:
            pid = w.add_stream(name="Position", type="Kinematics", channel_count=2,
                               srate=part.srate, channel_format="double64",
                               channel_labels=["cursor_x", "cursor_y"],
                               source_id=f"test-pos-{path.name}")
            w.write_samples(pid, part.truth[:, 2:4], part.t)
        if part.markers:
            mid = w.add_stream(name="Truth markers", type="Markers", channel_count=1, srate=0,
                               channel_format="string", source_id=f"test-mk-{path.name}")
            w.write_samples(mid, [[m] for m, _ in part.markers],
                            np.array([t for _, t in part.markers]))
    return path


def evaluate_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli_main(["evaluate", "--paradigm", "continuous", *argv, "--json"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, json.loads(out[-1])


@pytest.fixture(scope="module")
def stationary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stationary")
    train, test = session(POPULATION, [TRAIN_S, 60.0])
    return {"train": write_xdf(folder / "train.xdf", train),
            "test": write_xdf(folder / "test.xdf", test),
            "both": write_xdf(folder / "both.xdf", test, position=True),
            "none": write_xdf(folder / "none.xdf", test, velocity=False),
            "nan": write_xdf(folder / "nan.xdf", test, nan_velocity=True),
            "fewer": write_xdf(folder / "fewer.xdf", test, channels=slice(0, 90)),
            "short": write_xdf(folder / "short.xdf", session(POPULATION, [3.0])[0])}


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tuning drift (rho 0.5) from 20 s into the test recording, 30 s ramp."""
    folder = tmp_path_factory.mktemp("drifted")
    drift = {"scenario": "tuning-drift", "onset_s": TRAIN_S + 20.0, "ramp_s": 30.0, "rho": 0.5}
    train, test = session(POPULATION, [TRAIN_S, 150.0], seed=5, drift=drift)
    return {"train": write_xdf(folder / "train.xdf", train),
            "test": write_xdf(folder / "test.xdf", test)}


def test_a_static_kalman_decodes_a_held_out_recording(
        stationary: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--train", str(stationary["train"]),
                              "--test", str(stationary["test"]))
    assert code == 0, out
    assert out["paradigm"] == "continuous" and out["decoder"] == "kalman"
    assert out["target"] == ["vx", "vy"]  # the one kinematics stream, found without --target
    assert out["n_train"] == 1200 and out["n_test"] == 1200 and out["bin_s"] == 0.05
    static, oracle = out["arms"]["static"], out["arms"]["oracle"]
    assert set(static) == {"r2", "correlation"}
    assert static["r2"] > 0.8 and static["correlation"] > 0.9
    assert oracle["r2"] > 0.8
    assert list(out["strategies"]) == ["rml", "smoothbatch"]
    assert out["arms"]["adaptive"]["strategy"] == "rml"
    # no drift marker: no drift figures
    assert "recovery_fraction" not in out and "drift_onset_s" not in out


def test_ecog_band_power_from_xdf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, test = session(ECOG, [40.0, 20.0], seed=2)
    code, out = evaluate_json(capsys, "--train", str(write_xdf(tmp_path / "a.xdf", train,
                                                                 signal_type="ECoG")),
                              "--test", str(write_xdf(tmp_path / "b.xdf", test,
                                                      signal_type="ECoG")),
                              "--target", "Velocity", "--adapt", "none")
    assert code == 0, out
    assert out["features"] == "log power 70-150 Hz, 50 ms bins"
    assert out["n_train"] == 800 and out["n_test"] == 400
    assert out["arms"]["static"]["r2"] > 0.5
    assert "adaptive" not in out["arms"]


def test_adaptation_recovers_what_tuning_drift_takes_from_a_static_decoder(
        drifted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--train", str(drifted["train"]),
                              "--test", str(drifted["test"]), "--target", "vx,vy",
                              "--adapt", "rml,smoothbatch")
    assert code == 0, out
    static, adaptive, oracle = (out["arms"][k] for k in ("static", "adaptive", "oracle"))
    assert adaptive["strategy"] == "rml"
    assert out["drift_onset_s"] == pytest.approx(TRAIN_S + 20.0, abs=0.05)  # from the marker
    assert static["r2_before_onset"] > 0.8
    assert static["r2_after_onset"] < static["r2_before_onset"] - 0.2
    assert adaptive["r2"] > static["r2"] + 0.1
    assert adaptive["r2_after_onset"] > static["r2_after_onset"] + 0.15
    assert oracle["r2_after_onset"] > static["r2_after_onset"] + 0.15
    assert out["recovery_fraction"] > 0.6
    assert out["strategies"]["smoothbatch"]["r2_after_onset"] > static["r2_after_onset"]
    assert {"tau90_s", "regret_r2"} <= set(out["strategies"]["rml"])


def test_ridge_on_misc_channels_of_a_fif_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    mne = pytest.importorskip("mne")
    files = []
    for i, part in enumerate(session(POPULATION, [TRAIN_S, 30.0], seed=6)):
        names = part.channels + ["vx", "vy"]
        info = mne.create_info(names, part.srate, ["misc"] * len(names))
        raw = mne.io.RawArray(np.c_[part.data, part.truth[:, :2]].T, info, verbose="error")
        files.append(tmp_path / f"part{i}_raw.fif")
        raw.save(files[-1], verbose="error")
    code, out = evaluate_json(capsys, "--train", str(files[0]), "--test", str(files[1]),
                              "--target", "vx,vy", "--decoder", "ridge")
    assert code == 0, out
    assert out["decoder"] == "ridge" and out["features"] == "bin means, 50 ms bins"
    assert out["arms"]["static"]["r2"] > 0.5  # the target channels are not features
    assert list(out["strategies"]) == ["ridge-partial-fit"]
    assert set(out["strategies_skipped"]) == {"smoothbatch", "rml"}


@pytest.mark.parametrize("case, argv, message", [
    ("none", [], ["no stream looks like kinematics", "'Neural' (Spikes, 96 ch",
                  "--target"]),
    ("both", [], ["2 streams look like kinematics", "'Velocity' (Kinematics, 2 ch: vx, vy)",
                  "'Position' (Kinematics, 2 ch: cursor_x, cursor_y)"]),
    ("test", ["--target", "hand_x,hand_y"], ["--target hand_x,hand_y matches no stream and "
                                             "no channel", "'Velocity'"]),
    ("test", ["--target", "vx,vz"], ["stream 'Velocity' has no channel 'vz'"]),
    ("nan", [], ["the target 'Velocity' holds only NaN"]),
    ("fewer", [], ["gives 90 feature channels but", "gives 96"]),
    ("test", ["--adapt", "recenter"], ["unknown strategy 'recenter' for --paradigm continuous",
                                       "rml, smoothbatch, ridge-partial-fit"]),
    ("test", ["--decoder", "ridge", "--adapt", "rml"], ["rml cannot adapt this decoder"]),
    ("test", ["--events", "1=left"], ["--events does not apply to --paradigm continuous"]),
])
def test_bad_input_is_a_usage_error_that_says_what_to_do(
        stationary: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str,
        argv: list[str], message: list[str]) -> None:
    code = cli_main(["evaluate", "--paradigm", "continuous", "--train",
                     str(stationary["train"]), "--test", str(stationary[case]), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    for part in message:
        assert part in err


def test_too_few_training_bins(stationary: dict[str, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["evaluate", "--paradigm", "continuous", "--train",
                     str(stationary["short"]), "--test", str(stationary["test"])])
    err = capsys.readouterr().err
    assert code == 2
    assert "only 60 training bins have a target" in err and "at least 100" in err


def test_simulated_tuning_drift_in_closed_loop(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--simulate", "tuning-drift", "--minutes", "2")
    assert code == 0, out
    assert out["decoder"] == "kalman" and out["arms"]["adaptive"]["strategy"] == "rml"
    assert out["n_train"] == 1200 and out["n_test"] == 2400
    static, adaptive, oracle = (out["arms"][k] for k in ("static", "adaptive", "oracle"))
    assert static["r2_before_onset"] > 0.9
    assert static["r2_after_onset"] < static["r2_before_onset"] - 0.2
    assert adaptive["r2_after_onset"] > static["r2_after_onset"] + 0.2
    assert adaptive["targets_per_min_after_onset"] > static["targets_per_min_after_onset"]
    assert oracle["r2_after_onset"] > 0.85
    assert out["recovery_fraction"] > 0.7
    assert out["simulation"]["closed_loop_s"] == 120.0


def test_every_arm_is_causal(stationary: dict[str, Path]) -> None:
    """What an arm decodes for a bin does not change when later test data are cut off."""
    from dataclasses import replace

    from bci_runtime.decoders import catalog
    from bci_runtime.decoders.continuous_recordings import load_binned
    from bci_runtime.decoders.evaluate_continuous import evaluate_binned, make_decoder_factory

    make = make_decoder_factory(catalog.get("kalman"),
                                catalog.DecoderContext(sfreq=20.0, classes=[]))
    train, test = load_binned(stationary["train"]), load_binned(stationary["test"])
    cut = replace(test, X=test.X[:530], Y=test.Y[:530], t=test.t[:530])
    full, part = evaluate_binned(make, train, test), evaluate_binned(make, train, cut)
    assert list(full.arms) == ["static", "adaptive:rml", "adaptive:smoothbatch", "oracle"]
    for name, arm in part.arms.items():
        np.testing.assert_allclose(full.arms[name].decoded[:530], arm.decoded, rtol=1e-9,
                                   atol=1e-12)


def test_the_target_of_a_bin_is_the_last_sample_at_or_before_its_end() -> None:
    from bci_runtime.decoders.continuous_recordings import sample_target

    ts = np.array([0.0, 0.1, 0.2, 1.0])
    values = np.arange(4.0)[:, None]
    out = sample_target(np.array([-0.05, 0.05, 0.1, 0.19, 0.5, 1.0]), ts, values, max_age=0.2)
    np.testing.assert_array_equal(out[:, 0], [np.nan, 0.0, 1.0, 1.0, np.nan, 3.0])
