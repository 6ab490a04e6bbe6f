"""One pyzmq hop between two processes, with the runtime's own chunk codec.

The issue's target: one hop carrying 1024 channels x 30 samples of float32
(1 ms at 30 kHz) has p99 <= 0.6 ms.

A sender process builds chunks and sends them over a PUSH socket with
:func:`bci_runtime.ipc.encode` (the frames :class:`~bci_runtime.ipc.ZmqSender`
sends, same socket options); this process receives them on a PULL socket and
reads them with :func:`bci_runtime.ipc.decode` (the path
:class:`~bci_runtime.ipc.ZmqReceiver` takes). The send time
(``time.perf_counter``, CLOCK_MONOTONIC, the same clock in every process on
Linux) travels in the header's ``wall`` field, as the engine's latency origin
does; the hop is timed from just before ``encode`` in the sender to just after
``decode`` returns the chunk in the receiver. Messages are sent at a steady
pace (default 1000/s, one per millisecond of signal), the first ones are a
discarded warm-up, and the receiver checks that every message arrived, in order.

Run::

    .venv/bin/python bench/zmq_hop.py            # table: ipc:// and tcp://127.0.0.1
    .venv/bin/python bench/zmq_hop.py --json     # one JSON object
    .venv/bin/python bench/zmq_hop.py --transport ipc --messages 20000
    .venv/bin/python bench/zmq_hop.py --baseline # plus rows without the codec (pyzmq floor)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import struct
import sys
import tempfile
import time
from typing import Any

import numpy as np
import zmq

from bci_runtime.chunk import Chunk
from bci_runtime.ipc import KIND_SIGNAL, decode, encode
from bci_runtime.spec import StreamSpec

TARGET_P99_MS = 0.6
EDGE_ID = 0
_STOP = -1.0  # ``base`` of the message that ends a run
_RAW = struct.Struct("<dd")  # baseline rows: (index, send time), no codec


def _spec(channels: int, srate: float) -> StreamSpec:
    return StreamSpec(name="bench-hop", type="ECoG",
                      channel_names=tuple(f"ch{i + 1}" for i in range(channels)),
                      srate=srate, dtype="float32", source_id="bench-zmq-hop")


def _sender(address: str, channels: int, samples: int, srate: float, rate: float,
            count: int, raw: bool) -> None:
    """Sender process: ``count`` chunks at ``rate`` per second, then a stop message.

    ``raw``: send the same bytes without the codec (a pyzmq floor to compare with).
    """
    rng = np.random.default_rng(12345)
    spec = _spec(channels, srate)
    # a small pool of distinct buffers, so every message is not the same cached memory
    pool = [rng.standard_normal((samples, channels)).astype(np.float32) for _ in range(16)]
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)  # as ZmqSender
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(address)
    period = 1.0 / rate
    sample_period = 1.0 / srate
    start = time.perf_counter() + 0.05
    for i in range(count):
        due = start + i * period
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        # the message index is carried by the timestamps: sample i*samples onwards
        ts = (i * samples + np.arange(samples)) * sample_period
        chunk = Chunk(pool[i % len(pool)], ts, spec)
        t_send = time.perf_counter()
        if raw:
            sock.send_multipart([_RAW.pack(float(i), t_send), chunk.data, ts], copy=False)
            continue
        sock.send_multipart(encode(EDGE_ID, chunk, float(i), t_send, 0.0), copy=False)
    if raw:
        sock.send_multipart([_RAW.pack(_STOP, 0.0), b"", b""])
    else:
        sock.send_multipart(encode(EDGE_ID, Chunk(pool[0], np.zeros(samples), spec), _STOP,
                                   time.perf_counter(), 0.0), copy=False)
    sock.close()
    context.term()


def run_hop(transport: str, channels: int = 1024, samples: int = 30, srate: float = 30000.0,
            rate: float = 1000.0, messages: int = 5000, warmup: int = 500,
            raw: bool = False) -> dict[str, Any]:
    """Time ``messages`` hops (after ``warmup``) over ``transport`` ("ipc" or "tcp").

    With ``raw``, the same bytes go without :func:`encode`/:func:`decode`: the
    floor that pyzmq and the machine set, to tell the codec's cost from theirs.

    Returns
    -------
    dict
        Transport, sizes, message counts and latency percentiles in ms.
    """
    context = zmq.Context()
    sock = context.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)  # as ZmqReceiver
    sock.setsockopt(zmq.LINGER, 0)
    run_dir = None
    if transport == "ipc":
        run_dir = tempfile.mkdtemp(prefix="bci-bench-", dir="/tmp" if os.path.isdir("/tmp") else None)
        sock.bind(f"ipc://{run_dir}/hop.sock")
    else:
        sock.bind("tcp://127.0.0.1:*")
    address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    specs = {EDGE_ID: _spec(channels, srate)}
    total = warmup + messages
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_sender, name="zmq-hop-sender", daemon=True,
                       args=(address, channels, samples, srate, rate, total, raw))
    lat = np.empty(total, dtype=np.float64)
    received = 0
    out_of_order = 0
    bad_shape = 0
    try:
        proc.start()
        # a blocking recv like ZmqReceiver's; the timeout only bounds the wait if the
        # sender dies (data wake the receiver at once)
        sock.setsockopt(zmq.RCVTIMEO, 1000)
        deadline_s = 30.0 + total / rate * 2
        t_end = time.monotonic() + deadline_s
        while True:
            if time.monotonic() > t_end:
                raise RuntimeError(f"{transport}: only {received} of {total} messages arrived "
                                   f"within {deadline_s:.0f} s")
            try:
                frames = sock.recv_multipart(copy=False)
            except zmq.Again:
                if not proc.is_alive() and proc.exitcode != 0:
                    raise RuntimeError(f"sender died with exit code {proc.exitcode}") from None
                continue
            if raw:
                base, wall = _RAW.unpack(frames[0].bytes)
                t_recv = time.perf_counter()
                if base == _STOP:
                    break
                lat[received] = t_recv - wall
                out_of_order += int(base) != received
                received += 1
                continue
            _edge, kind, chunk, base, wall, _now = decode(frames, specs)
            t_recv = time.perf_counter()
            if base == _STOP:
                break
            if kind != KIND_SIGNAL or chunk is None or chunk.data.shape != (samples, channels):
                bad_shape += 1
                continue
            index = int(base)
            if index != received or int(round(chunk.timestamps[0] * srate)) != index * samples:
                out_of_order += 1
            lat[received] = t_recv - wall
            received += 1
        proc.join(10.0)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)
        sock.close()
        context.term()
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    timed = lat[warmup:received] * 1e3
    pct = (lambda q: round(float(np.percentile(timed, q)), 4)) if timed.size else (lambda q: None)
    return {
        "transport": transport,
        "codec": not raw,
        "address": address.split("://")[0] + "://" + (" raw" if raw else ""),
        "channels": channels,
        "samples": samples,
        "dtype": "float32",
        "bytes_per_message": channels * samples * 4 + samples * 8,
        "rate_hz": rate,
        "warmup": warmup,
        "messages": int(timed.size),
        "received": received,
        "lost": total - received,
        "out_of_order": out_of_order,
        "bad": bad_shape,
        "latency_ms": {"p50": pct(50), "p99": pct(99), "p999": pct(99.9),
                       "max": round(float(timed.max()), 4) if timed.size else None,
                       "mean": round(float(timed.mean()), 4) if timed.size else None},
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": bool(timed.size) and pct(99) <= TARGET_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Latency of one pyzmq hop between two processes, with bci_runtime's codec.")
    parser.add_argument("--transport", choices=["ipc", "tcp", "both"], default="both")
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=30, help="samples per chunk")
    parser.add_argument("--srate", type=float, default=30000.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--messages", type=int, default=5000, help="timed messages per transport")
    parser.add_argument("--warmup", type=int, default=500, help="discarded first messages")
    parser.add_argument("--baseline", action="store_true",
                        help="add rows with the same bytes sent without the codec (pyzmq floor)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    transports = ["ipc", "tcp"] if args.transport == "both" else [args.transport]
    rows = []
    for transport in transports:
        for raw in (False, True) if args.baseline else (False,):
            if not args.json:
                print(f"timing {args.warmup + args.messages} messages over {transport}"
                      f"{' (raw pyzmq)' if raw else ''} at {args.rate:g}/s ...",
                      file=sys.stderr, flush=True)
            rows.append(run_hop(transport, args.channels, args.samples, args.srate, args.rate,
                                args.messages, args.warmup, raw))
    report = {"benchmark": "zmq_hop", "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
              "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "results": rows}
    if args.json:
        print(json.dumps(report))
    else:
        r0 = rows[0]
        print(f"one hop, {r0['channels']} ch x {r0['samples']} samples float32 "
              f"({r0['bytes_per_message'] / 1024:.0f} KiB) at {r0['rate_hz']:g} msg/s; "
              f"target p99 <= {TARGET_P99_MS} ms")
        print(f"{'transport':<11}{'msgs':>7}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}"
              f"{'max ms':>10}  {'lost':>4}  {'target':>6}")
        for r in rows:
            lat = r["latency_ms"]
            print(f"{r['address']:<11}{r['messages']:>7}{lat['p50']:>10.3f}{lat['p99']:>10.3f}"
                  f"{lat['p999']:>10.3f}{lat['max']:>10.3f}  {r['lost'] + r['out_of_order']:>4}  "
                  f"{'met' if r['meets_target'] else 'MISSED':>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
