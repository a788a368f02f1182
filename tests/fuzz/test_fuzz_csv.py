"""Property-based fuzzing of what `dl train` runs on a table before the network (issue 11): the CSV
reader, column typing, text detection, the split and the fitted encoding, then the same file
through the prediction reader, on generated files: random shapes (wide and long), cells (numbers,
NaN/inf, huge numbers, text, empty, quotes, line breaks, unicode), encodings (utf-8, utf-8-sig,
latin-1, invalid bytes), delimiters, ragged rows, duplicate or empty names, header-only and empty
files.

Property: a DLError (one line for the user) or a valid result (finite float inputs of the model's
shape, targets in range), never another exception, never a Python warning, in bounded time.
`HYPOTHESIS_PROFILE=long` runs 10,000 cases (figures in docs/data-kinds.md).
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
import warnings

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from dlcli.data.sources import DataOptions, choose_source
from dlcli.data.tabular_source import TabularSource
from dlcli.errors import DLError

SECONDS_PER_CASE = 20  # a hang fails the property (typical cases take milliseconds)
DELIMITERS = [","] * 9 + [";", "\t", "|"]  # dl reads ',': others are one column or ragged
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1"]

numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["inf", "-inf", "Infinity", "nan", "NaN", "1e308", "-1e308", "1e39", "0x10"]),
    st.sampled_from(["1.5", "-0.0", ".5", "1e-400", "+1", " 7 ", "00012", "1_000", "3.4e38"]),
)
words = st.one_of(
    st.sampled_from(["a", "b", "red", "blue", "true", "False", "NA", "null", "", " ", "None"]),
    st.text(max_size=12),  # any unicode: quotes, commas, line breaks, NUL, surrogates excluded
    st.sampled_from(['"', '""', 'a"b', "x,y", "line\nbreak", "cr\rlf", "é", "日本", "🙂", "\x00"]),
)
cells = st.one_of(numbers, words, st.just(""))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """The bytes of a CSV file, well formed or not."""
    shape = draw(st.sampled_from(["small"] * 6 + ["long"] * 2 + ["wide", "empty", "header"]))
    if shape == "empty":
        return draw(st.sampled_from([b"", b"\n", b"\r\n\r\n", b"\xef\xbb\xbf", b" "]))
    width = draw(st.integers(1, 1100 if shape == "wide" else 10))
    width = max(width, 2) if shape == "small" else width
    rows = {"small": (1, 40), "long": (40, 400), "wide": (1, 4), "header": (0, 0)}[shape]
    n = draw(st.integers(*rows))
    # Cells (and names) come from a few drawn values, placed by a drawn seed: a draw per cell made
    # Hypothesis record millions of choices (2.5 GB resident after 10,000 cases; dl's own share
    # was a few MB), and generating took most of the time.
    pools = {
        "num": draw(st.lists(numbers, min_size=1, max_size=6)),
        "word": draw(st.lists(words, min_size=1, max_size=6)),
        "any": draw(st.lists(cells, min_size=1, max_size=6)),
        "label": ["0", "1"],
    }
    odd_names = draw(st.lists(st.text(max_size=6), max_size=2))  # empty, duplicate, unicode
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    names = [f"c{j}" for j in range(width)]
    for name in odd_names:
        names[rng.randrange(width)] = name
    kinds = [rng.choice(["num", "num", "word", "any", "label"]) for _ in range(width)]
    if rng.random() < 0.75:  # mostly a usable label last (the default target): deeper paths
        kinds[-1] = "label"
    table = [[rng.choice(pools[k]) for k in kinds] for _ in range(n)]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3])) if n else 0):  # ragged rows
        row = table[rng.randrange(n)]
        if row and rng.random() < 0.5:
            del row[rng.randrange(len(row)) :]
        else:
            row.append("extra")
    out = io.StringIO()
    delimiter = draw(st.sampled_from(DELIMITERS))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(table)
    text = out.getvalue() + draw(st.sampled_from(["", "", "\n", "\n\n"]))
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if draw(st.integers(0, 10)) == 0:  # bytes that are not UTF-8
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at] + draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\x80\x80"])) + data[at:]
        )
    return data


def check_inputs(preprocessor, x: torch.Tensor) -> None:
    """Raw rows -> model inputs: finite float32 of the model's input shape."""
    encoded = preprocessor.preprocess_module()(x)
    assert encoded.dtype == torch.float32
    assert tuple(encoded.shape) == (len(x), *preprocessor.input_shape)
    assert torch.isfinite(encoded).all()


def check_targets(target, y: torch.Tensor) -> None:
    if target.task == "classification":
        assert y.dtype == torch.int64
        assert len(y) == 0 or (int(y.min()) >= 0 and int(y.max()) < len(target.classes))
    else:
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        assert math.isfinite(target.mean) and math.isfinite(target.std) and target.std > 0


def train_and_predict(path: str) -> None:
    """What `dl train` runs before the network, then the file through the prediction reader."""
    opts = DataOptions()
    choose_source(path, opts)  # text detection on a sample of the file
    prepared = TabularSource.prepare(path, opts)
    pre = prepared.preprocessor
    assert len(prepared.x_train) > 0 and len(prepared.x_train) == len(prepared.y_train)
    check_inputs(pre, prepared.x_train)
    check_inputs(pre, prepared.x_val)
    check_targets(pre.target, prepared.y_train)
    check_targets(pre.target, prepared.y_val)
    for _, raw in pre.iter_inputs([path]):
        check_inputs(pre, raw)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz") / "table.csv"


@given(data=csv_files())
@example(data=b"a,b\rc,y\n1,2,3\n")  # found: a bare CR in the header was an internal error
@example(data=b"x\ny,x\ny,z\n1,2,3\n")  # found: a message quoting a name held a line break
@example(data=b"a,b,y\n" + b"1,inf,0\n2,1e308,1\n" * 10)  # issue 11: inf / 1e308 features
def test_tables_give_a_dl_error_or_valid_tensors(csv_path, data: bytes) -> None:
    csv_path.write_bytes(data)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a library warning would leak onto the user's stderr
        try:
            train_and_predict(str(csv_path))
        except DLError as exc:
            assert str(exc) and "\n" not in str(exc).strip(), str(exc)
    assert time.perf_counter() - start < SECONDS_PER_CASE
