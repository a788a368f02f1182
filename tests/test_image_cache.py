"""The image decode cache's fast paths: histogram channel statistics, the cache file's layout
(old layouts rebuilt), the unchanged-listing path against the per-file gather, and split copies."""

from __future__ import annotations

import pytest
import torch
from test_images import cache_dir, make_folder, prepare  # noqa: F401 (cache_dir: autouse fixture)

from dlcli.data import images


def reference_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """The float64 definition: mean and population std of x / 255 per channel (same sample)."""
    if len(x) > images.STATS_SAMPLE:
        x = x[torch.linspace(0, len(x) - 1, images.STATS_SAMPLE).long()]
    v = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64) / 255.0  # (C, n)
    mean, std = v.mean(1), v.std(1, unbiased=False)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return mean.tolist(), std.tolist()


@pytest.mark.parametrize(
    "shape", [(5000, 3, 8, 8), (7, 1, 9, 5), (1, 3, 4, 4), (300, 3, 32, 32), (0, 3, 4, 4)]
)
def test_channel_stats_equal_the_float64_reference(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    if shape[1] == 3 and shape[0]:
        x[:, 1] //= 5  # channels with different spreads
        x[:, 2] = 200  # a constant channel: std left at 1
    mean, std = images.channel_stats(x)
    ref_mean, ref_std = reference_stats(x) if shape[0] else ([0.0] * 3, [1.0] * 3)
    assert mean == pytest.approx(ref_mean, abs=1.5e-6)  # both rounded to 6 digits
    assert std == pytest.approx(ref_std, abs=1.5e-6)
    if shape[1] == 3 and shape[0]:
        assert std[2] == 1.0 and mean[2] == round(200 / 255, 6)


def test_channel_stats_use_the_evenly_spaced_sample() -> None:
    """Over STATS_SAMPLE images the statistics are those of the linspace sample, not of all."""
    n = images.STATS_SAMPLE * 2
    x = torch.zeros((n, 1, 2, 2), dtype=torch.uint8)
    x[1::2] = 255  # odd images white: the sample (every ~2nd image, rounded) is mixed
    picked = x[torch.linspace(0, n - 1, images.STATS_SAMPLE).long()]
    assert images.channel_stats(x)[0] == pytest.approx(reference_stats(picked)[0], abs=1e-6)


def test_warm_prepare_returns_the_cold_tensors(tmp_path) -> None:
    """The unchanged-folder path (the memory-mapped cache, split by index_select) gives exactly
    the pixels, labels and statistics of the first, decoding run; the results own their memory."""
    root = make_folder(tmp_path / "d", {"a": 9, "b": 7, "c": 8})
    cold, warm = prepare(root), prepare(root)
    assert (cold.info["decoded"], warm.info["cached"]) == (24, 24)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(cold, name), getattr(warm, name)), name
    assert (cold.encoder.mean, cold.encoder.std) == (warm.encoder.mean, warm.encoder.std)
    warm.x_train[0] = 0  # a plain tensor, not a view of the cache file
    assert torch.equal(prepare(root).x_train, cold.x_train)
