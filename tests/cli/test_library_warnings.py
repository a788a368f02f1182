"""Library warnings never leak (issue 11, class 5): Python warnings from numpy, pandas, Pillow,
torch or onnx reach stderr only as a dl `note:` (or not at all), for commands known to trigger them;
`--debug` shows them raw."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import PENGUINS, SAMPLES, assert_error
from PIL import Image

# an EXIF block whose orientation entry points past its end: Pillow warns "Corrupt EXIF data"
BAD_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06"


def assert_no_leak(stderr: str) -> None:
    for word in ("Warning", "warnings.warn", "site-packages", "Traceback"):
        assert word not in stderr, stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """photos/<a|b>/: small digits plus a JPEG with a corrupt EXIF block in each class."""
    root = tmp_path_factory.mktemp("warn") / "photos"
    for label, digit in (("a", "0"), ("b", "1")):
        (root / label).mkdir(parents=True)
        for src in sorted((SAMPLES / "digits" / "train" / digit).iterdir())[:8]:
            shutil.copyfile(src, root / label / src.name)
        Image.new("RGB", (20, 20), (200, 10, 10)).save(root / label / "exif.jpg", exif=BAD_EXIF)
    return root


@pytest.fixture(scope="module")
def huge_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The penguins test rows with 1e308, inf and -1e300 in numeric columns: numpy and pandas warn
    'overflow encountered in cast' when they become float32."""
    rows = list(csv.reader((PENGUINS / "test.csv").open()))
    rows[1][1], rows[2][2], rows[3][3] = "1e308", "inf", "-1e300"
    path = tmp_path_factory.mktemp("huge") / "huge.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_image_commands_with_corrupt_exif(run_dl, images: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    args = ["--arch", "cnn", "--epochs", "1", "--image-size", "16", "--no-plots"]
    res = run_dl("train", images, "-o", model, *args)
    assert res.returncode == 0, res.stderr
    assert_no_leak(res.stderr)
    for cmd in (["predict", model, images], ["evaluate", model, images]):
        res = run_dl(*cmd)
        assert res.returncode == 0, res.stderr
        assert_no_leak(res.stderr)


def test_huge_numbers_are_one_line_and_no_warning(
    run_dl, penguins_model: Path, huge_values: Path
) -> None:
    """numpy's 'overflow encountered in cast' never reaches stderr: values beyond float32's range
    are refused with one line naming the column and row (docs/data-kinds.md); before, two
    RuntimeWarning lines leaked. (--debug printing warnings raw: tests/unit/test_warning_notes.py.)"""
    for cmd in ("predict", "evaluate"):
        res = run_dl(cmd, penguins_model, huge_values)
        assert_error(res, "huge.csv", "column", "too large")
        assert_no_leak(res.stderr)


def test_table_quirks_and_export_stay_quiet(run_dl, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "quirks.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["a", "const", "empty", "mixed", "y"])
        for i in range(120):  # a constant column, an all-NaN one, numbers mixed with text
            mixed = "x" if i % 7 == 0 else f"{rng.normal():.3f}"
            out.writerow([f"{rng.normal():.4f}", "1", "", mixed, i % 2])
    model = tmp_path / "q.pt"
    res = run_dl("train", path, "-o", model, "--epochs", "2", "--no-plots")
    assert res.returncode == 0, res.stderr
    assert_no_leak(res.stderr)
    for cmd in (["evaluate", model, path], ["export", model]):
        res = run_dl(*cmd)
        assert res.returncode == 0, res.stderr
        assert_no_leak(res.stderr)
