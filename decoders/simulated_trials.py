"""Training and test trials from the simulator under a drift preset (``bci evaluate --simulate``).

One simulated session per call: calibration trials first, then test trials that
start before the drift's onset (so τ90 has a pre-drift baseline), run through
its ramp and well past it. The trials are cut exactly as from a file
(:func:`~bci_runtime.decoders.trials.cut_trials`: causal band-pass, then
epochs), so a simulated evaluation and a real one differ only in their data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bci_runtime.decoders.trials import (
    PARADIGM_BANDS,
    PARADIGM_WINDOWS,
    Continuous,
    Trials,
    cut_trials,
)
from bci_runtime.errors import ConfigError

# trial timing of the simulated sessions (s): 4 s per trial
TIMING = {"fixation_s": 0.5, "imagery_s": 2.5, "rest_s": 1.0, "first_s": 0.5}
TRIAL_S = 4.0
SIMULATED = {
    "mi": ("mi", {"n_channels": 16, "srate": 250, "classes": ["left", "right"],
                  "erd": 0.4, "mu_uv": 12.0}),
    "ssvep": ("ssvep", {"n_channels": 8, "srate": 256, "freqs": [8.57, 10.0, 12.0, 15.0]}),
}
SSVEP_WINDOW = (0.5, 2.5)  # the simulated flicker lasts imagery_s = 2.5 s


@dataclass
class SimulatedSession:
    """What ``--simulate`` evaluates on."""

    train: Trials
    test: Trials
    drift_onset_s: float | None
    events: dict[str, str]
    freqs: list[float]


def simulated_trials(paradigm: str, preset: str, *, seed: int = 1, n_train: int = 60,
                     n_before: int = 30, n_after: int = 170,
                     ramp_s: float = 60.0) -> SimulatedSession:
    """Simulate a session with ``preset`` drift and cut its trials.

    Parameters
    ----------
    paradigm : {"mi", "ssvep"}
    preset : str
        A drift preset of :mod:`bci_runtime.simulators.drift`.
    seed : int
    n_train : int
        Calibration trials.
    n_before, n_after : int
        Test trials before the onset, and from the onset on (the ramp included).
    ramp_s : float
        How long the drift takes to set in.
    """
    from bci_runtime.simulators.paradigms import make_generator

    if paradigm not in SIMULATED:
        raise ConfigError(f"--simulate works with --paradigm {' or '.join(SIMULATED)}, "
                          f"not {paradigm}",
                          hint="--paradigm continuous simulates the closed-loop cursor task: "
                          "bci evaluate --simulate PRESET --paradigm continuous")
    kind, params = SIMULATED[paradigm]
    onset_s = TIMING["first_s"] + (n_train + n_before) * TRIAL_S
    total_s = TIMING["first_s"] + (n_train + n_before + n_after) * TRIAL_S + 1.0
    drift = {"scenario": preset, "onset_s": onset_s, "ramp_s": ramp_s}
    gen = make_generator(kind, {**params, "timing": TIMING}, seed=seed, drift=drift)
    block = int(gen.srate // 10)
    blocks = [gen.next_block(block) for _ in range(int(total_s * gen.srate / block))]
    data = np.concatenate([b.data for b in blocks])
    marks = [(label, i / gen.srate) for b in blocks for label, i in b.markers]
    cues = [(label, t) for label, t in marks if label.startswith("cue/")]
    rec = Continuous(data, np.arange(data.shape[0]) / gen.srate, gen.srate,
                     tuple(gen.channel_names), [label for label, _ in cues],
                     np.array([t for _, t in cues]), f"simulator:{preset}",
                     [(label, t) for label, t in marks if label.startswith("drift/")])
    classes = sorted({label[4:] for label, _ in cues})
    events = {f"cue/{c}": c for c in classes}
    tmin, tmax = PARADIGM_WINDOWS["mi"] if paradigm == "mi" else SSVEP_WINDOW
    trials = cut_trials(rec, events, tmin, tmax, PARADIGM_BANDS[paradigm])
    train = _subset(trials, slice(0, n_train))
    test = _subset(trials, slice(n_train, None))
    freqs = list(params.get("freqs", []))
    # the stationary control keeps a nominal onset: its figures after it are comparable
    return SimulatedSession(train, test, onset_s, events, freqs)


def _subset(trials: Trials, part: slice) -> Trials:
    return Trials(trials.X[part], trials.y[part], trials.onsets[part], trials.sfreq,
                  trials.channel_names, trials.sources[part])


#: per paradigm, the decoder and co-adaptation the drift targets are held to: tangent-space
#: re-centring follows the signal, the adaptive LDA head (slow, half-life 200 trials) the
#: class boundary when channels die (bench/drift_recovery.py); for the continuous cursor
#: task RML, whose per-bin forgetting recovers from tuning drift sooner than SmoothBatch's
#: 20 s batches (decoders/simulated_cursor.py)
RECOMMENDED = {"mi": ("ts-lda", "ts-recenter+partial-fit@200"),
               "ssvep": ("ssvep-ensemble", "partial-fit"),
               "continuous": ("kalman", "rml")}


def recommended(paradigm: str) -> tuple[str, str]:
    """``(decoder, strategy)`` for ``bci evaluate --simulate`` and the drift benchmark."""
    if paradigm not in RECOMMENDED:
        raise ConfigError(f"no simulated drift evaluation for --paradigm {paradigm}",
                          hint=f"use one of: {', '.join(RECOMMENDED)}")
    return RECOMMENDED[paradigm]
