"""Property-based fuzzing of the model-file loader (issue 11): random bytes, truncations and byte
flips of a real model file, real files with wrong versions, missing keys and wrong types in their
metadata, and pickles (bare or in torch's zip) that name code. Each goes through
`modelfile.load` and, when that accepts it, `assemble.load_model` (the network rebuilt from the
stored spec, weights loaded strictly). Property: a DLError (ModelFileError, SpecError), or a
model that predicts with the shape it announces; never another exception, within a time bound.
Pickled code is always refused as such, and never runs.

Profiles (tests/conftest.py): `fast` (60 cases a test), `long` (10,000):
    HYPOTHESIS_PROFILE=long /usr/bin/time -v .venv/bin/pytest -p no:xdist tests/fuzz/test_fuzz_modelfile.py"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import pickle
import signal
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import PENGUINS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcli import modelfile
from dlcli.errors import DLError, ModelFileError
from dlcli.model.assemble import load_model
from dlcli.model.budget import model_budget

CASE_SECONDS = 20
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MARKER = Path(tempfile.gettempdir()) / f"dl-fuzz-pickle-ran-{os.getpid()}"


@contextlib.contextmanager
def time_bound(seconds: int = CASE_SECONDS) -> Iterator[None]:
    def hang(signum: int, frame: Any) -> None:
        raise AssertionError(f"hang: one case ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Real(tuple):
    """(bytes, dict) of the real model, shown shortly in hypothesis' reports."""

    def __repr__(self) -> str:
        return "<the real penguins model>"


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    """A real penguins model, trained in this process (one epoch): its bytes and its dict."""
    from dlcli.cli import main
    from dlcli.console import set_quiet

    path = tmp_path_factory.mktemp("fuzz_model") / "m.pt"
    args = ["train", str(PENGUINS / "train.csv"), "-o", str(path), "--epochs", "1"]
    with contextlib.suppress(SystemExit):
        main([*args, "--quiet", "--no-plots"])
    set_quiet(False)
    return Real((path.read_bytes(), torch.load(path, weights_only=True)))


def check_file(raw: bytes, folder: Path) -> str:
    """The property for one file's bytes; returns "error" or "model"."""
    path = folder / "case.pt"
    path.write_bytes(raw)
    with time_bound(), model_budget(0.05):
        try:
            data = modelfile.load(path)
            model = load_model(str(path), data=data)
        except DLError as exc:
            line = str(exc)
            assert line.strip() and "\n" not in line and len(line) <= 1000, line[:300]
            assert "internal error" not in line
            return "error"
    shape = tuple(model.built.input_shape)
    with torch.no_grad():
        y = model.built.module(torch.zeros(3, *shape))
    assert tuple(y.shape) == (3, *model.built.output_shape)
    return "model"


def saved(data: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


# -- random bytes, truncations, flips -------------------------------------------------------------
@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert check_file(raw, tmp_path_factory.mktemp("b")) == "error" or raw[:2] == b"PK"


@FUZZ
@given(
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4),
)
def test_truncated_or_flipped_real_files(
    real_model: tuple[bytes, dict],
    cut: float,
    flips: list,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    raw = bytearray(real_model[0])
    if flips:  # a few bytes changed anywhere (the zip's CRCs catch most)
        for at, value in flips:
            raw[int(at * len(raw))] = value
    else:
        raw = raw[: int(cut * len(raw))]
    check_file(bytes(raw), tmp_path_factory.mktemp("t"))


# -- metadata: wrong versions, missing keys, wrong types ------------------------------------------
VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, -1, 0, 10**30, 3, 99]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(
            ["dlcli-model", "dlcli-checkpoint", "gan", "autoencoder", "classification"]
        ),
        st.builds(torch.zeros, st.integers(0, 3)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts (lists: their first items), to pick one to change."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, torch.Tensor):
                found.append((*prefix, k))
            else:
                found += paths(v, (*prefix, k))
    elif isinstance(data, list) and data:
        found += paths(data[0], (*prefix, 0))
    return found[:4000]


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 2), VALUES),
        min_size=1,
        max_size=3,
    )
)
def test_real_files_with_wrong_metadata(
    real_model: tuple[bytes, dict], edits: list, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Change, delete or retype what a key (top-level or nested: spec, preprocessor, weights,
    version, format...) holds, save it as torch would, and load it."""
    data = copy.deepcopy(real_model[1])
    for at, action, value in edits:
        every = paths(data)
        if not every:
            break
        where = every[int(at * len(every))]
        parent = data
        for k in where[:-1]:
            parent = parent[k]
        key = where[-1]
        if action == 0 and isinstance(parent, dict):
            del parent[key]
        elif action == 1 and isinstance(parent[key], torch.Tensor):
            n = value if type(value) is int and 0 <= value < 50 else 2
            parent[key] = torch.zeros(n)
        else:
            parent[key] = value
    check_file(saved(data), tmp_path_factory.mktemp("m"))


@pytest.mark.parametrize("version", [0, 3, -1, "2", 2.0, None, 10**30, True])
def test_wrong_versions_are_one_line(
    real_model: tuple[bytes, dict], version: Any, tmp_path: Path
) -> None:
    data = {**real_model[1], "version": version}
    path = tmp_path / "v.pt"
    path.write_bytes(saved(data))
    with pytest.raises(ModelFileError, match="version"):
        modelfile.load(path)


# -- pickled code ----------------------------------------------------------------------------------
class Touch:
    """An object whose unpickling would create MARKER: proof that code ran."""

    def __reduce__(self) -> tuple:
        return (Path.touch, (MARKER,))


class Local:  # a class of the test module: not plain data
    pass


CODE = st.sampled_from(
    [
        Touch(),
        Local(),
        {"nested": [Touch()]},
        print,
        os.getcwd,
        Path("x"),
        {1, 2},
        b"raw",
        complex(1, 2),
    ]
)


@FUZZ
@given(
    payload=CODE,
    key=st.sampled_from(["weights", "spec", "preprocessor", "extra", "history"]),
    zipped=st.booleans(),
    protocol=st.integers(2, 5),
)
def test_pickled_code_is_refused_and_never_runs(
    real_model: tuple[bytes, dict],
    payload: Any,
    key: str,
    zipped: bool,
    protocol: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data = {**real_model[1], key: payload}
    if zipped:
        raw = saved(data)
    else:
        buf = io.BytesIO()
        torch.save(data, buf, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        raw = buf.getvalue()
    folder = tmp_path_factory.mktemp("p")
    plain = isinstance(payload, (set, bytes, complex))  # builtins torch may or may not allow
    result = check_file(raw, folder)
    assert not MARKER.exists(), "a pickle in a model file ran code"
    if not plain:
        assert result == "error"
        with pytest.raises(ModelFileError, match="pickled code"):
            modelfile.load(folder / "case.pt")


@FUZZ
@given(
    module=st.sampled_from(["os", "builtins", "subprocess", "posix", "torch"]),
    name=st.sampled_from(["system", "eval", "exec", "Popen", "load", "getattr"]),
    wrap=st.booleans(),
)
def test_hand_made_pickles_naming_globals(
    module: str, name: str, wrap: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GLOBAL + REDUCE written opcode by opcode, bare or as the data.pkl of a torch zip."""
    body = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00trueq\x00\x85R."
    if wrap:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("archive/data.pkl", body)
            zf.writestr("archive/version", "3\n")
        body = buf.getvalue()
    folder = tmp_path_factory.mktemp("g")
    assert check_file(body, folder) == "error"
    with pytest.raises(ModelFileError, match="pickled code"):
        modelfile.load(folder / "case.pt")


def test_the_real_model_itself_loads(real_model: tuple[bytes, dict], tmp_path: Path) -> None:
    assert check_file(real_model[0], tmp_path) == "model"
    assert pickle.HIGHEST_PROTOCOL >= 5


def test_a_forged_preprocessing_state_is_one_line(
    real_model: tuple[bytes, dict], tmp_path: Path
) -> None:
    """Found by the long soak: categories None made building the preprocessing a TypeError."""
    data = copy.deepcopy(real_model[1])
    data["preprocessor"]["columns"][0]["categories"] = None
    assert check_file(saved(data), tmp_path) == "error"
    with pytest.raises(ModelFileError, match="model file is malformed"):
        load_model(str(tmp_path / "case.pt"))
