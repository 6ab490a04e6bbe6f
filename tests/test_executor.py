"""The graph and its event-driven executor, run in one process on the simulated clock."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from nodes_for_tests import attach_log

from bci_runtime.cli import demo_pipeline_path
from bci_runtime.errors import BadChunkError, NodeError, PipelineError
from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.runner import Runner, RunResult
from bci_runtime.session import Session
from bci_runtime.summary import build_summary


def run(graph: Graph, **kwargs) -> tuple[RunResult, list[tuple[str, dict]]]:
    """Run ``graph`` with a Runner; returns the result and the events emitted."""
    events: list[tuple[str, dict]] = []
    runner = Runner(graph, emit_event=lambda kind, **fields: events.append((kind, fields)),
                    **kwargs)
    return runner.run(), events


def newest(k: int, chunk_size: int, srate: float = 100.0) -> float:
    """Newest timestamp of chunk ``k`` of a ``test_source``."""
    return ((k + 1) * chunk_size - 1) / srate


def per_dispatch(log: list[tuple]) -> list[list[tuple]]:
    """Split a call log at each source read."""
    groups: list[list[tuple]] = []
    for entry in log:
        if entry[1] == "read":
            groups.append([])
        groups[-1].append(entry)
    return groups


# -- propagation order -----------------------------------------------------------------------
DIAMOND = """
name: diamond
clock: simulated
nodes:
  a: {type: test_source, params: {n_chunks: 4, chunk_size: 3}}
  b: {type: test_recorder, inputs: {x: a.signal}}
  c: {type: test_recorder, inputs: {x: a.signal}}
  d: {type: test_recorder, inputs: {x: b.out, y: c.out}}
"""


def test_diamond_runs_each_chunk_to_completion(make_graph):
    graph = make_graph(DIAMOND)
    log = attach_log(graph, [])
    result, _ = run(graph)
    assert result.status == "completed", result.reason
    expected = []
    for k in range(4):
        t = newest(k, 3)
        expected += [("a", "read", k), ("b", "x", t), ("c", "x", t), ("d", "x", t), ("d", "y", t)]
    assert log == expected
    assert result.samples == 12
    assert result.telemetry["d"].calls == 8


def test_diamond_declared_backwards_is_still_topological(make_graph):
    """Declaration order does not matter: every node runs after all of its inputs."""
    text = """
    name: diamond-backwards
    clock: simulated
    nodes:
      d: {type: test_recorder, inputs: {x: b.out, y: c.out}}
      c: {type: test_recorder, inputs: {x: a.signal}}
      b: {type: test_recorder, inputs: {x: a.signal}}
      a: {type: test_source, params: {n_chunks: 3, chunk_size: 2}}
    """
    graph = make_graph(text)
    log = attach_log(graph, [])
    assert run(graph)[0].status == "completed"
    groups = per_dispatch(log)
    assert len(groups) == 3
    for k, group in enumerate(groups):
        t = newest(k, 2)
        assert group[0] == ("a", "read", k)
        calls = group[1:]
        assert sorted(calls) == sorted([("b", "x", t), ("c", "x", t), ("d", "x", t),
                                        ("d", "y", t)])
        names = [name for name, _, _ in calls]
        assert names.index("d") > max(names.index("b"), names.index("c"))


def test_fan_out(make_graph):
    text = """
    name: fan-out
    clock: simulated
    nodes:
      a: {type: test_source, params: {n_chunks: 5, chunk_size: 4, n_channels: 3}}
      b: {type: test_recorder, inputs: {x: a.signal}}
      c: {type: test_recorder, inputs: {x: a.signal}}
      s: {type: test_collector, inputs: {signal: a.signal}}
    """
    graph = make_graph(text)
    log = attach_log(graph, [])
    assert run(graph)[0].status == "completed"
    for k, group in enumerate(per_dispatch(log)):
        t = newest(k, 4)
        assert group == [("a", "read", k), ("b", "x", t), ("c", "x", t), ("s", "signal", t)]
    b, c, s = graph.nodes["b"], graph.nodes["c"], graph.nodes["s"]
    assert len(b.calls) == len(c.calls) == len(s.chunks) == 5
    for (_, from_b), (_, from_c), from_s in zip(b.calls, c.calls, s.chunks):
        np.testing.assert_array_equal(from_b.data, from_s.data)
        np.testing.assert_array_equal(from_c.timestamps, from_s.timestamps)
        assert np.shares_memory(from_b.data, from_c.data)  # fan-out does not copy
    expected = np.arange(20)[:, None] + np.arange(3)[None, :] / 1000.0
    np.testing.assert_array_equal(s.data(), expected)


LOOP = """
name: loop
clock: simulated
nodes:
  a: {type: test_source, params: {n_chunks: 5, chunk_size: 2}}
  b:
    type: test_recorder
    inputs:
      x: a.signal
      fb: {from: c.out, delayed: true}
  c: {type: test_recorder, inputs: {x: b.out}}
"""


def test_delayed_edge_delivers_on_next_dispatch(make_graph):
    graph = make_graph(LOOP)
    assert graph.order == ["a", "b", "c"]
    log = attach_log(graph, [])
    result, _ = run(graph)
    assert result.status == "completed", result.reason
    expected = []
    for k in range(5):
        t = newest(k, 2)
        expected.append(("a", "read", k))
        if k:  # c's output of the previous cycle comes back first, never in the same cycle
            expected.append(("b", "fb", newest(k - 1, 2)))
        expected += [("b", "x", t), ("c", "x", t)]
    assert log == expected
    # the delayed input got the spec of c's output in the second configure pass
    assert graph.nodes["b"].input_specs["fb"] == graph.specs[("c", "out")]


def test_undeclared_cycle_is_rejected(make_graph):
    with pytest.raises(PipelineError) as info:
        make_graph(LOOP.replace("{from: c.out, delayed: true}", "c.out"), file="loop.yaml")
    issues = info.value.issues
    assert len(issues) == 1
    message = issues[0].message
    assert "cycle b -> c -> b" in message
    assert "delayed: true" in message
    assert issues[0].file == "loop.yaml" and issues[0].node in ("b", "c")
    assert issues[0].line is not None


def test_delayed_false_is_a_cycle_too(make_graph):
    with pytest.raises(PipelineError, match="cycle"):
        make_graph(LOOP.replace("delayed: true", "delayed: false"))


def test_several_delayed_chunks_keep_their_order(make_graph):
    """A node that emits twice in a cycle along a delayed edge: both arrive next cycle, in order."""
    text = """
    name: loop-join
    clock: simulated
    nodes:
      a: {type: test_source, params: {n_chunks: 3, chunk_size: 2}}
      b:
        type: test_recorder
        inputs:
          x: a.signal
          fb: {from: d.out, delayed: true}
      c: {type: test_recorder, params: {time_shift: 1000.0}, inputs: {x: a.signal}}
      d: {type: test_recorder, inputs: {x: b.out, y: c.out}}
    """
    graph = make_graph(text)
    log = attach_log(graph, [])
    assert run(graph)[0].status == "completed"
    groups = per_dispatch(log)
    for k in range(1, 3):
        prev = newest(k - 1, 2)
        b_calls = [entry for entry in groups[k] if entry[0] == "b"]
        # d emitted (x, prev) then (y, prev + 1000) in cycle k-1: b sees them in that order
        assert b_calls == [("b", "fb", prev), ("b", "fb", prev + 1000.0), ("b", "x", newest(k, 2))]


def test_simulated_duration(make_graph):
    """The run stops before the first chunk due after the duration."""
    graph = make_graph("""
    name: duration
    clock: simulated
    duration: 0.5
    nodes:
      src: {type: test_source, params: {n_chunks: 100, chunk_size: 5}}
      sink: {type: test_collector, inputs: {signal: src.signal}}
    """)
    result, events = run(graph)
    assert result.status == "completed"
    assert result.samples == 50
    assert graph.nodes["sink"].chunks[-1].newest == pytest.approx(0.49)
    assert ("run_started", {"clock": "simulated", "duration": 0.5}) in events


def test_two_sources_dispatch_in_due_order(make_graph):
    graph = make_graph("""
    name: two-sources
    clock: simulated
    nodes:
      fast: {type: test_source, params: {n_chunks: 12, chunk_size: 2, srate: 100}}
      slow: {type: test_source, params: {n_chunks: 4, chunk_size: 5, srate: 80}}
      join: {type: test_recorder, inputs: {x: fast.signal, y: slow.signal}}
    """)
    log = attach_log(graph, [])
    assert run(graph)[0].status == "completed"
    calls = [entry for entry in log if entry[0] == "join"]
    assert len(calls) == 16
    times = [t for _, _, t in calls]
    assert times == sorted(times)  # the simulated clock merges sources by due time
    for group in per_dispatch(log):
        assert len(group) == 2  # each read runs to completion before the next


# -- live clock ------------------------------------------------------------------------------
def run_live(graph: Graph, timeout: float = 60.0) -> tuple[RunResult, list[tuple[str, dict]]]:
    """Run on the live clock in a thread, with a bounded wait (stopped if it overruns)."""
    events: list[tuple[str, dict]] = []
    runner = Runner(graph, emit_event=lambda kind, **fields: events.append((kind, fields)))
    box: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", runner.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        runner.request_stop("test timeout")
        thread.join(30)
        pytest.fail(f"the live run did not end within {timeout:.0f} s")
    return box["result"], events


LIVE = """
name: live
clock: live
nodes:
  src: {type: test_source, params: {n_chunks: 10, chunk_size: 5, srate: 500}}
  rec: {type: test_recorder, inputs: {x: src.signal}}
  sink: {type: test_collector, inputs: {signal: rec.out}}
"""


def test_live_run_ends_when_its_sources_end(make_graph):
    graph = make_graph(LIVE)
    result, events = run_live(graph)
    assert result.status == "completed", result.reason
    assert result.samples == 50
    assert len(graph.nodes["sink"].chunks) == 10
    assert all(node.closed for node in graph.nodes.values())
    assert events[-1][0] == "run_ended"


def test_live_node_error(make_graph):
    graph = make_graph(LIVE.replace("rec: {type: test_recorder,",
                                    "rec: {type: test_recorder, params: {fail_on_call: 3},"))
    result, events = run_live(graph)
    assert result.status == "failed"
    assert isinstance(result.error, NodeError) and result.error.node == "rec"
    t0 = graph.nodes["src"].chunk_times(0)[0]  # the live clock does not start at 0
    assert result.error.timestamp == pytest.approx(t0 + 14 / 500)
    assert len(graph.nodes["sink"].chunks) == 2
    assert all(node.closed for node in graph.nodes.values())
    assert [f["node"] for kind, f in events if kind == "failure"] == ["rec"]


def test_live_run_with_sources_in_a_worker_runs(make_graph):
    graph = make_graph("""
    name: live-split
    clock: live
    duration: 1.0
    nodes:
      src: {type: simulated_eeg, process: acq}
      sink: {type: test_collector, inputs: {signal: src.signal}}
    """)
    result, _ = run_live(graph)
    assert result.status == "completed", result.reason
    assert result.samples > 0


# -- simulated-clock determinism ---------------------------------------------------------------
def demo_graph(seed: int, duration: float = 24.0) -> Graph:
    """The shipped demo on the simulated clock, no LSL or console, plus a collecting sink."""
    config = yaml.safe_load(demo_pipeline_path().read_text())
    config.update(clock="simulated", duration=duration, seed=seed)
    config["nodes"]["feedback"]["params"].update(lsl=False, console=False)
    config["nodes"]["collect"] = {"type": "test_collector",
                                  "inputs": {"signal": "decoder.decision"}}
    return load_graph_text(yaml.safe_dump(config, sort_keys=False), "demo-simulated.yaml")


def run_demo(seed: int) -> dict:
    graph = demo_graph(seed)
    result, events = run(graph)
    assert result.status == "completed", result.reason
    collect, decoder = graph.nodes["collect"], graph.nodes["decoder"]
    assert decoder.coef_ is not None, "the decoder calibrated within the run"
    return {"decisions": collect.data(), "times": collect.timestamps(),
            "coef": decoder.coef_.copy(), "intercept": decoder.intercept_.copy(),
            "feedback": graph.nodes["feedback"].summary(), "samples": result.samples,
            "trained": [f for kind, f in events if kind == "decoder_trained"]}


def test_simulated_demo_is_deterministic():
    first, second = run_demo(seed=7), run_demo(seed=7)
    assert first["samples"] == second["samples"] == 24 * 250
    assert len(first["decisions"]) > 50
    np.testing.assert_array_equal(first["decisions"], second["decisions"])
    np.testing.assert_array_equal(first["times"], second["times"])
    np.testing.assert_array_equal(first["coef"], second["coef"])
    np.testing.assert_array_equal(first["intercept"], second["intercept"])
    assert first["feedback"] == second["feedback"]
    assert first["feedback"]["decisions"] == len(first["decisions"])
    assert first["trained"] == second["trained"] and len(first["trained"]) == 1

    other = run_demo(seed=8)
    assert not np.array_equal(first["coef"], other["coef"])
    n = min(len(first["decisions"]), len(other["decisions"]))
    assert not np.array_equal(first["decisions"][:n], other["decisions"][:n])


# -- bad chunks ------------------------------------------------------------------------------
def bad_source_graph(policy: str) -> Graph:
    return load_graph_text(f"""
name: bad-chunks
clock: simulated
nodes:
  src:
    type: test_source
    on_bad_chunk: {policy}
    params: {{n_chunks: 10, chunk_size: 4, n_channels: 2, bad_channels_at: [3], nan_at: [5]}}
  sink: {{type: test_collector, inputs: {{signal: src.signal}}}}
""", f"bad-{policy}.yaml")


def received(graph: Graph) -> list[int]:
    """Indices of the source chunks the sink received."""
    return [int(round(c.newest * 100 + 1)) // 4 - 1 for c in graph.nodes["sink"].chunks]


def bad_events(events: list[tuple[str, dict]]) -> list[dict]:
    return [f for kind, f in events if kind == "bad_chunk"]


def test_bad_chunks_dropped():
    graph = bad_source_graph("drop")
    result, events = run(graph)
    assert result.status == "completed" and result.error is None
    assert result.bad_chunks == {"src": 2}
    assert received(graph) == [0, 1, 2, 4, 6, 7, 8, 9]  # later chunks still arrive
    assert result.samples == 8 * 4
    bad = bad_events(events)
    assert [b["timestamp"] for b in bad] == [newest(3, 4), newest(5, 4)]
    assert all(b["node"] == "src" and b["policy"] == "drop" for b in bad)
    assert "3 channels" in bad[0]["problem"] and "NaN" in bad[1]["problem"]
    assert [b["count"] for b in bad] == [1, 2]


def test_bad_chunks_flagged():
    graph = bad_source_graph("flag")
    result, events = run(graph)
    assert result.status == "completed" and result.error is None
    assert result.bad_chunks == {"src": 2}
    assert received(graph) == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # wrong shape dropped, NaN kept
    flagged = graph.nodes["sink"].chunks[4]
    assert np.isfinite(flagged.data).all()
    expected = np.arange(20, 24)[:, None] + np.arange(2)[None, :] / 1000.0
    expected[0, 0] = 0.0  # the NaN, zeroed
    np.testing.assert_array_equal(flagged.data, expected)
    assert [b["policy"] for b in bad_events(events)] == ["flag", "flag"]


def test_bad_chunk_stops_the_run():
    graph = bad_source_graph("stop")
    result, events = run(graph)
    assert result.status == "failed"
    assert isinstance(result.error, BadChunkError)
    message = str(result.error)
    assert "'src'" in message and f"t={newest(3, 4):.6f}" in message
    assert "3 channels" in message
    assert received(graph) == [0, 1, 2]
    assert result.bad_chunks == {"src": 1}
    kinds = [kind for kind, _ in events]
    assert kinds.index("bad_chunk") < kinds.index("failure") < kinds.index("run_ended")
    assert events[-1] == ("run_ended", {"status": "failed", "reason": message})
    assert graph.nodes["src"].closed and graph.nodes["sink"].closed


# -- a node that raises ----------------------------------------------------------------------
FAILING = """
name: failing
clock: simulated
nodes:
  src: {type: test_source, params: {n_chunks: 20, chunk_size: 5}}
  a: {type: test_recorder, params: {emit_events: true}, inputs: {x: src.signal}}
  boom: {type: test_recorder, params: {fail_on_call: 5}, inputs: {x: a.out}}
  sink: {type: test_collector, inputs: {signal: boom.out}}
"""


def test_node_error_fails_the_run_and_keeps_the_session(make_graph, tmp_path: Path):
    graph = make_graph(FAILING, file="failing.yaml")
    session_dir = tmp_path / "session"
    # as `bci run` does it (bci_runtime.cli._cmd_run)
    session = Session(graph.config, "failing.yaml", session_dir)
    runner = Runner(graph, emit_event=session.log_event, session_dir=session.dir)
    result = runner.run()
    session.set_processes(result.processes)
    summary = build_summary(result, graph.config.name, str(session.dir))
    session.finalize(result.status, summary, error=str(result.error) if result.error else None)

    t_fail = newest(4, 5)
    assert result.status == "failed"
    error = result.error
    assert isinstance(error, NodeError)
    assert error.node == "boom"
    assert error.timestamp == pytest.approx(t_fail)
    assert isinstance(error.cause, RuntimeError)
    assert "'boom'" in str(error) and f"t={t_fail:.6f}" in str(error) and "boom on call 5" in str(error)
    assert all(node.closed for node in graph.nodes.values())
    assert graph.nodes["src"].reads == 5  # nothing dispatched after the failure
    assert len(graph.nodes["sink"].chunks) == 4

    records = [json.loads(line) for line in (session_dir / "events.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[0] == "run_started"
    calls = [r for r in records if r["event"] == "test_call"]
    assert [r["call"] for r in calls] == [1, 2, 3, 4, 5]
    failure = next(r for r in records if r["event"] == "failure")
    assert failure["node"] == "boom" and failure["type"] == "NodeError"
    assert f"t={t_fail:.6f}" in failure["error"]
    assert kinds.index("failure") > max(i for i, k in enumerate(kinds) if k == "test_call")
    assert records[-1]["event"] == "run_ended" and records[-1]["status"] == "failed"

    manifest = json.loads((session_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stopped"] is not None
    assert "boom" in manifest["error"]
    saved = json.loads((session_dir / "summary.json").read_text())
    assert saved["status"] == "failed" and saved["samples"] == 25


def test_failure_in_first_node_closes_everything(make_graph):
    text = FAILING.replace("{fail_on_call: 5}", "{}").replace(
        "{emit_events: true}", "{fail_on_call: 2}")
    graph = make_graph(text)
    result, events = run(graph)
    assert result.status == "failed"
    assert isinstance(result.error, NodeError) and result.error.node == "a"
    assert result.error.timestamp == pytest.approx(newest(1, 5))
    assert all(node.closed for node in graph.nodes.values())
    assert [f["node"] for kind, f in events if kind == "failure"] == ["a"]


def test_delayed_edge_across_processes_is_rejected(make_graph):
    split = LOOP.replace("  c: {type: test_recorder, inputs: {x: b.out}}",
                         "  c: {type: test_recorder, inputs: {x: b.out}, process: w}")
    with pytest.raises(PipelineError) as info:
        make_graph(split, file="split-loop.yaml")
    (issue,) = info.value.issues
    assert (issue.node, issue.field) == ("b", "nodes.b.inputs.fb")
    assert "same one" in issue.message and "'w'" in issue.message
