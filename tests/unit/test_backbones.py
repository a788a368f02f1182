"""ImageNet backbones (issue 14): each layer's state dict is exactly the published manifest minus its
head, a file generated from the manifest (random tensors in torchvision's key layout) loads strictly
through `--weights`' loader, a mismatch is one line naming the key and both shapes, and the
presets' `input:` section (ImageNet mean/std, 224 px) validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import published_state
from torch import nn

from dlcli.errors import InputError, SpecError, UsageError
from dlcli.model import weights
from dlcli.model.builder import build_network
from dlcli.spec.layers.backbones import (
    MobileNetV3SmallBackbone,
    ResNetBackbone,
    make_divisible,
)
from dlcli.spec.schema import load_preset, parse_spec

ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def backbone(arch: str) -> nn.Module:
    return (
        MobileNetV3SmallBackbone()
        if arch.startswith("mobilenet")
        else ResNetBackbone(int(arch[6:]))
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_is_the_manifest_minus_the_head(arch: str) -> None:
    m = weights.manifest(arch)
    own = {k: list(v.shape) for k, v in backbone(arch).state_dict().items()}
    expected = {k: v for k, v in m["tensors"].items() if k not in m["head"]}
    assert own == expected  # names, shapes and order
    assert tuple(m["head"]) == backbone(arch).head_keys
    assert m["url"].startswith("https://download.pytorch.org/models/" + arch + "-")


def test_manifest_figures() -> None:
    """Published facts that a transcription slip would change: tensor counts and widths."""
    counts = {a: len(weights.manifest(a)["tensors"]) for a in ARCHS}
    assert counts == {"resnet18": 122, "resnet34": 218, "resnet50": 320, "mobilenet_v3_small": 244}
    assert weights.manifest("resnet50")["tensors"]["fc.weight"] == [1000, 2048]
    assert weights.manifest("mobilenet_v3_small")["tensors"]["classifier.3.weight"] == [1000, 1024]
    assert make_divisible(72 // 4) == 24 and make_divisible(16 // 4) == 8


@pytest.mark.parametrize("arch", ARCHS)
def test_generated_published_file_loads_strictly(arch: str, tmp_path: Path) -> None:
    state = published_state(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    net = nn.Sequential(backbone(arch), nn.Linear(backbone(arch).out_features, 3))
    loaded = weights.load_weights(net, str(path))
    m = weights.manifest(arch)
    assert loaded == {f"0.{k}" for k in m["tensors"] if k not in m["head"]}
    for k, v in net[0].state_dict().items():
        assert torch.equal(v, state[k]), k


def test_wrapped_and_dataparallel_files_load(tmp_path: Path) -> None:
    state = published_state("resnet18")
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    net = nn.Sequential(ResNetBackbone(18))
    assert len(weights.load_weights(net, str(path))) == 120


def test_resnet_outputs_pooled_features_in_eval_mode() -> None:
    """The forward pass is torchvision's: with the head's weights, ours + fc equals a hand-written
    reference of the published forward (conv, bn eps 1e-5, maxpool, blocks, average pool)."""
    torch.manual_seed(0)
    net = ResNetBackbone(18).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
        h = torch.relu(net.bn1(net.conv1(x)))
        h = nn.functional.max_pool2d(h, 3, 2, 1)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for b in layer:
                out = torch.relu(b.bn1(b.conv1(h)))
                out = b.bn2(b.conv2(out))
                h = torch.relu(out + (h if b.downsample is None else b.downsample(h)))
        ref = h.mean(dim=(2, 3))
    assert y.shape == (2, 512)
    torch.testing.assert_close(y, ref)


def test_mismatch_is_one_line_naming_key_and_shapes(tmp_path: Path) -> None:
    state = published_state("resnet18")
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(path))
    assert err.value.message == (
        f"--weights {path}: tensor layer2.0.conv1.weight: expected shape (128, 64, 3, 3), "
        "got (128, 32, 3, 3)"
    )


def test_another_architecture_names_the_first_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(published_state("mobilenet_v3_small"), path)
    with pytest.raises(
        InputError, match=r"missing tensor conv1\.weight \(expected shape \(64, 3, 7, 7\)\)"
    ):
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(path))


def test_no_backbone_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no pretrained backbone layer"):
        weights.load_weights(nn.Sequential(nn.Linear(2, 2)), "imagenet")
    path = tmp_path / "w.bin"
    path.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"unknown file type '\.bin'"):
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(path))


def test_verify_checks_the_sha256_prefix_in_the_name(tmp_path: Path) -> None:
    import hashlib

    body = b"published bytes"
    digest = hashlib.sha256(body).hexdigest()
    good = tmp_path / f"resnet18-{digest[:8]}.pth"
    good.write_bytes(body)
    weights.verify(good, good, "t", remove=False)
    bad = tmp_path / "resnet18-00000000.pth"
    bad.write_bytes(body)
    with pytest.raises(InputError, match="does not start with 00000000"):
        weights.verify(bad, bad, "t", remove=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_presets_carry_imagenet_input_and_build_small(arch: str) -> None:
    spec, doc = load_preset(arch)
    assert doc["input"] == {
        "image_size": 224,
        "channels": 3,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    assert spec.input.by_kind()["image"]["mean"] == IMAGENET_MEAN
    net = build_network(spec, (3, 32, 32), 5)
    # two named blocks: the backbone, and the head block that receives dl's output layer
    assert [n for n, _ in net.module.named_children()] == ["backbone", "head"]
    assert isinstance(net.module.head.out, nn.Linear) and net.module.head.out.out_features == 5
    assert net.output_shape == (5,)
    assert weights.find_backbone(net.module)[0] == "backbone.0"


def test_a_head_block_that_is_not_last_is_refused() -> None:
    """Before, a layer named `head` was silently replaced by the output head."""
    spec = parse_spec(
        {"layers": [{"type": "block", "name": "head", "layers": ["relu"]}, "relu"]}, "t"
    )
    with pytest.raises(SpecError, match="the name 'head' belongs to the output head"):
        build_network(spec, (4,), 2)


def test_input_section_is_validated() -> None:
    base = {"layers": ["flatten"]}
    with pytest.raises(SpecError, match="give 'mean' and 'std' together"):
        parse_spec({**base, "input": {"mean": [0.5]}}, "t.yaml")
    with pytest.raises(SpecError, match="need 3 values"):
        parse_spec({**base, "input": {"channels": 3, "mean": [0.5], "std": [0.2]}}, "t.yaml")
    with pytest.raises(SpecError, match=r"input.std.0"):
        parse_spec({**base, "input": {"mean": [0.5], "std": [0.0]}}, "t.yaml")
    with pytest.raises(SpecError, match=r"unknown field 'input\.size'"):
        parse_spec({**base, "input": {"size": 3}}, "t.yaml")
    assert json.dumps(parse_spec({**base, "input": {"image_size": 64}}, "t").input.by_kind()) == (
        '{"image": {"image_size": 64}}'
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_the_memory_budget_counts_the_activations_inside(arch: str) -> None:
    """per_pixel matches the conv / batch-norm / activation outputs counted with forward hooks,
    and the budget counts them: resnet50 at 224 px and batch 32 needs gigabytes, not 400 MB."""
    from dlcli.model.budget import model_budget
    from dlcli.model.builder import estimate_size

    net, total = backbone(arch).eval(), [0]
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Hardswish, nn.ReLU, nn.Linear)
    hooks = [
        m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + o.numel()))
        for m in net.modules()
        if isinstance(m, kinds)
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, 96, 96))
    for h in hooks:
        h.remove()
    assert total[0] / 96**2 == pytest.approx(net.per_pixel, rel=0.02)
    if arch == "resnet50":
        spec, _ = load_preset(arch)
        tally = estimate_size(spec.layers, "layers", (3, 224, 224), 10, batch_size=32)
        assert 2.5e9 < tally.bytes < 4e9
        with model_budget(2.0), pytest.raises(SpecError, match="backbone"):
            build_network(spec, (3, 224, 224), 10)


@pytest.mark.parametrize(
    ("arch", "params"), [("resnet18", "11,689,512"), ("mobilenet_v3_small", "2,542,856")]
)
def test_build_uses_the_spec_input_and_counts_torchvision_parameters(arch, params, dl_inproc):
    """`dl build --arch resnet18` needs no --input-shape (the preset's 3x224x224); with the
    ImageNet head's 1000 outputs the parameter count is torchvision's."""
    res = dl_inproc("build", "--arch", arch, "--outputs", "1000")
    assert res.returncode == 0, res.stderr
    assert f"{params} parameters" in res.stdout + res.stderr


def test_spec_input_is_a_default_under_the_flags() -> None:
    from dlcli.data.sources import DataOptions
    from dlcli.engine.data_options import from_spec_input as spec_input_options
    from dlcli.engine.train_job import TrainRequest

    spec, _ = load_preset("resnet18")
    req = TrainRequest("photos/", data_opts=DataOptions(extra={"image": {"image_size": 32}}))
    spec_input_options(req, "image", spec)
    assert req.data_opts.extra["image"] == {
        "image_size": 32,  # --image-size wins
        "channels": 3,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    table = TrainRequest("t.csv")
    spec_input_options(table, "table", spec)  # other data kinds: nothing
    assert table.data_opts.extra == {}


def test_safetensors_without_the_package_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import sys

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"{}")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if not installed
    with pytest.raises(UsageError) as err:
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(path))
    assert (
        err.value.message == f"--weights {path}: reading .safetensors needs the safetensors package"
    )
    assert err.value.hint == "pip install 'dl[transfer]' (or pip install safetensors)"


class _Marker:
    """Unpickling this would write a file: a .pth carrying code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


def test_a_pth_carrying_code_is_refused_in_one_line_and_nothing_runs(tmp_path: Path) -> None:
    """`--weights FILE` loads weights only: a file that pickles code or objects is refused in dl's
    words (before: torch's text, 'Weights only load failed. This file can still be loaded, to do
    so you have two options, ...' with terminal codes); a truncated file names torch's first
    sentence only."""
    marker = tmp_path / "ran.txt"
    state = published_state("resnet18")
    state["fc.bias"] = _Marker(str(marker))  # type: ignore[assignment]
    evil = tmp_path / "evil.pth"
    torch.save(state, evil)
    with pytest.raises(InputError) as err:
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(evil))
    assert err.value.message == (
        f"--weights {evil}: {evil} contains pickled code or objects besides tensors; refused "
        "(dl loads weights only and never runs code from a file)"
    )
    assert err.value.hint == "save the state dict alone: torch.save(model.state_dict(), PATH)"
    assert not marker.exists()

    cut = tmp_path / "cut.pth"
    torch.save(published_state("resnet18"), cut)
    cut.write_bytes(cut.read_bytes()[:5000])
    with pytest.raises(InputError) as err:
        weights.load_weights(nn.Sequential(ResNetBackbone(18)), str(cut))
    assert err.value.message.startswith(f"--weights {cut}: cannot read {cut}: ")
    assert "\x1b" not in err.value.message and ". " not in err.value.message


def test_grayscale_images_on_rgb_weights_say_to_drop_grayscale(tmp_path: Path) -> None:
    """--grayscale builds a 1-channel first convolution; the ImageNet file's is 3-channel. The
    line names the key and shapes; the hint names the cause (before: 'the file must be a
    torchvision state dict of the same architecture', which it is)."""
    path = tmp_path / "r18.pth"
    torch.save(published_state("resnet18"), path)
    spec, _ = load_preset("resnet18")
    gray = build_network(spec, (1, 32, 32), 3).module
    with pytest.raises(InputError) as err:
        weights.load_weights(gray, str(path))
    assert err.value.message == (
        f"--weights {path}: tensor conv1.weight: expected shape (64, 1, 7, 7), got (64, 3, 7, 7)"
    )
    assert err.value.hint == "the images have 1 channel and the weights take 3: drop --grayscale"


def test_an_unwritable_hub_cache_names_torch_home_not_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_HOME under a file (or a read-only folder): before, `cannot download URL (Not a
    directory); put that file at ...`, blaming the download and pointing at a path that cannot
    exist. Nothing is fetched: the cache is checked first."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "file" / "torch"))
    monkeypatch.setenv("DL_WEIGHTS_MIRROR", (tmp_path / "nowhere").as_uri() + "/")
    from dlcli import settings

    settings.reload()
    try:
        with pytest.raises(UsageError) as err:
            weights.imagenet_file("resnet18")
    finally:
        monkeypatch.undo()
        settings.reload()
    folder = tmp_path / "file" / "torch" / "hub" / "checkpoints"
    assert err.value.message == (
        f"--weights imagenet: cannot write to the torch hub cache {folder} (Not a directory)"
    )
    assert err.value.hint == (
        "set TORCH_HOME to a folder you can write to (the file is kept in "
        "$TORCH_HOME/hub/checkpoints)"
    )
