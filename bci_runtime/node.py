"""The node API: ports, parameters, lifecycle.

A node is a plain object that can be tested alone::

    node = Bandpass("bp", {"low": 8, "high": 30})
    out_specs = node.bind({"signal": eeg_spec})        # start-time check, returns output specs
    node.open(NodeContext.for_test())
    emitted = node.process("signal", chunk)            # {"signal": filtered_chunk}
    node.close()

Lifecycle, in order: ``__init__`` (parameters only, no side effects),
:meth:`Node.bind` (calls the node's :meth:`Node.configure` hook, which validates
the input specs and returns the output specs, and keeps both; pure, so ``bci
validate`` runs it too), :meth:`Node.open` (acquire devices, sockets, files),
:meth:`Node.process` per arriving chunk, :meth:`Node.close`.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bci_runtime.chunk import AnyChunk
from bci_runtime.clock import Clock, SimulatedClock
from bci_runtime.errors import SpecMismatchError
from bci_runtime.spec import StreamSpec

PortKind = Literal["signal", "events"]
Emitted = Mapping[str, AnyChunk] | None

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Input:
    """An input port, declared as a class attribute of a node.

    Parameters
    ----------
    kind : {"signal", "events"}
        What the port accepts.
    required : bool
        Whether the pipeline must connect it.
    doc : str
        One line shown by ``bci nodes``.
    """

    kind: PortKind = "signal"
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Output:
    """An output port, declared as a class attribute of a node."""

    kind: PortKind = "signal"
    doc: str = ""


class NodeParams(BaseModel):
    """Base of node parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class NodeContext:
    """What the runtime hands a node when it opens.

    Attributes
    ----------
    name : str
        The node's name in the pipeline.
    clock : Clock
        The runtime clock.
    seed : int
        The pipeline seed; :meth:`rng` derives the node's own generator from it.
    session_dir : Path or None
        Session folder, when the run writes one.
    emit_event : callable
        ``emit_event(kind, **fields)`` appends to the session's events log.
    stop_requested : threading.Event
        Set when the run is stopping; blocking sources return when they see it.
    emergency_stop : callable
        ``emergency_stop(source)`` stops every actuator of the run at once (the
        feedback page's button).
    """

    name: str
    clock: Clock
    seed: int = 0
    session_dir: Path | None = None
    emit_event: Callable[..., None] = field(default=lambda kind, **fields: None)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    emergency_stop: Callable[[str], None] = field(default=lambda source: None)

    def rng(self, stream: str = "") -> np.random.Generator:
        """A generator seeded from the pipeline seed, the node name and ``stream``."""
        key = zlib.crc32(f"{self.name}/{stream}".encode())
        return np.random.default_rng(np.random.SeedSequence([self.seed, key]))

    @classmethod
    def for_test(cls, name: str = "node", seed: int = 0) -> NodeContext:
        """A context on a simulated clock, with no session folder."""
        return cls(name=name, clock=SimulatedClock(), seed=seed)


class Node:
    """Base class of all nodes.

    Subclasses declare ports as class attributes (:class:`Input`, :class:`Output`),
    parameters as a nested ``Params`` model derived from :class:`NodeParams`, and a
    ``type_name`` used in pipeline files.

    Parameters
    ----------
    name : str
        Name of the node in the pipeline.
    params : NodeParams or mapping, optional
        Parameters, validated against ``Params``.
    """

    type_name: ClassVar[str] = ""
    Params: ClassVar[type[NodeParams]] = NodeParams
    inputs: ClassVar[dict[str, Input]] = {}
    outputs: ClassVar[dict[str, Output]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inputs: dict[str, Input] = {}
        outputs: dict[str, Output] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Input):
                    inputs[attr] = value
                elif isinstance(value, Output):
                    outputs[attr] = value
        cls.inputs, cls.outputs = inputs, outputs

    def __init__(self, name: str, params: NodeParams | Mapping[str, Any] | None = None) -> None:
        self.name = name
        if isinstance(params, NodeParams):
            self.params = params
        else:
            self.params = self.Params.model_validate(dict(params or {}))
        self.input_specs: dict[str, StreamSpec] = {}
        self.output_specs: dict[str, StreamSpec] = {}
        self.context: NodeContext | None = None

    # -- lifecycle -----------------------------------------------------------------
    def bind(self, inputs: Mapping[str, StreamSpec]) -> dict[str, StreamSpec]:
        """Check input specs with :meth:`configure` and keep them and the output specs.

        The graph calls this at start (and ``bci validate`` without starting);
        call it yourself to use a node alone.

        Returns
        -------
        dict of str to StreamSpec
            Spec of each output port.
        """
        out = dict(self.configure(inputs))
        self.input_specs, self.output_specs = dict(inputs), out
        return out

    def configure(self, inputs: Mapping[str, StreamSpec]) -> dict[str, StreamSpec]:
        """Check input specs and declare output specs (start-time hook).

        Must be pure: no devices, files or sockets; ``bci validate`` calls it too.
        Specs of inputs fed by ``delayed`` edges may be missing on the first call.

        Parameters
        ----------
        inputs : mapping of str to StreamSpec
            Spec of each connected input port.

        Returns
        -------
        dict of str to StreamSpec
            Spec of each output port.
        """
        return {}

    def open(self, context: NodeContext) -> None:
        """Acquire resources (devices, sockets, files) before the first chunk."""
        self.context = context

    def process(self, port: str, chunk: AnyChunk) -> Emitted:
        """Handle one chunk arriving on ``port``; return what to emit per output port."""
        return None

    def close(self) -> None:
        """Release resources; called once, also after errors."""

    # -- helpers -------------------------------------------------------------------
    def spec_error(self, port: str, message: str, hint: str | None = None) -> SpecMismatchError:
        """Build a :class:`SpecMismatchError` that names this node and port."""
        error = SpecMismatchError(f"node '{self.name}' input '{port}': {message}", hint=hint)
        error.port = port  # type: ignore[attr-defined]  # lets the graph point at the input
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Source(Node):
    """A node that produces data on a schedule (simulators, file replay).

    The runtime asks :meth:`next_due` when the next chunk is available (runtime
    clock), waits until then (or, on the simulated clock, jumps there), and calls
    :meth:`read`.
    """

    def next_due(self) -> float | None:
        """Clock time at which :meth:`read` has new data; None when exhausted."""
        return None

    def read(self) -> dict[str, AnyChunk]:
        """Return the chunk(s) due now, per output port."""
        return {}


class BlockingSource(Node):
    """A node that waits on the outside world for data (an LSL inlet, a socket).

    It runs in its own thread; :meth:`read_blocking` returns as soon as data
    arrive, so the data wake the executor.
    """

    def read_blocking(self, timeout: float) -> dict[str, AnyChunk] | None:
        """Wait up to ``timeout`` s for data; None on timeout."""
        return None

    @property
    def exhausted(self) -> bool:
        """True once the source will never deliver again."""
        return False


def is_source(node: Node) -> bool:
    """Whether ``node`` produces data on its own."""
    return isinstance(node, (Source, BlockingSource))
