"""Exact word bigrams and sublinear TF-IDF in the bag of words (the bow preset's features): the
bigram vocabulary the text encoder fits (text_tokens.fit_bigrams), the in-graph lookup
(bag.find_rows) and the bag's `weighting: sublinear`, checked against scikit-learn's
TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_onnx_matches
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcli.data.sources import DataOptions
from dlcli.data.text import TextPreprocessor, TextSource
from dlcli.data.text_tokens import bigram_keys, fit_bigrams, inverse_document_frequency
from dlcli.errors import SpecError
from dlcli.model.builder import build_network
from dlcli.spec.layers.bag import find_rows
from dlcli.spec.schema import parse_spec

VOCAB = 9
DOCS = [[2, 3, 4, 2, 3], [2, 3, 5], [3, 6, 7, 2, 2, 2], [8], [4, 5, 6, 4, 5], [4, 5]]

docs_strategy = st.lists(
    st.lists(st.integers(2, VOCAB - 1), min_size=1, max_size=12), min_size=1, max_size=12
)


def sublinear_bag(docs: list[list[int]], dim: int | None = None) -> torch.nn.Module:
    """A `weighting: sublinear` bag on `docs`' idf and bigrams; dim None: one output per
    feature (identity embeddings: word ids, then bigram rows)."""
    keys, pair_idf = fit_bigrams(docs, VOCAB)
    width = dim or VOCAB + len(keys) + 1
    layer = {"bag": {"dim": width, "ngrams": 1, "weighting": "sublinear"}}
    spec = parse_spec({"layers": [layer], "head": "none"}, "t.yaml")
    info = {"vocab_size": VOCAB, "idf": inverse_document_frequency(docs, VOCAB)}
    info.update(bigrams=keys, bigram_idf=pair_idf)
    net = build_network(spec, (None,), None, input_dtype=torch.long, data_info=info).module
    if dim is None:
        bag, eye = net[0], torch.eye(width)
        with torch.no_grad():
            bag.words.weight.copy_(eye[:VOCAB])
            if bag.pairs is not None:
                bag.pairs.weight.copy_(eye[VOCAB:])
    return net.eval()


def padded(docs: list[list[int]], extra: int = 0) -> torch.Tensor:
    width = max(len(d) for d in docs) + extra
    return torch.tensor([d + [0] * (width - len(d)) for d in docs])


def sklearn_rows(docs: list[list[int]]) -> np.ndarray:
    """scikit-learn's sublinear 1-2 gram TF-IDF rows in the bag's feature order (ids as words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    keys, _ = fit_bigrams(docs, VOCAB)
    vec = TfidfVectorizer(
        analyzer="word", tokenizer=str.split, lowercase=False, token_pattern=None,
        ngram_range=(1, 2), sublinear_tf=True,
    )  # fmt: skip
    x = vec.fit_transform([" ".join(map(str, d)) for d in docs]).toarray()
    out = np.zeros((len(docs), VOCAB + len(keys) + 1))
    for term, col in vec.vocabulary_.items():
        parts = [int(p) for p in term.split()]
        at = parts[0] if len(parts) == 1 else VOCAB + 1 + keys.index(parts[0] * VOCAB + parts[1])
        out[:, at] = x[:, col]
    return out


def test_bigram_keys_pair_consecutive_real_ids() -> None:
    assert bigram_keys([2, 3, 4, 0, 0], 10).tolist() == [23, 34]
    assert bigram_keys([5], 10).tolist() == [] and bigram_keys([], 10).tolist() == []


def test_fit_bigrams_keeps_every_bigram_with_scikit_learns_idf_and_caps_by_frequency() -> None:
    keys, idf = fit_bigrams(DOCS, VOCAB)
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    df = {k: sum(k in set(bigram_keys(d, VOCAB).tolist()) for d in DOCS) for k in keys}
    assert set(keys) == {int(k) for d in DOCS for k in bigram_keys(d, VOCAB)}
    for k, v in zip(keys, idf, strict=True):
        assert v == pytest.approx(np.log(7 / (1 + df[k])) + 1, abs=1e-5)
    top, _ = fit_bigrams(DOCS, VOCAB, max_bigrams=2)  # 2 3 and 4 5 are in 2 texts, others 1
    assert top == sorted([2 * VOCAB + 3, 4 * VOCAB + 5])
    assert fit_bigrams([], VOCAB) == ([], [])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10**6), max_size=40), st.lists(st.integers(-5, 10**6 + 5)))
def test_find_rows_is_an_exact_lookup(table: list[int], keys: list[int]) -> None:
    table = sorted(set(table))
    if not table or not keys:
        return
    where = {k: i + 1 for i, k in enumerate(table)}
    got = find_rows(torch.tensor(keys), torch.tensor(table)).tolist()
    assert got == [where.get(k, 0) for k in keys]


@settings(max_examples=25, deadline=None)
@given(docs_strategy)
def test_sublinear_bag_with_identity_embeddings_is_scikit_learns_row(
    docs: list[list[int]],
) -> None:
    """Embeddings = identity: the bag's output is TfidfVectorizer(ngram_range=(1, 2),
    sublinear_tf=True)'s row, repeats and all, so a linear output on it is logistic regression on
    the baseline's features; trailing padding changes nothing."""
    net = sublinear_bag(docs)
    with torch.no_grad():
        got, longer = net(padded(docs)).numpy(), net(padded(docs, extra=3)).numpy()
    assert np.abs(got - sklearn_rows(docs)).max() < 1e-5
    assert np.abs(longer - got).max() < 1e-6


def test_unseen_words_and_bigrams_are_dropped_and_an_empty_row_is_zero() -> None:
    torch.manual_seed(0)
    net = sublinear_bag(DOCS, dim=4)
    bag, idf = net[0], inverse_document_frequency(DOCS, VOCAB)
    with torch.no_grad():
        # 3 -> 2 is no bigram of DOCS, and the unknown id 1 is in no fitting text: both dropped
        w = torch.tensor([idf[3], idf[2]])
        want = (bag.words.weight[[3, 2]] * w[:, None]).sum(0) / w.pow(2).sum().sqrt()
        assert torch.allclose(net(torch.tensor([[3, 2]]))[0], want, atol=1e-6)
        assert torch.allclose(net(torch.tensor([[3, 2, 1]]))[0], want, atol=1e-6)
        assert net(torch.tensor([[1]])).abs().max() == 0  # an empty text: the unknown id alone


def test_sublinear_refuses_hashed_ngrams() -> None:
    layer = {"bag": {"dim": 4, "ngrams": 2, "weighting": "sublinear"}}
    spec = parse_spec({"layers": [layer], "head": "none"}, "t.yaml")
    with pytest.raises(SpecError, match="weighting sublinear takes the text data's exact bigrams"):
        build_network(spec, (None,), None, input_dtype=torch.long, data_info={"vocab_size": 7})


def test_the_encoder_fits_bigrams_when_asked_and_keeps_them(tmp_path: Path) -> None:
    rows = [(f"a good film number {i % 5}", "ab"[i % 2]) for i in range(20)]
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    plain = TextSource.prepare(str(path), DataOptions(extra={"text": {"text_column": "text"}}))
    assert plain.preprocessor.bigrams is None and "bigrams" not in plain.preprocessor.data_info
    topt = {"text_column": "text", "bigrams": True, "vocab_rows": "all", "min_freq": 1}
    opts = DataOptions(extra={"text": topt})
    enc = TextSource.prepare(str(path), opts).preprocessor
    keys, idf = enc.bigrams
    v = len(enc.vocab)
    words = [enc.vocab.index(w) for w in ("a", "good", "film", "number")]
    want = {words[0] * v + words[1], words[1] * v + words[2], words[2] * v + words[3]}
    assert want < set(keys) and len(keys) == 3 + 5  # and "number 0" .. "number 4"
    assert enc.data_info["bigrams"] == keys and enc.data_info["bigram_idf"] == idf
    again = TextPreprocessor.from_state(enc.to_state())
    assert again.bigrams == enc.bigrams and again.data_info == enc.data_info
    older = {k: val for k, val in enc.to_state().items() if k != "bigrams"}
    assert TextPreprocessor.from_state(older).bigrams is None


@pytest.mark.slow
def test_sublinear_bag_with_bigrams_exports_to_onnx_for_any_batch_and_length() -> None:
    torch.manual_seed(0)
    net = sublinear_bag(DOCS, dim=6)
    example = padded(DOCS)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(1, VOCAB, (5, 13), generator=g), torch.tensor([[7]])]
    batches[0][1, 3:] = 0
    assert_onnx_matches(net, example, batches, 1e-5)
