"""`dl serve` end to end: a real server process on a free loopback port, real HTTP requests. The
answers are those of `dl predict`; every bad request is a 4xx with one line; SIGTERM lets a request
in flight finish; two workers serve; a broken model stops the server before it listens."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import PENGUINS, SAMPLES, assert_error, dl_env

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROWS = PENGUINS / "rows.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.url, self.log = proc, f"http://127.0.0.1:{port}", log

    def request(
        self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """(status, content type, body text) of one request."""
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                return res.status, res.headers["content-type"], res.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["content-type"], err.read().decode()

    def post_json(self, path: str, doc: object) -> tuple[int, str, str]:
        body = json.dumps(doc).encode()
        return self.request(path, body, {"content-type": "application/json"})

    def stderr(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def serving(model: Path, tmp: Path, *flags: str, timeout: float = 180) -> Iterator[Server]:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlcli", "serve", str(model), "--port", str(port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=dl_env(),
        )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"server exited {proc.returncode}: {server.stderr()}"
            with contextlib.suppress(OSError):
                if server.request("/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "server did not start: " + server.stderr()
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def onnx_model(penguins_model: Path, run_dl_session) -> Path:
    res = run_dl_session("export", penguins_model, "--onnx", "-q")
    assert res.returncode == 0, res.stderr
    return penguins_model.with_suffix(".onnx")


@pytest.fixture(scope="module")
def server(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(onnx_model, tmp_path_factory.mktemp("serve"), "--max-body", "64KB") as s:
        yield s


def test_predictions_are_those_of_dl_predict(server: Server, onnx_model: Path, dl_inproc) -> None:
    cli = dl_inproc("predict", onnx_model, ROWS, "--proba")
    assert cli.returncode == 0, cli.stderr
    status, ctype, text = server.request(
        "/predict?proba=true", ROWS.read_bytes(), {"content-type": "text/csv", "accept": "text/csv"}
    )
    assert (status, ctype.split(";")[0]) == (200, "text/csv")
    assert text == cli.stdout  # byte for byte
    records = pd.read_csv(ROWS).astype(object).where(pd.read_csv(ROWS).notna(), None)
    status, ctype, text = server.post_json("/predict?proba=true", records.to_dict("records"))
    assert (status, ctype) == (200, "application/json")
    got = pd.DataFrame(json.loads(text))
    want = pd.read_csv(io.StringIO(cli.stdout))
    assert list(got.columns) == list(want.columns)
    assert (got["prediction"] == want["prediction"]).all()
    probas = [c for c in want.columns if c.startswith("proba_")]
    assert (got[probas] - want[probas]).abs().to_numpy().max() <= 1e-6


def test_health_metadata_and_the_openapi_schema(server: Server) -> None:
    assert json.loads(server.request("/health")[2])["status"] == "ok"
    meta = json.loads(server.request("/metadata")[2])
    assert meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert meta["input_columns"]["bill_length_mm"] == {"type": "number"}
    assert "Biscoe" in meta["input_columns"]["island"]["categories"]
    schema = json.loads(server.request("/openapi.json")[2])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    record = body["application/json"]["schema"]["items"]
    assert set(record["properties"]) == set(meta["input_columns"])
    assert "text/csv" in body


def test_bad_requests_are_4xx_with_the_clis_one_line(server: Server, tmp_path, dl_inproc) -> None:
    header, first = ROWS.read_text().splitlines()[:2]
    good = dict(zip(header.split(","), first.split(","), strict=True))
    cases = [
        ({"content-type": "application/json"}, json.dumps([{"island": "Dream"}]), 422),
        (
            {"content-type": "application/json"},
            json.dumps([{**good, "bill_length_mm": "abc"}]),
            422,
        ),
        ({"content-type": "application/json"}, "", 422),
        ({"content-type": "application/json"}, "[{not json", 422),
        ({"content-type": "text/csv"}, header + "\n", 422),
        ({"content-type": "text/plain"}, "great film", 415),
        ({}, "x", 415),
        ({"content-type": "application/json"}, "[" + "1," * 40_000 + "1]", 413),
    ]
    for headers, body, want in cases:
        status, ctype, text = server.request("/predict", body.encode(), headers)
        assert status == want, (body[:60], text)
        assert ctype == "application/json"
        detail = json.loads(text)["detail"]
        assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    # the same line as the CLI gives for the same rows
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "\n" + first.replace("39.1", "abc") + "\n")
    cli = assert_error(dl_inproc("predict", tmp_path / "x.onnx", bad), "x.onnx")
    assert cli
    status, _, text = server.request("/predict", bad.read_bytes(), {"content-type": "text/csv"})
    assert status == 422
    assert json.loads(text)["detail"] == (
        "request: column 'bill_length_mm', row 1: 'abc' is not a number "
        "(the model expects numbers in this column)"
    )
    assert "500" not in server.stderr()


def test_one_log_line_per_request(server: Server) -> None:
    before = server.stderr().count("POST /predict")
    server.post_json("/predict", [{"island": "Dream"}])
    time.sleep(0.3)
    lines = [ln for ln in server.stderr().splitlines() if "POST /predict" in ln]
    assert len(lines) == before + 1
    assert lines[-1].startswith("dl serve: POST /predict 422 rows=1 ") and lines[-1].endswith("ms")


def test_sigterm_finishes_the_request_in_flight_and_exits_0(onnx_model: Path, tmp_path) -> None:
    answers: list[int] = []
    with serving(onnx_model, tmp_path, "--max-wait-ms", "2000", "--max-batch", "100000") as s:
        body = ROWS.read_bytes()
        t = threading.Thread(
            target=lambda: answers.append(
                s.request("/predict", body, {"content-type": "text/csv"})[0]
            )
        )
        t.start()
        time.sleep(0.8)  # the request waits in the batcher for 2 s
        s.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert s.proc.wait(60) == 0, s.stderr()
    assert answers == [200]


def test_two_workers(onnx_model: Path, tmp_path) -> None:
    with serving(onnx_model, tmp_path, "--workers", "2") as s:
        children = Path(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read_text().split()
        pids = set()
        results: list[int] = []

        def client() -> None:
            for _ in range(10):
                _, _, text = s.request("/health")
                pids.add(json.loads(text)["pid"])
                results.append(
                    s.request("/predict", ROWS.read_bytes(), {"content-type": "text/csv"})[0]
                )

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [200] * 40
        workers = {int(c) for c in children}
        assert pids <= workers and len(workers) >= 2
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0, s.stderr()


def test_a_broken_model_stops_the_server_before_it_listens(tmp_path, run_dl) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08garbage" * 100)
    port = free_port()
    res = run_dl("serve", broken, "--port", str(port))
    assert_error(res, "broken.onnx", "not an ONNX file")
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("127.0.0.1", port))
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    assert_error(run_dl("serve", tmp_path / "broken.pt", "--port", str(port)), "broken.pt")


def test_serving_a_pt_model(penguins_model: Path, onnx_model: Path, tmp_path, dl_inproc) -> None:
    cli = dl_inproc("predict", penguins_model, ROWS, "--proba")
    with serving(penguins_model, tmp_path) as s:
        status, _, text = s.request(
            "/predict?proba=true",
            ROWS.read_bytes(),
            {"content-type": "text/csv", "accept": "text/csv"},
        )
    assert status == 200
    got, want = pd.read_csv(io.StringIO(text)), pd.read_csv(io.StringIO(cli.stdout))
    assert (got["prediction"] == want["prediction"]).all()
    assert (got.iloc[:, 1:] - want.iloc[:, 1:]).abs().to_numpy().max() <= 1e-4


def test_without_the_serve_extra_one_line_says_what_to_install(onnx_model: Path) -> None:
    code = (
        "import sys\nsys.modules['fastapi'] = None\nfrom dlcli.cli import main\n"
        f"main(['serve', {str(onnx_model)!r}])\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dl_env(), timeout=120
    )
    assert_error(res, "fastapi", "pip install 'dlcli[serve]'")
    assert os.path.exists(onnx_model)


def test_a_micro_batch_answers_each_request_with_its_own_rows(
    onnx_model: Path, tmp_path, dl_inproc
) -> None:
    """Concurrent requests run as one batch; each gets its own rows, a bad one fails alone."""
    cli = dl_inproc("predict", onnx_model, ROWS, "--proba")
    want = pd.read_csv(io.StringIO(cli.stdout))
    rows = pd.read_csv(ROWS, dtype=str, keep_default_na=False).to_dict("records")
    bodies = [rows[i : i + 1 + i % 3] for i in range(0, 24, 3)]  # 1-3 rows each
    bodies[3] = [{**bodies[3][0], "body_mass_g": "heavy"}]
    answers: dict[int, tuple[int, str, str]] = {}
    with serving(onnx_model, tmp_path, "--max-wait-ms", "500") as s:

        def post(i: int) -> None:
            answers[i] = s.post_json("/predict?proba=true", bodies[i])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for i, (status, _, text) in answers.items():
        if i == 3:
            assert status == 422
            assert json.loads(text)["detail"].startswith(
                "request: column 'body_mass_g', row 1: 'heavy' is not a number"
            )
            continue
        assert status == 200, text
        got = pd.DataFrame(json.loads(text))
        first = rows.index(bodies[i][0])
        expect = want.iloc[first : first + len(bodies[i])].reset_index(drop=True)
        assert list(got["prediction"]) == list(expect["prediction"])
        assert (got["proba_Adelie"] - expect["proba_Adelie"]).abs().max() <= 1e-6
    assert len(answers) == len(bodies)


def test_a_text_model_takes_text_lines(tmp_path, run_dl, dl_inproc) -> None:
    """text/plain: one text a line, as `dl predict TEXT_MODEL -` reads stdin; JSON records too."""
    reviews = SAMPLES / "reviews" / "train.csv"
    pd.read_csv(reviews).head(200).to_csv(tmp_path / "reviews.csv", index=False)
    model = tmp_path / "text.pt"
    res = run_dl("train", tmp_path / "reviews.csv", "--arch", "lstm", "--epochs", "1", "-o", model,
                 "-q", "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    lines = "great film\nawful, boring\n"
    cli = dl_inproc("predict", model.with_suffix(".onnx"), "-", "--top-k", "2", input=lines)
    with serving(model.with_suffix(".onnx"), tmp_path) as s:
        status, _, text = s.request(
            "/predict?top_k=2", lines.encode(), {"content-type": "text/plain", "accept": "text/csv"}
        )
        assert (status, text) == (200, cli.stdout)
        status, _, text = s.post_json("/predict", [{"review": "great film"}])
        assert status == 200 and len(json.loads(text)) == 1
        status, _, text = s.post_json("/predict", [{"x": "great film"}])
        assert status == 422
        assert json.loads(text)["detail"].startswith("request: no column 'review'")
        meta = json.loads(s.request("/metadata")[2])
        assert meta["input_columns"] == {"review": {"type": "string"}}


def test_an_image_model_takes_multipart_files(tmp_path, run_dl, dl_inproc) -> None:
    """multipart/form-data: each file field one image; the answer is `dl predict`'s, path = name."""
    import shutil

    for c in "012":
        (tmp_path / "digits" / c).mkdir(parents=True)
        for f in sorted((SAMPLES / "digits" / "train" / c).glob("*.png"))[:15]:
            shutil.copy(f, tmp_path / "digits" / c / f.name)
    model = tmp_path / "img.pt"
    res = run_dl("train", tmp_path / "digits", "--arch", "cnn", "--epochs", "1", "-o", model,
                 "-q", "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    files = sorted((SAMPLES / "digits" / "test" / "1").glob("*.png"))[:2]
    cli = _frame_of(dl_inproc("predict", model.with_suffix(".onnx"), *files, "--proba").stdout)

    def form(parts: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
        out = b""
        for name, blob in parts:
            out += (
                b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
                + name.encode() + b"\"\r\nContent-Type: image/png\r\n\r\n" + blob + b"\r\n"
            )  # fmt: skip
        return out + b"--XyZ--\r\n", {"content-type": "multipart/form-data; boundary=XyZ"}

    with serving(model.with_suffix(".onnx"), tmp_path) as s:
        body, headers = form([(f.name, f.read_bytes()) for f in files])
        status, _, text = s.request("/predict?proba=true", body, headers)
        assert status == 200, text
        got = pd.DataFrame(json.loads(text))
        assert got["path"].tolist() == [f.name for f in files]
        assert got["prediction"].astype(str).tolist() == cli["prediction"].astype(str).tolist()
        assert (got["confidence"] - cli["confidence"]).abs().max() <= 1e-6
        status, _, text = s.request("/predict", *form([("notes.txt", b"not an image")]))
        assert status == 422
        assert json.loads(text)["detail"] == (
            "request: file 'notes.txt': cannot read image (not an image Pillow can read)"
        )
        status, _, _ = s.post_json("/predict", [{"path": "x.png"}])
        assert status == 415


def _frame_of(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def test_a_series_model_answers_a_history_with_its_forecasts(tmp_path, run_dl, dl_inproc) -> None:
    """A request is one history table (CSV or JSON records): the answer is `dl predict`'s rows
    for it (the windows ending at every row); a history too short or without the model's
    columns is a 422 with the CLI's line; each request of a micro-batch is its own history."""
    co2 = SAMPLES / "co2"
    (tmp_path / "spec.yaml").write_text("layers: [flatten, {dense: 16}, relu]\n")
    model = tmp_path / "co2.pt"
    res = run_dl("train", co2 / "train.csv", "--spec", tmp_path / "spec.yaml", "--target", "co2",
                 "--window", "8", "--epochs", "1", "-o", model, "-q", "--no-plots")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert run_dl("export", model, "--onnx", "-q").returncode == 0
    onnx_file = model.with_suffix(".onnx")
    history = pd.read_csv(co2 / "history.csv").head(30)
    history.to_csv(tmp_path / "h.csv", index=False)
    cli = dl_inproc("predict", onnx_file, tmp_path / "h.csv")
    assert cli.returncode == 0, cli.stderr
    short = tmp_path / "short.csv"
    history.head(5).to_csv(short, index=False)
    with serving(onnx_file, tmp_path, "--max-wait-ms", "300") as s:
        status, _, text = s.request(
            "/predict", (tmp_path / "h.csv").read_bytes(),
            {"content-type": "text/csv", "accept": "text/csv"},
        )  # fmt: skip
        assert (status, text) == (200, cli.stdout)  # byte for byte
        answers: dict[int, tuple[int, str, str]] = {}
        bodies = [history.head(12 + i).to_dict("records") for i in range(3)]
        bodies.append(history.head(5).to_dict("records"))  # shorter than the window

        def post(i: int) -> None:
            answers[i] = s.post_json("/predict", bodies[i])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        want = _frame_of(cli.stdout)
        for i in range(3):
            status, _, text = answers[i]
            assert status == 200, text
            got = pd.DataFrame(json.loads(text))
            assert list(got["date"]) == list(want["date"][: 12 + i - 8 + 1])
            assert (got["prediction"] - want["prediction"][: len(got)]).abs().max() <= 1e-3
        status, _, text = answers[3]
        assert status == 422
        line = assert_error(dl_inproc("predict", onnx_file, short), "short.csv")
        assert "error: " + json.loads(text)["detail"] == line.replace(str(short), "request")
        status, _, text = s.post_json("/predict", [{"date": "2001-01-06"}] * 9)
        assert (status, json.loads(text)["detail"]) == (422, "request: missing column(s) 'co2'")
        meta = json.loads(s.request("/metadata")[2])
        assert meta["input_columns"] == {"date": {"type": "string"}, "co2": {"type": "number"}}


def test_a_gan_answers_a_png_grid_of_its_samples(tmp_path, run_dl, dl_inproc) -> None:
    """POST /predict?samples=N&seed=S: the PNG `dl predict GAN.onnx --samples N --seed S -o
    grid.png` writes, byte for byte; the seed is in a header; bad query values are a 422."""
    from test_onnx_predict import train_tiny_gan

    model = train_tiny_gan(tmp_path, run_dl)
    onnx_file = model.with_suffix(".onnx")
    grid = tmp_path / "grid.png"
    res = dl_inproc("predict", onnx_file, "--samples", "5", "--seed", "3", "-o", grid)
    assert res.returncode == 0, res.stderr
    with serving(onnx_file, tmp_path) as s:
        req = urllib.request.Request(s.url + "/predict?samples=5&seed=3", data=b"")
        with urllib.request.urlopen(req, timeout=60) as answer:
            assert answer.headers["content-type"] == "image/png"
            assert answer.headers["x-dl-seed"] == "3"
            assert answer.read() == grid.read_bytes()
        for query, line in [
            ("", "request: give the number of images to generate, e.g. /predict?samples=16"),
            ("?samples=0", "request: samples must be a whole number from 1 to 1,024, got '0'"),
            ("?samples=2&seed=x", "request: seed must be a whole number >= 0, got 'x'"),
        ]:
            status, _, text = s.request("/predict" + query, b"")
            assert (status, json.loads(text)["detail"]) == (422, line)
        meta = json.loads(s.request("/metadata")[2])
        assert (meta["family"], meta["task"]) == ("gan", "generation")
        schema = json.loads(s.request("/openapi.json")[2])
        params = schema["paths"]["/predict"]["post"]["parameters"]
        assert [p["name"] for p in params] == ["samples", "seed"]
