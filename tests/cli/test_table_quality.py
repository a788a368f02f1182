"""Issue 12 (tables): dl at its defaults is not clearly worse than the baseline a user would try
first. One seed per case (the benchmark, benchmarks/quality_tables.py, averages three); the bars
sit between what the single-MLP default of before reached and what the packed ensemble reaches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import DIABETES, PENGUINS, SAMPLES


def _score(dl_inproc, train: Path, test: Path, tmp_path: Path, metric: str, seed: int = 1) -> float:
    model = tmp_path / "model.pt"
    res = dl_inproc("train", train, "-o", model, "--quiet", "--no-plots", "--seed", str(seed))
    assert res.returncode == 0, res.stderr
    res = dl_inproc("evaluate", model, test, "--json")
    assert res.returncode == 0, res.stderr
    return float(json.loads(res.stdout)[metric])


def test_diabetes_defaults_come_close_to_ridge(dl_inproc, tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = pd.read_csv(DIABETES / "train.csv"), pd.read_csv(DIABETES / "test.csv")
    ridge = make_pipeline(StandardScaler(), Ridge()).fit(train.iloc[:, :-1], train.iloc[:, -1])
    ridge_r2 = r2_score(test.iloc[:, -1], ridge.predict(test.iloc[:, :-1]))
    r2 = _score(dl_inproc, DIABETES / "train.csv", DIABETES / "test.csv", tmp_path, "r2")
    # one MLP (128, 64) reached 0.472 here; the 16-member ensemble 0.51 (ridge 0.524)
    assert r2 >= 0.49, (r2, ridge_r2)
    assert r2 >= ridge_r2 - 0.035, (r2, ridge_r2)


def test_wine_with_noise_and_missing_values(dl_inproc, tmp_path: Path) -> None:
    """scikit-learn's bundled wine table with a random text column and 10% of the numbers blanked,
    split 70/30 (stratified) and trained with seed 3: where one MLP fell furthest behind (0.870
    against 0.944 for logistic regression)."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    wine = load_wine()
    frame = pd.DataFrame(wine.data, columns=[f"f{i}" for i in range(wine.data.shape[1])])
    rng = np.random.default_rng(0)
    numeric = list(frame.columns)
    frame[numeric] = frame[numeric].mask(rng.random((len(frame), len(numeric))) < 0.10)
    frame["cellar"] = rng.choice(["north", "south", "east", "west"], len(frame))
    frame["label"] = [str(wine.target_names[t]) for t in wine.target]
    train, test = train_test_split(frame, test_size=0.3, stratify=frame["label"], random_state=3)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    acc = _score(dl_inproc, tmp_path / "train.csv", tmp_path / "test.csv", tmp_path, "accuracy", 3)
    assert acc >= 0.925, acc


def test_breast_cancer_defaults_come_within_a_point_of_logistic_regression(
    dl_inproc, tmp_path: Path
) -> None:
    """The shipped split where the ensemble alone stayed 2 rows behind LogisticRegression (0.973
    against 0.991): the exact linear path (L-BFGS, l2 0.5 = C=1) blended in reaches 0.982."""
    import torch

    folder = SAMPLES / "breast_cancer"
    acc = _score(dl_inproc, folder / "train.csv", folder / "test.csv", tmp_path, "accuracy")
    assert acc >= 0.981, acc  # logistic regression 0.991 - 1 point
    weights = torch.load(tmp_path / "model.pt", weights_only=True)["weights"]["network"]
    assert float(weights["0.linear.blend"]) == 0.75  # the preset's blend, in the model file


def test_the_linear_path_is_fitted_on_every_row_with_or_without_refit(
    dl_inproc, tmp_path: Path
) -> None:
    """The linear path is convex: fitted on the training rows (validation metrics), then on all
    rows, so a --refit run (a new ensemble on all rows) saves the very same linear path."""
    import torch

    paths = {}
    for flags in ((), ("--refit",)):
        model = tmp_path / f"m{len(flags)}.pt"
        args = ("train", PENGUINS / "train.csv", "-o", model, "--epochs", "3", "--no-plots")
        res = dl_inproc(*args, *flags)
        assert res.returncode == 0, res.stderr
        assert "linear path fitted by L-BFGS on 221 rows (l2 0.5" in res.stderr, res.stderr
        assert "linear path refitted by L-BFGS on 276 rows" in res.stderr, res.stderr
        paths[flags] = torch.load(model, weights_only=True)["weights"]["network"]
    plain, refit = paths[()], paths[("--refit",)]
    for key in ("0.linear.weight", "0.linear.bias", "0.linear.blend"):
        torch.testing.assert_close(plain[key], refit[key], rtol=0, atol=0)
    assert not torch.equal(plain["0.body.0.weight"], refit["0.body.0.weight"])  # a new ensemble
