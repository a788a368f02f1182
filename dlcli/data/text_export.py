"""The exported graph's input of the `text` data kind: token ids, with the tokenizer and the
vocabulary in the ONNX metadata and a `<model>.vocab.json` side file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from dlcli.data.contracts import ExportAdapter
from dlcli.data.text_tokens import WORD_PATTERN

if TYPE_CHECKING:
    from dlcli.data.text import TextPreprocessor


class TextExport(ExportAdapter):
    """Input `tokens`: int64 (batch, length), token ids from the vocabulary in the metadata (and
    the side file <model>.vocab.json), 0 = padding at the end, 1 = unknown; any length works."""

    input_name = "tokens"
    dynamic_axes: ClassVar[dict[int, str]] = {0: "batch", 1: "length"}

    def examples(self, loaded: Any) -> torch.Tensor:
        rows = self.stored_examples(loaded)
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

    def settings(self, preprocessor: TextPreprocessor) -> dict[str, Any]:
        return {
            "tokenizer": preprocessor.tokenizer,
            "lowercase": preprocessor.lowercase,
            "pattern": WORD_PATTERN if preprocessor.tokenizer == "word" else None,
            "max_length": preprocessor.max_length,
            "padding_id": 0,
            "unknown_id": 1,
            "text_column": preprocessor.text_column,
            "vocab": list(preprocessor.vocab),
        }

    def metadata(self, preprocessor: TextPreprocessor) -> dict[str, str]:
        meta = {f"dl.text.{k}": json.dumps(v) for k, v in self.settings(preprocessor).items()}
        meta["dl.preprocessing"] = "tokenise outside the graph (see dl.text.*); ids go in as int64"
        return meta

    def side_files(self, preprocessor: TextPreprocessor, target: Path) -> dict[Path, str]:
        return {
            target.with_suffix(".vocab.json"): json.dumps(self.settings(preprocessor), indent=1)
            + "\n"
        }
