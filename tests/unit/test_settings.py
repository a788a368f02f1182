"""dlcli/settings.py: every DL_* variable read, checked and documented in one place. A bad value is one
error line and exit 2 (through a real `dl` process), good values parse, `--debug` and DL_DEBUG agree,
the README lists every setting, and no other module reads a DL_* variable itself."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import PENGUINS, REPO, assert_error, dl_env

from dlcli import settings
from dlcli.errors import UsageError

# one bad value per variable, and the exact line `dl` prints for it
BAD = {
    "DL_DEBUG": (
        "maybe",
        "error: DL_DEBUG='maybe': expected 1/0, true/false, yes/no or on/off (show full tracebacks"
        " and the ONNX exporter's own output, as --debug does)",
    ),
    "DL_THREADS": (
        "abc",
        "error: DL_THREADS='abc': expected a positive whole number (torch threads for training on"
        " the CPU)",
    ),
    "DL_STOCK_OPTIMIZERS": (
        "2",
        "error: DL_STOCK_OPTIMIZERS='2': expected 1/0, true/false, yes/no or on/off (use torch's"
        " optimizer classes unchanged, not dl's faster-starting subclasses)",
    ),
    "DL_STREAM_BYTES": (
        "2GB",
        "error: DL_STREAM_BYTES='2GB': expected a whole number of bytes, 0 or more (size of a CSV"
        " file above which dl train streams it, when neither --stream nor --no-stream is given)",
    ),
    "DL_SHUFFLE_ROWS": (
        "0",
        "error: DL_SHUFFLE_ROWS='0': expected a positive whole number (rows in the shuffle buffer"
        " of a streamed table)",
    ),
    "DL_MAX_IMAGE_MEMORY": (
        "-1",
        "error: DL_MAX_IMAGE_MEMORY='-1': expected a whole number of bytes, 0 or more (bytes of"
        " decoded images held in memory; past it, images are decoded each epoch)",
    ),
    "DL_MAX_MODEL_GB": (
        "0",
        "error: DL_MAX_MODEL_GB='0': expected a positive number of gigabytes (memory a network may"
        " need to train (parameters, gradients, optimizer state, activations); larger specs are"
        " refused, as --max-model-gb does)",
    ),
    "DL_CACHE_DIR": (
        str(REPO / "README.md"),
        f"error: DL_CACHE_DIR={str(REPO / 'README.md')!r}: expected a folder (folder of the image"
        " decode cache)",
    ),
    "DL_CACHE_MAX_GB": (
        "-1",
        "error: DL_CACHE_MAX_GB='-1': expected a positive number of gigabytes (size bound of"
        " DL_CACHE_DIR: after each write the least recently used cache files go)",
    ),
    "DL_FEATURE_CACHE": (
        "sometimes",
        "error: DL_FEATURE_CACHE='sometimes': expected 1/0, true/false, yes/no or on/off (train the"
        " layers after a --freeze prefix on its outputs computed once (kept in"
        " DL_CACHE_DIR/features); off: through the frozen layers every epoch)",
    ),
    "DL_WEIGHTS_MIRROR": (
        "ftp://x/",
        "error: DL_WEIGHTS_MIRROR='ftp://x/': expected an http://, https:// or file:// URL (where"
        " --weights imagenet fetches the published files (same file names; a mirror, or a local"
        " folder as file:///path/))",
    ),
}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no DL_* variable but the session's cache folder, and without --debug."""
    for s in settings.TABLE:
        if s.name != "DL_CACHE_DIR":
            monkeypatch.delenv(s.name, raising=False)
    settings.set_debug(False)
    yield
    settings.set_debug(False)


def test_the_table_covers_every_variable_and_field() -> None:
    names = [s.name for s in settings.TABLE]
    assert sorted(names) == sorted(BAD)
    assert [s.field for s in settings.TABLE] == [f.name for f in fields(settings.Settings)]
    assert all(s.doc and "\n" not in s.doc and s.default_text for s in settings.TABLE)


@pytest.mark.slow
def test_a_bad_value_is_one_line_and_exit_2_in_a_real_process(tmp_path: Path) -> None:
    """`dl train` reads its settings before training, and the first read checks them all: two real
    processes side by side (torch start-up is most of their time), the in-process test below covers
    every variable. DL_DEBUG is the one the error handler itself consults."""
    cmd = [sys.executable, "-m", "dlcli", "train", PENGUINS / "train.csv", "-o", tmp_path / "m.pt"]
    procs = {
        name: subprocess.Popen(
            cmd,
            env={**dl_env(), name: value},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (value, _) in BAD.items()
        if name in ("DL_THREADS", "DL_DEBUG")
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        assert assert_error(res, name) == BAD[name][1]
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("name", list(BAD))
def test_every_bad_value_is_a_usage_error_in_process(
    name: str, dl_inproc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(name, BAD[name][0])
    res = dl_inproc("train", PENGUINS / "train.csv", "-o", tmp_path / "m.pt")
    assert assert_error(res, name) == BAD[name][1]
    with pytest.raises(UsageError) as err:
        settings.get()
    assert f"error: {err.value}" == BAD[name][1]


def test_help_works_whatever_the_variables_hold() -> None:
    env = {**dl_env(), **{name: value for name, (value, _) in BAD.items()}}
    for args in (["--help"], ["train", "--help"]):
        res = subprocess.run(
            [sys.executable, "-m", "dlcli", *args], env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout and res.stderr == ""


def test_settings_import_nothing_heavy() -> None:
    code = (
        "import sys, dlcli.settings as s; s.get(); "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas', 'typer') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], env=dl_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# -- good values --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("False", False),
        ("YES", True),
        ("no", False),
        ("on", True),
        (" off ", False),
        ("", False),
        (None, False),
    ],
)
def test_booleans(raw: str | None, value: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DL_DEBUG", "DL_STOCK_OPTIMIZERS"):
        if raw is not None:
            monkeypatch.setenv(name, raw)
    got = settings.get()
    assert got.debug is value and got.stock_optimizers is value
    assert settings.debug() is value


def test_numbers_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DL_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    got = settings.reload()  # the default folder follows HOME, which the cache does not watch
    assert (got.threads, got.stream_bytes, got.shuffle_rows) == (None, None, None)  # dl decides
    assert got.max_image_memory == 4 * 1024**3
    assert got.cache_dir == tmp_path / ".cache" / "dl" / "images"
    monkeypatch.setenv("DL_THREADS", " 4 ")
    monkeypatch.setenv("DL_STREAM_BYTES", "0")  # stream every CSV
    monkeypatch.setenv("DL_SHUFFLE_ROWS", "1_000")  # what int() took before, it still takes
    monkeypatch.setenv("DL_MAX_IMAGE_MEMORY", "1000")
    monkeypatch.setenv("DL_CACHE_DIR", "~/elsewhere")
    got = settings.get()
    assert (got.threads, got.stream_bytes, got.shuffle_rows) == (4, 0, 1000)
    assert got.max_image_memory == 1000
    assert got.cache_dir == tmp_path / "elsewhere"  # need not exist yet
    monkeypatch.setenv("DL_THREADS", "")  # empty: unset
    assert settings.get().threads is None


@pytest.mark.parametrize("raw", ["abc", "0", "-2", "1.5", "1e3", "4 threads"])
def test_positive_numbers_refuse(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DL_THREADS", raw)
    with pytest.raises(UsageError, match=r"^DL_THREADS=.*: expected a positive whole"):
        settings.get()


def test_read_once_until_a_variable_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    first = settings.get()
    assert settings.get() is first
    monkeypatch.setenv("DL_THREADS", "3")
    assert settings.get().threads == 3
    assert settings.reload().threads == 3


# -- one meaning of debug -------------------------------------------------------------------------
def test_debug_flag_and_variable_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not settings.debug()
    settings.set_debug(True)
    assert settings.debug() and settings.debug(strict=False)
    settings.set_debug(False)
    monkeypatch.setenv("DL_DEBUG", "1")
    assert settings.debug() and settings.debug(strict=False)
    monkeypatch.setenv("DL_DEBUG", "maybe")
    assert settings.debug(strict=False) is False  # the CLI's error handler never raises
    with pytest.raises(UsageError, match="DL_DEBUG='maybe'"):
        settings.debug()


@pytest.mark.parametrize("how", ["--debug", "DL_DEBUG=1", "DL_DEBUG=yes"])
def test_debug_shows_the_traceback(how: str, dl_inproc, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["predict", "model.pt", "rows.csv", "--format", "xml"]
    if how == "--debug":
        args.append(how)
    else:
        monkeypatch.setenv("DL_DEBUG", how.split("=")[1])
    res = dl_inproc(*args)
    assert res.returncode == 2
    assert "Traceback" in res.stderr and res.stderr.strip().splitlines()[-1].startswith("error:")
    monkeypatch.setenv("DL_DEBUG", "0")
    assert "Traceback" not in dl_inproc(*args[:5]).stderr


@pytest.mark.parametrize("how", ["--debug", "DL_DEBUG=1"])
def test_debug_lets_the_exporter_speak(
    how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dlcli.export.onnx import _silenced

    with _silenced():
        print("exporter chatter")
    assert capsys.readouterr().out == ""
    if how == "--debug":
        settings.set_debug(True)
    else:
        monkeypatch.setenv("DL_DEBUG", "1")
    with _silenced():
        print("exporter chatter")
    assert capsys.readouterr().out == "exporter chatter\n"


# -- one place --------------------------------------------------------------------------------------
def test_readme_lists_every_setting() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "## Environment variables" in readme
    table = settings.markdown_table()
    assert table in readme, "README table is stale: paste the output of `python -m dlcli.settings`"
    for s in settings.TABLE:
        assert f"| `{s.name}` |" in table


def test_no_other_module_reads_a_dl_variable() -> None:
    """os.environ / os.getenv with a DL_* name, or a DL_* name as a string of its own, only in
    settings.py; and every DL_* name dlcli mentions is in the table."""
    known = {s.name for s in settings.TABLE}
    read = re.compile(r"(environ|getenv)\b.*\bDL_[A-Z_]+|[\"']DL_[A-Z_]+[\"']")
    offenders, unknown = [], set()
    for path in sorted((REPO / "dlcli").rglob("*.py")):
        if path.name == "settings.py" and path.parent.name == "dlcli":
            continue
        text = path.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            if read.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
        unknown |= set(re.findall(r"\bDL_[A-Z_]+\b", text)) - known
    assert offenders == [], "read DL_* variables through dlcli.settings:\n" + "\n".join(offenders)
    assert unknown == set(), f"DL_* names missing from settings.TABLE: {sorted(unknown)}"
