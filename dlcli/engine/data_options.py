"""How a train job's data options are completed before the data is read: the spec's
`data_options` (flags win), an --init-from model's own options (transfer learning reads new data
the way the source model was fed) and the spec's `input:` section (a pretrained backbone's size
and mean/std). `req` is the job's TrainRequest."""

from __future__ import annotations

from typing import Any

from dlcli.data.kinds import get_kind
from dlcli.data.sources import DataOptions, preprocessor_from_state
from dlcli.errors import SpecError


def spec_defaults(spec: Any, kind: str | None, opts: DataOptions, where: str) -> None:
    """The spec's `data_options` for this data kind fill the options no flag set (the bow preset:
    `text: {min_freq: 1}`); an option the kind does not have is a spec error."""
    given = (spec.data_options or {}).get(kind) or {}
    if not given:
        return
    known = get_kind(kind).options
    for name in given:
        if name not in known:
            raise SpecError(
                f"{where}: data_options.{kind}.{name}: {kind} data has no option '{name}'",
                f"one of: {', '.join(known)}",
            )
    current = opts.extra.setdefault(kind, {})
    if isinstance(current, dict):  # a library caller's options object is left as it is
        for name, value in given.items():
            if current.get(name) is None:
                current[name] = value


def inherit(req: Any, kind: str | None, base: dict) -> None:
    """Transfer learning: read the new data the way the source model was fed (for images: its
    channel count and size), unless the user said otherwise, so its first layers still fit."""
    state = base.get("preprocessor") or {}
    if kind is None or state.get("kind") != kind:
        return
    given = dict(req.data_opts.extra.get(kind) or {})
    inherited = preprocessor_from_state(state).inherit_options(given)
    if inherited:
        req.data_opts.extra[kind] = inherited


def from_spec_input(req: Any, kind: str | None, spec: Any) -> None:
    """The spec's `input:` defaults (e.g. a pretrained backbone's 224 px and ImageNet mean/std)
    for its data kind, under what the flags (and an --init-from model) already set."""
    if kind is None or spec.input is None:
        return
    values = spec.input.by_kind().get(kind)
    if values:
        given = req.data_opts.extra.get(kind) or {}
        given = given if isinstance(given, dict) else dict(vars(given))
        req.data_opts.extra[kind] = {**values, **given}
