"""Time series: window/horizon alignment, the chronological split, scaling on the training part,
bad input, state, streaming alignment, the naive baseline, rolling forecasts and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLES

from dlcli.data import series as S
from dlcli.data import series_read
from dlcli.data.sources import DataOptions, choose_source, preprocessor_from_state
from dlcli.errors import InputError, UsageError

CO2 = SAMPLES / "co2"


def write(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def ramp(tmp_path: Path, n: int = 40, name: str = "s.csv", **cols) -> str:
    """A weekly series whose `y` is its row number (so every value names its step)."""
    dates = pd.date_range("2020-01-04", periods=n, freq="7D").strftime("%Y-%m-%d")
    return write(tmp_path / name, pd.DataFrame({"date": dates, "y": np.arange(float(n)), **cols}))


def opts(window: int, horizon: int = 1, **kw) -> DataOptions:
    return DataOptions(extra={"series": {"window": window, "horizon": horizon}}, **kw)


def prepare(path: str, window: int, horizon: int = 1, **kw):
    o = opts(window, horizon, **kw)
    source = choose_source(path, o)
    assert source is S.SeriesSource
    return source.prepare(path, o)


def decode(prep, y: torch.Tensor) -> np.ndarray:
    t = prep.preprocessor.target
    return y.numpy() * t.std + t.mean


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from dlcli.engine import forecast

    got: list[str] = []
    monkeypatch.setattr(series_read, "note", got.append)
    monkeypatch.setattr(forecast, "note", got.append)
    return got


# -- windows, split, scaling ------------------------------------------------------------------
@pytest.mark.parametrize("window,horizon", [(3, 1), (5, 3)])
def test_each_window_predicts_the_value_horizon_steps_after_its_last_step(
    tmp_path, window, horizon
):
    prep = prepare(ramp(tmp_path), window, horizon)
    x, y = prep.x_train, decode(prep, prep.y_train)
    assert x.shape[1:] == (window, 1)
    for k in range(len(x)):
        assert x[k, :, 0].tolist() == list(range(k, k + window))  # rows k .. k+window-1
        assert y[k] == pytest.approx(k + window - 1 + horizon, abs=1e-4)
    first_val = int(prep.x_val[0, 0, 0])
    assert prep.x_val[:, 0, 0].tolist() == list(range(first_val, first_val + len(prep.x_val)))


@pytest.mark.parametrize("horizon", [1, 4])
def test_split_is_chronological_and_no_training_target_lies_past_the_validation_origin(
    tmp_path, horizon
):
    n, window = 60, 6
    prep = prepare(ramp(tmp_path, n), window, horizon, val_split=0.25)
    train_targets = decode(prep, prep.y_train)
    val_targets = decode(prep, prep.y_val)
    m = n - window - horizon + 1
    assert len(prep.x_val) == round(m * 0.25)
    assert val_targets[-1] == pytest.approx(n - 1, abs=1e-4)  # the last windows validate
    origin = float(prep.x_val[0, -1, 0])  # the first validation window's last known step
    assert train_targets.max() <= origin + 1e-4
    assert len(prep.x_train) == m - len(prep.x_val) - (horizon - 1)


def test_scaling_is_fitted_on_the_training_part_only(tmp_path):
    n, window = 60, 5
    base = ramp(tmp_path, n, "a.csv")
    prep = prepare(base, window)
    frame = pd.read_csv(base)
    frame.loc[n - 10 :, "y"] = 1e6  # change only the validation part
    other = prepare(write(tmp_path / "b.csv", frame), window)
    assert other.preprocessor.to_state() == prep.preprocessor.to_state()
    fit_rows = prep.info["fit_rows"]
    assert prep.preprocessor.target.mean == pytest.approx(np.arange(fit_rows).mean())
    assert prep.preprocessor.target.std == pytest.approx(1.0)  # a ramp changes by 1 a step


@pytest.mark.parametrize("horizon", [1, 3])
def test_output_scale_is_the_typical_change_over_the_horizon(tmp_path, horizon):
    """The network adds a change to the last value; in these units a typical one is about 1."""
    walk = np.cumsum(np.random.default_rng(0).normal(0.5, 2.0, 200)) + 1000
    path = write(tmp_path / "walk.csv", pd.DataFrame({"y": walk}))
    prep = prepare(path, 8, horizon)
    fit = walk[: prep.info["fit_rows"]].astype(np.float32).astype(np.float64)
    change = fit[horizon:] - fit[:-horizon]
    enc = prep.preprocessor
    assert enc.target.mean == pytest.approx(fit.mean())
    assert enc.target.std == pytest.approx(np.sqrt(np.mean(change**2)), rel=1e-6)
    z = enc.preprocess_module()(prep.x_train)  # the anchor: the last level in output units
    target_enc = prep.y_train - z[:, -1, -1]  # what the network must add
    assert 0.5 < float(target_enc.std()) < 1.5


def test_preprocessing_sees_shapes_relative_to_the_last_step_and_the_target_level(tmp_path):
    prep = prepare(ramp(tmp_path, 40, v=np.linspace(5, 9, 40)), 4)
    enc = prep.preprocessor
    assert enc.features == ["y", "v"] and enc.target.name == "v"  # the last numeric column
    z = enc.preprocess_module()(prep.x_train[:2])
    assert z.shape == (2, 4, 3) == (2, *enc.input_shape)
    assert torch.all(z[:, -1, :2] == 0)  # relative channels: 0 at the last step
    level = (prep.x_train[:2, :, 1] - enc.target.mean) / enc.target.std
    torch.testing.assert_close(z[:, :, 2], level)


# -- bad input ----------------------------------------------------------------------------------
def test_unsorted_dates_are_sorted_with_a_note(tmp_path, notes):
    frame = pd.read_csv(ramp(tmp_path))
    shuffled = write(tmp_path / "shuffled.csv", frame.sample(frac=1, random_state=0))
    prep = prepare(shuffled, 3)
    assert any("not in date order" in n and "'date'" in n for n in notes)
    assert prep.x_train[:, :, 0].tolist() == prepare(ramp(tmp_path), 3).x_train[:, :, 0].tolist()


def test_duplicated_dates_are_an_error_naming_the_date(tmp_path):
    frame = pd.read_csv(ramp(tmp_path))
    frame.loc[7, "date"] = frame.loc[6, "date"]
    with pytest.raises(InputError, match=r"date 2020-02-15 appears more than once \(rows 7, 8\)"):
        prepare(write(tmp_path / "dup.csv", frame), 3)


def test_non_numeric_value_is_an_error_naming_column_and_row(tmp_path):
    frame = pd.read_csv(ramp(tmp_path)).astype({"y": object})
    frame.loc[11, "y"] = "n/a?"
    with pytest.raises(InputError, match=r"column 'y', row 12: 'n/a\?' is not a number"):
        prepare(write(tmp_path / "bad.csv", frame), 3)


def test_missing_values_are_forward_filled_with_a_note(tmp_path, notes):
    frame = pd.read_csv(ramp(tmp_path))
    frame.loc[5, "y"] = np.nan
    prep = prepare(write(tmp_path / "gap.csv", frame), 3)
    assert prep.x_train[3, :, 0].tolist() == [3, 4, 4]
    assert any("filled missing values" in n and "'y' 1" in n for n in notes)


def test_too_short_and_too_large_window_are_errors_with_the_numbers(tmp_path):
    path = ramp(tmp_path, 12)
    with pytest.raises(InputError, match=r"--window 12 is larger than the series \(12 rows\)"):
        prepare(path, 12)
    with pytest.raises(
        InputError, match=r"too short: 12 rows make 2 windows of 10 steps.*at least 18 rows"
    ):
        prepare(path, 10)


def test_classification_and_a_window_below_one_are_usage_errors(tmp_path):
    path = ramp(tmp_path)
    with pytest.raises(UsageError, match="regression"):
        prepare(path, 3, task="classification")
    with pytest.raises(UsageError, match="at least 1, got 0 and 1"):
        prepare(path, 0)


# -- the default window: two seasons ----------------------------------------------------------------
@pytest.mark.parametrize(
    "freq,season",
    [
        *[("7D", 52), ("W-SUN", 52), ("2W-SUN", 26), ("ME", 12), ("MS", 12), ("QE", 4)],
        *[("3ME", 4), ("D", 7), ("B", 5), ("h", 24), ("30min", 48), ("YE", None), ("2D", None)],
    ],
)
def test_calendar_season_from_the_spacing_of_the_dates(freq, season):
    dates = pd.Series(pd.date_range("2020-01-04", periods=20, freq=freq))
    assert series_read.calendar_season(dates) == season


def test_no_calendar_season_without_regular_dates():
    assert series_read.calendar_season(None) is None
    odd = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-03", "2020-01-04", "2020-01-09"]))
    assert series_read.calendar_season(odd) is None


def test_autocorrelation_season_finds_the_cycle_of_a_series_without_dates():
    rng = np.random.default_rng(0)
    t = np.arange(300.0)
    cycle = 10 * np.sin(2 * np.pi * t / 11) + 0.05 * t + rng.normal(0, 1, 300)
    assert series_read.autocorrelation_season(cycle) == 11
    assert series_read.autocorrelation_season(np.cumsum(rng.normal(size=300))) is None
    assert series_read.autocorrelation_season(np.ones(50)) is None
    assert series_read.autocorrelation_season(np.arange(8.0)) is None


@pytest.mark.parametrize("horizon", [None, 2])
def test_without_window_the_default_spans_one_season_with_a_note(tmp_path, notes, horizon):
    dates = pd.date_range("2000-01-31", periods=120, freq="ME").strftime("%Y-%m-%d")
    month = np.sin(2 * np.pi * np.arange(120) / 12)
    path = write(tmp_path / "m.csv", pd.DataFrame({"date": dates, "y": month}))
    got = {"horizon": horizon} if horizon else {"window": None, "horizon": 1}
    o = DataOptions(extra={"series": got})
    assert choose_source(path, o) is S.SeriesSource
    enc = S.SeriesSource.prepare(path, o).preprocessor
    assert enc.window == 12 and enc.horizon == (horizon or 1)
    assert notes == [
        f"{path}: --window 12 (season of 12 steps, from the dates; pass --window to choose)"
    ]


def test_default_window_of_short_series_leaves_most_rows_to_train(tmp_path, notes):
    weekly = ramp(tmp_path, 40)  # a season of 52 weeks does not fit: a quarter of the rows
    assert S.SeriesSource.prepare(weekly, opts(None)).preprocessor.window == 10
    plain = write(
        tmp_path / "noise.csv", pd.DataFrame({"y": np.random.default_rng(1).normal(size=200)})
    )
    assert S.SeriesSource.prepare(plain, opts(None)).preprocessor.window == 16
    assert notes[-1].endswith("--window 16 (no season found; pass --window to choose)")


# -- state, streaming, baseline -------------------------------------------------------------------
def test_state_round_trip_gives_the_same_preprocessing(tmp_path):
    prep = prepare(ramp(tmp_path, 40, v=np.sin(np.arange(40.0))), 5, 2)
    state = json.loads(json.dumps(prep.preprocessor.to_state()))  # plain data only
    again = preprocessor_from_state(state)
    assert (
        isinstance(again, S.SeriesPreprocessor) and again.to_state() == prep.preprocessor.to_state()
    )
    x = prep.x_val
    torch.testing.assert_close(
        again.preprocess_module()(x), prep.preprocessor.preprocess_module()(x)
    )


def test_iter_inputs_and_iter_labelled_name_the_predicted_step(tmp_path):
    path = ramp(tmp_path, 30)
    enc = prepare(path, 4, 2).preprocessor
    (frame, raw), *rest = enc.iter_inputs([path])
    assert rest == [] and len(raw) == 30 - 4 + 1
    dates = pd.date_range("2020-01-04", periods=30 + 2, freq="7D").strftime("%Y-%m-%d")
    assert frame["date"].tolist() == dates[5:].tolist()  # window 0 ends at row 3, predicts row 5
    (lab, lraw), *rest = enc.iter_labelled(path)
    assert len(lraw) == 30 - 4 - 2 + 1
    assert lab["y"].tolist() == [float(r[-1, 0]) + 2 for r in lraw]
    assert lab["date"].tolist() == dates[5:30].tolist()
    kept, _ = next(enc.iter_inputs(path, keep=True))
    assert kept["y"].iloc[0] == 5 and kept["y"].isna().sum() == 2  # the last two lie ahead


def test_without_a_date_column_the_row_order_is_the_time_order(tmp_path):
    path = write(tmp_path / "plain.csv", pd.DataFrame({"y": np.sin(np.arange(30.0))}))
    enc = prepare(path, 4).preprocessor
    assert enc.date_column is None
    frame, _ = next(enc.iter_inputs(path))
    assert frame["row"].tolist() == list(range(5, 32))


def test_baseline_metrics_of_the_naive_last_value_forecast(tmp_path):
    values = np.array([10.0, 12, 11, 15, 0, 5, 6, 8, 7, 9, 10, 12])
    path = write(tmp_path / "h.csv", pd.DataFrame({"y": values}))
    enc = prepare(path, 2).preprocessor
    frames, raws = zip(*enc.iter_labelled(path), strict=True)
    truth = pd.concat(frames)["y"]
    y = enc.target.encode(truth, path)
    got = enc.baseline_metrics(y, list(raws), truth.to_numpy() + 1.0)  # a model off by one
    naive, true = values[1:-1], values[2:]
    keep = true != 0
    assert got["naive_mae"] == pytest.approx(np.mean(np.abs(naive - true)))
    assert got["naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - true) ** 2)))
    assert got["naive_mape"] == pytest.approx(np.mean(np.abs(naive[keep] / true[keep] - 1)))
    assert got["mape"] == pytest.approx(np.mean(1.0 / np.abs(true[keep])))


# -- rolling forecasts ------------------------------------------------------------------------------
class PlusOne(torch.nn.Module):
    """A model that knows the rule of a ramp: the next value is the last one plus one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1, -1:] + 1.0


class Loaded:
    def __init__(self, preprocessor) -> None:
        self.preprocessor, self.inference = preprocessor, PlusOne()


def test_forecast_rolls_each_prediction_into_the_next_window(tmp_path):
    from dlcli.engine.forecast import forecast

    path = ramp(tmp_path, 30)
    enc = prepare(path, 5).preprocessor
    out = forecast(Loaded(enc), path, 4)
    assert out.columns.tolist() == ["step", "date", "prediction"]
    assert out["prediction"].tolist() == [30.0, 31.0, 32.0, 33.0]
    weeks = pd.date_range("2020-01-04", periods=34, freq="7D").strftime("%Y-%m-%d")
    assert out["date"].tolist() == weeks[30:].tolist()
    enc.horizon = 2
    with pytest.raises(UsageError, match="predicts 2 steps ahead"):
        forecast(Loaded(enc), path, 4)


def test_forecast_without_even_dates_numbers_the_steps(tmp_path, notes):
    from dlcli.engine.forecast import forecast

    frame = pd.read_csv(ramp(tmp_path, 30))
    frame["date"] = pd.to_datetime(frame["date"]) + pd.to_timedelta(np.arange(30) % 3, "D")
    path = write(tmp_path / "odd.csv", frame)
    out = forecast(Loaded(prepare(path, 5).preprocessor), path, 3)
    assert out.columns.tolist() == ["step", "prediction"]
    assert any("not evenly spaced" in n for n in notes)
