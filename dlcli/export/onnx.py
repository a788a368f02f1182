"""ONNX export as a library: `to_onnx` (module -> ModelProto, the dynamo exporter else the
TorchScript one), `verify` (onnx.checker, then onnxruntime against PyTorch), `write_verified`
(metadata, atomic write, verification) and `write`, the `dl export --onnx` format: every graph of
a family's ExportPlan, so a graph holds the whole serving pipeline (preprocessing, network, task
output). The contract a caller relies on is documented in docs/onnx.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dlcli import __version__, settings
from dlcli.errors import ExportError
from dlcli.export import ExportPlan
from dlcli.fileio import refuse_overwriting_inputs

FORMAT_VERSION = 1  # version of the ONNX contract (input, outputs, metadata keys) in docs/onnx.md
DYNAMO_OPSET = 18  # the first opset the torch.export-based exporter emits natively
TORCHSCRIPT_OPSET = 17
IR_VERSION = 8  # ONNX 1.13, the first with opset 18: all these graphs need (onnxruntime >= 1.14)
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript")


def write(
    plan: ExportPlan, model_path: str, output: str | None, tolerance: float
) -> dict[str, Any]:
    """Write the graphs of `plan` as ONNX beside `output` (default: MODEL with suffix .onnx),
    each verified within `tolerance` before it replaces a file, then the plan's side texts.
    Returns the --json result: the main graph's keys, the largest difference of any graph,
    `rows_checked`, `output_name` and `side_files`."""
    from dlcli.fileio import write_text

    target = output_path(model_path, output)
    paths = [
        target.with_name(f"{target.stem}.{graph.suffix}.onnx") if graph.suffix else target
        for graph in plan.graphs
    ]
    for path in paths[1:]:  # the main target was checked by output_path
        refuse_overwriting_inputs("-o", path, [model_path])
    results, named, side = [], {}, []
    for graph, path in zip(
        plan.graphs, paths, strict=True
    ):  # each is verified before it replaces a file
        proto, exporter = to_onnx(
            graph.module, graph.sample, graph.input_name, graph.output_names, graph.dims
        )
        written = write_verified(
            proto, path, graph.module, graph.verify_on, graph.input_name, graph.metadata, tolerance
        )
        results.append({**written, "exporter": exporter})
        if graph.path_key:
            named[graph.path_key] = str(path)
        if graph.suffix:
            side.append(str(path))
    texts = plan.side_texts(target) if plan.side_texts is not None else {}
    for path, text in texts.items():  # written only once the graphs passed
        write_text(path, text)
    return {
        **results[0],
        "max_abs_diff": max(r["max_abs_diff"] for r in results),
        **named,
        "rows_checked": plan.rows_checked,
        "output_name": ",".join(plan.graphs[0].output_names),
        "side_files": side + [str(p) for p in texts],
    }


def write_verified(
    proto: Any,
    target: Path,
    module: torch.nn.Module,
    batches: list[torch.Tensor],
    input_name: str,
    meta: dict[str, str],
    tolerance: float,
) -> dict[str, Any]:
    """Stamp `meta` (the `dl.*` metadata_props) and the producer on `proto`, save it atomically
    to `target` and verify it against `module` on `batches` (see `verify`): a graph that fails
    leaves `target` as it was. Returns the common keys of the export's --json result."""
    import onnx

    from dlcli.fileio import atomic_path

    onnx.helper.set_model_props(proto, meta)
    proto.producer_name, proto.producer_version = "dl", __version__
    proto.ir_version = min(proto.ir_version, IR_VERSION)  # loadable by older runtimes too
    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp))
        diff = verify(tmp, module, batches, input_name, tolerance)
        size = tmp.stat().st_size
    return {
        "path": str(target),
        "format": "onnx",
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "max_abs_diff": diff,
        "input_name": input_name,
        "size_bytes": size,
    }


def output_path(model_path: str, output: str | None) -> Path:
    """`-o PATH` (a folder gets MODEL's stem + .onnx), else MODEL with suffix .onnx."""
    model = Path(model_path)
    target = Path(output) if output else model.with_suffix(".onnx")
    if target.is_dir():
        target = target / model.with_suffix(".onnx").name
    refuse_overwriting_inputs("-o", target, [model])
    return target


# -- export ---------------------------------------------------------------------------------------
def to_onnx(
    module: torch.nn.Module,
    sample: torch.Tensor,
    input_name: str,
    output_name: str | list[str],
    dims: dict[int, str] | None = None,
) -> tuple[Any, str]:
    """ModelProto with dynamic `dims` (default: the batch axis): the dynamo exporter, else the
    TorchScript one. A module with several outputs gets a list of `output_name`s."""
    from dlcli.console import note

    dims = dims or {0: "batch"}
    failures: list[str] = []
    last: Exception | None = None
    for name, exporter in (("dynamo", _export_dynamo), ("torchscript", _export_torchscript)):
        try:
            with _silenced():
                proto = exporter(module.eval(), sample, input_name, output_name, dims)
            _check_names(proto, input_name, output_name)
        except Exception as exc:  # any exporter failure: try the next one
            failures.append(f"{name} exporter: {_first_line(exc)}")
            last = exc
            continue
        if failures:
            note(f"{failures[0]}; used the {name} exporter instead")
        return proto, name
    raise ExportError(
        f"ONNX export failed ({'; '.join(failures)})", "rerun with --debug for the traceback"
    ) from last


def _export_dynamo(
    module: torch.nn.Module,
    sample: torch.Tensor,
    input_name: str,
    output_name: str | list[str],
    dims: dict[int, str],
) -> Any:
    program = torch.onnx.export(
        module,
        (sample,),
        dynamo=True,
        input_names=[input_name],
        output_names=_names(output_name),
        dynamic_shapes=({i: torch.export.Dim(name) for i, name in dims.items()},),
        opset_version=DYNAMO_OPSET,
    )
    return program.model_proto


def _export_torchscript(
    module: torch.nn.Module,
    sample: torch.Tensor,
    input_name: str,
    output_name: str | list[str],
    dims: dict[int, str],
) -> Any:
    import onnx

    buffer = io.BytesIO()
    names = _names(output_name)
    torch.onnx.export(
        module,
        (sample,),
        buffer,
        dynamo=False,
        input_names=[input_name],
        output_names=names,
        dynamic_axes={input_name: dims, **{n: {0: dims.get(0, "batch")} for n in names}},
        opset_version=TORCHSCRIPT_OPSET,
    )
    return onnx.load_model_from_string(buffer.getvalue())


def _names(output_name: str | list[str]) -> list[str]:
    return [output_name] if isinstance(output_name, str) else list(output_name)


def _check_names(proto: Any, input_name: str, output_name: str | list[str]) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [input_name] or outputs != _names(output_name):
        raise RuntimeError(f"graph has inputs {inputs} and outputs {outputs}")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Keep the exporter's progress lines, warnings and log records off stdout and stderr
    (stdout carries data); --debug or DL_DEBUG=1 lets them through."""
    import warnings

    if settings.debug():
        yield
        return
    log = io.StringIO()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# -- verification ---------------------------------------------------------------------------------
def verify(
    path: Path,
    module: torch.nn.Module,
    batches: list[torch.Tensor],
    input_name: str,
    tolerance: float,
) -> float:
    """onnx.checker, then onnxruntime vs PyTorch on each of `batches` (e.g. batch 1 and all rows,
    so the batch axis really is dynamic; shorter sequences for text).

    An output passes when |onnx - torch| <= tolerance * max(1, |torch|): absolute for probabilities,
    relative for regression values far from 0 (float32 cannot do better there). Returns the max abs diff.
    """
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # checker and runtime raise many kinds
        raise ExportError(f"exported ONNX model is invalid: {_first_line(exc)}") from exc
    worst, scaled, rows = 0.0, 0.0, sum(len(b) for b in batches)
    for batch in batches:
        with torch.no_grad():
            expected = module.eval()(batch)  # (N, C) or (N, 1), or a tuple of outputs
        expected = [e.numpy() for e in (expected if isinstance(expected, tuple) else (expected,))]
        try:
            got = session.run(None, {input_name: batch.numpy()})
        except Exception as exc:
            raise ExportError(
                f"onnxruntime failed on a batch of {len(batch)}: {_first_line(exc)}"
            ) from exc
        for g, e in zip(got, expected, strict=True):
            d_abs, d_scaled = _differences(g, e)
            worst, scaled = max(worst, d_abs), max(scaled, d_scaled)
    if not scaled <= tolerance:
        raise ExportError(
            f"ONNX output differs from PyTorch by {worst:.3g} ({scaled:.3g} scaled) on {rows} rows, over the tolerance {tolerance:g}; nothing written",
            "raise --tolerance if the difference is acceptable",
        )
    return worst


def _differences(got: Any, expected: Any) -> tuple[float, float]:
    """(max |got - expected|, max |got - expected| / max(1, |expected|)); NaN in both agrees."""
    import numpy as np

    if got.shape != expected.shape:
        return float("inf"), float("inf")
    expected = expected.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - expected)
    diff = np.nan_to_num(np.where(np.isnan(got) & np.isnan(expected), 0.0, diff), nan=np.inf)
    scaled = diff / np.maximum(1.0, np.nan_to_num(np.abs(expected)))
    return float(diff.max(initial=0.0)), float(scaled.max(initial=0.0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
