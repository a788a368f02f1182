"""Seconds per training epoch: `dl train` vs an idiomatic hand-written PyTorch loop.

Data: 200k x 50 float table, binary label from a random linear rule plus noise. dl holds out 20%
for validation, so the reference trains on 160k rows. Both use the `mlp` preset network built by
dl's own builder, AdamW at lr 3e-3, batch 256, BCEWithLogitsLoss, and the same thread count:
BENCH_THREADS, default 1 (what dl itself picks for a model this small, and the only count that gives
stable figures on a 2-core machine shared with other work).
dl's `epoch_seconds` include its validation pass, so the reference epoch includes one too (the
train-only time is shown in the note). Figure: median of epochs 2..3 of each.
"""

from __future__ import annotations

import json
import os
import time

import common

ROWS, COLS, EPOCHS, BATCH = 200_000, 50, 3, 256
TRAIN_ROWS = int(ROWS * 0.8)
GOAL = 1.0


def dl_epoch_seconds(csv, threads: int) -> tuple[float, int]:
    args = [common.DL, "train", csv, "-o", csv.parent / "model.pt", "--arch", "mlp"]
    args += ["--epochs", EPOCHS, "--batch-size", BATCH, "--schedule", "none", "--patience", 0]
    args += ["--no-plots", "--quiet", "--json"]
    run = common.run_measured(args, env=common.thread_env(threads)).check()
    summary = json.loads(run.stdout)
    return common.median_of(summary["epoch_seconds"][1:]), summary["train_rows"]


def reference_epoch_seconds(csv, threads: int) -> tuple[float, float]:
    """(median train+validation seconds, median train-only seconds) of epochs 2..3."""
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dlcli.model.builder import build_network
    from dlcli.spec.schema import load_preset

    frame = pd.read_csv(csv, engine="pyarrow")
    x = frame.drop(columns="label").to_numpy(np.float32)
    y = frame["label"].to_numpy(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, va = perm[:TRAIN_ROWS], perm[TRAIN_ROWS:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    x = (x - mean) / std
    x_tr, y_tr = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    x_va, y_va = torch.from_numpy(x[va]), torch.from_numpy(y[va])

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build_network(load_preset("mlp")[0], (COLS,), 1).module
        loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=BATCH, shuffle=True)
        return _time_epochs(net, loader, x_va, y_va)
    finally:
        torch.set_num_threads(previous)  # run_all runs other benchmarks in this process


def _time_epochs(net, loader, x_va, y_va) -> tuple[float, float]:
    import torch

    from dlcli.engine.task_step import member_loss, trained_members

    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    # a packed ensemble (the mlp preset) trains each member on its own loss, as dl does
    train_loss = member_loss(lambda z, y: loss_fn(z.squeeze(-1), y), trained_members(net))
    total, train_only = [], []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        net.train()
        for xb, yb in loader:
            loss = train_loss(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        net.eval()
        with torch.no_grad():
            val_loss = sum(
                float(loss_fn(net(x_va[i : i + 8192]).squeeze(-1), y_va[i : i + 8192]))
                for i in range(0, len(x_va), 8192)
            )
        assert val_loss == val_loss  # keep the result alive; NaN would mean a broken setup
        train_only.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    return common.median_of(total[1:]), common.median_of(train_only[1:])


def run() -> list[dict]:
    threads = int(os.environ.get("BENCH_THREADS", "1"))  # the dl child gets the same
    with common.temp_dir() as tmp:
        csv = common.write_linear_binary(tmp / "data.csv", ROWS, COLS)
        load = common.load_note()
        dl_s, train_rows = dl_epoch_seconds(csv, threads)
        ref_s, ref_train_only = reference_epoch_seconds(csv, threads)
    note = (
        f"{train_rows:,} dl training rows; reference train-only {ref_train_only:.2f} s; "
        f"{threads} threads; {load}"
    )
    return [common.result("train_epoch", dl_s, ref_s, "s", dl_s / ref_s, GOAL, note=note)]


if __name__ == "__main__":
    common.main(run)
