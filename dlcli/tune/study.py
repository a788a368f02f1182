"""The Optuna side of `dl tune`: the metric and its direction, the sampler, the pruner, the storage
and the study. Optuna is imported only here and only when a search runs (the `tune` extra)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlcli.errors import UsageError

# what `dl evaluate` reports per task (scalars), and which way is better
MAXIMIZE = {"accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro"}
MAXIMIZE |= {"roc_auc", "r2"}
CLASSIFICATION = ("loss", "accuracy", "balanced_accuracy", "f1_macro", "precision_macro")
METRICS = {
    "classification": [*CLASSIFICATION, "recall_macro", "log_loss", "roc_auc"],
    "regression": ["loss", "rmse", "mae", "mse", "r2"],
    None: ["loss"],  # autoencoders: the validation reconstruction loss
}
SAMPLERS = ("tpe", "random")
# training values a command-line flag fixes; best_spec.yaml records them in `training:`
FIXED_TRAINING = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum")
FIXED_TRAINING += ("schedule", "loss", "patience", "grad_clip", "label_smoothing")
PRUNERS = ("median", "hyperband", "none")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def direction(metric: str) -> str:
    return "maximize" if metric in MAXIMIZE else "minimize"


def check_metric(metric: str, task: str | None) -> None:
    """--metric is one the task reports (`dl evaluate`), else one line listing them."""
    known = METRICS.get(task, METRICS[None])
    if metric not in known:
        what = f"{task} models" if task else "autoencoders"
        raise UsageError(f"--metric {metric}: {what} report {', '.join(known)}")


def parse_timeout(text: str | None) -> float | None:
    """`--timeout 20m`, `1h30m`, `90s`, `45` (seconds) -> seconds; None for no limit."""
    if text is None:
        return None
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        parts = _DURATION.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw.replace(" ", ""):
            raise UsageError(
                f"--timeout {text}: not a duration", "write it like 90s, 20m, 1h30m or 3600"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds < 10**9:
        raise UsageError(f"--timeout {text}: must be more than 0")
    return seconds


def quiet_optuna() -> Any:
    """Import optuna with its own logging off (dl prints one line per trial instead)."""
    try:
        import optuna
    except ImportError:
        raise UsageError(
            "dl tune needs Optuna, which is not installed", "pip install 'dlcli[tune]'"
        ) from None
    import logging
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    logger = logging.getLogger("optuna")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())  # not Python's last-resort handler either
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def make_sampler(name: str, seed: int) -> Any:
    optuna = quiet_optuna()
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate: learning rate, weight decay and batch size interact; modelled jointly TPE
    # beats independent sampling on such spaces (Falkner et al. 2018, Optuna's benchmarks)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)


def make_pruner(name: str, folds: int | None) -> Any:
    """Median pruning on the per-epoch validation metric (of the first fold with --folds, then
    the running mean after each fold), after 5 trials and 3 epochs of each; Hyperband on
    request; none."""
    optuna = quiet_optuna()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)


def open_storage(url: str | None) -> Any:
    """None (in memory), or Optuna's RDB storage at `url` (sqlite:///file.db on one machine, a
    PostgreSQL/MySQL URL shared by many); an unreachable one is one line. Trials of a crashed
    process are marked failed after two missed heartbeats, so a resumed study does not wait."""
    if url is None:
        return None
    optuna = quiet_optuna()
    kwargs: dict = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # processes started together race to create a new database's tables
        try:
            with _sqlite_file_lock(url):  # ...which one machine's processes take turns at
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=90
                )
        except Exception as exc:  # sqlalchemy's many errors: a bad URL, a server that is down
            text = type(exc).__name__ + str(exc)[:300]
            if attempt < 4 and ("IntegrityError" in text or "already exists" in text):
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise UsageError(f"--storage {url}: cannot open it ({reason})") from None
    raise AssertionError("unreachable")


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """An exclusive flock on a sqlite:/// database file while Optuna creates (or checks) its
    tables: two processes started together would both see no tables and both create them. The
    flock is separate from SQLite's own fcntl locks; other URLs (servers) need none."""
    try:
        import fcntl
    except ImportError:  # Windows: the retries in open_storage are all there is
        fcntl = None  # type: ignore[assignment]
    path = url.removeprefix("sqlite:///")
    if fcntl is None or not url.startswith("sqlite:///") or not path or path.startswith(":memory:"):
        yield
        return
    try:
        fd = os.open(path.split("?")[0], os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a missing folder: let SQLAlchemy say so in its words
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def open_study(
    storage: Any, name: str | None, metric: str, sampler: Any, pruner: Any, url: str | None
) -> Any:
    """Create the study, or load it when `name` exists in the storage (resuming); a study made
    for another metric or direction is one line."""
    optuna = quiet_optuna()
    study_name = name or ("dl-tune" if storage is not None else None)
    try:
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=study_name,
            direction=direction(metric),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. the direction differs from the stored study's
        raise UsageError(f"--study {study_name}: {exc}", "pick another --study name") from None
    stored = study.user_attrs.get("metric")
    if stored is not None and stored != metric:
        raise UsageError(
            f"--study {study_name} in {url}: was run with --metric {stored}, not {metric}",
            "use the same --metric, or another --study name",
        )
    if stored is None:
        study.set_user_attr("metric", metric)
    return study


INTERRUPTED = "interrupted"  # the `error` of a trial stopped by Ctrl-C: it does not count


def finished(study: Any) -> dict[str, int]:
    """Counts of complete, pruned and failed trials (a trial cut short by Ctrl-C is none of
    them: a resumed study runs it again)."""
    from optuna.trial import TrialState

    counts = {"complete": 0, "pruned": 0, "failed": 0}
    names = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
    }
    for t in study.get_trials(deepcopy=False):
        if t.state in names and t.user_attrs.get("error") != INTERRUPTED:
            counts[names[t.state]] += 1
    return counts


class StopAt:
    """Stops the study (in every process sharing it) once `n` trials have finished."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, study: Any, trial: Any) -> None:
        if sum(finished(study).values()) >= self.n:
            study.stop()
