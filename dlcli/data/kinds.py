"""The data kind registry: kind name -> the module that declares it (`KIND`, a DataKind).

Adding a data kind is one module and one line here. Modules are imported on first use, so reading
this table (a spec's `data:` check, `dl --help`) imports neither torch nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dlcli.errors import InputError

if TYPE_CHECKING:
    from dlcli.data.contracts import DataKind

KINDS: dict[str, str] = {
    "tabular": "dlcli.data.tabular_source",
    "image": "dlcli.data.images",
    "text": "dlcli.data.text",
    "series": "dlcli.data.series",
}

NO_HINT = "see dl build --list"


def kind_names() -> tuple[str, ...]:
    """The registered kinds, without importing any of them."""
    return tuple(KINDS)


def get_kind(name: str) -> DataKind:
    """The DataKind record of `name` (its module is imported now); checked against the contract."""
    if name not in KINDS:
        raise InputError(f"unknown data kind '{name}' (known: {', '.join(KINDS)})")
    kind = importlib.import_module(KINDS[name]).KIND
    _check(kind, name)
    return kind


def all_kinds() -> list[DataKind]:
    """Every registered kind, in registry order."""
    return [get_kind(name) for name in KINDS]


def suggestion(kind: str | None) -> str:
    """The hint shown when a preset was made for other data than `kind` (e.g. 'try --arch mlp')."""
    return get_kind(kind).hint if kind in KINDS else NO_HINT


def option_values(given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`dl train` parameters -> DataOptions.extra: per kind, the options it declares that were
    set (not None nor False); a kind appears only when one of its options is set."""
    extra = {}
    for kind in all_kinds():
        values = {n: given[n] for n in kind.options if given.get(n) not in (None, False)}
        if values:
            extra[kind.name] = values
    return extra


def _check(kind: Any, name: str) -> None:
    """A kind module that breaks the contract fails here, naming what is wrong."""
    from dlcli.data.contracts import DataKind, Preprocessor, Source

    where = KINDS[name]
    if not isinstance(kind, DataKind) or kind.name != name:
        raise TypeError(f"{where}.KIND must be a DataKind named '{name}'")
    if not (issubclass(kind.preprocessor, Preprocessor) and kind.preprocessor.kind == name):
        raise TypeError(f"{where}: the preprocessor must be a Preprocessor of kind '{name}'")
    for source in kind.sources:
        if not isinstance(source, Source) or source.kind != name:
            raise TypeError(f"{where}: {source!r} must be a Source of kind '{name}'")
