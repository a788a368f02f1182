"""`dl train DATA`: fit a model from a preset or spec and write a model file plus its run folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from dlcli.engine.train_job import TrainRequest

from dlcli.cli.output import IMAGE_COLUMN, INPUT_FORMAT, JSON, QUIET, print_json


def train(
    ctx: typer.Context,
    data: str = typer.Argument(
        ...,
        help="Training data: a table file (CSV, Parquet, JSON Lines, Feather, .csv.gz/.zst/.bz2; - for "
        "stdin with --input-format); a folder of images (or of .txt files) in one sub-folder per "
        "class; a table of image paths and labels; or a folder of MNIST IDX files.",
    ),
    arch: str = typer.Option(
        None,
        "--arch",
        "-a",
        help="Built-in architecture preset (default: mlp). See `dl build --list`.",
    ),
    spec: str = typer.Option(
        None, "--spec", "-s", help="Network spec file (YAML or JSON); overrides --arch."
    ),
    output: str = typer.Option("model.pt", "--output", "-o", help="Model file to write."),
    target: str = typer.Option(
        None, "--target", "-t", help="Label column (default: the last column)."
    ),
    task: str = typer.Option(
        None, "--task", help="classification or regression (default: inferred from the target)."
    ),
    val: str = typer.Option(
        None, "--val", help="Validation CSV (default: a stratified split of DATA)."
    ),
    val_split: float = typer.Option(
        0.2, "--val-split", help="Share of DATA held out for validation."
    ),
    stream: bool = typer.Option(
        None,
        "--stream/--no-stream",
        help="Tables: read the file from disk in chunks every epoch (bounded memory) instead of "
        "loading it (default: streamed when larger than a fifth of the free memory).",
    ),
    epochs: int = typer.Option(
        None, "--epochs", "-e", min=1, help="Maximum epochs (default: from the data size, 10-200)."
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", "-b", min=1, help="Batch size (default: from the data size)."
    ),
    lr: float = typer.Option(
        None, "--lr", min=0.0, help="Learning rate (default: from the spec, else 1e-3)."
    ),
    optimizer: str = typer.Option(None, "--optimizer", help="sgd, adam, adamw or rmsprop."),
    weight_decay: float = typer.Option(
        None, "--weight-decay", min=0.0, help="L2 penalty / decoupled weight decay."
    ),
    momentum: float = typer.Option(
        None, "--momentum", min=0.0, max=0.999, help="Momentum for sgd and rmsprop."
    ),
    schedule: str = typer.Option(
        None, "--schedule", help="Learning-rate schedule: none, step, cosine or onecycle."
    ),
    loss: str = typer.Option(
        None, "--loss", help="cross_entropy, bce, mse, l1 or huber (default: from the task)."
    ),
    patience: int = typer.Option(
        None,
        "--patience",
        min=0,
        help="Early stopping: epochs without validation improvement (0: off).",
    ),
    class_weights: str = typer.Option(
        None, "--class-weights", help="none or balanced (weights classes by inverse frequency)."
    ),
    grad_clip: float = typer.Option(
        None, "--grad-clip", min=0.0, help="Clip the gradient norm to this value (0: off)."
    ),
    label_smoothing: float = typer.Option(
        None, "--label-smoothing", min=0.0, max=0.99, help="Label smoothing for classification."
    ),
    refit: bool = typer.Option(
        None,
        "--refit/--no-refit",
        help="After early stopping, train afresh on training + validation rows for the best "
        "epoch count and save that (default: from the spec; the bow preset does).",
    ),
    seed: int = typer.Option(
        None,
        "--seed",
        min=0,
        max=2**32 - 1,
        help="Random seed (default 42); CPU runs are reproducible bit for bit.",
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32 (default), bf16 or fp16: mixed-precision autocast (fp16 on CUDA only).",
    ),
    compile_: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the network (eager if that fails)."
    ),
    devices: int = typer.Option(
        None,
        "--devices",
        min=1,
        help="Train on N local GPUs (or N CPU processes with --device cpu) with DDP via torchrun.",
    ),
    image_size: int = typer.Option(
        None,
        "--image-size",
        help="Images: side of the square the images are resized to (default: from the data, at most 128).",
    ),
    grayscale: bool = typer.Option(False, "--grayscale", help="Images: train on one channel."),
    image_column: str = IMAGE_COLUMN,
    text_column: str = typer.Option(
        None, "--text-column", help="Text: the column holding the text (default: detected)."
    ),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Text: word (default) or char."),
    min_freq: int = typer.Option(
        None, "--min-freq", min=1, help="Text: keep words seen at least this often (default 2)."
    ),
    max_vocab: int = typer.Option(
        None, "--max-vocab", min=10, help="Text: vocabulary size limit (default 20000)."
    ),
    max_length: int = typer.Option(
        None,
        "--max-length",
        min=1,
        help="Text: tokens kept per text (default: 95th percentile of the training texts).",
    ),
    window: int = typer.Option(
        None,
        "--window",
        min=1,
        help="Time series: steps of history per prediction (turns a CSV into a series; with "
        "--horizon alone it defaults to one season of the data).",
    ),
    horizon: int = typer.Option(
        None,
        "--horizon",
        min=1,
        help="Time series: steps ahead to predict (default 1; turns a CSV into a series too).",
    ),
    augment: str = typer.Option(
        None, "--augment", help="Image augmentations, comma-separated: flip, crop, rotate, jitter."
    ),
    threshold_percentile: float = typer.Option(
        None,
        "--threshold-percentile",
        min=0.0,
        max=100.0,
        help="Autoencoders: flag rows scoring above this percentile of the validation scores "
        "(default 99).",
    ),
    init_from: str = typer.Option(
        None,
        "--init-from",
        help="Transfer learning: start from this model's weights (the head is replaced if the classes differ).",
    ),
    freeze: str = typer.Option(
        None,
        "--freeze",
        help="With --init-from, --weights or --embeddings: keep these layers fixed, by name or "
        "index range (e.g. features, backbone, embeddings, 0:6).",
    ),
    weights: str = typer.Option(
        None,
        "--weights",
        help="Pretrained backbone (--arch resnet18/34/50, mobilenet_v3_small): imagenet (downloaded "
        "once into the torch hub cache, checksum verified) or a torchvision .pth/.safetensors file.",
    ),
    fine_tune_epochs: int = typer.Option(
        None,
        "--fine-tune-epochs",
        min=0,
        help="After --weights or --init-from: first train only the new layers for N epochs, the "
        "loaded ones frozen, then all with the loaded ones at lr/10 (default: a tenth of the "
        "epochs, 1-3, with --weights; 0 = off, the default with --init-from).",
    ),
    embeddings: str = typer.Option(
        None,
        "--embeddings",
        help="Text: start the embedding layer from pretrained word vectors (GloVe, word2vec text "
        "or fastText .vec; .gz too); its width becomes theirs.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from <model>.run/checkpoint.pt."
    ),
    plots: bool = typer.Option(
        True, "--plots/--no-plots", help="Write the learning-curve and confusion-matrix PNGs."
    ),
    max_model_gb: float = typer.Option(
        None,
        "--max-model-gb",
        help="Refuse networks that need more memory to train (default 4, or DL_MAX_MODEL_GB).",
    ),
    input_format: str = INPUT_FORMAT,
    quiet: bool = QUIET,
    json_out: bool = JSON,
) -> None:
    """Train a model on DATA and save it (default ./model.pt), with metrics and plots in model.run/."""
    from dlcli.console import console, set_quiet
    from dlcli.engine import distributed

    quiet = quiet or not distributed.is_main()  # under torchrun only rank 0 prints
    json_out = json_out and distributed.is_main()
    set_quiet(quiet)
    # --init-from is no input here: it is read whole before the model file is replaced, and
    # `dl train new/ --init-from model.pt` (default -o model.pt) fine-tunes in place on purpose
    check_choices(locals())
    refuse_overwriting(output, [data, val, spec, weights, embeddings])
    if devices is not None and devices > 1:  # start N processes that each run this command
        argv = _command_line(ctx, drop=("devices",))
        raise SystemExit(distributed.launch(devices, argv, device))
    from dlcli.data.readers.stdin import check_input_format, spooled
    from dlcli.families import run_training
    from dlcli.model.budget import model_budget

    check_input_format(input_format, [data])
    with (
        spooled([data], input_format, whole=True) as (data,),
        model_budget(max_model_gb, batch_size),
    ):
        summary = run_training(train_request(locals()))
    if not distributed.is_main():  # rank 0 wrote the files; this rank's work is done
        distributed.exit_worker()
    if json_out:
        print_json(summary)
    if not quiet:
        from dlcli.cli.tables import metrics_table

        if summary.get("metrics"):  # a GAN has no validation metrics
            console().print(metrics_table(summary["metrics"], "validation"))
        best, run = summary.get("best_epoch"), summary["epochs_run"]
        epochs = f"best epoch {best} of {run}" if best else f"{run} epoch{'s' if run != 1 else ''}"
        console().print(
            f"saved [bold]{summary['model']}[/] ({epochs}); run files in {summary['run_dir']}/"
        )


def check_choices(given: dict) -> None:
    """The train flags whose values are names, checked before any work (one line each)."""
    from dlcli.errors import UsageError

    class_weights, task, precision = (given.get(k) for k in ("class_weights", "task", "precision"))
    if class_weights is not None and class_weights not in ("none", "balanced"):
        raise UsageError(f"--class-weights must be none or balanced, got '{class_weights}'")
    if task is not None and task not in ("classification", "regression"):
        raise UsageError(f"--task must be classification or regression, got '{task}'")
    if precision is not None and precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be fp32, bf16 or fp16, got '{precision}'")


# the train flags that are TrainConfig fields (command line -> `overrides`)
OVERRIDES = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "momentum",
    "schedule",
    "loss",
    "patience",
    "class_weights",
    "grad_clip",
    "label_smoothing",
    "refit",
    "seed",
    "device",
    "precision",
    "augment",
    "threshold_percentile",
    "fine_tune_epochs",
)


def train_request(given: dict) -> TrainRequest:
    """The TrainRequest for the train flags in `given` (a command's parameters by name): shared by
    `dl train` and `dl tune`."""
    from dlcli.data.sources import DataOptions
    from dlcli.engine.train_job import TrainRequest

    overrides = {k: given.get(k) for k in OVERRIDES}
    overrides["compile"] = given.get("compile_")
    opts = DataOptions(
        given.get("target"),
        given.get("task"),
        given.get("val"),
        given.get("val_split", 0.2),
        extra=_extra(given),
        stream=given.get("stream"),
    )
    return TrainRequest(
        given["data"],
        given.get("output") or "model.pt",
        given.get("arch"),
        given.get("spec"),
        opts,
        overrides,
        bool(given.get("resume")),
        bool(given.get("plots", True)),
        init_from=given.get("init_from"),
        freeze=given.get("freeze"),
        weights=given.get("weights"),
        embeddings=given.get("embeddings"),
    )


def refuse_overwriting(output: str, inputs: list[str | None]) -> None:
    """The model file and its run folder never replace an input, and both can be written
    (checked before training, so no training is lost to them)."""
    from dlcli import modelfile
    from dlcli.fileio import check_writable, refuse_overwriting_inputs

    refuse_overwriting_inputs("-o", output, inputs)
    run = modelfile.run_dir(output)
    refuse_overwriting_inputs("run folder", run, inputs, folder=True, hint="pick another -o")
    check_writable("-o", output)
    check_writable("-o", run, folder=True)  # its run folder: metrics, plots, checkpoints


def _extra(given: dict) -> dict:
    """Per data kind options (DataOptions.extra); a kind's dict only when one of its flags is set."""
    from dlcli.data.kinds import option_values

    return option_values(given)


def _command_line(ctx: typer.Context, drop: tuple[str, ...] = ()) -> list[str]:
    """The command line (after `dl`) that gives the same parameters as click context `ctx`,
    without the parameters named in `drop`, and only options that differ from their defaults."""
    args: list[str] = [str(ctx.info_name)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in drop or value is None:
            continue
        if param.param_type_name == "argument":
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        if value == param.default:
            continue
        if getattr(param, "is_flag", False) and isinstance(value, bool):
            names = param.opts if value else param.secondary_opts
            args.append(_long(names))
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            args += [_long(param.opts), str(v)]
    return args


def _long(names: list[str]) -> str:
    return next((n for n in names if n.startswith("--")), names[0])


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)
