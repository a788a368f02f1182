"""Model quality at defaults on small tables: dl against the two baselines a user would try first,
measured in the same run (issue 12, tables).

Tables: the shipped sample_data/{penguins,breast_cancer,diabetes} (fit on train.csv, score on
test.csv: the same split for every seed) and two real tables scikit-learn ships in its wheel,
written to CSV in a temporary folder and split 70/30 (stratified) with the seed, so each seed also
draws its own split (the same split for dl and the baselines):
- `wine_noisy`: `load_wine` (178 rows, 13 numbers, 3 cultivars) with a random 4-level text column
  (`cellar`, pure noise) and 10% of the numeric cells blanked (missing at random), fixed by seed 0;
- `iris`: `load_iris` (150 rows, 4 numbers, 3 species).
dl: `dl train train.csv -o m.pt --quiet --seed S` (no other flag), then `dl evaluate m.pt test.csv
--json`, S = 1, 2, 3.
Baselines, behind one ColumnTransformer (numbers: median impute + `StandardScaler`; text: one-hot):
`LogisticRegression(max_iter=1000)` / `Ridge()` (linear) and `MLPClassifier` / `MLPRegressor`
(defaults, `max_iter=500`, `random_state` = S).
Figure: mean dl score minus the better baseline's mean (accuracy; R² for diabetes); goal >= -0.01
for accuracy, >= -0.02 for R².
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common

SEEDS = (1, 2, 3)
GOALS = {"accuracy": -0.01, "r2": -0.02}
TEST_SHARE = 0.3  # of the scikit-learn tables


@dataclass(frozen=True)
class Table:
    """One benchmark table: how to get its (train.csv, test.csv) for a seed."""

    name: str
    task: str  # classification | regression
    metric: str  # accuracy | r2
    files: Callable[[Path, int], tuple[Path, Path]]


def shipped(name: str) -> Callable[[Path, int], tuple[Path, Path]]:
    folder = common.SAMPLE_DATA / name
    return lambda tmp, seed: (folder / "train.csv", folder / "test.csv")


def _frame(loader: str):
    import numpy as np
    import pandas as pd
    from sklearn import datasets

    bunch = getattr(datasets, loader)()
    names = [str(n).replace(" ", "_").replace("/", "_") for n in bunch.feature_names]
    frame = pd.DataFrame(np.asarray(bunch.data, dtype=float), columns=names)
    frame["label"] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


def wine_noisy():
    """load_wine with a noise text column and 10% of the numeric cells missing (seed 0)."""
    import numpy as np

    frame = _frame("load_wine")
    rng = np.random.default_rng(0)
    numeric = frame.columns[:-1]
    blank = rng.random((len(frame), len(numeric))) < 0.10
    frame[numeric] = frame[numeric].mask(blank)
    frame.insert(len(numeric), "cellar", rng.choice(["north", "south", "east", "west"], len(frame)))
    return frame


def split_from(make: Callable, name: str) -> Callable[[Path, int], tuple[Path, Path]]:
    """A scikit-learn table, stratified 70/30 by `seed`, as two CSV files under `tmp`."""

    def files(tmp: Path, seed: int) -> tuple[Path, Path]:
        from sklearn.model_selection import train_test_split

        frame = make()
        train, test = train_test_split(
            frame, test_size=TEST_SHARE, stratify=frame["label"], random_state=seed
        )
        paths = tmp / f"{name}-{seed}-train.csv", tmp / f"{name}-{seed}-test.csv"
        train.to_csv(paths[0], index=False)
        test.to_csv(paths[1], index=False)
        return paths

    return files


TABLES = [
    Table("penguins", "classification", "accuracy", shipped("penguins")),
    Table("breast_cancer", "classification", "accuracy", shipped("breast_cancer")),
    Table("diabetes", "regression", "r2", shipped("diabetes")),
    Table("wine_noisy", "classification", "accuracy", split_from(wine_noisy, "wine_noisy")),
    Table("iris", "classification", "accuracy", split_from(lambda: _frame("load_iris"), "iris")),
]


def dl_score(train: Path, test: Path, metric: str, seed: int, tmp: Path) -> float:
    """dl at its defaults: train on `train`, `dl evaluate --json` on `test`."""
    model = tmp / f"m{seed}.pt"
    common.run_measured([common.DL, "train", train, "-o", model, "--quiet", "--seed", seed]).check()
    run = common.run_measured([common.DL, "evaluate", model, test, "--json"]).check()
    return float(json.loads(run.stdout)[metric])


def baseline_scores(train: Path, test: Path, task: str, seed: int) -> dict[str, float]:
    """{"linear": ..., "mlp": ...}: the test scores of the two scikit-learn baselines."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    tr, te = pd.read_csv(train), pd.read_csv(test)
    target = tr.columns[-1]
    tr, te = tr[tr[target].notna()], te[te[target].notna()]
    features = tr.drop(columns=target)
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(features[c])]
    text = [c for c in features if c not in numeric]
    impute_text = SimpleImputer(strategy="constant", fill_value="missing")
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("cat", make_pipeline(impute_text, OneHotEncoder(handle_unknown="ignore")), text),
        ]
    )
    if task == "classification":
        models = {
            "linear": LogisticRegression(max_iter=1000),
            "mlp": MLPClassifier(max_iter=500, random_state=seed),
        }
        score = accuracy_score
    else:
        models = {"linear": Ridge(), "mlp": MLPRegressor(max_iter=500, random_state=seed)}
        score = r2_score
    out = {}
    for name, est in models.items():
        model = make_pipeline(columns, est)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is part of "defaults"
            model.fit(features, tr[target])
        out[name] = float(score(te[target], model.predict(te.drop(columns=target))))
    return out


def spread(values: list[float]) -> str:
    """`mean ± standard deviation (min-max)` of the seeds' scores."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}-{max(values):.3f})"


def measure(table: Table, tmp: Path, scorer: Callable = dl_score) -> dict[str, list[float]]:
    """Per seed: dl's score and both baselines' on the same split."""
    scores: dict[str, list[float]] = {"dl": [], "linear": [], "mlp": []}
    for seed in SEEDS:
        train, test = table.files(tmp, seed)
        scores["dl"].append(scorer(train, test, table.metric, seed, tmp))
        for name, value in baseline_scores(train, test, table.task, seed).items():
            scores[name].append(value)
    return scores


def run() -> list[dict]:
    results = []
    with common.temp_dir() as tmp:
        for table in TABLES:
            scores = measure(table, tmp)
            means = {k: statistics.mean(v) for k, v in scores.items()}
            best = max(("linear", "mlp"), key=lambda k: means[k])
            note = (
                f"{table.metric} over seeds {', '.join(map(str, SEEDS))}: dl {spread(scores['dl'])}; "
                f"linear {spread(scores['linear'])}; sklearn MLP {spread(scores['mlp'])}; "
                f"best baseline: {best}"
            )
            results.append(
                common.result(
                    f"quality_{table.name}",
                    means["dl"],
                    means[best],
                    "",
                    means["dl"] - means[best],
                    GOALS[table.metric],
                    kind="diff",
                    higher_is_better=True,
                    note=note,
                )
            )
    return results


if __name__ == "__main__":
    common.main(run)
