"""`dl serve GAN.onnx`: `POST /predict?samples=N&seed=S` answers one PNG grid of N generated
images, the picture `dl predict GAN.onnx --samples N --seed S -o grid.png` writes (numpy noise,
the same seed gives the same bytes). A generator takes no input rows, so nothing is batched: each
request runs the graph on a worker thread while the event loop goes on serving."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dlcli.imagegrid import grid_png, to_uint8
from dlcli.runtime.samples import MAX_GRID, images, latent_size
from dlcli.runtime.session import OnnxModel
from dlcli.serve.bodies import SOURCE, BadRequest

SEED_HEADER = "x-dl-seed"  # the seed an answer was drawn with (random when the request gave none)


@dataclass
class Generator:
    """A generator graph, checked at start (dl.latent, an `image` output)."""

    model: OnnxModel
    preprocessor: None = None  # no input rows: no encoder, no input columns

    def __post_init__(self) -> None:
        latent_size(self.model)

    @property
    def task(self) -> Any:
        return self.model.task

    def png(self, samples: int, seed: int) -> bytes:
        tiles = [to_uint8(batch) for _, batch in images(self.model, samples, seed)]
        return grid_png(np.concatenate(tiles))


def add_predict(
    app: FastAPI, config: Any, generator: Generator
) -> tuple[contextlib.AbstractAsyncContextManager, None]:
    """POST /predict on `app` (FastAPI answers it); the returned context runs for the app's
    lifespan (nothing here)."""

    @app.post("/predict", responses=RESPONSES, openapi_extra=QUERY)
    async def predict(request: Request) -> Response:
        try:
            samples, seed = _query(request)
        except BadRequest as bad:
            return JSONResponse({"detail": bad.message}, status_code=bad.status)
        request.scope["state"]["rows"] = samples
        png = await asyncio.to_thread(generator.png, samples, seed)
        return Response(png, media_type="image/png", headers={SEED_HEADER: str(seed)})

    return contextlib.nullcontext(), None


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"One PNG grid of the samples; the seed used in the {SEED_HEADER} header",
        "content": {"image/png": {}},
    },
    422: {"description": "A bad `samples` or `seed`: one line in `detail`"},
}


QUERY = {
    "parameters": [
        {"name": "samples", "in": "query", "required": True,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_GRID}},
        {"name": "seed", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0}},
    ]
}  # fmt: skip


def _query(request: Request) -> tuple[int, int]:
    """?samples=N (1 to MAX_GRID, required), ?seed=S (a whole number; random when absent)."""
    q = request.query_params
    text = q.get("samples")
    if text is None:
        raise BadRequest(
            422, f"{SOURCE}: give the number of images to generate, e.g. /predict?samples=16"
        )
    if not text.isdigit() or not 1 <= int(text) <= MAX_GRID:
        raise BadRequest(
            422, f"{SOURCE}: samples must be a whole number from 1 to {MAX_GRID:,}, got '{text}'"
        )
    seed = q.get("seed")
    if seed is not None and not seed.isdigit():
        raise BadRequest(422, f"{SOURCE}: seed must be a whole number >= 0, got '{seed}'")
    return int(text), int(seed) if seed is not None else secrets.randbits(31)
