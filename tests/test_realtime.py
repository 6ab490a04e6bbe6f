"""Real-time scheduling is taken when allowed, reported when not, and always given back."""

from __future__ import annotations

import logging
import os

import pytest

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


def test_short_lock_slices_sets_the_switch_interval_and_refuses_nonsense(monkeypatch, caplog):
    import sys

    from bci_runtime.realtime import SWITCH_INTERVAL_S, short_lock_slices

    before = sys.getswitchinterval()
    try:
        monkeypatch.delenv("BCI_SWITCH_INTERVAL_MS", raising=False)
        short_lock_slices()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        monkeypatch.setenv("BCI_SWITCH_INTERVAL_MS", "2")
        short_lock_slices()
        assert sys.getswitchinterval() == pytest.approx(0.002)
        for bad in ("fast", "0", "-1"):
            monkeypatch.setenv("BCI_SWITCH_INTERVAL_MS", bad)
            with caplog.at_level(logging.WARNING, logger="bci_runtime.realtime"):
                short_lock_slices()
            assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
            assert "not a positive number" in caplog.text
    finally:
        sys.setswitchinterval(before)
