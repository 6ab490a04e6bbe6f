"""Tasks the simulated user performs: cued trials and a 2-D center-out cursor task.

Both live in the core (:mod:`bci_runtime.cued_trials`, :mod:`bci_runtime.center_out`),
where the runtime's task nodes run them for real subjects; the simulators import
them from here. Marker conventions (shared by the runtime's label tracker and
feedback nodes)::

    trial/start            fixation cross: a trial begins
    cue/<class>            the cue; imagery (or gazing at a flicker) starts
    end                    imagery stops (the labelled span closes)
    trial/end              the trial is over; rest follows

    target/<k> {"x": .., "y": ..}   a center-out target appears (k = 0 is the center)
    hit/<k>                the cursor dwelled on target k long enough
    timeout/<k>            target k was not acquired in time
"""

from __future__ import annotations

from bci_runtime.center_out import CenterOut, CenterOutParams
from bci_runtime.cued_trials import REST, CuedTrials, TrialTiming

__all__ = ["REST", "CenterOut", "CenterOutParams", "CuedTrials", "TrialTiming"]
