"""The CLI's handling of library warnings (cli.library_warnings / warning_note): noise dropped,
anything else one note in dl's words, once per message, library markup shown as text."""

from __future__ import annotations

import warnings

import pytest

from dlcli.cli import library_warnings, warning_note

PANDAS = "/venv/lib/python3.11/site-packages/pandas/core/internals/managers.py"


def test_known_warnings_in_dl_words() -> None:
    got = warning_note("overflow encountered in cast", RuntimeWarning, PANDAS)
    assert got == (
        "pandas: a number too large for 32-bit floats (above 3.4e38) became infinite "
        "(overflow encountered in cast)"
    )
    pil = "/venv/lib/python3.11/site-packages/PIL/TiffImagePlugin.py"
    assert warning_note("Corrupt EXIF data.  Expecting 12 bytes", UserWarning, pil).startswith(
        "Pillow: an image's EXIF block is corrupt"
    )
    assert warning_note("divide by zero encountered", RuntimeWarning, "/x/dlcli/metrics.py") == (
        "a division by zero gave an infinite value (divide by zero encountered)"
    )


def test_noise_is_dropped_and_others_are_named() -> None:
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        assert warning_note("old API", category, PANDAS) is None
    long = "some\nmulti-line   text " + "x" * 500
    got = warning_note(long, UserWarning, "/v/site-packages/torch/nn/modules/module.py")
    assert got is not None and got.startswith("torch warned: some multi-line text x")
    assert len(got) < 230 and "\n" not in got


def test_warnings_become_one_note_each(capsys: pytest.CaptureFixture[str]) -> None:
    with library_warnings():
        for _ in range(3):
            warnings.warn("[bold]odd[/bold] value", UserWarning, stacklevel=1)
        warnings.warn("going away", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "warned: [bold]odd[/bold] value" in err, err
    assert "Warning" not in err and "going away" not in err


def test_debug_leaves_them_raw() -> None:
    before = warnings.showwarning
    with library_warnings(raw=True):
        assert warnings.showwarning is before  # Python's own printing (--debug)
    with library_warnings():
        assert warnings.showwarning is not before
    assert warnings.showwarning is before  # restored after the command
