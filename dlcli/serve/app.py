"""The FastAPI application of one worker: POST /predict, GET /health, GET /metadata, an OpenAPI
schema built from the model's input columns, and one log line per request on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from dlcli import __version__
from dlcli.runtime import OnnxModel, load
from dlcli.runtime.predict import Predictor, open_predictor
from dlcli.serve import ServeConfig, generate
from dlcli.serve.batcher import Ask, MicroBatcher
from dlcli.serve.bodies import SOURCE, BadRequest, read_body


def app_from_env() -> FastAPI:
    """The uvicorn factory of each worker process: the config the command left in the environment."""
    config = ServeConfig.from_env()
    return create_app(config, open_served(config.model))


def open_served(path: str) -> Any:
    """What answers /predict for the graph at `path`: a generator for a GAN, else a predictor of
    input rows (one line, before anything listens, when it cannot be run)."""
    model = load(path)
    if model.family in GRAPHS:
        return GRAPHS[model.family][0](model)
    return open_predictor(path, model)


def create_app(config: ServeConfig, served: Any) -> FastAPI:
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

    app.add_middleware(RequestLog)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return describe(config, served)

    running.append(add_predict(app, config, served))
    return app


AddPredict = Callable[[FastAPI, ServeConfig, Any], contextlib.AbstractAsyncContextManager]


def add_batched_predict(
    app: FastAPI, config: ServeConfig, predictor: Predictor
) -> contextlib.AbstractAsyncContextManager:
    """POST /predict of input rows, micro-batched; the returned context runs the batcher for the
    app's lifespan."""
    batcher = MicroBatcher(predictor, config.max_batch, config.max_wait_ms)

    async def predict(request: Request) -> Response:
        try:
            ask = _ask(request)
            body = await _read_limited(request, config.max_body)
            ctype = request.headers.get("content-type", "")
            rows = read_body(predictor.model.kind, ctype, body, predictor.preprocessor)
            request.scope["state"]["rows"] = len(rows)
            answer = await batcher.predict(rows, ask)
        except BadRequest as bad:
            return JSONResponse({"detail": bad.message}, status_code=bad.status)
        # the bytes the batch thread built: no per-request encoding of Python objects here
        return Response(answer, media_type="text/csv" if ask.csv else "application/json")

    # FastAPI's route documents /predict (OpenAPI from the model's columns); the requests are
    # answered by the same function as a plain ASGI route placed before it, which skips
    # FastAPI's per-request dependency and response machinery (0.1-0.3 ms a request measured,
    # a large share of what a request of a small model costs)
    app.post("/predict", openapi_extra=request_schema(predictor), responses=RESPONSES)(predict)
    app.router.routes.insert(0, Route("/predict", _Plain(predict), methods=["POST"]))

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    return running()


# family -> (its graph opened for serving, its /predict); other families: a runtime Predictor of
# input rows, micro-batched (add_batched_predict)
GRAPHS: dict[str, tuple[Callable[[OnnxModel], Any], AddPredict]] = {
    "gan": (generate.Generator, generate.add_predict)
}


class _Plain:
    """An `async (Request) -> Response` function as a plain ASGI app (Starlette calls a route's
    endpoint that is not a function as one)."""

    def __init__(self, answer: Callable[[Request], Any]) -> None:
        self.answer = answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        response = await self.answer(Request(scope, receive))
        await response(scope, receive, send)


class RequestLog:
    """One stderr line per request: method, path, status, input rows, latency (plain ASGI: a
    fraction of the cost of a `BaseHTTPMiddleware`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]
        scope.setdefault("state", {})["rows"] = 0

        async def sent(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            ms = (time.perf_counter() - start) * 1000
            sys.stderr.write(
                f"dl serve: {scope['method']} {scope['path']} {status[0]} "
                f"rows={scope['state'].get('rows', 0)} {ms:.1f}ms\n"
            )
            sys.stderr.flush()


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One record per input row: the columns of `dl predict` (CSV when Accept asks)"
    },
    413: {"description": "Body over --max-body"},
    415: {"description": "A content type this model does not take"},
    422: {"description": "A bad body: the CLI's one-line message in `detail`"},
}


def _ask(request: Request) -> Ask:
    """?proba=true, ?top_k=N, ?keep_columns=true (the flags of `dl predict`), and CSV when the
    Accept header asks for it."""
    csv = "text/csv" in request.headers.get("accept", "")
    if not request.scope.get("query_string"):
        return Ask(csv=csv)
    q = request.query_params
    flags = {}
    for name in ("proba", "keep_columns"):
        value = q.get(name, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise BadRequest(422, f"{SOURCE}: {name} must be true or false, got '{value}'")
        flags[name] = value in ("true", "1")
    text = q.get("top_k", "1")
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(422, f"{SOURCE}: top_k must be a whole number >= 1, got '{text}'")
    return Ask(flags["proba"], int(text), flags["keep_columns"], csv)


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is over `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(
            413, f"{SOURCE}: body of {int(declared):,} bytes is over --max-body {limit:,}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"{SOURCE}: body is over --max-body {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
