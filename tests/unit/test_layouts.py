"""Data as users have it (issue 16 parts 3-5), one module at a time: MNIST IDX files (idx.py),
text folders in the IMDB layout (text_folders.py) and image lists (image_lists.py), and which
source `choose_source` picks for each. Every file is generated here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from layouts_data import digit_arrays, idx_bytes, write_image_list, write_imdb, write_mnist
from PIL import Image

from dlcli.data import idx, image_lists, text_folders
from dlcli.data.image_preprocessor import ImageOptions
from dlcli.data.sources import DataOptions, choose_source, with_input_options
from dlcli.errors import InputError, UsageError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DL_CACHE_DIR", str(folder))
    monkeypatch.delenv("DL_MAX_IMAGE_MEMORY", raising=False)
    return folder


# -- IDX ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sep", ["-", "."])
def test_idx_pairs_read_straight_into_the_pixels(tmp_path: Path, gz: bool, sep: str) -> None:
    folder = write_mnist(tmp_path / "mnist", gz=gz, sep=sep)
    assert idx.is_idx_folder(str(folder))
    pairs = idx.find_pairs(folder)
    assert sorted(pairs) == ["t10k", "train"]
    images, labels = idx.read_pair(pairs["train"])
    want_images, want_labels = digit_arrays(40, 0)
    assert images.shape == (40, 1, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0], want_images) and np.array_equal(labels, want_labels)
    assert images.flags.writeable  # torch.from_numpy takes it as it is, without a warning


def test_idx_wrong_magic_is_one_line(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "mnist")
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(digit_arrays(40)[0], magic=2049))
    with pytest.raises(InputError) as err:
        idx.read_pair(idx.find_pairs(folder)["train"])
    assert str(err.value).startswith(f"{path}: magic number 2049 is not 2051 (IDX images of uint8)")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_or_too_long_body_is_refused(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(digit_arrays(10)[0])
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data[:-5]) if gz else data[:-5])
    with pytest.raises(
        InputError, match=r"truncated: 10 x 28 x 28 needs 7,840 bytes of values, found 7,835"
    ):
        idx.read_idx(path, "images")
    path.write_bytes(gzip.compress(data + b"\0") if gz else data + b"\0")
    with pytest.raises(InputError, match="longer than its header says"):
        idx.read_idx(path, "images")


def test_idx_header_claiming_a_huge_body_costs_no_memory(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">4i", 2051, 20_000_000, 28, 28) + b"\0" * 100)
    with pytest.raises(InputError, match="truncated: 20000000 x 28 x 28 needs"):
        idx.read_idx(path, "images")  # 15.7 GB claimed: read in 64 MB pieces, stops at the end
    path.write_bytes(struct.pack(">4i", 2051, 1 << 30, 1 << 20, 28))
    with pytest.raises(InputError, match="impossible dimensions"):
        idx.read_idx(path, "images")


def test_idx_broken_files_are_named(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "mnist", gz=True)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=f"^{labels}: cannot read"):
        idx.read_pair(idx.find_pairs(folder)["train"])
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(39, dtype=np.uint8))))
    with pytest.raises(InputError, match="39 labels for 40 images"):
        idx.read_pair(idx.find_pairs(folder)["train"])


def test_idx_source_trains_on_the_train_pair(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "mnist", n=50, gz=True)
    source = choose_source(str(folder), DataOptions())
    assert source.name == "idx"
    prepared = source.prepare(str(folder), DataOptions())
    enc = prepared.preprocessor
    assert enc.input_shape == (1, 28, 28) and enc.target.classes == [str(k) for k in range(10)]
    x = torch.cat([prepared.x_train, prepared.x_val])
    y = torch.cat([prepared.y_train, prepared.y_val])
    assert len(x) == 50 and x.dtype == torch.uint8
    images, labels = digit_arrays(50)
    for row, k in zip(x, y.tolist(), strict=True):  # every image kept exactly, with its label
        i = next(j for j in range(50) if np.array_equal(images[j], row[0].numpy()))
        assert labels[i] == int(enc.target.classes[k])
    frames = list(enc.iter_labelled(str(folder)))  # evaluate: the t10k pair
    assert sum(len(f) for f, _ in frames) == 25
    resized = source.prepare(str(folder), DataOptions(extra={"image": ImageOptions(image_size=14)}))
    assert resized.x_train.shape[1:] == (1, 14, 14)


# -- text folders ------------------------------------------------------------------------------
def test_imdb_layout_reads_as_a_text_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_imdb(tmp_path / "aclImdb")
    for path in (root, root / "train"):
        assert text_folders.is_text_folder(str(path))
        assert choose_source(str(path), DataOptions()).name == "text_folders"
    frame = text_folders.read_folder(str(root))
    assert list(frame.columns) == ["text", "label"] and len(frame) == 12
    assert sorted(set(frame["label"])) == ["neg", "pos"]
    err = " ".join(capsys.readouterr().err.split())
    assert "skipped the folder 'unsup' (unlabelled texts, not a class)" in err
    assert "skipped 2 files outside the class folders" in err
    listing = next(text_folders.iter_labelled_files(str(root)))  # evaluate: the test split
    assert all("/test/" in f for f in listing.files) and len(listing.files) == 12


def test_non_utf8_text_file_is_named_with_its_byte(tmp_path: Path) -> None:
    root = write_imdb(tmp_path / "aclImdb")
    bad = root / "train" / "pos" / "3_9.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(InputError) as err:
        text_folders.read_folder(str(root))
    assert str(err.value) == f"{bad}: byte 3 is not UTF-8 text (0xe9) (save the file as UTF-8)"


def test_text_files_bom_and_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffhé llo".encode())
    assert text_folders.read_text(str(path)) == ("hé llo", False)
    monkeypatch.setattr(text_folders, "MAX_FILE_BYTES", 5)  # BOM, 'h', the cut inside 'é'
    assert text_folders.read_text(str(path)) == ("h", True)


def test_image_folders_stay_images(tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "0.png")
    (tmp_path / "a" / "notes.txt").write_text("a note beside the images")
    assert not text_folders.is_text_folder(str(tmp_path))
    assert choose_source(str(tmp_path), DataOptions()).name == "images"


# -- image lists -------------------------------------------------------------------------------
def test_image_list_trains_like_the_same_folder(tmp_path: Path) -> None:
    table = write_image_list(tmp_path / "list")
    folder = tmp_path / "folder"
    for line in table.read_text().splitlines()[1:]:
        file, label = line.split(",")
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / Path(file).name).write_bytes((table.parent / file).read_bytes())
    source = choose_source(str(table), DataOptions())
    assert source.name == "image_list"
    from_list = source.prepare(str(table), DataOptions())
    from_folder = choose_source(str(folder), DataOptions()).prepare(str(folder), DataOptions())
    a, b = from_list.preprocessor, from_folder.preprocessor
    assert (a.size, a.channels) == (b.size, b.channels)  # mean, std: of another split's images
    assert a.target.name == "digit" and a.image_column == "file"
    assert a.target.classes == b.target.classes
    lx = torch.cat([from_list.x_train, from_list.x_val])
    fx = torch.cat([from_folder.x_train, from_folder.x_val])
    key = lambda x: sorted(bytes(r.numpy().tobytes()) for r in x)  # noqa: E731
    assert key(lx) == key(fx)  # the very same decoded pixels


def test_image_list_column_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = write_image_list(tmp_path / "list")
    head = image_lists.detect_image_column(
        __import__("pandas").DataFrame({"name": ["x"], "file": ["a/b.PNG"], "y": ["1"]}), None
    )
    assert head == "file"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, "img/gone.png,3"]) + "\n")
    got = image_lists.read_whole(str(table), None, None)
    assert len(got.listing.files) == 20 and got.target == "digit"
    err = " ".join(capsys.readouterr().err.split())
    assert f"skipped 1 missing image file(s): {table.parent / 'img/gone.png'} (row 21)" in err
    table.write_text("\n".join([lines[0], *(f"img/none{i}.png,{i % 2}" for i in range(5))]) + "\n")
    with pytest.raises(InputError, match=r"5 of 5 image files do not exist .* \(row 1\)"):
        image_lists.read_whole(str(table), None, None)
    with pytest.raises(InputError, match="no column 'path'"):
        image_lists.read_whole(str(table), "path", None)


def test_image_column_is_refused_for_other_kinds() -> None:
    with pytest.raises(UsageError, match="--image-column does not apply to models of tabular data"):
        with_input_options({"preprocessor": {"kind": "tabular"}}, {"image_column": "file"})
    got = with_input_options({"preprocessor": {"kind": "image"}}, {"image_column": "file"})
    assert got["preprocessor"]["image_column"] == "file"


def test_image_lists_share_the_folders_bad_share() -> None:
    from dlcli.data import image_folders

    assert image_lists.BAD_SHARE == image_folders.BAD_SHARE  # torch-free copy of the same rule


def test_text_folder_val_must_be_a_folder(tmp_path: Path) -> None:
    write_imdb(tmp_path / "aclImdb")
    (tmp_path / "val.csv").write_text("text,label\na b c d,pos\n")
    source = choose_source(str(tmp_path / "aclImdb"), DataOptions())
    for val, what in (("val.csv", "not a folder"), ("nothere", "no such folder")):
        with pytest.raises(InputError, match=f"^{tmp_path / val}: {what}"):
            source.prepare(str(tmp_path / "aclImdb"), DataOptions(val=str(tmp_path / val)))


def test_idx_resized_past_the_memory_limit_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_mnist(tmp_path / "mnist", n=40)
    monkeypatch.setenv("DL_MAX_IMAGE_MEMORY", "100000")
    opts = DataOptions(extra={"image": ImageOptions(image_size=64)})
    with pytest.raises(InputError, match=r"40 images at 64x64x1 need 0\.2 MiB, more than DL_MAX"):
        choose_source(str(folder), opts).prepare(str(folder), opts)
    assert choose_source(str(folder), DataOptions()).prepare(
        str(folder), DataOptions()
    )  # 28: as is
