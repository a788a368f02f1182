"""The bag of n-grams (fastText style; Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification"): token ids (N, T) -> the mean of word and hashed n-gram embeddings (N, dim).

Words are the text encoder's vocabulary ids (0 = padding, 1 = unknown). Each run of n consecutive
real ids (2 <= n <= `ngrams`) is hashed to one of `buckets` rows of a second embedding table with
integer arithmetic that is part of the network, so the exported ONNX graph computes it too and a
client only supplies the word ids:

    h = id[t];  for each next id j of the n-gram: h = (h * MULTIPLIER + j) mod PRIME
    row = h mod buckets

With ids and h below PRIME = 2^31 - 1 every product stays below 2^62: exact in int64 everywhere.

`weighting: tfidf` turns the mean into TF-IDF: each real token counts with its idf (fitted on the
training texts by the text encoder, `data_info["idf"]`, kept in the layer as a buffer, so the
model file and the ONNX graph hold it), an n-gram with the largest idf of its words (a lower bound
of its own: it is never more frequent than its rarest word), and the weighted sum is divided by
the L2 norm of the weights. With a linear output this is logistic regression on TF-IDF features
(raw counts; the norm treats repeats of a token in one text as distinct features).

`weighting: sublinear` is scikit-learn's `TfidfVectorizer(sublinear_tf=True)` row exactly: each
distinct feature of a text weighs (1 + ln tf) * idf, and the sum is divided by the L2 norm of
those weights. When the text encoder fitted exact word bigrams (`data_options: {text: {bigrams:
true}}`: `data_info["bigrams"]`, sorted keys `first * vocab + second`, and their idf), they are
features too: the network forms each pair's key and finds it in the sorted keys by a binary search
of fixed depth (gathers and comparisons, so the ONNX graph does it as well); a bigram the encoder
did not keep is dropped, as scikit-learn drops an n-gram outside its vocabulary.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from dlcli.errors import SpecError
from dlcli.spec.layers.sequence import Mask, vocab_size
from dlcli.spec.registry import BuildContext, LayerDef, Options, Shape, register

PRIME = 2_147_483_647  # 2^31 - 1
MULTIPLIER = 1_000_003  # odd, prime, far from any power of two


def ngram_rows(ids: torch.Tensor, n: int, buckets: int) -> torch.Tensor:
    """(N, T) ids -> (N, T) bucket rows of the n-grams that start at each step; ids past the end
    count as padding (0), so the last n - 1 steps' rows are never used (see `NgramBag`)."""
    steps = ids.shape[1]
    ids = torch.cat([ids, ids.new_zeros(ids.shape[0], n - 1)], 1)  # (N, T + n - 1)
    h = ids[:, :steps]
    for k in range(1, n):
        h = torch.remainder(h * MULTIPLIER + ids[:, k : k + steps], PRIME)
    return torch.remainder(h, buckets)


def find_rows(keys: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Each key's position in the ascending `table` plus 1, or 0 where the table lacks it: a binary
    search with a fixed number of steps (the bits of len(table)), exact and exportable."""
    n = table.shape[0]
    pos = torch.full_like(keys, -1)  # the last position whose key is <= the key (-1: none)
    step = 1 << (n.bit_length() - 1)
    while step:
        cand = pos + step
        ok = (cand < n) & (table[cand.clamp(max=n - 1)] <= keys)
        pos = torch.where(ok, cand, pos)
        step >>= 1
    hit = (pos >= 0) & (table[pos.clamp(min=0)] == keys)
    return torch.where(hit, pos + 1, torch.zeros_like(pos))


def sublinear_weights(
    features: torch.Tensor, idf: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, L) feature rows (0 = none, idf[0] = 0) -> (the rows sorted within each text, each
    occurrence's weight, each occurrence's share of the squared norm): a feature seen tf times
    weighs (1 + ln tf) * idf in all, spread evenly over its occurrences."""
    rows, _ = torch.sort(features, dim=1)
    first = torch.ones_like(rows[:, :1], dtype=torch.bool)
    start = torch.cat([first, rows[:, 1:] != rows[:, :-1]], 1)  # (N, L): a run of one row begins
    run = torch.cumsum(start.to(torch.int64), 1) - 1
    ones = torch.ones_like(rows, dtype=torch.float32)
    tf = torch.zeros_like(ones).scatter_add(1, run, ones).gather(1, run)  # the run's length
    total = idf[rows] * (1.0 + torch.log(tf))
    return rows, total / tf, total * total / tf


class NgramBag(nn.Module):
    """Mean of the embeddings of every real token and every n-gram of real tokens:
    (N, T) int64 -> (N, dim). A row's output does not depend on the padding after it."""

    accepts_mask = True
    updates_mask = True  # ends the time axis

    def __init__(
        self,
        vocab: int,
        dim: int,
        ngrams: int,
        buckets: int,
        idf: list[float] | None = None,
        sublinear: bool = False,
        bigrams: tuple[list[int], list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.ngrams, self.buckets, self.vocab = int(ngrams), int(buckets), int(vocab)
        self.tfidf = idf is not None
        self.sublinear = bool(sublinear)
        if idf is not None:  # (vocab,) float; part of the state dict and of the exported graph
            self.register_buffer("idf", torch.tensor(idf, dtype=torch.float32))
        self.words = nn.Embedding(vocab, dim, padding_idx=0)
        self.grams = nn.Embedding(buckets, dim) if ngrams > 1 else None
        self.pairs = None  # exact bigrams: row 0 = none, row k = the k-th key
        if bigrams is not None and len(bigrams[0]):
            keys, pair_idf = bigrams
            self.register_buffer("pair_keys", torch.tensor(keys, dtype=torch.int64))
            self.register_buffer("pair_idf", torch.tensor([0.0, *pair_idf], dtype=torch.float32))
            self.pairs = nn.Embedding(len(keys) + 1, dim, padding_idx=0)
        bound = 1.0 / dim  # fastText's initialisation: small, so no feature dominates at first
        nn.init.uniform_(self.words.weight, -bound, bound)
        with torch.no_grad():
            self.words.weight[0].zero_()
        for table in (self.grams, self.pairs):
            if table is not None:
                nn.init.uniform_(table.weight, -bound, bound)
        if self.pairs is not None:
            with torch.no_grad():
                self.pairs.weight[0].zero_()

    def forward(self, ids: torch.Tensor, mask: Mask = None):
        real = (ids != 0) if mask is None else mask  # (N, T)
        if self.sublinear:
            return self._sublinear(ids * real.to(ids.dtype)), None
        weight = real.unsqueeze(-1).to(self.words.weight.dtype)  # (N, T, 1)
        if self.tfidf:
            weight = weight * self.idf[ids].unsqueeze(-1)  # each token counts with its idf
        total = (self.words(ids) * weight).sum(1)  # (N, dim)
        norm = (weight * weight if self.tfidf else weight).sum(1)  # (N, 1): sum of w^2 or w
        steps = ids.shape[1]
        beyond = real.new_zeros(real.shape[0], self.ngrams - 1)
        real_after = torch.cat([real, beyond], 1)  # (N, T + ngrams - 1)
        per_step = torch.cat([weight, weight.new_zeros(real.shape[0], self.ngrams - 1, 1)], 1)
        gram_w = per_step[:, :steps]  # (N, T, 1): an n-gram's weight, the largest of its words'
        for n in range(2, self.ngrams + 1):
            rows = ngram_rows(ids, n, self.buckets)  # (N, T)
            # right padding: an n-gram is whole when its last step is real
            w = real_after[:, n - 1 : n - 1 + steps].unsqueeze(-1).to(weight.dtype)  # (N, T, 1)
            if self.tfidf:
                gram_w = torch.maximum(gram_w, per_step[:, n - 1 : n - 1 + steps])
                w = w * gram_w
            total = total + (self.grams(rows) * w).sum(1)
            norm = norm + (w * w if self.tfidf else w).sum(1)
        if self.tfidf:
            return total / norm.sqrt().clamp(min=1e-6), None
        return total / norm.clamp(min=1.0), None

    def _sublinear(self, ids: torch.Tensor) -> torch.Tensor:
        """scikit-learn's sublinear TF-IDF row of the words (and the exact bigrams), through the
        embeddings: sum of weight * vector over the distinct features / L2 norm of the weights."""
        rows, w, sq = sublinear_weights(ids, self.idf)
        total, norm = (self.words(rows) * w.unsqueeze(-1)).sum(1), sq.sum(1, keepdim=True)
        if self.pairs is not None:
            after = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)  # (N, T)
            keys = ids * self.vocab + after
            found = find_rows(keys, self.pair_keys) * ((ids != 0) & (after != 0)).to(ids.dtype)
            rows, w, sq = sublinear_weights(found, self.pair_idf)
            total = total + (self.pairs(rows) * w.unsqueeze(-1)).sum(1)
            norm = norm + sq.sum(1, keepdim=True)
        return total / norm.sqrt().clamp(min=1e-6)

    def extra_repr(self) -> str:
        tfidf = ", weighting=sublinear" if self.sublinear else ", weighting=tfidf"
        pairs = f", bigrams={self.pairs.num_embeddings - 1}" if self.pairs is not None else ""
        return f"ngrams={self.ngrams}, buckets={self.buckets}{tfidf if self.tfidf else ''}{pairs}"


@register("bag", "embedding_bag", "ngram_bag")
class Bag(LayerDef):
    """Token ids (T,) -> (dim,): mean of word embeddings and hashed n-gram embeddings (fastText)."""

    primary = "dim"
    embeds_tokens = True  # its word table (--embeddings)

    class Options(Options):
        dim: int = Field(..., gt=0)
        ngrams: int = Field(2, ge=1, le=5)  # words, plus n-grams up to this length
        buckets: int = Field(100_000, ge=1, le=10_000_000)  # hashed n-gram embedding rows
        vocab: int | None = Field(None, gt=1)  # default: the text data's vocabulary size
        # tfidf: idf-weighted, L2-normalised sum; sublinear: scikit-learn's sublinear TF-IDF row
        # (words, and the text data's exact bigrams when it has them)
        weighting: Literal["mean", "tfidf", "sublinear"] = "mean"

    def build(self, opts: Any, in_shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        if len(in_shape) != 1:
            raise SpecError(
                f"{ctx.where}: bag needs token ids (a text column), got input of shape "
                f"({', '.join(str(d) for d in in_shape)})",
                "put bag first in the layers of a text model",
            )
        vocab = vocab_size(opts, ctx)
        idf, data = None, ctx.data or {}
        if opts.weighting == "sublinear" and opts.ngrams > 1:
            raise SpecError(
                f"{ctx.where}: weighting sublinear takes the text data's exact bigrams, "
                f"not hashed n-grams (ngrams {opts.ngrams})",
                "set ngrams: 1 and data_options: {text: {bigrams: true}}",
            )
        if opts.weighting != "mean":  # the encoder's idf; ones where there is none (dl build)
            idf = list(data.get("idf") or [1.0] * vocab)
            if len(idf) != vocab:
                raise SpecError(
                    f"{ctx.where}: weighting tfidf needs the text data's idf for all {vocab} ids "
                    f"(it has {len(idf)})",
                    "leave out the bag's vocab option",
                )
            idf[0] = 0.0  # padding
        sub = opts.weighting == "sublinear"
        pairs = (data["bigrams"], data["bigram_idf"]) if sub and data.get("bigrams") else None
        if pairs and vocab != data.get("vocab_size"):  # the keys are first * vocab + second
            raise SpecError(
                f"{ctx.where}: the text data's bigrams need the bag's vocab to be the data's "
                f"({data.get('vocab_size')}, not {vocab})",
                "leave out the bag's vocab option",
            )
        bag = NgramBag(vocab, opts.dim, opts.ngrams, opts.buckets, idf, sub, pairs)
        return bag, (opts.dim,)
