"""Start `dl serve`: check the extra, open the model (a .pt is exported to a verified ONNX graph
first, so every model is served by the same onnxruntime engine), then uvicorn with N workers. Any
problem with the model is one line and exit 2 before a socket is bound."""

from __future__ import annotations

import contextlib
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.serve import ServeConfig, check_installed

GRACE_S = 30  # SIGTERM: seconds in-flight requests get to finish


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1


def exported(model: str, folder: Path) -> str:
    """`model` (a model file of `dl train`) as a verified ONNX graph in `folder`."""
    from dlcli import families, modelfile
    from dlcli.console import info
    from dlcli.export import FORMATS

    data = modelfile.load(model)
    plan = families.of_model(data).export_graphs(data, model)
    result = FORMATS["onnx"].write(plan, model, str(folder / "model.onnx"), 1e-4)
    info(
        f"dl serve: {model} exported for serving, onnxruntime vs PyTorch max abs difference "
        f"{result['max_abs_diff']:.2e}"
    )
    return str(result["path"])


def serve(model: str, listen: Listen, max_batch: int, max_wait_ms: float, max_body: int) -> None:
    check_installed()
    with contextlib.ExitStack() as stack:
        path = model
        if not model.lower().endswith(".onnx"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dl-serve-")))
            path = exported(model, folder)
        from dlcli.serve.app import open_served

        served = open_served(path)  # the model's problems stop us here, before listening
        config = ServeConfig(path, model, max_batch, max_wait_ms, max_body)
        _run(config, served, listen)


def _run(config: ServeConfig, served: Any, listen: Listen) -> None:
    import uvicorn

    from dlcli.console import info
    from dlcli.serve.app import create_app

    common = dict(
        host=listen.host,
        port=listen.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACE_S,
    )
    where = f"http://{listen.host}:{listen.port}"
    info(
        f"dl serve: {config.shown_as} on {where} ({listen.workers} worker"
        f"{'s' if listen.workers > 1 else ''}, max batch {config.max_batch}); docs at {where}/docs"
    )
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with these
    # handlers in place that is a no-op, so a SIGTERM that finished every request exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if listen.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(config, served), **common)).run()
        return
    config.to_env()  # each worker process builds its own app from it
    uvicorn.run("dlcli.serve.app:app_from_env", factory=True, workers=listen.workers, **common)
