"""dl tune's search spaces (tune/space.py) and cross-validation folds (data/split.py): parsing,
checks with one-line errors, the presets' own spaces, and the fold partitions' properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlcli.data.split import chronological_split, cross_validation, kfold_split, split_rows
from dlcli.errors import SpecError
from dlcli.spec.schema import load_preset, parse_spec, preset_names
from dlcli.tune import space


def test_find_names_and_draw_bounds() -> None:
    doc = {
        "layers": [{"dense": {"choice": [32, 64]}}, {"dropout": {"uniform": [0.0, 0.5]}}],
        "training": {"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 5},
    }
    dists = space.find(doc, "s.yaml")
    assert [d.name for d in dists] == ["layers[0].dense", "layers[1].dropout", "lr"]
    low, high = (space.apply(doc, v) for v in space.representatives(dists))
    assert low["layers"][0] == {"dense": 32} and high["layers"][0] == {"dense": 64}
    assert low["training"] == {"lr": 1e-4, "epochs": 5}
    assert doc["layers"][0] == {"dense": {"choice": [32, 64]}}  # the space itself is untouched


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"uniform": [1, 0]}, "low < high"),
        ({"loguniform": [0, 1]}, "low > 0"),
        ({"int": [1.5, 4]}, "whole numbers"),
        ({"uniform": [0]}, "[low, high]"),
        ({"choice": []}, "needs a list"),
        ({"normal": [0, 1]}, "unknown distribution 'normal'"),
        ({"choice": [[1], [2]]}, "plain values"),
    ],
)
def test_malformed_distributions_name_the_field(value: dict, words: str) -> None:
    doc = {"layers": [{"dense": 8}, {"dropout": value}]}
    with pytest.raises(SpecError) as err:
        space.find(doc, "s.yaml")
    assert "s.yaml" in str(err.value) and "layers[1].dropout" in str(err.value)
    assert words in str(err.value)


def test_search_section_paths_are_checked() -> None:
    doc = {"layers": [{"dense": 8}]}
    with pytest.raises(SpecError, match=r"search.layers\[3\].dense: no such entry"):
        space.lay_on(doc, {"layers[3].dense": {"choice": [1, 2]}}, "preset x")
    with pytest.raises(SpecError, match=r"not like training\.lr"):
        space.lay_on(doc, {"layers..[": {"choice": [1, 2]}}, "preset x")
    with pytest.raises(SpecError, match="not a distribution"):
        space.lay_on(doc, {"training.lr": 0.1}, "preset x")
    laid = space.lay_on(doc, {"training.lr": {"loguniform": [1e-3, 1e-1]}}, "preset x")
    assert [d.name for d in space.find(laid, "x")] == ["lr"]


def test_flags_fix_training_values() -> None:
    doc = {"layers": [{"dense": {"choice": [1, 2]}}], "training": {"lr": {"uniform": [0.1, 1]}}}
    kept, fixed = space.fix(space.find(doc, "x"), {"lr": 0.5, "epochs": None})
    assert [d.name for d in kept] == ["layers[0].dense"] and fixed == ["lr"]


# text presets build here on a numeric series (their input_embedding is then a projection)
SHAPES = {"tabular": (8,), "image": (3, 32, 32), "series": (24, 1)}


def test_every_preset_has_a_space_that_builds_at_both_ends() -> None:
    """Every preset a search can use carries a `search:` section whose paths point at its values,
    and the network builds at each end of every range: a preset edit that moves a layer breaks
    this test, not a user's search. GAN presets have none (dl tune refuses GANs)."""
    import torch

    from dlcli import families
    from dlcli.model.builder import build_network

    for name in preset_names():
        spec, doc = load_preset(name)
        if spec.family == "gan":
            assert not doc.get("search"), name
            continue
        assert doc.get("search"), f"preset {name} has no search: section"
        laid = space.lay_on(doc, doc["search"], f"preset {name}")
        dists = space.find(laid, name)
        assert {"lr", "weight_decay"} <= {d.name for d in dists}, name
        outputs = None if spec.family == "autoencoder" else 3
        for values in space.representatives(dists):
            drawn = parse_spec(space.apply(laid, values), f"preset {name}")
            if spec.data == ["text"]:  # text only (bow): token ids in
                text = {"input_dtype": torch.long, "data_info": {"vocab_size": 50}}
                build_network(drawn, (None,), outputs, name, **text)
                continue
            kind = next(k for k in spec.data or ["tabular"] if k in SHAPES)
            families.get(drawn.family).build_networks(drawn, SHAPES[kind], outputs, name)


@given(
    n=st.integers(4, 300),
    folds=st.integers(2, 6),
    classes=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_kfold_partitions_rows_and_keeps_classes(n: int, folds: int, classes: int, seed: int):
    y = np.random.default_rng(seed).integers(0, classes, n)
    vals = [kfold_split(y, n, i, folds, seed, True) for i in range(folds)]
    joined = np.sort(np.concatenate([va for _, va in vals]))
    assert np.array_equal(joined, np.arange(n))  # every row validates exactly once
    for tr, va in vals:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == n
        for c in np.unique(y):  # stratified: a class's share differs by at most one row
            counts = [np.sum(y[v] == c) for _, v in vals]
            assert max(counts) - min(counts) <= 1
    assert np.array_equal(kfold_split(y, n, 0, folds, seed, True)[1], vals[0][1])  # seeded


def test_split_rows_and_series_follow_the_active_fold() -> None:
    y = np.array([0, 1] * 10)
    plain = split_rows(y, 20, 0.2, 1, stratify=True, source="d.csv")
    assert len(plain[1]) == 4
    with cross_validation(1, 4):
        _, va = split_rows(y, 20, 0.2, 1, stratify=True, source="d.csv")
        n_train, j0 = chronological_split("s.csv", 120, 100, 1, 0.2)
    assert len(va) == 5 and np.array_equal(va, kfold_split(y, 20, 1, 4, 1, True)[1])
    assert (n_train, j0) == (40, 40)  # expanding window: fold 1 of 4 validates on block 2 of 5
    assert chronological_split("s.csv", 120, 100, 1, 0.2) == (80, 80)


def test_cached_source_prepares_once_per_fold() -> None:
    """Every trial gets the data prepared once (per fold): the wrapped source's `prepare` runs
    once for each fold however many trials ask, and never for a saved preprocessor's reuse."""
    from dlcli.tune.trial import CachedSource

    class Counting:
        kind, default_arch = "tabular", "mlp"

        def __init__(self) -> None:
            self.calls: list = []

        def prepare(self, path: str, opts: object, preprocessor: object = None) -> object:
            self.calls.append((path, preprocessor))
            return object()

    inner = Counting()
    source = CachedSource(inner)
    first = [source.prepare("d.csv", None) for _ in range(5)]
    with cross_validation(0, 2):
        folded = [source.prepare("d.csv", None) for _ in range(3)]
    assert len({id(p) for p in first}) == 1 and len({id(p) for p in folded}) == 1
    assert first[0] is not folded[0] and len(inner.calls) == 2
    source.prepare("d.csv", None, preprocessor="saved")
    assert len(inner.calls) == 3 and source.kind == "tabular"


def test_defaults_are_the_presets_own_values_inside_the_ranges() -> None:
    _, doc = load_preset("mlp")
    laid = space.lay_on(doc, doc["search"], "preset mlp")
    found = space.defaults(doc, space.find(laid, "mlp"))
    assert found["lr"] == doc["training"]["lr"] and found["layers[0].mlp_ensemble[0]"] == 64
    assert "batch_size" not in found  # the preset leaves it to the data size
    narrow = space.find({"training": {"lr": {"uniform": [0.5, 1.0]}}}, "x")
    assert space.defaults({"training": {"lr": 0.1}}, narrow) == {}  # outside the range
