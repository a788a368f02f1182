"""Which trial `dl tune` hands back. The best mean over the folds is the best of many noisy
estimates, so on a small table it is partly the luckiest draw for those rows. After
cross-validation, a trial other than the preset's own values (the first trial of a new study) is
handed back only when it beats that trial on the same folds by more than `EVIDENCE` standard
errors of their paired fold differences: the one-standard-error rule, with the defaults as the
simple model to fall back on."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

EVIDENCE = 1.0


@dataclass(frozen=True)
class Choice:
    """The trial handed back; `kept_defaults` when it is the defaults' trial although another
    scored better on average (`over` that trial, by `gain` with standard error `se`)."""

    trial: Any
    kept_defaults: bool = False
    over: Any = None
    gain: float | None = None
    se: float | None = None

    def describe(self, metric: str) -> str:
        return (
            f"kept the preset's defaults (trial {self.trial.number}): trial {self.over.number} "
            f"scored a better validation {metric} by {self.gain:.4g} on average, within "
            f"{EVIDENCE:g} standard error ({self.se:.4g}) of the folds' paired differences"
        )

    def record(self) -> dict:
        """The --json summary's `selection` (None when the best-scoring trial was handed back
        without a comparison)."""
        if self.gain is None:
            return {"rule": "best", "trial": self.trial.number}
        return {
            "rule": "defaults" if self.kept_defaults else "beat the defaults",
            "trial": self.trial.number,
            "best_scoring_trial": (self.over or self.trial).number,
            "gain": self.gain,
            "se": self.se,
        }


def choose(study: Any, best: Any, defaults: dict, direction: str) -> Choice:
    """`best` (the best-scoring complete trial), unless the defaults' trial (the first holding
    `defaults`) has fold scores on the same folds and `best` does not beat them by EVIDENCE standard errors."""
    if not defaults:
        return Choice(best)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    # the first trial holding every default (values the preset lacks, e.g. batch_size, drawn)
    base = next((t for t in done if all(t.params.get(k) == v for k, v in defaults.items())), None)
    ours, theirs = (
        best.user_attrs.get("fold_scores"),
        (base.user_attrs if base else {}).get("fold_scores"),
    )
    if base is None or not ours or not theirs or len(ours) != len(theirs) or len(ours) < 2:
        return Choice(best)
    sign = 1.0 if direction == "maximize" else -1.0
    diffs = [sign * (a - b) for a, b in zip(ours, theirs, strict=True)]
    gain = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if base.number == best.number or gain > EVIDENCE * se:
        return Choice(best, over=None, gain=gain, se=se)
    return Choice(base, kept_defaults=True, over=best, gain=gain, se=se)
