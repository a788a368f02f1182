"""The model-file format: one dict of plain data and tensors, saved atomically, loaded weights_only.

Keys: format, version, dl_version, task, loss, spec (the spec document), input_shape, outputs,
preprocessor (preprocessing state), weights ({"network": state_dict}), train (settings), history,
metrics, created. See docs/model-file.md.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

from dlcli.errors import ModelFileError, excerpt
from dlcli.fileio import atomic_path

FORMAT = "dlcli-model"  # a trained model
CHECKPOINT_FORMAT = "dlcli-checkpoint"  # an interrupted run's resumable state (<model>.run/)
VERSION = 2  # 2: the fitted data preprocessing is stored under "preprocessor" (1: "encoder")


def save(payload: dict, path: str | Path, fmt: str = FORMAT) -> None:
    """Write `payload` (format and version are added) to `path` atomically."""
    import torch

    data = {"format": fmt, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load(path: str | Path, expect: str = FORMAT) -> dict:
    """Load and check a model file; anything but a readable file of ours is a ModelFileError."""
    import torch

    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{path}: model file not found", "train one with `dl train DATA`")
    if p.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a model file")
    if p.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol: noise here
            warnings.filterwarnings(
                "ignore", message="Detected pickle protocol", category=UserWarning
            )
            data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's wording changes between releases: look at the file itself, never at the text
        if names_code(p):
            raise ModelFileError(
                f"{path}: contains pickled code or objects, not plain data; refused (dl never runs code from a model file)"
            ) from None
        raise ModelFileError(f"{path}: not a dl model file (unreadable)") from None
    except (
        Exception
    ) as exc:  # torch raises many kinds (OSError, RuntimeError, IndexError, ...) on foreign bytes
        raise ModelFileError(
            f"{path}: truncated or not a dl model file (cannot be read: {type(exc).__name__})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != expect:
        raise ModelFileError(f"{path}: not a dl model file (no '{expect}' header)")
    version = data.get("version")
    if type(version) is not int or version > VERSION or version < 1:  # True is no version
        raise ModelFileError(
            f"{path}: model file format version {excerpt(version)} is not supported by this dl (reads version {VERSION})",
            "upgrade dl",
        )
    _check_layout(data, path)
    return _upgrade(data)


def _check_layout(data: dict, path: str | Path) -> None:
    """The keys every family reads have the type they need (a file of ours always does: this is
    for edited or forged files); the first that does not is one ModelFileError line naming it."""
    for key, (check, expected) in LAYOUT.items():
        if key in data and not check(data[key]):
            raise ModelFileError(
                f"{path}: model file field '{key}' is malformed: expected {expected}, "
                f"got {excerpt(data[key])}"
            )


def _is_shape(v: object) -> bool:
    return (
        isinstance(v, (list, tuple))
        and 0 < len(v) <= 8
        and all(d is None or (type(d) is int and 0 < d < 2**31) for d in v)  # None: any length
    )


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31


def _is_weights(v: object) -> bool:
    import torch

    return isinstance(v, dict) and all(
        isinstance(k, str)
        and isinstance(sd, dict)
        and all(isinstance(n, str) and isinstance(t, torch.Tensor) for n, t in sd.items())
        for k, sd in v.items()
    )


def _is_text(v: object) -> bool:
    return v is None or isinstance(v, str)


LAYOUT = {  # key -> (check, what it should be)
    "spec": (lambda v: isinstance(v, dict), "a mapping (the spec document)"),
    "preprocessor": (lambda v: isinstance(v, dict), "a mapping (the preprocessing state)"),
    "weights": (_is_weights, "a mapping of networks to their tensors"),
    "input_shape": (_is_shape, "a list of positive whole numbers (null: any length)"),
    "image_shape": (_is_shape, "a list of positive whole numbers (null: any length)"),
    "outputs": (_is_count, "a positive whole number"),
    "latent": (_is_count, "a positive whole number"),
    "family": (lambda v: isinstance(v, str), "a family name"),
    "task": (_is_text, "a task name"),
    "loss": (_is_text, "a loss name"),
    "train": (lambda v: isinstance(v, dict), "a mapping of training settings"),
    "history": (lambda v: isinstance(v, list), "a list of epochs"),
}


def _upgrade(data: dict) -> dict:
    """Files of an older version, in today's layout (in memory; the file is not rewritten)."""
    if data["version"] < 2 and "encoder" in data:
        data["preprocessor"] = data.pop("encoder")
    return data


def checkpoint_path(model_path: str | Path) -> Path:
    """Where an interrupted run's resumable checkpoint lives: <model>.run/checkpoint.pt."""
    return run_dir(model_path) / "checkpoint.pt"


def run_dir(model_path: str | Path) -> Path:
    """The run folder beside a model: model.pt -> model.run/."""
    p = Path(model_path)
    return p.with_name(p.stem + ".run") if p.suffix else p.with_name(p.name + ".run")


# -- what a refused file holds: a pickle naming code, or bytes that are no pickle at all --------
_GLOBAL_OPS = {"GLOBAL", "INST"}  # their argument is "module name"
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


def names_code(path: Path) -> bool:
    """True when the file is a well-formed pickle (alone, or the data.pkl of a torch zip) that
    names a global torch's weights-only loader does not allow (a class, os.system, ...); False
    for bytes that are not a pickle at all. Reads the opcodes only (pickletools): runs nothing."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    return False
                return _pickles_name_code(zf.read(names[0]), max_pickles=1)
        with open(path, "rb") as f:
            return _pickles_name_code(f.read(), max_pickles=5)  # legacy torch: a few pickles
    except Exception:  # unreadable as a zip or a pickle: not ours, and not code either
        return False


def _pickles_name_code(raw: bytes, max_pickles: int) -> bool:
    import io

    stream = io.BytesIO(raw)
    allowed = _allowed_globals()
    for _ in range(max_pickles):
        start = stream.tell()
        if start >= len(raw):
            return False
        try:
            named = _globals_of(stream)
        except Exception:
            return False  # not a complete pickle: foreign bytes (or the raw storages that follow)
        if any(g is None or g not in allowed for g in named):
            return True
    return False


def _globals_of(stream) -> list[str | None]:
    """The "module.name" of every global one pickle names (None where it cannot be told)."""
    import pickletools

    named: list[str | None] = []
    memo: dict[int, object] = {}
    recent: list[object] = []
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in _GLOBAL_OPS:
            named.append(str(arg).replace(" ", ".", 1))
        elif name == "STACK_GLOBAL":
            mod, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            ok = isinstance(mod, str) and isinstance(attr, str)
            named.append(f"{mod}.{attr}" if ok else None)
        elif name in ("OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE") and not named:
            named.append(None)  # builds or calls something no global named: cannot be plain data
        if name in _STRING_OPS:
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif name not in ("STOP", "FRAME", "PROTO", "MARK"):
            recent.append(None)
    return named


def _allowed_globals() -> set[str]:
    """The globals torch's weights-only loader accepts (tensors' rebuild functions, OrderedDict)."""
    try:
        from torch import _weights_only_unpickler as wo

        return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())
    except Exception:  # a torch without these helpers: every global counts as code
        return set()
