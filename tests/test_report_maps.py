"""Scalp maps of the evaluation report: positions by name, signed r², CSP patterns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bci_runtime.decoders.report_maps import (  # noqa: E402
    band_log_power,
    scalp_figures,
    scalp_info,
    signed_r2,
)
from bci_runtime.decoders.trials import Trials  # noqa: E402

SFREQ = 160.0


def trials(names: tuple[str, ...], seed: int = 0) -> Trials:
    """Two classes; 'left' carries a 12 Hz rhythm on the fourth channel, 'right' does not."""
    rng = np.random.default_rng(seed)
    n = 40
    y = np.array(["left", "right"] * (n // 2))
    X = rng.normal(0, 1e-6, (n, len(names), 320))
    t = np.arange(320) / SFREQ
    X[y == "left", 3] += 3e-6 * np.sin(2 * np.pi * 12 * t)
    return Trials(X, y, np.arange(n) * 4.0, SFREQ, names, ["test"] * n)


def test_signed_r2_is_the_squared_correlation_with_its_sign() -> None:
    rng = np.random.default_rng(1)
    is_class = rng.random(200) < 0.5
    features = np.column_stack([is_class + rng.normal(0, 1, 200),
                                -2.0 * is_class + rng.normal(0, 1, 200),
                                rng.normal(0, 1, 200), np.ones(200)])
    values = signed_r2(features, is_class)
    for k in range(3):
        r = np.corrcoef(features[:, k], is_class)[0, 1]
        assert np.isclose(values[k], np.sign(r) * r ** 2)
    assert values[0] > 0.1 and values[1] < -0.3 and values[3] == 0.0  # constant: no NaN


def test_positions_come_from_cleaned_channel_names() -> None:
    info, picks = scalp_info(("Fc5.", "EEG C3-REF", "Cz..", "C4", "Status", "x1"), SFREQ)
    assert info.ch_names == ["FC5", "C3", "Cz", "C4"] and picks.tolist() == [0, 1, 2, 3]
    assert scalp_info(("a", "b", "c", "d", "e"), SFREQ) is None


def test_maps_show_where_the_classes_differ() -> None:
    names = ("C3", "Cz", "C4", "CP3", "CP4", "FC3", "FC4", "Pz")
    figures, note = scalp_figures(trials(names))
    assert note is None and len(figures) == 2
    (title, class_map), (csp_title, _) = figures
    assert "signed r²" in title and "CSP" in csp_title
    # the class map's data: the rhythm's channel stands out, positively for 'left'
    power_axes = class_map.axes[0]
    assert power_axes.get_title() == "left vs right"
    t = trials(names)
    values = signed_r2(band_log_power(t.X, SFREQ), t.y == "left")
    assert int(np.argmax(values)) == 3 and values[3] > 0.5
    plt.close("all")


def test_unknown_channel_names_give_a_note_instead_of_maps() -> None:
    figures, note = scalp_figures(trials(tuple(f"ch{i}" for i in range(8))))
    assert figures == [] and "standard 10-05 position" in note
