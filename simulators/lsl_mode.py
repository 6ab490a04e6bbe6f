"""The simulator's LSL mode: a simulated amplifier on the network (``bci simulate``).

:func:`run_simulation` builds a generator with
:func:`~bci_runtime.simulators.paradigms.make_generator`
(so a seed gives the same data as the in-process source nodes) and streams it
like a real device would:

* a **signal** outlet (float32, the generator's nominal rate and stream type,
  ``desc/channels/channel`` with ``label``, ``type``, ``unit``, plus
  ``desc/acquisition/manufacturer`` = ``bci-runtime simulator`` and
  ``desc/simulator`` with ``paradigm``, ``scenario``, ``seed``);
* a **marker** outlet (string, irregular rate, source id ``<source_id>-markers``)
  carrying every :class:`~bci_runtime.simulators.base.Block` marker (task cues,
  trial boundaries, artifacts, drift events), stamped at its sample's timestamp;
* a **truth** outlet (float32, type ``GroundTruth``, source id
  ``<source_id>-truth``, channels named by ``truth_names``) when the generator
  has continuous ground truth.

Pacing
------
Sample ``k`` is stamped ``t0 + k / srate`` exactly, with ``t0 = local_clock()``
when streaming starts. Each chunk is generated as soon as the previous one is
pushed (ahead of its deadline), then pushed, with one explicit timestamp per
sample, when its last sample is due: the deadline is recomputed from ``t0`` and
the sample index every time (``t0 + (start + n - 1) / srate``), so sleep errors
never accumulate and a one-hour run ends on the grid it started on. The wait
sleeps until ``spin_s`` before the deadline and then spins on ``local_clock()``.
While there is time before the next push, up to ``max_ahead_s`` (50 ms) of
signal is generated in advance, never starting a chunk that the slowest recent
generation says might not finish before the push is due.
A chunk that is late (generation or the OS took too long) is pushed at once with
its grid timestamps, never skipped; the pacing error (push time - due time) of
every chunk is kept and summarised (p50/p99/p99.9/max, and the chunks later than
``late_threshold_s``).

Transport faults
----------------
When the drift scenario has a ``transport`` component, its effects at the
chunk's time apply to the **signal** outlet only (markers and truth are ground
truth, stamped on the exact grid, as the in-process source nodes do):
``drop_prob`` loses the chunk silently (no marker; counted in the summary),
``jitter_s`` delays the push and the chunk's timestamps by ``|N(0, jitter_s)|``
(late, never early), ``clock_offset_s`` is added to the pushed timestamps. The
fault draws come from their own random stream, so they never change the data.

Closing the loop
----------------
With ``feedback_stream``, a background thread resolves an LSL stream by name
(never blocking the pacing loop); once it is connected, the loop pulls it
without waiting after each push and shows every sample to the simulated user
through ``generator.feedback(t, value)``, with ``t`` the time the sample arrived
(s since ``t0``, so the loop's real latency counts). ``value`` is the class name
of the largest channel when the stream's channel labels are the generator's
``classes``, the string itself for a string stream, else the numeric vector.

Recording
---------
With ``record``, an :class:`~bci_runtime.xdf_writer.XdfWriter` file gets the
signal as pushed (dropped chunks are missing, as a LabRecorder on the network
would see), the markers and the truth. Writes go through a background thread,
so file-system stalls never delay a push.
"""

from __future__ import annotations

import array
import gc
import logging
import math
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.errors import ConfigError, RunError
from bci_runtime.lsl import import_pylsl, linger_for_consumers
from bci_runtime.realtime import realtime_priority
from bci_runtime.simulators.base import Block, Generator
from bci_runtime.simulators.drift import hash_kind
from bci_runtime.simulators.lsl_io import FeedbackReader, StreamRecorder
from bci_runtime.simulators.simulate_options import build_generator, default_source_id
from bci_runtime.simulators.stream_summary import LateChunk, SimulationSummary, summarize_errors

log = logging.getLogger(__name__)

MANUFACTURER = "bci-runtime simulator"
DEFAULT_CHUNK_S = 0.01  # default chunk: 10 ms of signal
MAX_LATE_LISTED = 20  # late chunks listed individually in the summary


# -- the streaming --------------------------------------------------------------------------
def _desc_xml(paradigm: str, scenario: str, seed: int, model: str) -> str:
    root = ET.Element("root")
    acq = ET.SubElement(root, "acquisition")
    ET.SubElement(acq, "manufacturer").text = MANUFACTURER
    ET.SubElement(acq, "model").text = model
    sim = ET.SubElement(root, "simulator")
    for key, value in (("paradigm", paradigm), ("scenario", scenario), ("seed", str(seed))):
        ET.SubElement(sim, key).text = value
    return "".join(ET.tostring(child, encoding="unicode") for child in root)


class LslSimulator:
    """A simulated amplifier: a generator streamed over LSL in real time.

    Build it, then :meth:`run` (once). :func:`run_simulation` does both.

    Parameters
    ----------
    generator : Generator
        What to stream (see :func:`build_generator`).
    paradigm, scenario : str
        Written into ``desc/simulator`` (and the summary).
    seed : int
    duration : float, optional
        Seconds of signal; None streams until :meth:`request_stop` (or ``stop``).
    chunk_size : int, optional
        Samples per push (default: 10 ms of signal, at least 1).
    name : str, optional
        LSL stream name (default ``bci-sim-<paradigm>``).
    source_id : str, optional
        Default :func:`default_source_id` (stable across runs).
    record : path, optional
        XDF file to write; must not exist.
    feedback_stream : str, optional
        Name of an LSL stream whose samples are shown to the simulated user.
    stop : threading.Event, optional
        Set it to stop (checked at least every 50 ms).
    wait_for_consumers_s : float
        Before the clock starts, wait up to this long for an inlet on each outlet
        named in ``wait_streams`` (so a receiver gets sample 0). 0: start at once.
    wait_streams : tuple of str
        Among ``signal``, ``markers``, ``truth``.
    late_threshold_s : float
        A chunk pushed later than this after its due time counts as late.
    spin_s : float
        The wait sleeps until this long before a deadline, then spins.
    realtime : bool
        Run the pacing loop under ``SCHED_FIFO`` when the system allows it
        (fewer late pushes on a busy machine); a warning otherwise.
    max_ahead_s : float
        Signal generated at most this far ahead of the chunk being pushed, when
        there is time (so an occasional slow chunk does not delay a push).
        While ``max_ahead_s`` plus one chunk stays below the simulated user's
        visual delay (0.2 s by default), feedback still reaches exactly the
        samples it would reach without generating ahead.
    linger_s : float
        At the end, keep the outlets open this long while inlets are connected,
        so that the last chunks reach them.
    on_start : callable, optional
        Called with the summary (``t0`` set) once streaming starts.
    """

    def __init__(self, generator: Generator, *, paradigm: str, scenario: str = "stationary",
                 seed: int = 0, duration: float | None = None, chunk_size: int | None = None,
                 name: str | None = None, source_id: str | None = None,
                 record: str | os.PathLike[str] | None = None,
                 feedback_stream: str | None = None, stop: threading.Event | None = None,
                 wait_for_consumers_s: float = 0.0, wait_streams: tuple[str, ...] = ("signal",),
                 late_threshold_s: float = 1e-3, spin_s: float = 3e-4, realtime: bool = False,
                 max_ahead_s: float = 0.05, linger_s: float = 0.5,
                 on_start: Callable[[SimulationSummary], None] | None = None) -> None:
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise ConfigError(f"--duration must be a finite number of seconds above 0, "
                              f"got {duration}", hint="e.g. --duration 60, or leave it out to "
                              "stream until Ctrl-C")
        if chunk_size is not None and not 1 <= chunk_size <= 100_000:
            raise ConfigError(f"--chunk-size must be within [1, 100000] samples, got {chunk_size}",
                              hint="e.g. --chunk-size 20")
        unknown = set(wait_streams) - {"signal", "markers", "truth"}
        if unknown:
            raise ConfigError(f"wait_streams: unknown stream(s) {sorted(unknown)}",
                              hint="use signal, markers, truth")
        self.gen = generator
        srate = float(generator.srate)
        self.chunk_size = int(chunk_size or max(1, round(srate * DEFAULT_CHUNK_S)))
        self.duration = duration
        self.n_total = None if duration is None else max(1, round(duration * srate))
        self.record_path = Path(record) if record is not None else None
        if self.record_path is not None and self.record_path.exists():
            raise ConfigError(f"--record: '{self.record_path}' already exists; refusing to "
                              "overwrite a recording", hint="choose a new file name")
        self.feedback_name = feedback_stream
        self.stop = stop or threading.Event()
        self.wait_for_consumers_s = float(wait_for_consumers_s)
        self.wait_streams = tuple(wait_streams)
        self.late_threshold_s = float(late_threshold_s)
        self.spin_s = float(spin_s)
        self.realtime = bool(realtime)
        self.max_ahead_s = max(0.0, float(max_ahead_s))
        self.linger_s = max(0.0, float(linger_s))
        self.on_start = on_start
        name = name or f"bci-sim-{paradigm}"
        self.summary = SimulationSummary(
            name=name, source_id=source_id or default_source_id(paradigm, seed),
            paradigm=paradigm, scenario=scenario, seed=seed, stream_type=generator.stream_type,
            channels=generator.n_channels, srate=srate, chunk_size=self.chunk_size,
            truth_names=list(generator.truth_names), late_threshold_ms=late_threshold_s * 1e3,
            feedback_stream=feedback_stream,
            record=str(self.record_path) if self.record_path else None)
        self._transport_rng = np.random.default_rng(
            np.random.SeedSequence([seed, hash_kind("lsl-transport")]))
        self._ran = False
        self._rec: StreamRecorder | None = None
        self._outlet = self._marker_outlet = self._truth_outlet = None

    def request_stop(self) -> None:
        """Ask the loop to stop after the current chunk (thread-safe)."""
        self.stop.set()

    # -- outlets ---------------------------------------------------------------------------
    def _signal_info(self, pylsl: Any) -> Any:
        s, g = self.summary, self.gen
        info = pylsl.StreamInfo(s.name, g.stream_type, g.n_channels, g.srate, "float32",
                                s.source_id)
        desc = info.desc()
        channels = desc.append_child("channels")
        for label, ctype, unit in zip(g.channel_names, g.channel_types, g.units):
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("type", ctype)
            ch.append_child_value("unit", unit)
        acq = desc.append_child("acquisition")
        acq.append_child_value("manufacturer", MANUFACTURER)
        acq.append_child_value("model", type(g).__name__)
        sim = desc.append_child("simulator")
        sim.append_child_value("paradigm", s.paradigm)
        sim.append_child_value("scenario", s.scenario)
        sim.append_child_value("seed", str(s.seed))
        sim.append_child_value("chunk_size", str(self.chunk_size))
        return info

    def _open(self, pylsl: Any) -> None:
        s, g = self.summary, self.gen
        self._outlet = pylsl.StreamOutlet(self._signal_info(pylsl), chunk_size=0,
                                          max_buffered=360)
        minfo = pylsl.StreamInfo(f"{s.name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE,
                                 "string", f"{s.source_id}-markers")
        minfo.desc().append_child("acquisition").append_child_value("manufacturer", MANUFACTURER)
        self._marker_outlet = pylsl.StreamOutlet(minfo)
        self._truth_outlet = None
        if g.truth_names:
            tinfo = pylsl.StreamInfo(f"{s.name}-truth", "GroundTruth", len(g.truth_names),
                                     g.srate, "float32", f"{s.source_id}-truth")
            chans = tinfo.desc().append_child("channels")
            for label in g.truth_names:
                ch = chans.append_child("channel")
                ch.append_child_value("label", label)
                ch.append_child_value("type", "truth")
                ch.append_child_value("unit", "a.u.")
            self._truth_outlet = pylsl.StreamOutlet(tinfo, chunk_size=0, max_buffered=360)

    def _open_recording(self) -> None:
        self._rec = None
        if self.record_path is None:
            return
        s, g = self.summary, self.gen
        rec = StreamRecorder(self.record_path)
        try:
            desc = _desc_xml(s.paradigm, s.scenario, s.seed, type(g).__name__)
            self._rec_sig = rec.writer.add_stream(
                name=s.name, type=g.stream_type, channel_count=g.n_channels, srate=g.srate,
                channel_format="float32", source_id=s.source_id,
                channel_labels=list(g.channel_names), channel_types=list(g.channel_types),
                channel_units=list(g.units), desc_xml=desc)
            self._rec_mark = rec.writer.add_stream(
                name=f"{s.name}-markers", type="Markers", channel_count=1, srate=0.0,
                channel_format="string", source_id=f"{s.source_id}-markers")
            self._rec_truth = None
            if g.truth_names:
                self._rec_truth = rec.writer.add_stream(
                    name=f"{s.name}-truth", type="GroundTruth", channel_count=len(g.truth_names),
                    srate=g.srate, channel_format="float32", source_id=f"{s.source_id}-truth",
                    channel_labels=list(g.truth_names), channel_types="truth",
                    channel_units="a.u.")
            rec.mark_clock(import_pylsl().local_clock())
        except BaseException:
            rec.close()
            raise
        rec.start()
        self._rec = rec

    def _wait_consumers(self) -> None:
        outlets = {"signal": self._outlet, "markers": self._marker_outlet,
                   "truth": self._truth_outlet}
        deadline = time.monotonic() + self.wait_for_consumers_s
        for key in self.wait_streams:
            outlet = outlets[key]
            while outlet is not None and not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or outlet.wait_for_consumers(min(0.2, left)):
                    break

    def _linger(self) -> None:
        """Keep the outlets a moment while inlets are connected: liblsl drops what is in
        flight when an outlet is destroyed."""
        linger_for_consumers((self._outlet, self._marker_outlet, self._truth_outlet),
                             self.linger_s)

    # -- the pacing loop -----------------------------------------------------------------
    def _wait_until(self, deadline: float, clock: Callable[[], float]) -> float:
        """Sleep, then spin, until ``deadline`` (LSL time); returns the time it returned."""
        spin = self.spin_s
        while True:
            now = clock()
            left = deadline - now
            if left <= 0 or self.stop.is_set():
                return now
            if left > spin:
                time.sleep(min(left - spin, 0.05))

    def run(self) -> SimulationSummary:
        """Stream until the duration is reached or a stop is requested.

        Raises
        ------
        ConfigError
            The recording file exists or cannot be created.
        RunError
            Writing the recording failed.
        """
        if self._ran:
            raise RunError("LslSimulator.run() was already called",
                           hint="build a new LslSimulator for another run")
        self._ran = True
        pylsl = import_pylsl()
        self._open_recording()
        feedback: FeedbackReader | None = None
        try:
            self._open(pylsl)
            if self.feedback_name:
                feedback = FeedbackReader(pylsl, self.feedback_name,
                                           list(getattr(self.gen, "classes", []) or []))
            if self.wait_for_consumers_s > 0:
                self._wait_consumers()
            # Everything built so far (MNE, scipy, the head model) lives for the whole run:
            # freezing it keeps the periodic full garbage collections from scanning it,
            # which otherwise stall the pacing loop by a few ms every few seconds.
            gc.freeze()
            try:
                with realtime_priority(self.realtime) as granted:
                    self.summary.realtime = granted
                    self._loop(pylsl, feedback)
            finally:
                gc.unfreeze()
        finally:
            if feedback is not None:
                feedback.close()
            self._linger()
            self._outlet = self._marker_outlet = self._truth_outlet = None
            if self._rec is not None:
                self._rec.close(pylsl.local_clock())
        if self._rec is not None and self._rec.error is not None:
            raise RunError(f"recording to {self.record_path} failed: {self._rec.error}",
                           hint="check the disk space and the folder's permissions") \
                from self._rec.error
        return self.summary

    def _loop(self, pylsl: Any, feedback: FeedbackReader | None) -> None:
        s, gen, clock = self.summary, self.gen, pylsl.local_clock
        srate, chunk, n_total = float(gen.srate), self.chunk_size, self.n_total
        drift = gen.drift if gen.drift is not None and gen.drift.transport else None
        errors = array.array("d")
        gen_times = array.array("d")
        rec = self._rec
        perf = time.perf_counter

        spent = [0.0]  # generation time since the last push (s)
        ahead: deque[Block] = deque()  # generated, not yet pushed
        recent: deque[float] = deque(maxlen=256)  # recent generation times (s)
        max_ahead = max(1, int(self.max_ahead_s * srate))  # samples generated in advance

        def generate() -> bool:
            """Generate one more chunk into ``ahead``; False at the end of the duration."""
            done = gen.samples_generated
            n = chunk if n_total is None else min(chunk, n_total - done)
            if n <= 0:
                return False
            t = perf()
            ahead.append(gen.next_block(n))
            took = perf() - t
            gen_times.append(took)
            recent.append(took)
            spent[0] += took
            return True

        generate()  # the first chunk is ready before the clock starts
        t0 = clock()
        s.t0 = t0
        if self.on_start is not None:
            self.on_start(s)
        k = 0
        while ahead or generate():
            block = ahead[0]
            start, n = block.start, block.n_samples
            grid = t0 + np.arange(start, start + n, dtype=np.float64) / srate
            drop, shift, delay = False, 0.0, 0.0
            if drift is not None:
                e = drift.effects_at(start / srate)
                drop = bool(e.drop_prob) and self._transport_rng.random() < e.drop_prob
                if e.jitter_s:
                    delay = abs(float(self._transport_rng.normal(0.0, e.jitter_s)))  # late only
                shift = e.clock_offset_s + delay
            target = float(grid[-1]) + delay  # when the chunk's last sample is due
            # Generate ahead while there is time: never start a chunk that might not finish
            # before this push is due (budget: the slowest recent generation, plus margin).
            budget = max(recent) * 1.25 + 5e-4
            while (ahead[-1].start + ahead[-1].n_samples - start - n < max_ahead
                   and target - clock() > budget and generate()):
                pass
            now = self._wait_until(target, clock)
            if self.stop.is_set():
                s.stop_reason = "stopped"
                break
            ahead.popleft()
            errors.append(now - target)
            if drop:
                s.chunks_dropped += 1
                s.samples_dropped += n
            else:
                data = block.data.astype(np.float32)
                stamps = grid + shift if shift else grid
                self._outlet.push_chunk(data, stamps.tolist(), pushthrough=True)
                s.chunks_pushed += 1
                s.samples_pushed += n
                if rec is not None:
                    rec.put(self._rec_sig, data, stamps)
            if block.markers:
                for label, idx in block.markers:
                    ts = t0 + idx / srate
                    self._marker_outlet.push_sample([label], ts)
                    if rec is not None:
                        rec.put(self._rec_mark, [[label]], np.array([ts]))
                s.markers_sent += len(block.markers)
            if block.truth is not None and self._truth_outlet is not None:
                truth = block.truth.astype(np.float32)
                self._truth_outlet.push_chunk(truth, grid.tolist(), pushthrough=True)
                if rec is not None:
                    rec.put(self._rec_truth, truth, grid)
            if now - target > self.late_threshold_s:
                s.late_chunks += 1
                if len(s.late) < MAX_LATE_LISTED:
                    s.late.append(LateChunk(k, start, (now - target) * 1e3, spent[0] * 1e3))
            spent[0] = 0.0
            if feedback is not None:
                for t_arrived, value in feedback.pull():
                    gen.feedback(t_arrived - t0, value)
            k += 1
            if self.stop.is_set():
                s.stop_reason = "stopped"
                break
        s.wall_s = clock() - t0
        s.samples_generated = gen.samples_generated
        s.duration_s = (s.samples_pushed + s.samples_dropped) / srate
        s.pacing_errors_s = np.frombuffer(errors, dtype=np.float64).copy()
        s.pacing_ms = summarize_errors(s.pacing_errors_s)
        g = summarize_errors(np.frombuffer(gen_times, dtype=np.float64))
        s.generate_ms = {key: g[key] for key in ("p50", "p99", "max")}
        if feedback is not None:
            s.feedback_received = feedback.received
            s.feedback_connected = feedback.inlet is not None or feedback.received > 0
        user = getattr(gen, "user", None)
        s.feedback_seen = getattr(user, "feedback_seen", None)


def run_simulation(paradigm: str = "mi", *, scenario: str = "stationary",
                   channels: int | None = None, srate: float | None = None,
                   duration: float | None = None, seed: int = 0, chunk_size: int | None = None,
                   name: str | None = None, source_id: str | None = None,
                   record: str | os.PathLike[str] | None = None,
                   feedback_stream: str | None = None, rho: float | None = None,
                   onset_s: float | None = None, ramp_s: float | None = None,
                   params: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
                   generator: Generator | None = None, stop: threading.Event | None = None,
                   wait_for_consumers_s: float = 0.0,
                   wait_streams: tuple[str, ...] = ("signal",), late_threshold_s: float = 1e-3,
                   spin_s: float = 3e-4, max_ahead_s: float = 0.05, linger_s: float = 0.5,
                   realtime: bool = False,
                   on_start: Callable[[SimulationSummary], None] | None = None
                   ) -> SimulationSummary:
    """Stream a simulated paradigm over LSL in real time; what ``bci simulate`` runs.

    Parameters
    ----------
    paradigm : {"mi", "ssvep", "ecog", "population"}
    scenario : str
        Drift preset, one of :data:`~bci_runtime.simulators.drift.PRESETS`.
    channels, srate : optional
        Override the paradigm's channel count and rate.
    duration : float, optional
        Seconds of signal; None: until ``stop`` is set.
    seed : int
        Same seed, same data (and the default ``source_id``).
    chunk_size : int, optional
        Samples per push; default 10 ms of signal.
    name, source_id : str, optional
        Of the signal stream (defaults ``bci-sim-<paradigm>``, ``bci-sim-<paradigm>-seed<seed>``).
    record : path, optional
        XDF file to write (never overwritten).
    feedback_stream : str, optional
        LSL stream name of the decoder output to show the simulated user.
    rho, onset_s, ramp_s : float, optional
        Drift preset parameters.
    params, user : dict, optional
        Further paradigm and simulated-user parameters.
    generator : Generator, optional
        Stream this generator instead of building one (``paradigm``, ``scenario``
        and ``seed`` then only label the stream).
    stop, wait_for_consumers_s, wait_streams, late_threshold_s, spin_s, max_ahead_s, linger_s, \
realtime
        See :class:`LslSimulator`.

    Returns
    -------
    SimulationSummary

    Raises
    ------
    ConfigError
        Invalid paradigm, scenario, parameter, or an existing ``record`` file
        (nothing was streamed).
    RunError
        The recording failed.
    """
    if generator is None:
        generator = build_generator(paradigm, scenario=scenario, channels=channels, srate=srate,
                                    seed=seed, rho=rho, onset_s=onset_s, ramp_s=ramp_s,
                                    params=params, user=user)
    sim = LslSimulator(generator, paradigm=paradigm, scenario=scenario, seed=seed,
                       duration=duration, chunk_size=chunk_size, name=name, source_id=source_id,
                       record=record, feedback_stream=feedback_stream, stop=stop,
                       wait_for_consumers_s=wait_for_consumers_s, wait_streams=wait_streams,
                       late_threshold_s=late_threshold_s, spin_s=spin_s,
                       max_ahead_s=max_ahead_s, linger_s=linger_s, realtime=realtime,
                       on_start=on_start)
    return sim.run()
