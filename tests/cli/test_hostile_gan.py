"""GAN samples in bounded memory (issue 11, class 2): one -o grid holds at most MAX_GRID samples,
and more is one line pointing to --output-dir, refused before any sample is made; --output-dir
writes each batch as it comes, so a large --samples runs in bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES, assert_error
from test_gan import TINY

from dlcli.families.gan import GEN_BATCH, MAX_GRID


@pytest.fixture(scope="module")
def gan_model(tmp_path_factory: pytest.TempPathFactory, run_dl_session) -> Path:
    folder = tmp_path_factory.mktemp("gan")
    (folder / "tiny.yaml").write_text(TINY)
    model = folder / "gan.pt"
    args = ["--spec", folder / "tiny.yaml", "--epochs", "1", "--quiet", "--no-plots"]
    res = run_dl_session("train", SAMPLES / "digits" / "train", "-o", model, *args)
    assert res.returncode == 0, res.stderr
    return model


def test_a_billion_samples_to_one_grid_fails_fast(run_dl_bounded, gan_model, tmp_path) -> None:
    grid = tmp_path / "grid.png"
    res = run_dl_bounded("predict", gan_model, "--samples", "1000000000", "-o", grid, timeout=60)
    assert_error(res, "--samples 1,000,000,000", f"at most {MAX_GRID:,} samples", "--output-dir")
    assert not grid.exists()


def test_grid_limit_is_exact(dl_inproc, gan_model, tmp_path) -> None:
    grid = tmp_path / "grid.png"
    too_many = dl_inproc("predict", gan_model, "--samples", MAX_GRID + 1, "-o", grid)
    assert_error(too_many, f"--samples {MAX_GRID + 1:,}", "--output-dir")
    assert not grid.exists()
    res = dl_inproc("predict", gan_model, "--samples", MAX_GRID, "-o", grid, "--seed", "0")
    assert res.returncode == 0, res.stderr
    assert grid.stat().st_size > 1000


def test_many_samples_stream_to_output_dir_in_bounded_memory(
    run_dl_bounded, gan_model, tmp_path
) -> None:
    out = tmp_path / "out"
    n = 12 * GEN_BATCH + 5  # 3,077 samples: 13 batches, written as they are made
    res = run_dl_bounded(
        "predict", gan_model, "--samples", n, "--output-dir", out, "--seed", "1", memory_gb=1.5
    )
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"sample_{i:04d}.png" for i in range(n)]
