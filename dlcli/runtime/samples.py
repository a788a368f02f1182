"""GAN samples from an exported generator (`dl predict GAN.onnx --samples N`): standard normal
`noise` from numpy's generator seeded by --seed, the graph's `image` output ((N, C, H, W) in
[0, 1]), written by imagegrid.py as `dl predict GAN.pt` writes them: -o FILE.png (one grid) and/or
--output-dir DIR (one PNG per sample). numpy's noise is not torch's, so a seed gives other images
than the .pt path with the same seed (docs/onnx.md)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.console import info
from dlcli.errors import ModelFileError, UsageError
from dlcli.runtime.session import OnnxModel

GEN_BATCH = (
    256  # noise vectors per run (fixed, so a seed gives the same images), as families/gan.py
)
MAX_GRID = 1024  # samples one -o grid may hold, as families/gan.py


def noise(latent: int, n: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start index, (b, latent) float32 standard normal noise) for n samples in GEN_BATCH rows."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, GEN_BATCH):
        yield start, rng.standard_normal((min(GEN_BATCH, n - start), latent), dtype=np.float32)


def check(path: str, inputs: list[str], samples: int | None, output: Any, output_dir: Any) -> None:
    """The .pt path's lines (families/gan.py) for what a generator cannot do."""
    if inputs:
        raise UsageError(
            "a GAN model takes no inputs; it generates images",
            f"dl predict {path} --samples 64 -o samples.png",
        )
    if samples is None:
        raise UsageError(
            "a GAN model generates images: give --samples N",
            f"dl predict {path} --samples 64 -o samples.png",
        )
    if not output and not output_dir:
        raise UsageError(
            f"--samples {samples}: say where the images go: -o FILE.png for one grid, "
            "or --output-dir DIR for one PNG per sample"
        )
    if output and Path(output).suffix.lower() != ".png":
        raise UsageError(f"-o {output}: a GAN writes a PNG grid; name it FILE.png")
    if output and samples > MAX_GRID:
        raise UsageError(
            f"--samples {samples:,}: one grid (-o {output}) holds at most {MAX_GRID:,} samples",
            f"write more with --output-dir DIR, one PNG per sample, in batches of {GEN_BATCH}",
        )
    if output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise UsageError(f"--output-dir {output_dir}: exists and is not a folder")


def images(model: OnnxModel, n: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start index, (b, C, H, W) images in [0, 1]) for `n` samples of the generator graph from
    numpy noise seeded by `seed` (the same images for the same seed, whoever asks)."""
    for start, z in noise(latent_size(model), n, seed):
        yield start, dict(zip(model.output_names, model.run(z), strict=True))["image"]


def latent_size(model: OnnxModel) -> int:
    """The generator's noise size (`dl.latent`), checked with its `image` output."""
    latent = model.meta.get("dl.latent", "")
    if not latent.isdigit() or "image" not in model.output_names:
        raise ModelFileError(f"{model.path}: a GAN graph without dl.latent or an `image` output")
    return int(latent)


def generate(model: OnnxModel, inputs: list[str], opts: Any) -> None:
    """--samples N images from the generator graph to -o FILE.png and/or --output-dir DIR."""
    from dlcli.imagegrid import write_samples

    check(model.path, inputs, opts.samples, opts.output, opts.output_dir)
    seed = opts.seed if opts.seed is not None else secrets.randbits(31)
    # lazy: a graph without dl.latent fails on the first batch, before anything is written
    write_samples(images(model, opts.samples, seed), opts.samples, opts.output, opts.output_dir)
    where = " and ".join(f for f in (opts.output, opts.output_dir and f"{opts.output_dir}/") if f)
    info(f"wrote {opts.samples} samples to {where} (seed {seed}, numpy noise)")
