"""`dl serve`'s micro-batcher and its POST /predict in process, on a small real ONNX graph built
here (features -> softmax(x W + b), with the `dl.*` metadata of a table classifier): every request
gets its own rows back, in order, equal to running it alone; a bad request fails alone;
`--max-batch` bounds a run's rows and `--max-wait-ms` how long a request waits for others (less
once the usual company is in); the raw route answers as FastAPI's documenting one."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("orjson")
onnx = pytest.importorskip("onnx")

from dlcli.engine.outputs import CsvWriter, records  # noqa: E402
from dlcli.runtime.predict import FrameOptions, open_predictor  # noqa: E402
from dlcli.serve.batcher import Ask, MicroBatcher  # noqa: E402
from dlcli.serve.bodies import BadRequest  # noqa: E402

COLUMNS = ["size", "colour"]
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "t",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "dl.format_version": "1",
        "dl.task": "classification",
        "dl.input_columns": json.dumps(COLUMNS),
        "dl.column_kinds": json.dumps({"size": "numeric", "colour": "categorical"}),
        "dl.categories": json.dumps({"colour": ["red", "green"]}),
        "dl.classes": json.dumps(CLASSES),
    }
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    path = Path(tmp_path_factory.mktemp("graph")) / "t.onnx"
    onnx.save(model, path)
    return open_predictor(str(path))


def rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"size": (start + i) * 0.5, "colour": ["red", "green", "blue"][i % 3]} for i in range(n)
    ]


def alone(predictor, recs: list[dict], ask: Ask) -> pd.DataFrame:
    """The prediction table of `recs` run on their own, without the batcher."""
    frame = pd.DataFrame.from_records(recs)
    x = predictor.preprocessor.matrix(frame, "request")
    keep = frame if ask.keep else pd.DataFrame(index=range(len(recs)))
    return predictor.frame(keep, x, FrameOptions(ask.proba, ask.top_k))


class Recording(MicroBatcher):
    """The batcher, noting the rows of each model run."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.runs: list[list[int]] = []

    def _run(self, jobs):
        self.runs.append([len(j.rows) for j in jobs])
        return super()._run(jobs)


async def answer_all(batcher: MicroBatcher, bodies: list, asks: list[Ask]) -> list:
    """Queue every request at once (before the loop takes any) and collect the answers."""
    tasks = [
        asyncio.ensure_future(batcher.predict(b, a)) for b, a in zip(bodies, asks, strict=True)
    ]
    batcher.start()
    try:
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await batcher.stop()


def test_each_request_gets_its_own_rows_in_order_as_if_run_alone(predictor) -> None:
    bodies = [rows(1 + i % 3, 10 * i) for i in range(8)]
    asks = [Ask(proba=i % 2 == 0, top_k=1 + i % 3, keep=i == 5, csv=i == 6) for i in range(8)]
    batcher = Recording(predictor, 256, 5.0)
    got = asyncio.run(answer_all(batcher, bodies, asks))
    assert batcher.runs == [[len(b) for b in bodies]]  # one model run for all eight
    for body, ask, answer in zip(bodies, asks, got, strict=True):
        want = alone(predictor, body, ask)
        if ask.csv:
            buf = io.StringIO()
            CsvWriter(buf).write(want)
            assert answer.decode() == buf.getvalue()  # byte for byte, as dl predict writes it
        else:
            assert json.loads(answer) == records(want)  # the values of dl predict's jsonl


def test_a_bad_request_fails_alone(predictor) -> None:
    bodies = [rows(2), [{"size": "huge", "colour": "red"}], rows(1, 5), [{"colour": "red"}]]
    asks = [Ask()] * 4
    got = asyncio.run(answer_all(Recording(predictor, 256, 5.0), bodies, asks))
    assert isinstance(got[1], BadRequest) and got[1].status == 422
    assert got[1].message == (
        "request: column 'size', row 1: 'huge' is not a number "
        "(the model expects numbers in this column)"
    )
    assert isinstance(got[3], BadRequest)
    assert got[3].message == "request: missing column 'size' that the model was trained on"
    for i in (0, 2):
        assert json.loads(got[i]) == records(alone(predictor, bodies[i], Ask()))


def test_json_answers_write_missing_and_infinite_values_as_null(predictor) -> None:
    """Kept input values: NaN and infinity are null, as engine.outputs.records gives them; an
    integer over 64 bits (json reads one in a body with NaN, which orjson refuses) is kept."""
    big = 2**70
    body = [
        {"size": 1.0, "colour": "red", "note": float("nan")},
        {**rows(1)[0], "note": float("inf")},
    ]
    with_big = [{**rows(1)[0], "note": big}]
    got = asyncio.run(
        answer_all(MicroBatcher(predictor, 256, 1.0), [body, with_big], [Ask(keep=True)] * 2)
    )
    assert [r["note"] for r in json.loads(got[0])] == [None, None]
    assert json.loads(got[1])[0]["note"] == big
    assert json.loads(got[1]) == records(alone(predictor, with_big, Ask(keep=True)))


def test_max_batch_bounds_the_rows_of_a_run(predictor) -> None:
    """Requests join a run while its rows stay within --max-batch; the next one starts the next
    run (one request over the bound runs alone); --max-batch 1 runs every request alone."""
    sizes = [3, 1, 2, 5, 1, 1]
    batcher = Recording(predictor, 4, 50.0)
    got = asyncio.run(answer_all(batcher, [rows(n) for n in sizes], [Ask()] * len(sizes)))
    assert all(isinstance(g, bytes) for g in got)
    assert batcher.runs == [[3, 1], [2], [5], [1, 1]]
    off = Recording(predictor, 1, 50.0)
    asyncio.run(answer_all(off, [rows(n) for n in sizes], [Ask()] * len(sizes)))
    assert off.runs == [[n] for n in sizes]


def test_max_wait_counts_from_a_requests_arrival(predictor) -> None:
    """A request waits at most --max-wait-ms for others, counted from when it arrived: one that
    queued while the model ran the previous batch (a slow model here: 0.8 s a run) and has waited
    that long already runs as soon as the model is free, not max-wait later."""

    class Slow(Recording):
        def _run(self, jobs):
            time.sleep(0.8)
            return super()._run(jobs)

    async def scenario() -> tuple[float, float, list[list[int]]]:
        batcher = Slow(predictor, 256, 600.0)
        batcher.start()
        try:
            t0 = time.monotonic()
            first = asyncio.ensure_future(batcher.predict(rows(1), Ask()))
            await asyncio.sleep(0.65)  # the first run: from 0.6 s to 1.4 s
            second = asyncio.ensure_future(batcher.predict(rows(1, 1), Ask()))
            await first
            t1 = time.monotonic() - t0
            await second  # its 0.6 s were over at 1.25 s, while the model was busy
            return t1, time.monotonic() - t0, batcher.runs
        finally:
            await batcher.stop()

    first, second, runs = asyncio.run(scenario())
    assert runs == [[1], [1]]
    assert first >= 0.6 + 0.8  # it waited for company, then ran
    # the second ran right after the first (done 0.8 s later), not after another 0.6 s wait
    assert second - first < 0.8 + 0.3, (first, second)


def scope_of(headers: dict[str, str], query: str = "") -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app, scope: dict, chunks: list[bytes]) -> tuple[int, str, bytes]:
    """(status, content type, body) of one ASGI request whose body arrives in `chunks`."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = dict(sent[0]["headers"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert int(headers[b"content-length"]) == len(body)
    return sent[0]["status"], headers[b"content-type"].decode(), body


JSON, CSV = {"content-type": "application/json"}, {"content-type": "text/csv"}
GOOD = json.dumps(rows(3)).encode()
CASES = [  # (headers, query, body chunks, status)
    (JSON, "", [GOOD], 200),
    (JSON, "proba=true", [json.dumps(rows(1)[0]).encode()], 200),
    ({**CSV, "accept": "text/csv"}, "top_k=2", [b"size,colour\n1,red\n2,green\n"], 200),
    (CSV, "", [b"size,colour\n1,", b"red\n"], 200),
    (JSON, "", [json.dumps([{"colour": "red"}]).encode()], 422),
    (JSON, "top_k=0", [GOOD], 422),
    (JSON, "proba=maybe", [GOOD], 422),
    (JSON, "", [b""], 422),
    ({"content-type": "text/plain"}, "", [b"great film"], 415),
    ({**JSON, "content-length": "999999"}, "", [b"[]"], 413),
    (JSON, "", [b"[" + b"1," * 300, b"1," * 300 + b"1]"], 413),
]


def test_the_raw_route_answers_as_fastapis_route_with_one_log_line(predictor, capfd) -> None:
    """POST /predict is answered on the raw ASGI messages, ahead of FastAPI (whose middleware
    and request objects cost more than a small model's share of a batch); FastAPI's route,
    which documents it, gives the same status, content type and body for every request."""
    pytest.importorskip("fastapi")
    from dlcli.serve import ServeConfig
    from dlcli.serve.app import create_app, open_served

    path = predictor.model.path
    service = create_app(ServeConfig(path, "t.onnx", max_body=1000), open_served(path))

    async def scenario() -> list[tuple[tuple, tuple]]:
        lifespan: asyncio.Queue = asyncio.Queue()
        started: asyncio.Queue = asyncio.Queue()
        await lifespan.put({"type": "lifespan.startup"})
        running = asyncio.ensure_future(
            service({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, started.put)
        )
        assert (await started.get())["type"] == "lifespan.startup.complete"
        out = []
        for headers, query, chunks, _ in CASES:
            raw = await call(service, scope_of(headers, query), chunks)
            via_fastapi = await call(service.api, scope_of(headers, query), chunks)
            out.append((raw, via_fastapi))
        await lifespan.put({"type": "lifespan.shutdown"})
        await running
        return out

    answers = asyncio.run(scenario())
    for (_, _, _, status), (raw, via_fastapi) in zip(CASES, answers, strict=True):
        assert raw == via_fastapi
        assert raw[0] == status, raw
    assert answers[0][0][1] == "application/json"
    assert json.loads(answers[0][0][2]) == records(alone(predictor, rows(3), Ask()))
    assert answers[2][0][1] == "text/csv; charset=utf-8"
    detail = {i: json.loads(answers[i][0][2])["detail"] for i in (4, 5, 9, 10)}
    assert detail == {
        4: "request: missing column 'size' that the model was trained on",
        5: "request: top_k must be a whole number >= 1, got '0'",
        9: "request: body of 999,999 bytes is over --max-body 1,000",
        10: "request: body is over --max-body 1,000 bytes",
    }
    log = [line for line in capfd.readouterr().err.splitlines() if line.startswith("dl serve:")]
    assert len(log) == len(CASES)  # the service's requests (FastAPI was called directly)
    assert log[0].startswith("dl serve: POST /predict 200 rows=3 ") and log[0].endswith("ms")
    assert log[3].startswith("dl serve: POST /predict 200 rows=1 ")
    assert log[4].startswith("dl serve: POST /predict 422 rows=1 ")
    assert log[8].startswith("dl serve: POST /predict 415 rows=0 ")


def test_the_served_graph_does_not_busy_wait_between_runs(predictor) -> None:
    """onnxruntime's intra-op threads spin after each run by default: measured as half of a
    loaded `dl serve` process's CPU. A served graph turns that off; `dl predict` keeps it."""
    pytest.importorskip("fastapi")
    from dlcli.serve.app import open_served

    served = open_served(predictor.model.path).model.session.get_session_options()
    assert served.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # not set: onnxruntime's default (spinning)
        predictor.model.session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning"
        )


def test_a_batch_closes_once_the_usual_number_of_requests_is_in(predictor) -> None:
    """Once earlier batches have shown how many requests come together (steady concurrent
    clients), a batch closes as soon as that many are in instead of waiting out --max-wait-ms;
    with fewer, max-wait still bounds the wait (a 1 s wait here)."""

    async def round_of(batcher: MicroBatcher, n: int, late: float) -> float:
        """n requests, the last one `late` seconds after the others; seconds to all answers."""
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(batcher.predict(rows(1, i), Ask())) for i in range(n - 1)]
        await asyncio.sleep(late)
        tasks.append(asyncio.ensure_future(batcher.predict(rows(1, n), Ask())))
        await asyncio.gather(*tasks)
        return time.monotonic() - t0

    async def scenario() -> tuple[list[float], list[list[int]]]:
        batcher = Recording(predictor, 256, 1000.0)
        batcher.start()
        try:
            first = await round_of(batcher, 4, 0.0)  # no history: the full wait
            usual = await round_of(batcher, 4, 0.1)  # the fourth completes it: no more wait
            fewer = await round_of(batcher, 3, 0.0)  # one short: max-wait again
            return [first, usual, fewer], batcher.runs
        finally:
            await batcher.stop()

    (first, usual, fewer), runs = asyncio.run(scenario())
    assert runs == [[1] * 4, [1] * 4, [1] * 3]
    assert first >= 1.0 and fewer >= 1.0, (first, fewer)
    assert usual < 0.6, usual  # 0.1 s for the late one, then one model run
