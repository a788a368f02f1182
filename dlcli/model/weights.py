"""`--weights imagenet|FILE`: published pretrained weights into a network's backbone layer.

The network must hold one backbone layer (dlcli/spec/layers/backbones.py); its manifest
(manifests/<arch>.json: every published key and shape, and the URL) says what a published file holds.
A file's tensors minus the published head load into that layer with strict checking; the first key
or shape that does not fit is one line. `imagenet` is the published file for the layer's
architecture, downloaded once into torch's hub cache (`$TORCH_HOME/hub/checkpoints`), checked
against the SHA-256 prefix in its name (as torch.hub's `check_hash` does) and reused offline.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcli import settings
from dlcli.console import info
from dlcli.errors import InputError, UsageError
from dlcli.fileio import atomic_path
from dlcli.modelfile import names_code
from dlcli.spec.layers.backbones import Backbone

IMAGENET = "imagenet"
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX: name-<sha256 prefix>.pth
WRAPPERS = ("state_dict", "model")  # keys some checkpoints nest the state dict under
CHUNK = 1 << 20
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal codes in torch's messages


def manifest(arch: str) -> dict:
    """The published file's layout for `arch`: {arch, url, source, head: [...], tensors: {key: shape}}."""
    text = resources.files("dlcli.model.manifests").joinpath(f"{arch}.json").read_text()
    return json.loads(text)


def find_backbone(network: nn.Module) -> tuple[str, Backbone]:
    """(qualified name, module) of the network's one backbone layer, or a UsageError."""
    found = [(n, m) for n, m in network.named_modules() if isinstance(m, Backbone)]
    if len(found) != 1:
        raise UsageError(
            "--weights: the network has no pretrained backbone layer"
            if not found
            else "--weights: the network holds several backbone layers; load one with a spec of one",
            "use --arch resnet18, resnet34, resnet50 or mobilenet_v3_small (or a spec with "
            "resnet_backbone or mobilenet_v3_small_backbone)",
        )
    return found[0]


def load_weights(network: nn.Module, weights: str) -> set[str]:
    """Load `weights` (`imagenet` or a file) into the network's backbone layer; returns the names
    of the network's tensors that were loaded (the rest, the head, keep their initialisation)."""
    prefix, backbone = find_backbone(network)
    path = imagenet_file(backbone.arch) if weights == IMAGENET else Path(weights).expanduser()
    label = f"--weights {weights}"
    state = read_state(path, label)
    state = {k: v for k, v in state.items() if k not in backbone.head_keys}
    for key, tensor in backbone.state_dict().items():  # files saved before torch 0.4.1 lack these
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(tensor)
    check_layout(backbone.state_dict(), state, label)
    backbone.load_state_dict(state, strict=True)
    loaded = {f"{prefix}.{k}" if prefix else k for k in state}
    fresh = sorted({k.rsplit(".", 1)[0] for k in network.state_dict() if k not in loaded})
    info(
        f"{label}: loaded {len(loaded)} pretrained tensors into {prefix or 'the network'} "
        f"({backbone.arch}); left new: {', '.join(fresh) or 'nothing'}"
    )
    return loaded


def check_layout(own: dict[str, torch.Tensor], got: dict[str, Any], label: str) -> None:
    """The first key or shape of `got` that does not fit `own`, as one InputError line."""
    for key, tensor in own.items():
        if key not in got:
            raise InputError(
                f"{label}: missing tensor {key} (expected shape {tuple(tensor.shape)})",
                "the file must be a torchvision state dict of the same architecture",
            )
        if not isinstance(got[key], torch.Tensor) or tuple(got[key].shape) != tuple(tensor.shape):
            shape = tuple(got[key].shape) if isinstance(got[key], torch.Tensor) else "no tensor"
            raise InputError(
                f"{label}: tensor {key}: expected shape {tuple(tensor.shape)}, got {shape}",
                _channels_hint(key == next(iter(own)), tuple(tensor.shape), shape)
                or "the file must be a torchvision state dict of the same architecture",
            )
    extra = [k for k in got if k not in own]
    if extra:
        raise InputError(
            f"{label}: unexpected tensor {extra[0]} ({len(extra)} not in this architecture)",
            "the file must be a torchvision state dict of the same architecture",
        )


def _channels_hint(first: bool, own: tuple, got: Any) -> str | None:
    """The first convolution differing in its input channels only: the images' channel count
    (`--grayscale` on RGB ImageNet weights), not the file, is what does not fit."""
    if not (first and isinstance(got, tuple) and len(got) == len(own) > 1):
        return None
    if got[:1] + got[2:] != own[:1] + own[2:]:
        return None
    return (
        f"the images have {own[1]} channel{'s' * (own[1] != 1)} and the weights take "
        f"{got[1]}: {'drop --grayscale' if got[1] == 3 else f'give {got[1]}-channel images'}"
    )


def read_state(path: Path, label: str) -> dict[str, Any]:
    """A state dict from `.pth`/`.pt` (weights only; a `state_dict`/`model` wrapper is unwrapped,
    a DataParallel `module.` prefix dropped) or `.safetensors`."""
    if not path.is_file():
        raise UsageError(f"{label}: file not found", "give a .pth, .pt or .safetensors file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state = _read_safetensors(path, label)
    elif suffix in (".pth", ".pt"):
        state = _read_torch(path, label)
    else:
        raise UsageError(f"{label}: unknown file type '{suffix}'", "use .pth, .pt or .safetensors")
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise InputError(f"{label}: {path} holds no state dict (a mapping of names to tensors)")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _read_torch(path: Path, label: str) -> Any:
    """torch.load(weights_only=True): a file that pickles code or objects besides tensors is
    refused in dl's words (torch's own message offers to load it unsafely, with terminal codes)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if names_code(path):
            raise InputError(
                f"{label}: {path} contains pickled code or objects besides tensors; refused "
                "(dl loads weights only and never runs code from a file)",
                "save the state dict alone: torch.save(model.state_dict(), PATH)",
            ) from None
        raise InputError(f"{label}: cannot read {path}: not a torch file (unreadable)") from None
    except Exception as exc:  # torch raises many kinds on truncated or foreign bytes
        raise InputError(f"{label}: cannot read {path}: {_first_sentence(exc)}") from None


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message, without terminal codes, at most 160 chars."""
    text = ANSI.sub("", str(exc)).strip()
    first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return first[:160] or type(exc).__name__


def _read_safetensors(path: Path, label: str) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UsageError(
            f"{label}: reading .safetensors needs the safetensors package",
            "pip install 'dl[transfer]' (or pip install safetensors)",
        ) from None
    try:
        return dict(load_file(str(path)))
    except Exception as exc:
        raise InputError(f"{label}: cannot read {path}: {_first_sentence(exc)}") from None


# -- the published files ---------------------------------------------------------------------------
def archs_in(doc: Any) -> list[str]:
    """The published architectures a spec document's backbone layers name (`resnet_backbone: 18`,
    `{type: resnet_backbone, depth: 50}`, `mobilenet_v3_small_backbone`), in order."""
    found: list[str] = []
    if isinstance(doc, str):  # a layer named without options
        names = {"resnet_backbone": "resnet18", "mobilenet_v3_small_backbone": "mobilenet_v3_small"}
        return [names[doc]] if doc in names else []
    if isinstance(doc, list):
        for item in doc:
            found += archs_in(item)
    elif isinstance(doc, dict):
        kind = doc.get("type")
        for key, value in doc.items():
            if key == "resnet_backbone" or (key == "type" and value == "resnet_backbone"):
                depth = value if key == "resnet_backbone" and not isinstance(value, dict) else None
                found.append(f"resnet{depth or doc.get('depth') or 18}")
            elif "mobilenet_v3_small_backbone" in (key, kind if key == "type" else None):
                found.append("mobilenet_v3_small")
            elif isinstance(value, (list, dict)):
                found += archs_in(value)
    return found


def fetch_early(doc: Any) -> None:
    """--weights imagenet: fetch (or find in the cache) the published file of the spec's one
    backbone before any data is read, so a missing file is one line at once, not after minutes
    of decoding; loading still happens once the network is built."""
    archs = archs_in(doc)
    if len(archs) == 1:
        imagenet_file(archs[0])


def imagenet_url(arch: str) -> str:
    """The published file's URL, or the same file name under DL_WEIGHTS_MIRROR."""
    url = manifest(arch)["url"]
    mirror = settings.get().weights_mirror
    return mirror + url.rsplit("/", 1)[1] if mirror else url


def imagenet_file(arch: str) -> Path:
    """The published weights of `arch` in torch's hub cache: downloaded (and checked) the first
    time, reused offline afterwards."""
    url = imagenet_url(arch)
    name = url.rsplit("/", 1)[1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if path.is_file():
        verify(path, path, f"--weights imagenet: cached file {path}", remove=False)
        return path
    _check_cache(path.parent)
    info(f"--weights imagenet: downloading {url} to {path}")
    try:
        with atomic_path(path) as tmp:
            _download(url, tmp)
            verify(tmp, path, f"--weights imagenet: {url}", remove=True)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UsageError(
            f"--weights imagenet: cannot download {url} ({_why(exc)}); put that file at {path}",
            "on a machine with internet it downloads by itself; offline, copy the file there",
        ) from None
    return path


def _check_cache(folder: Path) -> None:
    """The hub cache folder exists (created as torch.hub does) and takes a file; else one line
    naming it and TORCH_HOME, not a 'cannot download' that blames the network."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"--weights imagenet: cannot write to the torch hub cache {folder} "
            f"({exc.strerror or type(exc).__name__})",
            "set TORCH_HOME to a folder you can write to (the file is kept in "
            "$TORCH_HOME/hub/checkpoints)",
        ) from None


def _why(exc: BaseException) -> str:
    """The short reason of a failed download: `Name or service not known`, `HTTP Error 404: ...`."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP Error {exc.code}: {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return (str(reason) or type(reason).__name__)[:120]


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        while chunk := response.read(CHUNK):
            out.write(chunk)


def verify(path: Path, named: Path, label: str, remove: bool) -> None:
    """The SHA-256 of `path` must start with the hex digits in `named`'s file name (torchvision's
    names carry the first 8); else an InputError (the partial download is removed by atomic_path;
    a corrupted cached file is named so the user can delete it)."""
    found = HASH_IN_NAME.search(named.name)
    if not found:
        raise InputError(f"{label}: the file name {named.name} carries no SHA-256 prefix to check")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if not digest.hexdigest().startswith(found.group(1)):
        hint = "the download was refused and removed; try again" if remove else f"delete {named}"
        raise InputError(
            f"{label}: SHA-256 {digest.hexdigest()[:16]}... does not start with "
            f"{found.group(1)} (corrupted or not the published file)",
            hint,
        )
