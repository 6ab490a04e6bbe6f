"""Progress bars for long work at a terminal (rich), and nothing for logs, pipes or --json."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def progress_bars(enabled: bool = True, stream: TextIO | None = None,
                  unit: str = "trials") -> Iterator[Callable[[str, int, int], None] | None]:
    """Yield ``update(task, done, total)`` drawing one bar per task, or None when not shown.

    Bars are drawn only for a person at a terminal: ``enabled`` false (``--json``) or a
    stream that is not a TTY gives None, so callers pass the result on as an optional
    callback.

    Parameters
    ----------
    enabled : bool
        False for machine-readable output.
    stream : text stream, optional
        Where the bars go (default stderr).
    unit : str
        What is counted, shown after the counts.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("  {task.description:28s}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
    tasks: dict[str, int] = {}
    with Progress(*columns, console=Console(file=stream), transient=False) as bars:
        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total)
            bars.update(tasks[task], completed=done, total=total)

        yield update
