"""Real-time scheduling is taken when allowed, reported when not, and always given back."""

from __future__ import annotations

import logging
import os

from bci_runtime.realtime import realtime_priority


def test_realtime_priority_is_given_back(caplog):
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    with caplog.at_level(logging.WARNING, logger="bci_runtime.realtime"):
        with realtime_priority(True, priority=5) as granted:
            inside = os.sched_getscheduler(0)
    if granted:
        assert inside == os.SCHED_FIFO
        assert not caplog.records
    else:  # no permission here: normal policy, and a warning that says how to grant it
        assert inside == before[0]
        assert "rtprio" in caplog.text
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_disabled_changes_nothing():
    before = os.sched_getscheduler(0)
    with realtime_priority(False) as granted:
        assert granted is False
        assert os.sched_getscheduler(0) == before
