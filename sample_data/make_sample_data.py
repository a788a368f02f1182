"""Regenerate the tables in sample_data/ from the packages that ship them (run once; output is committed).

- penguins: Palmer Archipelago penguins (Gorman, Williams & Fraser 2014; CC0), via the
  `palmerpenguins` package. Numeric and categorical columns with missing values; label: species.
- breast_cancer: Wisconsin Diagnostic Breast Cancer (UCI; Street, Wolberg & Mangasarian 1993),
  via scikit-learn. 30 numeric columns; label: diagnosis (malignant/benign).
- diabetes: disease progression one year after baseline (Efron et al. 2004), via scikit-learn.
  10 numeric columns; target: progression (regression).

Each set is split with a fixed seed into <name>/train.csv, <name>/test.csv (labelled) and
<name>/rows.csv (the test rows without the label), used by `make demo` and the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def _write(name: str, frame: pd.DataFrame, label: str, test_share: float = 0.2) -> None:
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(frame))
    k = int(len(frame) * test_share)
    test, train = frame.iloc[np.sort(idx[:k])], frame.iloc[np.sort(idx[k:])]
    out = HERE / name
    out.mkdir(exist_ok=True)
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    test.drop(columns=[label]).to_csv(out / "rows.csv", index=False)


def main() -> None:
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_breast_cancer, load_diabetes

    p = load_penguins()
    p = p[[c for c in p.columns if c != "species"] + ["species"]]
    _write("penguins", p, "species")

    bc = load_breast_cancer(as_frame=True)
    frame = bc.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = np.where(bc.target == 0, "malignant", "benign")
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    _write("breast_cancer", frame, "diagnosis")

    d = load_diabetes(as_frame=True, scaled=False)
    frame = d.frame.rename(columns={"target": "progression"})
    _write("diabetes", frame, "progression")


if __name__ == "__main__":
    main()
