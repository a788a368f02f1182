"""The image decode cache's fast paths: histogram channel statistics, the cache file's layout
(old layouts rebuilt), the unchanged-listing path against the per-file gather, and split copies."""

from __future__ import annotations

import os
import time

import pytest
import torch
from PIL import Image
from test_images import cache_dir, make_folder, prepare  # noqa: F401 (cache_dir: autouse fixture)

from dlcli.data import image_cache, image_store, images


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
    assert (cold.preprocessor.mean, cold.preprocessor.std) == (
        warm.preprocessor.mean,
        warm.preprocessor.std,
    )
    warm.x_train[0] = 0  # a plain tensor, not a view of the cache file
    assert torch.equal(prepare(root).x_train, cold.x_train)


def _cache_path(root) -> object:
    return image_store.cache_file(root, 16, 3, image_cache.POLICY)


def test_version_1_cache_is_rebuilt_in_place(tmp_path) -> None:
    """A cache written in the old layout (lists of names and reasons) at the same path is not
    trusted: everything is decoded again and the file is replaced by the current layout."""
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    files = images.scan_classes(root, root, str(root)).files
    old = {
        "version": 1,
        "folder": str(root.resolve()),
        "resize": image_cache.RESIZE_POLICY,
        "files": files,
        "stats": image_store.file_stats(root, files),
        "bad": [""] * len(files),
        "pixels": torch.full((len(files), 3, 16, 16), 7, dtype=torch.uint8),  # wrong pixels
    }
    path = _cache_path(root)
    path.parent.mkdir(parents=True)
    torch.save(old, path)
    got = prepare(root, image_size=16)
    assert (got.info["decoded"], got.info["cached"]) == (8, 0)
    assert not bool((got.x_train == 7).all())
    assert list(image_store.cache_dir().glob("*.pt")) == [path]  # same file name, new layout
    assert torch.load(path, weights_only=True)["version"] == image_store.FORMAT_VERSION
    assert prepare(root, image_size=16).info["cached"] == 8


def test_cache_file_layout_round_trip(tmp_path) -> None:
    """Names (with spaces, unicode, newlines), stats and bad reasons survive the file; a file
    whose tensors disagree with its names is rejected."""
    files = ["a/x 1.png", "a/é.jpg", "b/line\nbreak.png"]
    stats = torch.tensor([[1, 2], [3, 4], [5, 6]], dtype=torch.int64)
    pixels = torch.arange(3 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
    pixels = pixels.reshape(3, 3, 4, 4)
    file = tmp_path / "c.pt"
    image_store.save(file, tmp_path, "p", files, stats, {2: "truncated\nfile"}, pixels)
    got = image_store.load(file, 4, 3)
    assert got is not None and got.names() == files
    assert got.bad == {2: "truncated file"}
    assert torch.equal(got.stats, stats) and torch.equal(got.pixels, pixels)
    assert image_store.load(file, 4, 1) is None and image_store.load(file, 8, 3) is None
    image_store.save(file, tmp_path, "p", files[:2], stats, {}, pixels)  # 2 names, 3 rows
    assert image_store.load(file, 4, 3) is None


def test_gather_path_equals_the_unchanged_path(tmp_path) -> None:
    """Changing one file sends the folder through the per-file gather (`_take_cached`): the other
    images come from the cache there and match, pixel for pixel, what the unchanged-folder path
    (and a fresh decode) gives; the bad file's reason comes back from the cache on both paths."""
    root = make_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "b" / "zz.png").write_bytes(b"not an image")
    x_fresh = decode_all(root)
    warm = image_cache.decode_folder(root, listing(root), 16, 3)  # the first call decodes
    fast = image_cache.decode_folder(root, listing(root), 16, 3)
    assert (fast.cached, fast.decoded) == (13, 0) and torch.equal(fast.pixels, x_fresh)
    assert warm.bad == fast.bad and list(fast.bad.values()) == ["not an image Pillow can read"]
    changed = root / "a" / "002.png"
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # same pixels, newer mtime
    gathered = image_cache.decode_folder(root, listing(root), 16, 3)
    assert (gathered.cached, gathered.decoded) == (12, 1)
    assert torch.equal(gathered.pixels, x_fresh) and gathered.bad == fast.bad
    subset = listing(root)[::-2]  # another order and fewer files: the gather maps by name
    part = image_cache.decode_folder(root, subset, 16, 3)
    assert part.decoded == 0
    assert torch.equal(part.pixels, x_fresh[list(range(12, -1, -2))])


def listing(root) -> list[str]:
    return images.scan_classes(root, root, str(root)).files


def decode_all(root) -> torch.Tensor:
    pixels, _ = image_cache.decode_files([str(root / f) for f in listing(root)], 16, 3)
    return torch.from_numpy(pixels)


def test_shape_probe_is_remembered_until_a_probed_file_changes(tmp_path) -> None:
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    paths = [str(root / f) for f in listing(root)]
    calls = []

    def probe(ps: list[str], check_gray: bool) -> tuple[list[int], bool]:
        calls.append(check_gray)
        return image_cache.probe_sample(ps, check_gray)

    first = image_store.remembered_probe(paths, True, probe)
    assert image_store.remembered_probe(paths, True, probe) == first and calls == [True]
    assert image_store.remembered_probe(paths, False, probe) == first and calls == [True, False]
    os.utime(paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert image_store.remembered_probe(paths, True, probe) == first and len(calls) == 3
    Image.new("L", (40, 30), 9).save(paths[0])  # now a grayscale image, 40 px long
    sides, gray = image_store.remembered_probe(paths, True, probe)
    assert len(calls) == 4 and sides[0] == 40 and first[0][0] != 40
    assert gray is False and first[1] is False  # the other images are still in colour
