"""Spec + per-sample input shape + output size -> torch module, inferring each layer's input size.

The whole spec is first built on the `meta` device (shapes and parameter counts, no storage), so a
network too large for its memory budget (model/budget.py) is a SpecError naming the layer before
any tensor is allocated. Then every layer is built for real and run once on a dummy batch, so an
impossible shape is a SpecError naming the layer before any data is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dlcli.errors import ModelSizeError, SpecError, excerpt
from dlcli.model.budget import Tally, current
from dlcli.spec.init import apply_init, check_init
from dlcli.spec.registry import BuildContext, Shape
from dlcli.spec.schema import Spec, parse_layer


class LayerStack(nn.Sequential):
    """nn.Sequential that threads a padding mask to the layers that take one.

    Token-id inputs (integer (N, T), 0 = padding) start a mask `ids != 0` of shape (N, T); a layer
    with `accepts_mask = True` is called as `layer(x, mask)`, and one that also changes the time
    axis (`updates_mask = True`) returns `(x, mask)`. Other inputs carry no mask.
    """

    accepts_mask = True  # a nested stack (a `block`) receives its parent's mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None and not torch.is_floating_point(x) and x.dim() == 2:
            mask = x != 0  # (N, T)
        for layer in self:
            if getattr(layer, "updates_mask", False):
                x, mask = layer(x, mask)
            elif getattr(layer, "accepts_mask", False):
                x = layer(x, mask)
            else:
                x = layer(x)
        return x


class AnchoredNetwork(nn.Module):
    """(N, T, C + 1) -> body(x[..., :C]) + x[:, -1, C:]: the body predicts the change from the
    last step of the anchor channel C (series: the target's standardised last value), so its
    forecasts follow a level it never saw in training."""

    def __init__(self, body: nn.Module, channel: int) -> None:
        super().__init__()
        self.body, self.channel = body, int(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x[..., : self.channel]) + x[:, -1, self.channel :]


@dataclass
class SummaryRow:
    """One line of the layer table."""

    name: str
    type: str
    out_shape: Shape
    params: int
    depth: int = 0


@dataclass
class BuiltNetwork:
    """The module plus what `dl build` shows about it."""

    module: LayerStack
    rows: list[SummaryRow]
    input_shape: Shape
    output_shape: Shape


def _dummy(shape: Shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of 2 for the dry run; integer inputs (token ids) get ids 1 (not padding)."""
    dims = [8 if d is None else int(d) for d in shape]
    return torch.ones(2, *dims, dtype=dtype) if dtype != torch.float32 else torch.zeros(2, *dims)


class _Builder:
    def __init__(
        self,
        outputs: int | None,
        default_init: str | None,
        dtype: torch.dtype = torch.float32,
        tally: Tally | None = None,
    ) -> None:
        self.tally = tally  # set: the size check's pass on the meta device
        self.dtype = dtype
        self.data_info: dict = {}
        self.initialised: set[int] = set()  # modules whose weights a layer's init already set
        self.outputs = outputs
        self.default_init = default_init
        self.used_outputs = False
        self.rows: list[SummaryRow] = []
        self.depth = 0

    def build_list(
        self, entries: list[Any], in_shape: Shape, where: str
    ) -> tuple[nn.Sequential, Shape, list]:
        seq = LayerStack()
        shape = in_shape
        for i, raw in enumerate(entries):
            loc = f"{where}[{i}]"
            entry = parse_layer(raw, loc)
            check_init(entry.opts.init, loc)
            name = entry.opts.name or str(i)
            if "." in name or name in seq._modules:
                raise SpecError(
                    f"{loc}: field 'name': {excerpt(name)} must be unique and contain no '.'"
                )
            ctx = BuildContext(self.outputs, self._nested, f"{loc} ({entry.type_name})")
            ctx.dtype = self.dtype  # integer for token ids, float otherwise
            ctx.data = self.data_info
            if getattr(entry.opts, "units", None) == "outputs":
                self.used_outputs = True
            row = SummaryRow(name, entry.layerdef.names[0], (), 0, self.depth)
            self.rows.append(row)
            module, out_shape = _build_layer(entry, shape, ctx)
            if self.tally is not None:  # meta tensors: nothing to initialise
                self.dtype = _meta_dtype(module, self.dtype)
                self.tally.add_layer(module, out_shape, _path(loc, entry.layerdef.names[0]))
            else:
                apply_init(module, entry.opts.init or self.default_init, self.initialised)
                self.dtype = _check_runs(module, shape, out_shape, ctx.where, self.dtype)
            row.out_shape, row.params = out_shape, sum(p.numel() for p in module.parameters())
            seq.add_module(name, module)
            shape = out_shape
        return seq, shape, self.rows

    def _nested(self, entries: list[Any], in_shape: Shape, where: str):
        self.depth += 1
        try:
            return self.build_list(entries, in_shape, where)
        finally:
            self.depth -= 1


def _path(loc: str, type_name: str) -> str:
    """`layers[0] (block).layers[2]` + dense -> `layers[0].layers[2].dense`: a spec path."""
    return re.sub(r" \([^)]*\)", "", loc) + "." + type_name


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation (MemoryError, or torch's CPU/CUDA allocator running out): the machine's
    limit, which no spec field explains."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def _build_layer(entry: Any, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    """The layer's own builder; any failure of it is a SpecError naming the layer (a builder that
    cannot take these options should say so itself: this is the last resort)."""
    try:
        return entry.layerdef.build(entry.opts, shape, ctx)
    except SpecError:
        raise
    except Exception as exc:
        if out_of_memory(exc):
            raise  # the machine's limit, not the options: the command line says so (cli main)
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"{ctx.where}: cannot be built with these options: {msg}") from exc


def _meta_dtype(module: nn.Module, dtype: torch.dtype) -> torch.dtype:
    """The output dtype of a layer built on the meta device, without running it (a first forward
    on meta tensors costs seconds of torch start-up): token ids become floats in a layer that
    holds an embedding and pass through any other; floats stay floats. The real pass checks."""
    if dtype.is_floating_point:
        return dtype
    embeds = any(isinstance(m, nn.Embedding) for m in module.modules())
    return torch.float32 if embeds else dtype


def _check_runs(
    module: nn.Module, in_shape: Shape, out_shape: Shape, where: str, dtype: torch.dtype
) -> torch.dtype:
    """Run the layer on a dummy batch: errors and shape disagreements become SpecErrors.
    Returns the output dtype (an embedding turns token ids into floats)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            y = module(_dummy(in_shape, dtype))
            if isinstance(y, tuple):  # layers that update the padding mask return (x, mask)
                y = y[0]
    except Exception as exc:  # a torch error here means the shapes cannot work
        if out_of_memory(exc):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"{where}: cannot take input of shape {tuple(in_shape)}: {msg}") from None
    finally:
        module.train(was_training)
    got = tuple(y.shape[1:])
    fits = len(got) == len(out_shape) and all(
        w is None or g == w for g, w in zip(got, out_shape, strict=False)
    )
    if not fits:  # a None (variable length) dimension may come out at any size
        raise SpecError(f"{where}: produced shape {got} where {tuple(out_shape)} was inferred")
    return y.dtype


def build_network(
    spec: Spec,
    input_shape: Shape,
    outputs: int | None,
    source: str | None = None,
    input_dtype: torch.dtype = torch.float32,
    data_info: dict | None = None,
) -> BuiltNetwork:
    """Build `spec` for inputs of `input_shape`; append a dense head of `outputs` units if the spec
    has no layer with `units: outputs` and `head` is auto. `source` (a file or preset) is named
    in errors. `input_dtype` is torch.long for token ids; `data_info` carries facts layers may
    need from the data (e.g. `vocab_size`), available to builders as `ctx.data`."""
    if spec.layers is None:
        raise SpecError(f"spec {source or ''}: a {spec.family} spec has no 'layers' list")
    return build_stack(
        spec.layers,
        "layers",
        input_shape,
        outputs,
        spec.init,
        spec.head,
        source,
        input_dtype,
        data_info,
        batch_size=spec.training.batch_size,
    )


def build_stack(
    entries: list[Any],
    section: str,
    input_shape: Shape,
    outputs: int | None,
    init: str | None = None,
    head: str = "auto",
    source: str | None = None,
    input_dtype: torch.dtype = torch.float32,
    data_info: dict | None = None,
    expect_shape: Shape | None = None,
    batch_size: int | None = None,
) -> BuiltNetwork:
    """Build one layer list of a spec (`layers`, or a section such as `encoder:`); errors name the
    section and layer index. The result must have shape `expect_shape` (default: `(outputs,)`);
    `units: outputs` (and `filters: outputs`) take the value `outputs`. A network over the memory
    budget in force (model/budget.py; activations at `batch_size` unless the budget sets one) is
    refused before anything is allocated."""
    try:
        return _build_network(
            entries,
            section,
            init,
            head,
            input_shape,
            outputs,
            input_dtype,
            data_info or {},
            expect_shape,
            batch_size,
        )
    except SpecError as exc:
        if source is None:
            raise
        raise type(exc)(f"spec {source}: {exc.message}", exc.hint) from None


def _build_network(
    entries: list[Any],
    section: str,
    init: str | None,
    head_mode: str,
    input_shape: Shape,
    outputs: int | None,
    dtype: torch.dtype,
    data_info: dict,
    expect_shape: Shape | None = None,
    batch_size: int | None = None,
) -> BuiltNetwork:
    check_init(init, "spec field 'init'")
    anchor = data_info.get("anchor_channel")  # the body sees the channels before it
    body_shape = tuple(input_shape) if anchor is None else (*input_shape[:-1], anchor)
    head = head_mode == "auto" and bool(outputs)
    estimate_size(entries, section, body_shape, outputs, init, head, dtype, data_info, batch_size)
    b = _Builder(outputs, init, dtype)
    b.data_info = data_info
    seq, shape, rows = b.build_list(entries, body_shape, section)
    if not b.dtype.is_floating_point and (outputs or expect_shape is not None):
        raise SpecError(
            f"{section}: the layers pass token ids (whole numbers) through to the output",
            "start with an embedding layer, which turns them into vectors",
        )
    if head_mode == "auto" and outputs and not b.used_outputs:
        if len(shape) != 1:
            raise SpecError(
                f"the last layer outputs shape {tuple(shape)}; the output head needs a flat vector",
                "end the spec with flatten or a global pooling layer",
            )
        head = nn.Linear(int(shape[0]), outputs)
        apply_init(head, "xavier")
        _add_head(seq, head, rows, section)
        shape = (outputs,)
    if expect_shape is not None and tuple(shape) != tuple(expect_shape):
        last = rows[-1] if rows else None
        where = f"the last layer ({last.name}: {last.type})" if last else "the network"
        raise SpecError(
            f"{section}: {where} outputs shape {tuple(shape)} but {tuple(expect_shape)} is needed",
            "end the section with layers that produce that shape",
        )
    elif expect_shape is None and outputs and tuple(shape) != (outputs,):
        last = rows[-1] if rows else None
        where = f"the last layer ({last.name}: {last.type})" if last else "the network"
        raise SpecError(
            f"{where} outputs shape {tuple(shape)} but the task needs {outputs} output{'s' if outputs != 1 else ''}",
            "use head: auto, or end with {dense: outputs}",
        )
    module = seq if anchor is None else AnchoredNetwork(seq, anchor)
    return BuiltNetwork(module, rows, tuple(input_shape), shape)


def _add_head(seq: nn.Sequential, head: nn.Linear, rows: list[SummaryRow], section: str) -> None:
    """The automatic output head: a top-level layer `head`, or the last layer of the spec's own
    last block named `head` (a preset's dropout before it), so `--freeze backbone` and the head
    stay two named blocks. A `head` anywhere else would be replaced: refused."""
    count = sum(p.numel() for p in head.parameters())
    own = seq._modules.get("head")
    if own is None:
        seq.add_module("head", head)
        rows.append(SummaryRow("head", "dense", (head.out_features,), count))
        return
    if not (isinstance(own, LayerStack) and list(seq._modules)[-1] == "head"):
        raise SpecError(
            f"{section}: the name 'head' belongs to the output head (or to the last block, which "
            "receives it); rename that layer"
        )
    own.add_module("out", head)
    rows.append(SummaryRow("out", "dense", (head.out_features,), count, depth=1))


class _SkipRandomFills(TorchFunctionMode):
    """On the meta device a random fill has nothing to fill, and the first one costs seconds
    (torch imports its compiler for it): skip `normal_`, `uniform_` and the like there. Nothing
    random is drawn, so the real pass's weights are the same as without the size check."""

    NAMES = frozenset({"normal_", "uniform_", "trunc_normal_", "bernoulli_", "random_"})

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        t = args[0] if args else kwargs.get("tensor")
        if (
            getattr(func, "__name__", "") in self.NAMES
            and isinstance(t, torch.Tensor)
            and t.is_meta
        ):
            return t
        return func(*args, **kwargs)


def estimate_size(
    entries: list[Any],
    section: str,
    shape: Shape,
    outputs: int | None,
    init: str | None = None,
    head: bool = True,
    dtype: torch.dtype = torch.float32,
    data_info: dict | None = None,
    batch_size: int | None = None,
) -> Tally:
    """The whole list built on the meta device (no storage): parameters and activations added up
    layer by layer against the budget in force; the first layer past it is a ModelSizeError.
    Returns the totals (a list with another mistake is left to the real build to name)."""
    tally = Tally(current(), batch_size)
    tally.add_input(shape)
    b = _Builder(outputs, init, dtype, tally)
    b.data_info = data_info or {}
    try:
        with torch.device("meta"), _SkipRandomFills():
            _, out, _ = b.build_list(entries, shape, section)
    except ModelSizeError:
        raise
    except SpecError:  # any other mistake: the real pass names it, at the same layer
        return tally
    if head and outputs and not b.used_outputs and len(out) == 1 and out[0] is not None:
        tally.add_head(int(out[0]), int(outputs))
    return tally
