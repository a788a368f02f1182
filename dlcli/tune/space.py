"""Search spaces: a spec document in which any value may be a distribution.

    layers:
      - dense: {choice: [64, 128, 256]}
      - dropout: {uniform: [0.0, 0.5]}
    training:
      lr: {loguniform: [1.0e-4, 1.0e-2]}

A distribution is a mapping with one key: `choice: [values...]`, `uniform: [low, high]`,
`loguniform: [low, high]` (low > 0), `int: [low, high]` or `logint: [low, high]` (integers,
both ends included). A preset's default space is its `search:` section, a mapping from a value's
path to a distribution (`training.lr: {loguniform: [1.0e-4, 1.0e-2]}`, `layers[0].dense:
{choice: [...]}`), laid onto the preset's document. Parameters are named by their path, without
the `training.` prefix (`lr`, `layers[0].dense`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

from dlcli.errors import SpecError

KINDS = ("choice", "uniform", "loguniform", "int", "logint")
# names other tuners use: a mapping keyed by one of these is a distribution dl does not know
FOREIGN = ("categorical", "randint", "normal", "lognormal", "quniform", "qloguniform", "float")
MAX_CHOICES = 1000
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Dist:
    """One searched value: where it sits in the document, and how it is drawn."""

    path: tuple[str | int, ...]
    kind: str
    args: tuple

    @property
    def name(self) -> str:
        """The parameter's name: its path (`layers[0].dense`), `training.` left out."""
        parts = list(self.path[1:] if self.path[0] == "training" else self.path)
        text = ""
        for p in parts:
            text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
        return text

    def low(self) -> Any:
        return self.args[0]

    def high(self) -> Any:
        return self.args[-1]

    def suggest(self, trial: Any) -> Any:
        """Draw a value through an Optuna trial."""
        name = self.name
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.args))
        if self.kind in ("int", "logint"):
            return trial.suggest_int(name, self.args[0], self.args[1], log=self.kind == "logint")
        return trial.suggest_float(name, self.args[0], self.args[1], log=self.kind == "loguniform")


def parse_path(text: str, source: str) -> tuple[str | int, ...]:
    """`layers[0].dense` -> ("layers", 0, "dense")."""
    steps: list[str | int] = []
    pos = 0
    for m in _STEP.finditer(text):
        if m.start() != pos and text[pos : m.start()] != ".":
            break
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps or pos != len(text):
        raise SpecError(
            f"space {source}: search path '{text[:80]}' is not like training.lr or layers[0].dense"
        )
    return tuple(steps)


def path_text(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _distribution(value: Any, path: tuple, source: str) -> Dist | None:
    """The distribution `value` holds, None for an ordinary value; a malformed one is one line."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (key, args), where = next(iter(value.items())), path_text(path) or "the top level"
    if key in FOREIGN:
        raise SpecError(
            f"space {source}: {where}: unknown distribution '{key}'",
            f"use one of {', '.join(KINDS)}",
        )
    if key not in KINDS:
        return None
    if not isinstance(args, list) or not args:
        raise SpecError(f"space {source}: {where}: {key} needs a list, e.g. {key}: [1, 10]")
    if key == "choice":
        if len(args) > MAX_CHOICES:
            raise SpecError(f"space {source}: {where}: more than {MAX_CHOICES} choices")
        if any(isinstance(a, (dict, list)) for a in args):
            raise SpecError(f"space {source}: {where}: choices must be plain values")
        return Dist(path, key, tuple(args))
    if len(args) != 2 or not all(_number(a) for a in args):
        raise SpecError(f"space {source}: {where}: {key} needs [low, high], two numbers")
    low, high = args
    if key in ("int", "logint") and not all(float(a).is_integer() for a in args):
        raise SpecError(f"space {source}: {where}: {key} bounds must be whole numbers")
    if not low < high:
        raise SpecError(f"space {source}: {where}: {key} needs low < high, got [{low}, {high}]")
    if key in ("loguniform", "logint") and low <= 0:
        raise SpecError(f"space {source}: {where}: {key} needs low > 0, got {low}")
    cast = int if key in ("int", "logint") else float
    return Dist(path, key, (cast(low), cast(high)))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def find(doc: Any, source: str) -> list[Dist]:
    """Every distribution in `doc`, in document order (an iterative walk: depth is bounded by the
    spec loader already)."""
    found: list[Dist] = []
    stack: list[tuple[tuple, Any]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        dist = _distribution(value, path, source) if path else None
        if dist is not None:
            found.append(dist)
        elif isinstance(value, dict):
            stack += [((*path, k), v) for k, v in reversed(list(value.items()))]
        elif isinstance(value, list):
            stack += [((*path, i), v) for i, v in reversed(list(enumerate(value)))]
    return found


def lay_on(doc: dict, search: Any, source: str) -> dict:
    """A preset's document with its `search:` section (path -> distribution) laid onto it."""
    out = copy.deepcopy({k: v for k, v in doc.items() if k != "search"})
    if search is None:
        return out
    if not isinstance(search, dict):
        raise SpecError(f"space {source}: search: must map paths to distributions")
    for text, dist in search.items():
        path = parse_path(str(text), source)
        if _distribution(dist, path, source) is None:
            raise SpecError(
                f"space {source}: search.{text}: not a distribution",
                f"use one of {', '.join(KINDS)}",
            )
        _set(out, path, dist, source, create=path[0] == "training")
    return out


def apply(doc: dict, values: dict[tuple, Any]) -> dict:
    """A copy of `doc` with each distribution at a path replaced by its drawn value."""
    out = copy.deepcopy(doc)
    for path, value in values.items():
        _set(out, path, value, "", create=True)
    return out


def defaults(doc: dict, dists: list[Dist]) -> dict[str, Any]:
    """The values `doc` (a preset before its `search:` is laid on) already holds at the searched
    paths and that lie in their ranges, by parameter name: the first trial of a new study, so a
    search never ends worse on validation than the preset at its defaults."""
    out = {}
    for d in dists:
        value = _get(doc, d.path)
        if value is None or isinstance(value, (dict, list, bool)):
            continue
        if d.kind == "choice":
            if value in d.args:
                out[d.name] = value
        elif _number(value) and d.args[0] <= value <= d.args[1]:
            if d.kind in ("int", "logint") and not float(value).is_integer():
                continue
            out[d.name] = int(value) if d.kind in ("int", "logint") else float(value)
    return out


def _get(doc: Any, path: tuple) -> Any:
    node = doc
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def representatives(dists: list[Dist]) -> list[dict[tuple, Any]]:
    """Two assignments that bracket the space (every low, every high), for checking it as a spec."""
    return [{d.path: d.low() for d in dists}, {d.path: d.high() for d in dists}]


def fix(dists: list[Dist], overrides: dict) -> tuple[list[Dist], list[str]]:
    """Leave out of the search the training values a command-line flag fixes (`--epochs 20`);
    returns (the remaining distributions, the names left out)."""
    kept, fixed = [], []
    for d in dists:
        if len(d.path) == 2 and d.path[0] == "training" and overrides.get(d.path[1]) is not None:
            fixed.append(d.name)
        else:
            kept.append(d)
    return kept, fixed


def _set(doc: Any, path: tuple, value: Any, source: str, create: bool) -> None:
    node = doc
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise SpecError(f"space {source}: search.{path_text(path)}: no such entry")
        elif not isinstance(node, dict) or (step not in node and not create):
            raise SpecError(f"space {source}: search.{path_text(path)}: no such entry")
        if last:
            node[step] = value
        else:
            if isinstance(node, dict) and step not in node:
                node[step] = {}
            node = node[step]
