"""Request bodies -> input frames, by content type and data kind: `READERS[kind][media type]`.
A bad body is a `BadRequest` carrying its HTTP status and the CLI's one-line message."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import orjson
import pandas as pd

SOURCE = "request"  # how error lines name the body, as the CLI names a file


class BadRequest(Exception):
    """A request the service refuses: `status` (413, 415, 422) and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def json_records(body: bytes, encoder: Any = None) -> list[dict]:
    """A JSON list of records (column -> value), or one record."""
    try:
        doc = orjson.loads(
            body
        )  # several times faster than json for the one-row bodies of a service
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and Python's json takes: NaN and Infinity (json.dumps writes them)
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(422, f"{SOURCE}: not valid JSON ({exc})") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise BadRequest(422, f"{SOURCE}: expected a JSON list of records (column -> value)")
    if not doc:
        raise BadRequest(422, f"{SOURCE}: no records to predict")
    return doc  # records: the batcher builds one frame of every request in a batch


def csv_rows(body: bytes, encoder: Any = None) -> pd.DataFrame:
    """CSV text with a header row; cells kept as written (the model's rules parse them)."""
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BadRequest(
            422, f"{SOURCE}: not readable as CSV ({str(exc).splitlines()[0]})"
        ) from None
    if frame.empty:
        raise BadRequest(422, f"{SOURCE}: no data rows below the CSV header")
    return frame


def text_lines(body: bytes, encoder: Any) -> pd.DataFrame:
    """One text per line (UTF-8), as `dl predict TEXT_MODEL -` reads stdin."""
    try:
        lines = body.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadRequest(422, f"{SOURCE}: the body is not UTF-8 text") from None
    return pd.DataFrame({encoder.text_column: lines})


FILE_BYTES = "__file_bytes__"  # the column of uploaded files' bytes (never shown)


def image_files(body: bytes, encoder: Any, content_type: str = "") -> pd.DataFrame:
    """multipart/form-data: every file field is one image (`path` = its file name)."""
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
    names, blobs = [], []
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_filename()
            if name is not None:
                names.append(name)
                blobs.append(part.get_payload(decode=True) or b"")
    if not names:
        raise BadRequest(
            422,
            f"{SOURCE}: no image files in the form (send them as file fields, e.g. curl -F file=@cat.jpg)",
        )
    return pd.DataFrame({"path": names, FILE_BYTES: blobs})


Rows = pd.DataFrame | list[dict]  # a frame, or JSON records (column -> value)
Reader = Callable[..., Rows]  # (body, the model's input encoder[, full content type])
READERS: dict[str, dict[str, Reader]] = {
    "tabular": {"application/json": json_records, "text/csv": csv_rows},
    "text": {"text/plain": text_lines, "application/json": json_records, "text/csv": csv_rows},
    "image": {"multipart/form-data": image_files},
    "series": {"application/json": json_records, "text/csv": csv_rows},  # one history a request
}


def read_body(kind: str, content_type: str, body: bytes, encoder: Any = None) -> Rows:
    """The input rows of a request body; 415 for a type this model does not take, 422 if empty."""
    media = content_type.split(";")[0].strip().lower()
    readers = READERS.get(kind, {})
    if media.endswith("+json"):
        media = "application/json"
    if media not in readers:
        takes = " or ".join(readers) or "nothing yet"
        raise BadRequest(
            415,
            f"content type '{media or 'none'}' not accepted: "
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} model takes {takes}",
        )
    if not body.strip():
        raise BadRequest(422, f"{SOURCE}: empty body; send the rows to predict")
    if media == "multipart/form-data":
        return readers[media](body, encoder, content_type)
    return readers[media](body, encoder)
