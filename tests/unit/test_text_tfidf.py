"""TF-IDF in the bag of words: the idf the text encoder fits (text_tokens.py) and the `bag`
layer's `weighting: tfidf` (spec/layers/bag.py), checked against scikit-learn's TfidfVectorizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_onnx_matches

from dlcli.data.sources import DataOptions
from dlcli.data.text import TextPreprocessor, TextSource
from dlcli.data.text_tokens import inverse_document_frequency
from dlcli.model.builder import build_network
from dlcli.spec.schema import parse_spec

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "sample_data"
# id lists without a repeated id in a text (TF-IDF's norm then equals the bag's)
DOCS = [[2, 3, 4], [2, 5], [3, 6, 7, 2], [8], [4, 5, 6]]
VOCAB = 9


def tfidf_bag(dim: int, ngrams: int = 1, idf: list[float] | None = None) -> torch.nn.Module:
    layer = {"bag": {"dim": dim, "ngrams": ngrams, "buckets": 31, "weighting": "tfidf"}}
    spec = parse_spec({"layers": [layer], "head": "none"}, "t.yaml")
    info = {"vocab_size": VOCAB, "idf": idf or inverse_document_frequency(DOCS, VOCAB)}
    built = build_network(spec, (None,), None, input_dtype=torch.long, data_info=info)
    return built.module.eval()


def padded(docs: list[list[int]]) -> torch.Tensor:
    width = max(len(d) for d in docs)
    return torch.tensor([d + [0] * (width - len(d)) for d in docs])


def sklearn_tfidf(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(idf per id 0..VOCAB-1, L2-normalised TF-IDF rows) from scikit-learn, ids as words."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=lambda d: [str(i) for i in d], norm="l2", smooth_idf=True)
    x = vec.fit_transform(docs).toarray()
    cols = [vec.vocabulary_[str(i)] for i in range(2, VOCAB)]
    idf, rows = np.zeros(VOCAB), np.zeros((len(docs), VOCAB))
    idf[2:], rows[:, 2:] = vec.idf_[cols], x[:, cols]
    return idf, rows


def test_idf_is_scikit_learns_smoothed_idf() -> None:
    idf, _ = sklearn_tfidf(DOCS)
    got = np.array(inverse_document_frequency(DOCS, VOCAB))
    assert got[0] == 0.0 and np.abs(got[2:] - idf[2:]).max() < 1e-5
    assert got[1] == 0.0  # never seen (every word is known): dropped, as scikit-learn drops it


def test_tfidf_bag_with_identity_embeddings_is_the_tfidf_vector() -> None:
    """Embedding = identity: the bag's output is scikit-learn's L2-normalised TF-IDF row, so a
    linear output on it is logistic regression on TF-IDF features."""
    net = tfidf_bag(VOCAB)
    with torch.no_grad():
        net[0].words.weight.copy_(torch.eye(VOCAB))
        got = net(padded(DOCS)).numpy()
    assert np.abs(got - sklearn_tfidf(DOCS)[1]).max() < 1e-5


def test_tfidf_bag_weights_an_ngram_by_its_rarest_word_and_ignores_padding() -> None:
    from dlcli.spec.layers.bag import ngram_rows

    torch.manual_seed(0)
    idf = inverse_document_frequency(DOCS, VOCAB)
    net = tfidf_bag(4, ngrams=2)
    bag, row = net[0], torch.tensor([[3, 8, 5]])
    grams = ngram_rows(row, 2, 31)[0, :2]
    w = torch.tensor([idf[3], idf[8], idf[5], max(idf[3], idf[8]), max(idf[8], idf[5])])
    vectors = torch.cat([bag.words.weight[[3, 8, 5]], bag.grams.weight[grams]])
    with torch.no_grad():
        want = (vectors * w[:, None]).sum(0) / w.pow(2).sum().sqrt()
        assert torch.allclose(net(row)[0], want, atol=1e-6)
        batch = torch.tensor([[3, 8, 5, 0, 0], [7, 0, 0, 0, 0]])
        out = net(batch)
        assert torch.allclose(out[0], want, atol=1e-6)
        assert torch.allclose(out[1], net(batch[1:, :1])[0], atol=1e-6)


def test_the_encoder_fits_idf_on_the_training_split_and_keeps_it() -> None:
    prep = TextSource.prepare(
        str(SAMPLES / "reviews" / "train.csv"), DataOptions(target="sentiment")
    )
    enc = prep.preprocessor
    assert len(enc.idf) == len(enc.vocab) and enc.idf[0] == 0.0
    assert min(enc.idf[2:]) >= 1.0 and enc.idf[2] < enc.idf[-1]  # frequent words weigh less
    assert enc.data_info["idf"] == enc.idf
    state = enc.to_state()
    assert TextPreprocessor.from_state(state).idf == enc.idf
    older = {k: v for k, v in state.items() if k != "idf"}  # a model file from before idf
    assert TextPreprocessor.from_state(older).idf is None
    assert "idf" not in TextPreprocessor.from_state(older).data_info


def test_a_tfidf_bag_builds_without_data_and_refuses_a_wrong_idf() -> None:
    from dlcli.errors import SpecError

    spec = parse_spec({"layers": [{"bag": 4, "weighting": "tfidf"}], "head": "none"}, "t.yaml")
    net = build_network(spec, (None,), None, input_dtype=torch.long, data_info={"vocab_size": 7})
    assert net.module[0].idf.tolist() == [0.0] + [1.0] * 6  # dl build: ones until data
    with pytest.raises(SpecError, match="weighting tfidf needs the text data's idf for all 7 ids"):
        build_network(
            spec, (None,), None, input_dtype=torch.long, data_info={"vocab_size": 7, "idf": [1.0]}
        )


@pytest.mark.slow
def test_tfidf_bag_exports_to_onnx_for_any_batch_and_length() -> None:
    torch.manual_seed(0)
    net = tfidf_bag(8, ngrams=3)
    example = torch.tensor([[3, 4, 5, 6, 7, 8], [2, 5, 0, 0, 0, 0]])
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(1, VOCAB, (4, 11), generator=g), torch.tensor([[7]])]
    batches[0][1, 3:] = 0
    assert_onnx_matches(net, example, batches, 1e-5)


# -- a preset's data_options (bow: min_freq 1, vocab_rows all) --------------------------------------------------
def test_data_options_fill_only_the_options_no_flag_set() -> None:
    from dlcli.engine.data_options import spec_defaults as data_defaults
    from dlcli.spec.schema import load_preset

    spec, _ = load_preset("bow")
    preset = {"min_freq": 1, "vocab_rows": "all", "bigrams": True, "max_length": 512}
    assert spec.data_options == {"text": preset}
    opts = DataOptions(target="sentiment")
    data_defaults(spec, "text", opts, "preset bow")
    assert opts.extra["text"] == preset
    flagged = DataOptions(target="sentiment", extra={"text": {"min_freq": 3}})
    data_defaults(spec, "text", flagged, "preset bow")
    assert flagged.extra["text"] == {**preset, "min_freq": 3}
    other = DataOptions(target="label")
    data_defaults(spec, "table", other, "preset bow")  # nothing for another kind
    assert other.extra == {}


def test_bow_preset_trains_by_sgd_at_a_constant_rate() -> None:
    """Adam lets a rare word's row fit its few texts within 2-3 epochs, so early stopping came
    before the frequent words were learnt (critics 0.726 against SGD's 0.735, reviews_1000 0.701
    against 0.716; docs/text.md): the preset keeps SGD, constant, with room for slow small sets."""
    from dlcli.spec.schema import load_preset

    spec, _ = load_preset("bow")
    t = spec.training
    assert (t.optimizer, t.schedule, t.lr, t.momentum) == ("sgd", "constant", 0.1, 0.9)
    assert t.epochs >= 100 and t.refit


def test_a_data_option_the_kind_lacks_is_one_spec_error(dl_inproc, tmp_path) -> None:
    from conftest import assert_error

    spec = tmp_path / "s.yaml"
    spec.write_text("layers: [{bag: 8}]\ndata_options: {text: {min_frequency: 1}}\n")
    res = dl_inproc(
        "train", SAMPLES / "reviews" / "train.csv", "--spec", spec, "-o", tmp_path / "m.pt"
    )
    assert_error(res, "data_options.text.min_frequency", "text data has no option 'min_frequency'")
