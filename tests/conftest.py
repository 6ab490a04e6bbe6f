"""Shared fixtures: a graph builder from YAML text, and the tiny test nodes.

The test nodes (``tests/nodes_for_tests.py``, types ``test_source``,
``test_recorder``, ``test_collector``) are registered once at import; their
names start with ``test_`` and do not shadow any shipped node type.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


#: Debian's Chromium (Playwright's own browser download is blocked here)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright; skipped when Chromium is not installed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
