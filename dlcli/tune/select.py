"""Which trial `dl tune` hands back. The best mean over the folds is the best of many noisy
estimates, so on a small table it is partly the luckiest draw for those rows. After
cross-validation, a trial other than the preset's own values (the first trial of a new study) is
handed back only when it beats that trial on the same folds by more than `threshold(n)` standard
errors of their paired fold differences, n being the number of complete trials: about the best
of n settings that are all as good as the defaults, sqrt(2 ln n) standard errors (2.7 for 40;
at least 1, the one-standard-error rule). Otherwise the defaults, chosen on many tables, are
kept. With 1 standard error for any n, 2 of 9 searches on the shipped tables departed from the
defaults on a gain under 2 standard errors: on the held-out test rows the diabetes one lost
(R² 0.522 vs 0.527), the penguins one won on log loss (0.0136 vs 0.0211) with the same accuracy
(benchmarks/bench_tune.py, docs/tune.md)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any


def threshold(n: int) -> float:
    """Standard errors the best of `n` complete trials must beat the defaults by."""
    return max(1.0, math.sqrt(2.0 * math.log(max(n, 1))))


@dataclass(frozen=True)
class Choice:
    """The trial handed back; `kept_defaults` when it is the defaults' trial although another
    scored better on average (`over` that trial, by `gain` with standard error `se`)."""

    trial: Any
    kept_defaults: bool = False
    over: Any = None
    gain: float | None = None
    se: float | None = None
    needed: float | None = None  # the standard errors the gain had to exceed

    def describe(self, metric: str) -> str:
        return (
            f"kept the preset's defaults (trial {self.trial.number}): trial {self.over.number} "
            f"scored a better {metric} by {self.gain:.4g} on average over the folds, under the "
            f"{self.needed:.2g} standard errors ({self.se:.4g} each) that the best of "
            "this many trials needs to show it is better"
        )

    def record(self) -> dict:
        """The --json summary's `selection`: `best` (no comparison with the defaults made),
        `defaults` (they scored best, or were not clearly beaten) or `beat the defaults`."""
        if self.gain is None:
            return {"rule": "best", "trial": self.trial.number}
        rule = "beat the defaults" if self.gain > 0 and not self.kept_defaults else "defaults"
        return {
            "rule": rule,
            "trial": self.trial.number,
            "best_scoring_trial": (self.over or self.trial).number,
            "gain": self.gain,
            "se": self.se,
            "needed_se": self.needed,
        }


def choose(study: Any, best: Any, defaults: dict, direction: str) -> Choice:
    """`best` (the best-scoring complete trial), unless the defaults' trial (the first holding
    `defaults`) has scores on the same folds and `best` does not beat them by `threshold`."""
    if not defaults:
        return Choice(best)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    # the first trial holding every default (a searched value with no default is drawn)
    base = next((t for t in done if all(t.params.get(k) == v for k, v in defaults.items())), None)
    if base is None:
        return Choice(best)
    ours, theirs = best.user_attrs.get("fold_scores"), base.user_attrs.get("fold_scores")
    if not ours or not theirs or len(ours) != len(theirs) or len(ours) < 2:
        return Choice(best)
    sign = 1.0 if direction == "maximize" else -1.0
    diffs = [sign * (a - b) for a, b in zip(ours, theirs, strict=True)]
    gain = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    needed = threshold(len(done))
    if base.number == best.number or gain > needed * se:
        return Choice(best, gain=gain, se=se, needed=needed)
    return Choice(base, kept_defaults=True, over=best, gain=gain, se=se, needed=needed)
