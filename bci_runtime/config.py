"""Pipeline files: YAML parsed with line numbers and validated by pydantic.

A pipeline file::

    name: demo
    seed: 7
    clock: live            # or simulated: deterministic, as fast as the CPU allows
    duration: 30           # seconds; omit to run until stopped
    nodes:
      eeg:
        type: simulated_eeg
        params: {n_channels: 8, srate: 250}
      bandpass:
        type: bandpass
        params: {low: 8, high: 30, order: 4}
        inputs: {signal: eeg.signal}      # input port <- upstream node.port
        process: dsp                      # optional: run in worker process "dsp"
      user:
        type: something
        inputs:
          feedback: {from: decoder.decision, delayed: true}   # closes a loop

Structural checks happen here; :mod:`bci_runtime.graph` checks node types,
parameters, ports, specs and cycles. Every problem becomes a
:class:`~bci_runtime.errors.ConfigIssue` with file, line, node and field.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bci_runtime.errors import ConfigIssue, PipelineError

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAIN_PROCESS = "main"
BadChunkPolicy = Literal["drop", "flag", "stop"]


class InputRef(BaseModel):
    """One input connection: ``upstream_node.port``, optionally delayed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from", description="upstream 'node.port'")
    delayed: bool = Field(
        False, description="deliver on the next cycle; required for edges that close a loop"
    )

    @field_validator("source")
    @classmethod
    def _dotted(cls, value: str) -> str:
        node, _, port = value.partition(".")
        if not node or not port:
            raise ValueError(f"'{value}' must be written 'node.port', e.g. 'eeg.signal'")
        return value

    @property
    def node(self) -> str:
        """Upstream node name."""
        return self.source.partition(".")[0]

    @property
    def port(self) -> str:
        """Upstream output port."""
        return self.source.partition(".")[2]


class NodeConfig(BaseModel):
    """One entry under ``nodes:``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="registered node type (see `bci nodes`)")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    process: str = Field(MAIN_PROCESS, description="process that runs the node")
    on_bad_chunk: BadChunkPolicy = Field(
        "drop",
        description="sources only: what to do with a chunk with the wrong channel count "
        "or NaN/Inf: drop it, flag it (NaN/Inf zeroed, event logged) or stop the run",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"from": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("process")
    @classmethod
    def _process_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"process name '{value}' must be letters, digits, '_' or '-'")
        return value


class PipelineConfig(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="pipeline name, used for session folders")
    description: str = ""
    seed: int = Field(0, ge=0, description="seed of every random generator in the run")
    clock: Literal["live", "simulated"] = "live"
    duration: float | None = Field(None, gt=0, allow_inf_nan=False,
                                   description="seconds; None runs until stopped")
    transport: Literal["ipc", "tcp"] = Field(
        "ipc", description="how worker processes connect: ipc:// sockets or tcp://127.0.0.1"
    )
    nodes: dict[str, NodeConfig]

    @field_validator("nodes")
    @classmethod
    def _names(cls, value: dict[str, NodeConfig]) -> dict[str, NodeConfig]:
        if not value:
            raise ValueError("a pipeline needs at least one node; add one under 'nodes:' "
                             "(`bci nodes` lists the types)")
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(
                    f"node name '{name}' must start with a letter and hold only letters, "
                    "digits, '_' or '-'"
                )
        return value

    def canonical_hash(self) -> str:
        """SHA-256 of the configuration in canonical JSON (key order independent)."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class LineMap:
    """Line numbers of the entries of a YAML document, by key path."""

    def __init__(self, lines: dict[tuple[Any, ...], int]) -> None:
        self._lines = lines

    def line(self, path: tuple[Any, ...]) -> int | None:
        """1-based line of the deepest known entry on ``path``."""
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), None)


def _collect_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int],
                   duplicates: list[tuple[tuple[Any, ...], int, int]]) -> None:
    """Record the line of every entry; note duplicate keys as (path, first, second line)."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append((path + (key,), seen[key], line))
                continue
            seen[key] = line
            out[path + (key,)] = line
            _collect_lines(value_node, path + (key,), out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, path + (index,), out, duplicates)


def _duplicate_issue(file: str, path: tuple[Any, ...], first: int, second: int) -> ConfigIssue:
    node = path[1] if len(path) > 1 and path[0] == "nodes" else None
    return ConfigIssue(file, second, node, ".".join(str(p) for p in path),
                       f"duplicate key '{path[-1]}' (first on line {first}); keep only one")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {seen[key]}); keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse YAML text, keeping line numbers.

    Raises
    ------
    PipelineError
        On a syntax error, with the line and column of the problem.
    """
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        context = exc.context
        if context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            context += f" started on line {exc.context_mark.line + 1}"
        problem = ": ".join(p for p in (context, exc.problem) if p)
        raise PipelineError(
            [ConfigIssue(file, line, None, None, f"YAML syntax error{col}: {problem}; "
                         "check indentation, colons and brackets on that line")]
        ) from None
    except yaml.YAMLError as exc:
        raise PipelineError([ConfigIssue(file, None, None, None, f"YAML error: {exc}")]) from None
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[tuple[Any, ...], int, int]] = []
    if tree is not None:
        _collect_lines(tree, (), lines, duplicates)
    if duplicates:
        raise PipelineError([_duplicate_issue(file, *d) for d in duplicates])
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:  # e.g. an unknown tag; syntax was checked above
        raise PipelineError([ConfigIssue(file, None, None, None, f"YAML error: {exc}")]) from None
    return data, LineMap(lines)


def issues_from_validation(
    exc: ValidationError, file: str, lines: LineMap, prefix: tuple[Any, ...] = ()
) -> list[ConfigIssue]:
    """Turn a pydantic ValidationError into ConfigIssues with lines and node names."""
    issues = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        node = loc[1] if len(loc) > 1 and loc[0] == "nodes" and isinstance(loc[1], str) else None
        field = ".".join(str(p) for p in loc) or None
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'; remove it or check its spelling"
        elif err["type"] == "missing":
            message = f"'{loc[-1]}' is required"
        else:
            value = err.get("input")
            if not isinstance(value, (dict, list)):
                message = f"{message} (got {value!r})"
        issues.append(ConfigIssue(file, lines.line(loc), node, field, message))
    return issues


def load_pipeline_text(text: str, file: str = "<string>") -> tuple[PipelineConfig, LineMap]:
    """Parse and structurally validate a pipeline from YAML text.

    Raises
    ------
    PipelineError
        With every problem found.
    """
    data, lines = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise PipelineError(
            [ConfigIssue(file, 1, None, None,
                         "a pipeline file must be a mapping with 'name' and 'nodes'")]
        )
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(issues_from_validation(exc, file, lines)) from None
    return config, lines


def load_pipeline(path: str | Path) -> tuple[PipelineConfig, LineMap]:
    """Read and structurally validate a pipeline file.

    Raises
    ------
    PipelineError
        When the file is missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(
            [ConfigIssue(str(path), None, None, None,
                         "file not found; check the path (`bci run --help` shows examples)")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError([ConfigIssue(str(path), None, None, None, f"cannot read: {exc}")]) from None
    return load_pipeline_text(text, str(path))
