"""Batch augmentation (dlcli/data/augment.py): only in training mode, float output in [0, 1],
per-sample randomness from torch's seeded global RNG."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from dlcli.data.augment import AUGMENTS, RandomAffine, RandomCrop, affine_theta, make_augment
from dlcli.errors import UsageError

ALL = ",".join(AUGMENTS)


def images(n=16, c=3, h=12, w=12, seed=0):
    return torch.randint(
        0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_eval_mode_only_converts():
    aug = make_augment(ALL, 12).eval()
    x = images()
    assert torch.equal(aug(x), x.float() / 255)
    xf = torch.rand(4, 3, 12, 12)
    assert torch.equal(aug(xf), xf)
    assert not list(aug.state_dict())  # nothing of it ends up in a model file


@pytest.mark.parametrize("spec", [*AUGMENTS, ALL, "flip, crop"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shapes_dtypes_and_range(spec, dtype):
    x = images(8, 3, 10, 14)
    x[0] = 0
    x[1] = 255  # extremes stay in range under jitter and rotation
    x = x if dtype == torch.uint8 else x.float() / 255
    y = make_augment(spec, 10).train()(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_flip_mirrors_about_half_of_the_samples():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 4, 5)
    y = make_augment("flip", 4)(x)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert 150 < int(flipped.sum()) < 250


def test_crop_keeps_size_and_shifts_content_per_sample():
    torch.manual_seed(0)
    n, p = 64, 2
    x = torch.rand(n, 2, 9, 7)
    y = RandomCrop(p)(x)
    assert y.shape == x.shape
    padded = F.pad(x, (p,) * 4, mode="reflect")
    offsets = []
    for i in range(n):  # each output is a window of the padded image at some offset
        found = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(y[i], padded[i, :, dy : dy + 9, dx : dx + 7])
        ]
        assert found, f"sample {i} is not a crop of its padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 5  # offsets differ between samples
    assert make_augment("crop", 32).ops["crop"].pad == 4
    assert make_augment("crop", 5).ops["crop"].pad == 1


def test_crop_of_tiny_images_pads_with_zeros():
    y = RandomCrop(2)(torch.ones(8, 1, 2, 2))  # too small to reflect 2 pixels
    assert y.shape == (8, 1, 2, 2) and set(y.unique().tolist()) <= {0.0, 1.0}


def test_affine_theta_is_a_true_rotation():
    x = torch.rand(2, 3, 6, 6)
    identity = affine_theta(torch.zeros(2), torch.ones(2), 6, 6)
    grid = F.affine_grid(identity, list(x.shape), align_corners=False)
    assert torch.allclose(F.grid_sample(x, grid, align_corners=False), x, atol=1e-5)
    quarter = affine_theta(torch.full((2,), math.pi / 2), torch.ones(2), 6, 6)
    grid = F.affine_grid(quarter, list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, align_corners=False)
    assert torch.allclose(rotated, torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_rotate_changes_images_slightly():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16)
    y = RandomAffine(10, 0.1)(x)
    change = (y - x).abs().flatten(1).mean(1)
    assert torch.all(change > 0) and float(change.mean()) < 0.4


def test_jitter_is_per_sample_brightness_and_contrast():
    torch.manual_seed(0)
    x = torch.full((32, 3, 4, 4), 0.5)
    y = make_augment("jitter", 4)(x)
    means = y.mean((1, 2, 3))
    assert float(means.min()) >= 0.4 - 1e-6 and float(means.max()) <= 0.6 + 1e-6
    assert len(means.unique()) > 20


def test_reproducible_under_manual_seed():
    aug = make_augment(ALL, 12)
    x = images()
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, aug(x))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UsageError, match=r"unknown augmentation 'blur'") as err:
        make_augment("flip,blur", 32)
    assert all(name in err.value.hint for name in ("flip", "crop", "rotate", "jitter"))
