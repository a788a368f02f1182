"""Streaming image decoding (image_stream.py): past DL_MAX_IMAGE_MEMORY, image folders become
StreamingImages batch sources whose pixels, split, statistics and shuffling equal the in-memory
path's; corrupt files met while streaming become black images with a note; `dl train` works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlcli import modelfile
from dlcli.data.image_stream import StreamingImages
from dlcli.data.images import ImageFolderSource, ImageOptions
from dlcli.data.sources import DataOptions
from dlcli.engine.batches import TensorBatches, as_batches

DIGITS = Path(__file__).resolve().parents[2] / "sample_data" / "digits"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DL_CACHE_DIR", str(folder))
    monkeypatch.delenv("DL_MAX_IMAGE_MEMORY", raising=False)
    return folder


def flat(text: str) -> str:
    return " ".join(text.split())


def noisy_folder(root: Path) -> Path:
    """3 classes x 8 images of random pixels in several sizes, modes and formats, plus one
    unreadable file (dropped by both paths when the folder is listed and sampled)."""
    rng = np.random.default_rng(0)
    sizes, modes = [(14, 10), (9, 20), (33, 33), (16, 12)], ["RGB", "RGB", "RGBA", "L"]
    for k, cls in enumerate("abc"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            w, h = sizes[i % 4]
            mode = modes[(i + k) % 4]
            depth = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
            a = rng.integers(0, 256, (h, w, depth), dtype=np.uint8).squeeze()
            ext = "jpg" if mode == "RGB" and i % 2 else "png"
            Image.fromarray(a, mode=mode).save(root / cls / f"{i:02d}.{ext}")
    (root / "b" / "99.png").write_bytes(b"not an image")
    return root


def prepare(path: Path, size: int) -> object:
    opts = DataOptions(seed=7)
    opts.extra = {"image": ImageOptions(image_size=size)}
    return ImageFolderSource.prepare(str(path), opts)


def read_all(source: StreamingImages) -> tuple[torch.Tensor, torch.Tensor]:
    got = list(source.in_order(batch=5))
    return torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])


@pytest.fixture
def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple:
    """(in-memory Prepared, streaming Prepared, stderr of the streaming prepare) of one folder."""
    root = noisy_folder(tmp_path / "d")
    memory = prepare(root, 12)
    capsys.readouterr()
    monkeypatch.setenv("DL_MAX_IMAGE_MEMORY", "1000")
    streamed = prepare(root, 12)
    return memory, streamed, flat(capsys.readouterr().err)


def test_streamed_data_equals_in_memory(both: tuple) -> None:
    memory, streamed, err = both
    assert isinstance(streamed.x_train, StreamingImages)
    assert "24 images at 12x12 would take" in err and "each epoch instead" in err
    assert "DL_MAX_IMAGE_MEMORY" in err
    assert "skipped 1 unreadable image" in err and "99.png" in err  # found in the sample
    for x, y, s in (
        (memory.x_train, memory.y_train, streamed.x_train),
        (memory.x_val, memory.y_val, streamed.x_val),
    ):
        pixels, labels = read_all(s)
        assert pixels.dtype == torch.uint8 and pixels.shape == x.shape
        assert torch.equal(pixels, x)  # the very same decoding, files and split
        assert torch.equal(labels, y) and torch.equal(s.labels(), y)
        assert s.rows == len(x)
    assert streamed.preprocessor.mean == memory.preprocessor.mean
    assert streamed.preprocessor.std == memory.preprocessor.std
    assert streamed.info["rows"] == memory.info["rows"] == 24


def test_shuffled_is_seeded_like_tensor_batches(both: tuple) -> None:
    memory, streamed, _ = both
    s = as_batches(streamed.x_train, None, 5)
    assert s is streamed.x_train and s.batch_size == 5
    t = TensorBatches(memory.x_train, memory.y_train, 5)
    n = s.rows
    assert len(s) == len(t) == n // 5
    seen = []
    pairs = zip(
        s.shuffled(torch.Generator().manual_seed(3)),
        t.shuffled(torch.Generator().manual_seed(3)),
        strict=True,
    )
    for (xs, ys), (xt, yt) in pairs:
        assert len(xs) == 5 and torch.equal(xs, xt) and torch.equal(ys, yt)
        seen.append(xs)
    # every image at most once; only the ragged tail (n % 5) is left out
    flat_rows = {bytes(r.numpy()) for r in torch.cat(seen)}
    assert len(flat_rows) == n - n % 5
    again = torch.cat([x for x, _ in s.shuffled(torch.Generator().manual_seed(3))])
    other = torch.cat([x for x, _ in s.shuffled(torch.Generator().manual_seed(4))])
    assert torch.equal(again, torch.cat(seen)) and not torch.equal(other, again)


@pytest.mark.parametrize("workers", [0, 1])
def test_file_corrupted_after_listing_is_black_and_noted(
    tmp_path: Path, workers: int, capsys: pytest.CaptureFixture
) -> None:
    files = []
    for i in range(6):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (10, 8), (30 * i, 200, 90)).save(files[-1])
    s = StreamingImages(files, torch.arange(6) % 2, 3, 8, workers=workers)
    s.batch_size = 3
    files[4].write_bytes(b"\x89PNG truncated")
    capsys.readouterr()
    pixels, labels = read_all(s)
    assert pixels.shape == (6, 3, 8, 8) and torch.equal(labels, torch.arange(6) % 2)
    assert int(pixels[4].max()) == 0 and int(pixels[3].max()) > 0
    err = flat(capsys.readouterr().err)
    assert err.count("note:") == 1
    assert "1 image could not be read while streaming; black used instead" in err and "4.png" in err
    assert len(list(s.shuffled(torch.Generator().manual_seed(0)))) == len(s) == 2
    assert flat(capsys.readouterr().err).count("note:") <= 1  # at most once per pass
    assert s.bad_seen >= 1


def test_train_streams_digits_end_to_end(
    tmp_path: Path, dl_inproc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DL_MAX_IMAGE_MEMORY", "100000")  # bytes: 1,437 x 16 x 16 does not fit
    model = tmp_path / "m.pt"
    args = ("--arch", "cnn", "--epochs", "2", "--image-size", "16", "--json", "--no-plots")
    res = dl_inproc("train", DIGITS, "-o", model, *args)
    assert res.returncode == 0, res.stderr
    err = flat(res.stderr)
    assert "1,437 images at 16x16 would take" in err and "decoding in" in err
    out = json.loads(res.stdout)
    assert out["train_rows"] == 1150 and out["val_rows"] == 287
    assert out["metrics"]["accuracy"] >= 0.8
    saved = modelfile.load(model)
    assert saved["examples"].dtype == torch.uint8
    assert tuple(saved["examples"].shape) == (64, 1, 16, 16)
    res = dl_inproc("evaluate", model, DIGITS / "test", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy"] >= 0.8


def test_workers_import_no_pandas() -> None:
    """Spawned workers import this module and unpickle the dataset: no pandas, no images.py."""
    code = (
        "import pickle, sys, torch\n"
        "from dlcli.data.image_stream import DecodeBatches\n"
        "d = pickle.loads(pickle.dumps(DecodeBatches(['x.png'], torch.zeros(1, dtype=torch.int64), 4, 1)))\n"
        "x, y, bad = d[[0]]\n"
        "assert tuple(x.shape) == (1, 1, 4, 4) and list(bad) == [0], bad\n"
        "assert 'pandas' not in sys.modules and 'dlcli.data.images' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
