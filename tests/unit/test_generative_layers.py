"""Generative layers (dlcli/spec/layers/generative.py): each against plain PyTorch with the same
weights, inferred shapes against real outputs, shape expressions over the data image, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlcli.errors import SpecError
from dlcli.model.builder import build_stack
from dlcli.spec.schema import parse_spec


def run(layers, x, image_shape=None, outputs=None, expect=None):
    """Build `layers` for x's per-sample shape (the data image `image_shape`; `outputs` for
    `filters: outputs`, then the section must end in shape `expect`); return (module in eval mode,
    output, inferred output shape)."""
    parse_spec({"layers": layers}, "t.yaml")  # the spec checks, as a spec file would get them
    info = {"image_shape": image_shape} if image_shape else {}
    net = build_stack(
        layers, "generator", tuple(x.shape[1:]), outputs, head="none", data_info=info,
        expect_shape=expect,
    )  # fmt: skip
    module = net.module.eval()
    with torch.no_grad():
        y = module(x)
    return module, y, net.output_shape


# ---- conv_transpose2d --------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_transpose_same_multiplies_the_size_by_the_stride(kernel, stride):
    x = torch.randn(2, 3, 5, 7)
    if stride == 1 and kernel % 2 == 0:  # 2p - output_padding = k - 1 needs output_padding 1
        with pytest.raises(SpecError, match="impossible"):
            run([{"conv_transpose2d": 4, "kernel": kernel, "stride": stride}], x)
        return
    _, y, shape = run([{"conv_transpose2d": 4, "kernel": kernel, "stride": stride}], x)
    assert tuple(y.shape[1:]) == shape == (4, 5 * stride, 7 * stride)


@pytest.mark.parametrize(
    "opts",
    [
        {"kernel": 4, "stride": 2, "padding": 1},
        {"kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "bias": False},
        {"kernel": 5, "stride": 1, "padding": 0},
    ],
)
def test_conv_transpose_matches_torch(opts):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    model, y, shape = run([{"conv_transpose2d": 5, **opts}], x)
    conv = model[0]
    assert isinstance(conv, nn.ConvTranspose2d)
    ref = F.conv_transpose2d(
        x, conv.weight, conv.bias, opts["stride"], opts["padding"], opts.get("output_padding", 0)
    )
    assert torch.allclose(y, ref, atol=1e-6)
    assert tuple(ref.shape[1:]) == shape


def test_conv_transpose_filters_outputs_and_activation():
    x = torch.randn(2, 8, 4, 4)
    model, y, shape = run(
        [{"conv_transpose2d": "outputs", "activation": "tanh"}], x, outputs=3, expect=(3, 8, 8)
    )
    assert shape == (3, 8, 8)
    conv = model[0][0]
    assert torch.allclose(y, torch.tanh(F.conv_transpose2d(x, conv.weight, conv.bias, 2, 1)))


def test_conv_transpose_output_padding_must_be_under_the_stride():
    with pytest.raises(SpecError, match=r"generator\[0\].*output_padding"):
        run(
            [{"conv_transpose2d": 4, "stride": 2, "padding": 1, "output_padding": 2}],
            torch.randn(1, 2, 4, 4),
        )


# ---- upsample and resize -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("scale", [2, 3, 1.5])
def test_upsample_matches_interpolate(mode, scale):
    x = torch.randn(2, 3, 5, 6)
    _, y, shape = run([{"upsample": scale, "mode": mode}], x)
    align = False if mode == "bilinear" else None
    ref = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align)
    assert torch.allclose(y, ref, atol=1e-6)
    assert tuple(ref.shape[1:]) == shape


def test_resize_to_the_data_image_size():
    x = torch.randn(2, 1, 12, 12)
    _, y, shape = run([{"resize": "image"}], x, image_shape=(1, 10, 10))
    ref = F.interpolate(x, size=(10, 10), mode="bilinear", align_corners=False)
    assert shape == (1, 10, 10) and torch.allclose(y, ref, atol=1e-6)


def test_resize_is_a_no_op_when_the_size_already_matches():
    x = torch.randn(2, 3, 8, 8)
    model, y, shape = run([{"resize": "image"}], x, image_shape=(3, 8, 8))
    assert isinstance(model[0], nn.Identity) and torch.equal(y, x) and shape == (3, 8, 8)


def test_resize_to_explicit_size_with_expressions():
    x = torch.randn(1, 2, 4, 4)
    _, y, shape = run([{"resize": ["h*2", 5], "mode": "nearest"}], x, image_shape=(1, 3, 9))
    assert shape == (2, 6, 5)
    assert torch.equal(y, F.interpolate(x, size=(6, 5), mode="nearest"))


def test_resize_image_without_a_data_image_is_a_clear_error():
    with pytest.raises(SpecError, match=r"generator\[0\].*image size.*unknown"):
        run([{"resize": "image"}], torch.randn(1, 1, 4, 4))


# ---- reshape and project -----------------------------------------------------------------------


def test_reshape_matches_torch_reshape():
    x = torch.randn(3, 48)
    _, y, shape = run([{"reshape": [3, 4, 4]}], x)
    assert shape == (3, 4, 4) and torch.equal(y, x.reshape(3, 3, 4, 4))
    _, y2, _ = run([{"unflatten": [12, 4]}], x)
    assert torch.equal(y2, x.reshape(3, 12, 4))


def test_reshape_with_a_different_count_names_both_sizes():
    with pytest.raises(SpecError, match=r"cannot reshape \(48,\) \(48 values\) to \(5, 5\)"):
        run([{"reshape": [5, 5]}], torch.randn(2, 48))


@pytest.mark.parametrize(
    ("image", "expect"),
    [((1, 16, 16), (32, 4, 4)), ((3, 10, 6), (32, 3, 2)), ((1, 8, 8), (32, 2, 2))],
)
def test_project_sizes_from_the_data_image_with_ceil_division(image, expect):
    torch.manual_seed(0)
    x = torch.randn(2, 7)
    model, y, shape = run([{"project": [32, "h/4", "w/4"]}], x, image_shape=image)
    assert shape == expect
    linear = model[0].linear
    assert torch.allclose(y, F.linear(x, linear.weight, linear.bias).reshape(2, *expect), atol=1e-6)


def test_project_expressions_use_c_min_max_and_floor_division():
    _, _, shape = run([{"project": ["c*4", "max(1, h//8)", "min(w, 3) + 1"]}], torch.randn(1, 5),
                      image_shape=(3, 7, 20))  # fmt: skip
    assert shape == (12, 1, 4)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("h/0", "divides by zero"),
        ("h-99", "not a positive size"),
        ("__import__('os')", "is not allowed"),
        ("h**2", "is not allowed"),
        ("h/", "cannot read"),
    ],
)
def test_bad_shape_expressions_are_one_clear_error(expr, message):
    with pytest.raises(SpecError, match=message):
        run([{"project": [4, expr, 2]}], torch.randn(1, 5), image_shape=(1, 16, 16))


def test_project_needs_a_flat_input_and_a_known_image_for_names():
    with pytest.raises(SpecError, match="flat vector"):
        run([{"project": [4, 2, 2]}], torch.randn(1, 2, 3, 3))
    with pytest.raises(SpecError, match="uses 'h'"):
        run([{"project": [4, "h/4", 2]}], torch.randn(1, 5))


def test_bad_shape_entry_in_the_spec_names_the_field():
    with pytest.raises(SpecError, match=r"layers\[0\] \(project\).*positive integer"):
        parse_spec({"layers": [{"project": [0, 4, 4]}]}, "t.yaml")


# ---- a whole generator -------------------------------------------------------------------------


def test_leaky_matches_torch_leaky_relu():
    x = torch.randn(4, 6)
    _, y, _ = run([{"leaky": 0.2}], x)
    assert torch.allclose(y, F.leaky_relu(x, 0.2))


@pytest.mark.parametrize("side", [8, 16, 28, 64])
def test_projected_generator_reaches_the_data_image_size(side):
    layers = [
        {"project": [16, "h/4", "w/4"]},
        "relu",
        {"conv_transpose2d": 8},
        "relu",
        {"conv_transpose2d": "outputs", "activation": "tanh"},
        {"resize": "image"},
    ]
    _, y, shape = run(layers, torch.randn(2, 10), image_shape=(1, side, side), outputs=1,
                   expect=(1, side, side))  # fmt: skip
    assert tuple(y.shape) == (2, 1, side, side) and shape == (1, side, side)
    assert float(y.abs().max()) <= 1.0
