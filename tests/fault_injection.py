"""Fault injection shared by tests: a disk that fills up."""

from __future__ import annotations

import errno
import os
from typing import Any


class FillingDisk:
    """Stands in for ``os`` inside the XDF writer: writes fail with ENOSPC after ``budget``
    bytes, a short write first, as a real full disk does.

    Use with ``monkeypatch.setattr(bci_runtime.xdf_writer, "os", FillingDisk(n))``.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.failures = 0

    def write(self, fd: int, data: Any) -> int:
        if self.budget <= 0:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, memoryview(data)[: self.budget])
        self.budget -= n
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)
