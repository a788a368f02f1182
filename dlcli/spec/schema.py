"""Spec files (YAML or JSON) and presets -> validated `Spec`. Errors name the file, layer index and field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dlcli.errors import SpecError, excerpt
from dlcli.spec.registry import LayerDef, lookup

_UNION_TAG = re.compile(
    r"^(int|float|str|bool|list\[.*\]|dict\[.*\]|none|literal\[.*\]|function-.*)$", re.IGNORECASE
)


def _data_kind(name: str) -> str:
    """A spec's `data:` entry names a registered data kind (dlcli/data/kinds.py: a table of names,
    imported without importing any kind)."""
    from dlcli.data.kinds import kind_names

    known = kind_names()
    if name not in known:
        names = [repr(k) for k in known]
        expected = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise PydanticCustomError("literal_error", f"Input should be {expected}")
    return name


DataKindName = Annotated[str, AfterValidator(_data_kind)]


class TrainingDefaults(BaseModel):
    """Training settings a spec may carry; command-line flags override them."""

    model_config = ConfigDict(extra="forbid")

    optimizer: str | None = None
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    batch_size: int | None = Field(None, gt=0)
    epochs: int | None = Field(None, gt=0)
    schedule: str | None = None
    loss: str | None = None
    patience: int | None = Field(None, ge=0)
    grad_clip: float | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    refit: bool | None = None  # after early stopping, train afresh on all rows (engine/refit.py)
    beta1: float | None = Field(None, ge=0, lt=1)  # Adam's beta1 (GANs: 0.5)
    threshold_percentile: float | None = Field(None, gt=0, lt=100)  # autoencoder anomaly threshold
    anomaly_score: str | None = (
        None  # autoencoders: the stored default score (its family checks it)
    )


class InputDefaults(BaseModel):
    """How a spec wants its images fed: a default side and channel count, and the per-channel
    mean/std its pretrained weights expect (instead of statistics of the training images).
    Command-line flags (--image-size, --grayscale) win over these."""

    model_config = ConfigDict(extra="forbid")

    image_size: int | None = Field(None, ge=4, le=2048)
    channels: Literal[1, 3] | None = None
    mean: list[Annotated[float, Field(ge=-1e6, le=1e6)]] | None = None
    std: list[Annotated[float, Field(gt=0, le=1e6)]] | None = None

    @model_validator(mode="after")
    def _stats(self) -> InputDefaults:
        if (self.mean is None) != (self.std is None):
            raise ValueError("input: give 'mean' and 'std' together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
                raise ValueError("input: 'mean' and 'std' need one value per channel (1 or 3)")
            if self.channels is not None and len(self.mean) != self.channels:
                raise ValueError(f"input: 'mean' and 'std' need {self.channels} values")
        return self

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Data kind -> the options it sets (DataOptions.extra): images only for now."""
        values = self.model_dump(exclude_none=True)
        return {"image": values} if values else {}


# model family -> the layer-list sections its spec holds (the first ones are required)
FAMILY_SECTIONS: dict[str, tuple[str, ...]] = {
    "supervised": ("layers",),
    "autoencoder": ("encoder", "decoder"),
    "gan": ("generator", "discriminator"),
}
SECTIONS = ("layers", "encoder", "decoder", "generator", "discriminator")


class Spec(BaseModel):
    """A network: a list of layers (plus an automatic output head) and optional training defaults.

    Unsupervised families hold two layer lists instead of `layers`: `encoder:` + `decoder:`
    (autoencoder; `latent` units between them, `variational` for a VAE) or `generator:` +
    `discriminator:` (GAN; `latent` is the noise size). `family` is inferred from the sections."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    init: str | None = None
    head: Literal["auto", "none"] = "auto"
    data: list[DataKindName] | None = None  # data kinds it suits (None: any)
    variants: dict[str, str] | None = None  # data kind -> the preset to use for it instead
    # data kind -> defaults for its options (e.g. text: {min_freq: 1}); flags win
    data_options: dict[DataKindName, dict[str, Any]] | None = None
    family: Literal["supervised", "autoencoder", "gan"] | None = None
    layers: list[Any] | None = None
    encoder: list[Any] | None = None
    decoder: list[Any] | None = None
    generator: list[Any] | None = None
    discriminator: list[Any] | None = None
    latent: int | None = Field(None, gt=0)
    variational: bool = False
    training: TrainingDefaults = TrainingDefaults()
    input: InputDefaults | None = None  # image size, channels, mean/std (pretrained backbones)
    search: dict[str, Any] | None = None  # `dl tune`'s default space: value path -> distribution

    @model_validator(mode="after")
    def _sections(self) -> Spec:
        given = [s for s in SECTIONS if getattr(self, s) is not None]
        if self.family is None:
            fam = [f for f, secs in FAMILY_SECTIONS.items() if any(s in given for s in secs)]
            if len(fam) != 1:
                raise ValueError(
                    "a spec holds 'layers' (a network), 'encoder' + 'decoder' (an autoencoder) "
                    f"or 'generator' + 'discriminator' (a GAN); found {', '.join(given) or 'none'}"
                )
            self.family = fam[0]
        wanted = FAMILY_SECTIONS[self.family]
        for sec in given:
            if sec not in wanted:
                raise ValueError(f"section '{sec}' does not belong in a {self.family} spec")
        for sec in wanted:
            if not getattr(self, sec):
                raise ValueError(f"field '{sec}' is required (a list of layers)")
        return self

    def sections(self) -> dict[str, list[Any]]:
        """The layer lists of this spec's family, by section name."""
        return {s: getattr(self, s) for s in FAMILY_SECTIONS[self.family or "supervised"]}


@dataclass(frozen=True)
class LayerEntry:
    """One parsed layer: its definition, validated options and the type name as written."""

    layerdef: LayerDef
    opts: Any
    type_name: str


def parse_layer(entry: Any, where: str) -> LayerEntry:
    """Accept `relu`, `{type: dense, units: 64}`, `{dense: 64, init: xavier}` or `{dense: {units: 64}}`."""
    if isinstance(entry, str):
        type_name, raw = entry, {}
    elif isinstance(entry, dict) and "type" in entry:
        type_name, raw = entry["type"], {k: v for k, v in entry.items() if k != "type"}
    elif isinstance(entry, dict) and entry:
        # shorthand: the first key names the layer, its value is the main option; other keys are options
        type_name, value = next(iter(entry.items()))
        rest = {k: v for k, v in list(entry.items())[1:]}
        layerdef = lookup(type_name, where)
        if isinstance(value, dict):
            raw = {**value, **rest}
        elif value is None:
            raw = rest
        elif layerdef.primary:
            raw = {layerdef.primary: value, **rest}
        else:
            raise SpecError(
                f"{where} ({_cut(str(type_name))}): takes no shorthand value, got {excerpt(value)}"
            )
    else:
        raise SpecError(
            f"{where}: a layer must be a name or a mapping with 'type', e.g. {{type: dense, units: 64}}; "
            f"got {excerpt(entry)}"
        )
    layerdef = lookup(type_name, where)
    try:
        opts = layerdef.Options.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{where} ({_cut(str(type_name))}): {_first_error(exc)}") from None
    return LayerEntry(layerdef, opts, _cut(str(type_name)))


def _first_error(exc: ValidationError) -> str:
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    # pydantic adds union branch names ('int', "literal['outputs']") to the location: drop them
    parts = [str(p) for p in err["loc"] if isinstance(p, int) or not _UNION_TAG.match(str(p))]
    field = _cut(".".join(parts) or "value")  # a key is user text too
    msg = _cut(str(err["msg"]).removeprefix("Value error, "), 200)  # it may quote the value
    if err["type"] == "extra_forbidden":
        return f"unknown field '{field}'"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    if err["type"] == "value_error" and not parts:  # a check across fields (model validator)
        return msg
    return f"field '{field}': {msg} (got {excerpt(err.get('input'))})"


def _cut(text: str, limit: int = 60) -> str:
    """User text quoted inside quotes of a message: at most `limit` characters."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def parse_spec(data: Any, source: str) -> Spec:
    """Validate a decoded spec document; `source` names it in errors."""
    if not isinstance(data, dict):
        raise SpecError(
            f"spec {source}: must be a mapping with a 'layers' list, got {type(data).__name__}"
        )
    check_size(data, source)  # documents from model files and library callers too
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"spec {source}: {_first_error(exc)}") from None
    for section, entries in spec.sections().items():  # every layer, before any training
        for i, entry in enumerate(entries):
            try:
                parse_layer(entry, f"{section}[{i}]")
            except SpecError as exc:
                raise SpecError(f"spec {source}: {exc.message}", exc.hint) from None
    return spec


MAX_DEPTH = 64  # nested lists/mappings a spec may hold (real specs use fewer than 10)
MAX_ENTRIES = 100_000  # values a spec may hold once YAML aliases are followed


def check_size(data: Any, source: str) -> None:
    """A spec nested deeper than MAX_DEPTH, or holding more than MAX_ENTRIES values once aliases
    are followed (the "billion laughs" pattern), is one SpecError line; walked without recursion,
    stopping at the limit, so the check itself stays bounded."""
    stack, seen = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_ENTRIES:
            raise SpecError(
                f"spec {source}: holds more than {MAX_ENTRIES:,} values (aliases expanded); "
                "a network spec is far smaller"
            )
        if depth > MAX_DEPTH:
            raise SpecError(f"spec {source}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def read_spec_text(text: str, source: str, suffix: str = ".yaml") -> Any:
    """Decode YAML or JSON text; syntax errors name the line (size and depth: `parse_spec`)."""
    try:
        return _decode(text, source, suffix)
    except RecursionError:
        raise SpecError(f"spec {source}: nested more than {MAX_DEPTH} levels deep") from None


def _decode(text: str, source: str, suffix: str) -> Any:
    if suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"spec {source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise SpecError(f"spec {source}: invalid YAML at line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:  # e.g. a control character: the reader names its position
        where = f" at character {exc.position}" if isinstance(exc, yaml.reader.ReaderError) else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, yaml.reader.ReaderError):
            reason = (
                f"unacceptable character #x{exc.character:04x}"
                if isinstance(exc.character, int)
                else reason
            )
        raise SpecError(f"spec {source}: invalid YAML{where}: {_cut(reason, 200)}") from None


def read_spec_document(path: str | Path) -> Any:
    """Read and decode a spec file (YAML or JSON by suffix), not yet validated: syntax errors
    name the line; size and depth are checked by the bounded decoder and `parse_spec`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"spec {path}: not UTF-8 text") from None
    return read_spec_text(text, str(path), path.suffix)


def load_spec_file(path: str | Path) -> tuple[Spec, dict]:
    """Read, decode and validate a spec file. Returns the Spec and the raw document."""
    data = read_spec_document(path)
    return parse_spec(data, str(path)), data


def preset_names() -> list[str]:
    """Names of the presets shipped in dlcli/spec/presets."""
    files = resources.files("dlcli.spec.presets").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


PRESET_ALIASES = {"gan": "dcgan"}  # names users type -> the preset file


def preset_text(name: str) -> str:
    """The YAML text of preset `name` (what `dl build --print-spec` shows)."""
    key = name.lower().replace("-", "_")
    key = PRESET_ALIASES.get(key, key)
    names = preset_names()
    if key not in names:
        import difflib

        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"available: {', '.join(names)}"
        raise SpecError(f"unknown --arch {excerpt(name)}", hint)
    return resources.files("dlcli.spec.presets").joinpath(f"{key}.yaml").read_text(encoding="utf-8")


def load_preset(name: str) -> tuple[Spec, dict]:
    """Decode and validate a shipped preset."""
    data = read_spec_text(preset_text(name), f"preset {name}")
    return parse_spec(data, f"preset {name}"), data


def resolve_spec(
    spec_path: str | None, arch: str | None, default: str = "mlp"
) -> tuple[Spec, dict]:
    """--spec FILE wins; else --arch NAME; else the default preset."""
    if spec_path:
        return load_spec_file(spec_path)
    return load_preset(arch or default)
