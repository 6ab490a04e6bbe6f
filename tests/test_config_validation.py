"""Invalid pipeline files are refused before anything starts, with a precise message.

The issue: "Pipeline YAML with a syntax error, unknown node type or parameter, wrong
value type, unconnected required port, rate mismatch, undeclared cycle: exit 2,
nothing starts, the message names file, line, node and field and says how to fix it."

Every case below checks the :class:`~bci_runtime.errors.ConfigIssue` fields one by one:
``file``, ``line`` (the 1-based line of the offending entry in the YAML text), ``node``,
``field`` (dotted path) and a phrase of the message that tells the user what to do.
Then ``bci run`` on the same file (in-process, so test nodes registered here are
visible) must return 2 and create no session folder.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from bci_runtime import cli, registry
from bci_runtime.config import load_pipeline_text
from bci_runtime.errors import ConfigError, ConfigIssue, PipelineError
from bci_runtime.graph import build_graph, load_graph, load_graph_text
from bci_runtime.node import Input, Node, NodeContext, Output
from bci_runtime.registry import register_node
from bci_runtime.simulators.nodes import SimulatedEeg
from bci_runtime.spec import StreamSpec

FILE = "pipelines/under_test.yaml"


# -- helpers ---------------------------------------------------------------------------------
def pipeline(text: str) -> str:
    """Dedent a YAML literal written indented in a test."""
    return textwrap.dedent(text).lstrip("\n")


def more_nodes(text: str) -> str:
    """Node entries to append under ``HEAD``'s ``nodes:`` (dedented, then indented 2)."""
    return textwrap.indent(textwrap.dedent(text).lstrip("\n"), "  ")


def line_of(text: str, needle: str) -> int:
    """1-based number of the one line of ``text`` that contains ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits} of the test YAML, expected exactly one"
    return hits[0]


def issues_of(text: str, file: str = FILE) -> list[ConfigIssue]:
    """The issues ``load_graph_text`` reports for ``text`` (it must raise)."""
    with pytest.raises(PipelineError) as info:
        load_graph_text(text, file)
    assert info.value.issues, "a PipelineError must carry at least one issue"
    return info.value.issues


def only_issue(text: str, file: str = FILE) -> ConfigIssue:
    issues = issues_of(text, file)
    assert len(issues) == 1, "expected one issue, got:\n" + "\n".join(map(str, issues))
    return issues[0]


def check_issue(issue: ConfigIssue, *, line: int | None, node: str | None, field: str | None,
                says: tuple[str, ...], file: str = FILE) -> None:
    """Assert every field of ``issue``; ``says`` are phrases the message must contain."""
    assert (issue.file, issue.line, issue.node, issue.field) == (file, line, node, field), str(issue)
    for phrase in says:
        assert phrase in issue.message, f"{phrase!r} not in message: {issue.message}"
    # the rendered form (what `bci` prints) names the place too
    rendered = str(issue)
    assert rendered.startswith(f"{file}:{line}" if line else file)
    if node:
        assert f"node '{node}'" in rendered
    if field:
        assert f"field '{field}'" in rendered


def run_cli(path: Path, session_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``bci run PATH --session-dir DIR`` in-process; returns (exit code, stderr)."""
    code = cli.main(["run", str(path), "--session-dir", str(session_dir), "--duration", "1"])
    return code, capsys.readouterr().err


# -- test nodes, registered for the tests that need them -------------------------------------
class RateJoin(Node):
    """Joins two signals; refuses streams of different rates (like any real combiner)."""

    type_name = "test_validation_join"
    a = Input("signal", doc="first signal")
    b = Input("signal", doc="second signal, same rate as 'a'")
    joined = Output("signal", doc="'a' and 'b' side by side")
    opened: ClassVar[list[str]] = []

    def configure(self, inputs: Mapping[str, StreamSpec]) -> dict[str, StreamSpec]:
        a, b = inputs["a"], inputs["b"]
        if a.srate != b.srate:
            raise self.spec_error(
                "b", f"rate {b.srate:g} Hz of '{b.name}' differs from input 'a' ({a.srate:g} Hz)",
                hint="resample one stream or feed both inputs from streams of the same rate")
        names = tuple(f"a-{c}" for c in a.channel_names) + tuple(f"b-{c}" for c in b.channel_names)
        return {"joined": a.with_changes(channel_names=names, channel_types=(), units=())}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        RateJoin.opened.append(self.name)


class LoopNode(Node):
    """Passes its signal through; takes an optional feedback signal (closes a loop)."""

    type_name = "test_validation_loop"
    signal = Input("signal")
    feedback = Input("signal", required=False, doc="fed back from downstream")
    out = Output("signal")

    def configure(self, inputs: Mapping[str, StreamSpec]) -> dict[str, StreamSpec]:
        return {"out": inputs["signal"]}  # 'feedback' may have no spec yet (delayed edge)


class SpyEeg(SimulatedEeg):
    """The shipped simulator, recording every ``open`` (which would mean: it started)."""

    type_name = "test_validation_spy_eeg"
    opened: ClassVar[list[str]] = []

    def open(self, context: NodeContext) -> None:
        SpyEeg.opened.append(self.name)
        super().open(context)


@pytest.fixture
def test_nodes() -> Iterator[None]:
    """Register the node classes above for one test, then remove them again."""
    classes = (RateJoin, LoopNode, SpyEeg)
    for cls in classes:
        register_node(cls)
    RateJoin.opened, SpyEeg.opened = [], []
    yield
    for cls in classes:
        registry._registered.pop(cls.type_name, None)


# -- one case per kind of mistake --------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    text: str
    needle: str  # the text of the offending line
    node: str | None
    field: str | None
    says: tuple[str, ...]


HEAD = """\
name: under-test
seed: 3
clock: simulated
duration: 1
nodes:
  eeg:
    type: simulated_eeg
    params: {n_channels: 8, srate: 250}
"""

CASES = [
    Case("yaml-syntax-mapping-value", HEAD + more_nodes("""
          bp:
            type: bandpass: iir
        """), "type: bandpass: iir", None, None,
         ("YAML syntax error", "mapping values are not allowed", "check indentation, colons")),
    Case("yaml-syntax-indentation", HEAD + more_nodes("""
          bp:
            type: bandpass
           params: {low: 8, high: 30}
        """), "   params: {low", None, None, ("YAML syntax error", "check indentation")),
    Case("yaml-tab", HEAD + "  bp:\n\ttype: bandpass\n", "\ttype: bandpass", None, None,
         ("YAML syntax error", "'\\t'", "check indentation")),
    Case("unknown-node-type", HEAD + more_nodes("""
          bp:
            type: band_pass
            params: {low: 8, high: 30}
            inputs: {signal: eeg.signal}
        """), "type: band_pass", "bp", "nodes.bp.type",
         ("unknown node type 'band_pass'", "did you mean 'bandpass'", "`bci nodes` lists")),
    Case("unknown-parameter", HEAD + more_nodes("""
          bp:
            type: bandpass
            params:
              lowcut: 8
              low: 8
              high: 30
            inputs: {signal: eeg.signal}
        """), "lowcut: 8", "bp", "nodes.bp.params.lowcut",
         ("unknown key 'lowcut'", "remove it or check its spelling")),
    Case("missing-parameter", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {high: 30}
            inputs: {signal: eeg.signal}
        """), "params: {high: 30}", "bp", "nodes.bp.params.low", ("'low' is required",)),
    Case("wrong-value-type", HEAD + more_nodes("""
          bp:
            type: bandpass
            params:
              low: 8
              high: thirty
            inputs: {signal: eeg.signal}
        """), "high: thirty", "bp", "nodes.bp.params.high",
         ("should be a valid number", "'thirty'")),
    Case("wrong-value-type-top-level", HEAD.replace("duration: 1", "duration: soon"),
         "duration: soon", None, "duration", ("should be a valid number", "'soon'")),
    Case("parameter-constraint", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 30, high: 8}
            inputs: {signal: eeg.signal}
        """), "params: {low: 30", "bp", "nodes.bp.params", ("must be below 'high'",)),
    Case("unconnected-required-port", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
        """), "  bp:", "bp", "nodes.bp.inputs",
         ("required input 'signal' is not connected", "add 'inputs: {signal: <node>.<port>}'")),
    Case("undeclared-cycle", HEAD + more_nodes("""
          a:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: b.filtered}
          b:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: a.filtered}
        """), "inputs: {signal: b.filtered}", "a", "nodes.a.inputs.signal",
         ("cycle a -> b -> a is not declared", "delayed: true",
          "signal: {from: b.filtered, delayed: true}")),
    Case("unknown-top-level-key", HEAD.replace("clock: simulated", "colck: simulated"),
         "colck: simulated", None, "colck",
         ("unknown key 'colck'", "remove it or check its spelling")),
    Case("unknown-node-key", HEAD + more_nodes("""
          bp:
            type: bandpass
            parms: {low: 8, high: 30}
            inputs: {signal: eeg.signal}
        """), "parms:", "bp", "nodes.bp.parms",
         ("unknown key 'parms'", "remove it or check its spelling")),
    Case("unknown-input-key", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: {from: eeg.signal, delay: true}
        """), "delay: true", "bp", "nodes.bp.inputs.signal.delay",
         ("unknown key 'delay'", "remove it or check its spelling")),
    Case("unknown-input-port", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: eeg.signal
              reference: eeg.signal
        """), "reference: eeg.signal", "bp", "nodes.bp.inputs.reference",
         ("'bandpass' has no input port 'reference'", "(inputs: signal)")),
    Case("missing-upstream-node", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: egg.signal
        """), "signal: egg.signal", "bp", "nodes.bp.inputs.signal",
         ("names node 'egg', which is not in 'nodes'", "(nodes: eeg, bp)")),
    Case("missing-upstream-port", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: eeg.eeg
        """), "signal: eeg.eeg", "bp", "nodes.bp.inputs.signal",
         ("node 'eeg' (simulated_eeg) has no output port 'eeg'", "(outputs: signal, markers, truth)")),
    Case("malformed-reference", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: eeg
        """), "signal: eeg", "bp", "nodes.bp.inputs.signal.from",
         ("must be written 'node.port'", "e.g. 'eeg.signal'")),
    Case("signal-events-kind-mismatch", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs:
              signal: eeg.markers
        """), "signal: eeg.markers", "bp", "nodes.bp.inputs.signal",
         ("'eeg.markers' carries events but input 'signal' expects signal",
          "connect a signal output")),
    Case("empty-nodes", "name: under-test\nnodes: {}\n", "nodes: {}", None, "nodes",
         ("at least one node", "add one under 'nodes:'")),
    Case("on-bad-chunk-on-non-source", HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: eeg.signal}
            on_bad_chunk: stop
        """), "on_bad_chunk: stop", "bp", "nodes.bp.on_bad_chunk",
         ("applies to sources only", "'bandpass' is not one", "remove it")),
    Case("blocking-source-on-simulated-clock", pipeline("""
          name: under-test
          clock: simulated
          nodes:
            inlet:
              type: lsl_inlet
              params: {name: amp, channels: 8, srate: 250}
        """), "type: lsl_inlet", "inlet", "nodes.inlet.type",
         ("cannot run on the simulated clock", "set 'clock: live'")),
    Case("fixed-weights-vs-feature-count", HEAD + more_nodes("""
          lv:
            type: log_variance
            inputs: {signal: eeg.signal}
          dec:
            type: linear_classifier
            params:
              weights: [[1.0, -1.0, 0.5]]
            inputs:
              features: lv.features
        """), "features: lv.features", "dec", "nodes.dec.inputs.features",
         ("weights have [3] columns", "has 8 features", "give one weight per feature channel")),
    Case("bandpass-above-nyquist", HEAD.replace("srate: 250", "srate: 200") + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 120}
            inputs:
              signal: eeg.signal
        """), "signal: eeg.signal", "bp", "nodes.bp.inputs.signal",
         ("'high' 120 Hz is not below the Nyquist frequency 100 Hz", "lower 'high'")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_pipeline_names_file_line_node_field_and_fix(case: Case) -> None:
    issue = only_issue(case.text)
    check_issue(issue, line=line_of(case.text, case.needle), node=case.node, field=case.field,
                says=case.says)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bci_run_of_invalid_pipeline_exits_2_and_starts_nothing(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(case.text, encoding="utf-8")
    session = tmp_path / "s"
    code, err = run_cli(path, session, capsys)
    assert code == 2
    assert not session.exists(), "a session folder was created for an invalid pipeline"
    assert f"{path}:{line_of(case.text, case.needle)}" in err
    assert "Traceback" not in err


def test_load_graph_reports_the_path_it_was_given(tmp_path: Path) -> None:
    text = HEAD + "  bp:\n    type: band_pass\n"
    path = tmp_path / "my pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        load_graph(path)
    (issue,) = info.value.issues
    check_issue(issue, file=str(path), line=line_of(text, "band_pass"), node="bp",
                field="nodes.bp.type", says=("did you mean 'bandpass'",))
    # a PipelineError is a ConfigError: the command line maps it to exit code 2
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PipelineError) as info:
        load_graph(path)
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.node, issue.field) == (str(path), None, None, None)
    assert "file not found" in issue.message and "check the path" in issue.message


def test_every_problem_is_reported_at_once() -> None:
    text = HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30, ripple: 3}
            inputs: {signal: eeg.signal}
          lv:
            type: log_varianse
            inputs: {signal: bp.filtered}
          dec:
            type: linear_classifier
            inputs:
              features: eeg.nothing
        """)
    got = {(i.line, i.node, i.field) for i in issues_of(text)}
    assert got == {
        (line_of(text, "ripple: 3"), "bp", "nodes.bp.params.ripple"),
        (line_of(text, "log_varianse"), "lv", "nodes.lv.type"),
        (line_of(text, "eeg.nothing"), "dec", "nodes.dec.inputs.features"),
    }


# -- syntax errors whose cause is on an earlier line -------------------------------------------
def test_unclosed_bracket_names_the_line_where_it_opened() -> None:
    text = HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 30
            inputs: {signal: eeg.signal}
        """)
    issue = only_issue(text)
    # the parser notices on the next line; the message points back at the opening bracket
    check_issue(issue, line=line_of(text, "inputs: {signal"), node=None, field=None,
                says=("YAML syntax error", f"flow mapping started on line "
                      f"{line_of(text, 'params: {low')}", "brackets"))


def test_unterminated_quote_names_the_line_where_it_opened() -> None:
    text = 'name: "under-test\nnodes:\n  eeg:\n    type: simulated_eeg\n'
    issue = only_issue(text)
    assert issue.file == FILE and issue.node is None
    assert "quoted scalar started on line 1" in issue.message


# -- duplicate keys --------------------------------------------------------------------------
DUPLICATE_NODE = HEAD + more_nodes("""
      eeg:
        type: simulated_eeg
    """)
DUPLICATE_PARAM = HEAD + more_nodes("""
      bp:
        type: bandpass
        params:
          low: 8
          high: 30
          low: 4
        inputs: {signal: eeg.signal}
    """)


def lines_equal(text: str, exact: str) -> list[int]:
    """1-based numbers of the lines of ``text`` equal to ``exact``."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if line == exact]


@pytest.mark.parametrize(("text", "entry", "key"), [
    (DUPLICATE_NODE, "  eeg:", "eeg"),
    (DUPLICATE_PARAM, "      low: 8", "low"),
], ids=["node", "param"])
def test_duplicate_key_is_refused_with_both_lines(text: str, entry: str, key: str) -> None:
    first = lines_equal(text, entry)[0]
    second = line_of(text, "low: 4") if key == "low" else lines_equal(text, entry)[1]
    issue = only_issue(text)
    assert (issue.file, issue.line) == (FILE, second)
    assert f"duplicate key '{key}' (first on line {first})" in issue.message
    assert "keep only one" in issue.message


@pytest.mark.parametrize(("text", "node", "field"), [
    (DUPLICATE_NODE, "eeg", "nodes.eeg"),
    (DUPLICATE_PARAM, "bp", "nodes.bp.params.low"),
], ids=["node", "param"])
def test_duplicate_key_names_node_and_field(text: str, node: str, field: str) -> None:
    issue = only_issue(text)
    assert (issue.node, issue.field) == (node, field)


# -- rate mismatch between two inputs of one node --------------------------------------------
RATE_MISMATCH = pipeline("""
    name: two-rates
    clock: simulated
    duration: 1
    nodes:
      slow:
        type: test_validation_spy_eeg
        params: {n_channels: 8, srate: 250}
      fast:
        type: test_validation_spy_eeg
        params: {n_channels: 8, srate: 500}
      join:
        type: test_validation_join
        inputs:
          a: slow.signal
          b: fast.signal
    """)


def test_rate_mismatch_names_the_input_and_the_fix(test_nodes: None) -> None:
    issue = only_issue(RATE_MISMATCH)
    check_issue(issue, line=line_of(RATE_MISMATCH, "b: fast.signal"), node="join",
                field="nodes.join.inputs.b",
                says=("rate 500 Hz", "differs from input 'a' (250 Hz)", "resample one stream"))


def test_same_rates_are_accepted(test_nodes: None) -> None:
    graph = load_graph_text(RATE_MISMATCH.replace("srate: 500", "srate: 250"), FILE)
    assert graph.specs[("join", "joined")].n_channels == 16
    assert graph.order.index("join") > max(graph.order.index("slow"), graph.order.index("fast"))


def test_rate_mismatch_through_build_graph_directly(test_nodes: None) -> None:
    config, lines = load_pipeline_text(RATE_MISMATCH, FILE)
    with pytest.raises(PipelineError) as info:
        build_graph(config, lines, FILE)
    assert [(i.node, i.field) for i in info.value.issues] == [("join", "nodes.join.inputs.b")]


def test_rate_mismatch_run_exits_2_and_opens_no_node(
    test_nodes: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "two_rates.yaml"
    path.write_text(RATE_MISMATCH, encoding="utf-8")
    session = tmp_path / "s"
    code, err = run_cli(path, session, capsys)
    assert code == 2
    assert not session.exists()
    assert SpyEeg.opened == [] and RateJoin.opened == []
    assert f"{path}:{line_of(RATE_MISMATCH, 'b: fast.signal')}" in err
    assert "node 'join'" in err and "field 'nodes.join.inputs.b'" in err

    # the control: the same pipeline with matching rates does start its nodes
    path.write_text(RATE_MISMATCH.replace("srate: 500", "srate: 250"), encoding="utf-8")
    code, _ = run_cli(path, session, capsys)
    assert code == 0
    assert sorted(SpyEeg.opened) == ["fast", "slow"] and RateJoin.opened == ["join"]
    assert (session / "manifest.json").is_file()


def test_validate_json_reports_rate_mismatch(
    test_nodes: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "two_rates.yaml"
    path.write_text(RATE_MISMATCH, encoding="utf-8")
    assert cli.main(["validate", "--json", str(path)]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "errors": [{
        "file": str(path), "line": line_of(RATE_MISMATCH, "b: fast.signal"), "node": "join",
        "field": "nodes.join.inputs.b", "message": out["errors"][0]["message"]}]}
    assert "resample one stream" in out["errors"][0]["message"]


# -- cycles ----------------------------------------------------------------------------------
LOOP = pipeline("""
    name: loop
    clock: simulated
    nodes:
      eeg:
        type: simulated_eeg
      loop:
        type: test_validation_loop
        inputs:
          signal: eeg.signal
          feedback: bp.filtered
      bp:
        type: bandpass
        params: {low: 8, high: 30}
        inputs: {signal: loop.out}
    """)


def test_following_the_cycle_hint_makes_the_pipeline_valid(test_nodes: None) -> None:
    issue = only_issue(LOOP)
    check_issue(issue, line=line_of(LOOP, "feedback: bp.filtered"), node="loop",
                field="nodes.loop.inputs.feedback",
                says=("cycle loop -> bp -> loop is not declared",
                      "'feedback: {from: bp.filtered, delayed: true}'"))
    fixed = LOOP.replace("feedback: bp.filtered", "feedback: {from: bp.filtered, delayed: true}")
    graph = load_graph_text(fixed, FILE)
    assert graph.order == ["eeg", "loop", "bp"]
    assert [e for e in graph.edges if e.delayed][0].dst_port == "feedback"
    # the second configure pass gave the delayed input its spec
    assert graph.nodes["loop"].input_specs["feedback"] == graph.specs[("bp", "filtered")]


def test_cycle_with_a_node_downstream_of_it_declared_first() -> None:
    # regression: the cycle search walked downstream from the first node left over by the
    # topological sort, which may be a dead end below the cycle (IndexError)
    text = HEAD + more_nodes("""
          tail:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: b.filtered}
          a:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: b.filtered}
          b:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: a.filtered}
        """)
    # leftovers in declaration order: tail, a, b; walking upstream from 'tail' finds b -> a -> b
    check_issue(only_issue(text), line=line_of(text, "a.filtered"), node="b",
                field="nodes.b.inputs.signal",
                says=("cycle b -> a -> b is not declared", "signal: {from: a.filtered, delayed: true}"))


def test_self_loop_is_an_undeclared_cycle() -> None:
    text = HEAD + more_nodes("""
          a:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: a.filtered}
        """)
    check_issue(only_issue(text), line=line_of(text, "a.filtered"), node="a",
                field="nodes.a.inputs.signal", says=("cycle a -> a",))


def test_delayed_edge_into_the_only_input_is_an_error_not_a_crash() -> None:
    # marking the wrong edge delayed leaves a node with no input stream when specs are set
    text = HEAD + more_nodes("""
          a:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: {from: b.filtered, delayed: true}}
          b:
            type: bandpass
            params: {low: 8, high: 30}
            inputs: {signal: a.filtered}
        """)
    check_issue(only_issue(text), line=line_of(text, "b.filtered"), node="a",
                field="nodes.a.inputs.signal",
                says=("fed only by a delayed edge", "mark another edge of the loop"))


# -- not an error ----------------------------------------------------------------------------
def test_the_shipped_demo_is_valid_and_on_bad_chunk_is_allowed_on_a_source() -> None:
    demo = Path(cli.demo_pipeline_path()).read_text(encoding="utf-8")
    graph = load_graph_text(demo.replace("    type: simulated_eeg\n",
                                         "    type: simulated_eeg\n    on_bad_chunk: stop\n"))
    assert graph.config.nodes["eeg"].on_bad_chunk == "stop"
    assert graph.sources() == ["eeg"]


def test_nodes_downstream_of_a_refused_stream_add_no_noise() -> None:
    # regression: log_variance read its missing input spec and raised KeyError (a crash)
    text = HEAD + more_nodes("""
          bp:
            type: bandpass
            params: {low: 8, high: 200}
            inputs: {signal: eeg.signal}
          lv:
            type: log_variance
            inputs: {signal: bp.filtered}
        """)
    check_issue(only_issue(text), line=line_of(text, "eeg.signal"), node="bp",
                field="nodes.bp.inputs.signal", says=("Nyquist", "lower 'high'"))
