"""The HTML report of ``bci evaluate --report DIR``: one self-contained page with its plots.

Plots (PNG, embedded): accuracy over test trials for every arm (rolling
window) with the drift onset marked, each arm's confusion matrix, and scalp
maps of the training trials (:mod:`~bci_runtime.decoders.report_maps`: where
the classes differ, CSP patterns) when the channels have standard names. The
figures of ``--json`` are repeated as a table and written beside the page as
``evaluation.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from bci_runtime.decoders.metrics import rolling_accuracy
from bci_runtime.decoders.report_maps import scalp_figures
from bci_runtime.errors import ConfigError

ROLLING = 10  # trials in the rolling accuracy plot


def write_report(folder: Path, result: Any, train: Any, test: Any, decoder: str,
                 summary: dict[str, Any]) -> Path:
    """Write ``index.html`` and ``evaluation.json`` into ``folder``; returns the page's path.

    Parameters
    ----------
    folder : Path
        Created if missing; existing report files are replaced.
    result : Evaluation
    train, test : Trials
    decoder : str
    summary : dict
        What ``--json`` prints.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--report {folder}: cannot create the folder ({exc.strerror})",
                          hint="give a writable folder") from None
    images = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, arm in result.arms.items():
        ax.plot(rolling_accuracy(arm.correct, ROLLING), label=name, lw=1.4)
    if result.drift_onset is not None:
        ax.axvline(result.drift_onset, color="k", ls="--", lw=1, label="drift onset")
    ax.axhline(1.0 / len(result.classes), color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="test trial", ylabel=f"accuracy (last {ROLLING} trials)", ylim=(0, 1.02))
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    images.append(("Accuracy over the test trials", _png(fig)))
    plt.close(fig)
    n = len(result.arms)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for ax, (name, arm) in zip(axes[0], result.arms.items()):
        cm = confusion_matrix(test.y, arm.predictions, labels=result.classes)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set(title=name, xticks=range(len(result.classes)), yticks=range(len(result.classes)),
               xlabel="predicted", ylabel="true")
        ax.set_xticklabels(result.classes, fontsize=7, rotation=45)
        ax.set_yticklabels(result.classes, fontsize=7)
    fig.tight_layout()
    images.append(("Confusion matrices", _png(fig)))
    plt.close(fig)
    maps, no_maps = scalp_figures(train)
    for title, fig in maps:
        images.append((title, _png(fig)))
        plt.close(fig)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{html.escape(str(arm.scores.get(k)))}</td>"
                  for k in ("accuracy", "kappa", "itr_bits_min", "tau90_trials",
                            "recovery_fraction", "regret"))
        + "</tr>" for name, arm in result.arms.items())
    figures = "".join(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                      f"src='data:image/png;base64,{data}'>" for title, data in images)
    page = (f"<!doctype html><html lang='en'><meta charset='utf-8'>"
            f"<title>bci evaluate: {html.escape(decoder)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "td,th{padding:.2em .8em;text-align:right}img{max-width:100%}</style>"
            f"<h1>{html.escape(decoder)}: {len(train)} training, {len(test)} test trials</h1>"
            f"<p>Source: {html.escape(str(summary.get('source')))}; classes "
            f"{html.escape(', '.join(result.classes))}; one trial every "
            f"{result.trial_s:.2f} s.</p><table><tr><th>arm</th><th>accuracy</th>"
            "<th>kappa</th><th>ITR (bits/min)</th><th>τ90</th><th>recovery</th>"
            f"<th>regret</th></tr>{rows}</table>{figures}"
            + (f"<p>{html.escape(no_maps)}</p>" if no_maps else "") + "</html>")
    (folder / "evaluation.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # labels uncut
    return base64.b64encode(buf.getvalue()).decode("ascii")
