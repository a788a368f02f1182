"""Text in a CSV column -> token ids (N, T) int64 plus the fitted `TextPreprocessor` (plain-data state).

The preprocessor remembers the tokenizer (lower-cased unicode words and punctuation, or characters), the
vocabulary fitted on the training split (id 0 = padding, 1 = unknown, 2.. by frequency), the
maximum length and the target. Ids go straight to the network (its first layer embeds them), so
the preprocessing module is the identity. `BucketedTokens` batches training rows of similar length
together so little compute is spent on padding.
"""

from __future__ import annotations

import codecs
import io
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dlcli.console import note
from dlcli.data.buckets import BucketedTokens
from dlcli.data.csvio import NULL_TEXT, check_file, iter_chunks
from dlcli.data.sources import (
    PREPROCESSORS,
    DataOptions,
    Prepared,
    register_source,
    stratified_split,
)
from dlcli.data.target import Target
from dlcli.errors import InputError, UsageError

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1; neither can be a token ('<' is split off, chars are 1)
LENGTH_LIMITS = (8, 512)  # the default max length (95th percentile) is clipped to this range
CHARS_PER_WORD = 50  # word mode reads at most max_length * this many characters of a text
BLOCK_BYTES = 32 << 20  # CSV blocks: one row (one text) may be up to this large
ROWS_PER_CHUNK = 8192  # texts tokenized and yielded together when streaming
SNIFF_BYTES, SNIFF_ROWS = 1 << 20, 1000  # how much of a CSV text detection reads
MIN_WORDS, LONG_WORDS, MAX_OTHER_COLUMNS = 4, 8, 2  # text detection (see detect_text_column)
_WORD = re.compile(r"\w+|[^\w\s]")  # unicode words, and each punctuation mark on its own


@dataclass
class TextOptions:
    """Text-specific flags (`DataOptions.extra["text"]`)."""

    text_column: str | None = None  # default: detected
    tokenizer: str = "word"  # "word" | "char"
    min_freq: int = 2  # a token seen fewer times in the training split is unknown
    max_vocab: int = 20000  # most frequent tokens kept (besides padding and unknown)
    max_length: int | None = None  # tokens per text; default: 95th percentile, within 8..512
    lowercase: bool = True


def text_options(opts: DataOptions) -> TextOptions:
    got = (getattr(opts, "extra", None) or {}).get("text") or TextOptions()
    got = (
        TextOptions(**{k: v for k, v in got.items() if v is not None})
        if isinstance(got, dict)
        else got
    )
    if got.tokenizer not in TOKENIZERS:
        raise UsageError(
            f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got '{got.tokenizer}'"
        )
    if got.min_freq < 1:
        raise UsageError(f"--min-freq must be at least 1, got {got.min_freq}")
    if got.max_vocab < 1:
        raise UsageError(f"--max-vocab must be at least 1, got {got.max_vocab}")
    if got.max_length is not None and not 1 <= got.max_length <= 100_000:
        raise UsageError(f"--max-length must be between 1 and 100000, got {got.max_length}")
    return got


# -- tokenizers ------------------------------------------------------------------------------
def word_tokens(text: str, limit: int, lowercase: bool = True) -> list[str]:
    """Unicode words and punctuation marks: "Don't!" -> ["don", "'", "t", "!"]; at most `limit`,
    reading at most limit * CHARS_PER_WORD characters (an enormous text costs no more)."""
    text = text[: limit * CHARS_PER_WORD]
    return _WORD.findall(text.lower() if lowercase else text)[:limit]


def char_tokens(text: str, limit: int, lowercase: bool = True) -> list[str]:
    """Characters of the stripped text (inner whitespace kept), at most `limit`."""
    text = text[: limit * CHARS_PER_WORD].strip()[:limit]
    return list(text.lower() if lowercase else text)


TOKENIZERS = {"word": word_tokens, "char": char_tokens}


def build_vocab(token_lists: Iterable[list[str]], min_freq: int, max_vocab: int) -> list[str]:
    """[PAD, UNK, tokens by frequency (ties alphabetical)]: list index = token id."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return [PAD, UNK, *kept[:max_vocab]]


def default_max_length(lengths: np.ndarray) -> int:
    """95th percentile of the training lengths, clipped to LENGTH_LIMITS."""
    p95 = math.ceil(float(np.percentile(lengths, 95))) if len(lengths) else LENGTH_LIMITS[0]
    return int(min(max(p95, LENGTH_LIMITS[0]), LENGTH_LIMITS[1]))


def pad_ids(id_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, T) int64 ids with T = the longest row (at least 1), and (N,) lengths."""
    lengths = np.fromiter((len(r) for r in id_lists), dtype=np.int64, count=len(id_lists))
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    out = np.zeros((len(id_lists), width), dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = np.fromiter(
        (i for r in id_lists for i in r), dtype=np.int64, count=int(lengths.sum())
    )
    return torch.from_numpy(out), torch.from_numpy(lengths)


def _is_blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


# -- the preprocessor -----------------------------------------------------------------------------
class TextPreprocessor:
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

    @property
    def input_shape(self) -> tuple[int | None]:
        return (None,)  # variable length: the builder dry-runs with T = 8

    raw_shape = input_shape

    @property
    def data_info(self) -> dict:
        return {"vocab_size": len(self.vocab), "max_length": self.max_length, "padding_idx": 0}

    def preprocess_module(self) -> nn.Module:
        return nn.Identity()  # ids go straight to the network's embedding

    def tokens(self, text: Any, limit: int | None = None) -> list[str]:
        if _is_blank(text):
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
                for lines in _stdin_lines(self._char_budget()):
                    frame = (
                        pd.DataFrame({"text": lines})
                        if keep
                        else pd.DataFrame(index=range(len(lines)))
                    )
                    yield frame, self.encode(lines)[0]
                continue
            for chunk in self._csv_chunks(path, self._plan(path, keep), keep):
                texts = chunk[self.text_column]  # kept verbatim, 'NA' is still missing text:
                texts = texts.where(~texts.isin(NULL_TEXT)) if keep else texts
                yield (chunk if keep else chunk.iloc[:, :0]), self.encode(texts)[0]

    def iter_labelled(self, path: str) -> Iterator[tuple[pd.DataFrame, torch.Tensor]]:
        """(frame with the target column, (n, T) ids) per chunk; rows without a label are skipped."""
        name, tname = ("<stdin>" if path == "-" else path), self.target.name
        for chunk in self._csv_chunks(path, self._plan(name, False, tname), False):
            chunk = chunk[chunk[tname].notna()]
            if self.target.task == "regression":
                chunk = chunk.assign(**{tname: pd.to_numeric(chunk[tname], errors="coerce")})
            yield chunk, self.encode(chunk[self.text_column])[0]

    def _csv_chunks(self, path: str, plan: Any, keep: bool) -> Iterator[pd.DataFrame]:
        for chunk in iter_chunks(path, plan=plan, block_bytes=BLOCK_BYTES, verbatim=keep):
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
        )


PREPROCESSORS["text"] = TextPreprocessor


def _stdin_lines(max_chars: int, batch: int = 4096) -> Iterator[list[str]]:
    """Lines of stdin in batches, decoded as UTF-8 (a bad byte is an InputError naming the line).
    A line longer than `max_chars` characters is cut there; the rest is skipped unread into memory."""
    fh = sys.stdin.buffer
    limit = 4 * max_chars  # UTF-8 needs at most 4 bytes per character
    lines: list[str] = []
    number = 0
    while True:
        raw = fh.readline(limit)
        if not raw:
            break
        number += 1
        cut = not raw.endswith(b"\n")
        if cut:  # the rest of an enormous line is never decoded nor kept
            while (more := fh.readline(limit)) and not more.endswith(b"\n"):
                pass
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not cut)
        except UnicodeDecodeError:
            raise InputError(
                f"<stdin>: line {number} holds bytes that are not UTF-8 text", "send UTF-8 text"
            ) from None
        lines.append(text.rstrip("\r\n"))
        if len(lines) >= batch:
            yield lines
            lines = []
    if lines:
        yield lines
    if number == 0:
        raise InputError("<stdin>: no text (expected one text per line)")


def _sniff(path: str) -> pd.DataFrame | None:
    """Up to SNIFF_ROWS rows from the first SNIFF_BYTES of a CSV (all as text), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
        if len(head) == SNIFF_BYTES:
            head = head[: head.rfind(b"\n") + 1] or head
        return pd.read_csv(io.BytesIO(head), nrows=SNIFF_ROWS, dtype=str, encoding_errors="replace")
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def detect_text_column(frame: pd.DataFrame, target: str | None) -> str | None:
    """The column holding free text, or None: not the target (default: the last column), not
    numbers, mostly distinct values of at least MIN_WORDS words on average; the wordiest wins. In a
    table with more than MAX_OTHER_COLUMNS other columns, short text (under LONG_WORDS words, such
    as names or addresses) is taken for a table column: --text-column overrides."""
    if frame is None or frame.empty:
        return None
    target = target if target is not None else str(frame.columns[-1])
    best, best_words = None, 0.0
    for name in frame.columns:
        s = frame[name].dropna().astype(str)
        s = s[s.str.strip() != ""]
        if name == target or s.empty or pd.to_numeric(s, errors="coerce").notna().mean() > 0.5:
            continue
        words = float(s.str.split().str.len().mean())
        if words >= MIN_WORDS and s.nunique() > 0.5 * len(s) and words > best_words:
            best, best_words = str(name), words
    crowded = len(frame.columns) - 2 > MAX_OTHER_COLUMNS
    return None if best is None or (crowded and best_words < LONG_WORDS) else best


def _read_columns(
    path: str, text_col: str | None, target: str | None
) -> tuple[pd.DataFrame, str, str]:
    """(frame, text column, target column) of a whole CSV, both columns read as text; a target
    whose every value is a number becomes numeric (as pyarrow would type it)."""
    import pyarrow as pa

    chosen: dict[str, str] = {}

    def plan(header: list[str]) -> dict[str, Any]:
        tname = target or header[-1]
        col = text_col or detect_text_column(_sniff(path), tname)
        for name, hint in ((tname, "pass --target COLUMN"), (col, "pass --text-column COLUMN")):
            if name is None or name not in header:
                shown = f"no column '{name}'" if name else "no text column found"
                raise InputError(f"{path}: {shown} (columns: {', '.join(header)})", hint)
        if col == tname:
            raise UsageError(f"{path}: the text column '{col}' is also the target")
        chosen.update(text=col, target=tname)
        return {col: pa.string(), tname: pa.string()}

    chunks = list(iter_chunks(path, plan=plan, block_bytes=BLOCK_BYTES))
    col, tname = chosen["text"], chosen["target"]
    frame = pd.DataFrame(
        {
            c: pd.concat([ch[c] for ch in chunks], ignore_index=True).astype(object)
            for c in (col, tname)
        }
    )
    numbers = pd.to_numeric(frame[tname], errors="coerce")
    if numbers.notna().sum() == frame[tname].notna().sum():
        frame[tname] = numbers
    return frame, col, tname


def _usable_rows(frame: pd.DataFrame, text_col: str, tname: str, source: str) -> pd.DataFrame:
    """Rows with a label and some text; what is dropped is reported."""
    no_label = frame[tname].isna()
    if no_label.all():
        raise InputError(f"{source}: target column '{tname}' has no values")
    blank = frame[text_col].map(_is_blank) & ~no_label
    for count, what in (
        (no_label.sum(), f"no value in target '{tname}'"),
        (blank.sum(), f"empty text in '{text_col}'"),
    ):
        if count:
            note(f"{source}: dropped {int(count)} rows with {what}")
    kept = frame[~no_label & ~blank]
    if kept.empty:
        raise InputError(f"{source}: no row has both text in '{text_col}' and a label")
    return kept.reset_index(drop=True)


@register_source("text")
class TextSource:
    """A CSV with a free-text column (detected, or --text-column) and a label column."""

    kind = "text"
    default_arch = "lstm"
    priority = 10  # before tables: a CSV with a text column is text

    @staticmethod
    def claims(path: str, opts: DataOptions) -> bool:
        if not Path(path).is_file():
            return False
        topt = (getattr(opts, "extra", None) or {}).get("text") or {}
        col = topt.get("text_column") if isinstance(topt, dict) else topt.text_column
        if col:
            return True
        sample = _sniff(path)
        return sample is not None and detect_text_column(sample, opts.target) is not None

    @staticmethod
    def prepare(path: str, opts: DataOptions, preprocessor: Any = None) -> Prepared:
        """Read, split (seeded, stratified), fit the vocabulary on the training split, encode.
        A given `preprocessor` (resume, transfer) is reused instead of fitted."""
        topt = text_options(opts)
        if preprocessor is not None and not isinstance(preprocessor, TextPreprocessor):
            raise UsageError(f"{path}: the model was trained on {preprocessor.kind} data, not text")
        check_file(path)
        frame, text_col, tname = _read_columns(
            path,
            preprocessor.text_column if preprocessor else topt.text_column,
            preprocessor.target.name if preprocessor else opts.target,
        )
        frame = _usable_rows(frame, text_col, tname, path)
        target = preprocessor.target if preprocessor else Target.fit(frame[tname], opts.task, path)
        y = torch.from_numpy(target.encode(frame[tname], path))
        val = None
        if opts.val:
            val, _, _ = _read_columns(opts.val, text_col, tname)
            val = _usable_rows(val, text_col, tname, opts.val)
            tr, va = np.arange(len(frame)), None
        else:
            if not 0.0 < opts.val_split < 1.0:
                raise UsageError(f"--val-split must be between 0 and 1, got {opts.val_split}")
            stratify = target.task == "classification"
            tr, va = stratified_split(y.numpy(), len(frame), opts.val_split, opts.seed, stratify)
            if len(tr) < 2 or len(va) < 1:
                raise InputError(
                    f"{path}: only {len(frame)} rows; too few to split for validation",
                    "pass --val FILE",
                )
        lowercase = preprocessor.lowercase if preprocessor else topt.lowercase
        tokenizer = preprocessor.tokenizer if preprocessor else topt.tokenizer
        limit = (
            preprocessor.max_length if preprocessor else topt.max_length or LENGTH_LIMITS[1]
        ) + 1
        tokens = _tokenize(frame[text_col], tokenizer, limit, lowercase)
        preprocessor = preprocessor or _fit_preprocessor(tokens, tr, target, topt, text_col)
        ids, lengths = pad_ids(preprocessor.ids(tokens))
        train = BucketedTokens(ids[tr], lengths[tr], y[tr])
        if val is not None:
            val_tokens = _tokenize(val[text_col], tokenizer, limit, lowercase)
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


def _tokenize(texts: Iterable[Any], tokenizer: str, limit: int, lowercase: bool) -> list[list[str]]:
    """Up to `limit` tokens of each text (one more than the model keeps: truncation is counted)."""
    fn = TOKENIZERS[tokenizer]
    return [[] if _is_blank(t) else fn(t, limit, lowercase) for t in texts]


def _fit_preprocessor(
    tokens: list[list[str]], rows: np.ndarray, target: Target, topt: TextOptions, text_col: str
) -> TextPreprocessor:
    """Default length and vocabulary from the training rows only."""
    train = [tokens[i] for i in rows]
    max_length = topt.max_length or default_max_length(np.array([len(t) for t in train]))
    vocab = build_vocab((t[:max_length] for t in train), topt.min_freq, topt.max_vocab)
    return TextPreprocessor(target, vocab, topt.tokenizer, max_length, text_col, topt.lowercase)
