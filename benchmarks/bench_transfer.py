"""Transfer demonstration (issue 14): a pretrained resnet18 start beats training from scratch on
10 images per class.

1. Pre-train `--arch resnet18` from scratch on digit classes 0-4 of sample_data/digits/train
   (710 images, 16x16 grey, read at --image-size 32 as 3 channels; 15 epochs).
2. Save its backbone in torchvision's published layout (`conv1.weight` ... `layer4.1.bn2.*`, plus
   an `fc.*` of the published shape, as a torchvision checkpoint holds): a .pth state dict.
3. Fine-tune on classes 5-9 with 10 training images per class (a seeded pick of train/), with
   `--weights that.pth` and, for comparison, from scratch: same flags (15 epochs, batch size 8,
   the preset's AdamW and cosine schedule, the whole network trained), seeds 1, 2, 3.
4. Accuracy of each on all of digits/test/5..9 (`dl evaluate --json`).

Figure: mean accuracy with --weights minus from scratch; goal >= +0.10 (ten points). The note
adds two more starts from the same file, same seeds: `--fine-tune-epochs 0` (the fine-tuning
schedule off: everything trains at --lr from epoch 1) and `--freeze backbone` (the head alone).
About 3-6 minutes on 2 busy CPU cores (opt-in in run_all.py: `--only transfer`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import common
import numpy as np

DIGITS = common.SAMPLE_DATA / "digits"
SEEDS = (1, 2, 3)
PER_CLASS = 10
PRETRAIN_EPOCHS = int(os.environ.get("DL_BENCH_TRANSFER_PRETRAIN_EPOCHS", "15"))
FINETUNE_EPOCHS = int(os.environ.get("DL_BENCH_TRANSFER_EPOCHS", "15"))
FINETUNE_BATCH = 8  # 40 training images: 5 steps an epoch (the preset's 64 would make one)
GOAL = 0.10
SMALL = ["--arch", "resnet18", "--image-size", "32", "--no-plots", "--quiet"]


def _copy_classes(classes: str, folder: Path, per_class: int | None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        files = sorted((DIGITS / "train" / c).glob("*.png"))
        if per_class is not None:
            files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        (folder / c).mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / c / f.name)
    return folder


def _test_folder(classes: str, folder: Path) -> Path:
    for c in classes:
        shutil.copytree(DIGITS / "test" / c, folder / c)
    return folder


def save_published(model: Path, target: Path) -> int:
    """The backbone of a dl resnet18 model as torchvision's state dict (published key layout)."""
    import torch

    from dlcli import modelfile
    from dlcli.model.weights import manifest

    net = modelfile.load(model)["weights"]["network"]
    prefix = "backbone.0."
    state = {k[len(prefix) :]: v for k, v in net.items() if k.startswith(prefix)}
    for key in manifest("resnet18")["head"]:  # the ImageNet classifier's shape: left unused
        state[key] = torch.zeros(manifest("resnet18")["tensors"][key])
    torch.save(state, target)
    return len(state)


def _accuracy(model: Path, test: Path) -> float:
    run = common.run_measured([common.DL, "evaluate", model, test, "--json"]).check()
    return float(json.loads(run.stdout)["accuracy"])


def run() -> list[dict]:
    with common.temp_dir("dlbench-transfer-") as tmp:
        pre_data = _copy_classes("01234", tmp / "pre", None)
        test = _test_folder("56789", tmp / "test")
        t0 = time.perf_counter()
        pre = tmp / "pre.pt"
        common.run_measured(
            [common.DL, "train", pre_data, *SMALL, "-o", pre, "--epochs", PRETRAIN_EPOCHS]
        ).check()
        pre_s = time.perf_counter() - t0
        weights = tmp / "resnet18-digits04.pth"
        n = save_published(pre, weights)
        print(f"pre-trained on classes 0-4 in {pre_s:.0f} s; {n} tensors saved to {weights.name}")
        arms = {
            "pretrained": ["--weights", weights],  # the default schedule: head first, body lr/10
            "scratch": [],
            # besides (in the note): the schedule off, and the backbone frozen throughout
            "no_schedule": ["--weights", weights, "--fine-tune-epochs", "0"],
            "frozen": ["--weights", weights, "--freeze", "backbone"],
        }
        scores: dict[str, list[float]] = {how: [] for how in arms}
        for seed in SEEDS:
            few = _copy_classes("56789", tmp / f"few{seed}", PER_CLASS, seed)
            for how, extra in arms.items():
                model = tmp / f"{how}{seed}.pt"
                cmd = [common.DL, "train", few, *SMALL, "-o", model, "--seed", seed]
                cmd += ["--epochs", FINETUNE_EPOCHS, "--batch-size", FINETUNE_BATCH, *extra]
                common.run_measured(cmd).check()
                scores[how].append(_accuracy(model, test))
                print(f"seed {seed} {how}: test accuracy {scores[how][-1]:.3f}", flush=True)
    pre_mean, scratch_mean = (statistics.mean(scores[k]) for k in ("pretrained", "scratch"))
    note = (
        f"classes 5-9, {PER_CLASS}/class, {FINETUNE_EPOCHS} epochs, seeds {SEEDS}: --weights "
        f"{', '.join(f'{a:.3f}' for a in scores['pretrained'])} vs scratch "
        f"{', '.join(f'{a:.3f}' for a in scores['scratch'])}; --weights --fine-tune-epochs 0 "
        f"(no schedule) {', '.join(f'{a:.3f}' for a in scores['no_schedule'])}, mean "
        f"{statistics.mean(scores['no_schedule']):.3f}; --weights --freeze backbone "
        f"{', '.join(f'{a:.3f}' for a in scores['frozen'])}, mean "
        f"{statistics.mean(scores['frozen']):.3f}; pre-training "
        f"{PRETRAIN_EPOCHS} epochs on 0-4 {pre_s:.0f} s; {common.load_note()}"
    )
    return [
        common.result(
            "transfer_resnet18_digits",
            pre_mean,
            scratch_mean,
            "",
            pre_mean - scratch_mean,
            GOAL,
            kind="diff",
            higher_is_better=True,
            note=note,
        )
    ]


if __name__ == "__main__":
    run()
