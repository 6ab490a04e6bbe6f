"""Shared fixtures: a graph builder from YAML text, and the tiny test nodes.

The test nodes (``tests/nodes_for_tests.py``, types ``test_source``,
``test_recorder``, ``test_collector``) are registered once at import; their
names start with ``test_`` and do not shadow any shipped node type.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import nodes_for_tests
import pytest

from bci_runtime.graph import Graph, load_graph_text
from bci_runtime.registry import register_node

for _cls in nodes_for_tests.TEST_NODES:
    register_node(_cls)


@pytest.fixture
def make_graph() -> Callable[..., Graph]:
    """``make_graph(yaml_text, file="<test>")``: validate and configure a pipeline.

    The text is dedented first, so it can be written indented in a test.
    """

    def _make(yaml_text: str, file: str = "<test>") -> Graph:
        return load_graph_text(textwrap.dedent(yaml_text), file)

    return _make
