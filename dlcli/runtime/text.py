"""Text for an exported graph: texts -> the `tokens` ids of docs/onnx.md (lower-case, tokenise,
truncate to `max_length`, look up in the vocabulary, pad with 0), with the tokenizers and readers
`dl predict MODEL.pt` uses (data/text_tokens.py, data/text_read.py: both torch-free)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dlcli.data import readers
from dlcli.data.readers import NULL_TEXT, ReadPlan
from dlcli.data.text_read import BLOCK_BYTES, stdin_lines
from dlcli.data.text_tokens import CHARS_PER_WORD, TOKENIZERS, is_blank, pad_array
from dlcli.errors import InputError, ModelFileError
from dlcli.runtime.session import OnnxModel
from dlcli.runtime.tables import Labels

ROWS_PER_CHUNK = 8192  # texts tokenized and run together


@dataclass
class TextInputs:
    """The tokenisation settings of `dl.text.*`."""

    tokenizer: str
    lowercase: bool
    max_length: int
    vocab: list[str]
    text_column: str
    target: Labels
    prediction_columns: tuple[str, ...] = ()
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.vocab)}

    def ids(self, texts: Iterable[Any]) -> np.ndarray:
        """(N, T) int64 ids, right-padded with 0; an empty text is the single unknown id 1."""
        split, L, get = TOKENIZERS[self.tokenizer], self.max_length, self.index.get
        rows = [
            [get(t, 1) for t in ([] if is_blank(x) else split(x, L, self.lowercase))[:L]] or [1]
            for x in texts
        ]
        return pad_array(rows)[0]

    def check_columns(self, header: list[str], source: str) -> None:
        if self.text_column not in header:
            raise InputError(
                f"{source}: no column '{self.text_column}' (the text column the model was trained on)"
            )

    def read_plan(self, source: str, keep: bool) -> ReadPlan:
        import pyarrow as pa

        def plan(header: list[str]) -> dict[str, Any]:
            self.check_columns(header, source)
            return {c: pa.string() for c in (header if keep else [self.text_column])}

        return plan

    def matrix(self, frame: pd.DataFrame, source: str, row_offset: int = 0) -> np.ndarray:
        self.check_columns(list(frame.columns), source)
        texts = frame[self.text_column]
        return self.ids(texts.where(~texts.isin(NULL_TEXT)))

    def input_schema(self) -> dict[str, str]:
        """Column -> JSON type (the serve OpenAPI schema): the text column."""
        return {self.text_column: "string"}

    def iter_inputs(
        self, paths: list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(pass-through frame, ids) per chunk: a CSV's text column, or '-': stdin, one text a
        line (a `text` column with `keep`)."""
        budget = self.max_length * (CHARS_PER_WORD if self.tokenizer == "word" else 1) + 64
        for path in paths:
            if path == "-":
                for lines in stdin_lines(budget):
                    frame = (
                        pd.DataFrame({"text": lines})
                        if keep
                        else pd.DataFrame(index=range(len(lines)))
                    )
                    yield frame, self.ids(lines)
                continue
            plan = self.read_plan(path, keep)
            for chunk in readers.iter_chunks(
                path, plan=plan, block_bytes=BLOCK_BYTES, verbatim=keep
            ):
                for i in range(0, len(chunk), ROWS_PER_CHUNK):
                    part = chunk.iloc[i : i + ROWS_PER_CHUNK]
                    texts = part[self.text_column]
                    texts = texts.where(~texts.isin(NULL_TEXT)) if keep else texts
                    yield (part if keep else part.iloc[:, :0]), self.ids(texts)


def encoder(model: OnnxModel) -> TextInputs:
    tokenizer = model.json("dl.text.tokenizer")
    vocab = [str(t) for t in model.json("dl.text.vocab", [])]
    if tokenizer not in TOKENIZERS or len(vocab) < 2:
        raise ModelFileError(
            f"{model.path}: dl.text.* metadata this dl cannot use (tokenizer {tokenizer!r})"
        )
    return TextInputs(
        tokenizer,
        bool(model.json("dl.text.lowercase", True)),
        int(model.json("dl.text.max_length")),
        vocab,
        str(model.json("dl.text.text_column")),
        Labels(model.classes),
    )
