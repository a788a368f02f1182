"""Tokens for the text kind: the tokenizers (lower-cased unicode words and punctuation, or
characters), the vocabulary (id 0 = padding, 1 = unknown, 2.. by frequency) and right-padded id
tensors.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1; neither can be a token ('<' is split off, chars are 1)
LENGTH_LIMITS = (8, 512)  # the default max length (95th percentile) is clipped to this range
MAX_BIGRAMS = 500_000  # exact bigram features kept at most (bigrams: true), most frequent first
CHARS_PER_WORD = 50  # word mode reads at most max_length * this many characters of a text
_WORD = re.compile(r"\w+|[^\w\s]")  # unicode words, and each punctuation mark on its own
WORD_PATTERN = _WORD.pattern  # what an exported model's caller tokenizes with


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


def smoothed_idf(df: np.ndarray, texts: int) -> np.ndarray:
    """scikit-learn's smoothed idf, ln((1 + N) / (1 + df)) + 1, and 0 where df is 0: a feature no
    fitting text holds is dropped, as scikit-learn drops a word it has not seen."""
    idf = np.log((1.0 + texts) / (1.0 + df)) + 1.0
    return np.where(df > 0, idf, 0.0)


def inverse_document_frequency(id_lists: list[list[int]], vocab: int) -> list[float]:
    """Smoothed idf per id, as scikit-learn's TfidfVectorizer: ln((1 + N) / (1 + df)) + 1, where
    df counts the texts an id occurs in; padding (id 0) and ids no text holds (the unknown id when
    every word is in the vocabulary) get 0. The `bag` layer's weightings read it
    (spec/layers/bag.py)."""
    df = np.zeros(vocab, dtype=np.float64)
    for ids in id_lists:
        df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    idf = smoothed_idf(df, len(id_lists))
    idf[0] = 0.0
    return [round(float(v), 6) for v in idf]


def bigram_keys(ids: np.ndarray, vocab: int) -> np.ndarray:
    """The word bigrams of one id list as int64 keys `first * vocab + second`: every pair of
    consecutive ids, padding (0) excluded; the `bag` layer forms the same keys in the network."""
    ids = np.asarray(ids, dtype=np.int64)
    pairs = ids[:-1] * vocab + ids[1:]
    return pairs[(ids[:-1] != 0) & (ids[1:] != 0)]


def fit_bigrams(
    id_lists: list[list[int]], vocab: int, max_bigrams: int = MAX_BIGRAMS
) -> tuple[list[int], list[float]]:
    """The exact bigram vocabulary of the texts: (keys sorted ascending, the smoothed idf of each).
    Every bigram of the texts is kept (scikit-learn's `ngram_range=(1, 2)` at `min_df=1`), at most
    the `max_bigrams` found in the most texts (ties: smaller key first)."""
    if not id_lists:
        return [], []
    per_text = [np.unique(bigram_keys(ids, vocab)) for ids in id_lists]
    keys, df = np.unique(np.concatenate(per_text), return_counts=True)
    if len(keys) > max_bigrams:
        keep = np.lexsort((keys, -df))[:max_bigrams]
        keep.sort()  # keys stay ascending
        keys, df = keys[keep], df[keep]
    idf = smoothed_idf(df.astype(np.float64), len(id_lists))
    return [int(k) for k in keys], [round(float(v), 6) for v in idf]


def default_max_length(lengths: np.ndarray) -> int:
    """95th percentile of the training lengths, clipped to LENGTH_LIMITS."""
    p95 = math.ceil(float(np.percentile(lengths, 95))) if len(lengths) else LENGTH_LIMITS[0]
    return int(min(max(p95, LENGTH_LIMITS[0]), LENGTH_LIMITS[1]))


def pad_ids(id_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, T) int64 ids with T = the longest row (at least 1), and (N,) lengths."""
    import torch  # here, so the tokenizers serve torch-free callers (dlcli/runtime/)

    out, lengths = pad_array(id_lists)
    return torch.from_numpy(out), torch.from_numpy(lengths)


def pad_array(id_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """`pad_ids` as numpy arrays."""
    lengths = np.fromiter((len(r) for r in id_lists), dtype=np.int64, count=len(id_lists))
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    out = np.zeros((len(id_lists), width), dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = np.fromiter(
        (i for r in id_lists for i in r), dtype=np.int64, count=int(lengths.sum())
    )
    return out, lengths


def is_blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def tokenize(texts: Iterable[Any], tokenizer: str, limit: int, lowercase: bool) -> list[list[str]]:
    """Up to `limit` tokens of each text (one more than the model keeps: truncation is counted)."""
    fn = TOKENIZERS[tokenizer]
    return [[] if is_blank(t) else fn(t, limit, lowercase) for t in texts]
