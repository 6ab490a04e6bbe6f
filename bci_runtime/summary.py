"""The run summary: one JSON-ready mapping and its console rendering."""

from __future__ import annotations

from typing import Any

import numpy as np

from bci_runtime.runner import RunResult
from bci_runtime.telemetry import summarize_ms


def build_summary(result: RunResult, pipeline: str, session_dir: str | None) -> dict[str, Any]:
    """Figures of a run, as printed by ``bci run --json``.

    Decisions and accuracy come from the first node summary that reports them
    (the feedback sink in shipped pipelines).
    """
    decisions, accuracy, extra = 0, None, {}
    for name, summary in result.summaries.items():
        if "decisions" in summary and not extra:
            decisions = int(summary["decisions"])
            accuracy = summary.get("accuracy")
            extra = {k: summary[k] for k in ("scored", "trials_scored", "trial_accuracy", "chance")
                     if k in summary}
    latency = result.end_to_end.summary_ms()
    nodes = {}
    for name, tel in result.telemetry.items():
        proc = summarize_ms(tel.processing.values(), tel.processing.count, tel.processing.max)
        nodes[name] = {
            "calls": tel.calls,
            "processing_us": {k: (round(v * 1e3, 1) if isinstance(v, float) else v)
                              for k, v in proc.items() if k != "count"},
            "latency_ms": {k: v for k, v in tel.latency.summary_ms().items() if k != "count"},
        }
    training = {name: s["training"] for name, s in result.summaries.items() if s.get("training")}
    safety = safety_block([s["safety"] for s in result.summaries.values()
                           if isinstance(s.get("safety"), dict) and s["safety"]])
    return {
        "pipeline": pipeline,
        "status": result.status,
        "reason": result.reason,
        "samples": result.samples,
        "decisions": decisions,
        "accuracy": None if accuracy is None else round(float(accuracy), 4),
        **extra,
        "latency_ms": {k: latency[k] for k in ("p50", "p99", "p999", "max")},
        "outputs_timed": latency["count"],
        "bad_chunks": result.bad_chunks,
        "training": training,
        "safety": safety,
        "nodes": nodes,
        "processes": result.processes,
        "wall_s": round(result.wall_s, 3),
        "session_dir": session_dir,
    }


def safety_block(actuators: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's ``safety`` figures, pooled over its actuators (None without one).

    ``safe_state_ms`` is the delay from each cause (a watchdog deadline, a NaN
    chunk, a failure, a lost heartbeat, an emergency stop) to the output being off.
    """
    if not actuators:
        return None
    delays = np.array([ms for a in actuators for ms in a.get("safe_state_ms", [])], float)
    out: dict[str, Any] = {key: int(sum(a.get(key, 0) for a in actuators))
                           for key in ("stalls", "requests", "clamped", "rejected",
                                       "emitted_outside_limits")}
    out["safe_state_ms"] = {
        "p99": round(float(np.percentile(delays, 99)), 4) if len(delays) else None,
        "max": round(float(delays.max()), 4) if len(delays) else None}
    out["safe_states"] = int(len(delays))
    return out


def render_summary(summary: dict[str, Any]) -> None:
    """Print a summary for an operator (rich table on stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    lat = summary["latency_ms"]
    acc = summary["accuracy"]
    status_style = {"completed": "green", "stopped": "yellow"}.get(summary["status"], "red")
    console.print(f"[bold]{summary['pipeline']}[/bold]: [{status_style}]{summary['status']}"
                  f"[/{status_style}] ({summary['reason']}) in {summary['wall_s']:.1f} s")
    console.print(f"  samples {summary['samples']:,}   decisions {summary['decisions']:,}   "
                  + (f"accuracy {acc:.3f}" if acc is not None else "accuracy n/a")
                  + (f" (chance {summary['chance']:.2f})" if "chance" in summary else "")
                  + (f"   trial accuracy {summary['trial_accuracy']:.3f}"
                     if summary.get("trial_accuracy") is not None else ""))
    for name, t in summary["training"].items():
        if "versions" in t:  # a co-adaptive decoder with a model lifecycle
            console.print(f"  decoder '{name}': {t['versions']} model versions, serving "
                          f"v{t['serving_version']}; swaps {t['swaps']}, rollbacks "
                          f"{t['rollbacks']}, drift detections {t['drift_detections']}")
            continue
        cv = t.get("cv_accuracy")
        console.print(f"  decoder '{name}' calibrated on {t['windows']} windows from {t['trials']} "
                      f"trials" + (f", cross-validated accuracy {cv:.3f}" if cv is not None
                                   else " (too few trials per class to cross-validate)"))
    if lat["p50"] is not None:
        console.print(f"  end-to-end latency ms: p50 {lat['p50']:.3f}  p99 {lat['p99']:.3f}  "
                      f"p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}  "
                      f"({summary['outputs_timed']:,} outputs)")
    safety = summary.get("safety")
    if safety:
        ms = safety["safe_state_ms"]
        console.print(f"  safety: {safety['requests']:,} requests, {safety['clamped']:,} clamped, "
                      f"{safety['rejected']:,} rejected, {safety['emitted_outside_limits']} "
                      f"outside the limits; {safety['stalls']} stalls, {safety['safe_states']} "
                      "safe states" + (f" (p99 {ms['p99']:.3f} ms, max {ms['max']:.3f} ms)"
                                       if ms["max"] is not None else ""))
    if summary["bad_chunks"]:
        console.print(f"  [yellow]bad chunks[/yellow]: {summary['bad_chunks']}")
    table = Table("node", "calls", "proc p50 us", "proc p99 us", "latency p99 ms",
                  box=None, pad_edge=False)
    for name, n in summary["nodes"].items():
        proc, lat_n = n["processing_us"], n["latency_ms"]
        if not n["calls"]:  # sources are not "called"; their figures are the outputs'
            continue
        table.add_row(name, f"{n['calls']:,}", str(proc.get("p50")), str(proc.get("p99")),
                      str(lat_n.get("p99")))
    if table.row_count:
        console.print(table)
    if summary["session_dir"]:
        console.print(f"  session folder: {summary['session_dir']}")
