"""Name -> layer definition. A new layer is one `@register("name")` class; names are normalised."""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from dlcli.errors import SpecError, excerpt

Shape = tuple[int | None, ...]  # per-sample shape, batch dimension excluded; None = any length


INIT_NAMES = ("default", "xavier", "kaiming", "he", "normal", "zeros")  # see spec/init.py


class Options(BaseModel):
    """Base of every layer's options: unknown fields are errors, values are plain data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # optional module name (used by --freeze and in the summary)
    init: str | None = None  # weight initialisation for this layer (see spec/init.py)

    @field_validator("init")
    @classmethod
    def _known_init(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in INIT_NAMES:
            raise ValueError(
                f"unknown initialisation {excerpt(v, 30)}, known: {', '.join(INIT_NAMES)}"
            )
        return v


class LayerDef:
    """A layer type: its `Options` (the constructor's keyword arguments) and `build`.

    `primary` names the option a shorthand like `{dense: 64}` sets.
    """

    names: ClassVar[tuple[str, ...]] = ()
    primary: ClassVar[str | None] = None
    embeds_tokens: ClassVar[bool] = False  # ids -> `dim`-wide vectors (--embeddings fills)
    Options: ClassVar[type[Options]] = Options
    doc: ClassVar[str] = ""

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[Any, Shape]:
        """Return (torch module, per-sample output shape)."""
        raise NotImplementedError


class BuildContext:
    """What a builder may need beyond its own options: the task's output count and a way to
    build nested layer lists (residual blocks)."""

    def __init__(self, outputs: int | None, build_list: Any, where: str) -> None:
        self.outputs = outputs
        self.build_list = build_list
        self.where = where
        self.dtype: Any = None  # torch dtype of this layer's input (integer = token ids)
        self.data: dict = {}  # facts from the data (e.g. vocab_size), set by the builder

    def resolve_units(self, value: int | str, field: str) -> int:
        if value == "outputs":
            if self.outputs is None:
                raise SpecError(
                    f"{self.where}: field '{field}' is 'outputs' but no output size is known",
                    "pass --outputs",
                )
            return self.outputs
        return int(value)


LAYERS: dict[str, LayerDef] = {}


def normalise(name: str) -> str:
    """`Batch_Norm`, `batch-norm` and `batchnorm` are one name."""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def register(*names: str):
    """Class decorator: make a LayerDef subclass available under `names` (first = canonical)."""

    def deco(cls: type[LayerDef]) -> type[LayerDef]:
        cls.names = names
        cls.doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        instance = cls()
        for n in names:
            key = normalise(n)
            if LAYERS.get(key) is not None and type(LAYERS[key]) is not cls:
                raise RuntimeError(f"layer name {n!r} registered twice")
            LAYERS[key] = instance
        return cls

    return deco


def lookup(name: Any, where: str) -> LayerDef:
    """The LayerDef for `name`, or a SpecError naming the place and the closest known names."""
    _load_builtin_layers()
    if not isinstance(name, str):
        raise SpecError(f"{where}: layer type must be a string, got {excerpt(name)}")
    found = LAYERS.get(normalise(name))
    if found is None:
        canon = sorted({d.names[0] for d in LAYERS.values()})
        key = normalise(name)[:100]  # a 1 MB name is no typo of a layer's
        close = difflib.get_close_matches(key, list(LAYERS), n=3, cutoff=0.6)
        close_names = sorted({LAYERS[c].names[0] for c in close})
        hint = (
            f"did you mean {', '.join(close_names)}?"
            if close_names
            else f"known: {', '.join(canon)}"
        )
        raise SpecError(f"{where}: unknown layer type {excerpt(name)}", hint)
    return found


def known_layers() -> list[LayerDef]:
    """Every registered layer type once, sorted by canonical name."""
    _load_builtin_layers()
    unique = {id(d): d for d in LAYERS.values()}
    return sorted(unique.values(), key=lambda d: d.names[0])


def _load_builtin_layers() -> None:
    # Importing the family modules runs their @register decorators (once).
    from dlcli.spec.layers import load_all

    load_all()
