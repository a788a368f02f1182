"""Image models end to end through the CLI (issue 3): train on class folders, evaluate (with
--errors and --report), predict (files, folders, stdin, --top-k), export to ONNX and check it with
onnxruntime on images we load ourselves, transfer learning (--init-from, --freeze), `dl build`
shapes, and every bad input of the issue as one clear error line (or a note, where skipping is
the right answer).

One cnn is trained on sample_data/digits once for the module; everything else trains for one or
two epochs on a few dozen 16x16 images, so the file runs in well under a minute on one thread.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PENGUINS, SAMPLES, assert_error, dl_env, flat
from PIL import Image, ImageOps

from dlcli import modelfile

DIGITS = SAMPLES / "digits"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_TEST = 360  # images in digits/test
ERROR_NAME = re.compile(r"^(\d{5})_true-(\w+)_pred-(\w+)\.png$")
ONNX_KEYS = {
    "dl.input_layout",
    "dl.image_size",
    "dl.channels",
    "dl.mean",
    "dl.std",
    "dl.classes",
    "dl.resize",
}


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test decodes into its own image cache (subprocesses inherit it through dl_env)."""
    folder = tmp_path / "image-cache"
    monkeypatch.setenv("DL_CACHE_DIR", str(folder))
    monkeypatch.delenv("DL_MAX_IMAGE_MEMORY", raising=False)
    return folder


def dl_here(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`dl ARGS` in this process for module fixtures (dl_inproc is per test)."""
    from dlcli.cli import main
    from dlcli.console import set_quiet

    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_COLOR", "1")
        mp.delenv("DL_DEBUG", raising=False)
        if cwd is not None:
            mp.chdir(cwd)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code
            finally:
                set_quiet(False)
                torch.set_num_threads(threads)
    status = code if isinstance(code, int) else int(code is not None)
    return subprocess.CompletedProcess(
        ["dl", *map(str, args)], status, out.getvalue(), err.getvalue()
    )


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"{' '.join(res.args)}\n{res.stderr}"
    assert "Traceback" not in res.stderr and "error:" not in res.stderr, res.stderr
    return res


def copy_digits(dst: Path, classes: str = "012", per_class: int = 12, split: str = "train") -> Path:
    """dst/<digit>/*.png: the first `per_class` images of each digit in `classes`."""
    for c in classes:
        (dst / c).mkdir(parents=True, exist_ok=True)
        for src in sorted((DIGITS / split / c).glob("*.png"))[:per_class]:
            shutil.copy(src, dst / c / src.name)
    return dst


def make_photos(root: Path, per_class: int, seed: int) -> Path:
    """root/{red,green,blue}/: RGB photos of several sizes (not square), half JPEG, half PNG; the
    class is the dominant colour channel under strong noise."""
    rng = np.random.default_rng(seed)
    sizes = [(36, 48), (64, 64), (80, 60)]  # (width, height)
    for k, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % 3]
            a = rng.integers(0, 90, (h, w, 3))
            a[..., k] += 150
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(a.astype(np.uint8)).save(root / name / f"{i:02d}.{suffix}")
    return root


def read_csv_text(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={"prediction": str, "prediction_2": str})


def network(path: Path) -> dict[str, torch.Tensor]:
    return modelfile.load(path)["weights"]["network"]


# -- module fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """`dl train digits/ --arch cnn --epochs 3 --image-size 16 --json`, once: (model, summary, log).

    digits/ holds train/ and test/; train uses train/ (split for validation) and never test/."""
    folder = tmp_path_factory.mktemp("digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DL_CACHE_DIR", str(folder / "cache"))
        args = ["--arch", "cnn", "--epochs", "3", "--image-size", "16", "--json", "--no-plots"]
        res = ok(dl_here("train", DIGITS, *args, "-o", folder / "model.pt"))
    return folder / "model.pt", json.loads(res.stdout), res.stderr


@pytest.fixture(scope="module")
def new_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class subset of the digits (0, 1, 2; 40 each): the 'new data' of transfer learning."""
    return copy_digits(tmp_path_factory.mktemp("new_photos") / "new_photos", "012", 40)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The issue's `dl train photos/ --arch resnet --image-size 64 --augment flip,crop` on small
    RGB photos (one epoch): (photos_test folder, model, summary)."""
    root = tmp_path_factory.mktemp("photos")
    make_photos(root / "photos", 8, seed=0)
    make_photos(root / "photos_test", 3, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DL_CACHE_DIR", str(root / "cache"))
        args = ["--arch", "resnet", "--image-size", "64", "--augment", "flip,crop"]
        res = ok(dl_here("train", "photos/", *args, "--epochs", "1", "--json", cwd=root))
    return root / "photos_test", root / "model.pt", json.loads(res.stdout)


# The two real processes (about 5 s of interpreter and torch start-up each on a busy machine) are
# started by the first test and checked by the last ones, so they run beside the in-process work.
@pytest.fixture(scope="module")
def real_process_error(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    """`dl train photos --arch cnn` on an empty photos/ folder, as a real process."""
    folder = tmp_path_factory.mktemp("real_process")
    (folder / "photos").mkdir()
    env = {**dl_env(), "DL_CACHE_DIR": str(folder / "cache")}
    cmd = [sys.executable, "-m", "dlcli", "train", "photos", "--arch", "cnn"]
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=PIPE, stderr=PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def piped_shots(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """`find shots -name '*.jpg' | dl predict model.pt - > labels.csv` as a real shell line, in a
    folder holding model.pt and shots/ (12 JPEG digits in two sub-folders, plus a .png and a .txt
    that find leaves out): (folder, the running shell)."""
    folder = tmp_path_factory.mktemp("shots")
    shutil.copy(digits_model[0], folder / "model.pt")
    for c in "0258":
        for i, src in enumerate(sorted((DIGITS / "test" / c).glob("*.png"))[:3]):
            out = folder / "shots" / f"day{i % 2}" / f"{c}-{i}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(src).convert("RGB").save(out, quality=95)
    (folder / "shots" / "notes.txt").write_text("not an image\n")
    (folder / "shots" / "extra.png").write_bytes((DIGITS / "test/1/0021.png").read_bytes())
    env = {**dl_env(), "DL_CACHE_DIR": str(folder / "cache")}
    line = "find shots -name '*.jpg' | dl predict model.pt - > labels.csv"
    proc = subprocess.Popen(
        line, shell=True, cwd=folder, env=env, stdout=PIPE, stderr=PIPE, text=True
    )
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- train and evaluate ----------------------------------------------------------------------
def test_cnn_learns_the_digits(real_process_error, digits_model, piped_shots, dl_inproc) -> None:
    """(Also starts the two real processes checked at the end.)"""
    model, summary, log = digits_model
    assert summary["epochs_run"] == 3 and summary["train_rows"] + summary["val_rows"] == 1437
    assert "decoded 1,437 images (16x16, 1 channel)" in log
    assert modelfile.load(model)["preprocessor"]["size"] == 16
    res = ok(dl_inproc("evaluate", model, DIGITS / "test", "--json"))
    metrics = json.loads(res.stdout)
    assert metrics["n"] == N_TEST
    assert metrics["accuracy"] >= 0.9, metrics["accuracy"]
    assert np.asarray(metrics["confusion_matrix"]).sum() == N_TEST
    # the folder holding test/ evaluates on test/
    again = json.loads(ok(dl_inproc("evaluate", model, DIGITS, "--json", "-q")).stdout)
    assert again["n"] == N_TEST and again["accuracy"] == metrics["accuracy"]


def test_resnet_with_augmentation_trains_predicts_and_evaluates(photos, dl_inproc) -> None:
    _, model, summary = photos
    assert summary["settings"]["augment"] == "flip,crop"
    run = model.parent / "model.run"  # the run folder of an image model: curve and confusion matrix
    for png in ("learning_curve.png", "confusion_matrix.png"):
        assert (run / png).read_bytes()[:8] == PNG_MAGIC, png
    enc = modelfile.load(model)["preprocessor"]
    assert (enc["size"], enc["channels"]) == (64, 3)
    assert enc["target"]["classes"] == ["blue", "green", "red"]
    res = ok(dl_inproc("evaluate", "model.pt", "photos_test/", "--json", cwd=model.parent))
    assert json.loads(res.stdout)["n"] == 9
    a, b = "photos_test/red/01.jpg", "photos_test/blue/00.png"
    res = ok(dl_inproc("predict", "model.pt", a, b, "--top-k", "3", cwd=model.parent))
    frame = read_csv_text(res.stdout)
    assert frame["path"].tolist() == [a, b]
    assert set(frame["prediction"]) <= {"red", "green", "blue"}


def test_decode_cache_is_reused_and_refreshed(tmp_path, cache_dir, dl_inproc) -> None:
    data = copy_digits(tmp_path / "small", "01", 10)
    model = tmp_path / "m.pt"
    args = ("train", data, "--arch", "lenet", "--epochs", "1", "--no-plots", "-o", model)
    assert "decoded 20 images (16x16, 1 channel)" in ok(dl_inproc(*args)).stderr
    assert len(list(cache_dir.glob("*.pt"))) == 1
    assert "20 from the cache, 0 decoded" in ok(dl_inproc(*args)).stderr
    changed = data / "0" / sorted(p.name for p in (data / "0").iterdir())[0]
    Image.new("L", (16, 16), 255).save(changed)  # new content: new size and mtime
    assert "19 from the cache, 1 decoded" in ok(dl_inproc(*args)).stderr


# -- predict ---------------------------------------------------------------------------------
def test_predict_prints_path_prediction_confidence(digits_model, dl_inproc) -> None:
    model = digits_model[0]
    files = [str(sorted((DIGITS / "test" / c).glob("*.png"))[0]) for c in "0123456789"]
    res = ok(dl_inproc("predict", model, files[0]))
    assert res.stdout.splitlines()[0] == "path,prediction,confidence"
    res = ok(dl_inproc("predict", model, *files))
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == ["path", "prediction", "confidence"]
    assert [r[0] for r in rows[1:]] == files  # one row per image, in the order given
    conf = np.array([float(r[2]) for r in rows[1:]])
    assert ((conf > 0) & (conf <= 1)).all()
    hits = sum(r[1] == Path(r[0]).parent.name for r in rows[1:])
    assert hits >= 8, rows


def test_predict_a_folder_gives_one_row_per_image(digits_model, dl_inproc) -> None:
    folder = DIGITS / "test" / "7"
    res = ok(dl_inproc("predict", digits_model[0], folder))
    frame = read_csv_text(res.stdout)
    expected = sorted(str(p) for p in folder.glob("*.png"))
    assert frame["path"].tolist() == expected
    assert (frame["prediction"] == "7").mean() >= 0.8


def test_predict_top_k(digits_model, dl_inproc) -> None:
    model = digits_model[0]
    files = [str(sorted((DIGITS / "test" / c).glob("*.png"))[1]) for c in "0369"]
    top1 = read_csv_text(ok(dl_inproc("predict", model, *files)).stdout)
    res = ok(dl_inproc("predict", model, *files, "--top-k", "3"))
    header = res.stdout.splitlines()[0]
    assert header == (
        "path,prediction,confidence,prediction_2,confidence_2,prediction_3,confidence_3"
    )
    frame = read_csv_text(res.stdout)
    conf = frame[["confidence", "confidence_2", "confidence_3"]].to_numpy()
    assert (np.diff(conf, axis=1) <= 0).all() and (conf > 0).all() and (conf <= 1).all()
    assert (conf.sum(axis=1) <= 1 + 1e-5).all()
    preds = frame[["prediction", "prediction_2", "prediction_3"]].astype(str).to_numpy()
    assert all(len(set(row)) == 3 for row in preds)
    assert frame["prediction"].tolist() == top1["prediction"].tolist()
    np.testing.assert_allclose(frame["confidence"], top1["confidence"], rtol=1e-6)


# -- evaluate extras -------------------------------------------------------------------------
def test_evaluate_errors_and_report(digits_model, tmp_path, dl_inproc) -> None:
    model = digits_model[0]
    errors, report = tmp_path / "errors", tmp_path / "report"
    res = ok(
        dl_inproc(
            "evaluate", model, DIGITS / "test", "--errors", errors, "--report", report, "--json"
        )
    )
    metrics = json.loads(res.stdout)
    wrong = round((1 - metrics["accuracy"]) * metrics["n"])
    copied = sorted(p.name for p in errors.iterdir())
    assert len(copied) == wrong == metrics["errors_copied"]
    assert f"copied {wrong} misclassified inputs to {errors}" in flat(res.stderr)
    test_files = {
        c: {p.read_bytes() for p in (DIGITS / "test" / c).glob("*.png")} for c in "0123456789"
    }
    for name in copied:
        m = ERROR_NAME.match(name)
        assert m, name
        true, pred = m.group(2), m.group(3)
        assert true != pred
        assert (errors / name).read_bytes() in test_files[true], name  # a copy of a `true` image
        again = read_csv_text(ok(dl_inproc("predict", model, errors / name, "-q")).stdout)
        assert again["prediction"][0] == pred
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["n"] == N_TEST
    png = report / "confusion_matrix.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as im:
        im.verify()


def test_errors_folder_is_named_as_given(photos, dl_inproc) -> None:
    photos_test, model, _ = photos
    res = ok(dl_inproc("evaluate", model, photos_test, "--errors", "wrong/", cwd=model.parent))
    assert "misclassified inputs to wrong/" in res.stderr and "wrong//" not in res.stderr


# -- ONNX ------------------------------------------------------------------------------------
def onnx_input(path: Path, meta: dict[str, str]) -> np.ndarray:
    """One image file -> (C, H, W) float32 in [0, 1] following the metadata, as docs/images.md
    tells a caller: EXIF orientation, shorter side to the size with a centre crop (bilinear),
    transparency on white, then grey or RGB; scale to [0, 1]. No mean/std: that is in the graph."""
    h, w = json.loads(meta["dl.image_size"])
    channels = int(meta["dl.channels"])
    assert meta["dl.resize"] == "shorter-side+center-crop"
    with Image.open(path) as im:
        im.draft(None, (w, h))  # JPEG only: decode at a reduced scale that is still >= the size
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGBA")
        s = min(im.size)
        box = ((im.width - s) / 2, (im.height - s) / 2, (im.width + s) / 2, (im.height + s) / 2)
        im = im.resize((w, h), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        if im.mode == "RGBA":
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im)
        im = im.convert("L" if channels == 1 else "RGB")
    a = np.asarray(im, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def test_onnx_export_matches_dl_predict(digits_model, tmp_path, dl_inproc) -> None:
    import onnx
    import onnxruntime as ort

    shutil.copy(digits_model[0], tmp_path / "model.pt")
    # the command, in the model's folder: ./model.pt -> ./model.onnx
    ok(dl_inproc("export", "--onnx", cwd=tmp_path))
    proto = onnx.load(tmp_path / "model.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta.keys() >= ONNX_KEYS
    assert meta["dl.input_layout"] == "NCHW float32 in [0, 1]"
    assert json.loads(meta["dl.image_size"]) == [16, 16] and meta["dl.channels"] == "1"
    assert json.loads(meta["dl.classes"]) == list("0123456789")
    enc = modelfile.load(tmp_path / "model.pt")["preprocessor"]
    assert json.loads(meta["dl.mean"]) == enc["mean"] and json.loads(meta["dl.std"]) == enc["std"]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("images", "probabilities")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 16, 16]

    # real digits plus images that need resizing, mode conversion and transparency handling
    files = [sorted((DIGITS / "test" / c).glob("*.png"))[2] for c in "0123456789"]
    rng = np.random.default_rng(3)
    extra = {
        "wide_rgb.png": Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)),
        "tall.jpg": Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
        "alpha.png": Image.fromarray(rng.integers(0, 256, (30, 20, 4), dtype=np.uint8)),
        "big_grey.png": Image.open(files[3]).resize((100, 100)),
    }
    for name, im in extra.items():
        im.save(tmp_path / name)
        files.append(tmp_path / name)
    batch = np.stack([onnx_input(f, meta) for f in files])  # (N, 1, 16, 16)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"images": batch})
    assert probs.shape == (len(files), 10)

    res = ok(dl_inproc("predict", tmp_path / "model.pt", *files, "--proba", "-q"))
    frame = read_csv_text(res.stdout)
    expected = frame[[f"proba_{c}" for c in "0123456789"]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs.max(axis=1), frame["confidence"], atol=1e-4, rtol=0)
    classes = json.loads(meta["dl.classes"])
    assert [classes[i] for i in probs.argmax(axis=1)] == frame["prediction"].tolist()


# -- transfer learning -----------------------------------------------------------------------
def test_transfer_learning_with_frozen_features(digits_model, new_photos, tmp_path, dl_inproc):
    old = digits_model[0]
    new = tmp_path / "new.pt"
    args = ["--arch", "cnn", "--init-from", old, "--freeze", "features", "--epochs", "2"]
    res = ok(dl_inproc("train", new_photos, *args, "--no-plots", "-o", new))
    log = flat(res.stderr)
    assert f"--init-from {old}: loaded 30 of 32 tensors; freshly initialised: head" in log
    assert "--freeze features:" in log and "frozen (features)" in log
    assert "387 trainable, 139,168 frozen" in log  # the 3-class head: 128 * 3 + 3
    before, after = network(old), network(new)
    features = [k for k in after if k.startswith("features.")]
    assert len(features) == 30  # weights, biases and batch-norm statistics
    for k in features:
        assert torch.equal(after[k], before[k]), f"{k} changed although frozen"
    assert tuple(before["head.weight"].shape) == (10, 128)
    assert tuple(after["head.weight"].shape) == (3, 128)
    assert modelfile.load(new)["preprocessor"]["target"]["classes"] == ["0", "1", "2"]


def test_transfer_learning_by_index_range_and_without_freezing(
    digits_model, new_photos, tmp_path, dl_inproc
):
    """`--freeze 0:1` picks the same top-level layer as `features`; without --freeze every loaded
    layer keeps training (so the test above is not vacuous)."""
    old = digits_model[0]
    common = ("--arch", "cnn", "--init-from", old, "--epochs", "1", "--no-plots")
    res = ok(dl_inproc("train", new_photos, *common, "--freeze", "0:1", "-o", tmp_path / "a.pt"))
    assert "frozen (features)" in flat(res.stderr)
    before, frozen = network(old), network(tmp_path / "a.pt")
    assert all(torch.equal(frozen[k], before[k]) for k in frozen if k.startswith("features."))
    ok(dl_inproc("train", new_photos, *common, "-o", tmp_path / "b.pt"))
    tuned = network(tmp_path / "b.pt")
    assert not torch.equal(tuned["features.0.weight"], before["features.0.weight"])
    assert not torch.equal(tuned["features.1.running_mean"], before["features.1.running_mean"])


def test_transfer_learning_verbatim_command(digits_model, new_photos, tmp_path, dl_inproc):
    """The issue's line: no --arch (the network is model.pt's own) and no -o (the new model
    replaces ./model.pt when training ends)."""
    shutil.copy(digits_model[0], tmp_path / "model.pt")
    shutil.copytree(new_photos, tmp_path / "new_photos")
    args = ["--init-from", "model.pt", "--freeze", "features", "--epochs", "5"]
    res = ok(dl_inproc("train", "new_photos/", *args, "--no-plots", cwd=tmp_path))
    log = flat(res.stderr)
    assert "--init-from model.pt: using its network (cnn)" in log
    assert "loaded 30 of 32 tensors; freshly initialised: head" in log
    assert "frozen (features)" in log
    before, after = network(digits_model[0]), network(tmp_path / "model.pt")
    assert modelfile.load(tmp_path / "model.pt")["preprocessor"]["target"]["classes"] == [
        "0",
        "1",
        "2",
    ]
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("features."))


def test_transfer_learning_uses_the_architecture_of_the_init_model(photos, tmp_path, dl_inproc):
    """With --init-from and neither --arch nor --spec, the network is the source model's own (here
    a resnet, not the cnn an image folder gets by default), so every features tensor is loaded."""
    photos_test, resnet, _ = photos
    args = ["--init-from", resnet, "--freeze", "features", "--epochs", "1", "--no-plots"]
    res = ok(dl_inproc("train", photos_test, *args, "-o", tmp_path / "tuned.pt"))
    assert f"--init-from {resnet}: using its network (resnet)" in flat(res.stderr)
    before, after = network(resnet), network(tmp_path / "tuned.pt")
    features = sorted(k for k in before if k.startswith("features."))
    assert sorted(k for k in after if k.startswith("features.")) == features
    assert all(torch.equal(after[k], before[k]) for k in features)


def test_transfer_learning_reads_new_images_like_the_source_model(
    digits_model, tmp_path, dl_inproc
):
    """RGB photos of other sizes onto the grey 16x16 digits model: they are decoded with its one
    channel and size, so its first convolution still fits and nothing random gets frozen."""
    data = make_photos(tmp_path / "rgb", 6, seed=2)
    out = tmp_path / "rgb.pt"
    args = ["--init-from", digits_model[0], "--freeze", "features", "--epochs", "1", "--no-plots"]
    res = ok(dl_inproc("train", data, *args, "-o", out))
    assert "(16x16, 1 channel)" in res.stderr and "freshly initialised: head" in flat(res.stderr)
    enc = modelfile.load(out)["preprocessor"]
    assert (enc["size"], enc["channels"]) == (16, 1)
    before, after = network(digits_model[0]), network(out)
    for k in (k for k in after if k.startswith("features.")):
        assert torch.equal(after[k], before[k]), k


def test_freezing_layers_that_did_not_fit_is_refused(digits_model, new_photos, tmp_path, dl_inproc):
    """--arch resnet from a cnn model: its features do not fit, so freezing them is an error."""
    args = ["--arch", "resnet", "--init-from", digits_model[0], "--freeze", "features"]
    res = dl_inproc("train", new_photos, *args, "--no-plots", "-o", tmp_path / "m.pt")
    assert_error(res, "--freeze features", "freshly initialised")
    assert not (tmp_path / "m.pt").exists()


# -- build -----------------------------------------------------------------------------------
def test_build_shows_each_layers_output_shape(dl_inproc) -> None:
    args = ("build", "--arch", "resnet", "--input-shape", "3,64,64", "--outputs", "10")
    table = ok(dl_inproc(*args)).stderr
    for shape in ("(32, 64, 64)", "(64, 32, 32)", "(128, 16, 16)", "(128)", "(10)"):
        assert shape in table, shape
    summary = json.loads(ok(dl_inproc(*args, "--json")).stdout)
    assert summary["input_shape"] == [3, 64, 64] and summary["output_shape"] == [10]
    shapes = [(row["name"], row["type"], row["output_shape"]) for row in summary["layers"]]
    assert ("4", "conv_block", [64, 32, 32]) in shapes
    assert ("5", "conv_block", [128, 16, 16]) in shapes
    assert shapes[-1] == ("head", "dense", [10])
    for arch in ("cnn", "lenet"):
        args = ("build", "--arch", arch, "--input-shape", "3,64,64", "--outputs", "10", "--json")
        summary = json.loads(ok(dl_inproc(*args)).stdout)
        assert summary["output_shape"] == [10] and all(r["output_shape"] for r in summary["layers"])


# -- bad input -------------------------------------------------------------------------------
def test_a_few_unreadable_files_are_skipped_with_a_note(tmp_path, dl_inproc) -> None:
    data = copy_digits(tmp_path / "data", "012", 12)  # 36 good images
    (data / "0" / "zero.png").write_bytes(b"")
    (data / "1" / "text.png").write_text("this is not a picture\n")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "JPEG")
    (data / "2" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    args = ("--arch", "lenet", "--epochs", "1", "--no-plots")
    res = ok(dl_inproc("train", data, *args, "-o", tmp_path / "m.pt"))
    log = flat(res.stderr)
    assert "skipped 3 unreadable images" in log, log
    for name in ("0/zero.png", "1/text.png", "2/cut.jpg"):
        assert f"{data}/{name}" in log, name
    assert "30 training rows, 6 validation rows" in log  # the 36 readable images
    # predicting one of them is an error naming the file
    for name in ("0/zero.png", "1/text.png", "2/cut.jpg"):
        assert_error(
            dl_inproc("predict", tmp_path / "m.pt", data / name), name, "cannot read image"
        )


def test_too_many_unreadable_files_stop_training(tmp_path, dl_inproc) -> None:
    data = copy_digits(tmp_path / "data", "01", 6)  # 12 good, 2 bad: 14% > 10%
    (data / "0" / "empty.png").write_bytes(b"")
    (data / "1" / "fake.png").write_text("hello")
    res = dl_inproc("train", data, "--arch", "lenet", "--no-plots", "-o", tmp_path / "m.pt")
    assert_error(res, "2 of 14 image files cannot be read", "10%")
    assert not (tmp_path / "m.pt").exists()


def test_tiny_and_huge_images_train_and_predict(tmp_path, dl_inproc) -> None:
    """A 1x1 image and a 10000x10000 one (solid colour) among the training images, then predicted."""
    data = copy_digits(tmp_path / "data", "01", 10)
    tiny, huge = data / "0" / "tiny.png", data / "1" / "huge.png"
    Image.new("L", (1, 1), 90).save(tiny)
    Image.new("L", (10000, 10000), 170).save(huge, compress_level=1)  # 100 megapixels
    model = tmp_path / "m.pt"
    res = ok(
        dl_inproc("train", data, "--arch", "lenet", "--epochs", "1", "--no-plots", "-o", model)
    )
    assert "decoded 22 images" in res.stderr and "unreadable" not in res.stderr
    res = ok(dl_inproc("predict", model, tiny, huge))
    frame = read_csv_text(res.stdout)
    assert frame["path"].tolist() == [str(tiny), str(huge)]
    assert ((frame["confidence"] > 0) & (frame["confidence"] <= 1)).all()


@pytest.fixture
def csv_model(tmp_path: Path, dl_inproc) -> Path:
    model = tmp_path / "penguins.pt"
    ok(dl_inproc("train", PENGUINS / "train.csv", "--epochs", "1", "-o", model, "-q", "--no-plots"))
    return model


def test_bad_folders_are_one_error_line(tmp_path, dl_inproc) -> None:
    def train(folder: Path, *extra: str) -> subprocess.CompletedProcess:
        return dl_inproc(
            "train", folder, "--arch", "cnn", "--no-plots", "-o", tmp_path / "m.pt", *extra
        )

    (tmp_path / "empty").mkdir()
    assert_error(train(tmp_path / "empty"), "empty", "no images found")
    one = copy_digits(tmp_path / "one", "3", 5)
    assert_error(train(one), "one class folder ('3')", "at least two")
    # a class folder with no images is skipped with a note; if that leaves one class: an error
    lonely = copy_digits(tmp_path / "lonely", "3", 5)
    (lonely / "nothing").mkdir()
    (lonely / "nothing" / "readme.txt").write_text("no pictures here")
    res = train(lonely)
    assert_error(res, "one class folder ('3')")
    assert "class folder 'nothing' has no images; skipped" in flat(res.stderr)
    assert_error(train(tmp_path / "nope"), "nope")
    assert not (tmp_path / "m.pt").exists()


def test_empty_class_folder_is_skipped_with_a_note(tmp_path, dl_inproc) -> None:
    data = copy_digits(tmp_path / "data", "01", 8)
    (data / "9").mkdir()
    args = ("--arch", "lenet", "--epochs", "1", "--no-plots")
    res = ok(dl_inproc("train", data, *args, "-o", tmp_path / "m.pt"))
    assert "class folder '9' has no images; skipped" in flat(res.stderr)
    assert modelfile.load(tmp_path / "m.pt")["preprocessor"]["target"]["classes"] == ["0", "1"]


def test_bad_options_are_one_error_line(new_photos, tmp_path, dl_inproc) -> None:
    out = ("-o", tmp_path / "m.pt", "--epochs", "1", "--no-plots")
    res = dl_inproc("train", new_photos, "--arch", "mlp", *out)
    assert_error(res, "--arch mlp", "image data", "--arch cnn")
    res = dl_inproc("train", PENGUINS / "train.csv", "--augment", "flip", *out)
    assert_error(res, "--augment", "tabular")
    res = dl_inproc("train", new_photos, "--arch", "cnn", "--freeze", "features", *out)
    assert_error(res, "--freeze needs --init-from")
    res = dl_inproc("train", new_photos, "--arch", "cnn", "--augment", "flip,blur", *out)
    assert_error(res, "unknown augmentation 'blur'")
    assert not (tmp_path / "m.pt").exists()


def test_bad_prediction_inputs_are_one_error_line(digits_model, csv_model, tmp_path, dl_inproc):
    model = digits_model[0]
    assert_error(
        dl_inproc("predict", model, tmp_path / "missing.png"), "missing.png", "no such file"
    )
    folder = copy_digits(tmp_path / "folder", "01", 2)
    assert_error(dl_inproc("predict", csv_model, folder), str(folder), "folder")
    assert_error(dl_inproc("evaluate", csv_model, folder), str(folder), "folder")
    unknown = copy_digits(tmp_path / "unknown", "1", 2)
    (unknown / "cat").mkdir()
    shutil.copy(DIGITS / "test/1/0021.png", unknown / "cat" / "x.png")
    assert_error(dl_inproc("evaluate", model, unknown), "'cat'", "not a class")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(dl_inproc("predict", model, empty), "no images found")


def test_predict_with_no_paths_on_stdin_is_an_error(digits_model, dl_inproc) -> None:
    assert_error(dl_inproc("predict", digits_model[0], "-", input=""), "stdin")


def test_errors_exit_2_in_a_real_process(real_process_error) -> None:
    assert_error(finish(real_process_error), "no images found", code=2)


def test_stdin_pipeline_equals_the_file_list(piped_shots, dl_inproc) -> None:
    """Image paths on stdin give exactly the output of the same paths as arguments."""
    folder, proc = piped_shots
    res = finish(proc)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    piped = (folder / "labels.csv").read_text()
    frame = read_csv_text(piped)
    assert len(frame) == 12 and all(p.endswith(".jpg") for p in frame["path"])
    listed = ok(dl_inproc("predict", "model.pt", *frame["path"], cwd=folder)).stdout
    assert piped == listed
