"""Write dlcli/model/manifests/*.json from torchvision's own architecture definitions.

torchvision does not import beside the CPU torch wheel dl uses, so this script reads its source
files (from a torchvision wheel or an unpacked checkout), executes only the class and function
definitions that build the networks (ResNet, BasicBlock, Bottleneck, MobileNetV3,
InvertedResidual(Config), Conv2dNormActivation, SqueezeExcitation, _make_divisible) with stubs for
torchvision's logging helpers, builds resnet18/34/50 and mobilenet_v3_small, and records every
state-dict key with its shape, plus the published weights' URL (read from the same files).

    pip download --no-deps torchvision==0.20.1 -d /tmp/tv
    python benchmarks/make_manifests.py /tmp/tv/torchvision-0.20.1-*.whl [--check]

`--check` also runs dl's backbone layers against the executed torchvision definitions in eval
mode with the same random weights, and prints the largest output difference per network.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import typing
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "dlcli" / "model" / "manifests"
FILES = {
    "resnet": "torchvision/models/resnet.py",
    "mobilenetv3": "torchvision/models/mobilenetv3.py",
    "utils": "torchvision/models/_utils.py",
    "misc": "torchvision/ops/misc.py",
}
WANTED = {
    "utils": {"_make_divisible"},
    "misc": {"ConvNormActivation", "Conv2dNormActivation", "SqueezeExcitation"},
    "resnet": {"conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet"},
    "mobilenetv3": {
        "InvertedResidualConfig",
        "InvertedResidual",
        "MobileNetV3",
        "_mobilenet_v3_conf",
    },
}
# dl's name -> (source file, how to build it, the published head's keys, the weights' URL stem)
NETWORKS = {
    "resnet18": ("resnet", lambda ns: ns["ResNet"](ns["BasicBlock"], [2, 2, 2, 2]), "fc."),
    "resnet34": ("resnet", lambda ns: ns["ResNet"](ns["BasicBlock"], [3, 4, 6, 3]), "fc."),
    "resnet50": ("resnet", lambda ns: ns["ResNet"](ns["Bottleneck"], [3, 4, 6, 3]), "fc."),
    "mobilenet_v3_small": (
        "mobilenetv3",
        lambda ns: ns["MobileNetV3"](*ns["_mobilenet_v3_conf"]("mobilenet_v3_small")),
        "classifier.3.",
    ),
}


def read_sources(path: Path) -> dict[str, str]:
    if path.is_dir():
        return {k: (path / f).read_text() for k, f in FILES.items()}
    with zipfile.ZipFile(path) as z:
        return {k: z.read(f).decode() for k, f in FILES.items()}


def execute(sources: dict[str, str]) -> dict[str, Any]:
    """One namespace holding the wanted definitions, executed in dependency order."""
    typing_names = ("Any", "Callable", "List", "Optional", "Sequence", "Tuple", "Type", "Union")
    ns: dict[str, Any] = {n: getattr(typing, n) for n in typing_names}  # the files' annotations
    ns.update(
        torch=torch,
        nn=nn,
        Tensor=Tensor,
        partial=partial,
        warnings=__import__("warnings"),
        _log_api_usage_once=lambda obj: None,
        _make_ntuple=lambda x, n: tuple(x) if isinstance(x, (list, tuple)) else (x,) * n,
    )
    for key in ("utils", "misc", "resnet", "mobilenetv3"):
        tree = ast.parse(sources[key])
        keep = [
            n
            for n in tree.body
            if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in WANTED[key]
        ]
        if {n.name for n in keep} != WANTED[key]:
            raise SystemExit(f"{FILES[key]}: expected definitions {sorted(WANTED[key])}")
        exec(compile(ast.Module(keep, []), FILES[key], "exec"), ns)
        if key == "misc":  # mobilenetv3.py imports SqueezeExcitation under this name
            ns["SElayer"] = ns["SqueezeExcitation"]
    return ns


def dumps(manifest: dict) -> str:
    """JSON with one tensor a line (readable diffs)."""
    head = {k: v for k, v in manifest.items() if k != "tensors"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest["tensors"].items()]
    text = json.dumps(head, indent=1)[:-2] + ',\n "tensors": {\n' + ",\n".join(lines)
    return text + "\n }\n}\n"


def url_for(source: str, name: str) -> str:
    """The first (IMAGENET1K_V1) URL of `name` in the weights enums of the source file."""
    found = re.findall(
        rf'url="(https://download\.pytorch\.org/models/{name}-[0-9a-f]+\.pth)"', source
    )
    if not found:
        raise SystemExit(f"no weights URL for {name}")
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="torchvision wheel or source checkout")
    ap.add_argument("--check", action="store_true", help="compare dl's layers in eval mode")
    args = ap.parse_args()
    sources = read_sources(args.source)
    ns = execute(sources)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (src, build, head) in NETWORKS.items():
        net = build(ns)
        state = net.state_dict()
        manifest = {
            "arch": name,
            "url": url_for(sources[src], name),
            "source": f"{FILES[src]} of {args.source.name}",
            "head": [k for k in state if k.startswith(head)],
            "tensors": {k: list(v.shape) for k, v in state.items()},
        }
        (OUT / f"{name}.json").write_text(dumps(manifest))
        print(f"{name}: {len(state)} tensors, head {manifest['head']}, {manifest['url']}")
        if args.check:
            check(name, net, head)


def check(name: str, reference: nn.Module, head: str) -> None:
    """dl's layer with the reference's weights (head dropped, strict) vs the reference's features."""
    sys.path.insert(0, str(ROOT))
    from dlcli.spec.layers.backbones import MobileNetV3SmallBackbone, ResNetBackbone

    torch.manual_seed(0)
    for p in reference.parameters():  # random but non-trivial batch-norm statistics too
        p.data.normal_(0, 0.1)
    for n, b in reference.named_buffers():
        if n.endswith("running_var"):
            b.copy_(torch.rand_like(b) + 0.5)
        elif n.endswith("running_mean"):
            b.normal_(0, 0.1)
    ours = (
        MobileNetV3SmallBackbone()
        if name.startswith("mobilenet")
        else ResNetBackbone(int(name[6:]))
    )
    ours.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if not k.startswith(head)}
    )
    reference.eval(), ours.eval()
    if name.startswith("mobilenet"):
        reference.classifier = reference.classifier[:2]  # linear + hardswish: our output
    else:
        reference.fc = nn.Identity()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (reference(x) - ours(x)).abs().max().item()
    print(f"  {name}: eval-mode max |torchvision - dl| = {diff:.3g}")


if __name__ == "__main__":
    main()
