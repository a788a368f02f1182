"""Wide tables (issue 11, class 2): column typing, text detection and the wide CSV reader are
vectorised, and each gives the result of the column-by-column code it replaced (kept below as the
reference) or of pyarrow's own reader, on generated tables."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcli.data import readers
from dlcli.data.columns import ID_NAME, plan_columns
from dlcli.data.readers import csv as csv_reader
from dlcli.data.text_read import LONG_WORDS, MAX_OTHER_COLUMNS, MIN_WORDS, detect_text_column
from dlcli.errors import InputError


# -- the column-by-column code of main before issue 11: the reference ----------------------------
def _reference_is_id_like(s: pd.Series, n: int) -> bool:
    if n < 20 or pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    if pd.api.types.is_integer_dtype(s):
        if bool(np.all(np.diff(s.to_numpy()) == 1)):
            return True
        if not ID_NAME.match(str(s.name)):
            return False
    elif not ID_NAME.match(str(s.name)):
        return False
    return s.nunique(dropna=False) == n


def reference_plan(frame: pd.DataFrame, target: str) -> tuple[list, list, list]:
    numeric, categorical, ignored = [], [], []
    n = len(frame)
    for name in frame.columns:
        if name == target:
            continue
        s = frame[name]
        numeric_col = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        non_null = s if numeric_col else s.dropna()
        if numeric_col:
            single = bool(non_null.min() == non_null.max())
        else:
            single = non_null.nunique() == 1
        if s.isna().all() if numeric_col else non_null.empty:
            ignored.append((name, "empty"))
        elif _reference_is_id_like(s, n):
            ignored.append((name, "id"))
        elif single:
            ignored.append((name, "single"))
        elif pd.api.types.is_bool_dtype(s):
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(s):
            numeric.append(name)
        elif n >= 50 and non_null.nunique() > 0.5 * len(non_null):
            ignored.append((name, "text"))
        else:
            categorical.append(name)
    return numeric, categorical, ignored


def reference_detect(frame: pd.DataFrame | None, target: str | None) -> str | None:
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


# -- generated tables ---------------------------------------------------------------------------
NUMBERS = ["0", "1", "-1", "7", "42", " 5", "+1", "1.5", "-0.25", ".5", "1e3", "2.5E-2", "inf"]
WORDS = ["a", "b", "red", "x y", "a b c d e", "true", "False", "TRUE", "NA", "", "null", "2 3"]
TEXT = ["the quick brown fox", "jumps over the lazy dog", "a b c d e f g h i", "one two three four"]
COLUMN_KINDS = {  # what one generated column draws its cells from
    "ints": ["0", "1", "2", "3", "-4", "10", ""],
    "floats": [*NUMBERS, ""],
    "bools": ["true", "false", "True", "1", "0", ""],
    "words": WORDS,
    "text": [*TEXT, ""],
    "ids": None,  # 0, 1, 2, ... (consecutive integers)
    "constant": ["k"],
    "empty": [""],
}


@st.composite
def tables(
    draw: st.DrawFn, max_rows: int = 60, max_columns: int = 8, min_columns: int = 1
) -> tuple[list[str], list]:
    rows = draw(st.integers(1, max_rows))
    kinds = draw(
        st.lists(st.sampled_from(sorted(COLUMN_KINDS)), min_size=min_columns, max_size=max_columns)
    )
    names = [f"{k}_{j}" if k != "ids" else f"row_id{j}" for j, k in enumerate(kinds)] + ["y"]
    columns = []
    for kind in kinds:
        pool = COLUMN_KINDS[kind]
        if pool is None:
            columns.append([str(i + 3) for i in range(rows)])
        else:
            columns.append(draw(st.lists(st.sampled_from(pool), min_size=rows, max_size=rows)))
    columns.append([str(i % 2) for i in range(rows)])
    return names, [list(r) for r in zip(*columns, strict=True)]


def write(path, names: list[str], rows: list) -> str:
    quote = lambda c: f'"{c}"' if any(ch in c for ch in ',"') else c  # noqa: E731
    lines = [",".join(names)] + [",".join(quote(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@given(tables())
def test_wide_reader_types_cells_as_pyarrow_does(tmp_path_factory, table):
    path = write(tmp_path_factory.mktemp("wide") / "t.csv", *table)
    expected = readers.read_arrow(path)
    got = csv_reader.read_wide(path, table[0])
    assert got.schema.names == expected.schema.names
    for name in expected.schema.names:
        want, have = expected.column(name), got.column(name)
        assert have.type == want.type, (name, want, have)
        assert have.to_pylist() == want.to_pylist(), name


@given(tables())
def test_vectorised_typing_matches_the_column_by_column_reference(tmp_path_factory, table):
    frame = readers.read_table(write(tmp_path_factory.mktemp("plan") / "t.csv", *table))
    assert_same_plan(frame)


def assert_same_plan(frame: pd.DataFrame) -> None:
    numeric, categorical, _ = reference_plan(frame, "y")
    if not numeric and not categorical:
        with pytest.raises(InputError, match="no usable feature columns"):
            plan_columns(frame, "y", "t.csv")
    else:
        assert plan_columns(frame, "y", "t.csv") == (numeric, categorical)


@settings(max_examples=15)
@given(tables(min_columns=150, max_columns=200))
def test_many_columns_typed_as_the_reference(tmp_path_factory, table):
    """Past PER_COLUMN text columns, distinct values are counted over all cells at once."""
    frame = readers.read_table(write(tmp_path_factory.mktemp("many") / "t.csv", *table))
    assert_same_plan(frame)


@given(tables(max_rows=30))
def test_vectorised_text_detection_matches_the_reference(tmp_path_factory, table):
    path = write(tmp_path_factory.mktemp("text") / "t.csv", *table)
    frame = readers.sample(path)
    for target in (None, "y", table[0][0]):
        assert detect_text_column(frame, target) == reference_detect(frame, target)


def test_sample_reads_text_as_pandas_did(tmp_path):
    path = write(tmp_path / "t.csv", ["a", "b", "c"], [["x", "1.5", ""], ["NA", "q, r", "z"]])
    frame = readers.sample(path)
    reference = pd.read_csv(path, dtype=str)
    assert frame.columns.tolist() == reference.columns.tolist()
    assert frame.fillna("<missing>").to_numpy().tolist() == [
        ["x", "1.5", "<missing>"],
        ["<missing>", "q, r", "z"],
    ]
    assert readers.sample(str(tmp_path / "absent.csv")) is None


def test_many_ignored_columns_are_one_note(tmp_path, capsys):
    names = [f"e{i}" for i in range(2000)] + ["x", "y"]
    rows = [[""] * 2000 + [str(i), str(i % 2)] for i in range(4)]
    frame = readers.read_table(write(tmp_path / "t.csv", names, rows))
    assert plan_columns(frame, "y", "t.csv") == (["x"], [])
    err = " ".join(capsys.readouterr().err.split())
    assert "t.csv: 2,000 columns ('e0', 'e1', 'e2', ...) are empty; ignored" in err
    assert err.count("note:") == 1


def test_wide_file_errors_name_the_line(tmp_path):
    names = [f"c{i}" for i in range(1500)]
    good = ",".join("1" for _ in names)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(names) + f"\n{good}\n{good}\n1,2\n")
    with pytest.raises(
        InputError, match=r"ragged.csv: line 4 has 2 fields but the header has 1500"
    ):
        readers.read_arrow(str(ragged))
    latin = tmp_path / "latin.csv"
    latin.write_bytes((",".join(names) + f"\n{good}\n").encode() + b"\xe9" + good[1:].encode())
    with pytest.raises(InputError, match=r"latin\.csv: line 3 holds bytes that are not UTF-8"):
        readers.read_arrow(str(latin))
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(names) + "\n")
    with pytest.raises(InputError, match="has a header but no data rows"):
        readers.read_arrow(str(header_only))


def test_10k_columns_load_in_seconds(tmp_path):
    """On main: 34 s, in text detection and typing; now about a second (bound generous for CI)."""
    from dlcli.data.sources import DataOptions
    from dlcli.data.tabular_source import TabularSource

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(10_000)] + ["y"]
    rows = [[f"{v:.3f}" for v in rng.random(10_000)] + [str(r % 2)] for r in range(3)]
    path = write(tmp_path / "wide.csv", names, rows)
    start = time.perf_counter()
    assert detect_text_column(readers.sample(path), None) is None
    prepared = TabularSource.prepare(path, DataOptions())
    assert prepared.x_train.shape[1] == 10_000
    assert time.perf_counter() - start < 15
