"""A basic motor-imagery EEG generator: class-dependent mu/beta power with cues.

Sensorimotor sources over the left (C3) and right (C4) hand areas, and the
midline (Cz) for feet, carry mu (8-13 Hz) and beta (15-30 Hz) rhythms whose
amplitude drops (event-related desynchronisation, ERD) while the contralateral
hand (or the feet) is imagined. Sources reach the electrodes through a smooth
spatial spread over standard 10-20 positions, on top of 1/f-like background
noise. The full simulator (head model, drift, simulated user) is
``bci_runtime.simulators`` issue 3; this one is enough to close the loop.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator
from scipy import signal as sps

from bci_runtime.chunk import AnyChunk, Chunk, EventChunk
from bci_runtime.node import NodeContext, NodeParams, Output, Source
from bci_runtime.spec import StreamSpec

# 10-20 sensorimotor layout: (name, x, y) on a unit disc (x: left-right, y: back-front)
_LAYOUT = [
    ("C3", -0.5, 0.0), ("C4", 0.5, 0.0), ("Cz", 0.0, 0.0), ("FC3", -0.45, 0.35),
    ("FC4", 0.45, 0.35), ("CP3", -0.45, -0.35), ("CP4", 0.45, -0.35), ("FCz", 0.0, 0.35),
    ("CPz", 0.0, -0.35), ("C5", -0.8, 0.0), ("C6", 0.8, 0.0), ("C1", -0.25, 0.0),
    ("C2", 0.25, 0.0), ("FC1", -0.22, 0.35), ("FC2", 0.22, 0.35), ("CP1", -0.22, -0.35),
    ("CP2", 0.22, -0.35), ("FC5", -0.75, 0.35), ("FC6", 0.75, 0.35), ("CP5", -0.75, -0.35),
    ("CP6", 0.75, -0.35), ("Pz", 0.0, -0.7), ("Fz", 0.0, 0.7), ("P3", -0.45, -0.7),
    ("P4", 0.45, -0.7), ("F3", -0.45, 0.7), ("F4", 0.45, 0.7), ("T7", -1.0, 0.0),
    ("T8", 1.0, 0.0), ("Oz", 0.0, -1.0), ("O1", -0.3, -0.95), ("O2", 0.3, -0.95),
]
# where each class's ERD happens: left hand -> right hemisphere, and so on
_CLASS_SOURCE = {"left": 1, "right": 0, "feet": 2, "tongue": None}
_SOURCES = [(-0.5, 0.0), (0.5, 0.0), (0.0, 0.0)]  # C3, C4, Cz areas
REST = "rest"


class SimulatedEegParams(NodeParams):
    n_channels: int = Field(8, ge=3, le=len(_LAYOUT), description="number of electrodes")
    srate: float = Field(250.0, ge=100, le=2000, description="sampling rate (Hz)")
    chunk_size: int = Field(10, ge=1, le=1000, description="samples per chunk")
    classes: list[str] = Field(["left", "right"], description="imagined classes, 2-4 of "
                               "left, right, feet, tongue")
    imagery_s: float = Field(3.0, gt=0, description="imagery period after each cue (s)")
    rest_s: float = Field(1.5, gt=0, description="rest between trials (s)")
    erd: float = Field(0.35, ge=0, le=0.9, description="fractional drop of mu/beta amplitude")
    rhythm_uv: float = Field(8.0, gt=0, description="mu rhythm amplitude at its source (uV)")
    noise_uv: float = Field(4.0, ge=0, description="background noise amplitude (uV)")
    dtype: str = Field("float64", pattern="^(float32|float64)$", description="sample type")

    @model_validator(mode="after")
    def _classes(self) -> SimulatedEegParams:
        unknown = [c for c in self.classes if c not in _CLASS_SOURCE]
        if unknown or not 2 <= len(self.classes) <= 4 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be 2-4 distinct names among {list(_CLASS_SOURCE)}, "
                             f"got {self.classes}")
        return self


class SimulatedEeg(Source):
    """Motor-imagery EEG with cues, in volts; deterministic for a given seed.

    Outputs ``signal`` (n_samples, n_channels) and ``markers``: ``cue/<class>``
    at imagery onset and ``end`` when imagery stops, stamped at the exact sample.
    """

    type_name = "simulated_eeg"
    Params = SimulatedEegParams
    signal = Output("signal", doc="EEG in volts, (n_samples, n_channels)")
    markers = Output("events", doc="cue/<class> at imagery onset, 'end' at its end")

    def configure(self, inputs: object) -> dict[str, StreamSpec]:
        p = self.params
        names = tuple(name for name, _, _ in _LAYOUT[: p.n_channels])
        sig = StreamSpec(name=f"{self.name}-eeg", type="EEG", channel_names=names,
                         srate=p.srate, dtype=p.dtype,  # type: ignore[arg-type]
                         channel_types=("eeg",) * len(names), units=("V",) * len(names),
                         source_id=f"sim-{self.name}")
        return {"signal": sig, "markers": StreamSpec.events(f"{self.name}-markers",
                                                            f"sim-{self.name}-markers")}

    def open(self, context: NodeContext) -> None:
        super().open(context)
        p = self.params
        self._rng = context.rng("signal")
        self._class_rng = context.rng("classes")
        pos = np.array([(x, y) for _, x, y in _LAYOUT[: p.n_channels]])
        src = np.array(_SOURCES)
        dist2 = ((pos[:, None, :] - src[None, :, :]) ** 2).sum(-1)
        self._mixing = np.exp(-dist2 / (2 * 0.18**2))  # (n_channels, n_sources)
        fs = p.srate
        self._mu_sos = sps.butter(2, [9, 12], btype="bandpass", fs=fs, output="sos")
        self._beta_sos = sps.butter(2, [18, 24], btype="bandpass", fs=fs, output="sos")
        self._pink_sos = sps.butter(1, 2.0, btype="highpass", fs=fs, output="sos")
        self._mu_zi = np.zeros((self._mu_sos.shape[0], 2, 3))
        self._beta_zi = np.zeros((self._beta_sos.shape[0], 2, 3))
        self._pink_zi = np.zeros((1, 2, p.n_channels))
        self._brown = np.zeros(p.n_channels)
        # band-passed unit noise has std ~ sqrt(bandwidth / nyquist); rescale to unit std
        self._mu_gain = 1 / np.sqrt(3.0 / (fs / 2))
        self._beta_gain = 1 / np.sqrt(6.0 / (fs / 2))
        # the stream starts when the run asks for its first chunk, not at open: worker
        # start-up must not turn into a backlog burst
        self._t0: float | None = None
        self._next = 0  # index of the next sample
        self._trial_len = p.imagery_s + p.rest_s
        # class index of every trial so far, one byte each (ground truth for any past time)
        self._sequence = bytearray()
        self._spec = self.output_specs["signal"]
        self._marker_spec = self.output_specs["markers"]
        self._dtype = np.dtype(p.dtype)
        # source whose rhythm drops for each class; tongue has no sensorimotor-hand ERD,
        # so it maps to a dummy column that is discarded
        self._erd_source = np.array([
            s if (s := _CLASS_SOURCE[c]) is not None else 3 for c in p.classes])

    def _start_time(self) -> float:
        if self._t0 is None:
            self._t0 = self.context.clock.now()  # type: ignore[union-attr]
        return self._t0

    def _class_of_trial(self, k: int) -> int:
        """Class index of trial ``k`` (balanced blocks in random order)."""
        while len(self._sequence) <= k:
            block = np.arange(len(self.params.classes), dtype=np.uint8)
            self._class_rng.shuffle(block)
            self._sequence.extend(block.tobytes())
        return self._sequence[k]

    def class_indices(self, times: np.ndarray) -> np.ndarray:
        """Index into ``classes`` of the imagined class at each time, -1 at rest.

        Parameters
        ----------
        times : ndarray, shape (n_times,)

        Returns
        -------
        ndarray of int, shape (n_times,)
        """
        p = self.params
        rel = times - self._start_time() - p.rest_s
        k = np.floor(rel / self._trial_len).astype(int)
        imagining = (rel >= 0) & (rel - k * self._trial_len < p.imagery_s)
        out = np.full(times.shape, -1)
        for trial in np.unique(k[imagining]).tolist():  # one or two trials per chunk
            out[imagining & (k == trial)] = self._class_of_trial(trial)
        return out

    def true_labels(self, times: np.ndarray) -> list[str]:
        """True state (class name or ``rest``) at each time, shape (n_times,)."""
        classes = self.params.classes
        return [classes[i] if i >= 0 else REST for i in self.class_indices(times).tolist()]

    def next_due(self) -> float | None:
        last = self._next + self.params.chunk_size - 1
        return self._start_time() + last / self.params.srate

    def read(self) -> dict[str, AnyChunk]:
        p = self.params
        n = p.chunk_size
        idx = np.arange(self._next, self._next + n)
        times = self._start_time() + idx / p.srate
        self._next += n
        # class-dependent amplitude of each source, per sample
        cls = self.class_indices(times)
        gain = np.ones((n, 4))
        imagining = cls >= 0
        if imagining.any():
            gain[imagining, self._erd_source[cls[imagining]]] = 1.0 - p.erd
        white = self._rng.standard_normal((n, 3))
        mu, self._mu_zi = sps.sosfilt(self._mu_sos, white, axis=0, zi=self._mu_zi)
        beta, self._beta_zi = sps.sosfilt(self._beta_sos, self._rng.standard_normal((n, 3)),
                                          axis=0, zi=self._beta_zi)
        rhythm = (mu * self._mu_gain + 0.5 * beta * self._beta_gain) * gain[:, :3] * p.rhythm_uv
        # 1/f-like background: integrated white noise, high-passed to stay bounded
        steps = self._rng.standard_normal((n, p.n_channels)) * 0.2
        brown = self._brown + np.cumsum(steps, axis=0)
        self._brown = brown[-1]
        pink, self._pink_zi = sps.sosfilt(self._pink_sos, brown, axis=0, zi=self._pink_zi)
        noise = (pink + self._rng.standard_normal((n, p.n_channels))) * p.noise_uv
        eeg = ((rhythm @ self._mixing.T + noise) * 1e-6).astype(self._dtype, copy=False)
        out: dict[str, AnyChunk] = {"signal": Chunk(eeg, times, self._spec)}
        events = self._events_between(times[0] - 0.5 / p.srate, times[-1])
        if events:
            markers, stamps = zip(*events)
            out["markers"] = EventChunk(tuple(markers), np.array(stamps), self._marker_spec)
        return out

    def _events_between(self, t_from: float, t_to: float) -> list[tuple[str, float]]:
        """Cue and end markers with times in (t_from, t_to], snapped to sample times."""
        p = self.params
        events = []
        first = self._t0 + p.rest_s
        k0 = max(0, int(np.floor((t_from - first) / self._trial_len)))
        k = k0
        while True:
            onset = first + k * self._trial_len
            if onset > t_to:
                break
            end = onset + p.imagery_s
            cue = f"cue/{p.classes[self._class_of_trial(k)]}"
            for marker, t in ((cue, onset), ("end", end)):
                snapped = self._t0 + np.ceil((t - self._t0) * p.srate - 1e-9) / p.srate
                if t_from < snapped <= t_to:
                    events.append((marker, float(snapped)))
            k += 1
        return sorted(events, key=lambda e: e[1])
