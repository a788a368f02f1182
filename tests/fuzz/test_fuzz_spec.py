"""Property-based fuzzing of the spec loader, validator and builder (issue 11): random YAML/JSON
documents (nested mappings and lists, deep nesting, anchors and aliases, huge ints, NaN/inf, wrong
types), random text, and random layer lists drawn from the real layer registry with random option
values, fed through `read_spec_text` -> `parse_spec` -> the family's `build_networks` (the builder's
meta size check and its dry run). Property: a DLError, or networks that run on a dummy batch and
give the shape they announce; never another exception, and each case within a time bound.

Profiles (tests/conftest.py): `fast` (60 cases a test, in `make test`), `long` (10,000):
    HYPOTHESIS_PROFILE=long /usr/bin/time -v .venv/bin/pytest -p no:xdist tests/fuzz/test_fuzz_spec.py
Networks are built under a 50 MB budget (model/budget.py), so every case stays small in memory."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcli import families
from dlcli.errors import DLError
from dlcli.model.budget import model_budget
from dlcli.model.builder import build_network
from dlcli.spec.registry import INIT_NAMES, known_layers
from dlcli.spec.schema import SECTIONS, parse_spec, read_spec_text

CASE_SECONDS = 20  # one case past this is a hang
BUDGET_GB = 0.05

LAYERS = known_layers()
LAYER_NAMES = sorted({n for d in LAYERS for n in d.names})
OPTION_NAMES = sorted({f for d in LAYERS for f in d.Options.model_fields})
ACTIVATIONS = ["relu", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softmax"]
_GROUPS = {
    1: ("core",),
    2: ("core", "sequence", "recurrent", "attention"),
    3: ("core", "conv", "generative"),
}
LAYERS_FOR = {
    rank: [d for d in LAYERS if type(d).__module__.rsplit(".", 1)[-1] in groups]
    for rank, groups in _GROUPS.items()
}
TOP_KEYS = [*SECTIONS, "name", "description", "init", "head", "data", "variants", "family"]
TOP_KEYS += ["latent", "variational", "training"]
TRAINING_KEYS = ["batch_size", "epochs", "patience"]  # whole numbers: a wrong value is hostile

# -- values ---------------------------------------------------------------------------------------
HUGE_INTS = st.sampled_from([2**31, 2**63, 10**12, 10**30, -(2**63), 10**400, -1, 0])
INTS = st.one_of(st.integers(-4, 64), HUGE_INTS, st.integers())
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5, 1e-320]),
)
WORDS = st.sampled_from(
    [
        "outputs",
        "same",
        "valid",
        "relu",
        "last",
        "mean",
        "all",
        "image",
        "nearest",
        "bilinear",
        "h/4",
        "w/2",
        "xavier",
        "kaiming",
        "zeros",
        "auto",
        "none",
        "table",
        "text",
        "h*2",
    ]
)
TEXT = st.one_of(WORDS, st.text(max_size=20), st.sampled_from(LAYER_NAMES))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
KEYS = st.one_of(
    st.sampled_from(TOP_KEYS + OPTION_NAMES + LAYER_NAMES + ["type"]), st.text(max_size=8)
)


def documents(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON-like value: scalars, lists and mappings nested at random."""
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(KEYS, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def hostile_value() -> st.SearchStrategy[Any]:
    """A value no option should take quietly: extreme, of the wrong type, or a random tree."""
    return st.one_of(HUGE_INTS, FLOATS, st.integers(-3, 0), TEXT, documents(6), st.none())


def plausible(annotation: Any) -> st.SearchStrategy[Any]:
    """A value of the option's declared type (pydantic annotation), in a small range."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(plausible(a) for a in args))
    if origin in (list, tuple):
        item = plausible(args[0]) if args and args[0] is not Ellipsis else st.integers(1, 16)
        return st.lists(item, min_size=1, max_size=3)
    table = {
        int: st.integers(1, 24),
        float: st.floats(0.0, 0.9),
        bool: st.booleans(),
        str: WORDS,
        type(None): st.none(),
    }
    return table.get(annotation, st.one_of(st.integers(1, 16), WORDS))


@st.composite
def layer(draw: st.DrawFn, depth: int = 0, hostile: bool = False, rank: int = 0) -> Any:
    """One layer entry in any of the spec's forms, options drawn from the real registry: values of
    the declared types, and (when `hostile`) now and then an extreme, wrong or foreign one."""
    # mostly layers made for inputs of this rank (1: vectors, 2: sequences, 3: images), so that
    # many cases build and the dry run, not only the validator, gets exercised
    d = draw(st.sampled_from(LAYERS_FOR.get(rank, LAYERS) if draw(st.integers(0, 4)) else LAYERS))
    name = draw(st.sampled_from(d.names))
    fields = {f: info for f, info in d.Options.model_fields.items() if f != "name"}
    required = [f for f, info in fields.items() if info.is_required()]
    optional = sorted(set(fields) - set(required))
    some = st.lists(st.sampled_from(optional), max_size=2, unique=True) if optional else st.just([])
    opts: dict[str, Any] = {}
    for f in required + draw(some):
        if hostile and f in required and draw(st.integers(0, 19)) == 0:
            continue  # a required option left out
        if f == "init":
            opts[f] = draw(st.sampled_from(INIT_NAMES))
        elif f in ("fn", "activation") and not (hostile and draw(st.integers(0, 4)) == 0):
            opts[f] = draw(st.sampled_from(ACTIVATIONS))
        elif f == "layers" and "list" in str(fields[f].annotation):
            opts[f] = draw(layer_list(depth + 1, hostile, rank)) if depth < 3 else ["relu"]
        elif hostile and draw(st.integers(0, 4)) == 0:
            opts[f] = draw(hostile_value())
        else:
            opts[f] = draw(plausible(fields[f].annotation))
    if hostile and draw(st.integers(0, 9)) == 0:
        opts[draw(st.sampled_from(OPTION_NAMES))] = draw(hostile_value())  # maybe foreign
    form = draw(st.integers(0, 4))
    if hostile and draw(st.integers(0, 19)) == 0:
        return draw(documents(4))  # a malformed entry
    if form == 0 and not opts:
        return name
    if form == 2 and d.primary and d.primary in opts:
        primary = opts.pop(d.primary)
        return {name: primary, **opts}
    if form == 3:
        return {name: opts}
    return {"type": name, **opts}


def layer_list(depth: int = 0, hostile: bool = False, rank: int = 0) -> st.SearchStrategy[list]:
    return st.lists(layer(depth, hostile, rank), min_size=1, max_size=5 - depth)


@st.composite
def specs(draw: st.DrawFn, rank: int = 0) -> dict:
    """A spec document of a random family with random layer lists and top-level fields; one in
    three is hostile (extreme or wrong values, unknown keys, malformed entries)."""
    hostile = draw(st.integers(0, 2)) == 0
    family = draw(st.sampled_from(list(families.FAMILIES)))
    names = {"supervised": ["layers"], "autoencoder": ["encoder", "decoder"]}
    sections = names.get(family, ["generator", "discriminator"])
    rank = 3 if family == "gan" else rank
    doc: dict[str, Any] = {s: draw(layer_list(0, hostile, rank)) for s in sections}
    maybe = hostile_value() if hostile and draw(st.integers(0, 3)) == 0 else None
    if draw(st.integers(0, 3)) == 0:
        doc["head"] = draw(st.sampled_from(["auto", "none"]) if maybe is None else TEXT)
    if draw(st.integers(0, 3)) == 0:
        doc["init"] = draw(st.sampled_from(["xavier", "kaiming", "normal", "zeros"]))
    if family != "supervised" and draw(st.integers(0, 2)) == 0:
        doc["latent"] = draw(st.integers(1, 32) if maybe is None else maybe)
    if family == "autoencoder" and draw(st.integers(0, 3)) == 0:
        doc["variational"] = draw(st.booleans() if maybe is None else maybe)
    if draw(st.integers(0, 3)) == 0:
        keys = st.sampled_from(TRAINING_KEYS)
        value = st.integers(1, 64) if maybe is None else maybe
        doc["training"] = draw(st.dictionaries(keys, value, max_size=3))
    if hostile and draw(st.integers(0, 4)) == 0:
        doc[draw(KEYS)] = draw(documents(5))  # an unknown or duplicated top-level key
    return doc


INPUTS = [((4,), 3), ((6,), 1), ((8, 3), 2), ((3, 8, 8), 4), ((1, 16, 16), 2), ((12,), None)]


# -- the property ---------------------------------------------------------------------------------
@contextlib.contextmanager
def time_bound(seconds: int = CASE_SECONDS) -> Iterator[None]:
    """A case running past `seconds` fails as a hang (SIGALRM; the suites run on one thread)."""

    def hang(signum: int, frame: Any) -> None:
        raise AssertionError(f"hang: one case ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_and_build(
    text: str | None, doc: Any, suffix: str, shape: tuple, outputs: int | None
) -> None:
    """The property: a DLError, or every network built runs and gives the shape it announces."""
    with time_bound(), model_budget(BUDGET_GB):
        try:
            data = read_spec_text(text, "fuzz", suffix) if text is not None else doc
            spec = parse_spec(data, "fuzz")
            if spec.family == "gan" and len(shape) != 3:
                shape = (1, 8, 8)
            if spec.family == "gan":
                from dlcli.families.gan import gan_networks

                nets = gan_networks(spec, shape, "fuzz")
            elif spec.family == "supervised" and len(shape) == 1 and outputs is None:
                info = {"vocab_size": 40}  # token ids: the text path of the builder
                nets = {"net": build_network(spec, shape, 3, "fuzz", torch.long, info)}
            else:
                nets = families.get(spec.family).build_networks(spec, shape, outputs, "fuzz")
        except DLError as exc:
            assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))[:300]
            assert len(str(exc)) <= 1000
            return
    for net in nets.values():
        in_shape = tuple(8 if d is None else d for d in net.input_shape)
        ids = spec.family == "supervised" and outputs is None and len(shape) == 1
        x = torch.randint(1, 40, (2, *in_shape)) if ids else torch.randn(2, *in_shape)
        with torch.no_grad():
            y = net.module.eval()(x)
        y = y[0] if isinstance(y, tuple) else y
        want = net.output_shape
        assert len(y.shape) - 1 == len(want), (y.shape, want)
        assert all(w is None or g == w for g, w in zip(y.shape[1:], want, strict=True))


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@st.composite
def specs_and_inputs(draw: st.DrawFn) -> tuple[dict, tuple]:
    io = draw(st.sampled_from(INPUTS))
    return draw(specs(len(io[0]))), io


@FUZZ
@given(case=specs_and_inputs())
def test_random_layer_lists_from_the_registry(case: tuple) -> None:
    doc, io = case
    load_and_build(None, doc, ".json", *io)


@FUZZ
@given(doc=documents(), io=st.sampled_from(INPUTS), as_yaml=st.booleans())
def test_random_documents_as_json_or_yaml_text(doc: Any, io: tuple, as_yaml: bool) -> None:
    """Any JSON-like document (a random top level, random keys) written out as text and read back."""
    import yaml

    if isinstance(doc, dict) and doc and not set(doc) & set(SECTIONS):
        doc = {"layers": doc.get("layers", [doc]), **doc}  # often: a spec shape with junk in it
    try:
        text = yaml.safe_dump(doc) if as_yaml else json.dumps(doc, allow_nan=True)
    except (ValueError, OverflowError, yaml.YAMLError):
        return  # no text of it exists (e.g. an int of 400 digits in JSON under Python's limit)
    load_and_build(text, None, ".yaml" if as_yaml else ".json", *io)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML text with anchors and aliases (nested "billion laughs" of random width and depth),
    deep flow nesting, tags, odd scalars, or random characters."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        width, depth = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        lines = ["a0: &a0 [dense, {dense: 4}]"]
        for i in range(1, depth):
            refs = ", ".join(f"*a{i - 1}" for _ in range(width))
            lines.append(f"a{i}: &a{i} [{refs}]")
        lines.append(f"layers: *a{depth - 1}")
        return "\n".join(lines) + "\n"
    if kind == 1:
        n = draw(st.integers(1, 400))
        return "layers: " + "[" * n + "relu" + "]" * draw(st.integers(0, n)) + "\n"
    if kind == 2:
        value = draw(
            st.sampled_from(
                ["!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "1e999",
                 ".nan", "-.inf", "0x7fffffffffffffffffff", "2001-12-14", "~", "!!set {a, b}",
                 "*undefined", "&x [*x]", "'" + "x" * 5000 + "'", "99999999999999999999999"]
            )
        )  # fmt: skip
        field = draw(st.sampled_from(["units", "filters", "p", "size", "hidden", "dim", "shape"]))
        layer_name = draw(st.sampled_from(LAYER_NAMES))
        return f"layers:\n  - {layer_name}: {value}\n  - {{type: dense, {field}: {value}}}\n"
    if kind == 3:
        return draw(st.text(max_size=200))
    anchor = "base: &b {type: dense, units: 8}\nlayers:\n  - *b\n  - {<<: *b, units: 4}\n"
    return anchor + draw(st.text(alphabet="[]{}:,-&*!|>'\"\n #", max_size=60))


@FUZZ
@given(text=yaml_texts(), io=st.sampled_from(INPUTS))
def test_yaml_with_aliases_deep_nesting_and_odd_scalars(text: str, io: tuple) -> None:
    load_and_build(text, None, ".yaml", *io)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_random_byte_soup_is_one_line(suffix: str) -> None:
    """Not a hypothesis case: bytes that are no UTF-8 text never reach the decoder."""
    load_and_build("\x00\ufffd" * 10, None, suffix, (4,), 3)
