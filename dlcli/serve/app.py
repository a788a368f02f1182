"""The FastAPI application of one worker: POST /predict, GET /health, GET /metadata, an OpenAPI
schema built from the model's input columns, and one log line per request on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from dlcli import __version__
from dlcli.runtime import OnnxModel, load
from dlcli.runtime.predict import Predictor, open_predictor
from dlcli.serve import ServeConfig, generate
from dlcli.serve.batcher import MicroBatcher
from dlcli.serve.route import PredictRoute


def app_from_env() -> Service:
    """The uvicorn factory of each worker process: the config the command left in the environment."""
    config = ServeConfig.from_env()
    return create_app(config, open_served(config.model))


def open_served(path: str) -> Any:
    """What answers /predict for the graph at `path`: a generator for a GAN, else a predictor of
    input rows (one line, before anything listens, when it cannot be run)."""
    model = load(path, spinning=False)  # a service: idle threads must not busy-wait
    if model.family in GRAPHS:
        return GRAPHS[model.family][0](model)
    return open_predictor(path, model)


def create_app(config: ServeConfig, served: Any) -> Service:
    """The app of one worker over `served` (a runtime Predictor, or a serve.generate.Generator)."""
    add_predict = GRAPHS.get(served.model.family, (None, add_batched_predict))[1]
    running: list[contextlib.AbstractAsyncContextManager] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running[0]:
            yield

    app = FastAPI(
        title=f"dl serve {config.shown_as}",
        version=__version__,
        description=f"Predictions of the {served.model.kind} {served.task.name} model "
        f"{config.shown_as}, as `dl predict` gives them.",
        lifespan=lifespan,
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return describe(config, served)

    context, route = add_predict(app, config, served)
    running.append(context)
    return Service(app, route)


Route = Callable[[dict, Any, Any], Awaitable[tuple[int, int]]]  # ASGI -> (status, input rows)
AddPredict = Callable[
    [FastAPI, ServeConfig, Any], tuple[contextlib.AbstractAsyncContextManager, Route | None]
]


def add_batched_predict(
    app: FastAPI, config: ServeConfig, predictor: Predictor
) -> tuple[contextlib.AbstractAsyncContextManager, Route]:
    """POST /predict of input rows, micro-batched: the context that runs the batcher for the
    app's lifespan, and the raw ASGI route that answers (route.py)."""
    batcher = MicroBatcher(predictor, config.max_batch, config.max_wait_ms)
    route = PredictRoute(config, predictor, batcher)

    # FastAPI documents /predict (OpenAPI from the model's columns); Service answers it with
    # `route` before FastAPI sees the request, which saves FastAPI's middleware, routing and
    # Request/Response objects (a large share of what a request of a small model costs). This
    # endpoint gives the same answers, for a request that reaches FastAPI some other way.
    @app.post("/predict", openapi_extra=request_schema(predictor), responses=RESPONSES)
    async def predict(request: Request) -> Response:
        status, media, body, rows = await route.answer(request.scope, request.receive)
        request.scope.setdefault("state", {})["rows"] = rows
        return Response(body, status, headers={"content-type": media.decode()})

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    return running(), route


# family -> (its graph opened for serving, its /predict); other families: a runtime Predictor of
# input rows, micro-batched (add_batched_predict)
GRAPHS: dict[str, tuple[Callable[[OnnxModel], Any], AddPredict]] = {
    "gan": (generate.Generator, generate.add_predict)
}


class Service:
    """The ASGI app of one worker: POST /predict of input rows straight to its `route` when there
    is one, every other request to FastAPI (docs, /health, /metadata, a GAN's /predict, the
    lifespan); one stderr line per request: method, path, status, input rows, latency."""

    def __init__(self, api: FastAPI, route: Route | None) -> None:
        self.api, self.route = api, route

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        start, status = time.perf_counter(), [500, 0]  # status sent, input rows
        try:
            if self.route is not None and scope["path"] == "/predict" and scope["method"] == "POST":
                status[:] = await self.route(scope, receive, send)
            else:
                await self.api(scope, receive, _noting_status(send, status))
                status[1] = scope.get("state", {}).get("rows", 0)
        finally:
            ms = (time.perf_counter() - start) * 1000
            sys.stderr.write(
                f"dl serve: {scope['method']} {scope['path']} {status[0]} rows={status[1]} "
                f"{ms:.1f}ms\n"
            )
            sys.stderr.flush()


def _noting_status(send: Any, status: list[int]) -> Any:
    """`send` that also notes the status it sends in `status[0]`."""

    async def sent(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        await send(message)

    return sent


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One record per input row: the columns of `dl predict` (CSV when Accept asks)"
    },
    413: {"description": "Body over --max-body"},
    415: {"description": "A content type this model does not take"},
    422: {"description": "A bad body: the CLI's one-line message in `detail`"},
}


def describe(config: ServeConfig, predictor: Predictor) -> dict[str, Any]:
    """GET /metadata: what the model predicts from what."""
    model, encoder = predictor.model, predictor.preprocessor
    about: dict[str, Any] = {
        "model": config.shown_as,
        "family": model.family,
        "data_kind": model.kind,
        "task": model.task.name,
        "classes": model.classes or None,
        "target": model.meta.get("dl.target"),
        "dl_version": model.meta.get("dl.version"),
        "max_batch": config.max_batch,
    }
    schema = getattr(encoder, "input_schema", None)
    categories = getattr(encoder, "categories", {})
    if schema is not None:
        about["input_columns"] = {
            c: {"type": t, **({"categories": categories[c]} if c in categories else {})}
            for c, t in schema().items()
        }
    return about


def request_schema(predictor: Predictor) -> dict[str, Any]:
    """The OpenAPI request body of /predict, from the model's real input columns and types."""
    schema = getattr(predictor.preprocessor, "input_schema", None)
    if schema is None:
        return {}
    props = {c: {"anyOf": [{"type": t}, {"type": "null"}], "title": c} for c, t in schema().items()}
    record = {"type": "object", "properties": props, "required": list(props)}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": record}},
                "text/csv": {"schema": {"type": "string", "description": "CSV with a header row"}},
                **(
                    {"text/plain": {"schema": {"type": "string", "description": "one text a line"}}}
                    if predictor.model.kind == "text"
                    else {}
                ),
            },
        }
    }
