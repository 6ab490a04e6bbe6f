"""Hardware-in-the-loop stalls: a paced LSL outlet → lsl_inlet → stimulator → pulses over LSL.

Every injected stall of the driving stream must force the safe state once, for a
stale input, with nothing delivered until the operator arms again. The number of
stalls is ``BCI_HIL_STALLS`` (default 30). How fast the safe state comes is
measured by ``bench/safety_hil.py``, not asserted here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bci_runtime.audit_log import read_audit_log
from bci_runtime.simulators.stall_injection import _analyse, _Marks, run_stall_trials

N_STALLS = int(os.environ.get("BCI_HIL_STALLS", "30"))


@pytest.mark.lsl
@pytest.mark.slow
def test_every_stall_forces_the_safe_state_and_nothing_is_delivered_until_rearmed(
        tmp_path: Path) -> None:
    pytest.importorskip("pylsl")
    report = run_stall_trials(N_STALLS, seed=3, audit_dir=tmp_path)
    n = N_STALLS
    assert report.n == n
    assert report.safe_states.tolist() == [1] * n  # one safe state per stall, no more
    assert all("stale" in reason for reason in report.reasons), report.reasons
    assert report.node_stalls == n and report.unexpected_safe_states == 0
    assert report.trains_after_safe.tolist() == [0] * n  # the audit log's order
    assert report.lsl_safe_rows == n  # the simulated stimulator said so over LSL...
    assert report.lsl_trains_after_safe.tolist() == [0] * n  # ...and sent nothing after
    assert report.safety["emitted_outside_limits"] == 0
    assert report.safety["stalls"] == n
    summary = report.summary()
    assert summary["safe_every_time"] == n and summary["trains_after_safe"] == 0
    records = read_audit_log(report.audit_path)
    assert sum(r["event"] == "safe_state" for r in records) == n
    assert sum(r["event"] == "arm" for r in records) == n  # armed once per trial


def test_the_analysis_sees_a_missing_safe_state_and_a_train_after_one() -> None:
    """The oracle is not vacuous: synthetic audit records with both faults."""
    marks = _Marks(last_push=[10.0, 20.0], resumed=[10.15, 20.15], rearmed=[10.4])
    reason = "input stale: nothing for 50.2 ms (limit 50.0 ms)"
    records = [
        {"event": "arm", "t_mono": 9.9},
        {"event": "disarm", "t_mono": 10.0503},
        {"event": "safe_state", "t_mono": 10.0504, "reason": reason, "safe_ms": 0.4},
        {"event": "emit", "t_mono": 10.06},  # delivered while disarmed: must be counted
        {"event": "arm", "t_mono": 10.4},
        {"event": "emit", "t_mono": 10.41},  # after the re-arm: fine
        # the second stall: no safe state at all
    ]
    safe_row = [-1.0] + [0.0] * 7
    train = [0.0, 1.0, 90.0, 1.0, 90.0, 130.0, 7.0, 0.09]
    pulses = (np.array([safe_row, train, train]), np.array([10.0505, 10.07, 10.41]))
    report = _analyse(records, {"safe_state_ms": [0.4]}, marks, pulses, 0.05, 1, 2, 1.0, None)
    assert report.safe_states.tolist() == [1, 0]
    assert report.trains_after_safe.tolist() == [1, 0]
    assert report.lsl_trains_after_safe.tolist() == [1, 0]
    assert report.deadline_to_safe_ms[0] == pytest.approx(0.4)
    assert np.isnan(report.deadline_to_safe_ms[1])
    assert report.last_sample_to_safe_ms[0] == pytest.approx(50.4)
    summary = report.summary()
    assert summary["safe_every_time"] == 1 and summary["within_10ms"] == 1
