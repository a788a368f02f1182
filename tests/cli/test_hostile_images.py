"""Hostile images (issue 11, class 2): a huge 16-bit image is shrunk in its own mode before any
float conversion, so `dl predict` and `dl train` stay within a bounded address space; an image over
the pixel limit is one line naming the file."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, assert_error

BIG = 12000  # a 12000x12000 16-bit PNG: 288 MB decoded; its float32 copies used to need 2.5 GB
MEMORY_GB = 1.5  # what a 1x1 image's prediction fits in, with room for the 16-bit pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png16(path: Path, width: int, height: int) -> Path:
    """A width x height 16-bit grey PNG (mode I;16), a left-to-right ramp 0..65535, written in
    a few MB of memory and a second: every row after the first uses PNG's Up filter (all zeros)."""
    ramp = (np.arange(width, dtype=np.uint64) * 65535 // max(1, width - 1)).astype(">u2")
    comp = zlib.compressobj(6)
    parts = [comp.compress(b"\x00" + ramp.tobytes())]
    up = b"\x02" + bytes(2 * width)
    parts += [comp.compress(up) for _ in range(height - 1)]
    parts.append(comp.flush())
    head = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit greyscale
    body = _chunk(b"IHDR", head) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.fixture(scope="module")
def big16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png16(tmp_path_factory.mktemp("big16") / "big16.png", BIG, BIG)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits/<0|1>/: six small images of each class."""
    root = tmp_path_factory.mktemp("digits") / "digits"
    for label in "01":
        (root / label).mkdir(parents=True)
        for src in sorted((SAMPLES / "digits" / "train" / label).iterdir())[:6]:
            shutil.copyfile(src, root / label / src.name)
    return root


@pytest.fixture(scope="module")
def digits_model(digits: Path, run_dl_session) -> Path:
    model = digits.parent / "model.pt"
    args = ["--arch", "cnn", "--epochs", "1", "--image-size", "16", "--quiet", "--no-plots"]
    res = run_dl_session("train", digits, "-o", model, *args)
    assert res.returncode == 0, res.stderr
    return model


def test_predict_huge_16bit_png_in_bounded_memory(run_dl_bounded, digits_model, big16) -> None:
    res = run_dl_bounded("predict", digits_model, big16, memory_gb=MEMORY_GB)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.strip().splitlines()
    assert rows[0] == "path,prediction,confidence" and rows[1].startswith(f"{big16},")
    assert "Warning" not in res.stderr


def test_train_with_a_huge_16bit_png_in_bounded_memory(
    run_dl_bounded, digits: Path, big16: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(digits, data)
    shutil.copyfile(big16, data / "1" / "big16.png")
    args = ["--arch", "cnn", "--epochs", "1", "--image-size", "16", "--no-plots"]
    res = run_dl_bounded("train", data, "-o", tmp_path / "m.pt", *args, memory_gb=MEMORY_GB)
    assert res.returncode == 0, res.stderr
    assert "decoded 13 images" in res.stderr and "unreadable" not in res.stderr
    assert (tmp_path / "m.pt").is_file()


def test_image_over_the_pixel_limit_is_one_line(run_dl_bounded, digits_model, tmp_path) -> None:
    bomb = tmp_path / "bomb.png"  # a header claiming 30000x30000 (900 million pixels)
    head = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", head) + _chunk(b"IEND", b""))
    res = run_dl_bounded("predict", digits_model, bomb, memory_gb=MEMORY_GB)
    assert_error(res, str(bomb), "cannot read image", "800,000,000 pixels")
