"""Regenerate sample_data/co2/ (run once; output is committed).

Source: weekly atmospheric CO2 at Mauna Loa, Hawaii, 1958-03-29 to 2001-12-29 (2,284 weeks, ppmv),
from flask samples of the Scripps Institution of Oceanography: Keeling, C.D. and T.P. Whorf (2004),
"Atmospheric CO2 concentrations derived from flask air samples at sites in the SIO network", in
Trends: A Compendium of Data on Global Change, CDIAC, Oak Ridge National Laboratory. Public domain.
It ships inside the statsmodels package (`statsmodels.datasets.co2`), which is needed only to run
this script, not by dl:

    .venv/bin/pip install statsmodels && .venv/bin/python sample_data/make_co2.py

The 59 missing weeks are filled by linear interpolation in time. The series is split by time:
train.csv holds the first 85% of the weeks, test.csv the last 15%, preceded by the last WINDOW
weeks of train.csv as history, so `dl evaluate` scores a forecast for every test week (the first
WINDOW rows of a file only ever serve as history). history.csv is the last WINDOW weeks, enough
for `dl predict --steps N` to forecast what came after 2001.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent / "co2"
WINDOW = 52  # one year of weeks: the window the examples and tests train with
TRAIN_SHARE = 0.85


def main() -> None:
    from statsmodels.datasets import co2

    data = co2.load_pandas().data  # DatetimeIndex (weekly, Saturdays), column co2
    series = data["co2"].interpolate(method="time").round(2)
    frame = series.rename_axis("date").reset_index()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    cut = int(len(frame) * TRAIN_SHARE)
    HERE.mkdir(exist_ok=True)
    frame.iloc[:cut].to_csv(HERE / "train.csv", index=False)
    frame.iloc[cut - WINDOW :].to_csv(HERE / "test.csv", index=False)
    frame.iloc[-WINDOW:].to_csv(HERE / "history.csv", index=False)
    print(f"{len(frame)} weeks: train {cut}, test {len(frame) - cut} (+{WINDOW} weeks of history)")


if __name__ == "__main__":
    main()
