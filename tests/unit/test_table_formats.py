"""Table formats (issue 16): every format reads as the same table as its CSV, encodes to the same
tensors, and a damaged file of each is one line naming it. Files are generated at test time."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from formats_data import SUFFIXES, every_format, table, write
from hypothesis import given
from hypothesis import strategies as st

from dlcli.data import readers
from dlcli.data.contracts import DataOptions
from dlcli.data.readers import arrow, jsonl
from dlcli.data.readers.stdin import check_input_format
from dlcli.data.tabular_source import TabularSource
from dlcli.engine.outputs import WRITERS, check_format
from dlcli.errors import InputError, UsageError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return every_format(tmp_path_factory.mktemp("formats"))


def reader_name(reader: object) -> str:
    """The module name of a reader: a module, or an Arrow format's READER (readers/arrow.Format)."""
    what = getattr(reader, "what", None)
    if what is not None:
        return {"Parquet": "parquet", "JSON Lines": "jsonl", "Feather": "feather"}[what]
    return reader.__name__.rsplit(".", 1)[1]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_reader_by_suffix(files: dict[str, Path], suffix: str) -> None:
    module = reader_name(readers.reader_for(str(files[suffix])))
    assert module == {".arrow": "feather", ".ndjson": "jsonl"}.get(
        suffix, suffix.split(".")[-1]
    ) or (suffix.startswith(".csv") and module == "csv")
    assert readers.reader_for("x.CSV.GZ").__name__.endswith(".csv")
    assert readers.reader_for("x.gz").__name__.endswith(".csv")  # unknown suffix: CSV, as before


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_same_table_as_csv(files: dict[str, Path], suffix: str) -> None:
    """Whole reads, headers, samples and planned streaming reads all equal the CSV's."""
    csv, other = str(files[".csv"]), str(files[suffix])
    assert readers.read_arrow(other).equals(readers.read_arrow(csv))
    assert readers.header_of(other) == readers.header_of(csv)
    types = {"x": pa.float64(), "count": pa.float64(), "colour": pa.string(), "label": pa.string()}

    def streamed(path: str) -> pd.DataFrame:
        chunks = readers.iter_chunks(path, block_bytes=2000, plan=lambda header: types)
        return pd.concat(list(chunks), ignore_index=True)

    pd.testing.assert_frame_equal(streamed(other), streamed(csv))
    assert len(readers.sample(other)) == len(readers.sample(csv))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bit_identical_tensors(files: dict[str, Path], suffix: str) -> None:
    """The same table in any format: the same encoded tensors and the same fitted preprocessor."""
    opts = DataOptions(target="label", seed=3)
    ref = TabularSource.prepare(str(files[".csv"]), opts)
    got = TabularSource.prepare(str(files[suffix]), opts)
    for name in ("x_train", "y_train", "x_val", "y_val"):
        a, b = getattr(ref, name).numpy(), getattr(got, name).numpy()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert json.dumps(got.preprocessor.to_state()) == json.dumps(ref.preprocessor.to_state())


def _damaged(folder: Path, suffix: str) -> Path:
    """A file of `suffix` that the library cannot read."""
    good = write(table(50), folder / f"good{suffix}")
    bad = folder / f"bad{suffix}"
    data = good.read_bytes()
    if suffix.endswith((".gz", ".zst", ".bz2")):
        bad.write_bytes(data[:10] + b"\x00garbage" * 8)
    elif suffix in (".jsonl", ".ndjson"):
        lines = data.decode().splitlines(keepends=True)
        bad.write_text("".join(lines[:6]) + '{"x": 1.0, oops\n' + "".join(lines[6:]))
    else:
        bad.write_bytes(data[: len(data) // 2])  # truncated: no footer
    return bad


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_damaged_file_is_one_line(tmp_path: Path, suffix: str) -> None:
    bad = _damaged(tmp_path, suffix)
    with pytest.raises(InputError) as err:
        readers.read_arrow(str(bad))
    line = str(err.value)
    assert line.startswith(str(bad)) and "\n" not in line, line
    if suffix in (".jsonl", ".ndjson"):
        assert "line 7" in line


def test_parquet_damaged_row_group_named(tmp_path: Path) -> None:
    """A damaged page in the middle: whole and streamed reads name the row group and column."""
    path = tmp_path / "rg.parquet"
    n = 30_000
    t = pa.table({"a": np.arange(n, dtype="float64"), "b": np.random.default_rng(0).normal(size=n)})
    pq.write_table(t, path, row_group_size=10_000)
    page = pq.ParquetFile(path).metadata.row_group(1).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[page + 30 : page + 400] = b"\xff" * 370
    path.write_bytes(bytes(data))
    for read in (readers.read_arrow, lambda p: list(readers.iter_batches(p))):
        with pytest.raises(
            InputError, match=r"rg\.parquet: row group 2 of 3, column 'b' cannot be read"
        ):
            read(str(path))


def test_jsonl_kind_change_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text(
        "".join(json.dumps({"a": i, "y": 1}) + "\n" for i in range(5)) + '{"a": "x", "y": 2}\n'
    )
    with pytest.raises(
        InputError, match=r"k\.jsonl: line 6: column 'a' holds text, earlier lines number"
    ):
        readers.read_arrow(str(path))


@pytest.mark.parametrize(
    ("column", "words"),
    [
        (pa.array([[1, 2], [3]] * 3), "nested values"),
        (pa.array([{"a": 1}, {"a": 2}] * 3), "nested values"),
        (pa.array([b"\x00\xff", b"ab"] * 3), "binary data"),
    ],
)
def test_unreadable_column_types(tmp_path: Path, column: pa.Array, words: str) -> None:
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"odd": column, "y": pa.array([0, 1] * 3)}), path)
    with pytest.raises(InputError, match=rf"odd\.parquet: column 'odd' holds {words}"):
        readers.read_arrow(str(path))


def test_types_as_csv_gives_them(tmp_path: Path) -> None:
    """Narrow, unsigned, dictionary, decimal, float32, timestamp and date64 columns come out as
    the CSV reader types the same values."""
    import decimal

    t = pa.table(
        {
            "i8": pa.array([1, None, -3], pa.int8()),
            "u64": pa.array([1, 2, 2**64 - 1], pa.uint64()),
            "f32": pa.array([0.5, None, 2.0], pa.float32()),
            "dec": pa.array(
                [decimal.Decimal("1.5"), None, decimal.Decimal("2")], pa.decimal128(5, 2)
            ),
            "cat": pa.array(["a", None, "b"]).dictionary_encode(),
            "ts": pa.array([0, 60_000, None], pa.timestamp("ms")),
            "tsf": pa.array([0, 1, None], pa.timestamp("ms", "UTC")),
            "d64": pa.array([0, 86_400_000, None], pa.date64()),
        }
    )
    path = tmp_path / "types.parquet"
    pq.write_table(t, path)
    got = readers.read_arrow(str(path)).schema
    want = [pa.int64(), pa.float64(), pa.float64(), pa.float64(), pa.string()]
    want += [pa.timestamp("s"), pa.timestamp("ns", "UTC"), pa.date32()]
    assert got.types == want


def test_null_spellings_as_in_csv(tmp_path: Path) -> None:
    """'', 'NA' and 'null' text is missing, as the CSV reader reads it; verbatim reads keep it."""
    path = tmp_path / "n.parquet"
    pq.write_table(
        pa.table({"c": ["a", "", "NA", None, "null", "b"], "y": [1, 2, 3, 4, 5, 6]}), path
    )
    assert readers.read_arrow(str(path)).column("c").to_pylist() == [
        "a",
        None,
        None,
        None,
        None,
        "b",
    ]
    kept = next(readers.iter_batches(str(path), verbatim=True)).column("c").to_pylist()
    assert kept == ["a", "", "NA", None, "null", "b"]


def test_empty_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "e.parquet"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"e\.parquet: file is empty"):
        readers.read_arrow(str(empty))
    no_rows = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), no_rows)
    with pytest.raises(InputError, match=r"n\.parquet: has columns but no data rows"):
        readers.read_arrow(str(no_rows))
    with pytest.raises(InputError, match="no data rows"):
        list(readers.iter_batches(str(no_rows)))


def test_gzip_header_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "h.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("a,b\n1,x\n2,y\n")
    assert readers.header_of(str(path)) == ["a", "b"]
    assert readers.sample(str(path))["b"].tolist() == ["x", "y"]


# -- what dl parses itself: properties --------------------------------------------------------------
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    st.lists(st.one_of(NUMBER.map(repr), st.sampled_from(["", "NA", " nan ", "null"])), min_size=1)
)
def test_cast_text_to_numbers(cells: list[str]) -> None:
    got = arrow.cast_to(pa.array(cells), pa.float64(), "c", "f", "").to_pylist()
    want = [None if c.strip() in readers.NULL_TEXT else float(c) for c in cells]
    assert got == want


@given(st.lists(NUMBER.map(repr), max_size=20), st.integers(0, 20), st.text(min_size=1, max_size=8))
def test_cast_names_the_row_of_text(cells: list[str], at: int, word: str) -> None:
    try:
        float(word)
        return
    except ValueError:
        pass
    if word.strip() in readers.NULL_TEXT:
        return
    at = min(at, len(cells))
    cells = [*cells[:at], word, *cells[at:]]
    with pytest.raises(InputError, match=rf"column 'c', row {at + 1}: .* is not a number"):
        arrow.cast_to(pa.array(cells), pa.float64(), "c", "f", "")


INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()]


@given(st.sampled_from(INT_TYPES), st.lists(st.one_of(st.none(), st.integers(0, 127)), min_size=1))
def test_integers_widen_to_int64(typ: pa.DataType, values: list[int | None]) -> None:
    got = arrow.normalise(pa.array(values, typ), "c", "f")
    assert got.type == pa.int64() and got.to_pylist() == values


@given(
    st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(0, 9)), min_size=1, max_size=30),
    st.data(),
)
def test_jsonl_locates_the_bad_line(
    tmp_path_factory: pytest.TempPathFactory, recs: list, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(recs)))
    lines = [json.dumps(r) for r in recs]
    lines.insert(at, data.draw(st.sampled_from(["{oops", "[1, 2]", '{"a": }', "3"])))
    path = tmp_path_factory.mktemp("j") / "l.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert jsonl._locate(str(path), None).startswith(f"line {at + 1}: ")


def test_parquet_streaming_holds_one_row_group_at_a_time(tmp_path: Path) -> None:
    """--stream reads a Parquet file row group by row group: a group's buffers are released before
    the next group is decoded (pyarrow's pool peak, in a fresh process: ~3.5 row groups of
    decoded data with the float32 -> float64 casts, 4.5 when two groups were held at once)."""
    import subprocess
    import sys

    path = tmp_path / "groups.parquet"
    rng = np.random.default_rng(0)
    fields = [(f"x{i}", pa.float32()) for i in range(10)] + [("y", pa.string())]
    with pq.ParquetWriter(path, pa.schema(fields), compression="none") as writer:
        for _ in range(4):
            cols = {f"x{i}": rng.normal(size=50_000).astype(np.float32) for i in range(10)}
            cols["y"] = np.where(rng.random(50_000) < 0.5, "yes", "no")
            writer.write_table(pa.table(cols))
    group = pq.ParquetFile(path).read_row_group(0).nbytes
    code = (
        "import sys, pyarrow as pa\n"
        "from dlcli.data.readers import iter_batches\n"
        "rows = sum(b.num_rows for b in iter_batches(sys.argv[1], block_bytes=1 << 20))\n"
        "print(rows, pa.default_memory_pool().max_memory())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    rows, peak = map(int, out.stdout.split())
    assert rows == 200_000
    assert peak / group < 4.0, peak / group


# -- outputs and --input-format ---------------------------------------------------------------------
def test_parquet_writer_streams_chunks(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    frames = [
        pd.DataFrame({"prediction": ["a", "b"], "p": [0.5, 0.25]}),
        pd.DataFrame({"prediction": ["c"], "p": [np.nan]}),
    ]
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = WRITERS["parquet"](fh)
        for f in frames:
            writer.write(f)
        writer.close()
    back = pq.read_table(out)
    assert back.num_rows == 3 and pq.ParquetFile(out).num_row_groups == 2
    assert back.column("prediction").to_pylist() == ["a", "b", "c"]


def test_format_checks() -> None:
    check_format("parquet", "x.parquet")
    with pytest.raises(UsageError, match=r"--format parquet writes a binary file.*give -o FILE"):
        check_format("parquet", None)
    with pytest.raises(UsageError, match="--format must be one of csv, jsonl, parquet, got 'xml'"):
        check_format("xml", None)
    with pytest.raises(UsageError, match="--input-format must be one of"):
        check_input_format("xml", ["-"])
    with pytest.raises(UsageError, match="describes stdin"):
        check_input_format("parquet", ["a.parquet"])
