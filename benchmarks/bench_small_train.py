"""A whole `dl train` at defaults on a ~500-row table against the hand-written pandas + PyTorch
script a user would otherwise write, both measured as processes in the same run (issue 12).

Data: sample_data/breast_cancer/train.csv (456 rows, 30 numbers, a two-class label).
dl: `dl train train.csv -o <tmp>/model.pt` at defaults (run folder and plots included), process
start to exit. Reference: a script (`REFERENCE` below, run as `python -c`) that imports torch and
pandas, reads the CSV, holds 20% out, median-fills and standardises the numbers (one-hot for text
columns), builds the same network as dl's default `mlp` preset (read from the preset file: K
packed MLPs with batch norm, ReLU and dropout, K output layers, their mean at evaluation) and
trains it for the epochs dl ran (from dl's `--json` summary), with dl's batch size, AdamW, the
cosine schedule and a validation pass each epoch, then saves the weights with `torch.save`.
Runs alternate (dl, reference) `REPEAT` times; figure: median dl / median reference, goal <= 1.3.
Peak RSS of dl (< 500 MB) as a second figure; `--no-plots` and `import torch` in the note.
"""

from __future__ import annotations

import json

import common
import yaml

from dlcli.engine.trainer import TrainConfig

REPEAT = 5
GOAL_RATIO = 1.3
GOAL_MB = 500.0
DATA = common.SAMPLE_DATA / "breast_cancer" / "train.csv"
PRESET = common.REPO / "dlcli" / "spec" / "presets" / "mlp.yaml"

REFERENCE = r"""
import sys
import numpy as np
import pandas as pd
import torch
from torch import nn

path, out, epochs, batch, members, dropout, lr, wd = sys.argv[1:9]
hidden = [int(h) for h in sys.argv[9].split(",")]
epochs, batch, members = int(epochs), int(batch), int(members)
torch.manual_seed(0)
torch.set_num_threads(1)
frame = pd.read_csv(path)
target = frame.columns[-1]
y_codes, classes = pd.factorize(frame[target])
x = frame.drop(columns=target)
numeric = x.select_dtypes("number")
text = x.drop(columns=numeric.columns)
parts = [numeric.fillna(numeric.median())] + ([pd.get_dummies(text)] if len(text.columns) else [])
x = pd.concat(parts, axis=1)
x = torch.tensor(x.to_numpy(dtype=np.float32))
y = torch.tensor(y_codes, dtype=torch.long)
perm = torch.randperm(len(x))
n_val = len(x) // 5
val, train = perm[:n_val], perm[n_val:]
mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
x = (x - mean) / std


class Packed(nn.Module):  # K dense layers side by side
    def __init__(self, k, i, o):
        super().__init__()
        self.w = nn.Parameter(torch.randn(k, i, o) * (2 / i) ** 0.5)
        self.b = nn.Parameter(torch.zeros(k, 1, o))

    def forward(self, h):
        return torch.matmul(h, self.w) + self.b


class Norm(nn.Module):  # each member's own batch norm
    def __init__(self, k, h):
        super().__init__()
        self.k, self.h, self.bn = k, h, nn.BatchNorm1d(k * h)

    def forward(self, z):
        n = z.shape[1]
        return self.bn(z.transpose(0, 1).reshape(n, -1)).reshape(n, self.k, self.h).transpose(0, 1)


layers, width = [], x.shape[1]
for h in hidden:
    layers += [Packed(members, width, h), Norm(members, h), nn.ReLU(), nn.Dropout(float(dropout))]
    width = h
layers.append(Packed(members, width, len(classes)))
net = nn.Sequential(*layers)
opt = torch.optim.AdamW(net.parameters(), lr=float(lr), weight_decay=float(wd))
steps = (len(train) + batch - 1) // batch
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(epochs):
    net.train()
    order = train[torch.randperm(len(train))]
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        logits = net(x[idx])  # (K, B, classes): every member its own loss
        loss = loss_fn(logits.reshape(-1, len(classes)), y[idx].repeat(members))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        val_logits = net(x[val]).mean(0)
        val_loss = loss_fn(val_logits, y[val]).item()
        val_acc = (val_logits.argmax(1) == y[val]).float().mean().item()
torch.save(net.state_dict(), out)
"""


def preset_network() -> tuple[dict, dict]:
    """The default preset's ensemble layer and training section (the reference builds the same)."""
    spec = yaml.safe_load(PRESET.read_text())
    layer = spec["layers"][0]
    if "mlp_ensemble" not in layer:
        raise SystemExit("bench_small_train: the reference script builds an mlp_ensemble preset")
    return layer, spec["training"]


def run() -> list[dict]:
    layer, training = preset_network()
    with common.temp_dir() as tmp:
        load = common.load_note()
        args = [common.DL, "train", DATA, "-o", tmp / "model.pt", "--quiet", "--json"]
        summary = json.loads(common.run_measured(args).check().stdout)  # epochs it ran
        summary["batch_size"] = TrainConfig().resolved(summary["train_rows"]).batch_size
        ref_args = [
            common.PYTHON,
            "-c",
            REFERENCE,
            DATA,
            tmp / "ref.pt",
            summary["epochs_run"],
            summary["batch_size"],
            layer.get("members", 8),
            layer.get("dropout", 0.0),
            training["lr"],
            training["weight_decay"],
            ",".join(str(h) for h in layer["mlp_ensemble"]),
        ]
        dl_runs, ref_runs, bare_runs = [], [], []
        for _ in range(REPEAT):  # interleaved: load changes hit both sides alike
            dl_runs.append(
                common.run_measured([common.DL, "train", DATA, "-o", tmp / "m.pt"]).check()
            )
            ref_runs.append(common.run_measured(ref_args).check())
        for _ in range(2):
            args = [common.DL, "train", DATA, "-o", tmp / "n.pt", "--no-plots"]
            bare_runs.append(common.run_measured(args).check())
    torch_s = common.median_of(
        [r.seconds for r in common.median_run([common.PYTHON, "-c", "import torch"], 2)]
    )
    dl_s = common.median_of([r.seconds for r in dl_runs])
    ref_s = common.median_of([r.seconds for r in ref_runs])
    dl_mb = common.median_of([r.peak_rss_mb for r in dl_runs])
    ref_mb = common.median_of([r.peak_rss_mb for r in ref_runs])
    note = (
        f"{summary['train_rows']} training rows, {summary['epochs_run']} epochs "
        f"({summary['stopped']}), batch {summary['batch_size']}; dl: data "
        f"{summary['load_seconds']:.2f} s, fit {summary['train_seconds']:.2f} s; dl --no-plots "
        f"{common.median_of([r.seconds for r in bare_runs]):.2f} s; import torch {torch_s:.2f} s; "
        f"runs dl {', '.join(f'{r.seconds:.2f}' for r in dl_runs)}, reference "
        f"{', '.join(f'{r.seconds:.2f}' for r in ref_runs)}; {load}"
    )
    return [
        common.result("small_train_ratio", dl_s, ref_s, "s", dl_s / ref_s, GOAL_RATIO, note=note),
        common.result("small_train_peak_rss", dl_mb, ref_mb, "MB", dl_mb, GOAL_MB, kind="abs"),
    ]


if __name__ == "__main__":
    common.main(run)
