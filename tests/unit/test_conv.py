"""Image layers (dlcli/spec/layers/conv.py), the `block` container and the image presets: every layer
against plain PyTorch with the same weights, shape inference against real outputs, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.model.transfer import select_layers
from dlcli.spec.schema import load_preset, parse_spec


def build(layers, shape=(3, 8, 8), outputs=None, **top):
    return build_network(parse_spec({"layers": layers, **top}, "t.yaml"), shape, outputs)


def run(layers, x, **top):
    """Build for x's per-sample shape; return (module in eval mode, output, summary rows)."""
    net = build(layers, tuple(x.shape[1:]), head="none", **top)
    module = net.module.eval()
    with torch.no_grad():
        y = module(x)
    return module, y, net.rows


# ---- conv2d ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {"kernel": 3, "padding": "same"},
        {"kernel": 5, "stride": 2, "padding": 1},
        {"kernel": 3, "dilation": 2, "padding": "valid", "bias": False},
        {"kernel": 1, "groups": 2},
    ],
)
def test_conv2d_matches_torch_conv2d(opts):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9)
    model, y, _ = run([{"conv2d": 6, **opts}], x)
    conv = model[0]
    assert isinstance(conv, nn.Conv2d)
    padding = opts.get("padding", "same")
    pad = {"same": opts["kernel"] // 2 * opts.get("dilation", 1), "valid": 0}.get(padding, padding)
    ref = F.conv2d(
        x, conv.weight, conv.bias, opts.get("stride", 1), pad, opts.get("dilation", 1),
        opts.get("groups", 1),
    )  # fmt: skip
    assert torch.allclose(y, ref, atol=1e-6)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [5, 8])
def test_same_padding_gives_ceil_of_size_over_stride(kernel, stride, size):
    x = torch.randn(2, 2, size, size + 1)
    _, y, rows = run([{"conv2d": 3, "kernel": kernel, "stride": stride}], x)
    want = (3, math.ceil(size / stride), math.ceil((size + 1) / stride))
    assert tuple(y.shape[1:]) == rows[0].out_shape == want


@pytest.mark.parametrize(
    "opts",
    [
        {"kernel": 3, "stride": 2, "padding": "valid"},
        {"kernel": 4, "stride": 3, "padding": 2},
        {"kernel": 3, "dilation": 3},
        {"kernel": 2, "dilation": 2, "stride": 2},
        {"kernel": 3, "groups": 4, "filters": 8},
        {"depthwise": True, "stride": 2},
    ],
)
def test_conv2d_shape_inference_matches_real_output(opts):
    opts = {"filters": 4, **opts}
    x = torch.randn(2, 4, 11, 7)
    _, y, rows = run([{"type": "conv2d", **opts}], x)
    assert tuple(y.shape[1:]) == rows[0].out_shape


def test_even_kernel_same_pads_bottom_right_like_tensorflow():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    model, y, _ = run([{"conv2d": 5, "kernel": 4, "activation": "relu"}], x)
    conv = model[0].conv
    ref = torch.relu(F.conv2d(F.pad(x, (1, 2, 1, 2)), conv.weight, conv.bias))
    assert torch.allclose(y, ref, atol=1e-6) and y.shape == (2, 5, 6, 6)


def test_depthwise_and_separable_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    model, y, rows = run([{"conv2d": {"depthwise": True}}], x)
    conv = model[0]
    assert conv.groups == 3 and conv.out_channels == 3 and rows[0].out_shape == (3, 8, 8)
    assert torch.allclose(y, F.conv2d(x, conv.weight, conv.bias, padding=1, groups=3), atol=1e-6)
    model, y, rows = run([{"separable_conv2d": 8, "stride": 2}], x)
    sep = model[0]
    ref = F.conv2d(x, sep.depthwise.weight, None, stride=2, padding=1, groups=3)
    ref = F.conv2d(ref, sep.pointwise.weight, sep.pointwise.bias)
    assert torch.allclose(y, ref, atol=1e-5) and rows[0].out_shape == (8, 4, 4)


# ---- pooling, norm, dropout -------------------------------------------------------------------


def test_pools_match_torch():
    x = torch.randn(2, 3, 7, 6)
    _, y, rows = run([{"maxpool": 2}], x)
    assert torch.equal(y, F.max_pool2d(x, 2)) and rows[0].out_shape == (3, 3, 3)
    _, y, _ = run([{"avgpool2d": {"size": 3, "stride": 2, "padding": 1}}], x)
    assert torch.allclose(y, F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    _, y, _ = run([{"max_pool": 3, "stride": 1, "padding": "same"}], x)
    assert torch.equal(y, F.max_pool2d(x, 3, 1, 1)) and y.shape == x.shape


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_same_pooling_with_even_size_ignores_padding(mode):
    x = torch.randn(2, 3, 7, 5) - 5  # all negative: a zero pad would win a max
    _, y, rows = run([{f"{mode}pool": 2, "padding": "same"}], x)
    ref = (F.max_pool2d if mode == "max" else F.avg_pool2d)(x, 2, ceil_mode=True)
    assert rows[0].out_shape == (3, 4, 3) and torch.allclose(y, ref)


def test_global_pools_flatten_to_channels():
    x = torch.randn(2, 5, 4, 3)
    _, y, rows = run(["gap"], x)
    assert rows[0].out_shape == (5,) and torch.allclose(y, x.mean((2, 3)))
    _, y, _ = run(["global_maxpool"], x)
    assert torch.equal(y, x.amax((2, 3)))


def test_batchnorm2d_and_dropout2d():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    net = build(["batchnorm2d", {"dropout2d": 0.5}], (3, 5, 5), head="none").module
    assert isinstance(net[0], nn.BatchNorm2d) and isinstance(net[1], nn.Dropout2d)
    ref = nn.BatchNorm2d(3)
    assert torch.allclose(net[0](x), ref(x), atol=1e-6)  # training mode: batch statistics
    net.eval()
    assert torch.allclose(net(x), ref.eval()(x), atol=1e-6)  # dropout off in eval mode
    net.train()
    y = net[1](torch.ones(8, 3, 2, 2))
    per_channel = y.flatten(2)
    assert torch.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))  # whole channels


# ---- residual conv block ----------------------------------------------------------------------


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)


@pytest.mark.parametrize(
    "c_in,filters,stride,projects",
    [(8, 8, 1, False), (8, 16, 1, True), (8, 8, 2, True), (4, 16, 2, True)],
)
def test_conv_block_matches_functional_reference(c_in, filters, stride, projects):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 7, 7)
    model, y, rows = run([{"conv_block": filters, "stride": stride}], x)
    blk = model[0]
    for m in blk.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
    conv1, bn1, _, conv2, bn2 = blk.body
    h = torch.relu(_bn(F.conv2d(x, conv1.weight, None, stride, 1), bn1))
    h = _bn(F.conv2d(h, conv2.weight, None, 1, 1), bn2)
    skip = x
    if projects:
        conv, bn = blk.skip
        skip = _bn(F.conv2d(x, conv.weight, None, stride), bn)
    else:
        assert isinstance(blk.skip, nn.Identity)
    with torch.no_grad():
        assert torch.allclose(blk(x), torch.relu(h + skip), atol=1e-5)
    side = math.ceil(7 / stride)
    assert rows[0].out_shape == (filters, side, side) == tuple(y.shape[1:])


def test_bottleneck_block_shapes():
    x = torch.randn(2, 16, 8, 8)
    model, y, rows = run([{"resblock": {"filters": 32, "stride": 2, "bottleneck": True}}], x)
    convs = [m for m in model[0].body if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (16, 8, 1),
        (8, 8, 3),
        (8, 32, 1),
    ]
    assert rows[0].out_shape == (32, 4, 4) == tuple(y.shape[1:])


# ---- block, presets, init ---------------------------------------------------------------------


def test_block_names_modules_and_nests_rows():
    net = build(
        [
            {"type": "block", "name": "features", "layers": [{"conv2d": 4}, "relu", "gap"]},
            {"block": [{"dense": 3}], "name": "classifier"},
        ],
        outputs=2,
    )
    keys = list(net.module.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"] and "classifier.0.weight" in keys
    assert [(r.name, r.type, r.depth, r.out_shape) for r in net.rows] == [
        ("features", "block", 0, (4,)),
        ("0", "conv2d", 1, (4, 8, 8)),
        ("1", "relu", 1, (4, 8, 8)),
        ("2", "global_avgpool", 1, (4,)),
        ("classifier", "block", 0, (3,)),
        ("0", "dense", 1, (3,)),
        ("head", "dense", 0, (2,)),
    ]
    assert [n for n, _ in select_layers(net.module, "features")] == ["features"]


PRESET_PARAMS = {  # at (1, 16, 16) with 10 outputs: a change here is a change to the preset
    "cnn": 140_458,
    "resnet": 308_074,
    "lenet": 44_426,
}


@pytest.mark.parametrize("arch", ["cnn", "resnet", "lenet"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 64, 64), (3, 128, 128)])
def test_image_presets_build_and_run(arch, shape):
    spec, _ = load_preset(arch)
    net = build_network(spec, shape, 10)
    assert [r.name for r in net.rows if r.depth == 0] == ["features", "classifier", "head"]
    with torch.no_grad():
        y = net.module.eval()(torch.rand(2, *shape))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    if shape == (1, 8, 8):
        params = build_network(spec, (1, 16, 16), 10).module.parameters()
        assert sum(p.numel() for p in params) == PRESET_PARAMS[arch]


def test_init_applies_to_conv_weights():
    torch.manual_seed(0)
    net = build([{"conv2d": 64, "init": "zeros"}, {"conv2d": 64}], (16, 6, 6), init="kaiming")
    assert torch.count_nonzero(net.module[0].weight) == 0
    w = net.module[1].weight.detach()  # kaiming: std sqrt(2 / fan_in), fan_in = 64 * 3 * 3
    assert abs(float(w.std()) - math.sqrt(2 / (64 * 9))) < 0.005
    assert torch.count_nonzero(net.module[1].bias) == 0
    nested = build([{"block": [{"conv2d": 8}]}], (3, 6, 6), head="none", init="zeros")
    assert torch.count_nonzero(nested.module[0][0].weight) == 0


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers,shape,message",
    [
        (
            ["relu", "relu", {"conv2d": 8}],
            (30,),
            r"layers\[2\] \(conv2d\): needs \(channels, height, width\) input, got \(30,\)",
        ),
        (["gap"], (4, 8), r"layers\[0\] \(gap\): needs \(channels, height, width\) input"),
        (
            [{"maxpool": 2}, {"maxpool": 2}, {"maxpool": 2}],
            (1, 4, 4),
            r"layers\[2\] \(maxpool\): input 1x1 is too small for size 2",
        ),
        (
            [{"conv2d": 4, "kernel": 5, "padding": "valid"}],
            (1, 4, 9),
            r"layers\[0\] \(conv2d\): input 4x9 is too small for kernel 5",
        ),
        (
            [{"block": [{"avgpool": 3}]}],
            (1, 2, 2),
            r"layers\[0\] \(block\)\.layers\[0\] \(avgpool\): input 2x2 is too small for size 3",
        ),
        ([{"conv2d": 4, "groups": 3}], (4, 8, 8), r"groups 3 must divide .*channels \(4\)"),
        (["conv2d"], (3, 8, 8), r"field 'filters' is required"),
        ([{"conv_block": 8, "kernel": 4}], (3, 8, 8), r"field 'kernel' must be odd"),
        ([{"conv2d": 8, "padding": "full"}], (3, 8, 8), r"\(conv2d\): field 'padding'"),
        ([{"maxpool": 2, "padding": 2}], (3, 8, 8), r"padding 2 must be at most half"),
    ],
)
def test_shape_errors_name_the_layer(layers, shape, message):
    with pytest.raises(SpecError, match=message):
        build(layers, shape, head="none")


def test_image_preset_on_a_table_explains():
    spec, _ = load_preset("cnn")
    with pytest.raises(SpecError, match=r"needs \(channels, height, width\)") as err:
        build_network(spec, (30,), 2)
    assert "image" in (err.value.hint or "")
