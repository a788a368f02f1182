"""dl tune's choice of cross-validation when --folds is left out (tune/search.py: auto_folds), its
nested folds (tune/trial.py: nested: each fold trained as dl train trains, the fold's own rows
scored once at the end) and the trial it hands back (tune/select.py: the defaults unless beaten
by more than one standard error of the paired fold differences)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DIABETES, PENGUINS

from dlcli.data.contracts import DataOptions
from dlcli.data.sources import choose_source
from dlcli.data.split import cross_validation
from dlcli.tune import search, select
from dlcli.tune.trial import CachedSource, nested


def _prepared(path, **opts):
    options = DataOptions(**opts)
    source = choose_source(str(path), options)
    return source, source.prepare(str(path), options), options


def test_a_nested_fold_trains_on_the_folds_training_rows_and_tests_on_the_fold() -> None:
    path, opts = str(PENGUINS / "train.csv"), DataOptions()
    plain = CachedSource(choose_source(path, opts))
    nest = CachedSource(choose_source(path, opts), nest=True)
    with cross_validation(2, 5):
        fold, inner = plain.prepare(path, opts), nest.prepare(path, opts)
        assert nest.prepare(path, opts) is inner  # prepared once per fold
    assert fold.x_test is None  # without nesting the fold validates
    torch.testing.assert_close(inner.x_test, fold.x_val, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(inner.y_test, fold.y_val)
    # the fold's training rows, split again 80/20 and stratified (every class in both parts)
    assert len(inner.x_train) + len(inner.x_val) == len(fold.x_train)
    assert len(inner.x_val) == pytest.approx(0.2 * len(fold.x_train), abs=3)
    both = torch.cat([inner.x_train, inner.x_val]).nan_to_num(-1e9)
    key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
    assert key(both) == key(fold.x_train.nan_to_num(-1e9))
    assert set(inner.y_val.tolist()) == set(fold.y_train.tolist()) == set(inner.y_train.tolist())
    # the usual split (no fold) is never nested: the final model trains on it as dl train does
    assert nest.prepare(path, opts).x_test is None


def test_nesting_leaves_data_that_is_not_held_as_tensors_alone() -> None:
    _, prep, _ = _prepared(DIABETES / "train.csv")
    streamed = SimpleNamespace(**{**vars(prep), "x_train": object()})
    assert nested(streamed, 0.2, 1, False) is streamed
    out = nested(prep, 0.2, 1, False)  # regression: not stratified
    assert len(out.x_test) == len(prep.x_val) and len(out.x_val) > 0


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


def _trial(number: int, folds: list[float] | None, **params):
    attrs = {"fold_scores": folds} if folds is not None else {}
    return SimpleNamespace(
        number=number, params=params, user_attrs=attrs, state=SimpleNamespace(name="COMPLETE")
    )


def _study(*trials):
    return SimpleNamespace(get_trials=lambda deepcopy=False: list(trials))


DEFAULTS = {"lr": 0.001, "blend": 0.75}


def test_the_defaults_are_kept_unless_beaten_by_more_than_one_standard_error() -> None:
    base = _trial(0, [0.50, 0.40, 0.60, 0.45, 0.55], lr=0.001, blend=0.75, batch_size=32)
    # better on average (0.01) but not on every fold: mean gain 0.01, SE 0.0126
    lucky = _trial(7, [0.46, 0.42, 0.58, 0.47, 0.52], lr=0.01, blend=0.25, batch_size=16)
    choice = select.choose(_study(base, lucky), lucky, DEFAULTS, "minimize")
    assert choice.trial is base and choice.kept_defaults and choice.over is lucky
    assert choice.gain == pytest.approx(0.01) and choice.se == pytest.approx(0.012649, abs=1e-5)
    assert choice.needed == pytest.approx(math.sqrt(2 * math.log(2)))  # the best of 2 trials
    assert "kept the preset's defaults (trial 0): trial 7" in choice.describe("loss")
    assert choice.record()["rule"] == "defaults"
    # the defaults scored best themselves: handed back, and said so
    choice = select.choose(_study(base, lucky), base, DEFAULTS, "minimize")
    assert choice.trial is base and choice.record()["rule"] == "defaults"
    # better on every fold by about the same amount: a clear winner
    clear = _trial(9, [0.48, 0.385, 0.585, 0.43, 0.535], lr=0.003, blend=0.5, batch_size=32)
    choice = select.choose(_study(base, lucky, clear), clear, DEFAULTS, "minimize")
    assert choice.trial is clear and not choice.kept_defaults
    assert choice.record()["rule"] == "beat the defaults"
    # a maximised metric: higher fold scores are the gain
    acc = _trial(3, [0.96, 0.97, 0.95, 0.98, 0.96], lr=0.01, blend=1.0)
    base_acc = _trial(0, [0.95, 0.96, 0.94, 0.97, 0.95], lr=0.001, blend=0.75)
    assert select.choose(_study(base_acc, acc), acc, DEFAULTS, "maximize").trial is acc
    assert select.choose(_study(base_acc, acc), acc, DEFAULTS, "minimize").trial is base_acc


def test_without_comparable_defaults_the_best_scoring_trial_is_handed_back() -> None:
    best = _trial(5, [0.4, 0.5], lr=0.01, blend=0.5)
    assert select.choose(_study(best), best, DEFAULTS, "minimize").trial is best  # none
    assert select.choose(_study(best), best, {}, "minimize").record()["rule"] == "best"
    one_split = _trial(0, None, lr=0.001, blend=0.75)  # --folds 1: no fold scores
    assert select.choose(_study(one_split, best), best, DEFAULTS, "minimize").trial is best
    other_folds = _trial(0, [0.5, 0.5, 0.5], lr=0.001, blend=0.75)  # a resumed study, other K
    assert select.choose(_study(other_folds, best), best, DEFAULTS, "minimize").trial is best


def test_the_best_of_many_trials_needs_more_evidence() -> None:
    """A gain of 2.3 standard errors is clear for the best of 2 trials, not for the best of 40
    (where about 2.7 is what the luckiest of 40 equally good settings shows)."""
    assert select.threshold(1) == 1.0  # never under the one-standard-error rule
    assert select.threshold(40) == pytest.approx(2.716, abs=1e-3)
    folds = [0.50, 0.40, 0.60, 0.45, 0.55]
    base = _trial(0, folds, lr=0.001, blend=0.75)
    diffs = [0.01, 0.03, 0.005, 0.0, 0.015]  # mean 0.012, SE 0.00515: 2.33 standard errors
    better = _trial(5, [f - d for f, d in zip(folds, diffs, strict=True)], lr=0.01, blend=0.5)
    choice = select.choose(_study(base, better), better, DEFAULTS, "minimize")
    assert choice.gain / choice.se == pytest.approx(2.331, abs=1e-3)
    assert choice.trial is better and choice.needed == pytest.approx(1.177, abs=1e-3)
    others = [_trial(n, [0.6] * 5, lr=0.02, blend=0.0) for n in range(6, 44)]  # 40 complete
    choice = select.choose(_study(base, better, *others), better, DEFAULTS, "minimize")
    assert choice.trial is base and choice.kept_defaults
    assert choice.needed == pytest.approx(2.716, abs=1e-3)
