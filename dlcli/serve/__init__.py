"""`dl serve MODEL`: a stateless HTTP service over one model, on FastAPI and uvicorn (the `serve`
extra). `ServeConfig` travels from the command to every worker process; `app.py` builds the
application, `batcher.py` micro-batches concurrent requests, `bodies.py` reads request bodies and
`run.py` prepares the model and starts uvicorn (docs/serve.md)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from dlcli.errors import UsageError

CONFIG_ENV = "DLCLI_SERVE_CONFIG"  # internal: the command -> its worker processes (not a setting)


@dataclass(frozen=True)
class ServeConfig:
    """What every worker needs: the graph to run and the service's limits."""

    model: str  # the ONNX file served (a .pt model is exported to one at start)
    shown_as: str  # the model as the user named it (logs, /metadata)
    max_batch: int = 256  # rows per model run across concurrent requests (1 = no micro-batching)
    max_wait_ms: float = 2.0  # how long a run waits for more requests to join it
    max_body: int = 10 * 1024 * 1024  # bytes; larger bodies get 413

    def to_env(self) -> None:
        os.environ[CONFIG_ENV] = json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[CONFIG_ENV]))


def check_installed() -> None:
    """One line saying what to install when FastAPI, uvicorn or orjson is missing."""
    missing = []
    for module in ("fastapi", "uvicorn", "orjson"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        names = " and ".join(
            [", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing
        )
        raise UsageError(
            f"dl serve needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed",
            "pip install 'dlcli[serve]'",
        )
