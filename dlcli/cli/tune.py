"""`dl tune DATA`: hyperparameter search with Optuna over the shared train job. It takes every
`dl train` flag (a flag given fixes that value and takes it out of the search) plus its own."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from dlcli.cli import train as train_cmd
from dlcli.cli.output import print_json

# train flags that make no sense for a search (it has its own -o and --plots)
NOT_SHARED = {"ctx", "resume", "devices", "output", "plots", "json_out", "quiet"}

OWN = {
    "output": typer.Option(
        "best.pt", "--output", "-o", help="The best model; the search's files go to <name>.tune/."
    ),
    "space": typer.Option(
        None,
        "--space",
        help="Search space: a spec in which any value may be a distribution, e.g. "
        "dense: {choice: [64, 128]} (default: the preset's own space).",
    ),
    "trials": typer.Option(20, "--trials", "-n", min=1, help="Trials in the study (all runs)."),
    "timeout": typer.Option(
        None, "--timeout", help="Stop starting trials after this long: 90s, 20m, 1h30m."
    ),
    "jobs": typer.Option(1, "--jobs", "-j", min=1, max=64, help="Trials run at once."),
    "folds": typer.Option(
        None,
        "--folds",
        min=1,
        max=20,
        help="K-fold cross-validation per trial (stratified; chronological for series); "
        "1: one validation split. Default: 5 on tables under 2,000 rows, else 1.",
    ),
    "metric": typer.Option(
        "loss", "--metric", help="Validation metric to optimise (any `dl evaluate` reports)."
    ),
    "storage": typer.Option(
        None,
        "--storage",
        help="Optuna storage URL (sqlite:///tune.db; a shared database for many machines).",
    ),
    "study": typer.Option(None, "--study", help="Study name in the storage (resumable)."),
    "sampler": typer.Option("tpe", "--sampler", help="tpe (default) or random."),
    "pruner": typer.Option("median", "--pruner", help="median (default), hyperband or none."),
    "plots": typer.Option(True, "--plots/--no-plots", help="Write history.png, importance.png."),
    "quiet": typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    "json_out": typer.Option(False, "--json", help="Print the result as JSON on stdout."),
}


TYPES = {name: str for name in OWN} | {"trials": int, "jobs": int, "folds": int}
TYPES |= {"plots": bool, "quiet": bool, "json_out": bool}


def tune(**params: Any) -> None:
    """Search hyperparameters for DATA with Optuna; writes the best model and <name>.tune/."""
    from dlcli.console import console, set_quiet
    from dlcli.errors import UsageError
    from dlcli.tune import study as studies

    set_quiet(params["quiet"])
    train_cmd.check_choices(params)
    for flag, value, known in (
        ("--sampler", params["sampler"], studies.SAMPLERS),
        ("--pruner", params["pruner"], studies.PRUNERS),
    ):
        if value not in known:
            raise UsageError(f"{flag} must be {' or '.join(known)}, got '{value}'")
    timeout = studies.parse_timeout(params["timeout"])
    from dlcli.data.readers.stdin import check_input_format

    check_input_format(params["input_format"], [params["data"]])
    output = params["output"]
    inputs = [params["data"], params["val"], params["space"]]
    train_cmd.refuse_overwriting(output, inputs)
    from dlcli.fileio import check_writable, refuse_overwriting_inputs
    from dlcli.tune import tune_dir

    folder = tune_dir(output)
    refuse_overwriting_inputs("search folder", folder, inputs, folder=True, hint="pick another -o")
    check_writable("-o", folder, folder=True)
    from dlcli import families
    from dlcli.tune.search import TuneRequest, run_tune

    req = TuneRequest(
        train_cmd.train_request({**params, "plots": False}),
        space=params["space"],
        trials=params["trials"],
        timeout=timeout,
        jobs=params["jobs"],
        folds=params["folds"],
        metric=params["metric"],
        storage=params["storage"],
        study=params["study"],
        sampler=params["sampler"],
        pruner=params["pruner"],
        plots=params["plots"],
    )
    from dlcli.data.readers.stdin import spooled
    from dlcli.model.budget import model_budget

    with (
        spooled([params["data"]], params["input_format"], whole=True) as (data,),
        model_budget(params.get("max_model_gb"), params.get("batch_size")),
    ):
        req.train.data = data
        summary = run_tune(req, families)
    if params["json_out"]:
        print_json(summary)
    if not params["quiet"]:
        console().print(
            f"best {summary['metric']} {summary['best_value']:.4g} (trial "
            f"{summary['best_trial']}); saved [bold]{summary['model']}[/]; "
            f"search files in {summary['folder']}/"
        )


def _signature() -> inspect.Signature:
    """`dl train`'s parameters (less NOT_SHARED) followed by the search's own."""
    shared = [
        p
        for p in inspect.signature(train_cmd.train, eval_str=True).parameters.values()
        if p.name not in NOT_SHARED
    ]
    own = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=TYPES[name])
        for name, opt in OWN.items()
    ]
    shared = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in shared]
    return inspect.Signature(shared + own)


tune.__signature__ = _signature()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("tune", no_args_is_help=True)(tune)
