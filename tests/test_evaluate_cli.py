"""``bci evaluate`` end to end on real recordings and on the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bci_runtime.cli import main as cli_main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
S001 = DATA / "physionet_eegmmidb" / "S001"
needs_physionet = pytest.mark.skipif(not (S001 / "S001R04.edf").is_file(),
                                     reason=f"real data missing: {S001}")


def evaluate_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli_main(["evaluate", *argv, "--json"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, json.loads(out[-1])


def runs(*numbers: str) -> list[str]:
    return [str(S001 / f"S001R{n}.edf") for n in numbers]


@needs_physionet
@pytest.mark.slow
def test_left_vs_right_fist_meets_the_target_with_pooled_mean_adaptation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--paradigm", "mi", "--train", *runs("04", "08"),
                              "--test", *runs("12"), "--events", "T1=left,T2=right",
                              "--adapt", "lda-bias", "--report", str(tmp_path / "report"))
    assert code == 0, out
    assert out["n_train"] == 30 and out["n_test"] == 15 and out["decoder"] == "ts-lr"
    assert out["arms"]["static"]["accuracy"] >= 0.8
    assert out["arms"]["adaptive"]["strategy"] == "lda-bias"
    assert out["arms"]["adaptive"]["accuracy"] >= 0.9  # the target
    assert set(out["arms"]["oracle"]) == {"accuracy", "kappa", "itr_bits_min"}
    page = Path(out["report"]).read_text()
    # accuracy, confusion matrices, class map and CSP patterns (PhysioNet's 'C3..' names)
    assert page.count("data:image/png;base64,") == 4 and "lda-bias" in page
    assert "CSP patterns" in page and "signed r²" in page
    saved = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert saved["arms"] == out["arms"]


@needs_physionet
@pytest.mark.slow
def test_hands_vs_feet_meets_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--paradigm", "mi", "--train", *runs("06", "10"),
                              "--test", *runs("14"), "--events", "T1=hands,T2=feet",
                              "--adapt", "none")
    assert code == 0, out
    assert out["arms"]["static"]["accuracy"] >= 0.93
    assert "adaptive" not in out["arms"]


@needs_physionet
def test_events_that_match_nothing_are_a_usage_error_that_lists_the_codes(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["evaluate", "--train", *runs("04"), "--test", *runs("08"),
                     "--events", "1=left,2=right"])
    err = capsys.readouterr().err
    assert code == 2
    assert "none of the events ['1', '2']" in err and "'T1' ×" in err and "'T0' ×" in err


def test_an_unknown_decoder_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", "--simulate", "stationary", "--decoder", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown decoder 'nope'" in err and "ts-lr" in err


@pytest.mark.slow
def test_a_stationary_simulation_loses_nothing_by_adapting(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--simulate", "stationary", "--paradigm", "mi",
                              "--adapt", "lda-bias", "--seed", "2")
    assert code == 0, out
    assert out["n_train"] == 60 and out["n_test"] == 200
    static, adaptive = out["arms"]["static"], out["arms"]["adaptive"]
    assert static["accuracy"] > 0.8
    assert adaptive["accuracy"] >= static["accuracy"] - 0.01  # the stationary control
    assert out["drift_onset_trial"] == 30 and "tau90_trials" in out


@pytest.mark.slow
def test_the_recommended_co_adaptation_recovers_from_dying_channels(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Channel dropout costs a static decoder ~0.4; the recommended arm gets it all back."""
    code, out = evaluate_json(capsys, "--simulate", "channel-dropout", "--paradigm", "mi")
    assert code == 0, out
    assert out["decoder"] == "ts-lda"
    assert out["arms"]["adaptive"]["strategy"] == "ts-recenter+partial-fit@200"
    static, oracle = out["static_after_onset"], out["oracle_after_onset"]
    adaptive = out["strategies"]["ts-recenter+partial-fit@200"]["accuracy_after_onset"]
    assert static < 0.7 < oracle  # the drift hurts, and current data can undo it
    assert out["recovery_fraction"] >= 0.9
    assert adaptive >= static + 0.25
    assert out["tau90_trials"] is not None and out["tau90_trials"] <= 40


def test_list_names_every_decoder_and_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = evaluate_json(capsys, "--list")
    assert code == 0
    names = {d["name"]: d for d in out["decoders"]}
    assert {"ts-lr", "ts-lda", "ssvep-ensemble", "kalman"} <= set(names)
    assert names["ts-lr"]["default"] and not names["ts-lda"]["default"]
    assert {"recenter", "ts-recenter", "partial-fit", "lda-bias"} <= set(out["strategies"])
    assert out["continuous_strategies"] == ["rml", "smoothbatch", "ridge-partial-fit"]
