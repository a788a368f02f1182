"""Issue 11, "wrong or misleading messages": each error is one true line."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from tests.conftest import PENGUINS, SAMPLES, assert_error


class _Thing:
    """A custom class: pickling an instance stores a reference to code."""

    def __init__(self) -> None:
        self.x = 1


class _Payload:
    """Unpickled by a trusting loader, this would run a shell command (here: make a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


PICKLED = "contains pickled code or objects, not plain data; refused (dl never runs code from a model file)"


def test_a_model_file_holding_a_custom_object_is_refused_as_pickled_code(
    tmp_path, dl_inproc
) -> None:
    model = tmp_path / "custom.pt"
    torch.save({"format": "dlcli-model", "version": 2, "obj": _Thing()}, model)
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    assert_error(res, str(model), PICKLED)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_model_file_that_would_run_a_command_is_refused_and_runs_nothing(
    tmp_path, dl_inproc, how
) -> None:
    marker = tmp_path / "ran"
    model = tmp_path / "evil.pt"
    body = {"format": "dlcli-model", "version": 2, "x": _Payload(str(marker))}
    if how == "torch.save":
        torch.save(body, model)
    else:
        model.write_bytes(pickle.dumps(body))
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    assert_error(res, str(model), PICKLED)
    assert not marker.exists(), "dl ran code from a model file"


def test_random_bytes_are_not_a_model_file(tmp_path, dl_inproc) -> None:
    model = tmp_path / "noise.pt"
    model.write_bytes(bytes(range(256)) * 3 + os.urandom(512))
    res = dl_inproc("predict", model, PENGUINS / "rows.csv")
    line = assert_error(res, str(model), "not a dl model file")
    assert "pickled code" not in line


def test_init_from_a_table_model_on_images_names_the_model_not_arch_none(
    penguins_model, dl_inproc, tmp_path
) -> None:
    res = dl_inproc(
        "train",
        SAMPLES / "digits" / "train",
        "--init-from",
        penguins_model,
        "-o",
        tmp_path / "m.pt",
        "--epochs",
        "1",
        "--quiet",
        "--no-plots",
    )
    assert_error(res, f"--init-from {penguins_model}", "image data")
    assert "None" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
