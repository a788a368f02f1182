"""The text kind's options (`DataOptions.extra["text"]`: flags, or a spec's `data_options`), and
their checks."""

from __future__ import annotations

from dataclasses import dataclass

from dlcli.data.contracts import DataOptions
from dlcli.data.text_tokens import TOKENIZERS
from dlcli.errors import UsageError

VOCAB_ROWS = ("train", "all")


@dataclass
class TextOptions:
    """Text-specific flags (`DataOptions.extra["text"]`)."""

    text_column: str | None = None  # default: detected
    tokenizer: str = "word"  # "word" | "char"
    min_freq: int = 2  # a token seen fewer times in the training split is unknown
    max_vocab: int = 20000  # most frequent tokens kept (besides padding and unknown)
    max_length: int | None = None  # tokens per text; default: 95th percentile, within 8..512
    lowercase: bool = True
    vocab_rows: str = "train"  # "all": validation texts (not labels) fit the vocabulary too
    bigrams: bool = False  # fit an exact word-bigram vocabulary and idf (the bag layer's features)


def text_options(opts: DataOptions) -> TextOptions:
    got = opts.extra.get("text") or TextOptions()
    got = (
        TextOptions(**{k: v for k, v in got.items() if v is not None})
        if isinstance(got, dict)
        else got
    )
    if got.tokenizer not in TOKENIZERS:
        raise UsageError(
            f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got '{got.tokenizer}'"
        )
    if got.vocab_rows not in VOCAB_ROWS:
        raise UsageError(
            f"vocab_rows must be one of {', '.join(VOCAB_ROWS)}, got '{got.vocab_rows}'"
        )
    if got.min_freq < 1:
        raise UsageError(f"--min-freq must be at least 1, got {got.min_freq}")
    if got.max_vocab < 1:
        raise UsageError(f"--max-vocab must be at least 1, got {got.max_vocab}")
    if got.max_length is not None and not 1 <= got.max_length <= 100_000:
        raise UsageError(f"--max-length must be between 1 and 100000, got {got.max_length}")
    return got
