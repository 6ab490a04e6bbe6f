"""The cursor_decoder node: streaming features, open-loop calibration, closed loop with CLDA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bci_runtime.decoders.clda import refit_intention
from bci_runtime.decoders.coadaptive_node import last_serving_version
from bci_runtime.decoders.continuous import KalmanDecoder
from bci_runtime.decoders.continuous_recordings import bin_features
from bci_runtime.decoders.cursor_loop import HighGammaPower, record_open_loop
from bci_runtime.decoders.cursor_model import BinnedFeatureStream, CursorModel
from bci_runtime.decoders.cursor_node import CursorDecoderParams, _Adapter, _Job
from bci_runtime.decoders.model_store import load_model, read_manifest, save_model
from bci_runtime.errors import ConfigError, PipelineError
from bci_runtime.runner import Runner
from bci_runtime.simulators.paradigms import make_generator

ECOG = {"n_channels": 16, "srate": 500, "chunk_size": 10}


@pytest.mark.parametrize("band", [(70.0, 150.0), None])
def test_streamed_features_equal_the_offline_ones_whatever_the_chunks(band: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    t = np.arange(4000) / 500.0
    X, ends, _ = bin_features(x, 500.0, band, 0.05)
    stream = BinnedFeatureStream(500.0, 3, band, 25)
    rows, stamps, i = [], [], 0
    while i < len(x):
        n = int(rng.integers(1, 90))  # shorter and longer than a bin
        got, at = stream.push(x[i:i + n], t[i:i + n])
        rows.append(got)
        stamps.append(at)
        i += n
    np.testing.assert_allclose(np.vstack(rows), X, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.concatenate(stamps), t[ends])


def run(make_graph: Any, decoder: str, seconds: float, *, source: str = "",
        session: Path | None = None) -> dict[str, Any]:
    """Simulated ECoG in closed loop with the cursor_decoder; what happened."""
    source = source or f"params: {json.dumps(ECOG)}"
    graph = make_graph(f"""
        name: cursor
        clock: simulated
        seed: 5
        duration: {seconds}
        nodes:
          ecog:
            type: simulated_ecog
            {source}
            inputs:
              feedback: {{from: decoder.velocity, delayed: true}}
          decoder:
            type: cursor_decoder
            params: {decoder}
            inputs: {{signal: ecog.signal, task: ecog.truth}}
        """)
    seen: dict[str, list] = {"hits": [], "timeouts": [], "velocity": [], "model": [],
                             "truth": []}
    events: list[dict[str, Any]] = []

    def tap(node: str, outputs: Any, now: float, read: bool) -> None:
        if node == "ecog" and "markers" in outputs:
            for m, t in zip(outputs["markers"].markers, outputs["markers"].timestamps):
                kind = m.partition("/")[0]
                if kind in ("hit", "timeout"):
                    seen[kind + "s"].append(float(t))
        if node == "ecog" and "truth" in outputs:
            seen["truth"].append((outputs["truth"].timestamps, outputs["truth"].data))
        if node == "decoder":
            if "velocity" in outputs:
                seen["velocity"].append((outputs["velocity"].timestamps,
                                         outputs["velocity"].data))
            if "model" in outputs:
                seen["model"].extend(zip(outputs["model"].markers,
                                         outputs["model"].timestamps.tolist()))

    def log(kind: str, **fields: Any) -> None:
        events.append({"event": kind, **fields})

    result = Runner(graph, tap=tap, emit_event=log, session_dir=session).run()
    if result.error is not None:
        raise result.error
    if session is not None:  # what a session's events log would hold
        (session / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return {**seen, "summary": result.summaries["decoder"], "events": events}


def hits_between(out: dict[str, Any], start: float, end: float) -> int:
    return sum(start <= t < end for t in out["hits"])


def test_it_calibrates_in_open_loop_then_steers_the_cursor_and_adapts(
        make_graph: Any, tmp_path: Path) -> None:
    out = run(make_graph, "{calibration_s: 20, adapt: rml, archive_s: 20}", 80,
              session=tmp_path)
    online = [json.loads(m.partition(" ")[2]) for m, _ in out["model"]
              if m.startswith("model/online")]
    assert len(online) == 1 and online[0]["source"] == "calibration"
    assert online[0]["bins"] >= 20 / 0.05 * 0.95
    first = online[0]["first_bin"]
    assert 20.0 <= first < 21.0
    # nothing is decoded before the model is online, then every bin is (the hot path never
    # waits for an update: one velocity row per 50 ms bin)
    times = np.concatenate([t for t, _ in out["velocity"]])
    assert times[0] == pytest.approx(first)
    np.testing.assert_allclose(np.diff(times), 0.05, atol=1e-9)
    # the decoded velocity follows what the simulated user intends
    truth_t = np.concatenate([t for t, _ in out["truth"]])
    truth = np.concatenate([d for _, d in out["truth"]])
    intended = truth[np.searchsorted(truth_t, times), :2]
    decoded = np.concatenate([d for _, d in out["velocity"]])
    for axis in range(2):
        assert np.corrcoef(decoded[:, axis], intended[:, axis])[0, 1] > 0.6
    # the closed loop acquires targets (the open-loop calibration's hits are the simulator's)
    assert hits_between(out, first, 80.0) >= 15
    # CLDA: about one update a second, each a new version stamped with the bin it first decoded
    updates = [json.loads(m.partition(" ")[2]) for m, _ in out["model"]
               if m.startswith("model/update")]
    assert len(updates) >= 50
    assert [u["version"] for u in updates] == list(range(2, 2 + len(updates)))
    assert all(u["strategy"] == "rml" and u["labelled"] > 0 for u in updates)
    assert out["summary"]["version"] == updates[-1]["version"]
    # versions archived every 20 s and the last one at the end: the session continues from it
    manifest = read_manifest(tmp_path / "models" / "decoder")
    assert "1" in manifest and str(updates[-1]["version"]) in manifest
    assert 3 <= len(manifest) <= 6  # not one file a second
    serving = last_serving_version(tmp_path, "decoder")
    assert serving.version == updates[-1]["version"]
    model = load_model(serving.path, sha256=serving.sha256)
    assert isinstance(model, CursorModel) and model.srate == 500.0
    assert model.band == [70.0, 150.0] and len(model.channels) == 16


@pytest.fixture(scope="module")
def rotated_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A poor initial model: fitted on open-loop data with labels turned by 70 degrees."""
    gen = make_generator("ecog", {"n_channels": 16, "srate": 500}, seed=5)
    X, V = record_open_loop(gen, 30.0, bin_samples=25, features=HighGammaPower(500.0, 16))
    a = np.deg2rad(70.0)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    decoder = KalmanDecoder(shrinkage=0.05).fit(X, V @ turn.T)
    names = [f"G{i + 1:02d}" for i in range(16)]
    path = tmp_path_factory.mktemp("model") / "rotated.bcimodel"
    save_model(CursorModel(decoder, names, 500.0, "band-power", [70.0, 150.0], 0.05), path)
    return path


def test_an_initial_model_serves_from_the_first_bin_and_clda_repairs_it(
        make_graph: Any, rotated_model: Path) -> None:
    static = run(make_graph, f"{{initial_model: '{rotated_model}', adapt: none}}", 120)
    adapted = run(make_graph, f"{{initial_model: '{rotated_model}', adapt: rml, "
                  "half_life_s: 20}", 120)
    for out in (static, adapted):
        first = out["model"][0]
        assert first[0].startswith("model/online") and first[1] < 0.1
        details = json.loads(first[0].partition(" ")[2])
        assert details["source"] == "initial_model" and details["path"] == str(rotated_model)
    assert static["summary"]["updates"] == 0
    assert adapted["summary"]["updates"] > 60
    late_static, late_adapted = hits_between(static, 60, 120), hits_between(adapted, 60, 120)
    assert late_adapted >= late_static + 5, (late_static, late_adapted)


def test_an_initial_model_must_match_the_signal(make_graph: Any, rotated_model: Path,
                                                tmp_path: Path) -> None:
    def configure(decoder: str, source: str = "") -> None:
        run(make_graph, decoder, 0.1, source=source)

    with pytest.raises(ConfigError, match="SHA-256"):
        configure(f"{{initial_model: '{rotated_model}', initial_model_sha256: '{'0' * 64}'}}")
    with pytest.raises(ConfigError, match="fitted at 500 Hz"):
        configure(f"{{initial_model: '{rotated_model}'}}",
                  'params: {"n_channels": 16, "srate": 1000}')
    with pytest.raises(ConfigError, match="differs from the initial model"):
        configure(f"{{initial_model: '{rotated_model}', bin_s: 0.1}}")
    with pytest.raises(ConfigError, match="does not exist|cannot read"):
        configure(f"{{initial_model: '{tmp_path / 'missing.bcimodel'}'}}")
    other = tmp_path / "kalman.bcimodel"
    save_model(KalmanDecoder().fit(np.random.default_rng(0).normal(size=(50, 16)),
                                   np.random.default_rng(1).normal(size=(50, 2))), other)
    with pytest.raises(ConfigError, match="not a fitted CursorModel"):
        configure(f"{{initial_model: '{other}'}}")
    with pytest.raises(ConfigError, match="initial_model_sha256.*initial_model is not"):
        configure(f"{{initial_model_sha256: '{'0' * 64}'}}")


def test_bad_wiring_is_refused_before_the_run(make_graph: Any) -> None:
    with pytest.raises(ConfigError, match=r"'G99'.*not in input 'signal'"):
        run(make_graph, "{channels: [G01, G99]}", 0.1)
    graph_text = """
        name: cursor
        clock: simulated
        duration: 1
        nodes:
          eeg:
            type: simulated_eeg
            params: {n_channels: 8, srate: 250}
          decoder:
            type: cursor_decoder
            inputs: {signal: eeg.signal, task: eeg.truth}
        """
    with pytest.raises(PipelineError, match=r"input 'task'.*lacks channels"):
        make_graph(graph_text)
    with pytest.raises(ConfigError, match="band 70-150 Hz does not fit a signal sampled at "
                                          "250 Hz"):
        make_graph(graph_text.replace("task: eeg.truth", "task: ecog.truth").replace(
            "nodes:", "nodes:\n          ecog:\n            type: simulated_ecog\n"
            "            params: {n_channels: 16, srate: 500}"))


def test_the_worker_adapts_off_the_callers_thread_and_hands_back_the_newest_version() -> None:
    gen = make_generator("ecog", {"n_channels": 16, "srate": 500}, seed=2)
    X, V = record_open_loop(gen, 20.0, bin_samples=25, features=HighGammaPower(500.0, 16))
    params = CursorDecoderParams(adapt="rml", half_life_s=10.0)
    adapter = _Adapter(params, 0.05, inline=False, archive=None)
    try:
        adapter.submit(_Job("calibrate", X, V, np.ones(len(X)), 20.0))
        for k in range(3):
            sl = slice(100 * k, 100 * (k + 1))
            lab = refit_intention(V[sl], np.zeros((100, 2)), V[sl], speed=0.4)
            while adapter.busy:  # the node would decode meanwhile; here: wait for the worker
                time.sleep(0.001)
            adapter.submit(_Job("update", X[sl], lab, np.ones(100), 21.0 + k))
        deadline = time.monotonic() + 10.0
        while adapter.busy and time.monotonic() < deadline:
            time.sleep(0.001)
        newest = adapter.take()
        assert newest is not None and newest.version == 4  # calibration + 3 updates
        assert adapter.take() is None  # older versions never serve
        # the version handed over is a copy: the worker's later changes do not reach it
        before = newest.decoder.C_.copy()
        adapter.submit(_Job("update", X[:100], V[:100], np.ones(100), 30.0))
        while adapter.busy:
            time.sleep(0.001)
        np.testing.assert_array_equal(newest.decoder.C_, before)
    finally:
        adapter.close()
