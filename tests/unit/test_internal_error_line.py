"""What the last-resort line names (cli.command_inputs): the command, its arguments and every
option value that is an existing path, outputs left out."""

from __future__ import annotations

from pathlib import Path

from conftest import PENGUINS

from dlcli.cli import command_inputs, internal_error_line


def test_inputs_are_arguments_and_existing_option_paths(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("layers: []\n")
    train, val = PENGUINS / "train.csv", PENGUINS / "test.csv"
    args = ["train", str(train), "--val", str(val), "--spec", str(spec), "--epochs", "3"]
    args += ["-o", str(PENGUINS / "rows.csv")]  # an existing file, but an output
    name, inputs = command_inputs(args)  # in the command's own order of parameters
    assert (
        name == "train"
        and inputs[0] == str(train)
        and set(inputs) == {str(train), str(val), str(spec)}
    )
    assert command_inputs(["predict", "missing.pt", "-", "--top-k", "2"]) == (
        "predict",
        ["missing.pt", "-"],
    )
    assert command_inputs(["evaluate", "m.pt", "d/", "--report", str(tmp_path)]) == (
        "evaluate",
        ["m.pt", "d/"],
    )
    assert command_inputs(["no-such-command", "x"]) == ("no-such-command", ["x"])
    assert command_inputs([]) == (None, [])


def test_line_is_one_short_line() -> None:
    line = internal_error_line(KeyError("a\nb" * 400), ["export", "model.pt"])
    assert "\n" not in line and len(line) < 450
    assert line.startswith("internal error in `dl export` on model.pt: KeyError: ")
    assert internal_error_line(RuntimeError(), []).startswith("internal error: RuntimeError (")
