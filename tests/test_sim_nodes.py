"""Every simulator node runs in a pipeline on the simulated clock, deterministically,
and its ``feedback`` input closes the loop on the simulated user."""

from __future__ import annotations

import numpy as np
import pytest

from bci_runtime.errors import PipelineError
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.runner import Runner

NODES = {
    "simulated_eeg": "{n_channels: 8, srate: 250, chunk_size: 25}",
    "simulated_ssvep": "{n_channels: 8, srate: 250, chunk_size: 25}",
    "simulated_ecog": "{n_channels: 64, srate: 1000, chunk_size: 20}",
    "simulated_population": "{n_channels: 96, srate: 50, chunk_size: 1}",
}


def pipeline(node_type: str, seed: int, extra: str = "") -> Graph:
    return load_graph_text(f"""
name: sim-{node_type}
seed: {seed}
clock: simulated
duration: 4
nodes:
  sim:
    type: {node_type}
    params: {NODES[node_type]}
{extra}
  signal: {{type: test_collector, inputs: {{signal: sim.signal, events: sim.markers}}}}
  truth: {{type: test_collector, inputs: {{signal: sim.truth}}}}
""", f"sim-{node_type}.yaml")


def run(graph: Graph) -> Graph:
    result = Runner(graph).run()
    assert result.status == "completed", result.reason
    return graph


@pytest.mark.parametrize("node_type", list(NODES))
def test_simulator_node_runs_deterministically_in_a_pipeline(node_type: str):
    a, b, c = (run(pipeline(node_type, seed)) for seed in (1, 1, 2))
    sim = a.nodes["sim"]
    srate = sim.output_specs["signal"].srate
    data, truth = a.nodes["signal"].data(), a.nodes["truth"].data()
    chunk = sim.params.chunk_size  # every chunk whose last sample is due by t = 4 s is read
    expected = (int((4 * srate - (chunk - 1)) // chunk) + 1) * chunk
    assert data.shape == (expected, sim.output_specs["signal"].n_channels)
    assert truth.shape[0] == data.shape[0]
    assert truth.shape[1] == sim.output_specs["truth"].n_channels
    assert np.isfinite(data).all()
    np.testing.assert_array_equal(a.nodes["signal"].timestamps(), np.arange(len(data)) / srate)
    np.testing.assert_array_equal(data, b.nodes["signal"].data())
    np.testing.assert_array_equal(truth, b.nodes["truth"].data())
    assert not np.array_equal(data, c.nodes["signal"].data())
    markers = [m for chunk in a.nodes["signal"].event_chunks for m in chunk.markers]
    assert markers, "the task announces itself"
    assert sim.summary()["samples"] == len(data)


@pytest.mark.parametrize("node_type", ["simulated_ecog", "simulated_population"])
def test_feedback_edge_reaches_the_simulated_user(node_type: str):
    """A (stand-in) decoder's output, fed back through a delayed edge, is seen by the user."""
    extra = """    inputs:
      feedback: {from: decoder.out, delayed: true}
  decoder: {type: test_recorder, inputs: {x: sim.truth}}"""
    graph = run(pipeline(node_type, 3, extra))
    assert graph.nodes["sim"].summary()["feedback_seen"] > 0


def test_feedback_loop_without_delay_is_rejected():
    extra = """    inputs:
      feedback: decoder.out
  decoder: {type: test_recorder, inputs: {x: sim.truth}}"""
    with pytest.raises(PipelineError, match="delayed: true"):
        pipeline("simulated_population", 3, extra)


def test_invalid_simulator_parameters_name_the_node_and_field():
    with pytest.raises(PipelineError) as err:
        load_graph_text("""
name: bad
nodes:
  sim:
    type: simulated_population
    params: {srate: 1000}
""", "bad.yaml")
    issue = err.value.issues[0]
    assert (issue.node, issue.field) == ("sim", "nodes.sim.params.srate")
    assert "20-50 ms" in issue.message
