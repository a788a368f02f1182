"""Per data kind: the exported graph's input name, the inputs an export is verified on, and the
metadata a caller needs to build that input. A new data kind is one adapter in ADAPTERS."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch

from dlcli.errors import ExportError


def _stored_examples(loaded: Any) -> torch.Tensor | None:
    ex = loaded.data.get("examples")
    return ex.detach().cpu() if isinstance(ex, torch.Tensor) and ex.ndim >= 2 and len(ex) else None


class TabularExport:
    """Input `features`: float32 (batch, F) raw columns in order; numbers as read (NaN = missing),
    categories as codes (i + 1 for categories[i], 0 = missing or unseen)."""

    input_name = "features"

    def examples(self, loaded: Any) -> torch.Tensor:
        """The stored real rows plus copies with every number NaN, every category 0, and every
        other column missing, so imputation is verified too."""
        rows = _stored_examples(loaded)
        rows = (rows if rows is not None else self._synthetic(loaded.preprocessor)).to(
            torch.float32
        )
        cols = loaded.preprocessor.columns
        numeric = [i for i, c in enumerate(cols) if c.kind == "numeric"]
        categorical = [i for i, c in enumerate(cols) if c.kind == "categorical"]
        variants = []
        for chosen in (numeric, categorical, list(range(0, len(cols), 2))):
            if chosen:
                v = rows[:2].clone()
                for i in chosen:
                    v[:, i] = float("nan") if i in numeric else 0.0
                variants.append(v)
        return torch.cat([rows, *variants])

    @staticmethod
    def _synthetic(preprocessor: Any, n: int = 32) -> torch.Tensor:
        """Rows drawn from the fitted column statistics, for model files without examples."""
        gen = torch.Generator().manual_seed(0)
        out = torch.empty(n, len(preprocessor.columns))
        for i, c in enumerate(preprocessor.columns):
            if c.kind == "numeric":
                out[:, i] = c.mean + c.std * torch.randn(n, generator=gen)
            else:
                out[:, i] = torch.randint(0, len(c.categories) + 1, (n,), generator=gen).float()
        return out

    def metadata(self, preprocessor: Any) -> dict[str, str]:
        cols = preprocessor.columns
        return {
            "dl.input_columns": json.dumps([c.name for c in cols]),
            "dl.column_kinds": json.dumps({c.name: c.kind for c in cols}),
            "dl.categories": json.dumps(
                {c.name: list(c.categories) for c in cols if c.kind == "categorical"}
            ),
            "dl.preprocessing": "in-graph: impute NaN, missing indicators, standardise, one-hot",
        }


class ImageExport:
    """Input `images`: float32 (batch, C, H, W) with values in [0, 1], already resized to the
    model's size; the per-channel normalisation is inside the graph."""

    input_name = "images"

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = _stored_examples(loaded)
        if rows is None:
            enc = loaded.preprocessor
            rows = torch.rand(8, *enc.input_shape, generator=torch.Generator().manual_seed(0))
        elif rows.dtype == torch.uint8:
            rows = rows.to(torch.float32) / 255.0  # the documented [0, 1] input
        return torch.cat(
            [rows.to(torch.float32), torch.zeros_like(rows[:1]), torch.ones_like(rows[:1])]
        )

    def metadata(self, preprocessor: Any) -> dict[str, str]:
        return {
            "dl.input_layout": "NCHW float32 in [0, 1]",
            "dl.image_size": json.dumps([preprocessor.size, preprocessor.size]),
            "dl.channels": str(preprocessor.channels),
            "dl.resize": getattr(preprocessor, "resize", "shorter-side+center-crop"),
            "dl.mean": json.dumps(list(preprocessor.mean)),
            "dl.std": json.dumps(list(preprocessor.std)),
            "dl.preprocessing": "in-graph: (x - mean) / std per channel; resizing is the caller's",
        }


class TextExport:
    """Input `tokens`: int64 (batch, length), token ids from the vocabulary in the metadata (and
    the side file <model>.vocab.json), 0 = padding at the end, 1 = unknown; any length works."""

    input_name = "tokens"
    dynamic_axes: ClassVar[dict[int, str]] = {0: "batch", 1: "length"}

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = _stored_examples(loaded)
        if rows is None or rows.shape[1] < 2:
            gen = torch.Generator().manual_seed(0)
            rows = torch.randint(2, len(loaded.preprocessor.vocab), (8, 12), generator=gen)
        rows = rows.to(torch.int64)
        padded = rows[:2].clone()
        padded[:, padded.shape[1] // 2 :] = 0  # rows whose second half is padding
        return torch.cat([rows, padded])

    def verify_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        short = max(2, rows.shape[1] // 2)
        return [rows[:1], rows, rows[:, :short].contiguous()]  # batch 1, all, shorter sequences

    def settings(self, preprocessor: Any) -> dict[str, Any]:
        return {
            "tokenizer": preprocessor.tokenizer,
            "lowercase": preprocessor.lowercase,
            "pattern": r"\w+|[^\w\s]" if preprocessor.tokenizer == "word" else None,
            "max_length": preprocessor.max_length,
            "padding_id": 0,
            "unknown_id": 1,
            "text_column": preprocessor.text_column,
            "vocab": list(preprocessor.vocab),
        }

    def metadata(self, preprocessor: Any) -> dict[str, str]:
        meta = {f"dl.text.{k}": json.dumps(v) for k, v in self.settings(preprocessor).items()}
        meta["dl.preprocessing"] = "tokenise outside the graph (see dl.text.*); ids go in as int64"
        return meta

    def side_files(self, preprocessor: Any, target: Any) -> dict[Any, str]:
        return {
            target.with_suffix(".vocab.json"): json.dumps(self.settings(preprocessor), indent=1)
            + "\n"
        }


class SeriesExport:
    """Input `series`: float32 (batch, window, F), the last `window` rows of the feature columns
    in order, raw values (scaling is inside the graph); output: the target `horizon` steps on."""

    input_name = "series"

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = _stored_examples(loaded)
        if rows is None:
            enc = loaded.preprocessor
            gen = torch.Generator().manual_seed(0)
            rows = enc.target.mean + enc.target.std * torch.randn(8, *enc.raw_shape, generator=gen)
        return rows.to(torch.float32)

    def metadata(self, preprocessor: Any) -> dict[str, str]:
        return {
            "dl.series.features": json.dumps(list(preprocessor.features)),
            "dl.series.window": str(preprocessor.window),
            "dl.series.horizon": str(preprocessor.horizon),
            "dl.series.date_column": json.dumps(preprocessor.date_column),
            "dl.preprocessing": "in-graph: scaling relative to the window's last step; raw values in",
        }


ADAPTERS: dict[str, Any] = {
    "series": SeriesExport(),
    "tabular": TabularExport(),
    "image": ImageExport(),
    "text": TextExport(),
}


def adapter_for(preprocessor: Any) -> Any:
    adapter = ADAPTERS.get(preprocessor.kind)
    if adapter is None:
        raise ExportError(f"ONNX export does not support {preprocessor.kind} models yet")
    return adapter
