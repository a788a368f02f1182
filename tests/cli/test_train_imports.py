"""A whole `dl train` never imports torch._dynamo (1.5-2.5 s of a ~5 s small train): every
optimizer call dl makes, per batch or per epoch (snapshots for Ctrl-C and resume), goes through
engine/optim.eager, which skips torch.compile's wrappers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import PENGUINS, dl_env

SCRIPT = """
import sys
from dlcli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(m for m in sys.modules if m == "torch._dynamo"))
"""


def test_whole_train_never_imports_dynamo(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    args = ["train", str(PENGUINS / "train.csv"), "-o", str(model), "--epochs", "3", "-q"]
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=dl_env(), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", "dl train imported torch._dynamo"
    assert model.is_file()
