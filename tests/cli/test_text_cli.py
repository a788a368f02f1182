"""Text end to end: train a sequence model on a slice of the sample reviews, predict from stdin and
a file, evaluate."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from conftest import SAMPLES

REVIEWS = SAMPLES / "reviews"


def test_train_predict_evaluate_on_a_slice_of_the_sample(tmp_path: Path, dl_inproc) -> None:
    train = pd.read_csv(REVIEWS / "train.csv").iloc[:400]  # 5 steps: OneCycleLR fails on exactly 4
    train.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "m.pt"
    res = dl_inproc(
        "train", tmp_path / "train.csv", "--arch", "lstm", "--epochs", "1", "-o", model, "--no-plots"
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = dl_inproc("predict", model, "-", input="a wonderful, moving film\n\nawful\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "prediction" and len(lines) == 4
    assert set(lines[1:]) <= {"positive", "negative"}
    res = dl_inproc("predict", model, REVIEWS / "rows.csv", "--proba")
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(io.StringIO(res.stdout))
    assert len(out) == 200 and {"proba_negative", "proba_positive"} <= set(out.columns)
    res = dl_inproc("evaluate", model, REVIEWS / "test.csv", "--json")
    assert res.returncode == 0, res.stderr
    assert 0.0 <= json.loads(res.stdout)["accuracy"] <= 1.0
