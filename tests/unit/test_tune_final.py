"""dl tune's choice of cross-validation when --folds is left out (tune/search.py: auto_folds) and
its final model after cross-validation (tune/final.py): every row trained on, for the folds' mean
kept epoch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from conftest import DIABETES, PENGUINS

from dlcli.data.contracts import DataOptions
from dlcli.data.sources import choose_source
from dlcli.tune import final, search


def _prepared(path, **opts):
    options = DataOptions(**opts)
    source = choose_source(str(path), options)
    return source, source.prepare(str(path), options), options


def test_merged_trains_on_every_row_and_validates_on_none() -> None:
    _, prep, _ = _prepared(PENGUINS / "train.csv")
    n_train, n_val = len(prep.x_train), len(prep.x_val)
    assert n_val > 0
    both = final.merged(prep)
    assert len(both.x_train) == len(both.y_train) == n_train + n_val == prep.info["rows"]
    assert len(both.x_val) == len(both.y_val) == 0
    # the validation rows, as prepared (missing values are NaN until the network's preprocessing)
    torch.testing.assert_close(both.x_train[n_train:], prep.x_val, rtol=0, atol=0, equal_nan=True)
    assert both.preprocessor is prep.preprocessor  # fitted once, on the usual split
    assert len(prep.x_train) == n_train  # the cached split itself is untouched


def test_merged_leaves_parts_that_are_not_one_tensor_shape_alone() -> None:
    _, prep, _ = _prepared(DIABETES / "train.csv")
    ragged = SimpleNamespace(**{**vars(prep), "x_val": prep.x_val[:, :2]})
    assert final.merged(ragged) is ragged
    streamed = SimpleNamespace(**{**vars(prep), "x_train": object()})
    assert final.merged(streamed) is streamed


def test_small_tables_cross_validate_unless_told_otherwise(tmp_path) -> None:
    source, prep, opts = _prepared(PENGUINS / "train.csv")
    assert search.auto_folds(source, prep, opts) == search.AUTO_FOLDS == 5
    with_val = DataOptions(val=str(PENGUINS / "test.csv"))
    source, prep, _ = _prepared(PENGUINS / "train.csv", val=with_val.val)
    assert search.auto_folds(source, prep, with_val) is None
    rng = np.random.default_rng(0)
    n = search.AUTO_FOLDS_BELOW
    big = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.normal(size=n)})
    big.to_csv(tmp_path / "big.csv", index=False)
    source, prep, opts = _prepared(tmp_path / "big.csv")
    assert search.auto_folds(source, prep, opts) is None  # a 20% split of 400+ rows is enough


def test_final_epochs_is_the_folds_mean_kept_epoch() -> None:
    trial = SimpleNamespace(user_attrs={"best_epochs": [40, 51, 47]})
    assert final.final_epochs(trial) == 46
    assert final.final_epochs(SimpleNamespace(user_attrs={"best_epochs": [0]})) == 1
    assert final.final_epochs(SimpleNamespace(user_attrs={})) is None
