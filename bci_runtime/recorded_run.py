"""A graph run in a new session folder, recorded: what ``bci run`` and the wizard share.

:class:`RecordedRun` opens the session folder (configuration, manifest,
events), builds the runner with its status (:class:`~bci_runtime.run_status.RunStatus`)
and the XDF recording of every stream, and :meth:`RecordedRun.finish` closes the
recording and writes the summary and the final manifest, whatever way the run
ended. The caller runs :meth:`Runner.run` where it wants (the main thread for
``bci run``, a thread of its own in the wizard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bci_runtime.errors import BciError
from bci_runtime.graph import Graph
from bci_runtime.run_status import RunStatus, chain_events
from bci_runtime.runner import Runner, RunResult
from bci_runtime.session import Session
from bci_runtime.summary import build_summary

Tap = Callable[[str, Mapping[str, Any], float, bool], None]


class RecordedRun:
    """A runner for ``graph`` whose every stream is recorded into a new session folder.

    Parameters
    ----------
    graph : Graph
        The configured graph.
    source : str
        Where the pipeline came from (recorded in the manifest).
    session_dir : Path, optional
        Exact folder (absent or empty); default the next ``<root>/sub-<subject>/ses-<NN>``.
    root : Path
        Where subjects' folders live.
    subject : str
        Pseudonymous subject id.
    manifest : dict, optional
        Extra manifest entries.
    on_event : callable, optional
        ``on_event(kind, **fields)``: the run's events, after the session's log.
    tap : callable, optional
        ``tap(node, outputs, now, read)``: sees every chunk after the recorder (it must
        only queue or do trivial work: it runs on the graph's threads).

    Attributes
    ----------
    session : Session
    runner : Runner
    status : RunStatus
        Attached to the runner; its :meth:`~RunStatus.snapshot` is cheap.
    """

    def __init__(self, graph: Graph, source: str, *, session_dir: Path | None = None,
                 root: Path = Path("sessions"), subject: str = "01",
                 manifest: dict[str, Any] | None = None,
                 on_event: Callable[..., None] | None = None, tap: Tap | None = None) -> None:
        self.graph = graph
        self.session = Session(graph.resolved_config(), source, session_dir, root=root,
                               subject=subject)
        self.session.manifest.update(manifest or {})
        self.status = RunStatus()
        self.runner = Runner(graph, emit_event=chain_events(self.session.log_event,
                                                            self.status.on_event, on_event),
                             session_dir=self.session.dir)
        self.status.attach(self.runner)
        try:
            record = self.session.start_recording(graph, on_error=self.runner.fail).tap
        except BciError as exc:
            self.session.finalize("failed", {}, error=str(exc))
            raise
        self.runner.tap = record if tap is None else _both(record, tap)

    def finish(self, result: RunResult,
               before_finalize: Callable[[Session, dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
        """Close the recording, write the summary and the manifest; the run's summary.

        Parameters
        ----------
        result : RunResult
            What :meth:`Runner.run` returned.
        before_finalize : callable, optional
            ``before_finalize(session, summary)`` once the recording is complete (it
            may add to the summary).
        """
        session = self.session
        session.set_processes(result.processes)
        summary = build_summary(result, self.graph.config.name, str(session.dir))
        session.close_recording()
        if before_finalize is not None:
            before_finalize(session, summary)
        session.finalize(result.status, summary,
                         error=str(result.error) if result.error else None)
        return summary


def _both(first: Tap, second: Tap) -> Tap:
    def tap(node: str, outputs: Mapping[str, Any], now: float, read: bool) -> None:
        first(node, outputs, now, read)
        second(node, outputs, now, read)
    return tap
