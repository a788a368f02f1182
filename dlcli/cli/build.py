"""`dl build`: spec -> network -> layer table (output shapes, parameter counts), or the spec itself."""

from __future__ import annotations

import typer

from dlcli.cli.output import JSON, print_json


def _parse_shape(text: str) -> tuple[int, ...]:
    from dlcli.errors import UsageError

    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise UsageError(
            f"--input-shape '{text}': expected comma-separated positive integers, e.g. 30 or 3,64,64"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(
            f"--input-shape '{text}': expected comma-separated positive integers, e.g. 30 or 3,64,64"
        )
    return shape


def build(
    arch: str = typer.Option(None, "--arch", "-a", help="Built-in preset (default: mlp)."),
    spec: str = typer.Option(None, "--spec", "-s", help="Spec file (YAML or JSON)."),
    input_shape: str = typer.Option(
        None, "--input-shape", help="Per-sample input shape, e.g. 30 or 3,64,64."
    ),
    outputs: int = typer.Option(
        None, "--outputs", min=1, help="Output size (classes, or 1 for regression)."
    ),
    print_spec: bool = typer.Option(
        False, "--print-spec", help="Print the spec as YAML on stdout and exit."
    ),
    list_presets: bool = typer.Option(False, "--list", help="List the built-in presets."),
    list_layers: bool = typer.Option(
        False, "--layers", help="List the layer types a spec can use, with their options."
    ),
    max_model_gb: float = typer.Option(
        None,
        "--max-model-gb",
        help="Refuse networks that need more memory to train (default 4, or DL_MAX_MODEL_GB).",
    ),
    json_out: bool = JSON,
) -> None:
    """Build a network from a preset or spec file and show each layer's output shape and parameters."""
    import sys
    from pathlib import Path

    from dlcli.errors import UsageError
    from dlcli.spec import schema

    if list_presets:
        names = schema.preset_names()
        width = max(len(n) for n in names) + 1
        for name in names:
            doc = schema.read_spec_text(schema.preset_text(name), name)
            sys.stdout.write(f"{name:{width}s} {doc.get('description', '')}\n")
        return
    if list_layers:
        from dlcli.spec.registry import known_layers

        for d in known_layers():
            opts = [f for f in d.Options.model_fields if f not in ("name", "init")]
            alias = f" (also {', '.join(d.names[1:])})" if len(d.names) > 1 else ""
            sys.stdout.write(
                f"{d.names[0]:12s} {d.doc}{alias}  options: {', '.join(opts) or '-'}\n"
            )
        return
    if print_spec:
        if spec:
            schema.load_spec_file(spec)  # validate first: never print an invalid spec
            sys.stdout.write(Path(spec).read_text(encoding="utf-8"))
        else:
            sys.stdout.write(schema.preset_text(arch or "mlp"))
        return
    parsed, _ = schema.resolve_spec(spec, arch)
    image = parsed.input.by_kind().get("image", {}) if parsed.input else {}
    if input_shape is None and image.get("image_size"):  # the spec's own default image
        side = image["image_size"]
        input_shape = f"{image.get('channels', 3)},{side},{side}"
    if input_shape is None:
        raise UsageError(
            "dl build needs --input-shape (e.g. --input-shape 30, or 3,64,64 for images)"
        )
    shape = _parse_shape(input_shape)
    from dlcli import families
    from dlcli.console import console
    from dlcli.model.budget import model_budget
    from dlcli.model.summary import render_summary, summary_dict

    source = spec or f"preset {arch or 'mlp'}"
    with model_budget(max_model_gb):
        nets = families.get(parsed.family).build_networks(parsed, shape, outputs, source)
    title = parsed.name or spec or "network"
    if len(nets) == 1:  # one network: its table; else one per network (encoder, decoder...)
        (net,) = nets.values()
        if json_out:
            print_json(summary_dict(net))
        else:
            console().print(render_summary(net, title))
        return
    if json_out:
        print_json({name: summary_dict(net) for name, net in nets.items()})
    else:
        for name, net in nets.items():
            console().print(render_summary(net, f"{title}: {name}"))


def register(app: typer.Typer) -> None:
    app.command("build")(build)
