"""The model-family registry and contract: every family is registered, declares its spec sections
and honours the flags it claims; engine/ and export/ never import the families (layers point down)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dlcli import families
from dlcli.errors import ModelFileError, UsageError
from dlcli.families.base import REFUSALS, Family, refuse_flags
from dlcli.spec.schema import FAMILY_SECTIONS

PACKAGE = Path(families.__file__).resolve().parents[1]


def test_every_spec_family_is_registered_and_implements_the_contract():
    assert set(families.FAMILIES) == set(FAMILY_SECTIONS)
    for name in families.FAMILIES:
        family = families.get(name)
        assert isinstance(family, Family) and family.name == name
        assert family.sections == FAMILY_SECTIONS[name]
        assert family.predict_flags <= set(REFUSALS) and family.evaluate_flags <= set(REFUSALS)


def test_a_model_file_without_a_family_is_supervised():
    assert families.of_model({}).name == "supervised"
    assert families.of_model({"family": "gan"}).name == "gan"
    with pytest.raises(ModelFileError, match="unknown model family 'nope'"):
        families.of_model({"family": "nope"})


def test_flags_a_family_does_not_honour_are_refused_in_one_line():
    gan, ae = families.get("gan"), families.get("autoencoder")
    with pytest.raises(UsageError, match="--top-k applies to classifiers and forecasters, not gan"):
        refuse_flags(gan, "predict", {"--top-k": True, "--samples": True})
    refuse_flags(gan, "predict", {"--top-k": False, "--samples": True})
    with pytest.raises(UsageError, match="dl evaluate does not apply to gan models"):
        refuse_flags(gan, "evaluate", {"--errors": True})
    with pytest.raises(UsageError, match="--errors applies to image classifiers, not autoencoder"):
        refuse_flags(ae, "evaluate", {"--errors": True, "--anomaly-label": True})


def _imports(folder: str) -> set[str]:
    names = set()
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    "folder,forbidden",
    [("engine", ("dlcli.families", "dlcli.cli")), ("export", ("dlcli.families", "dlcli.engine"))],
)
def test_layers_point_down(folder, forbidden):
    bad = {m for m in _imports(folder) if m.startswith(forbidden)}
    assert not bad, f"dlcli/{folder} imports {sorted(bad)}"
