"""Image folders: decoding of every mode and format, splits, skipped and bad files, errors, the
on-disk cache, the preprocessor's state and preprocessing, and streaming inputs for predict/evaluate."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlcli.data import image_cache, image_preprocessor
from dlcli.data.image_cache import decode_files, decode_image, default_size
from dlcli.data.images import (
    ImageFolderSource,
    ImageOptions,
    ImagePreprocessor,
    ImageTransform,
)
from dlcli.data.sources import PREPROCESSORS, SOURCES, DataOptions, preprocessor_from_state
from dlcli.errors import InputError

DIGITS = Path(__file__).resolve().parents[2] / "sample_data" / "digits"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty image cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DL_CACHE_DIR", str(folder))
    monkeypatch.delenv("DL_MAX_IMAGE_MEMORY", raising=False)
    return folder


def flat(text: str) -> str:
    return " ".join(text.split())


def solid(
    path: Path, color: object = (200, 30, 30), size: tuple[int, int] = (12, 10), mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], mode: str = "RGB") -> Path:
    """root/<class>/<i>.png: class k is a solid image of value 40*k (a different colour per class)."""
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            color = (40 * k, 255 - 40 * k, 10 * i % 256) if mode == "RGB" else 40 * k + i
            solid(root / cls / f"{i:03d}.png", color, (10 + i % 3, 10), mode)
    return root


def prepare(path: Path, **kw: object) -> object:
    image = {k: kw.pop(k) for k in ("image_size", "grayscale") if k in kw}
    opts = DataOptions(**kw)
    opts.extra = {"image": ImageOptions(**image)}
    return ImageFolderSource.prepare(str(path), opts)


# -- decoding: modes, formats, orientation -----------------------------------------------------
MODES = [  # mode, fill, file suffix, expected RGB, expected L
    ("1", 1, "png", (255, 255, 255), 255),
    ("L", 100, "png", (100, 100, 100), 100),
    ("RGB", (255, 0, 0), "png", (255, 0, 0), 76),
    ("RGBA", (255, 0, 0, 255), "png", (255, 0, 0), 76),
    ("RGBA", (255, 0, 0, 0), "png", (255, 255, 255), 255),  # transparent -> white
    ("CMYK", (0, 255, 255, 0), "tif", (255, 0, 0), 76),
    ("I;16", 65535, "png", (255, 255, 255), 255),
    ("I;16", 32896, "tif", (128, 128, 128), 128),
    ("I", 65535, "tif", (255, 255, 255), 255),
    ("I", 200, "tif", (200, 200, 200), 200),
    ("F", 0.5, "tif", (128, 128, 128), 128),
    ("LA", (100, 255), "png", (100, 100, 100), 100),
    ("LA", (100, 0), "png", (255, 255, 255), 255),
]


@pytest.mark.parametrize(("mode", "fill", "suffix", "rgb", "gray"), MODES)
def test_every_mode_converts(
    tmp_path: Path, mode: str, fill: object, suffix: str, rgb: tuple, gray: int
) -> None:
    path = tmp_path / f"img.{suffix}"
    Image.new(mode, (6, 9), fill).save(path)
    x3 = decode_image(path, 8, 3)  # (3, 8, 8)
    assert x3.shape == (3, 8, 8) and x3.dtype == np.uint8
    assert np.abs(x3.reshape(3, -1).astype(int) - np.array(rgb)[:, None]).max() <= 1
    x1 = decode_image(path, 8, 1)  # (1, 8, 8)
    assert x1.shape == (1, 8, 8)
    assert np.abs(x1.astype(int) - gray).max() <= 1


def test_palette_modes_with_transparency(tmp_path: Path) -> None:
    p = Image.new("RGB", (4, 4), (0, 0, 255)).convert("P")
    p.save(tmp_path / "p.png")
    p.convert("PA").save(tmp_path / "pa.tif")
    clear = Image.new("P", (4, 4), 0)
    clear.putpalette([0, 0, 255] * 256)
    clear.save(tmp_path / "clear.png", transparency=0)
    assert tuple(decode_image(tmp_path / "p.png", 4, 3)[:, 0, 0]) == (0, 0, 255)
    assert tuple(decode_image(tmp_path / "pa.tif", 4, 3)[:, 0, 0]) == (0, 0, 255)
    assert tuple(decode_image(tmp_path / "clear.png", 4, 3)[:, 0, 0]) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["jpeg", "bmp", "webp", "tiff"])
def test_other_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"x.{fmt}"
    Image.new("RGB", (20, 20), (250, 0, 0)).save(path, format=fmt.upper())
    x = decode_image(path, 16, 3).astype(int)
    assert x[0].min() > 230 and x[1].max() < 25


def test_exif_orientation_applied(tmp_path: Path) -> None:
    # stored 40x20: left half red, right half blue; orientation 6 = shown rotated 90 degrees clockwise
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    x = decode_image(tmp_path / "o.jpg", 20, 3).astype(int)  # shown 20x40, center crop 20x20
    assert x[0, 2, 3] > 200 and x[2, 2, 3] < 60  # top: red
    assert x[2, 17, 3] > 200 and x[0, 17, 3] < 60  # bottom: blue (unrotated it would be red)


def test_truncated_jpeg_with_orientation_is_bad(tmp_path: Path) -> None:
    im = Image.effect_noise((64, 64), 60).convert("RGB")
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    _, bad = decode_files([str(tmp_path / "cut.jpg")], 16, 3)
    assert "truncated" in bad[0]


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    x = decode_image(tmp_path / "a.gif", 8, 3)
    assert tuple(x[:, 4, 4]) == (255, 0, 0)


def test_resize_keeps_aspect_with_center_crop(tmp_path: Path) -> None:
    im = Image.new("L", (30, 10), 0)
    im.paste(255, (10, 0, 20, 10))  # a white middle third
    im.save(tmp_path / "wide.png")
    x = decode_image(tmp_path / "wide.png", 10, 1)
    assert x.shape == (1, 10, 10) and x.min() == 255  # only the white middle is left


def test_one_pixel_image(tmp_path: Path) -> None:
    solid(tmp_path / "one.png", (10, 20, 30), (1, 1))
    x = decode_image(tmp_path / "one.png", 16, 3)
    assert x.shape == (3, 16, 16) and tuple(x[:, 8, 8]) == (10, 20, 30)


def _solid_png(path: Path, side: int, value: int) -> None:
    """A side x side gray PNG written directly (Pillow would need the full image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = (b"\x00" + bytes([value]) * side) * 1000
    comp = zlib.compressobj(1)
    data = b"".join(comp.compress(rows) for _ in range(side // 1000)) + comp.flush()
    head = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_huge_image_decodes(tmp_path: Path) -> None:
    _solid_png(tmp_path / "huge.png", 10000, 77)
    limit = Image.MAX_IMAGE_PIXELS
    x, bad = decode_files([str(tmp_path / "huge.png")], 32, 1)
    assert not bad and x.shape == (1, 1, 32, 32) and int(x.min()) == int(x.max()) == 77
    assert limit == Image.MAX_IMAGE_PIXELS  # raised only while decoding


# -- folders: splits, skipped files, errors ----------------------------------------------------
def test_source_registered() -> None:
    assert SOURCES["images"] is ImageFolderSource and PREPROCESSORS["image"] is ImagePreprocessor
    assert ImageFolderSource.claims(str(DIGITS), DataOptions()) and not ImageFolderSource.claims(
        "x.csv", DataOptions()
    )


def test_stratified_split_otherwise(tmp_path: Path) -> None:
    make_folder(tmp_path / "d", {"cat": 10, "dog": 20})
    prep = prepare(tmp_path / "d", val_split=0.2, seed=1)
    assert prep.preprocessor.target.classes == ["cat", "dog"] and prep.preprocessor.channels == 3
    assert len(prep.x_train) == 24 and len(prep.x_val) == 6
    assert sorted(prep.y_val.tolist()) == [0, 0, 1, 1, 1, 1]
    assert prep.x_train.dtype == torch.uint8 and prep.y_train.dtype == torch.int64
    again = prepare(tmp_path / "d", val_split=0.2, seed=1)
    assert torch.equal(again.x_val, prep.x_val)  # seeded


@pytest.mark.parametrize("val_name", ["val", "valid"])
def test_splits_from_train_val_folders(tmp_path: Path, val_name: str) -> None:
    make_folder(tmp_path / "d" / "train", {"a": 6, "b": 5})
    make_folder(tmp_path / "d" / val_name, {"a": 2, "b": 3})
    make_folder(tmp_path / "d" / "test", {"a": 4, "b": 4})
    prep = prepare(tmp_path / "d")
    assert (len(prep.x_train), len(prep.x_val)) == (11, 5)
    assert prep.y_val.tolist() == [0, 0, 1, 1, 1]
    assert prep.info["rows"] == 16  # test/ is left for evaluate


def test_val_folder_option_and_unknown_class(tmp_path: Path) -> None:
    make_folder(tmp_path / "tr", {"a": 6, "b": 5})
    make_folder(tmp_path / "va", {"b": 2})
    prep = prepare(tmp_path / "tr", val=str(tmp_path / "va"))
    assert (len(prep.x_train), prep.y_val.tolist()) == (11, [1, 1])
    make_folder(tmp_path / "va", {"zebra": 1})
    with pytest.raises(
        InputError, match="class folder 'zebra' is not a class the model was trained on"
    ):
        prepare(tmp_path / "tr", val=str(tmp_path / "va"))


def test_shape_chosen_from_the_data(tmp_path: Path) -> None:
    make_folder(tmp_path / "g", {"a": 3, "b": 3}, mode="L")
    solid(tmp_path / "g" / "a" / "grey_rgb.png", (90, 90, 90), (40, 40))  # RGB but R == G == B
    prep = prepare(tmp_path / "g")
    assert prep.preprocessor.input_shape == (1, 16, 16)  # median side 10 -> clamped to 16
    assert prepare(tmp_path / "g", image_size=24).x_train.shape[1:] == (1, 24, 24)
    colour = make_folder(tmp_path / "c", {"a": 3, "b": 3})
    assert prepare(colour).preprocessor.channels == 3
    assert prepare(colour, grayscale=True).x_train.shape[1] == 1
    assert default_size([100, 101, 300]) == 104 and default_size([1000]) == 128


def test_hidden_and_non_image_files_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    solid(root / "a" / ".hidden.png")
    solid(root / "__MACOSX" / "a" / "x.png")
    (root / "b" / "notes.txt").write_text("hello")
    (root / "README.md").write_text("hello")
    solid(root / "b" / "nested" / "deeper.png")  # class folders are read recursively
    capsys.readouterr()
    prep = prepare(root)
    assert len(prep.x_train) + len(prep.x_val) == 9
    err = flat(capsys.readouterr().err)
    assert "skipped 2 hidden files or folders and 2 non-image files (.md, .txt)" in err


def test_bad_files_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "d", {"a": 20, "b": 20})
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "a" / "text.png").write_text("not a picture")
    good = (root / "b" / "000.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "noise.jpg").write_bytes(os.urandom(300))
    capsys.readouterr()
    prep = prepare(root)
    assert len(prep.x_train) + len(prep.x_val) == 40 and prep.info["bad"] == 4
    err = flat(capsys.readouterr().err)
    assert "skipped 4 unreadable images" in err
    for name in ("zero.png", "text.png", "truncated.png", "noise.jpg"):
        assert name in err


def test_too_many_bad_files_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "bad.png").write_text("nope")
    (root / "b" / "bad.png").write_text("nope")
    with pytest.raises(InputError, match=r"2 of 12 image files cannot be read \(more than 10%\)"):
        prepare(root)


def test_folder_errors(tmp_path: Path) -> None:
    missing, empty = tmp_path / "nope", tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as err:
        prepare(missing)
    assert str(err.value) == f"{missing}: no such file or folder"
    with pytest.raises(InputError) as err:
        prepare(empty)
    assert str(err.value).startswith(f"{empty}: no images found (looked for .bmp, ")
    make_folder(tmp_path / "one", {"cat": 3})
    with pytest.raises(InputError) as err:
        prepare(tmp_path / "one")
    assert (
        str(err.value)
        == f"{tmp_path / 'one'}: found one class folder ('cat'); classification needs at least two"
    )
    solid(tmp_path / "flat" / "x.png")
    with pytest.raises(InputError, match="images must be in one sub-folder per class"):
        prepare(tmp_path / "flat")


def test_empty_class_folder_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "c").mkdir()
    capsys.readouterr()
    assert prepare(root).preprocessor.target.classes == ["a", "b"]
    assert "class folder 'c' has no images; skipped" in flat(capsys.readouterr().err)
    (root / "b" / "000.png").unlink()
    for f in (root / "b").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="found one class folder"):
        prepare(root)


def test_memory_limit_switches_to_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path / "d", {"a": 3, "b": 3})
    monkeypatch.setenv("DL_MAX_IMAGE_MEMORY", "1000")
    prep = prepare(tmp_path / "d")
    assert not isinstance(prep.x_train, torch.Tensor) and hasattr(prep.x_train, "shuffled")


# -- the cache ---------------------------------------------------------------------------------
def test_cache_reused_and_refreshed(tmp_path: Path, cache_dir: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    first = prepare(root)
    assert (first.info["decoded"], first.info["cached"]) == (10, 0)
    assert len(list(cache_dir.glob("*.pt"))) == 1
    second = prepare(root)
    assert (second.info["decoded"], second.info["cached"]) == (0, 10)
    assert torch.equal(second.x_train, first.x_train) and torch.equal(second.x_val, first.x_val)
    changed = root / "a" / "001.png"
    solid(changed, (1, 2, 3), (10, 10))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a newer mtime, surely
    (root / "b" / "004.png").unlink()
    third = prepare(root)
    assert (third.info["decoded"], third.info["cached"]) == (1, 8)
    fourth = prepare(root)
    assert (fourth.info["decoded"], fourth.info["cached"]) == (0, 9)
    x = torch.cat([fourth.x_train, fourth.x_val])
    assert any(tuple(img[:, 0, 0].tolist()) == (1, 2, 3) for img in x)
    other = prepare(root, image_size=20)  # another size: its own cache file
    assert other.info["decoded"] == 9 and len(list(cache_dir.glob("*.pt"))) == 2


def test_corrupt_cache_is_ignored(tmp_path: Path, cache_dir: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    prepare(root)
    (file,) = cache_dir.glob("*.pt")
    file.write_bytes(b"garbage")
    assert prepare(root).info["decoded"] == 6  # rebuilt...
    assert prepare(root).info["cached"] == 6  # ...and written again


def test_cache_remembers_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    (root / "a" / "bad.png").write_text("nope")
    prepare(root)
    capsys.readouterr()
    again = prepare(root)
    assert again.info["cached"] == 21 and again.info["bad"] == 1
    assert "bad.png" in capsys.readouterr().err


# -- the preprocessor -------------------------------------------------------------------------------
def test_state_round_trip(tmp_path: Path) -> None:
    enc = prepare(make_folder(tmp_path / "d", {"a": 3, "b": 3})).preprocessor
    state = enc.to_state()
    assert json.loads(json.dumps(state)) == state  # plain data
    assert state["kind"] == "image" and state["resize"] == "shorter-side+center-crop"
    assert {"target", "channels", "size", "mean", "std"} <= state.keys()
    again = preprocessor_from_state(state)
    assert isinstance(again, ImagePreprocessor) and again.to_state() == state
    assert again.input_shape == again.raw_shape == (3, 16, 16) and again.encode_once is False
    assert ImagePreprocessor.prediction_columns == ("confidence",)


def test_preprocess_uint8_equals_float() -> None:
    pre = ImageTransform([0.2, 0.5, 0.7], [0.1, 0.2, 0.3])
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    out = pre(x)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 5, 5)
    assert torch.allclose(out, pre(x.float() / 255), atol=1e-6)
    expect = (x[:, 1].float() / 255 - 0.5) / 0.2
    assert torch.allclose(out[:, 1], expect, atol=1e-5)


def test_channel_stats_fitted_on_training_images(tmp_path: Path) -> None:
    prep = prepare(make_folder(tmp_path / "d", {"a": 5, "b": 5}))
    x = prep.x_train.float() / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    assert np.allclose(prep.preprocessor.mean, mean.numpy(), atol=1e-5)
    assert np.allclose(prep.preprocessor.std, std.numpy(), atol=1e-5)


def _trained_preprocessor(tmp_path: Path) -> ImagePreprocessor:
    return prepare(make_folder(tmp_path / "train", {"a": 4, "b": 4})).preprocessor


def test_iter_inputs_files_folders_and_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = _trained_preprocessor(tmp_path)
    new = make_folder(tmp_path / "new", {"x": 3})
    one = str(new / "x" / "000.png")
    ((frame, x),) = list(enc.iter_inputs([one, str(new)], keep=False))
    assert frame["path"].tolist() == [one] + [str(new / "x" / f"00{i}.png") for i in range(3)]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8
    stdin = io.TextIOWrapper(io.BytesIO(f"{one}\n\n{new / 'x' / '002.png'}\n".encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    ((frame, x),) = list(enc.iter_inputs("-", keep=True))
    assert frame["path"].tolist() == [one, str(new / "x" / "002.png")] and len(x) == 2


def test_iter_inputs_batches_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = _trained_preprocessor(tmp_path)
    many = tmp_path / "many"
    for i in range(11):
        solid(many / f"{i:03d}.png", (i, 0, 0), (4, 4))
    monkeypatch.setattr(image_preprocessor, "BATCH", 4)
    chunks = list(enc.iter_inputs([str(many)], False))
    assert [len(x) for _, x in chunks] == [4, 4, 3]
    assert [int(x[0, 0, 0, 0]) for _, x in chunks] == [0, 4, 8]
    with pytest.raises(InputError, match=r"nope\.png: no such file or folder"):
        list(enc.iter_inputs([str(tmp_path / "nope.png")], False))
    (tmp_path / "bad.png").write_text("text")
    with pytest.raises(
        InputError, match=r"bad.png: cannot read image \(not an image Pillow can read\)"
    ):
        list(enc.iter_inputs([str(tmp_path / "bad.png")], False))


def test_iter_labelled(tmp_path: Path) -> None:
    enc = _trained_preprocessor(tmp_path)
    make_folder(tmp_path / "eval" / "test", {"a": 2, "b": 1})
    ((frame, x),) = list(enc.iter_labelled(str(tmp_path / "eval")))
    assert frame["label"].tolist() == ["a", "a", "b"] and x.shape == (3, 3, 16, 16)
    assert enc.target.encode(frame["label"], "eval").tolist() == [0, 0, 1]
    make_folder(tmp_path / "other", {"a": 1, "c": 1})
    with pytest.raises(
        InputError, match="class folder 'c' is not a class the model was trained on"
    ):
        list(enc.iter_labelled(str(tmp_path / "other")))


# -- the sample data ---------------------------------------------------------------------------
def test_digits_sample_prepares_quickly() -> None:
    t0 = time.perf_counter()
    prep = ImageFolderSource.prepare(str(DIGITS), DataOptions())
    assert time.perf_counter() - t0 < 3.0
    assert prep.preprocessor.target.classes == [str(d) for d in range(10)]
    assert prep.preprocessor.input_shape == (1, 16, 16)
    assert len(prep.x_train) + len(prep.x_val) == 1437
    assert prep.preprocessor.to_state()["resize"] == image_cache.RESIZE_POLICY


def test_given_encoder_is_reused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    enc = prepare(root, image_size=20).preprocessor
    enc.mean, enc.std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    again = ImageFolderSource.prepare(str(root), DataOptions(), enc)  # resume: nothing refitted
    assert (
        again.preprocessor is enc and enc.mean == [0.5] * 3 and again.x_train.shape[2:] == (20, 20)
    )
    make_folder(root, {"new": 1})
    with pytest.raises(InputError, match="class folder 'new' is not a class the model"):
        ImageFolderSource.prepare(str(root), DataOptions(), enc)
