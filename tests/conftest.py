"""Shared fixtures: run `dl` as a real process or in this one, one small trained model for the whole
session, and the check that an error is one clear line.

Layout: tests/unit/ holds fast tests of one module or contract; tests/cli/ holds end-to-end runs
(real trainings through the command line or the train job). Every test under tests/cli/ is marked
`slow`, as are the few long unit tests, so `pytest -m "not slow"` (`make test-fast`) is the quick
lane for an edit-test loop and `make test` runs everything."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
PENGUINS = SAMPLES / "penguins"
DIABETES = SAMPLES / "diabetes"

Runner = Callable[..., subprocess.CompletedProcess]
CLI_TESTS = Path(__file__).resolve().parent / "cli"
FUZZ_TESTS = Path(__file__).resolve().parent / "fuzz"

# Property-based (hypothesis) profiles. `fast` runs in `make test`; `long` is the documented soak:
#   HYPOTHESIS_PROFILE=long .venv/bin/pytest -p no:xdist tests/fuzz -q
# (10,000 generated cases per target; see docs/security.md for the figures).
with contextlib.suppress(ImportError):
    from hypothesis import HealthCheck, settings

    _checks = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("fast", max_examples=60, deadline=None, suppress_health_check=_checks)
    settings.register_profile(
        "long", max_examples=10_000, deadline=None, suppress_health_check=_checks
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test (tests/cli/) is `slow`: the fast lane leaves them out."""
    for item in items:
        if CLI_TESTS in item.path.parents:
            item.add_marker(pytest.mark.slow)


# The sample tables are tiny: one intra-op thread is as fast, and on a busy machine (CI, tests and
# benchmarks side by side) torch's spinning thread pool makes them 10-30x slower.
THREADS = os.environ.get("DL_TEST_THREADS", "1")


def dl_env() -> dict[str, str]:
    """The environment every `dl` process gets: no colours, no debug tracebacks, the venv first on PATH
    (so shell lines can say `dl` as a user would), one torch thread."""
    env = {k: v for k, v in os.environ.items() if k != "DL_DEBUG"}
    env["NO_COLOR"] = "1"
    env["OMP_NUM_THREADS"] = THREADS
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run_process(
    *args: str,
    input: str | bytes | None = None,
    cwd: str | Path | None = None,
    timeout: int = 300,
    memory_gb: float | None = None,
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dlcli", *map(str, args)]
    limit = None if memory_gb is None else _address_space_limit(memory_gb)
    if isinstance(input, bytes):
        res = subprocess.run(
            cmd,
            input=input,
            cwd=cwd,
            env=dl_env(),
            capture_output=True,
            timeout=timeout,
            preexec_fn=limit,
        )
        return subprocess.CompletedProcess(
            cmd,
            res.returncode,
            res.stdout.decode("utf-8", "replace"),
            res.stderr.decode("utf-8", "replace"),
        )
    return subprocess.run(
        cmd,
        input=input,
        cwd=cwd,
        env=dl_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


def _address_space_limit(gb: float) -> Callable[[], None]:
    """A preexec hook capping the child's address space at `gb` GiB (RLIMIT_AS): a memory bomb then
    fails that process (MemoryError, or a failed allocation) instead of the machine. With one torch
    thread (dl_env) a whole training fits in 1 GiB of address space."""
    size = int(gb * 2**30)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


@pytest.fixture
def run_dl() -> Runner:
    """`run_dl(*args, input=None, cwd=None)`: `python -m dlcli ARGS` as a subprocess -> CompletedProcess
    (text). Real exit codes, real stdout/stderr separation, a fresh interpreter each time."""
    return _run_process


@pytest.fixture
def run_dl_bounded() -> Runner:
    """`run_dl` for hostile inputs: the process gets at most 2 GiB of address space and 120 s unless
    `memory_gb=` / `timeout=` say otherwise, so a memory bomb or a hang fails the test, not the
    machine. Same arguments and result as `run_dl`."""

    def run(*args: str, memory_gb: float = 2.0, timeout: int = 120, **kw: object):
        return _run_process(*args, memory_gb=memory_gb, timeout=timeout, **kw)  # type: ignore[arg-type]

    return run


@pytest.fixture(scope="session")
def run_dl_session() -> Runner:
    """`run_dl` for session- and module-scoped fixtures."""
    return _run_process


@pytest.fixture
def dl_inproc(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    """Like `run_dl` but runs `dlcli.cli.main` in this interpreter (no 2-3 s torch start-up per call).

    Exit status comes from SystemExit; stdout and stderr are captured separately; `input` is stdin.
    """
    import torch

    from dlcli.cli import main
    from dlcli.console import set_quiet

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("DL_DEBUG", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(THREADS))

    def run(
        *args: str, input: str | bytes | None = None, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        data = input.encode("utf-8") if isinstance(input, str) else (input or b"")
        stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        argv = [str(a) for a in args]
        code: int = 0
        with contextlib.ExitStack() as stack:
            if cwd is not None:
                stack.enter_context(monkeypatch.context()).chdir(cwd)
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            monkeypatch.setattr(sys, "stdin", stdin)
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                set_quiet(False)
        return subprocess.CompletedProcess(["dl", *argv], code, out.getvalue(), err.getvalue())

    yield run
    torch.set_num_threads(threads)


def assert_error(
    result: subprocess.CompletedProcess, *words: str, code: int = 2, stdout: bool = False
) -> str:
    """The run failed with one clear line: exit `code`, stderr ending in a single `error: ...` line
    that holds each of `words`, no traceback, and nothing on stdout. Returns that line."""
    shown = f"\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == code, f"exit {result.returncode}, expected {code}{shown}"
    assert "Traceback" not in result.stderr, shown
    lines = result.stderr.strip().splitlines()
    assert lines, f"nothing on stderr{shown}"
    last = lines[-1]
    assert last.startswith("error: "), f"last stderr line is not an error line{shown}"
    assert sum(ln.startswith("error:") for ln in lines) == 1, f"more than one error line{shown}"
    assert "internal error" not in last, f"an unexpected exception, not a clear message{shown}"
    if not stdout:
        assert result.stdout == "", f"stdout must stay empty on errors{shown}"
    for word in words:
        assert word in last, f"{word!r} missing from the error line{shown}"
    return last


def flat(text: str) -> str:
    """Whitespace collapsed: rich wraps long notes at the console width."""
    return " ".join(text.split())


@pytest.fixture(scope="session")
def penguins_model(tmp_path_factory: pytest.TempPathFactory, run_dl_session: Runner) -> Path:
    """One small penguins model, trained once per session and shared by predict/evaluate tests."""
    folder = tmp_path_factory.mktemp("penguins_model")
    model = folder / "model.pt"
    res = run_dl_session(
        "train", PENGUINS / "train.csv", "-o", model, "--epochs", "5", "--quiet", "--no-plots"
    )
    assert res.returncode == 0, res.stderr
    assert model.is_file()
    return model


@pytest.fixture(autouse=True, scope="session")
def _private_image_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Image decode caches go to a temporary folder, never to the user's ~/.cache."""
    old = os.environ.get("DL_CACHE_DIR")
    os.environ["DL_CACHE_DIR"] = str(tmp_path_factory.mktemp("dl-cache"))
    yield
    if old is None:
        os.environ.pop("DL_CACHE_DIR", None)
    else:
        os.environ["DL_CACHE_DIR"] = old


def assert_onnx_matches(net: object, example: object, batches: list, atol: float) -> None:
    """Export `net` (token ids (batch, seq) -> outputs) with a dynamic batch and sequence length,
    then check onnxruntime against PyTorch on each of `batches` (and `example`) within `atol`."""
    import numpy as np
    import torch
    from torch.export import Dim

    ort = pytest.importorskip("onnxruntime")
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net, (example,), dynamo=True, opset_version=18,
            dynamic_shapes=({0: Dim("batch"), 1: Dim("seq")},),
        )  # fmt: skip
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for x in [*batches, example]:
        with torch.no_grad():
            want = net(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - want).max() < atol


def published_state(arch: str, seed: int = 0) -> dict:
    """Random tensors in the published (torchvision) key layout of `arch`, head included, from
    its manifest: what a downloaded weights file holds, without the download."""
    import torch

    from dlcli.model import weights

    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in weights.manifest(arch)["tensors"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state
