"""POST /predict of input rows on the raw ASGI messages: the headers read once from the scope, the
body from `receive`, the answer bytes (cut by the batcher) sent with two messages. What a request
of a small model costs is mostly what surrounds it, so this path skips FastAPI's middleware stack,
routing and Request/Response objects (FastAPI still documents the route: app.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from dlcli.serve import ServeConfig
from dlcli.serve.batcher import Ask, MicroBatcher
from dlcli.serve.bodies import SOURCE, BadRequest, read_body

JSON, CSV = b"application/json", b"text/csv; charset=utf-8"  # as Starlette's responses name them
HEADERS = (b"content-type", b"accept", b"content-length")  # the ones a request is read by
DISCONNECTED = 499  # logged when the client went away before its body arrived (nothing is sent)


class PredictRoute:
    """`await route(scope, receive, send)` answers one POST /predict and returns (status, input
    rows) for the log line; `answer` is the same without sending (FastAPI's documenting route)."""

    def __init__(self, config: ServeConfig, predictor: Any, batcher: MicroBatcher) -> None:
        self.predictor, self.batcher, self.max_body = predictor, batcher, config.max_body
        self.kind = predictor.model.kind

    async def __call__(self, scope: dict, receive: Any, send: Any) -> tuple[int, int]:
        status, media, body, rows = await self.answer(scope, receive)
        if status != DISCONNECTED:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", media), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})
        return status, rows

    async def answer(self, scope: dict, receive: Any) -> tuple[int, bytes, bytes, int]:
        """(status, content type, body, input rows) of the request in `scope`."""
        wanted: dict[bytes, str] = {}
        for name, value in scope["headers"]:  # lower-case names (ASGI); the first of repeats
            if name in HEADERS and name not in wanted:
                wanted[name] = value.decode("latin-1")
        ctype, accept, length = (wanted.get(name, "") for name in HEADERS)
        rows = 0
        try:
            ask = parse_ask(scope.get("query_string", b""), "text/csv" in accept)
            body = await read_limited(receive, length, self.max_body)
            if body is None:
                return DISCONNECTED, b"", b"", 0
            found = read_body(self.kind, ctype, body, self.predictor.preprocessor)
            rows = len(found)
            answer = await self.batcher.predict(found, ask)
        except BadRequest as bad:
            return bad.status, JSON, orjson.dumps({"detail": bad.message}), rows
        return 200, CSV if ask.csv else JSON, answer, rows


def parse_ask(query: bytes, csv: bool) -> Ask:
    """?proba=true, ?top_k=N, ?keep_columns=true (the flags of `dl predict`); CSV when Accept asks
    for it. The last of repeated parameters counts."""
    if not query:
        return Ask(csv=csv)
    q = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
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


async def read_limited(receive: Any, declared: str, limit: int) -> bytes | None:
    """The body, or 413 as soon as it is over `limit` bytes (declared or streamed); None when the
    client disconnected first."""
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(
            413, f"{SOURCE}: body of {int(declared):,} bytes is over --max-body {limit:,}"
        )
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the usual case: one message holds it all
    chunks, size = [body], len(body)
    while True:
        if size > limit:
            raise BadRequest(413, f"{SOURCE}: body is over --max-body {limit:,} bytes")
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
