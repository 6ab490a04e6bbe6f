"""Stimulation limits: validated at load, effective limits per contact, `bci safety check`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bci_runtime.cli import main as cli_main
from bci_runtime.errors import ConfigError
from bci_runtime.stim_limits import (
    check_limits,
    load_limits,
    shannon_k_of,
    shannon_max_charge_uc,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "limits" / "two_contacts.yaml"


def write(tmp_path: Path, **changes) -> Path:
    """The shipped example with top-level fields of its 'safety:' section replaced."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["safety"].update(changes)
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_shannon_charge_is_where_k_is_reached() -> None:
    for area in (0.01, 0.06, 0.5):
        for k in (1.5, 1.85):
            q = shannon_max_charge_uc(area, k)
            assert math.isclose(shannon_k_of(q, area), k)
    # a DBS contact (0.06 cm²) at k = 1.5 takes sqrt(10**1.5 * 0.06) = 1.377 µC per phase
    assert shannon_max_charge_uc(0.06, 1.5) == pytest.approx(1.3774, abs=1e-4)


def test_the_example_is_safe_and_its_limits_are_the_lower_bound(tmp_path: Path) -> None:
    limits = load_limits(EXAMPLE)
    rows = check_limits(limits)
    e1 = rows[0]
    assert e1["max_charge_uc"] == min(e1["shannon_charge_uc"], e1["density_charge_uc"])
    assert e1["density_charge_uc"] == pytest.approx(25 * 0.06)
    assert e1["worst_charge_uc"] == pytest.approx(3.0 * 200 / 1000)  # 3 mA x 200 µs
    assert e1["worst_density_uc_cm2"] == pytest.approx(0.6 / 0.06)
    # with a lower density ceiling the density bound is the one that applies
    lower = check_limits(load_limits(write(tmp_path, max_charge_density_uc_cm2=12)))
    assert lower[0]["max_charge_uc"] == pytest.approx(12 * 0.06)


@pytest.mark.parametrize("changes, field", [
    ({"shannon_k": 1.9}, "shannon_k"),
    ({"max_charge_density_uc_cm2": 31}, "max_charge_density_uc_cm2"),
    ({"balance_tolerance": 0.02}, "balance_tolerance"),
    ({"dose": {"max_current_ma": 5}}, "dose.max_current_ma"),
    ({"dose": {"max_minutes": 60}}, "dose.max_minutes"),
    ({"pulse_width_us": {"min": 300, "max": 100}}, "pulse_width_us"),
    ({"contacts": [{"name": "E1", "area_cm2": 0, "max_current_ma": 1}]}, "contacts[0].area_cm2"),
    ({"frequency_hz": {"min": 1, "max": 500}}, "frequency"),
    ({"surprise": 1}, "surprise"),
])
def test_limits_above_the_hard_maxima_are_refused_with_the_field_named(
        tmp_path: Path, changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_limits(write(tmp_path, **changes))
    assert field in str(info.value)


def test_a_current_cap_beyond_the_contact_charge_is_unsafe(tmp_path: Path) -> None:
    # 10 mA x 200 µs = 2 µC per phase on 0.06 cm²: above Shannon's 1.377 µC at k = 1.5
    path = write(tmp_path, contacts=[{"name": "E1", "area_cm2": 0.06, "max_current_ma": 10}])
    with pytest.raises(ConfigError) as info:
        check_limits(load_limits(path))
    assert "contacts[0].max_current_ma" in str(info.value)
    assert "Shannon" in str(info.value) and "6.887" in info.value.hint


def test_bci_safety_check_prints_the_limits_or_names_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["safety", "check", str(EXAMPLE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and [c["contact"] for c in out["contacts"]] == ["E1", "E2"]
    assert cli_main(["safety", "check", str(EXAMPLE)]) == 0
    assert "safe" in capsys.readouterr().out
    assert cli_main(["safety", "check", str(write(tmp_path, shannon_k=2.0))]) == 2
    err = capsys.readouterr().err
    assert "shannon_k" in err and "1.85" in err
    assert cli_main(["safety", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
