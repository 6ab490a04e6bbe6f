"""The cue schedule node: balanced cued trials at their times, then the end."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import yaml

from bci_runtime.errors import ConfigError
from bci_runtime.graph import load_graph_text
from bci_runtime.runner import Runner

TIMING = {"fixation_s": 0.5, "imagery_s": 2.0, "rest_s": 1.0, "first_s": 1.0}


def run_cues(params: dict, duration: float | None = None) -> tuple[list[str], np.ndarray, str]:
    config = {"name": "cues", "clock": "simulated", "seed": 5,
              "nodes": {"cues": {"type": "cue_schedule", "params": params}}}
    if duration is not None:
        config["duration"] = duration
    graph = load_graph_text(yaml.safe_dump(config), "<test>")
    labels: list[str] = []
    times: list[float] = []

    def tap(node, outputs, now, read):  # noqa: ANN001
        chunk = outputs.get("markers")
        if chunk is not None:
            labels.extend(chunk.markers)
            times.extend(chunk.timestamps.tolist())
            if not all(t <= now + 1e-9 for t in chunk.timestamps):
                raise AssertionError("a marker was emitted before its time")

    result = Runner(graph, tap=tap).run()
    if result.error is not None:
        raise result.error
    return labels, np.asarray(times), result.status


def test_balanced_trials_at_their_times_then_the_schedule_ends() -> None:
    labels, times, status = run_cues({"classes": ["left", "right", "feet"],
                                      "trials_per_class": 4, "timing": TIMING})
    assert status == "completed"  # the only source was exhausted
    cues = [m for m in labels if m.startswith("cue/")]
    assert Counter(cues) == {"cue/left": 4, "cue/right": 4, "cue/feet": 4}
    # every block of three trials holds each class once (balanced, random order)
    for block in range(4):
        assert sorted(cues[3 * block:3 * block + 3]) == ["cue/feet", "cue/left", "cue/right"]
    assert labels.count("trial/start") == labels.count("trial/end") == 12
    assert labels[-1] == "trial/end"
    # each cue comes fixation_s after its trial/start; each end imagery_s after its cue
    starts = times[[i for i, m in enumerate(labels) if m == "trial/start"]]
    cue_t = times[[i for i, m in enumerate(labels) if m.startswith("cue/")]]
    ends = times[[i for i, m in enumerate(labels) if m == "end"]]
    np.testing.assert_allclose(cue_t - starts, 0.5, atol=1e-3)
    np.testing.assert_allclose(ends - cue_t, 2.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(starts), 3.5, atol=1e-3)


def test_without_a_count_it_cues_until_the_run_stops() -> None:
    labels, _, status = run_cues({"classes": ["a", "b"], "timing": TIMING}, duration=30)
    assert status == "completed"
    # 30 s: trials start at 1.0, 4.5, ... 29.0 -> 9 trials cued
    assert sum(m.startswith("cue/") for m in labels) == 9


@pytest.mark.parametrize("params, words", [
    ({"classes": ["left", "left"]}, "distinct"),
    ({"classes": ["left"]}, "classes"),
    ({"classes": ["a", "b"], "trials_per_class": 0}, "trials_per_class"),
    ({"classes": ["a", "b"], "timing": {"imagery_s": 0}}, "imagery_s"),
])
def test_bad_parameters_are_named(params: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        run_cues(params)
