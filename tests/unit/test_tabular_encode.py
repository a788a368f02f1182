"""The split encode of a whole table (`TabularPreprocessor.fit_split` with the arrow table): the
same matrices as encoding every row then gathering the parts, without building that all-rows
matrix on the way (issue 16's load time: the encode, not the read, was the cost)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlcli.data import readers
from dlcli.data.split import split_rows
from dlcli.data.tabular import TabularPreprocessor
from dlcli.data.target import Factorized, Target, canonical_counts, codes_for
from dlcli.errors import InputError


def _table(rows: int, floats: int, seed: int = 0) -> pa.Table:
    """`floats` float columns (one with gaps), an integer column with gaps, a number column stored
    as text, a categorical text column and a 3-class label."""
    rng = np.random.default_rng(seed)
    cols = {f"f{i}": rng.standard_normal(rows) for i in range(floats)}
    cols["f0"][rng.random(rows) < 0.1] = np.nan
    ints = pa.array(rng.integers(-(2**40), 2**40, rows), mask=rng.random(rows) < 0.05)
    text = np.where(rng.random(rows) < 0.5, "1.5", " 2 ")
    cats = rng.choice(np.array(["a", "b", "c", "NA"], dtype=object), rows)
    label = rng.integers(0, 3, rows)
    return pa.table({**cols, "i": ints, "t": text, "c": cats, "y": label})


def _fit(table: pa.Table, path: str) -> tuple:
    frame = table.to_pandas()
    target = Target.fit(frame["y"], None, path)
    y = target.encode(frame["y"], path)
    split = split_rows(y, len(frame), 0.2, 42, stratify=True, source=path)
    return frame, target, split


def _normalised(tmp_path: Path, table: pa.Table) -> tuple[pa.Table, str]:
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path, row_group_size=997)  # several chunks per column
    return readers.read_arrow(path), path


def test_split_encode_equals_all_rows_then_gather(tmp_path: Path) -> None:
    table, path = _normalised(tmp_path, _table(5_000, 4))
    frame, target, split = _fit(table, path)
    pre, x_tr, x_va = TabularPreprocessor.fit_split(frame, target, path, split, table)
    every = pre.raw_from_arrow(table, path)  # (N, F): every row, the pre-split way
    assert np.array_equal(x_tr, every[split[0]], equal_nan=True)
    assert np.array_equal(x_va, every[split[1]], equal_nan=True)
    assert x_tr.flags.c_contiguous and x_va.flags.c_contiguous
    # and the frame-only path (no arrow table) gives the same matrices and statistics
    pre2, y_tr, y_va = TabularPreprocessor.fit_split(frame, target, path, split)
    assert np.array_equal(x_tr, y_tr, equal_nan=True) and np.array_equal(x_va, y_va, equal_nan=True)
    assert pre.to_state() == pre2.to_state()


def test_split_encode_holds_no_all_rows_matrix(tmp_path: Path) -> None:
    """Peak memory of the encode: the two parts (4*N*F bytes), their row-major copies (as
    much again) and one column: below 10*N*F. Building the (F, N) matrix of every row first,
    as before, peaks at 12*N*F."""
    rows, floats = 200_000, 12
    table, path = _normalised(tmp_path, _table(rows, floats))
    frame, target, split = _fit(table, path)
    TabularPreprocessor.fit_split(frame, target, path, split, table)  # warm: imports, caches
    tracemalloc.start()
    try:
        pre, x_tr, x_va = TabularPreprocessor.fit_split(frame, target, path, split, table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    matrix = 4 * rows * len(pre.columns)  # one float32 (N, F) matrix
    assert x_tr.nbytes + x_va.nbytes == matrix
    assert peak < 2.5 * matrix, f"peak {peak / matrix:.2f} x the raw matrix"


def test_out_of_range_names_rows_in_file_order(tmp_path: Path) -> None:
    """A huge value found in a part is reported as from the whole file: first rows, count."""
    t = _table(300, 2).to_pandas()
    t.loc[[250, 7, 120], "f1"] = [1e39, -np.inf, 3e38]
    table, path = _normalised(tmp_path, pa.Table.from_pandas(t, preserve_index=False))
    frame, target, split = _fit(table, path)
    with pytest.raises(InputError) as info:
        TabularPreprocessor.fit_split(frame, target, path, split, table)
    assert str(info.value).startswith(f"{path}: column 'f1', rows 8, 121, 251: infinite or too")


def test_dropped_rows_keep_file_row_numbers(tmp_path: Path) -> None:
    """Rows without a label dropped first: a message still counts rows as in the file."""
    t = _table(100, 1).to_pandas()
    t["y"] = t["y"].astype("float64")
    t.loc[[0, 1], "y"] = np.nan
    t.loc[50, "f0"] = np.inf
    table, path = _normalised(tmp_path, pa.Table.from_pandas(t, preserve_index=False))
    frame = table.to_pandas()
    frame = frame[frame["y"].notna()]
    table = table.take(frame.index.to_numpy())
    target = Target.fit(frame["y"], None, path)
    y = target.encode(frame["y"], path)
    split = split_rows(y, len(frame), 0.2, 0, stratify=True, source=path)
    with pytest.raises(InputError) as info:
        TabularPreprocessor.fit_split(frame, target, path, split, table)
    assert str(info.value).startswith(f"{path}: column 'f0', row 51: infinite or too large")


@given(
    st.lists(st.sampled_from(["a", " a", "b", "", "NA", "c ", "3", "3.0", None]), min_size=1),
    st.data(),
)
def test_factorized_counts_equal_canonical_counts(values: list, data: st.DataObject) -> None:
    """Categories from one factorization of the whole column = those of the training rows
    factorized on their own (same counts, same order of ties)."""
    s = pd.Series(values, dtype="str")
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, len(values) - 1)))), dtype=np.int64)
    want = canonical_counts(s.iloc[rows])
    got = Factorized.of(s).counts_at(rows)
    assert list(got.index) == list(want.index) and got.tolist() == want.tolist()
    known = list(want.index)
    assert np.array_equal(Factorized.of(s).codes_for(known), codes_for(s, known))
