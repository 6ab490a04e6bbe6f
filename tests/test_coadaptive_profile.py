"""A patient's profile: the co-adaptive decoder node starts from a saved model, picks channels.

A model is fitted offline on simulated trials of the same simulated subject as
the pipeline's (the ``eeg`` node's seed), on a stretch of signal the runs never
reach, and saved with ``save_model``; pipelines then serve it from their first
window (``initial_model``) and keep co-adapting. Configuration errors are
checked on the graph alone, before anything runs.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from session_helpers import run_json, streams_of

from bci_runtime.chunk import Chunk, EventChunk
from bci_runtime.decoders.adaptation import CoAdaptiveDecoder, make_strategies
from bci_runtime.decoders.coadaptive_node import CoAdaptiveDecoderNode, last_serving_version
from bci_runtime.decoders.model_store import file_sha256, load_model, read_manifest, save_model
from bci_runtime.decoders.riemann import MDM, TangentSpaceLR
from bci_runtime.decoders.trials import Continuous, cut_trials
from bci_runtime.errors import ConfigError
from bci_runtime.graph import load_graph_text
from bci_runtime.node import NodeContext
from bci_runtime.registry import get_node_class
from bci_runtime.simulators.paradigms import make_generator
from bci_runtime.spec import StreamSpec

SEED = 5
SRATE = 250
CHANNELS = ["C3", "C4", "Cz", "FC3", "FC4", "CP3", "CP4", "Pz"]
# a model of 7 of them (Pz marked bad), in another order: a wrong pick swaps C3 and C4,
# which swaps left and right
SEVEN = ["C4", "C3", "Cz", "FC4", "FC3", "CP4", "CP3"]
TMIN, TMAX = 0.5, 2.5
EEG = {"n_channels": 8, "channels": CHANNELS, "srate": SRATE, "chunk_size": 10,
       "classes": ["left", "right"],
       "timing": {"fixation_s": 0.5, "imagery_s": 2.5, "rest_s": 0.5, "first_s": 0.5},
       "erd": 0.5, "mu_uv": 16, "background_uv": 5}
DURATION = 30  # s of signal per run (8 trials); the offline model learns from t > 40 s

PIPELINE = """\
name: profile
seed: {seed}
clock: simulated
duration: {duration}
nodes:
  eeg:
    type: simulated_eeg
    params: {eeg}
  bandpass:
    type: bandpass
    params: {{low: 8, high: 30, order: 4}}
    inputs: {{signal: eeg.signal}}
  decoder:
    type: coadaptive_decoder
    params: {decoder}
    inputs: {{signal: bandpass.filtered, labels: eeg.markers}}
  feedback:
    type: feedback
    params: {{lsl_name: {lsl_name}}}
    inputs: {{decision: decoder.decision, truth: eeg.markers}}
"""


def decoder_params(**fields: Any) -> dict[str, Any]:
    return {"decoder": "ts-lr", "classes": ["left", "right"], "adapt": ["lda-bias"],
            "tmin": TMIN, "tmax": TMAX, "step_s": 0.2, "calibration_trials": 3,
            "shadow_trials": 2, "drift_window": 4, **fields}


def pipeline_text(name: str, eeg: dict[str, Any] | None = None, duration: float = DURATION,
                  **decoder: Any) -> str:
    return PIPELINE.format(seed=SEED, duration=duration, eeg=json.dumps({**EEG, **(eeg or {})}),
                           decoder=json.dumps(decoder_params(**decoder)),
                           lsl_name=f"test-profile-{name}")


def write_pipeline(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(pipeline_text(tmp_path.name, **fields))
    return path


def model_events(streams: dict[str, dict[str, Any]]) -> list[tuple[str, dict]]:
    return [(m.split(" ", 1)[0][6:], json.loads(m.split(" ", 1)[1]))
            for [m] in streams["decoder.model"]["time_series"]]


def subject_trials(channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Trials of the pipeline's simulated subject, from 40 s on (after every run's end).

    Returns
    -------
    X : ndarray, shape (n_trials, len(channels), n_times)
    y : ndarray, shape (n_trials,)
    """
    node = get_node_class("simulated_eeg")("eeg", EEG)
    # the seed the eeg node derives from the pipeline's (NodeContext.rng("simulator"))
    seed = int(NodeContext.for_test("eeg", seed=SEED).rng("simulator").integers(2**31 - 1))
    gen = make_generator(node.paradigm, node.paradigm_params(), seed=seed)
    blocks = [gen.next_block(25) for _ in range(140 * SRATE // 25)]
    data = np.concatenate([b.data for b in blocks])
    cues = [(label, i / SRATE) for b in blocks for label, i in b.markers
            if label.startswith("cue/")]
    rec = Continuous(data, np.arange(len(data)) / SRATE, float(SRATE),
                     tuple(gen.channel_names), [label for label, _ in cues],
                     np.array([t for _, t in cues]), "simulator", [])
    trials = cut_trials(rec, {"cue/left": "left", "cue/right": "right"}, TMIN, TMAX,
                        (8.0, 30.0))
    later = trials.onsets > 40.0
    pick = [list(gen.channel_names).index(c) for c in channels]
    return trials.X[later][:, pick], trials.y[later]


def fitted(X: np.ndarray, y: np.ndarray, decoder: Any = None,
           adapt: str | None = "lda-bias") -> CoAdaptiveDecoder:
    strategies = make_strategies(adapt) if adapt else []
    return CoAdaptiveDecoder(decoder or TangentSpaceLR(sfreq=float(SRATE)), strategies).fit(X, y)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model files: the subject's (8 and 7 channels) and wrong ones for the error cases."""
    folder = tmp_path_factory.mktemp("models")
    X, y = subject_trials(CHANNELS)
    X7, y7 = subject_trials(SEVEN)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((12, 8, 500))
    labels = np.array(["left", "right"] * 6)
    wrong = {
        "subject": fitted(X, y),
        "seven": fitted(X7, y7),
        "decoder_only": TangentSpaceLR(sfreq=float(SRATE)).fit(noise, labels),
        "unfitted": CoAdaptiveDecoder(TangentSpaceLR(sfreq=float(SRATE)),
                                      make_strategies("lda-bias")),
        "feet": fitted(noise, np.array(["left", "feet"] * 6)),
        "rate160": fitted(noise, labels, TangentSpaceLR(sfreq=160.0)),
        "window": fitted(noise[:, :, :400], labels),
        "mdm": fitted(noise, labels, MDM(sfreq=float(SRATE)), adapt=None),
        "no_strategy": fitted(noise, labels, adapt=None),
    }
    paths = {}
    for name, model in wrong.items():
        paths[name] = folder / f"{name}.bcimodel"
        save_model(model, paths[name])
    paths["garbage"] = folder / "garbage.bcimodel"
    paths["garbage"].write_bytes(b"not a model at all")
    return paths


# -- running from an initial model --------------------------------------------------------

def test_an_initial_model_serves_from_the_first_window_and_keeps_coadapting(
        tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model_file = models["subject"]
    sha = file_sha256(model_file)
    pipeline = write_pipeline(tmp_path, initial_model=str(model_file),
                              initial_model_sha256=sha)
    code, summary = run_json(capsys, "run", str(pipeline), "--sessions-root",
                             str(tmp_path / "sessions"))
    assert code == 0 and summary["status"] == "completed", summary
    session = Path(summary["session_dir"])
    streams = streams_of(session)
    events = model_events(streams)
    kind, first = events[0]
    assert kind == "online" and first["version"] == 1 and first["parent"] is None
    assert first["source"] == "initial_model" and first["reason"] == "initial_model"
    assert first["path"] == str(model_file.resolve()) and first["sha256"] == sha
    # no calibration phase: decisions start at the first window, before the first cued
    # trial has even ended (an online calibration needs 3 trials per class first)
    decisions = streams["decoder.decision"]["time_stamps"]
    cues = [t for [m], t in zip(streams["eeg.markers"]["time_series"],
                                streams["eeg.markers"]["time_stamps"]) if m.startswith("cue/")]
    assert decisions[0] == first["first_window"]
    assert decisions[0] < cues[0] + TMAX
    assert decisions[0] <= streams["bandpass.filtered"]["time_stamps"][0] + (TMAX - TMIN)
    # co-adaptation goes on: each labelled trial is an update, shadowed, then swapped in
    kinds = [k for k, _ in events]
    updates = [d for _, d in events if d.get("reason") == "update"]
    assert updates and updates[0]["parent"] == 1 and "shadow" in kinds and "swap" in kinds
    life = summary["training"]["decoder"]
    assert life["versions"] > 3 and life["serving_version"] > 1
    assert summary["accuracy"] > 0.8 and summary["trial_accuracy"] > 0.8  # chance: 0.5
    # the session keeps the very file it started from as version 1
    folder = session / "models" / "decoder"
    manifest = read_manifest(folder)
    assert manifest["1"]["sha256"] == sha
    assert (folder / manifest["1"]["file"]).read_bytes() == model_file.read_bytes()
    assert len(manifest) == life["versions"]

    # another day: the last serving version of this session is the next initial model
    last = last_serving_version(session)
    assert last.version == life["serving_version"]
    assert last.sha256 == manifest[str(last.version)]["sha256"] == file_sha256(last.path)
    continued = load_model(last.path, sha256=last.sha256)
    assert isinstance(continued, CoAdaptiveDecoder)
    assert continued.n_updates_ > load_model(model_file).n_updates_  # it learned today
    day2 = tmp_path / "day2"
    day2.mkdir()
    code, again = run_json(capsys, "run", str(write_pipeline(day2, **last.as_params())),
                           "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0 and again["status"] == "completed", again
    kind, first = model_events(streams_of(Path(again["session_dir"])))[0]
    assert kind == "online" and first["path"] == str(last.path)
    assert first["sha256"] == last.sha256 and first["digest"] == \
        [d for _, d in events if d["version"] == last.version][-1]["digest"]
    assert again["training"]["decoder"]["versions"] > 1 and again["accuracy"] > 0.8


def test_drift_after_an_initial_model_triggers_recalibrations(
        tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # the session's first 3 trials per class are the drift reference; then electrodes move
    jump = {"drift": {"scenario": "session-jump", "onset_s": 28, "ramp_s": 2}}
    pipeline = write_pipeline(tmp_path, eeg=jump, duration=60,
                              initial_model=str(models["subject"]), recalibration_trials=4)
    code, summary = run_json(capsys, "run", str(pipeline), "--sessions-root",
                             str(tmp_path / "sessions"))
    assert code == 0 and summary["status"] == "completed", summary
    events = model_events(streams_of(Path(summary["session_dir"])))
    drifts = [d["at"] for k, d in events if k == "drift"]
    assert drifts and min(drifts) > 28.0
    recalibrated = [d for k, d in events if d.get("reason") == "recalibration"]
    assert recalibrated and min(d["first_window"] for d in recalibrated
                                if "first_window" in d) > min(drifts)
    assert summary["training"]["decoder"]["drift_detections"] == len(drifts)
    assert summary["accuracy"] > 0.7


def test_a_session_started_from_an_initial_model_replays_exactly(
        tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write_pipeline(tmp_path, initial_model=str(models["subject"]))
    code, live = run_json(capsys, "run", str(pipeline), "--sessions-root",
                          str(tmp_path / "sessions"))
    assert code == 0, live
    code, summary = run_json(capsys, "replay", live["session_dir"], "--fast",
                             "--sessions-root", str(tmp_path / "sessions"))
    assert code == 0 and summary["replay"]["reproduced"] is True, summary
    before, after = (model_events(streams_of(Path(s)))
                     for s in (live["session_dir"], summary["session_dir"]))
    assert before == after and before[0][1]["source"] == "initial_model"


def test_channels_pick_the_models_channels_by_name_and_order(
        tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write_pipeline(tmp_path, initial_model=str(models["seven"]), channels=SEVEN)
    code, summary = run_json(capsys, "run", str(pipeline), "--sessions-root",
                             str(tmp_path / "sessions"))
    assert code == 0 and summary["status"] == "completed", summary
    # C3/C4 swapped by a wrong pick would swap left and right: accuracy far below chance
    assert summary["accuracy"] > 0.8
    assert summary["training"]["decoder"]["versions"] > 1  # updates take the 7 channels too


def test_the_pick_is_one_index_per_chunk() -> None:
    spec = StreamSpec(name="eeg", type="EEG", channel_names=tuple(CHANNELS), srate=SRATE,
                      dtype="float64", source_id="sim")
    node = CoAdaptiveDecoderNode("decoder", decoder_params(channels=["Pz", "C3"]))
    node.bind({"signal": spec, "labels": StreamSpec.events("m", "sim-m")})
    node.open(NodeContext.for_test("decoder"))
    try:
        data = np.arange(20 * 8, dtype=np.float64).reshape(20, 8)
        node.process("signal", Chunk(data, np.arange(20) / SRATE, spec))
        buffered, _ = node._ring.latest(20)
        np.testing.assert_array_equal(buffered, data[:, [7, 0]])
    finally:
        node.close()


# -- configuration errors, before anything runs -------------------------------------------

def configure(tmp_path: Path, **decoder: Any) -> None:
    load_graph_text(pipeline_text(tmp_path.name, **decoder), "profile.yaml")


def config_error(tmp_path: Path, **decoder: Any) -> str:
    with pytest.raises(ConfigError) as info:
        configure(tmp_path, **decoder)
    return str(info.value)


def test_a_missing_channel_name_lists_the_inputs_channels(tmp_path: Path) -> None:
    text = config_error(tmp_path, channels=["C3", "C5", "Cz"])
    assert "node 'decoder' parameter 'channels'" in text and "['C5']" in text
    assert str(CHANNELS) in text  # the input's channels, to pick from


def test_a_channel_named_twice_is_refused(tmp_path: Path) -> None:
    text = config_error(tmp_path, channels=["C3", "C3"])
    assert "parameter 'channels'" in text and "more than once" in text


def test_a_model_file_that_is_missing_or_unreadable_is_refused(
        tmp_path: Path, models: dict[str, Path]) -> None:
    text = config_error(tmp_path, initial_model=str(tmp_path / "nowhere.bcimodel"))
    assert "parameter 'initial_model'" in text and "does not exist" in text
    assert "nowhere.bcimodel" in text
    text = config_error(tmp_path, initial_model=str(tmp_path))  # a folder
    assert "parameter 'initial_model'" in text and "cannot read" in text
    text = config_error(tmp_path, initial_model=str(models["garbage"]))
    assert "parameter 'initial_model'" in text and "not a bci-runtime model file" in text


def test_a_model_file_of_another_hash_is_refused(tmp_path: Path,
                                                 models: dict[str, Path]) -> None:
    actual = file_sha256(models["subject"])
    text = config_error(tmp_path, initial_model=str(models["subject"]),
                        initial_model_sha256="0" * 64)
    assert "parameter 'initial_model_sha256'" in text and actual in text and "0" * 64 in text
    text = config_error(tmp_path, initial_model=str(models["subject"]),
                        initial_model_sha256="abc")
    assert "is not a SHA-256" in text
    text = config_error(tmp_path, initial_model_sha256=actual)
    assert "initial_model is not" in text
    configure(tmp_path, initial_model=str(models["subject"]),
              initial_model_sha256=actual.upper())  # the right hash, in any case, passes


@pytest.mark.parametrize(("model", "params", "expected"), [
    ("decoder_only", {}, ["TangentSpaceLR", "not a CoAdaptiveDecoder"]),
    ("unfitted", {}, ["never fitted"]),
    ("feet", {}, ["['feet', 'left']", "['left', 'right']"]),
    ("subject", {"classes": ["right", "left"]}, ["another order", "set classes"]),
    ("seven", {}, ["fitted on 7 channels", "gets 8 channels", str(CHANNELS)]),
    ("subject", {"channels": SEVEN}, ["fitted on 8 channels", "gets 7 channels",
                                      "picked by 'channels'"]),
    ("rate160", {}, ["fitted at 160 Hz", "250 Hz"]),
    ("window", {}, ["windows of 400 samples", "500 samples"]),
    ("mdm", {"adapt": []}, ["MDM", "'ts-lr'", "set decoder: mdm"]),
    ("no_strategy", {}, ["strategies []", "['lda-bias']", "set adapt: []"]),
], ids=["not-coadaptive", "unfitted", "classes", "class-order", "channel-count",
        "picked-count", "rate", "window", "decoder", "strategies"])
def test_a_model_the_node_cannot_serve_is_refused(
        tmp_path: Path, models: dict[str, Path], model: str, params: dict[str, Any],
        expected: list[str]) -> None:
    text = config_error(tmp_path, initial_model=str(models[model]), **params)
    assert "node 'decoder' parameter 'initial_model'" in text
    for part in expected:
        assert part in text, text


def test_replaying_a_calibrating_session_with_an_initial_model_is_refused(
        tmp_path: Path, models: dict[str, Path]) -> None:
    # bci replay hands the recorded installs back as install_at; a session that installed
    # nothing cannot have started from a model
    text = config_error(tmp_path, initial_model=str(models["subject"]), install_at=[])
    assert "parameter 'initial_model'" in text and "install_at is empty" in text
    # one that calibrated online installed its first version after its first window
    spec = StreamSpec(name="eeg", type="EEG", channel_names=tuple(CHANNELS), srate=SRATE,
                      dtype="float64", source_id="sim")
    node = CoAdaptiveDecoderNode("decoder", decoder_params(
        initial_model=str(models["subject"]), install_at=[21.196]))
    node.bind({"signal": spec, "labels": StreamSpec.events("m", "sim-m")})
    node.open(NodeContext.for_test("decoder"))
    rng = np.random.default_rng(0)
    try:
        with pytest.raises(ConfigError, match="calibrated online"):
            for i in range(0, 3 * SRATE, 10):
                stamps = (i + np.arange(10)) / SRATE
                node.process("labels", EventChunk(("fixation",), stamps[:1],
                                                  node.input_specs["labels"]))
                node.process("signal", Chunk(rng.standard_normal((10, 8)) * 1e-5,
                                             stamps, spec))
        assert node.lifecycle.serving is None  # nothing served
    finally:
        node.close()


def test_the_pipeline_file_configures_with_a_good_model(tmp_path: Path,
                                                        models: dict[str, Path]) -> None:
    graph = load_graph_text(textwrap.dedent(pipeline_text(
        tmp_path.name, initial_model=str(models["seven"]), channels=SEVEN)))
    node = graph.nodes["decoder"]
    assert node.output_specs["decision"].channel_names == ("left", "right")
    np.testing.assert_array_equal(node._pick, [CHANNELS.index(c) for c in SEVEN])
