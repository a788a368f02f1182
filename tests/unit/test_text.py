"""Text CSVs: tokenizers, vocabulary, truncation, the preprocessor's state, detection, bad input
(empty and missing texts, non-UTF-8 bytes, enormous lines), length bucketing, streaming inputs."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_onnx_matches

from dlcli.data import text
from dlcli.data.sources import DataOptions, choose_source, preprocessor_from_state
from dlcli.data.target import Target
from dlcli.data.text import (
    PAD,
    UNK,
    BucketedTokens,
    TextPreprocessor,
    TextSource,
    build_vocab,
    char_tokens,
    default_max_length,
    detect_text_column,
    text_options,
    word_tokens,
)
from dlcli.errors import InputError, UsageError

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
REVIEWS = SAMPLES / "reviews"
TARGET = Target("sentiment", "classification", ["negative", "positive"])


def preprocessor(
    vocab: list[str], max_length: int = 8, tokenizer: str = "word"
) -> TextPreprocessor:
    return TextPreprocessor(TARGET, [PAD, UNK, *vocab], tokenizer, max_length, "review")


def stdin_bytes(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def write_csv(path: Path, rows: list[tuple], columns: tuple = ("review", "sentiment")) -> str:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def prepared() -> text.Prepared:
    return TextSource.prepare(str(REVIEWS / "train.csv"), DataOptions(target="sentiment"))


# -- tokenizers, vocabulary, truncation ------------------------------------------------------
def test_word_tokens_are_lowercased_unicode_words_and_punctuation() -> None:
    assert word_tokens("Münch's CAFÉ — naïve!", 100) == [
        "münch",
        "'",
        "s",
        "café",
        "—",
        "naïve",
        "!",
    ]
    assert word_tokens("日本語 テキスト, ok", 100) == ["日本語", "テキスト", ",", "ok"]
    assert word_tokens("a b c d e", 3) == ["a", "b", "c"]  # the start is kept
    assert word_tokens("A", 5, lowercase=False) == ["A"]


def test_char_tokens_keep_inner_whitespace() -> None:
    assert char_tokens("  Ab  c! ", 100) == ["a", "b", " ", " ", "c", "!"]
    assert char_tokens("abcdef", 3) == ["a", "b", "c"]


def test_vocabulary_by_frequency_min_freq_and_max_vocab() -> None:
    lists = [["b", "a", "c"], ["a", "b", "d"], ["a", "e", "b"]]
    assert build_vocab(lists, 1, 100) == [PAD, UNK, "a", "b", "c", "d", "e"]  # ties alphabetical
    assert build_vocab(lists, 2, 100) == [PAD, UNK, "a", "b"]
    assert build_vocab(lists, 1, 1) == [PAD, UNK, "a"]


def test_ids_unknown_padding_and_truncation() -> None:
    enc = preprocessor(["good", "film"], max_length=3)
    ids, lengths = enc.encode(["Good film", "good good good good", "zebra", "", None, float("nan")])
    assert ids.dtype == torch.int64
    assert ids.tolist() == [[2, 3, 0], [2, 2, 2], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert lengths.tolist() == [2, 3, 1, 1, 1, 1]  # an empty text is one unknown token
    assert enc.data_info["vocab_size"] == 4 and enc.input_shape == (None,)


def test_default_max_length_is_the_95th_percentile_within_limits() -> None:
    assert default_max_length(np.arange(1, 101)) == 96
    assert default_max_length(np.array([1, 2, 3])) == 8
    assert default_max_length(np.array([5000] * 10)) == 512


def test_options_from_a_dict_and_bad_values() -> None:
    opts = text_options(DataOptions(extra={"text": {"tokenizer": "char", "max_length": None}}))
    assert opts.tokenizer == "char" and opts.min_freq == 2 and opts.max_length is None
    for bad in ({"tokenizer": "bpe"}, {"min_freq": 0}, {"max_vocab": 0}, {"max_length": 0}):
        with pytest.raises(UsageError):
            text_options(DataOptions(extra={"text": bad}))


def test_state_round_trip_is_plain_data() -> None:
    enc = preprocessor(["good", "bad"], max_length=5, tokenizer="char")
    state = json.loads(json.dumps(enc.to_state()))
    assert set(state) == {
        "kind", "text_column", "tokenizer", "lowercase", "max_length", "vocab", "idf", "target"
    }  # fmt: skip
    back = preprocessor_from_state(state)
    assert isinstance(back, TextPreprocessor)
    assert torch.equal(back.encode(["Good!"])[0], enc.encode(["Good!"])[0])
    with pytest.raises(InputError, match="tokenizer"):
        preprocessor_from_state({**state, "tokenizer": "bpe"})


# -- detection -------------------------------------------------------------------------------
def test_detection_claims_reviews_but_not_tables(tmp_path: Path) -> None:
    assert choose_source(str(REVIEWS / "train.csv"), DataOptions()) is TextSource
    assert not TextSource.claims(str(SAMPLES / "penguins" / "train.csv"), DataOptions())
    assert not TextSource.claims(str(tmp_path), DataOptions())  # a folder
    names = [f"Smith{i}, Mr. John Henry" for i in range(40)]  # names in a wide table stay a table
    table = pd.DataFrame({"name": names, "age": range(40), "fare": 1.5, "cls": 1, "y": [0, 1] * 20})
    table.to_csv(tmp_path / "t.csv", index=False)
    assert not TextSource.claims(str(tmp_path / "t.csv"), DataOptions())
    assert detect_text_column(table[["name", "y"]], None) == "name"


def test_text_column_option_overrides_detection(tmp_path: Path) -> None:
    rows = [
        (f"title {i} here", f"a much longer body of text number {i} here", "ab"[i % 2])
        for i in range(40)
    ]
    path = write_csv(tmp_path / "d.csv", rows, ("title", "body", "label"))
    assert detect_text_column(pd.read_csv(path), None) == "body"
    assert TextSource.prepare(path, DataOptions()).info["text_column"] == "body"
    opts = DataOptions(extra={"text": {"text_column": "title"}})
    assert TextSource.claims(str(SAMPLES / "penguins" / "train.csv"), opts)
    assert TextSource.prepare(path, opts).info["text_column"] == "title"
    with pytest.raises(InputError, match="no column 'nope'"):
        TextSource.prepare(path, DataOptions(extra={"text": {"text_column": "nope"}}))


# -- prepare ---------------------------------------------------------------------------------
def test_prepare_sample_split_vocab_and_bucketing(prepared: text.Prepared) -> None:
    enc, tr, va = prepared.preprocessor, prepared.x_train, prepared.x_val
    assert isinstance(tr, BucketedTokens) and tr.ids.dtype == torch.int64
    assert (tr.rows, va.rows) == (2400, 600)
    assert 8 <= enc.max_length <= 512 and tr.ids.shape[1] <= enc.max_length
    assert prepared.info["padding_waste"] < 0.25
    classes, counts = torch.unique(prepared.y_train, return_counts=True)
    assert classes.tolist() == [0, 1] and abs(counts[0] - counts[1]) < 200  # stratified


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    train = write_csv(
        tmp_path / "tr.csv", [(f"a good film, number {i}", "ab"[i % 2]) for i in range(20)]
    )
    val = write_csv(tmp_path / "va.csv", [("zebra zebra zebra", "a"), ("zebra", "b")])
    prep = TextSource.prepare(train, DataOptions(val=val, extra={"text": {"min_freq": 1}}))
    assert "zebra" not in prep.preprocessor.vocab and "good" in prep.preprocessor.vocab
    assert set(prep.x_val.ids[prep.x_val.ids != 0].tolist()) == {1}


def test_vocab_rows_all_fits_vocabulary_and_idf_on_validation_texts_too(tmp_path: Path) -> None:
    """The bow preset's `vocab_rows: all`: its refit trains on the validation rows as well, so their
    words get ids (texts only: the split and the labels are unchanged)."""
    rows = [(f"a good film, number {i}", "ab"[i % 2]) for i in range(20)]
    train = write_csv(tmp_path / "tr.csv", rows)
    val = write_csv(tmp_path / "va.csv", [("zebra zebra zebra", "a"), ("zebra", "b")])
    both = {"text": {"min_freq": 1, "vocab_rows": "all"}}
    prep = TextSource.prepare(train, DataOptions(val=val, extra=both))
    enc = prep.preprocessor
    assert "zebra" in enc.vocab and enc.idf[enc.vocab.index("zebra")] == pytest.approx(
        np.log(23 / 3) + 1, abs=1e-5
    )
    assert (prep.x_train.rows, prep.x_val.rows) == (20, 2)
    split = TextSource.prepare(train, DataOptions(extra=both, val_split=0.25))
    only = TextSource.prepare(train, DataOptions(extra={"text": {"min_freq": 1}}, val_split=0.25))
    assert len(split.preprocessor.vocab) == 2 + 5 + 20 > len(only.preprocessor.vocab)
    assert torch.equal(split.y_val, only.y_val)  # the same rows are held out
    with pytest.raises(UsageError, match="vocab_rows must be one of train, all, got 'some'"):
        TextSource.prepare(train, DataOptions(extra={"text": {"vocab_rows": "some"}}))


def test_empty_and_missing_texts_are_dropped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = [(f"some fine words here {i}", "ab"[i % 2]) for i in range(20)]
    rows += [("", "a"), (None, "b"), ("   ", "a"), ("NA", "b"), ("lonely text", None)]
    path = write_csv(tmp_path / "d.csv", rows)
    prep = TextSource.prepare(path, DataOptions(target="sentiment"))
    assert prep.info["rows"] == 20
    err = " ".join(capsys.readouterr().err.split())
    assert "dropped 4 rows with empty text" in err and "dropped 1 rows with no value" in err
    empty = write_csv(tmp_path / "e.csv", [("", "a"), (None, "b")])
    with pytest.raises(InputError, match="no row has both text"):
        TextSource.prepare(empty, DataOptions(extra={"text": {"text_column": "review"}}))


def test_regression_target(tmp_path: Path) -> None:
    rows = [(f"rated {i} of ten stars", i * 0.37) for i in range(30)]
    path = write_csv(tmp_path / "r.csv", rows, ("review", "stars"))
    prep = TextSource.prepare(path, DataOptions(extra={"text": {"text_column": "review"}}))
    assert prep.preprocessor.target.task == "regression" and prep.y_train.dtype == torch.float32


# -- batching by length ----------------------------------------------------------------------
@pytest.mark.parametrize(("n", "bs"), [(2400, 32), (161, 32), (33, 32), (5, 8), (1, 4)])
def test_bucketing_covers_every_row_once_per_epoch(n: int, bs: int) -> None:
    lengths = torch.randint(1, 40, (n,), generator=torch.Generator().manual_seed(n))
    ids = (torch.arange(40) < lengths[:, None]).long() * 5  # (n, 40) right-padded
    src = BucketedTokens(ids, lengths, torch.arange(n))
    src.batch_size = bs
    seen, steps = [], 0
    for xb, yb in src.shuffled(torch.Generator().manual_seed(0)):
        assert xb.shape[1] == int(lengths[yb].max())  # trimmed to its longest row
        assert len(yb) > 1 or n == 1  # no lone last row
        seen.extend(yb.tolist())
        steps += 1
    assert sorted(seen) == list(range(n)) and steps == len(src)
    ordered = torch.cat([yb for _, yb in src.in_order(batch=7)])
    assert ordered.tolist() == list(range(n))


def test_padding_waste_on_the_sample_is_small(prepared: text.Prepared) -> None:
    tr = prepared.x_train
    plain = 1.0 - float(tr.lengths.sum()) / (tr.rows * tr.ids.shape[1])  # no bucketing
    for bs in (32, 64, 128):
        tr.batch_size = bs
        assert tr.padding_waste() < 0.25
    tr.batch_size = None
    assert plain > 0.25  # what padding to the longest row would waste


# -- streaming new inputs --------------------------------------------------------------------
def test_iter_inputs_csv_and_stdin_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = preprocessor(["good", "film"])
    frames = list(enc.iter_inputs([str(REVIEWS / "rows.csv")], keep=True))
    assert sum(len(f) for f, _ in frames) == 200 and list(frames[0][0].columns) == ["review"]
    assert all(x.dtype == torch.int64 and len(x) == len(f) for f, x in frames)
    stdin_bytes(monkeypatch, b"Good film\n\nfilm, good\r\nlast")
    ((frame, x),) = list(enc.iter_inputs(["-"], keep=True))
    assert frame["text"].tolist() == ["Good film", "", "film, good", "last"]
    assert x.tolist() == [[2, 3, 0], [1, 0, 0], [3, 1, 2], [1, 0, 0]]
    stdin_bytes(monkeypatch, b"one\ntwo\n")
    ((frame, x),) = list(enc.iter_inputs("-", keep=False))
    assert frame.shape == (2, 0) and x.shape == (2, 1)


def test_iter_labelled_skips_rows_without_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [("good", "positive"), ("film", None), ("x", "negative")])
    ((frame, x),) = list(preprocessor(["good", "film"]).iter_labelled(path))
    assert frame["sentiment"].tolist() == ["positive", "negative"] and x.tolist() == [[2], [1]]
    with pytest.raises(InputError, match="no column 'review'"):
        list(
            preprocessor([]).iter_inputs([write_csv(tmp_path / "o.csv", [("a", "b")], ("t", "y"))])
        )


def test_non_utf8_stdin_line_is_an_error_naming_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin_bytes(monkeypatch, b"fine\nalso fine\nbad \xff\xfe bytes\n")
    with pytest.raises(InputError, match="line 3 holds bytes that are not UTF-8"):
        list(preprocessor([]).iter_inputs("-"))
    stdin_bytes(monkeypatch, b"")
    with pytest.raises(InputError, match="no text"):
        list(preprocessor([]).iter_inputs("-"))


def test_an_enormous_line_costs_little(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    enc = preprocessor(["good"], max_length=16)
    stdin_bytes(monkeypatch, b"good " * 4_000_000 + b"\nnext\n")  # one 20 MB line
    start = time.perf_counter()
    ((_, x),) = list(enc.iter_inputs("-"))
    assert time.perf_counter() - start < 2.0
    assert x.shape == (2, 16) and x[0].tolist() == [2] * 16
    path = write_csv(tmp_path / "big.csv", [("word " * 1_000_000, "a"), ("good", "b")])
    assert [x.shape for _, x in enc.iter_inputs([path])] == [(2, 16)]
    assert enc.tokens("x" * 10_000_000, 4) == ["x" * (4 * text.CHARS_PER_WORD)]


# -- the bag of n-grams (fastText style) ---------------------------------------------------------
def bag_network(
    dim: int = 4, ngrams: int = 2, buckets: int = 13, vocab: int = 20
) -> torch.nn.Module:
    from dlcli.model.builder import build_network
    from dlcli.spec.schema import parse_spec

    layer = {"bag": {"dim": dim, "ngrams": ngrams, "buckets": buckets}}
    spec = parse_spec({"layers": [layer], "head": "none"}, "t.yaml")
    info = {"vocab_size": vocab}
    return build_network(spec, (None,), None, input_dtype=torch.long, data_info=info).module.eval()


def test_ngram_rows_follow_the_documented_hash() -> None:
    from dlcli.spec.layers.bag import MULTIPLIER, PRIME, ngram_rows

    ids = torch.tensor([[5, 7, 9]])
    assert PRIME == 2**31 - 1 and MULTIPLIER == 1_000_003
    want = [(5 * 1_000_003 + 7) % PRIME % 1000, (7 * 1_000_003 + 9) % PRIME % 1000]
    assert ngram_rows(ids, 2, 1000)[0, :2].tolist() == want == [22, 30]
    h = ((5 * 1_000_003 + 7) % PRIME * 1_000_003 + 9) % PRIME
    assert ngram_rows(ids, 3, 1000)[0, 0].item() == h % 1000
    big = torch.tensor([[2**31 - 2, 2**31 - 3]])  # the largest ids: no int64 overflow
    assert ngram_rows(big, 2, 7)[0, 0].item() == ((2**31 - 2) * 1_000_003 + 2**31 - 3) % PRIME % 7


def test_bag_is_the_mean_of_word_and_bigram_vectors() -> None:
    from dlcli.spec.layers.bag import ngram_rows

    torch.manual_seed(0)
    net = bag_network()
    bag = net[0]
    row = torch.tensor([[3, 4, 5]])
    grams = ngram_rows(row, 2, 13)[0, :2]
    vectors = torch.cat(
        [bag.words.weight[[3, 4, 5]], bag.grams.weight[grams]]
    )  # 3 words, 2 bigrams
    with torch.no_grad():
        assert torch.allclose(net(row)[0], vectors.mean(0), atol=1e-6)
        unigram = bag_network(ngrams=1)
        assert unigram[0].grams is None
        assert torch.allclose(
            unigram(row)[0], unigram[0].words.weight[[3, 4, 5]].mean(0), atol=1e-6
        )


def test_bag_gives_a_padded_row_what_the_row_alone_gives() -> None:
    torch.manual_seed(0)
    net = bag_network(ngrams=3)
    batch = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0], [1, 0, 0, 0, 0]])
    with torch.no_grad():
        out = net(batch)
        for i, n in enumerate([5, 2, 1]):
            assert torch.allclose(out[i], net(batch[i : i + 1, :n])[0], atol=1e-6)


def test_bag_needs_token_ids() -> None:
    from dlcli.errors import SpecError
    from dlcli.model.builder import build_network
    from dlcli.spec.schema import parse_spec

    spec = parse_spec({"layers": [{"bag": 8}], "head": "none"}, "t.yaml")
    with pytest.raises(SpecError, match="bag needs token ids"):
        build_network(spec, (10, 3), None)
    with pytest.raises(SpecError, match="embedding needs token ids"):
        build_network(spec, (10,), None)


def test_bow_preset_is_for_text() -> None:
    from dlcli.model.builder import build_network
    from dlcli.spec.schema import load_preset

    spec, _ = load_preset("bow")
    assert spec.data == ["text"]
    net = build_network(spec, (None,), 3, input_dtype=torch.long, data_info={"vocab_size": 50})
    assert net.output_shape == (3,)


@pytest.mark.slow
def test_bag_with_ngrams_exports_to_onnx_for_any_batch_and_length() -> None:
    """The n-gram hash runs inside the graph: onnxruntime gives PyTorch's output."""
    torch.manual_seed(0)
    net = bag_network(dim=8, ngrams=3, buckets=101, vocab=50)
    example = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 0, 0, 0, 0]])
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(1, 50, (4, 11), generator=g), torch.tensor([[7]])]
    batches[0][1, 3:] = 0
    assert_onnx_matches(net, example, batches, 1e-6)


def test_text_defaults_to_the_bow_preset() -> None:
    from dlcli.spec.schema import load_preset

    assert TextSource.default_arch == "bow"
    assert load_preset(TextSource.default_arch)[0].data == ["text"]
