"""The `text` data kind: a free-text column of a table file -> token ids (N, T) int64, plus the
fitted `TextPreprocessor` (plain-data state).

The preprocessor remembers the tokenizer, the vocabulary fitted on the training split, the maximum
length, the text column and the target (tokens: text_tokens.py; reading and detection:
text_read.py). Ids go straight to the network (its first layer embeds them), so the transform is
the identity. `BucketedTokens` batches training rows of similar length together so little
compute is spent on padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dlcli.console import note
from dlcli.data import readers, text_folders
from dlcli.data.buckets import BucketedTokens as BucketedTokens
from dlcli.data.contracts import DataKind, DataOptions, Prepared, Preprocessor
from dlcli.data.readers import NULL_TEXT
from dlcli.data.split import split_rows
from dlcli.data.target import Target
from dlcli.data.text_export import TextExport
from dlcli.data.text_options import TextOptions as TextOptions
from dlcli.data.text_options import text_options
from dlcli.data.text_read import (
    BLOCK_BYTES,
    detect_text_column,
    read_columns,
    stdin_lines,
    usable_rows,
)
from dlcli.data.text_tokens import (
    CHARS_PER_WORD,
    LENGTH_LIMITS,
    PAD,
    TOKENIZERS,
    UNK,
    build_vocab,
    default_max_length,
    fit_bigrams,
    inverse_document_frequency,
    is_blank,
    pad_ids,
    tokenize,
)
from dlcli.data.text_tokens import char_tokens as char_tokens
from dlcli.data.text_tokens import word_tokens as word_tokens
from dlcli.errors import InputError, UsageError

ROWS_PER_CHUNK = 8192  # texts tokenized and yielded together when streaming


# -- the preprocessor -----------------------------------------------------------------------------
class TextPreprocessor(Preprocessor):
    """Tokenizer, vocabulary, max length and target; turns any text into the same ids."""

    kind = "text"
    encode_once = True  # ids need no per-batch preprocessing
    input_dtype = torch.long
    prediction_columns: tuple[str, ...] = ()

    def __init__(
        self,
        target: Target | None,
        vocab: list[str],
        tokenizer: str,
        max_length: int,
        text_column: str,
        lowercase: bool = True,
        idf: list[float] | None = None,
        bigrams: tuple[list[int], list[float]] | None = None,
    ) -> None:
        if vocab[:2] != [PAD, UNK]:
            raise InputError("model file has a text vocabulary without padding and unknown tokens")
        if tokenizer not in TOKENIZERS:
            raise InputError(
                f"model file uses text tokenizer '{tokenizer}' that this dl does not know"
            )
        self.target, self.vocab, self.tokenizer = target, list(vocab), tokenizer
        self.max_length, self.text_column, self.lowercase = int(max_length), text_column, lowercase
        self.index = {t: i for i, t in enumerate(self.vocab)}
        if idf is not None and len(idf) != len(self.vocab):
            raise InputError("model file has a text idf that does not match its vocabulary")
        self.idf = [float(v) for v in idf] if idf is not None else None
        # exact word bigrams: (keys first_id * len(vocab) + second_id ascending, idf of each)
        self.bigrams = None if bigrams is None else ([int(k) for k in bigrams[0]], list(bigrams[1]))
        if self.bigrams is not None and len(self.bigrams[0]) != len(self.bigrams[1]):
            raise InputError("model file has text bigrams whose idf does not match them")

    @property
    def input_shape(self) -> tuple[int | None]:
        return (None,)  # variable length: the builder dry-runs with T = 8

    @property
    def data_info(self) -> dict:
        info = {"vocab_size": len(self.vocab), "max_length": self.max_length, "padding_idx": 0}
        if self.bigrams is not None:
            info["bigrams"], info["bigram_idf"] = self.bigrams
        return {**info, "idf": self.idf} if self.idf is not None else info

    def preprocess_module(self) -> nn.Module:
        return nn.Identity()  # ids go straight to the network's embedding

    def tokens(self, text: Any, limit: int | None = None) -> list[str]:
        if is_blank(text):
            return []
        return TOKENIZERS[self.tokenizer](text, limit or self.max_length, self.lowercase)

    def ids(self, token_lists: Iterable[list[str]]) -> list[list[int]]:
        """Token lists -> id lists, truncated to max_length (the start is kept). An empty text
        becomes one unknown token, so every row has a real step to pool or attend over."""
        get, L = self.index.get, self.max_length
        return [[get(t, 1) for t in tokens[:L]] or [1] for tokens in token_lists]

    def encode(self, texts: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts (None/NaN allowed) -> ((N, T) int64 ids, (N,) lengths)."""
        return pad_ids(self.ids(self.tokens(t) for t in texts))

    # -- streaming new inputs ----------------------------------------------------------------
    def _plan(self, source: str, keep: bool, target: str | None = None) -> Any:
        import pyarrow as pa

        def plan(header: list[str]) -> dict[str, Any]:
            for col in (self.text_column, target):
                if col is not None and col not in header:
                    what = (
                        "the target"
                        if col == target
                        else "the text column the model was trained on"
                    )
                    raise InputError(f"{source}: no column '{col}' ({what})")
            wanted = header if keep else [c for c in (self.text_column, target) if c]
            return {c: pa.string() for c in wanted}

        return plan

    def iter_inputs(
        self, paths: str | list[str], keep: bool = False
    ) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(pass-through frame, (n, T) int64 ids) per chunk. A CSV path gives its text column
        (every column as written with `keep`); '-' gives stdin as raw text, one per line, with a
        `text` column when `keep`."""
        for path in [paths] if isinstance(paths, str) else paths:
            if path == "-":
                for lines in stdin_lines(self._char_budget()):
                    frame = (
                        pd.DataFrame({"text": lines})
                        if keep
                        else pd.DataFrame(index=range(len(lines)))
                    )
                    yield frame, self.encode(lines)[0]
                continue
            if text_folders.is_text_file(path) or Path(path).is_dir():  # .txt files, one text each
                for files in text_folders.iter_files(path):
                    texts = text_folders.read_texts(files)
                    frame = {"path": files, **({"text": texts} if keep else {})}
                    yield pd.DataFrame(frame), self.encode(texts)[0]
                continue
            for chunk in self._csv_chunks(path, self._plan(path, keep), keep):
                texts = chunk[self.text_column]  # kept verbatim, 'NA' is still missing text:
                texts = texts.where(~texts.isin(NULL_TEXT)) if keep else texts
                yield (chunk if keep else chunk.iloc[:, :0]), self.encode(texts)[0]

    def iter_labelled(self, path: str) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with the target column, (n, T) ids) per chunk; rows without a label are skipped."""
        name, tname = ("<stdin>" if path == "-" else path), self.target.name
        if Path(path).is_dir():  # a text folder: labels are the class folders (its test/ split)
            for part in text_folders.iter_labelled_files(path):
                frame = pd.DataFrame({"path": part.files, tname: part.labels})
                yield frame, self.encode(text_folders.read_texts(part.files))[0]
            return
        for chunk in self._csv_chunks(path, self._plan(name, False, tname), False):
            chunk = chunk[chunk[tname].notna()]
            if self.target.task == "regression":
                chunk = chunk.assign(**{tname: pd.to_numeric(chunk[tname], errors="coerce")})
            yield chunk, self.encode(chunk[self.text_column])[0]

    def _csv_chunks(self, path: str, plan: Any, keep: bool) -> Iterator[pd.DataFrame]:
        for chunk in readers.iter_chunks(path, plan=plan, block_bytes=BLOCK_BYTES, verbatim=keep):
            for i in range(0, len(chunk), ROWS_PER_CHUNK):
                yield chunk.iloc[i : i + ROWS_PER_CHUNK]

    def _char_budget(self) -> int:
        """Characters of one text that can matter: the rest is cut before tokenizing."""
        return self.max_length * (CHARS_PER_WORD if self.tokenizer == "word" else 1) + 64

    # -- state -------------------------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "kind": self.kind,
            "text_column": self.text_column,
            "tokenizer": self.tokenizer,
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "vocab": list(self.vocab),
            "idf": self.idf,
            **({} if self.bigrams is None else {"bigrams": [list(v) for v in self.bigrams]}),
            "target": self.target.to_state() if self.target else None,
        }

    @classmethod
    def from_state(cls, state: dict) -> TextPreprocessor:
        target = Target.from_state(state["target"]) if state.get("target") else None
        return cls(
            target,
            state["vocab"],
            state["tokenizer"],
            state["max_length"],
            state["text_column"],
            state.get("lowercase", True),
            state.get("idf"),
            state.get("bigrams"),
        )


# -- the training source ---------------------------------------------------------------------
class TextSource:
    """A CSV with a free-text column (detected, or --text-column) and a label column."""

    name = "text"
    kind = "text"
    priority = 10  # before tables: a CSV with a text column is text
    default_arch = "bow"  # won at benchmarks/quality_text.py (docs/text.md)
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        if not Path(path).is_file():
            return False
        topt = opts.extra.get("text") or {}
        col = topt.get("text_column") if isinstance(topt, dict) else topt.text_column
        if col:
            return True
        sample = readers.sample(path)
        return sample is not None and detect_text_column(sample, opts.target) is not None

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
        """Read, split (seeded, stratified), fit the vocabulary on the training split, encode.
        A given `preprocessor` (resume, transfer) is reused instead of fitted."""
        topt = text_options(opts)
        if preprocessor is not None and not isinstance(preprocessor, TextPreprocessor):
            raise UsageError(f"{path}: the model was trained on {preprocessor.kind} data, not text")
        readers.check_file(path)
        frame, text_col, tname = read_columns(
            path,
            preprocessor.text_column if preprocessor else topt.text_column,
            preprocessor.target.name if preprocessor else opts.target,
        )
        val = None
        if opts.val:
            val, _, _ = read_columns(opts.val, text_col, tname)
        return prepare_frames(path, frame, val, text_col, tname, opts, preprocessor)


class TextFolderSource:
    """A folder of class folders of .txt files (IMDB's `aclImdb/train/{pos,neg}`), see
    text_folders.py: the same training as a text table with columns `text` and `label`."""

    name = "text_folders"
    kind = "text"
    priority = 5  # before image folders: a folder of .txt files is text
    default_arch = "bow"
    streams = False

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        return text_folders.is_text_folder(path)

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Preprocessor | None = None) -> Prepared:
        if preprocessor is not None and not isinstance(preprocessor, TextPreprocessor):
            raise UsageError(f"{path}: the model was trained on {preprocessor.kind} data, not text")
        if opts.task not in (None, "classification"):
            raise UsageError(f"{path}: text folders hold classification data, not {opts.task}")
        opts = replace(opts, task="classification")  # class folders named 0, 1, ... too
        text_col = preprocessor.text_column if preprocessor else text_folders.TEXT_COLUMN
        tname = preprocessor.target.name if preprocessor else text_folders.TARGET_NAME
        frame = text_folders.read_folder(path).set_axis([text_col, tname], axis=1)
        val = (
            text_folders.read_folder(opts.val).set_axis([text_col, tname], axis=1)
            if opts.val
            else None
        )
        return prepare_frames(path, frame, val, text_col, tname, opts, preprocessor)


def prepare_frames(
    path: str,
    frame: pd.DataFrame,
    val: pd.DataFrame | None,
    text_col: str,
    tname: str,
    opts: DataOptions,
    preprocessor: TextPreprocessor | None,
) -> Prepared:
    """Training (and --val) frames of text and target -> Prepared: split (seeded, stratified),
    fit the vocabulary on the training split (`vocab_rows: all`: on the texts of the validation
    rows too, never their labels) unless `preprocessor` is given, encode."""
    topt = text_options(opts)
    frame = usable_rows(frame, text_col, tname, path)
    target = preprocessor.target if preprocessor else Target.fit(frame[tname], opts.task, path)
    y = torch.from_numpy(target.encode(frame[tname], path))
    if val is not None:
        val = usable_rows(val, text_col, tname, opts.val)
        tr, va = np.arange(len(frame)), None
    else:
        stratify = target.task == "classification"
        tr, va = split_rows(
            y.numpy(), len(frame), opts.val_split, opts.seed, stratify=stratify, source=path
        )
    lowercase = preprocessor.lowercase if preprocessor else topt.lowercase
    tokenizer = preprocessor.tokenizer if preprocessor else topt.tokenizer
    limit = (preprocessor.max_length if preprocessor else topt.max_length or LENGTH_LIMITS[1]) + 1
    tokens = tokenize(frame[text_col], tokenizer, limit, lowercase)
    val_tokens = None if val is None else tokenize(val[text_col], tokenizer, limit, lowercase)
    every = tokens + (val_tokens or []) if topt.vocab_rows == "all" else tokens  # texts, no labels
    rows = np.arange(len(every)) if topt.vocab_rows == "all" else tr
    preprocessor = preprocessor or fit_preprocessor(every, rows, target, topt, text_col)
    ids, lengths = pad_ids(preprocessor.ids(tokens))
    train = BucketedTokens(ids[tr], lengths[tr], y[tr])
    if val_tokens is not None:
        y_val = torch.from_numpy(target.encode(val[tname], opts.val))
        valid = BucketedTokens(*pad_ids(preprocessor.ids(val_tokens)), y_val)
    else:
        valid = BucketedTokens(ids[va], lengths[va], y[va])
    waste = train.padding_waste()
    cut = float(np.mean([len(t) > preprocessor.max_length for t in tokens]))
    note(
        f"{path}: text column '{text_col}'; {len(preprocessor.vocab):,} tokens in the vocabulary; "
        f"max length {preprocessor.max_length} ({cut:.1%} of texts truncated); "
        f"{waste:.1%} padding in batches of 32"
    )
    info = {
        "rows": train.rows + valid.rows,
        "text_column": text_col,
        "vocab_size": len(preprocessor.vocab),
        "max_length": preprocessor.max_length,
        "truncated": cut,
        "padding_waste": waste,
    }
    return Prepared(preprocessor, train, train.y, valid, valid.y, info)


def fit_preprocessor(
    tokens: list[list[str]], rows: np.ndarray, target: Target, topt: TextOptions, text_col: str
) -> TextPreprocessor:
    """Default length, vocabulary, idf (and with `bigrams` the exact bigram vocabulary and its
    idf) from `rows` (the training split, or every row's text under `vocab_rows: all`)."""
    train = [tokens[i] for i in rows]
    max_length = topt.max_length or default_max_length(np.array([len(t) for t in train]))
    vocab = build_vocab((t[:max_length] for t in train), topt.min_freq, topt.max_vocab)
    pre = TextPreprocessor(target, vocab, topt.tokenizer, max_length, text_col, topt.lowercase)
    ids = pre.ids(train)
    pre.idf = inverse_document_frequency(ids, len(vocab))
    pre.bigrams = fit_bigrams(ids, len(vocab)) if topt.bigrams else None
    return pre


KIND = DataKind(
    name="text",
    preprocessor=TextPreprocessor,
    sources=(TextSource, TextFolderSource),
    export=TextExport(),
    options=tuple(f.name for f in fields(TextOptions) if f.name != "lowercase"),
)
