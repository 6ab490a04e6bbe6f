"""The one exception tree of bci-runtime.

Every error the runtime raises on purpose derives from :class:`BciError` and says
what was wrong, where, and how to fix it::

    BciError
    ├── ConfigError                 bad configuration; nothing was started (exit code 2)
    │   ├── PipelineError           a pipeline file is invalid (file, line, node, field)
    │   ├── UnknownNodeTypeError    a ``type:`` that no registered node has
    │   ├── SpecMismatchError       a stream does not fit the node it feeds
    │   ├── RecordingError          a recording file cannot be read (missing, a Git-LFS
    │   │                           pointer, not the format its name says, broken beyond repair)
    │   └── StepOrderError          the calibration wizard was asked for a step it is not at
    ├── RunError                    failure while running (exit code 1)
    │   ├── NodeError               a node raised while processing a chunk
    │   ├── BadChunkError           a source delivered a malformed chunk under the ``stop`` policy
    │   ├── WorkerDiedError         a worker process exited unexpectedly
    │   ├── StreamNotFoundError     no LSL stream matched a query
    │   └── StimulatorError         a stimulator device refused a command, answered wrong
    │                               or went silent (the output is forced safe first)
    ├── DecoderError                a decoder was given what it cannot use (also a ValueError,
    │   │                           as scikit-learn expects); the model that serves is unchanged
    │   ├── NotFittedError          predict / partial_fit / transform before fit (also an
    │   │                           AttributeError, like scikit-learn's)
    │   └── ModelFileError          a model file is missing, tampered with, foreign or not
    │                               ours (a pickle is never executed)
    └── DependencyError             an optional dependency is missing (with an install hint)

The command line maps :class:`ConfigError` to exit code 2 and every other
:class:`BciError` to exit code 1.
"""

from __future__ import annotations

from dataclasses import dataclass


class BciError(Exception):
    """Root of every error raised by bci-runtime.

    Parameters
    ----------
    message : str
        What went wrong.
    hint : str, optional
        How to fix it.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(BciError):
    """A configuration problem found before anything started."""

    exit_code = 2


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a pipeline file.

    Attributes
    ----------
    file : str
        Path of the pipeline file.
    line : int or None
        1-based line of the offending entry, when known.
    node : str or None
        Name of the node concerned, when the problem belongs to one.
    field : str or None
        Dotted path of the offending field (``nodes.bandpass.params.low``).
    message : str
        What is wrong and how to fix it.
    """

    file: str
    line: int | None
    node: str | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, object]:
        """Return the issue as a JSON-ready mapping."""
        return {
            "file": self.file,
            "line": self.line,
            "node": self.node,
            "field": self.field,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.node:
            parts.append(f"node '{self.node}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join([", ".join(parts), self.message])


class PipelineError(ConfigError):
    """A pipeline file is invalid; carries every problem found.

    Parameters
    ----------
    issues : list of ConfigIssue
        The problems, in file order.
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.line is None, i.line or 0))
        lines = [str(issue) for issue in self.issues]
        super().__init__("\n".join(lines) if lines else "invalid pipeline")


class UnknownNodeTypeError(ConfigError):
    """A node type name that no registered node class has."""


class SpecMismatchError(ConfigError):
    """A stream spec does not fit the node that receives it (channels, rate, units)."""


class RecordingError(ConfigError):
    """A recording file cannot be read; nothing was replayed.

    Missing, empty, a Git-LFS or git-annex pointer instead of the data, not the
    format its extension says, or damaged beyond what can be recovered.
    """


class StepOrderError(ConfigError):
    """The calibration wizard was asked for something its current step does not do."""


class RunError(BciError):
    """A failure while the graph was running."""


class NodeError(RunError):
    """A node raised while processing a chunk.

    Parameters
    ----------
    node : str
        Name of the node that raised.
    timestamp : float or None
        Newest sample timestamp of the chunk being processed (runtime clock).
    cause : BaseException
        The original exception.
    """

    def __init__(self, node: str, timestamp: float | None, cause: BaseException) -> None:
        self.node = node
        self.timestamp = timestamp
        self.cause = cause
        when = f" at t={timestamp:.6f}" if timestamp is not None else ""
        cause_name = getattr(cause, "type_name", type(cause).__name__)
        super().__init__(
            f"node '{node}' failed{when}: {cause_name}: {cause}",
            hint="see the traceback in the session's events.jsonl; fix the node or its parameters",
        )


    @classmethod
    def from_report(cls, node: str, timestamp: float | None, type_name: str,
                    message: str) -> NodeError:
        """Rebuild the error a worker process reported (its cause cannot cross)."""
        return cls(node, timestamp, _RemoteCause(type_name, message))


class _RemoteCause(Exception):
    """Stands for an exception raised in another process."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class BadChunkError(RunError):
    """A source delivered a malformed chunk and its policy is ``stop``."""


class WorkerDiedError(RunError):
    """A worker process died; names the nodes it hosted."""


class StreamNotFoundError(RunError):
    """No LSL stream matched the query."""


class StimulatorError(RunError):
    """A stimulator device refused a command, answered wrongly or stopped answering."""


class DecoderError(BciError, ValueError):
    """A decoder was given data or settings it cannot use.

    Raised before any state changes, so a serving model keeps serving.
    """


class NotFittedError(DecoderError, AttributeError):
    """A decoder or strategy was used before ``fit``."""


class ModelFileError(DecoderError):
    """A model file cannot be trusted or read (hash mismatch, foreign format, pickle)."""


class DependencyError(BciError):
    """An optional dependency is missing or broken."""
