"""Series end to end: a small dense forecaster trained once on the sample CO2 series; evaluate
beside the naive baseline, predict --steps, and the usage error on a table model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES, assert_error

CO2 = SAMPLES / "co2"

SPEC = "layers: [flatten, {dense: 64}, relu]\ntraining: {epochs: 60, lr: 0.001, patience: 15}\n"


@pytest.fixture(scope="module")
def co2_model(tmp_path_factory: pytest.TempPathFactory, run_dl_session) -> Path:
    """A small dense network trained once on the sample CO2 series (about 10 s on one core)."""
    folder = tmp_path_factory.mktemp("co2")
    (folder / "spec.yaml").write_text(SPEC)
    model = folder / "co2.pt"
    res = run_dl_session(
        "train", CO2 / "train.csv", "--spec", folder / "spec.yaml", "--target", "co2",
        "--window", "52", "--horizon", "1", "-o", model, "--no-plots", "--quiet",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return model


def evaluate_co2(dl_inproc, model: Path) -> dict:
    res = dl_inproc("evaluate", model, CO2 / "test.csv", "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_cli_evaluate_reports_the_naive_baseline_beside_the_model(co2_model, dl_inproc):
    metrics = evaluate_co2(dl_inproc, co2_model)
    assert metrics["n"] == 343  # one forecast per test week; the first 52 rows are history
    assert {"mape", "naive_mae", "naive_rmse", "naive_mape"} <= set(metrics)
    assert metrics["naive_rmse"] == pytest.approx(0.5012, abs=1e-4)
    assert metrics["rmse"] < 1.0


def test_cli_forecast_beats_the_naive_last_value_on_co2(co2_model, dl_inproc):
    metrics = evaluate_co2(dl_inproc, co2_model)
    assert metrics["rmse"] < metrics["naive_rmse"], metrics


def test_cli_predict_steps_rolls_forward_from_the_history(co2_model, dl_inproc):
    res = dl_inproc("predict", co2_model, CO2 / "history.csv", "--steps", "12")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "step,date,prediction" and len(lines) == 13
    assert lines[1].startswith("1,2002-01-05,") and lines[-1].startswith("12,2002-03-23,")
    assert all(350 < float(ln.split(",")[2]) < 390 for ln in lines[1:])
    res = dl_inproc("predict", co2_model, CO2 / "history.csv", "--format", "jsonl")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["date"] == "2002-01-05"


def test_cli_steps_on_a_table_model_is_a_usage_error(penguins_model, dl_inproc):
    res = dl_inproc("predict", penguins_model, SAMPLES / "penguins" / "rows.csv", "--steps", "3")
    assert_error(res, "--steps", "series")


def test_cli_horizon_alone_trains_on_one_season_and_beats_the_naive_forecast(tmp_path, dl_inproc):
    """Without --window the weekly dates give a season of 52: the window is 52 weeks (a note
    says so) and the forecast, scaled by the weekly change, beats the naive last value."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    res = dl_inproc(
        "train", CO2 / "train.csv", "--spec", tmp_path / "spec.yaml", "--target", "co2",
        "--horizon", "1", "-o", tmp_path / "m.pt", "--no-plots", "--seed", "1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "--window 52 (season of 52 steps, from the dates; pass --window to choose)" in res.stderr
    metrics = evaluate_co2(dl_inproc, tmp_path / "m.pt")
    assert metrics["n"] == 343
    assert metrics["rmse"] < metrics["naive_rmse"], metrics
