"""The data contracts (dlcli/data/contracts.py): every registered kind honours them, the registry
loads lazily, a new kind is one module plus one registry line, table readers are chosen by suffix,
and splitting (split.py) keeps its messages and invariants."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dlcli.data import kinds, readers
from dlcli.data.contracts import DataKind, ExportAdapter, Prepared, Preprocessor, Source
from dlcli.data.sources import (
    PREPROCESSORS,
    SOURCES,
    DataOptions,
    choose_source,
    preprocessor_from_state,
)
from dlcli.data.split import (
    check_split_sizes,
    check_val_split,
    chronological_split,
    split_rows,
    stratified_split,
)
from dlcli.errors import InputError, SpecError, UsageError
from dlcli.export.inputs import adapter_for

PENGUINS = Path(__file__).resolve().parents[2] / "sample_data" / "penguins" / "train.csv"


# -- every registered kind -------------------------------------------------------------------
@pytest.mark.parametrize("name", kinds.kind_names())
def test_every_kind_declares_the_contract(name: str) -> None:
    kind = kinds.get_kind(name)
    assert isinstance(kind, DataKind) and kind.name == name
    pre = kind.preprocessor
    assert issubclass(pre, Preprocessor) and not inspect.isabstract(pre) and pre.kind == name
    assert isinstance(pre.input_dtype, torch.dtype) and isinstance(pre.encode_once, bool)
    assert isinstance(pre.prediction_columns, tuple) and isinstance(pre.has_baseline, bool)
    assert kind.sources, "a kind reads data through at least one source"
    for source in kind.sources:
        assert isinstance(source, Source) and source.kind == name
        assert isinstance(source.priority, int) and isinstance(source.streams, bool)
        assert SOURCES[source.name] is source
    assert PREPROCESSORS[name] is pre
    assert isinstance(kind.export, ExportAdapter) and kind.export.input_name
    assert isinstance(kind.default_arch, str) and kind.default_arch
    assert all(isinstance(o, str) for o in kind.options)
    assert kinds.suggestion(name) == kind.hint


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


def _example(name: str, tmp: Path) -> tuple[str, DataOptions]:
    """A tiny data set of kind `name` and the options that read it as that kind."""
    if name == "tabular":
        return str(PENGUINS), DataOptions()
    if name == "text":
        words = ["good fine great nice", "bad awful poor sad", "quite nice and good", "so very bad"]
        rows = [
            {"review": f"{words[i % 4]} item {i}", "label": "pos" if i % 4 in (0, 2) else "neg"}
            for i in range(40)
        ]
        pd.DataFrame(rows).to_csv(tmp / "text.csv", index=False)
        return str(tmp / "text.csv"), DataOptions(extra={"text": {"text_column": "review"}})
    if name == "series":
        t = np.arange(60.0)
        pd.DataFrame({"x": np.sin(t / 5), "y": t + np.cos(t)}).to_csv(tmp / "s.csv", index=False)
        return str(tmp / "s.csv"), DataOptions(extra={"series": {"window": 4}})
    if name == "image":
        for cls, value in (("dark", 20), ("light", 220)):
            for i in range(4):
                _png(tmp / "imgs" / cls / f"{i}.png", value + i)
        return str(tmp / "imgs"), DataOptions()
    pytest.skip(f"no tiny example for data kind '{name}'")


@pytest.mark.parametrize("name", kinds.kind_names())
def test_every_kind_fits_saves_and_reloads(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fitted preprocessor of every kind answers every declared member; its plain-data state
    (through JSON) rebuilds an equal one that preprocesses the same way."""
    monkeypatch.setenv("DL_CACHE_DIR", str(tmp_path / "cache"))
    path, opts = _example(name, tmp_path)
    source = choose_source(path, opts)
    assert source.kind == name
    prep = source.prepare(path, opts)
    assert isinstance(prep, Prepared)
    pre = prep.preprocessor
    assert isinstance(pre, kinds.get_kind(name).preprocessor) and pre.kind == name
    assert isinstance(pre.input_shape, tuple) and isinstance(pre.raw_shape, tuple)
    assert isinstance(pre.data_info, dict)
    module = pre.preprocess_module()
    assert isinstance(module, nn.Module)
    x = prep.x_val[:2] if isinstance(prep.x_val, torch.Tensor) else None
    again = preprocessor_from_state(json.loads(json.dumps(pre.to_state())))
    assert type(again) is type(pre) and again.to_state() == pre.to_state()
    if x is not None:
        torch.testing.assert_close(again.preprocess_module()(x), module(x))
    assert adapter_for(pre) is kinds.get_kind(name).export
    assert isinstance(pre.inherit_options({}), dict)
    if name != "text":  # a variable-length input has no fixed reconstruction layout
        layout = pre.reconstruction_layout()
        assert set(layout) == {"n_cont", "n_bin", "groups"}
        assert isinstance(pre.reconstruction_module(), nn.Module)


def test_augment_is_refused_with_one_line_for_kinds_without_it() -> None:
    from dlcli.data.tabular import TabularPreprocessor

    with pytest.raises(UsageError, match="--augment applies to image data, not to tabular data"):
        TabularPreprocessor([], None).augmenter("flip")


# -- the registry ----------------------------------------------------------------------------
def test_the_registry_imports_no_kind_until_asked() -> None:
    code = (
        "import sys\n"
        "from dlcli.data import kinds\n"
        "assert kinds.kind_names() == ('tabular', 'image', 'text', 'series'), kinds.kind_names()\n"
        "heavy = [m for m in ('torch', 'pandas', 'PIL', 'dlcli.data.tabular') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert kinds.suggestion('tabular') == 'try --arch mlp'\n"
        "assert 'dlcli.data.tabular_source' in sys.modules and 'dlcli.data.images' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_suggestion_and_options_come_from_the_kinds() -> None:
    assert kinds.suggestion("image") == "try --arch cnn or --arch resnet"
    assert kinds.suggestion("text") == kinds.suggestion(None) == "see dl build --list"
    assert kinds.suggestion("no such kind") == "see dl build --list"
    given = {"image_size": None, "grayscale": True, "window": 5, "horizon": None, "tokenizer": None}
    assert kinds.option_values(given) == {"image": {"grayscale": True}, "series": {"window": 5}}


def test_unknown_kinds_are_one_clear_line() -> None:
    with pytest.raises(InputError, match="model file has preprocessing of unknown kind 'nope'"):
        preprocessor_from_state({"kind": "nope"})
    with pytest.raises(SpecError, match=r"field 'data.0': Input should be 'tabular', 'image'"):
        _spec(["tabel"])


def _spec(data: list[str]) -> object:
    from dlcli.spec.schema import parse_spec

    return parse_spec({"layers": [{"type": "dense", "units": 4}], "data": data}, "t.yaml")


TOY_KIND = '''
"""A toy data kind: a `.toy` file of numbers, one per line."""
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dlcli.data.contracts import DataKind, ExportAdapter, Prepared, Preprocessor
from dlcli.data.target import Target


class ToyPreprocessor(Preprocessor):
    kind = "toy"

    def __init__(self, target=None):
        self.target = target

    @property
    def input_shape(self):
        return (1,)

    def preprocess_module(self):
        return nn.Identity()

    def iter_inputs(self, paths, keep=False):
        for path in [paths] if isinstance(paths, str) else paths:
            values = [float(v) for v in Path(path).read_text().split()]
            yield pd.DataFrame(index=range(len(values))), torch.tensor(values).view(-1, 1)

    def iter_labelled(self, path):
        yield from self.iter_inputs(path)

    def to_state(self):
        return {"kind": self.kind}

    @classmethod
    def from_state(cls, state):
        return cls()


class ToySource:
    name = "toy"
    kind = "toy"
    priority = 100
    default_arch = "mlp"
    streams = False

    @staticmethod
    def claims(path, opts):
        return path.endswith(".toy")

    @staticmethod
    def prepare(path, opts, preprocessor=None):
        pre = preprocessor or ToyPreprocessor(Target("y", "regression", [], 0.0, 1.0))
        (_, x), = pre.iter_inputs(path)
        return Prepared(pre, x[2:], x[2:, 0], x[:2], x[:2, 0], {"rows": len(x)})


class ToyExport(ExportAdapter):
    input_name = "numbers"

    def examples(self, loaded):
        return torch.zeros(2, 1)

    def metadata(self, preprocessor):
        return {"dl.preprocessing": "none"}


KIND = DataKind(
    name="toy",
    preprocessor=ToyPreprocessor,
    sources=(ToySource,),
    export=ToyExport(),
    options=("toy_scale",),
    hint="try --arch mlp on toys",
)
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The toy kind, registered with one line."""
    (tmp_path / "toy_kind.py").write_text(textwrap.dedent(TOY_KIND))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(kinds.KINDS, "toy", "toy_kind")  # the one registry line
    yield kinds.get_kind("toy")
    sys.modules.pop("toy_kind", None)


def test_a_new_kind_is_one_module_and_one_registry_line(toy: DataKind, tmp_path: Path) -> None:
    data = tmp_path / "numbers.toy"
    data.write_text("1 2 3 4 5 6")
    source = choose_source(str(data), DataOptions())
    assert source is toy.sources[0] and SOURCES["toy"] is source
    assert choose_source(str(PENGUINS), DataOptions()).kind == "tabular"  # others unchanged
    prep = source.prepare(str(data), DataOptions())
    pre = preprocessor_from_state(json.loads(json.dumps(prep.preprocessor.to_state())))
    assert isinstance(pre, toy.preprocessor) and PREPROCESSORS["toy"] is toy.preprocessor
    assert adapter_for(pre) is toy.export and adapter_for(pre).verify_batches(torch.ones(3, 1))
    assert kinds.suggestion("toy") == "try --arch mlp on toys" and toy.default_arch == "mlp"
    assert kinds.option_values({"toy_scale": 2.0}) == {"toy": {"toy_scale": 2.0}}
    assert _spec(["toy"]).data == ["toy"]  # a spec's `data:` accepts the new kind
    assert pre.reconstruction_layout() == {"n_cont": 1, "n_bin": 0, "groups": []}
    with pytest.raises(UsageError, match="not to toy data"):
        pre.augmenter("flip")


def test_a_kind_that_breaks_the_contract_fails_naming_its_module(
    toy: DataKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(toy.sources[0], "streams")
    with pytest.raises(TypeError, match=r"toy_kind: .*must be a Source of kind 'toy'"):
        kinds.get_kind("toy")


# -- readers ---------------------------------------------------------------------------------
def test_readers_are_chosen_by_suffix_with_csv_as_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    csv = readers.reader_for("a.csv")
    assert isinstance(csv, readers.Reader)
    for path in ("A.CSV", "table.txt", "noext", "-"):
        assert readers.reader_for(path) is csv
    monkeypatch.setitem(readers.READERS, ".csv.gz", "gzip")  # a longer suffix wins
    monkeypatch.setitem(readers.READERS, ".gz", "json")
    assert readers.reader_for("t.csv.gz").__name__ == "gzip"
    assert readers.reader_for("t.gz").__name__ == "json"


@pytest.mark.parametrize("suffix", sorted(readers.READERS))
def test_every_reader_implements_the_contract(suffix: str) -> None:
    assert isinstance(readers.reader_for(f"x{suffix}"), readers.Reader)


def test_the_reader_layer_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,text\n1,x,NA\n2,,hello\n")
    assert readers.header_of(str(path)) == ["a", "b", "text"]
    frame = readers.read_table(str(path))
    assert frame["a"].tolist() == [1, 2] and frame["b"].isna().tolist() == [False, True]
    verbatim = next(readers.iter_chunks(str(path), verbatim=True))
    assert verbatim["text"].tolist() == ["NA", "hello"] and "NA" in readers.NULL_TEXT
    assert readers.sample(str(path))["a"].tolist() == ["1", "2"]
    assert readers.sample(str(tmp_path / "missing.csv")) is None
    with pytest.raises(InputError, match="file not found"):
        readers.read_arrow(str(tmp_path / "missing.csv"))


# -- splitting -------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_val_split_outside_0_1_is_one_usage_line(share: float) -> None:
    with pytest.raises(
        UsageError, match=f"--val-split {share:g}: must be more than 0 and less than 1"
    ):
        check_val_split(share)
    with pytest.raises(UsageError, match="must be more than 0 and less than 1"):
        split_rows(None, 10, share, 0, stratify=False, source="t.csv")


def test_too_few_rows_to_split_names_the_file_and_the_way_out() -> None:
    with pytest.raises(InputError, match=r"t\.csv: only 2 rows; too few to split") as err:
        split_rows(None, 2, 0.5, 0, stratify=False, source="t.csv")
    assert err.value.hint == "pass --val FILE"
    with pytest.raises(InputError, match="d: only 3 images; too few") as err:
        check_split_sizes("d", 3, 1, 2, "images", "pass --val FOLDER")
    assert err.value.hint == "pass --val FOLDER"
    check_split_sizes("t.csv", 3, 2, 1)  # enough: no error
    with pytest.raises(InputError, match="too short to split: 10 rows make 6 windows"):
        chronological_split("s.csv", 10, 6, 5, 0.2)
    assert chronological_split("s.csv", 100, 90, 1, 0.2) == (72, 72)


def _cases(count: int) -> list[tuple[np.ndarray, float, int]]:
    """Seeded random label vectors (small and skewed classes, singletons) and shares."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, 300))
        k = int(rng.integers(1, 8))
        y = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k) * 0.5))
        out.append((y.astype(np.int64), float(rng.uniform(0.05, 0.95)), int(rng.integers(1e6))))
    return out


@pytest.mark.parametrize("y,share,seed", _cases(60))
def test_stratified_split_invariants(y: np.ndarray, share: float, seed: int) -> None:
    """Disjoint, covering and sorted parts; per class the share rounded, at least one row on
    each side when the class has two; the same seed gives the same rows; labels given as text
    split the same way as their integer codes."""
    n = len(y)
    tr, va = stratified_split(y, n, share, seed, True)
    assert np.intersect1d(tr, va).size == 0 and np.array_equal(np.union1d(tr, va), np.arange(n))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    for cls in np.unique(y):
        c = int((y == cls).sum())
        want = 0 if c == 1 else min(max(round(c * share), 1), c - 1)
        assert int((y[va] == cls).sum()) == want
    again = stratified_split(y, n, share, seed, True)
    assert np.array_equal(again[0], tr) and np.array_equal(again[1], va)
    text = np.array([f"c{v}" for v in y], dtype=object)
    assert np.array_equal(stratified_split(text, n, share, seed, True)[1], va)


@pytest.mark.parametrize("n,share,seed", [(2, 0.5, 0), (10, 0.2, 1), (997, 0.33, 7)])
def test_plain_split_takes_the_rounded_share(n: int, share: float, seed: int) -> None:
    tr, va = stratified_split(None, n, share, seed, False)
    assert len(va) == max(1, round(n * share)) and len(tr) + len(va) == n
    assert np.array_equal(np.union1d(tr, va), np.arange(n))
    assert np.array_equal(stratified_split(None, n, share, seed, False)[1], va)


def test_splits_are_bit_for_bit_those_of_before() -> None:
    """Same seed, same rows: the exact indices the pre-refactor code picked."""
    y = np.array([0, 1, 0, 1, 2, 0, 1, 2, 0, 0], dtype=np.int64)
    assert stratified_split(y, 10, 0.3, 42, True)[1].tolist() == [3, 4, 5, 9]
    assert stratified_split(None, 10, 0.3, 42, False)[1].tolist() == [0, 5, 6]
