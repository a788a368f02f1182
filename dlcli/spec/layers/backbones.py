"""ImageNet backbones as spec layers: ResNet-18/34/50 and MobileNetV3-Small, written with torch only.

Each module has exactly torchvision's parameter and buffer names and shapes for everything but the
ImageNet classifier, so a published state dict minus that head loads into it with strict checking
(dlcli/model/weights.py; the key -> shape lists are dlcli/model/manifests/*.json). Eval-mode
numerics are torchvision's: batch-norm eps (1e-5 ResNet, 1e-3 MobileNet), hardswish/hardsigmoid,
squeeze-excitation widths rounded by `make_divisible`. Output: pooled features (N, C).

What is "backbone" and what is the published head:
- ResNet: everything except `fc.*`; output (N, 512) or (N, 2048) after the global average pool.
- MobileNetV3-Small: `features.*` and `classifier.0.*` (the 576 -> 1024 linear layer, followed by
  hardswish); the published `classifier.3.*` (1024 -> 1000) is the head. Output (N, 1024). The
  published dropout (`classifier.2`, p=0.2) belongs in the preset's `head` block.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from dlcli.spec.layers.conv import image_shape
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register


class Backbone(nn.Module):
    """A published ImageNet architecture without its classifier: `arch` names its manifest and
    weights URL; `head_keys` are the published head's tensors this module leaves out."""

    arch: str = ""
    head_keys: ClassVar[tuple[str, ...]] = ()
    out_features: int = 0  # width of the pooled output
    # floats of the convolution, batch-norm and activation outputs inside, per input pixel (counted
    # with forward hooks; tests/unit/test_backbones.py checks them): the memory budget
    # (model/budget.py) counts `inner_activations` = this x H x W per sample, not just the output
    per_pixel: float = 0.0
    inner_activations: int = 0


def init_like_torchvision(module: nn.Module) -> None:
    """torchvision's initialisation: conv kaiming-normal (fan_out), batch norm 1/0, linear N(0, 0.01)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C, H, W) -> (N, C)


# ---- ResNet ------------------------------------------------------------------------------------


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    """conv3x3 (stride) - bn - relu - conv3x3 - bn, + identity or downsample; relu."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.downsample = _downsample(c_in, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: conv1x1 - conv3x3 (stride) - conv1x1 (x4 width), + skip; relu."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = _conv(c_in, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, out, 1), nn.BatchNorm2d(out)
        self.downsample = _downsample(c_in, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """`downsample.0` conv1x1 (stride) + `downsample.1` bn when the shape changes, else none."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_conv(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))


RESNETS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int], float]] = {
    18: (BasicBlock, (2, 2, 2, 2), 99.0),
    34: (BasicBlock, (3, 4, 6, 3), 149.0),
    50: (Bottleneck, (3, 4, 6, 3), 443.0),
}


class ResNetBackbone(Backbone):
    """torchvision's ResNet without `fc`: conv7x7/2 - bn - relu - maxpool3/2 - layer1..4 - pool."""

    head_keys = ("fc.weight", "fc.bias")

    def __init__(self, depth: int, channels: int = 3) -> None:
        super().__init__()
        block, counts, self.per_pixel = RESNETS[depth]
        self.arch = f"resnet{depth}"
        self.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c_in = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, planes, 2 if (i > 0 and j == 0) else 1))
                c_in = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_features = c_in
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, 512 | 2048)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return _pool(x)


# ---- MobileNetV3-Small -------------------------------------------------------------------------


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, never 10% below `v`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_act(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: Any = None
) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: `0` conv (no bias), `1` bn (eps 1e-3), `2` act."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=0.001, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(mean(x))))) with 1x1 convs `fc1`, `fc2`."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))  # (N, C, 1, 1)
        return F.hardsigmoid(scale) * x


class InvertedResidual(nn.Module):
    """`block`: expand 1x1 (if wider) - depthwise kxk (stride) - SE (optional) - project 1x1."""

    def __init__(
        self, c_in: int, kernel: int, expanded: int, c_out: int, se: bool, hs: bool, stride: int
    ) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers.append(_conv_bn_act(c_in, expanded, 1, act=act))
        layers.append(_conv_bn_act(expanded, expanded, kernel, stride, expanded, act))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
        layers.append(_conv_bn_act(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


# (input, kernel, expanded, output, squeeze-excitation, hardswish, stride): the paper's Table 2
MOBILENET_V3_SMALL = (
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)


class MobileNetV3SmallBackbone(Backbone):
    """torchvision's mobilenet_v3_small without `classifier.3`: features - pool - linear - hardswish."""

    arch = "mobilenet_v3_small"
    head_keys = ("classifier.3.weight", "classifier.3.bias")
    per_pixel = 83.0

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(channels, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*row) for row in MOBILENET_V3_SMALL]
        layers.append(_conv_bn_act(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish())
        self.out_features = 1024
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, 1024)
        return self.classifier(_pool(self.features(x)))


# ---- spec layers -------------------------------------------------------------------------------


@register("resnet_backbone")
class ResNetLayer(LayerDef):
    """torchvision ResNet-18/34/50 without its classifier (loads published weights); (C, H, W) -> (512 | 2048,)."""

    primary = "depth"

    class Options(Options):
        depth: Literal[18, 34, 50] = 18

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        module = ResNetBackbone(opts.depth, c)
        module.inner_activations = int(module.per_pixel * h * w)
        return module, (module.out_features,)


@register("mobilenet_v3_small_backbone")
class MobileNetV3SmallLayer(LayerDef):
    """torchvision MobileNetV3-Small without its last linear layer (loads published weights); (C, H, W) -> (1024,)."""

    class Options(Options):
        pass

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        c, h, w = image_shape(in_shape, ctx)
        module = MobileNetV3SmallBackbone(c)
        module.inner_activations = int(module.per_pixel * h * w)
        return module, (1024,)
