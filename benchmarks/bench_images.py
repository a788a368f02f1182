"""Image folders: training throughput against a per-epoch Pillow `DataLoader`, and the decode cache.

Data: 10,000 64x64 RGB JPEGs (quality 90; random gradients, a sinusoidal texture and a few shapes,
so decoding costs what real photos of that size cost), 1,000 in each of 10 class folders.

Figures (all measured in this run):
- `images_pipeline`: seconds to produce one epoch of ready float batches of 128, no model. dl: its
  own in-memory uint8 tensor (from `ImageFolderSource.prepare`, i.e. the cache) batched by
  `TensorBatches.shuffled` and standardised by the preprocessor's `ImageTransform`, as the trainer does.
  Reference: `DataLoader(batch_size=128, shuffle=True, num_workers=2)` over a Dataset that opens
  each JPEG with Pillow, converts to RGB, resizes to 64 and makes a normalised float tensor. Same
  8,000 images (80%), epoch 2 of each (the reference's workers restart each epoch, as by default).
- `images_train_throughput`: images/s of training epochs with the `cnn` preset network. dl: `dl
  train --arch cnn --image-size 64 --epochs 3 --batch-size 128 --patience 0`, `samples_per_s` of
  epochs 2..3 from the model file's history (its epoch time includes a validation pass over the
  other 20%; the reference's does not, which favours the reference). Reference: the same network
  from `build_network`, AdamW, cross-entropy, the Pillow `DataLoader` above; epoch 2. On a CPU the
  network costs ~50 ms per image against ~0.2 ms to decode one, so this figure runs on a subset
  (BENCH_IMAGES_TRAIN, default 640 images on CPU, all 10,000 on a GPU) to stay within minutes.
- `images_cache_start` / `images_cache_load`: two `dl train` runs on the unchanged folder with one
  DL_CACHE_DIR (a tiny network, one epoch: only the start matters). Process start to the first
  epoch's start (the trainer's `on_train_start`, timed by a small wrapper), and dl's own
  `load_seconds` (data preparation). Figure: first run / second run.

Parts: `python benchmarks/bench_images.py --only cache` (or `pipeline`, `train`; repeatable) runs
only those figures; `run_all.py` runs all three.

Threads: both sides use BENCH_THREADS (default 1, what dl itself picks for this network) torch
threads; the dl children get DL_THREADS/OMP_NUM_THREADS, the reference `torch.set_num_threads`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
import numpy as np

N_IMAGES, CLASSES, SIZE, QUALITY, SEED = 10_000, 10, 64, 90, 0
BATCH, EPOCHS = 128, 3
TRAIN_SHARE = 0.8
CPU_TRAIN_IMAGES = 640  # images for the full-network figure on a CPU (BENCH_IMAGES_TRAIN)
GOAL = 5.0
MEAN, STD = 0.5, 0.25  # the reference's fixed normalisation (dl's preprocessor fits its own)

# dl's CLI with the time of the trainer's `on_train_start` written to argv[1] (wall clock, so the
# parent can subtract the time it spawned the process).
_HOOK = """
import sys, time
import dlcli.engine.trainer as trainer
marker, emit = sys.argv[1], trainer.Trainer._emit
def timed_emit(self, event, *args):
    if event == "on_train_start":
        with open(marker, "w") as fh:
            fh.write(repr(time.time()))
    emit(self, event, *args)
trainer.Trainer._emit = timed_emit
sys.argv = ["dl", *sys.argv[2:]]
from dlcli.cli import main
main()
"""

TINY_SPEC = "name: tiny\nlayers:\n  - global_avgpool\n"  # cache runs: the model does not matter


# --- data -------------------------------------------------------------------------------------


def _picture(index: int, label: int) -> object:
    """One 64x64 RGB picture: per-channel gradient + a sinusoid, then 2-5 filled shapes whose
    colour leans towards the class."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([SEED, index])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)  # (S, S) each
    coef = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
    freq, phase = rng.uniform(1, 4, 2).astype(np.float32), rng.uniform(0, 6.3)
    wave = np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + phase)  # (S, S)
    planes = coef[:, :1, None] * xx + coef[:, 1:2, None] * yy + coef[:, 2:3, None]  # (3, S, S)
    planes = planes + 0.3 * coef[:, 3:4, None] * wave
    pixels = np.clip((planes * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    im = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(im)
    hue = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256])
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, SIZE - 8, 2)
        x1, y1 = x0 + rng.integers(6, 32), y0 + rng.integers(6, 32)
        colour = tuple(int(c) for c in np.clip(hue + rng.integers(-60, 60, 3), 0, 255))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return im


def write_images(root: Path, n: int = N_IMAGES) -> list[tuple[str, int]]:
    """n JPEGs in `root/class_<k>/<i>.jpg`, round-robin over the classes. -> [(path, label)]."""
    items = [(str(root / f"class_{i % CLASSES}" / f"{i:05d}.jpg"), i % CLASSES) for i in range(n)]
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        _picture(i, items[i][1]).save(items[i][0], quality=QUALITY)

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, range(n)))
    return items


def subset(items: list[tuple[str, int]], root: Path, n: int) -> list[tuple[str, int]]:
    """The first n images (round-robin, so balanced) linked into a folder of their own."""
    chosen = []
    for path, label in items[:n]:
        dst = root / f"class_{label}" / Path(path).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dst)
        except OSError:
            dst.write_bytes(Path(path).read_bytes())
        chosen.append((str(dst), label))
    return chosen


def train_part(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """A seeded, class-stratified 80% (dl's own split is also stratified, 80/20)."""
    rng = np.random.default_rng(SEED)
    keep = []
    for k in range(CLASSES):
        mine = [it for it in items if it[1] == k]
        idx = rng.permutation(len(mine))[: round(len(mine) * TRAIN_SHARE)]
        keep += [mine[i] for i in sorted(idx)]
    return keep


# --- the reference: per-epoch Pillow decode through a DataLoader ------------------------------


def pillow_loader(items: list[tuple[str, int]]):
    from torch.utils.data import DataLoader

    return DataLoader(PillowImages(items), batch_size=BATCH, shuffle=True, num_workers=2)


class PillowImages:
    """(3, 64, 64) float32 normalised + label, decoded from the JPEG on every access."""

    def __init__(self, items: list[tuple[str, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            im = im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD  # (S, S, 3)
        return torch.from_numpy(a.transpose(2, 0, 1).copy()), label


def reference_pipeline_epoch(items: list[tuple[str, int]]) -> tuple[float, int]:
    """(seconds, images) of epoch 2 of the Pillow DataLoader with nothing but iteration."""
    loader = pillow_loader(items)
    seconds, count = 0.0, 0
    for _ in range(2):
        t0, count = time.perf_counter(), 0
        for xb, _yb in loader:
            count += len(xb)
        seconds = time.perf_counter() - t0
    return seconds, count


def reference_train_throughput(items: list[tuple[str, int]], threads: int) -> float:
    """Images/s of epoch 2 of a hand-written loop: cnn preset, AdamW, cross-entropy."""
    import torch

    from dlcli.model.builder import build_network
    from dlcli.spec.schema import load_preset

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = build_network(load_preset("cnn")[0], (3, SIZE, SIZE), CLASSES).module.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        loader = pillow_loader(items)
        rate = 0.0
        for _ in range(2):
            net.train()
            t0, count = time.perf_counter(), 0
            for xb, yb in loader:
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                loss = loss_fn(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                count += len(xb)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rate = count / (time.perf_counter() - t0)
        return rate
    finally:
        torch.set_num_threads(previous)  # run_all runs other benchmarks in this process


# --- dl -----------------------------------------------------------------------------------------


def dl_pipeline_epoch(folder: Path, cache: Path, threads: int) -> tuple[float, int]:
    """(seconds, images) of epoch 2 of dl's batching + uint8 -> float preprocessing, no model."""
    import torch

    from dlcli.data.images import ImageFolderSource, ImageOptions
    from dlcli.data.sources import DataOptions
    from dlcli.engine.batches import as_batches

    old_env, old_threads = os.environ.get("DL_CACHE_DIR"), torch.get_num_threads()
    os.environ["DL_CACHE_DIR"] = str(cache)
    torch.set_num_threads(threads)
    try:
        opts = DataOptions(extra={"image": ImageOptions(image_size=SIZE)})
        prep = ImageFolderSource.prepare(str(folder), opts)
        batches = as_batches(prep.x_train, prep.y_train, BATCH)
        preprocess = prep.preprocessor.preprocess_module()
        gen = torch.Generator().manual_seed(SEED)
        seconds, count = 0.0, 0
        with torch.no_grad():
            for _ in range(2):
                t0, count = time.perf_counter(), 0
                for xb, _yb in batches.shuffled(gen):
                    count += len(preprocess(xb))
                seconds = time.perf_counter() - t0
        return seconds, count
    finally:
        torch.set_num_threads(old_threads)
        if old_env is None:
            os.environ.pop("DL_CACHE_DIR", None)
        else:
            os.environ["DL_CACHE_DIR"] = old_env


def dl_train(folder: Path, out: Path, args: list, env: dict[str, str]) -> dict:
    """One `dl train ... --json` run through the timing hook. -> its JSON summary plus `wall`
    (spawn to exit) and `to_first_epoch` (spawn to the trainer's on_train_start)."""
    marker = out.with_suffix(".start")
    cmd = [common.PYTHON, "-c", _HOOK, str(marker), "train", str(folder), "-o", str(out), *args]
    cmd += ["--patience", "0", "--no-plots", "--quiet", "--json"]
    t0 = time.time()
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        cwd=out.parent,
        env={**os.environ, **env},
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dl train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    summary["wall"] = wall
    if marker.exists():
        summary["to_first_epoch"] = float(marker.read_text()) - t0
        summary["timed_by"] = "on_train_start"
    else:  # the hook missed (trainer internals changed): spawn to exit minus the fit
        summary["to_first_epoch"] = wall - summary["train_seconds"]
        summary["timed_by"] = "spawn to exit minus train_seconds"
    return summary


def dl_train_throughput(
    folder: Path, tmp: Path, env: dict[str, str]
) -> tuple[float, dict, list[float]]:
    """(median samples/s of epochs 2..3, summary, per-epoch samples/s) of `dl train --arch cnn`."""
    from dlcli import modelfile

    model = tmp / "cnn.pt"
    args = ["--arch", "cnn", "--image-size", SIZE, "--epochs", EPOCHS, "--batch-size", BATCH]
    summary = dl_train(folder, model, args, env)
    rates = [float(r["samples_per_s"]) for r in modelfile.load(model)["history"]]
    return common.median_of(rates[1:]), summary, rates


# --- the benchmark ------------------------------------------------------------------------------


PARTS = ("cache", "pipeline", "train")


def run(only: tuple[str, ...] = PARTS) -> list[dict]:
    """The figures of the parts named in `only` (all by default; `run_all.py` runs all)."""
    import torch

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    gpu = torch.cuda.is_available()
    n_train = int(os.environ.get("BENCH_IMAGES_TRAIN") or (N_IMAGES if gpu else CPU_TRAIN_IMAGES))
    device = "cuda" if gpu else "cpu"
    results = []
    with common.temp_dir() as tmp:
        t0 = time.perf_counter()
        items = write_images(tmp / "images")
        gen_s = time.perf_counter() - t0
        load = common.load_note()
        print(f"generated {len(items):,} JPEGs in {gen_s:.1f} s; {load}", file=sys.stderr)

        cache, spec = tmp / "cache", tmp / "tiny.yaml"
        if "cache" in only:  # 1. two runs on the unchanged folder, one cache folder
            results += cache_figures(tmp, cache, spec, threads, load)
        if "pipeline" in only:  # 2. data pipeline alone, all 10k images (the cache warm)
            results.append(pipeline_figure(tmp, items, cache, threads))
        if "train" in only:  # 3. training with the cnn network (a subset on a CPU: see above)
            results.append(train_figure(tmp, items, n_train, device, threads))
    return results


def cache_figures(tmp: Path, cache: Path, spec: Path, threads: int, load: str) -> list[dict]:
    """images_cache_start and images_cache_load: two tiny `dl train` runs, one cache folder."""
    results = []
    spec.write_text(TINY_SPEC)
    env = {**common.thread_env(threads), "DL_CACHE_DIR": str(cache)}
    args = ["--spec", spec, "--image-size", SIZE, "--epochs", 1, "--batch-size", BATCH]
    first = dl_train(tmp / "images", tmp / "tiny1.pt", args, env)
    second = dl_train(tmp / "images", tmp / "tiny2.pt", args, env)
    a, b = first["to_first_epoch"], second["to_first_epoch"]
    note = (
        f"dl = second run, reference = first run; timed to {first['timed_by']}; load_seconds "
        f"{first['load_seconds']:.2f} s / {second['load_seconds']:.2f} s; {load}"
    )
    results.append(
        common.result(
            "images_cache_start", b, a, "s", a / b, GOAL, higher_is_better=True, note=note
        )
    )
    la, lb = first["load_seconds"], second["load_seconds"]
    note = f"dl's load_seconds (list, decode or cache, split, channel stats); {load}"
    results.append(
        common.result(
            "images_cache_load", lb, la, "s", la / lb, GOAL, higher_is_better=True, note=note
        )
    )
    return results


def _rate_result(name: str, dl_rate: float, ref_rate: float, note: str) -> dict:
    """An img/s figure: dl / reference, higher is better."""
    return common.result(
        name, dl_rate, ref_rate, "img/s", dl_rate / ref_rate, GOAL, higher_is_better=True, note=note
    )


def pipeline_figure(tmp: Path, items: list[tuple[str, int]], cache: Path, threads: int) -> dict:
    """images_pipeline: epoch 2 of ready batches, dl's cached tensor vs the Pillow DataLoader."""
    train_items = train_part(items)
    load = common.load_note()
    dl_s, dl_n = dl_pipeline_epoch(tmp / "images", cache, threads)
    ref_s, ref_n = reference_pipeline_epoch(train_items)
    dl_rate, ref_rate = dl_n / dl_s, ref_n / ref_s
    note = (
        f"epoch 2: dl {dl_n:,} images in {dl_s:.3f} s, reference {ref_n:,} in {ref_s:.2f} s; "
        f"{threads} torch thread(s), 2 DataLoader workers; {load}"
    )
    return _rate_result("images_pipeline", dl_rate, ref_rate, note)


def train_figure(
    tmp: Path, items: list[tuple[str, int]], n_train: int, device: str, threads: int
) -> dict:
    """images_train_throughput: `dl train --arch cnn` vs the same network over the DataLoader."""
    folder = tmp / "images"
    if n_train < N_IMAGES:
        folder = tmp / "subset"
        chosen = subset(items, folder, n_train)
    else:
        chosen = items
    load = common.load_note()
    env = {**common.thread_env(threads), "DL_CACHE_DIR": str(tmp / "cache_cnn")}
    dl_rate, summary, rates = dl_train_throughput(folder, tmp, env)
    ref_rate = reference_train_throughput(train_part(chosen), threads)
    note = (
        f"{n_train:,} images ({summary['train_rows']:,} dl training rows), {device}; "
        f"dl samples/s per epoch {', '.join(f'{r:.1f}' for r in rates)} (incl. validation); "
        f"{threads} torch thread(s); {load}"
    )
    return _rate_result("images_train_throughput", dl_rate, ref_rate, note)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    chosen = tuple(parser.parse_args().only or PARTS)
    common.main(lambda: run(chosen))
