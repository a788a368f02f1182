"""Frozen-feature cache (issue 14, part 4): `dl train --init-from SRC --freeze features` on images
without augmentation trains the head on the frozen layers' outputs computed once; the reference is
the same command with DL_FEATURE_CACHE=0 (every epoch through the frozen `resnet` features).

Figures: the median epoch time of epochs 2..N through the frozen network / with the cache (goal
>= 20x), and whether the two models predict the same (classes equal, probabilities within 1e-4)
on every image. The notes give each run's whole wall time (the cached run includes the one pass
that computes the features) and a second cached run's, which reads them from the disk cache.

    .venv/bin/python benchmarks/bench_feature_cache.py     # BENCH_FC_IMAGES (default 300), BENCH_FC_SIZE (48)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DL, main, result, temp_dir, thread_env
from PIL import Image

N_IMAGES = int(os.environ.get("BENCH_FC_IMAGES", "300"))
SIZE = int(os.environ.get("BENCH_FC_SIZE", "48"))
EPOCHS = 4
CLASSES = 3


def write_images(root: Path, n: int, seed: int) -> Path:
    """n RGB images in 3 class folders: the class is the dominant colour under strong noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % CLASSES
        a = rng.integers(0, 120, (SIZE, SIZE, 3))
        a[..., k] += 100
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.astype(np.uint8)).save(root / f"c{k}" / f"{i:04d}.png")
    return root


def dl(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run([DL, *args], env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"bench_feature_cache: dl {' '.join(args)} failed:\n{res.stderr}")
    return time.perf_counter() - t0, res.stdout


def run() -> list[dict]:
    with temp_dir("dlbench-fc-") as tmp:
        tmp = Path(tmp)
        old, new = write_images(tmp / "old", N_IMAGES, 0), write_images(tmp / "new", N_IMAGES, 1)
        env = {**os.environ, **thread_env(1), "DL_CACHE_DIR": str(tmp / "cache")}
        common = ["--image-size", str(SIZE), "--no-plots", "--quiet", "--seed", "1"]
        dl(
            [
                "train",
                str(old),
                "--arch",
                "resnet",
                "--epochs",
                "1",
                *common,
                "-o",
                str(tmp / "src.pt"),
            ],
            env,
        )
        tune = ["--init-from", str(tmp / "src.pt"), "--freeze", "features", "--epochs", str(EPOCHS)]
        tune += [*common, "--batch-size", "32", "--patience", "0", "--json"]
        runs = {}
        for name, flag in (("through", "0"), ("cached", "1"), ("cached_again", "1")):
            wall, out = dl(["train", str(new), *tune, "-o", str(tmp / f"{name}.pt")],
                           {**env, "DL_FEATURE_CACHE": flag})  # fmt: skip
            runs[name] = (wall, json.loads(out))
        epoch = {k: float(np.median(s["epoch_seconds"][1:])) for k, (_, s) in runs.items()}
        frames = []
        for name in ("through", "cached"):
            _, out = dl(["predict", str(tmp / f"{name}.pt"), str(new), "--proba", "-q"], env)
            frames.append(pd.read_csv(io.StringIO(out), dtype={"prediction": str}))
        probs = [c for c in frames[0] if c.startswith("proba_")]
        diff = float(np.abs(frames[0][probs].to_numpy() - frames[1][probs].to_numpy()).max())
        same = frames[0]["prediction"].tolist() == frames[1]["prediction"].tolist()
        ratio = epoch["through"] / max(epoch["cached"], 1e-9)
        note = (
            f"resnet {SIZE}px, {N_IMAGES} images, {EPOCHS} epochs; whole runs: through "
            f"{runs['through'][0]:.1f} s, cached {runs['cached'][0]:.1f} s (features computed once), "
            f"cached again {runs['cached_again'][0]:.1f} s (read from the disk cache); "
            f"cached-again epochs {epoch['cached_again'] * 1000:.1f} ms"
        )
        return [
            result(
                "feature_cache_epoch_speedup",
                epoch["cached"],
                epoch["through"],
                "s",
                ratio,
                20.0,
                higher_is_better=True,
                note=note,
            ),
            result(
                "feature_cache_same_predictions",
                diff,
                None,
                "",
                float(same and diff <= 1e-4),
                1.0,
                kind="abs",
                higher_is_better=True,
                note=f"{len(frames[0])} images: classes {'equal' if same else 'DIFFER'}, "
                f"max |probability difference| {diff:.2e}",
            ),
        ]


if __name__ == "__main__":
    main(run)
