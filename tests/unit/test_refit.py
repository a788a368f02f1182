"""Refitting on every row after early stopping (engine/refit.py, `training.refit`, `--refit`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import PENGUINS

from dlcli import modelfile
from dlcli.data.buckets import BucketedTokens
from dlcli.engine.refit import all_rows


def test_all_rows_joins_tensors_and_token_batches() -> None:
    x, y = all_rows(
        torch.ones(3, 2), torch.tensor([0, 1, 0]), torch.zeros(2, 2), torch.tensor([1, 1])
    )
    assert x.shape == (5, 2) and y.tolist() == [0, 1, 0, 1, 1]
    a = BucketedTokens(
        torch.tensor([[2, 3, 0], [4, 0, 0]]), torch.tensor([2, 1]), torch.tensor([0, 1])
    )
    b = BucketedTokens(torch.tensor([[5, 6, 7, 8]]), torch.tensor([4]), torch.tensor([1]))
    both, labels = all_rows(a, a.y, b, b.y)
    assert both.ids.tolist() == [[2, 3, 0, 0], [4, 0, 0, 0], [5, 6, 7, 8]]
    assert both.lengths.tolist() == [2, 1, 4] and labels.tolist() == [0, 1, 1]
    assert all_rows(a, a.y, None, None) is None


def _train(dl_inproc, tmp_path: Path, name: str, *flags: str) -> tuple[dict, dict]:
    model = tmp_path / name
    args = ["train", PENGUINS / "train.csv", "-o", model, "--epochs", "6", "--patience", "2"]
    res = dl_inproc(*args, "--quiet", "--no-plots", "--json", *flags)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), modelfile.load(model)


def test_refit_trains_afresh_on_all_rows_for_the_best_epoch_count(
    dl_inproc, tmp_path: Path
) -> None:
    plain, plain_file = _train(dl_inproc, tmp_path, "plain.pt", "--no-refit")
    refit, refit_file = _train(dl_inproc, tmp_path, "refit.pt", "--refit")
    assert "refit_epochs" not in plain
    assert refit["refit_epochs"] == plain["best_epoch"] == refit_file["refit_epochs"]
    # the validated run is the same; its held-out metrics are the ones reported
    assert refit["metrics"] == plain["metrics"] and refit["epochs_run"] == plain["epochs_run"]
    w_plain, w_refit = plain_file["weights"]["network"], refit_file["weights"]["network"]
    assert w_plain.keys() == w_refit.keys()
    assert any(not torch.equal(w_plain[k], w_refit[k]) for k in w_plain)
    assert refit_file["train"]["refit"] is True
