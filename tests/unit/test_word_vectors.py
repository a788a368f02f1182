"""Pretrained word vectors: the streaming reader (GloVe, word2vec text, fastText .vec, gzip), its
line parser (property tests), the one-line errors for bad files, and the embedding layer they
initialise (dlcli/data/word_vectors.py, dlcli/model/embeddings.py)."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dlcli.data.word_vectors import (
    MAX_LINE_BYTES,
    coverage,
    parse_line,
    read_vectors,
    split_entry,
    vector_dim,
)
from dlcli.errors import InputError, SpecError, UsageError
from dlcli.model import embeddings
from dlcli.model.builder import build_network
from dlcli.spec.schema import load_preset, parse_spec

VOCAB = ["<pad>", "<unk>", "the", "film", "paris", "good"]
TEXT = {"input_dtype": torch.long, "data_info": {"vocab_size": len(VOCAB), "padding_idx": 0}}
VECTORS = {
    "the": [0.1, 0.2, 0.3],
    "film": [1.0, -1.0, 0.5],
    "Paris": [2.0, 2.0, 2.0],
    "unused": [9.0, 9.0, 9.0],
}


def lines_of(vectors: dict[str, list[float]]) -> list[str]:
    return [f"{w} {' '.join(repr(v) for v in vec)}" for w, vec in vectors.items()]


def write(path: Path, lines: list[str], ending: str = "\n", gz: bool = False) -> Path:
    data = ending.join(lines).encode("utf-8") + ending.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# -- formats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "header", "ending", "gz"),
    [
        ("glove.txt", None, "\n", False),  # GloVe: no header
        ("word2vec.txt", "4 3", "\n", False),  # word2vec text: `count dim` first
        ("wiki.vec", "4 3 ", "\r\n", False),  # fastText .vec: header, CRLF, trailing spaces
        ("glove.txt.gz", None, "\n", True),
        ("wiki.vec.gz", "4 3", "\n", True),
    ],
)
def test_every_format_reads_the_vocabulary_words(tmp_path, name, header, ending, gz):
    lines = lines_of(VECTORS)
    if name.startswith("wiki"):
        lines = [ln + " " for ln in lines]
    path = write(tmp_path / name, ([header] if header else []) + lines, ending, gz)
    assert vector_dim(path) == 3
    got = read_vectors(path, VOCAB)
    assert got.dim == 3 and got.lines == 4 and sorted(got.rows) == [2, 3, 4]
    np.testing.assert_array_equal(got.rows[2], np.float32(VECTORS["the"]))
    np.testing.assert_array_equal(got.rows[4], np.float32(VECTORS["Paris"]))
    assert (got.exact, got.folded) == (2, 1)  # `Paris` matched `paris` in lower case


def test_exact_spelling_wins_over_lower_case_wherever_it_comes(tmp_path):
    path = write(tmp_path / "v.txt", ["Film 1 1", "FILM 2 2", "film 3 3", "Good 4 4", "GOOD 5 5"])
    got = read_vectors(path, ["<pad>", "<unk>", "film", "good"])
    assert got.rows[2].tolist() == [3, 3]  # exact, though two cased forms came first
    assert got.rows[3].tolist() == [4, 4]  # the first lower-case match
    assert (got.exact, got.folded) == (1, 1)


def test_first_exact_entry_wins_and_a_bom_is_skipped(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes("\ufeffthe 1 2\nthe 3 4\n".encode())
    assert read_vectors(path, VOCAB).rows[2].tolist() == [1, 2]


def test_words_with_spaces_are_skipped_and_blank_lines_ignored(tmp_path):
    path = write(
        tmp_path / "v.txt", ["the 1 2", "", ". . . 3 4", "at name@domain.com 5 6", "film 7 8"]
    )
    got = read_vectors(path, VOCAB)
    assert sorted(got.rows) == [2, 3] and got.skipped == 2 and got.lines == 4


def test_runs_of_whitespace_and_tabs_are_separators(tmp_path):
    path = write(tmp_path / "v.txt", ["the  1 2", "film\t3\t4"])
    got = read_vectors(path, VOCAB)
    assert got.rows[2].tolist() == [1, 2] and got.rows[3].tolist() == [3, 4]


def test_only_the_vocabulary_is_kept_from_a_long_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"w{i} " + " ".join(f"{v:.4f}" for v in rng.normal(size=8)) for i in range(20_000)]
    path = write(tmp_path / "big.txt", lines)
    got = read_vectors(path, ["<pad>", "<unk>", "w7", "w19999", "nope"])
    assert got.lines == 20_000 and sorted(got.rows) == [2, 3]
    assert got.rows[3].tolist() == pytest.approx([float(x) for x in lines[-1].split()[1:]])


def test_coverage_counts_vocabulary_words_and_training_tokens():
    counts = np.array([0, 10, 50, 30, 10])  # id 0 padding, 1 unknown
    share, tokens = coverage({2, 4}, counts, vocab_words=3)
    assert share == pytest.approx(2 / 3) and tokens == pytest.approx(60 / 100)


# -- the line parser: properties --------------------------------------------------------------------
WORDS = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=20
).filter(lambda w: w.split() == [w])
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(
    word=WORDS,
    values=st.lists(FLOATS, min_size=1, max_size=12),
    trailing=st.sampled_from(["", " ", "\r"]),
)
def test_a_written_line_parses_back_to_the_same_word_and_vector(word, values, trailing):
    line = word + " " + " ".join(repr(v) for v in values) + trailing
    got = parse_line(line, len(values))
    assert got is not None
    assert got[0] == word
    np.testing.assert_array_equal(got[1], np.array(values, dtype=np.float32))


@given(
    word=WORDS, values=st.lists(FLOATS, min_size=1, max_size=12), delta=st.sampled_from([-1, 1, 3])
)
def test_a_line_with_another_count_names_the_line_and_both_counts(word, values, delta):
    dim = len(values) + delta
    if dim < 1:
        return
    line = word + " " + " ".join(repr(v) for v in values)
    with pytest.raises(InputError) as err:
        parse_line(line, dim, "v.txt: line 7")
    assert str(err.value).startswith("v.txt: line 7: ")
    assert f"{len(values)} number" in str(err.value) and f"expected {dim}" in str(err.value)


@given(line=st.text(max_size=80), dim=st.integers(1, 6))
def test_any_text_parses_or_is_one_input_error_naming_the_line(line, dim):
    try:
        got = parse_line(line, dim, "f: line 3")
    except InputError as exc:
        assert str(exc).startswith("f: line 3") and "\n" not in str(exc)
    else:
        assert got is None or (got[1].shape == (dim,) and np.isfinite(got[1]).all())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("the 1 2 x", "'x' is not a number"),
        ("the 1 nan 3", "'nan' is not a finite float32 number"),
        ("the 1 inf 3", "'inf' is not a finite float32 number"),
        ("the 1 1e39 3", "'1e39' is not a finite float32 number"),
        ("the 1 2", "2 numbers after the word 'the', expected 3"),
        ("the 1 2 3 4", "4 numbers after the word 'the', expected 3"),
        ("the", "0 numbers after the word 'the', expected 3"),
    ],
)
def test_bad_lines_say_what_is_wrong(line, message):
    with pytest.raises(InputError, match="^v: line 2: " + message.replace("(", r"\(")):
        parse_line(line, 3, "v: line 2")


def test_split_entry_leaves_the_numbers_unparsed():
    assert split_entry("the 1 x 3", 3, "w") == ("the", "1 x 3")  # parsed only for kept words


# -- bad files: one line naming the file and line ------------------------------------------------
def bad(path: Path) -> str:
    with pytest.raises((InputError, UsageError)) as err:
        read_vectors(path, VOCAB)
    return str(err.value)


def test_a_dimension_change_names_the_line_and_where_the_dimension_came_from(tmp_path):
    path = write(tmp_path / "v.txt", ["the 1 2 3", "film 1 2 3", "good 1 2"])
    assert (
        bad(path) == f"{path}: line 3: 2 numbers after the word 'good', expected 3 (as on line 1)"
    )
    path = write(tmp_path / "w.vec", ["2 3", "the 1 2 3", "film 1 2 3 4"])
    assert (
        bad(path)
        == f"{path}: line 3: 4 numbers after the word 'film', expected 3 (as the header says)"
    )


def test_a_non_number_in_a_kept_word_names_the_line(tmp_path):
    path = write(tmp_path / "v.txt", ["the 1 2", "unused 1 x", "film 1 y"])
    assert bad(path) == f"{path}: line 3: 'y' is not a number"  # line 2's word is not kept


def test_binary_and_overlong_lines_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"2 3\nthe \x80\x81\xfe\xff\x00\x01\n")
    assert bad(path).startswith(f"{path}: line 2 is not UTF-8 text (word2vec's binary .bin")
    path = tmp_path / "long.txt"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 10))
    assert bad(path).startswith(f"{path}: line 1 is longer than 1 MB: not a word-vector text file")


def test_empty_missing_folder_zip_and_header_only_files(tmp_path):
    assert bad(tmp_path / "none.txt") == f"--embeddings {tmp_path / 'none.txt'}: no such file"
    assert "is a folder" in bad(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    assert bad(tmp_path / "empty.txt") == f"{tmp_path / 'empty.txt'}: the file is empty"
    assert (
        bad(write(tmp_path / "h.vec", ["10 3"])) == f"{tmp_path / 'h.vec'}: no word vectors in it"
    )
    with zipfile.ZipFile(tmp_path / "glove.6B.zip", "w") as zf:
        zf.writestr("glove.6B.50d.txt", "the 1 2\n")
        zf.writestr("glove.6B.100d.txt", "the 1 2\n")
    assert bad(tmp_path / "glove.6B.zip") == (
        f"{tmp_path / 'glove.6B.zip'}: a zip archive holding glove.6B.50d.txt, glove.6B.100d.txt "
        "(unzip it and give one text file)"
    )


def test_damaged_gzip_names_the_last_good_line(tmp_path):
    data = gzip.compress(("\n".join(lines_of(VECTORS) * 200) + "\n").encode())
    path = tmp_path / "v.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    assert "damaged gzip data after line" in bad(path)


# -- the embedding layer --------------------------------------------------------------------------
def preset_doc(name: str) -> dict:
    return load_preset(name)[1]


def test_a_preset_takes_the_vectors_width_and_the_name_embeddings(tmp_path, capsys):
    path = write(tmp_path / "v.txt", lines_of(VECTORS))
    spec, doc = embeddings.fit_spec(preset_doc("lstm"), str(path), "preset lstm", fixed=False)
    assert doc["layers"][0] == {"input_embedding": 3, "name": "embeddings"}
    assert doc["layers"][1:] == preset_doc("lstm")["layers"][1:]
    assert "preset lstm layers[0] (input_embedding) is 3 wide" in capsys.readouterr().err
    net = build_network(spec, (None,), 2, **TEXT).module
    name, table = embeddings.embedding_table(net, doc, len(VOCAB))
    assert name == "embeddings.weight" and table.weight.shape == (len(VOCAB), 3)


@pytest.mark.parametrize("arch", ["rnn", "gru", "lstm", "transformer"])
def test_every_sequence_preset_builds_on_vectors_of_any_width(arch, tmp_path, capsys):
    """Issue 14 names rnn/lstm/gru/transformer: 6-wide vectors (GloVe-twitter's 25 alike) build
    each preset; the transformer preset's 4 heads do not divide 6, so it takes 3 with a note
    (before: `heads 4 must divide the feature size 6`, and no flag to change a preset's heads)."""
    six = {w: [0.5, -0.5, 0.25, 1.0, 0.0, 2.0] for w in VOCAB[2:]}
    path = write(tmp_path / "v6.txt", lines_of(six))
    spec, doc = embeddings.fit_spec(preset_doc(arch), str(path), f"preset {arch}", fixed=False)
    net = build_network(spec, (None,), 2, **TEXT).module
    name, table = embeddings.embedding_table(net, doc, len(VOCAB))
    assert name == "embeddings.weight" and table.weight.shape == (len(VOCAB), 6)
    assert net(torch.tensor([[2, 3, 4, 0]])).shape == (1, 2)
    assert parse_spec(doc, "saved").layers == spec.layers  # the model file's spec rebuilds it
    err = capsys.readouterr().err
    if arch == "transformer":
        assert doc["layers"][2]["heads"] == 3
        assert (
            "--embeddings: preset transformer layers[2] (transformer) has 3 heads, a divisor of "
            "the vectors' dimension 6 (was 4)" in " ".join(err.split())
        )
        user = {"layers": [{"embedding": 6}, {"transformer": 4}, "mean_pool"]}
        spec, _ = embeddings.fit_spec(user, str(path), "my.yaml", fixed=True)  # a user's own spec
        with pytest.raises(SpecError, match="heads 4 must divide the feature size 6"):
            build_network(spec, (None,), 2, **TEXT)
    else:
        assert "heads" not in err


def test_a_user_spec_of_another_width_is_refused_and_its_own_name_kept(tmp_path):
    path = write(tmp_path / "v.txt", lines_of(VECTORS))
    doc = {"layers": [{"embedding": 8, "name": "emb"}, "global_avgpool1d"]}
    with pytest.raises(
        UsageError,
        match=r"the vectors have 3 dimensions but my.yaml layers\[0\] \(embedding\) has dim 8 \(set its dim to 3\)",
    ):
        embeddings.fit_spec(doc, str(path), "my.yaml", fixed=True)
    doc["layers"][0]["embedding"] = 3
    _, got = embeddings.fit_spec(doc, str(path), "my.yaml", fixed=True)
    assert got["layers"][0] == {"embedding": 3, "name": "emb"}
    with pytest.raises(UsageError, match="has no layer that embeds token ids"):
        embeddings.fit_spec({"layers": [{"dense": 4}]}, str(path), "t.yaml", fixed=True)


def test_bag_takes_vectors_in_its_word_table(tmp_path):
    path = write(tmp_path / "v.txt", lines_of(VECTORS))
    spec, doc = embeddings.fit_spec(preset_doc("bow"), str(path), "preset bow", fixed=False)
    net = build_network(spec, (None,), 2, **TEXT).module
    name, _ = embeddings.embedding_table(net, doc, len(VOCAB))
    assert name == "embeddings.words.weight"


def test_initialise_copies_known_rows_zeroes_padding_and_scales_the_rest():
    rng = np.random.default_rng(0)
    rows = {i: (rng.normal(size=16) * 3 + 5).astype(np.float32) for i in range(2, 400)}
    table = torch.nn.Embedding(2000, 16, padding_idx=0)
    embeddings.initialise(table, rows, torch.Generator().manual_seed(0))
    w = table.weight.detach()
    assert torch.equal(w[0], torch.zeros(16))
    assert all(torch.equal(w[i], torch.from_numpy(v)) for i, v in rows.items())
    unknown = w[400:]
    assert unknown.mean().item() == pytest.approx(5, abs=0.3)  # like the known ones, not N(0, 1)
    assert unknown.std().item() == pytest.approx(3, abs=0.3)


def test_spec_document_round_trips_through_the_schema(tmp_path):
    path = write(tmp_path / "v.txt", lines_of(VECTORS))
    doc = {"layers": [{"type": "input_embedding", "dim": 3, "init": "normal"}, "attention_pool"]}
    spec, got = embeddings.fit_spec(doc, str(path), "s.yaml", fixed=True)
    assert got["layers"][0] == {"input_embedding": 3, "init": "normal", "name": "embeddings"}
    assert parse_spec(got, "s").layers == spec.layers
