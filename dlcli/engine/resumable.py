"""Running a Trainer so that Ctrl-C leaves a resumable checkpoint and one clear line saying how
to go on (shared by every model family's training)."""

from __future__ import annotations

from typing import Any

from dlcli import modelfile
from dlcli.engine.trainer import FitResult, Interrupted, Trainer
from dlcli.errors import DLError


class TrainingInterrupted(DLError):
    exit_code = 130


def fit_resumable(
    trainer: Trainer,
    fit_args: tuple,
    resume: dict | None,
    progress: Any,
    save_checkpoint: Any,
    req: Any,
) -> FitResult:
    """trainer.fit(*fit_args); on Ctrl-C, save the snapshot with `save_checkpoint` (None: this
    process writes no files, e.g. a non-zero distributed rank) and raise TrainingInterrupted."""
    try:
        return trainer.fit(*fit_args, resume=resume)
    except Interrupted as exc:
        progress.close()
        if save_checkpoint is not None:
            save_checkpoint(exc.snapshot)
        raise interrupted(len(exc.snapshot["history"]), req) from None
    finally:
        progress.close()


def interrupted(done: int, req: Any) -> TrainingInterrupted:
    """The one line after Ctrl-C: `done` complete epochs, where the checkpoint is, how to go on."""
    return TrainingInterrupted(
        f"interrupted after {done} complete epoch{'s' if done != 1 else ''}; "
        f"checkpoint saved to {modelfile.checkpoint_path(req.output)}",
        f"continue with: dl train {req.data} -o {req.output} --resume",
    )
