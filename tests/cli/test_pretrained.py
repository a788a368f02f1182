"""`dl train --arch resnet18|34|50|mobilenet_v3_small --weights imagenet|FILE` end to end (issue 14):
weight files in the published key layout are generated from the manifests at test time (.pth and
.safetensors); `imagenet` is fetched from a local file:// mirror (DL_WEIGHTS_MIRROR) into
$TORCH_HOME/hub/checkpoints, with a good checksum, a corrupted file (refused and removed) and no
network (one line naming the URL and the path); predict and the ONNX graph agree. Everything is
offline, at 32x32 pixels, on 18 generated images, for one epoch."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_error, flat, published_state
from PIL import Image

from dlcli import modelfile
from dlcli.model import weights

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SMALL = ("--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-plots")


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private torch hub cache and image cache for every test; no mirror unless a test sets one."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("DL_CACHE_DIR", str(tmp_path / "image-cache"))
    monkeypatch.delenv("DL_WEIGHTS_MIRROR", raising=False)
    return home


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 6 colour-noise images (24x24), told apart by their colour."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        (root / f"c{c}").mkdir()
        for i in range(6):
            pixels = np.clip(rng.normal(colour, 50, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def network(path: Path) -> dict[str, torch.Tensor]:
    return modelfile.load(path)["weights"]["network"]


def published_name(arch: str) -> str:
    return weights.manifest(arch)["url"].rsplit("/", 1)[1]


def test_weights_pth_loads_the_backbone_and_predict_matches_onnx(photos, tmp_path, dl_inproc):
    import onnxruntime as ort

    state = published_state("resnet18")
    torch.save(state, tmp_path / "r18.pth")
    model = tmp_path / "m.pt"
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "r18.pth",
                       *SMALL, "--lr", "1e-9", "-o", model))  # fmt: skip
    log = flat(res.stderr)
    assert (
        f"--weights {tmp_path / 'r18.pth'}: loaded 120 pretrained tensors into backbone.0 "
        "(resnet18); left new: head.out" in log
    )
    saved = modelfile.load(model)
    enc = saved["preprocessor"]
    assert (enc["mean"], enc["std"], enc["size"], enc["channels"]) == (
        IMAGENET_MEAN, IMAGENET_STD, 32, 3,
    )  # fmt: skip
    after = saved["weights"]["network"]
    # batch-norm statistics move in training; the conv weights barely do at lr 1e-9
    torch.testing.assert_close(after["backbone.0.conv1.weight"], state["conv1.weight"])
    assert after["head.out.weight"].shape == (3, 512)

    ok(dl_inproc("export", model, "--onnx"))
    import onnx

    proto = onnx.load(tmp_path / "m.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    meta_mean = json.loads(meta["dl.mean"])
    assert meta_mean == IMAGENET_MEAN and json.loads(meta["dl.image_size"]) == [32, 32]
    files = sorted(photos.glob("*/*.png"))[::3]
    batch = np.stack(
        [
            np.asarray(Image.open(f).convert("RGB").resize((32, 32), Image.BILINEAR), np.float32)
            .transpose(2, 0, 1) / 255.0
            for f in files
        ]
    )  # fmt: skip
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"images": batch})
    res = ok(dl_inproc("predict", model, *files, "--proba", "-q"))
    rows = [line.split(",") for line in res.stdout.strip().splitlines()]
    header = rows[0]
    cols = [header.index(f"proba_c{i}") for i in range(3)]
    expected = np.array([[float(r[i]) for i in cols] for r in rows[1:]])
    np.testing.assert_allclose(probs, expected, atol=2e-3, rtol=0)


def test_weights_safetensors_and_freeze_backbone(photos, tmp_path, dl_inproc):
    from safetensors.torch import save_file

    state = published_state("mobilenet_v3_small", seed=1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "mnv3.safetensors"))
    model = tmp_path / "m.pt"
    res = ok(dl_inproc("train", photos, "--arch", "mobilenet_v3_small", "--weights",
                       tmp_path / "mnv3.safetensors", "--freeze", "backbone", *SMALL, "-o", model))  # fmt: skip
    log = flat(res.stderr)
    assert (
        "loaded 242 pretrained tensors into backbone.0 (mobilenet_v3_small); left new: head.out"
        in log
    )
    assert "--freeze backbone:" in log
    # the ImageNet presets take the frozen-feature cache: the backbone runs once, 1024 features
    assert "frozen features: computed once for 15 training rows ((1024,))" in log
    after = network(model)
    for key in ("features.0.0.weight", "features.5.block.2.fc1.weight", "classifier.0.weight"):
        assert torch.equal(after[f"backbone.0.{key}"], state[key]), key
    assert torch.equal(after["backbone.0.features.3.block.1.1.running_var"],
                       state["features.3.block.1.1.running_var"])  # fmt: skip


def test_imagenet_from_a_mirror_is_checked_cached_and_reused_offline(
    photos, tmp_path, dl_inproc, torch_home, monkeypatch
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    name = published_name("resnet18")
    torch.save(published_state("resnet18"), tmp_path / "body.pth")
    body = (tmp_path / "body.pth").read_bytes()
    # the published name carries the first 8 hex digits of the file's SHA-256: ours must match
    digest = hashlib.sha256(body).hexdigest()
    good_name = f"resnet18-{digest[:8]}.pth"
    (mirror / good_name).write_bytes(body)
    monkeypatch.setattr(weights, "manifest", _renamed(weights.manifest, name, good_name))
    monkeypatch.setenv("DL_WEIGHTS_MIRROR", mirror.as_uri() + "/")
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", "imagenet", *SMALL,
                       "-o", tmp_path / "a.pt"))  # fmt: skip
    cached = torch_home / "hub" / "checkpoints" / good_name
    assert cached.read_bytes() == body
    log = flat(res.stderr)
    assert f"downloading {mirror.as_uri()}/{good_name} to {cached}" in log
    assert "loaded 120 pretrained tensors" in log

    # offline afterwards: the cached file is used, nothing is fetched
    monkeypatch.setenv("DL_WEIGHTS_MIRROR", (tmp_path / "gone").as_uri() + "/")
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", "imagenet", *SMALL,
                       "-o", tmp_path / "b.pt"))  # fmt: skip
    assert "downloading" not in res.stderr and "loaded 120 pretrained tensors" in flat(res.stderr)


def _renamed(real, old: str, new: str):
    """manifest() with the URL's file name replaced (our generated file has another SHA-256)."""

    def manifest(arch: str) -> dict:
        m = dict(real(arch))
        m["url"] = m["url"].replace(old, new)
        return m

    return manifest


def test_a_corrupted_download_is_refused_and_removed(
    photos, tmp_path, dl_inproc, torch_home, monkeypatch
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    name = published_name("resnet18")  # resnet18-f37072fd.pth: our bytes do not hash to that
    torch.save(published_state("resnet18"), mirror / name)
    monkeypatch.setenv("DL_WEIGHTS_MIRROR", mirror.as_uri() + "/")
    res = dl_inproc("train", photos, "--arch", "resnet18", "--weights", "imagenet", *SMALL,
                    "-o", tmp_path / "m.pt")  # fmt: skip
    line = assert_error(res, f"--weights imagenet: {mirror.as_uri()}/{name}: SHA-256", "f37072fd")
    assert "corrupted or not the published file" in line
    checkpoints = torch_home / "hub" / "checkpoints"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
    assert not (tmp_path / "m.pt").exists()


def test_offline_without_a_cached_file_is_one_line(
    photos, tmp_path, run_dl, torch_home, monkeypatch
):
    """A real process whose mirror does not exist (as with no network): the URL and where to put it."""
    mirror = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setenv("DL_WEIGHTS_MIRROR", mirror)  # run_dl's processes inherit the environment
    name = published_name("mobilenet_v3_small")
    res = run_dl("train", photos, "--arch", "mobilenet_v3_small", "--weights", "imagenet", *SMALL,
                 "-o", tmp_path / "m.pt")  # fmt: skip
    line = assert_error(res, f"cannot download {mirror}{name}")
    assert f"; put that file at {torch_home / 'hub' / 'checkpoints' / name} (" in line
    assert "(No such file or directory)" in line
    assert "decoded" not in res.stderr  # refused before any image is read


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_offline_without_a_mirror_names_the_published_url(
    arch, photos, tmp_path, run_dl, torch_home, monkeypatch
):
    """No DL_WEIGHTS_MIRROR: the line names the published URL itself (the manifest's, as a user
    fetches it by hand) and the hub-cache path. No network here either way: every proxy variable
    points at a closed local port, so the connection is refused at once on any machine."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "")
    name = published_name(arch)
    res = run_dl("train", photos, "--arch", arch, "--weights", "imagenet", *SMALL,
                 "-o", tmp_path / "m.pt", timeout=120)  # fmt: skip
    assert_error(
        res,
        f"--weights imagenet: cannot download https://download.pytorch.org/models/{name} (",
        f"); put that file at {torch_home / 'hub' / 'checkpoints' / name} (",
        "offline, copy the file there",
    )
    assert name == {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}[arch]
    assert not (torch_home / "hub" / "checkpoints" / name).exists()


def test_mismatched_file_and_bad_combinations_are_one_line(photos, tmp_path, dl_inproc):
    torch.save(published_state("resnet34"), tmp_path / "r34.pth")
    res = dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "r34.pth",
                    *SMALL, "-o", tmp_path / "m.pt")  # fmt: skip
    assert_error(res, f"--weights {tmp_path / 'r34.pth'}: unexpected tensor layer1.2.conv1.weight")
    res = dl_inproc("train", photos, "--arch", "cnn", "--weights", tmp_path / "r34.pth", *SMALL,
                    "-o", tmp_path / "m.pt")  # fmt: skip
    assert_error(res, "--weights: the network has no pretrained backbone layer")
    res = dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "none.pth",
                    *SMALL, "-o", tmp_path / "m.pt")  # fmt: skip
    assert_error(res, f"--weights {tmp_path / 'none.pth'}: file not found")


@pytest.mark.parametrize("arch", ["resnet34", "resnet50", "mobilenet_v3_small"])
def test_onnx_export_parity_for_each_backbone(arch, photos, tmp_path, dl_inproc):
    """resnet18's export is checked above; `dl export` verifies each graph against PyTorch with
    onnxruntime (it fails beyond its tolerance), here on the other backbones."""
    model = tmp_path / "m.pt"
    ok(dl_inproc("train", photos, "--arch", arch, *SMALL, "-o", model))
    res = ok(dl_inproc("export", model, "--onnx", "--json"))
    result = json.loads(res.stdout)
    assert result["max_abs_diff"] < 1e-4, result
    shutil.rmtree(tmp_path / "image-cache", ignore_errors=True)


def test_weights_fine_tune_the_head_first_by_default(photos, tmp_path, dl_inproc):
    """--weights runs the fastai-style schedule unless told otherwise: the head alone for a tenth
    of the epochs (at least 1), then everything with the backbone at lr x0.1; the plan is saved so
    --resume continues it. --fine-tune-epochs 0 trains everything from the first epoch."""
    torch.save(published_state("resnet18"), tmp_path / "r18.pth")
    three = ("--image-size", "32", "--epochs", "3", "--batch-size", "8", "--no-plots")
    model = tmp_path / "m.pt"
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "r18.pth",
                       *three, "-o", model))  # fmt: skip
    assert (
        "fine-tuning: epochs 1-1 train the new layers with backbone frozen, then everything "
        "(backbone at lr x0.1)" in flat(res.stderr)
    )
    saved = modelfile.load(model)
    assert saved["transfer"]["fine_tune"] == {
        "body": ["backbone"],
        "head_epochs": 1,
        "body_lr": 0.1,
    }
    conv = saved["weights"]["network"]["backbone.0.conv1.weight"]
    assert not torch.equal(conv, published_state("resnet18")["conv1.weight"])  # phase 2 trained it

    off = tmp_path / "off.pt"
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "r18.pth",
                       *three, "--fine-tune-epochs", "0", "-o", off))  # fmt: skip
    assert "fine-tuning:" not in flat(res.stderr)
    assert modelfile.load(off)["transfer"]["fine_tune"] is None


def test_refit_starts_from_the_loaded_weights(photos, tmp_path, dl_inproc):
    """--refit trains a fresh network on all rows: it starts from the published weights too (at
    lr 1e-9 the saved backbone is still the file's), not from a random init."""
    state = published_state("resnet18")
    torch.save(state, tmp_path / "r18.pth")
    model = tmp_path / "m.pt"
    res = ok(dl_inproc("train", photos, "--arch", "resnet18", "--weights", tmp_path / "r18.pth",
                       "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--no-plots",
                       "--lr", "1e-9", "--refit", "-o", model))  # fmt: skip
    assert "refit: " in flat(res.stderr)
    saved = modelfile.load(model)
    assert saved["refit_epochs"] >= 1
    torch.testing.assert_close(
        saved["weights"]["network"]["backbone.0.conv1.weight"], state["conv1.weight"]
    )
