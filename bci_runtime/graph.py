"""The pipeline graph: nodes instantiated and checked, edges resolved, specs propagated.

:func:`build_graph` does every check that can be done before anything starts and
collects all problems into one :class:`~bci_runtime.errors.PipelineError`:
unknown node types and parameters, unknown or unconnected ports, kind mismatches
(signal vs events), cycles not marked ``delayed``, and spec mismatches found by each node's ``configure`` (channel
count, rate, units).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bci_runtime.config import (
    MAIN_PROCESS,
    LineMap,
    PipelineConfig,
    issues_from_validation,
    load_pipeline,
    load_pipeline_text,
)
from bci_runtime.errors import BciError, ConfigIssue, PipelineError
from bci_runtime.node import BlockingSource, Node, is_source
from bci_runtime.registry import get_node_class
from bci_runtime.spec import StreamSpec


@dataclass(frozen=True)
class Edge:
    """A connection from an output port to an input port."""

    src: str
    src_port: str
    dst: str
    dst_port: str
    delayed: bool = False


@dataclass
class Graph:
    """A validated, configured pipeline graph (no resources acquired yet).

    Attributes
    ----------
    config : PipelineConfig
        The validated configuration.
    file : str
        Where the configuration came from.
    nodes : dict of str to Node
        Node instances by name, configured.
    edges : list of Edge
        Every connection.
    order : list of str
        Node names in topological order (delayed edges excluded).
    specs : dict of (str, str) to StreamSpec
        Spec of every output port, by (node, port).
    """

    config: PipelineConfig
    file: str
    nodes: dict[str, Node]
    edges: list[Edge]
    order: list[str]
    specs: dict[tuple[str, str], StreamSpec] = field(default_factory=dict)

    def resolved_config(self) -> PipelineConfig:
        """The configuration with every node's parameters complete (defaults filled in).

        This is what a session records and hashes: two files that mean the same
        run hash the same, and a changed default changes the hash.
        """
        nodes = {name: ncfg.model_copy(update={"params": self.nodes[name].params.model_dump(mode="json")})
                 for name, ncfg in self.config.nodes.items()}
        return self.config.model_copy(update={"nodes": nodes})

    def process_of(self, node: str) -> str:
        """Name of the process that runs ``node``."""
        return self.config.nodes[node].process

    @property
    def processes(self) -> list[str]:
        """Process names, ``main`` first, then in order of appearance."""
        names = [MAIN_PROCESS]
        for name in self.order:
            proc = self.process_of(name)
            if proc not in names:
                names.append(proc)
        return names

    def nodes_in(self, process: str) -> list[str]:
        """Names of the nodes placed in ``process``, in topological order."""
        return [n for n in self.order if self.process_of(n) == process]

    def sources(self) -> list[str]:
        """Names of the source nodes, in topological order."""
        return [n for n in self.order if is_source(self.nodes[n])]

    def sinks(self) -> list[str]:
        """Names of the nodes without outputs."""
        return [n for n in self.order if not self.nodes[n].outputs]


def _topological_order(names: list[str], edges: list[Edge]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm, stable in declaration order; returns (order, nodes left in cycles)."""
    indegree = {n: 0 for n in names}
    downstream: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        if not e.delayed:
            indegree[e.dst] += 1
            downstream[e.src].append(e.dst)
    ready = [n for n in names if indegree[n] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for nxt in downstream[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return order, [n for n in names if n not in order]


def _find_cycle(start: str, edges: list[Edge], within: set[str]) -> list[str]:
    """One cycle through ``within`` that feeds ``start``, as a node path.

    Walks upstream: every node Kahn's algorithm left has an upstream node that was
    left too (a node downstream of a cycle may have no downstream one).
    """
    pred: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        if not e.delayed and e.src in within and e.dst in within:
            pred[e.dst].append(e.src)
    path, seen = [start], {start}
    node = start
    while True:
        node = pred[node][0]
        if node in seen:
            return (path[path.index(node):] + [node])[::-1]
        path.append(node)
        seen.add(node)


def build_graph(config: PipelineConfig, lines: LineMap | None = None, file: str = "<pipeline>") -> Graph:
    """Instantiate, connect and configure every node of a pipeline.

    Parameters
    ----------
    config : PipelineConfig
        Structurally valid configuration.
    lines : LineMap, optional
        Line numbers for error messages.
    file : str
        File name for error messages.

    Returns
    -------
    Graph

    Raises
    ------
    PipelineError
        With every problem found.
    """
    lines = lines or LineMap({})
    issues: list[ConfigIssue] = []

    def issue(node: str | None, path: tuple, message: str) -> None:
        field_name = ".".join(str(p) for p in path) or None
        issues.append(ConfigIssue(file, lines.line(path), node, field_name, message))

    # 1. node classes and parameters
    nodes: dict[str, Node] = {}
    for name, ncfg in config.nodes.items():
        try:
            cls = get_node_class(ncfg.type)
        except BciError as exc:
            issue(name, ("nodes", name, "type"), str(exc).replace("\n  hint:", ";"))
            continue
        try:
            params = cls.Params.model_validate(ncfg.params)
        except ValidationError as exc:
            issues.extend(issues_from_validation(exc, file, lines, ("nodes", name, "params")))
            continue
        node = cls(name, params)
        nodes[name] = node
        # the default spelled out (as resolved configurations do) is harmless
        default_policy = type(ncfg).model_fields["on_bad_chunk"].default
        if ("on_bad_chunk" in ncfg.model_fields_set and ncfg.on_bad_chunk != default_policy
                and not is_source(node)):
            issue(name, ("nodes", name, "on_bad_chunk"),
                  f"'on_bad_chunk' applies to sources only and '{ncfg.type}' is not one; remove it")
        if config.clock == "simulated" and is_source(node) and ncfg.process != MAIN_PROCESS:
            issue(name, ("nodes", name, "process"),
                  "on the simulated clock every source runs in the main process, which drives "
                  "the clock; remove 'process' from this source or set 'clock: live'")
        if config.clock == "simulated" and isinstance(node, BlockingSource):
            issue(name, ("nodes", name, "type"),
                  f"'{ncfg.type}' waits on the outside world and cannot run on the simulated "
                  "clock; set 'clock: live' or replace it with a file or simulator source")

    # 2. edges and ports
    edges: list[Edge] = []
    for name, ncfg in config.nodes.items():
        node = nodes.get(name)
        if node is None:
            continue
        for port, ref in ncfg.inputs.items():
            where = ("nodes", name, "inputs", port)
            if port not in node.inputs:
                have = ", ".join(node.inputs) or "none"
                issue(name, where, f"'{ncfg.type}' has no input port '{port}' (inputs: {have})")
                continue
            if ref.node not in config.nodes:
                issue(name, where, f"'{ref.source}' names node '{ref.node}', which is not in "
                      f"'nodes' (nodes: {', '.join(config.nodes)})")
                continue
            upstream = nodes.get(ref.node)
            if upstream is None:
                continue
            if ref.port not in upstream.outputs:
                have = ", ".join(upstream.outputs) or "none"
                issue(name, where, f"node '{ref.node}' ({upstream.type_name}) has no output "
                      f"port '{ref.port}' (outputs: {have})")
                continue
            out_kind, in_kind = upstream.outputs[ref.port].kind, node.inputs[port].kind
            if out_kind != in_kind:
                issue(name, where, f"'{ref.source}' carries {out_kind} but input '{port}' "
                      f"expects {in_kind}; connect a {in_kind} output")
                continue
            edges.append(Edge(ref.node, ref.port, name, port, ref.delayed))
        for port, spec in node.inputs.items():
            if spec.required and port not in ncfg.inputs:
                issue(name, ("nodes", name, "inputs"),
                      f"required input '{port}' is not connected; add "
                      f"'inputs: {{{port}: <node>.<port>}}'")

    for e in edges:
        if e.delayed and config.nodes[e.src].process != config.nodes[e.dst].process:
            where = ("nodes", e.dst, "inputs", e.dst_port)
            issue(e.dst, where, f"the delayed edge from '{e.src}' crosses from process "
                  f"'{config.nodes[e.src].process}' to '{config.nodes[e.dst].process}'; "
                  "delayed edges must stay within one process: place both nodes in the same one")
    names = [n for n in config.nodes if n in nodes]
    order, cyclic = _topological_order(names, edges)
    if cyclic:
        cycle = _find_cycle(cyclic[0], edges, set(cyclic))
        closing = next(e for e in edges if not e.delayed and (e.src, e.dst) == tuple(cycle[-2:]))
        issue(cycle[-1], ("nodes", cycle[-1], "inputs", closing.dst_port),
              f"cycle {' -> '.join(cycle)} is not declared; mark the edge that closes the "
              f"loop with 'delayed: true': '{closing.dst_port}: {{from: {closing.src}."
              f"{closing.src_port}, delayed: true}}'")

    if issues:
        raise PipelineError(issues)

    graph = Graph(config=config, file=file, nodes=nodes, edges=edges, order=order)
    _configure_all(graph, lines, file)
    return graph


def _configure_all(graph: Graph, lines: LineMap, file: str) -> None:
    """Propagate specs in topological order; a second pass gives delayed inputs theirs."""
    incoming: dict[str, list[Edge]] = defaultdict(list)
    for e in graph.edges:
        incoming[e.dst].append(e)
    has_delayed = {e.dst for e in graph.edges if e.delayed}
    issues: list[ConfigIssue] = []
    for pass_no in (1, 2):
        for name in graph.order:
            if pass_no == 2 and name not in has_delayed:
                continue
            node = graph.nodes[name]
            specs = {
                e.dst_port: graph.specs[(e.src, e.src_port)]
                for e in incoming[name]
                if (e.src, e.src_port) in graph.specs
            }
            try:
                out = node.bind(specs)
            except KeyError as exc:  # configure read a connected input that has no spec yet
                port = exc.args[0] if exc.args else None
                feeds = [e for e in incoming[name] if e.dst_port == port]
                if not feeds or port in specs:
                    raise
                if all(e.delayed for e in feeds):  # else its upstream failed and is reported
                    where = ("nodes", name, "inputs", port)
                    issues.append(ConfigIssue(
                        file, lines.line(where), name, ".".join(where),
                        f"input '{port}' has no stream when the graph starts (it is fed only "
                        "by a delayed edge); mark another edge of the loop 'delayed: true'"))
                continue
            except (BciError, ValueError) as exc:
                port = getattr(exc, "port", None)
                where = ("nodes", name) + (("inputs",) if node.inputs else ()) + (
                    (port,) if port in node.inputs else ())
                issues.append(ConfigIssue(file, lines.line(where), name, ".".join(where),
                                          str(exc).replace("\n  hint:", ";")))
                continue
            missing = set(node.outputs) - set(out)
            if missing:
                issues.append(ConfigIssue(file, lines.line(("nodes", name)), name, None,
                                          f"node did not declare specs for outputs {sorted(missing)}"))
            for port, spec in out.items():
                graph.specs[(name, port)] = spec
        if issues:
            raise PipelineError(issues)


def load_graph(path: str | Path) -> Graph:
    """Load, validate and configure a pipeline file."""
    config, lines = load_pipeline(path)
    return build_graph(config, lines, str(path))


def load_graph_text(text: str, file: str = "<string>") -> Graph:
    """Load, validate and configure a pipeline from YAML text."""
    config, lines = load_pipeline_text(text, file)
    return build_graph(config, lines, file)
