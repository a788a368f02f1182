"""Series quality at defaults: dl's one-step forecast vs the naive and seasonal-naive forecasts.

Data: the shipped weekly CO2 series (sample_data/co2, season 52) and three real series that
statsmodels ships in its wheel (`statsmodels.datasets`; nothing is downloaded): yearly sunspot
numbers 1700-2008 (`sunspots`, season 11: the solar cycle), the monthly El Nino sea surface
temperature 1950-2010 (`elnino`, season 12) and the quarterly US unemployment rate 1959-2009
(`macrodata.unemp`, season 4). Each is split by time: the first 80% of the steps train (co2: its
shipped train.csv, 85%), the rest are scored.

dl: `dl train train.csv --target COL --horizon 1 -o m.pt --quiet --seed S` (S = 1, 2, 3; the
window is dl's default for the data), then `dl predict m.pt whole.csv` on the whole series, which
gives the one-step forecast of every step after the first window, as `dl evaluate` makes them;
the scored steps are the held-out tail. Baselines on the same steps: the naive forecast (the last
value) and the seasonal naive (the value one season before). Figure: dl's mean RMSE over the
seeds / the better baseline's RMSE; goal < 1 (issue 12: beat the best naive baseline by any
margin). MAE, the spread over the seeds and both baselines are in the note.
"""

from __future__ import annotations

import io
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np

DL_SEEDS = (1, 2, 3)
GOAL = 1.0  # dl RMSE / best baseline RMSE
TRAIN_SHARE = 0.8


@dataclass
class Case:
    """One series: the whole of it in time order, where the scored tail starts and its season."""

    name: str
    frame: object  # pandas.DataFrame: date column + target column, time order
    target: str
    cut: int  # rows 0..cut-1 train; cut..n-1 are scored
    season: int


def _dated(dates, values, column: str):
    import pandas as pd

    return pd.DataFrame({"date": pd.DatetimeIndex(dates).strftime("%Y-%m-%d"), column: values})


def cases() -> list[Case]:
    """The shipped CO2 series and the statsmodels series, whole, with their cut and season."""
    import pandas as pd

    co2_dir = common.SAMPLE_DATA / "co2"
    train = pd.read_csv(co2_dir / "train.csv")
    test = pd.read_csv(co2_dir / "test.csv")
    history = int((test["date"] <= train["date"].iloc[-1]).sum())  # test.csv's history rows
    co2 = pd.concat([train, test.iloc[history:]], ignore_index=True)
    out = [Case("co2", co2, "co2", len(train), 52)]
    try:
        from statsmodels import datasets as sm
    except ImportError:  # pragma: no cover - statsmodels is in the dev extra
        print("quality_series: statsmodels is not installed; only co2 runs", flush=True)
        return out
    sun = sm.sunspots.load_pandas().data
    years = pd.to_datetime(sun["YEAR"].astype(int).astype(str) + "-12-31")
    nino = sm.elnino.load_pandas().data.drop(columns="YEAR").to_numpy().reshape(-1)
    macro = sm.macrodata.load_pandas().data
    series = [
        ("sunspots", _dated(years, sun["SUNACTIVITY"], "activity"), "activity", 11),
        (
            "elnino",
            _dated(pd.date_range("1950-01-31", periods=len(nino), freq="ME"), nino, "sst"),
            "sst",
            12,
        ),
        (
            "unemployment",
            _dated(
                pd.date_range("1959-03-31", periods=len(macro), freq="QE"), macro["unemp"], "unemp"
            ),
            "unemp",
            4,
        ),
    ]
    for name, frame, target, season in series:
        out.append(Case(name, frame, target, int(len(frame) * TRAIN_SHARE), season))
    return out


def errors(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(RMSE, MAE)."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def baselines(case: Case) -> dict[str, tuple[float, float]]:
    """(RMSE, MAE) of the naive and seasonal-naive one-step forecasts on the scored steps."""
    v = case.frame[case.target].to_numpy(dtype=np.float64)
    steps = np.arange(case.cut, len(v))
    return {
        "naive": errors(v[steps], v[steps - 1]),
        "seasonal": errors(v[steps], v[steps - case.season]),
    }


def dl_errors(case: Case, seed: int, tmp: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """Train dl at defaults on the training part; (RMSE, MAE) of its forecasts of the scored steps."""
    import pandas as pd

    train, whole = tmp / f"{case.name}_train.csv", tmp / f"{case.name}_whole.csv"
    if not whole.exists():
        case.frame.iloc[: case.cut].to_csv(train, index=False)
        case.frame.to_csv(whole, index=False)
    model = tmp / f"{case.name}_{seed}.pt"
    args = [common.DL, "train", train, "--target", case.target, "--horizon", "1", "-o", model]
    common.run_measured([*args, "--quiet", "--no-plots", "--seed", seed, *extra]).check()
    run = common.run_measured([common.DL, "predict", model, whole, "--quiet"]).check()
    pred = pd.read_csv(io.StringIO(run.stdout))
    truth = case.frame.iloc[case.cut :]
    scored = truth.merge(pred, on="date", how="left")
    if scored["prediction"].isna().any():
        raise RuntimeError(f"{case.name}: dl gave no forecast for some scored steps")
    return errors(scored[case.target], scored["prediction"])


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def run(extra: tuple[str, ...] = ()) -> list[dict]:
    wanted = os.environ.get("BENCH_SERIES")  # e.g. "co2,elnino": a subset, for quick checks
    results = []
    with common.temp_dir() as tmp:
        for case in cases():
            if wanted and case.name not in wanted.split(","):
                continue
            base = baselines(case)
            runs = [dl_errors(case, s, tmp, extra) for s in DL_SEEDS]
            rmse, mae = [r for r, _ in runs], [m for _, m in runs]
            best = min(base, key=lambda k: base[k][0])
            note = (
                f"RMSE dl {_spread(rmse)} (seeds {', '.join(f'{r:.4g}' for r in rmse)}), "
                f"naive {base['naive'][0]:.4g}, seasonal naive (s={case.season}) "
                f"{base['seasonal'][0]:.4g}; MAE dl {_spread(mae)}, naive {base['naive'][1]:.4g}, "
                f"seasonal {base['seasonal'][1]:.4g}; {len(case.frame) - case.cut} steps scored"
            )
            mean_rmse = statistics.mean(rmse)
            results.append(
                common.result(
                    f"quality_series_{case.name}_rmse",
                    mean_rmse,
                    base[best][0],
                    "",
                    mean_rmse / base[best][0],
                    GOAL,
                    note=note,
                )
            )
    return results


if __name__ == "__main__":
    common.main(run)
