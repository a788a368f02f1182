"""MNIST IDX files against the same images as PNG folders (issue 16): loading into the image cache's
uint8 tensor.

Data: 10,000 generated 28x28 MNIST-like digits (Pillow's default font at 22 px, white on black, a
random offset, brightness and a slight blur), written once as the four MNIST IDX files (train: all
10,000; t10k: 1,000) and once as PNGs in 10 class folders.

Figures (best of 3, the two sides interleaved, all in this run):
- `idx_load_vs_png_decode`: dl `IdxSource.prepare(mnist/)` (read, split, channel statistics) /
  `ImageFolderSource.prepare(pngs/)` with an empty DL_CACHE_DIR (the folder's first run: every PNG
  decoded, the cache file written). Goal <= 1.0: at least as fast.
- `idx_load_vs_png_cache`: the same IDX load / `ImageFolderSource.prepare(pngs/)` with the cache
  already written (the folder's second run: the memory-mapped cache file). Goal <= 1.0.
- `idx_gz_load_vs_png_cache`: as above with the gzipped IDX files (`.gz`, as MNIST is published).

Both sides run in this process with the same torch threads (BENCH_THREADS, default 1; the PNG decode
uses its own thread pool, up to the machine's cores, as dl does).
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import time
from pathlib import Path

import common
import numpy as np

N_IMAGES, N_TEST, SIDE, SEED, REPEAT = 10_000, 1_000, 28, 0, 3
GOAL = 1.0


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 MNIST-like digits (a 22 px glyph of Pillow's default font, white on black,
    random offset, stroke brightness and a slight blur) and (n,) labels 0-9."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=22)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.empty((n, SIDE, SIDE), dtype=np.uint8)
    for i, k in enumerate(labels):
        im = Image.new("L", (SIDE, SIDE))
        at = (14 + int(rng.integers(-3, 4)), 14 + int(rng.integers(-3, 4)))
        ImageDraw.Draw(im).text(
            at, str(k), fill=int(rng.integers(160, 256)), font=font, anchor="mm"
        )
        images[i] = np.asarray(im.filter(ImageFilter.GaussianBlur(0.5)))
    return images, labels


def idx_bytes(values: np.ndarray) -> bytes:
    magic = 2051 if values.ndim == 3 else 2049
    return (
        struct.pack(">i", magic) + struct.pack(f">{values.ndim}i", *values.shape) + values.tobytes()
    )


def write_data(tmp: Path) -> tuple[Path, Path, Path]:
    """(raw IDX folder, gzipped IDX folder, PNG class folders)."""
    from PIL import Image

    raw, gz, pngs = tmp / "mnist", tmp / "mnist_gz", tmp / "pngs"
    for folder in (raw, gz):
        folder.mkdir()
    for split, n, seed in (("train", N_IMAGES, SEED), ("t10k", N_TEST, SEED + 1)):
        images, labels = digits(n, seed)
        for kind, values, dim in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(values)
            (raw / f"{split}-{kind}-idx{dim}-ubyte").write_bytes(data)
            (gz / f"{split}-{kind}-idx{dim}-ubyte.gz").write_bytes(gzip.compress(data))
        if split == "train":
            for i, (image, k) in enumerate(zip(images, labels, strict=True)):
                folder = pngs / str(k)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / f"{i:05d}.png")
    return raw, gz, pngs


def timed_prepare(path: Path, cache: Path, image_size: int | None = None) -> tuple[float, int]:
    """(seconds, training rows) of the chosen source's `prepare` with DL_CACHE_DIR = `cache`."""
    from dlcli.data.image_preprocessor import ImageOptions
    from dlcli.data.sources import DataOptions, choose_source

    os.environ["DL_CACHE_DIR"] = str(cache)  # read again: settings follow the environment
    opts = DataOptions(extra={"image": ImageOptions(image_size=image_size, grayscale=True)})
    source = choose_source(str(path), opts)
    t0 = time.perf_counter()
    prepared = source.prepare(str(path), opts)
    seconds = time.perf_counter() - t0
    assert prepared.preprocessor.input_shape == (1, SIDE, SIDE), prepared.preprocessor.input_shape
    return seconds, len(prepared.x_train) + len(prepared.x_val)


def run() -> list[dict]:
    import torch

    from dlcli.console import set_quiet

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    set_quiet(True)
    old = os.environ.get("DL_CACHE_DIR")
    results = []
    with common.temp_dir() as tmp:
        t0 = time.perf_counter()
        raw, gz, pngs = write_data(tmp)
        load = common.load_note()
        print(
            f"generated {N_IMAGES:,} digits in {time.perf_counter() - t0:.1f} s; {load}",
            file=sys.stderr,
        )
        idx_s, gz_s, cold_s, warm_s = [], [], [], []
        try:
            for r in range(REPEAT):  # interleaved: each round times every side once
                cache = tmp / f"cache{r}"
                idx_s.append(timed_prepare(raw, cache)[0])
                gz_s.append(timed_prepare(gz, cache)[0])
                cold, n = timed_prepare(pngs, cache, SIDE)
                cold_s.append(cold)
                assert n == N_IMAGES, n
                warm_s.append(timed_prepare(pngs, cache, SIDE)[0])
        finally:
            if old is None:
                os.environ.pop("DL_CACHE_DIR", None)
            else:
                os.environ["DL_CACHE_DIR"] = old
            set_quiet(False)
    best = {
        k: min(v) for k, v in (("idx", idx_s), ("gz", gz_s), ("cold", cold_s), ("warm", warm_s))
    }
    note = f"10,000 28x28 digits, best of {REPEAT}; {load}"
    results.append(common.result(
        "idx_load_vs_png_decode", best["idx"], best["cold"], "s", best["idx"] / best["cold"], GOAL,
        note=f"PNG folders, empty cache (decode + cache write); {note}",
    ))  # fmt: skip
    results.append(common.result(
        "idx_load_vs_png_cache", best["idx"], best["warm"], "s", best["idx"] / best["warm"], GOAL,
        note=f"PNG folders, cache written (memory-mapped); {note}",
    ))  # fmt: skip
    results.append(common.result(
        "idx_gz_load_vs_png_cache", best["gz"], best["warm"], "s", best["gz"] / best["warm"], GOAL,
        note=f"gzipped IDX files; {note}",
    ))  # fmt: skip
    return results


if __name__ == "__main__":
    common.main(run)
