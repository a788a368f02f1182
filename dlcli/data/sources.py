"""Choosing a data source for a path, and rebuilding a saved preprocessor, over the registered
data kinds (kinds.py). Every source returns the same `Prepared` contract (contracts.py), so the
engine never knows where data came from. A new data kind is one module and one line in kinds.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dlcli.console import note
from dlcli.data.contracts import DataOptions, Prepared, Preprocessor, Source
from dlcli.data.kinds import KINDS, all_kinds, get_kind
from dlcli.errors import InputError, UsageError

__all__ = [
    "PREPROCESSORS",
    "SOURCES",
    "DataOptions",
    "Prepared",
    "choose_source",
    "preprocessor_from_state",
    "with_input_options",
]


class RegistryView(Mapping):
    """A read-only name -> class view over every registered kind, built when read."""

    def __init__(self, entries: Callable[[], dict[str, Any]]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> Any:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


SOURCES = RegistryView(lambda: {s.name: s for k in all_kinds() for s in k.sources})
PREPROCESSORS = RegistryView(lambda: {k.name: k.preprocessor for k in all_kinds()})


def preprocessor_from_state(state: dict) -> Preprocessor:
    """Rebuild a preprocessor saved in a model file."""
    kind = state.get("kind")
    if kind not in KINDS:
        raise InputError(f"model file has preprocessing of unknown kind '{kind}'")
    return get_kind(kind).preprocessor.from_state(state)


def with_input_options(data: dict, given: dict[str, Any]) -> dict:
    """A model file's plain data with the options of `dl predict` / `dl evaluate` that say how to
    read new inputs (e.g. `image_column`) set in its preprocessor state. An option that the model's
    data kind does not declare is a UsageError; None values are not given."""
    state = data.get("preprocessor") or {}
    for name, value in given.items():
        if value is None:
            continue
        kind = state.get("kind")
        if kind not in KINDS or name not in get_kind(kind).options:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply to models of {kind} data")
        state = {**state, name: value}
    return {**data, "preprocessor": state} if state else data


def choose_source(path: str, opts: DataOptions, kind: str | None = None) -> Source:
    """The source class for `path`: the highest-priority one that claims it (a CSV with a text
    column is text, with --window a series, else a table; a folder holds images). With `kind`
    (resuming a run), the source that produces that kind of preprocessor."""
    sources = [s for k in all_kinds() for s in k.sources]
    ranked = sorted(sources, key=lambda s: -s.priority)  # stable: a tie keeps registry order
    if kind is not None:  # of that kind's sources, one that claims the path, else the fallback
        same = [s for s in ranked if s.kind == kind]
        if same:
            return next((s for s in same if s.claims(path, opts)), same[-1])
    for source in ranked:
        if source.claims(path, opts):
            if opts.stream and not source.streams:
                what = "an unsupervised model" if opts.unsupervised else f"{source.kind} data"
                note(
                    f"--stream applies to supervised tables; for {what} the data is loaded into memory"
                )
            return source
    if Path(path).is_dir():
        raise InputError(f"{path}: is a folder that no data source can read", "pass a CSV file")
    raise InputError(f"{path}: no data source understands this path")
