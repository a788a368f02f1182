"""Model quality at defaults: dl vs scikit-learn's MLP on the shipped small real tables.

Same split for both: fit on sample_data/<name>/train.csv, score on sample_data/<name>/test.csv.
dl: `dl train train.csv -o m.pt --quiet --seed S` then `dl evaluate m.pt test.csv --json`, S = 1,2,3.
sklearn: MLPClassifier / MLPRegressor (defaults, max_iter=500, random_state 0,1,2) behind a
ColumnTransformer: numeric columns median-imputed and standardised, text columns one-hot.
Figure: mean dl score minus mean sklearn score (accuracy; R² for diabetes); goal >= -0.02.
"""

from __future__ import annotations

import json
import warnings

import common

TABLES = {  # name -> (task, metric)
    "penguins": ("classification", "accuracy"),
    "breast_cancer": ("classification", "accuracy"),
    "diabetes": ("regression", "r2"),
}
DL_SEEDS = (1, 2, 3)
SK_STATES = (0, 1, 2)
GOAL = -0.02


def dl_score(train, test, metric: str, seed: int, tmp) -> float:
    model = tmp / f"m{seed}.pt"
    common.run_measured([common.DL, "train", train, "-o", model, "--quiet", "--seed", seed]).check()
    run = common.run_measured([common.DL, "evaluate", model, test, "--json"]).check()
    return float(json.loads(run.stdout)[metric])


def sklearn_score(train, test, task: str, state: int, scale_target: bool = False) -> float:
    """sklearn's test score; `scale_target` standardises a regression target (context only)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.impute import SimpleImputer
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
    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                text,
            ),
        ]
    )
    if task == "classification":
        est = MLPClassifier(max_iter=500, random_state=state)
    elif scale_target:
        est = TransformedTargetRegressor(
            MLPRegressor(max_iter=500, random_state=state), transformer=StandardScaler()
        )
    else:
        est = MLPRegressor(max_iter=500, random_state=state)
    model = make_pipeline(columns, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is part of "defaults"
        model.fit(features, tr[target])
    pred = model.predict(te.drop(columns=target))
    if task == "classification":
        return float(accuracy_score(te[target], pred))
    return float(r2_score(te[target], pred))


def run() -> list[dict]:
    results = []
    with common.temp_dir() as tmp:
        for name, (task, metric) in TABLES.items():
            train = common.SAMPLE_DATA / name / "train.csv"
            test = common.SAMPLE_DATA / name / "test.csv"
            dl_scores = [dl_score(train, test, metric, s, tmp) for s in DL_SEEDS]
            sk_scores = [sklearn_score(train, test, task, s) for s in SK_STATES]
            dl_mean = sum(dl_scores) / len(dl_scores)
            sk_mean = sum(sk_scores) / len(sk_scores)
            note = (
                f"{metric}; dl seeds {', '.join(f'{v:.3f}' for v in dl_scores)}; "
                f"sklearn {', '.join(f'{v:.3f}' for v in sk_scores)}"
            )
            if task == "regression":
                scaled = [sklearn_score(train, test, task, s, scale_target=True) for s in SK_STATES]
                note += f"; sklearn with a standardised target {sum(scaled) / len(scaled):.3f}"
            results.append(
                common.result(
                    f"quality_{name}",
                    dl_mean,
                    sk_mean,
                    "",
                    dl_mean - sk_mean,
                    GOAL,
                    kind="diff",
                    higher_is_better=True,
                    note=note,
                )
            )
    return results


if __name__ == "__main__":
    common.main(run)
