"""`dl serve` under load, on loopback: 8 client processes post one-row JSON requests over
keep-alive connections for 30 s (`BENCH_SERVE_SECONDS`) to a server of the penguins sample model
(trained 3 epochs, exported). Twice, in one run: micro-batching on (the defaults) and off
(`--max-batch 1`). Figures: errors (goal 0), p50/p99 latency and requests/s; requests/s on / off
(goal >= 3); the server's RSS over the last 10,000 requests (goal: within 10%).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import socket
import subprocess
import time

import common

CLIENTS = 8
SECONDS = float(os.environ.get("BENCH_SERVE_SECONDS", "30"))
ROW = {
    "island": "Torgersen",
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181.0,
    "body_mass_g": 3750.0,
    "sex": "male",
    "year": 2007,
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, until: float, count, out) -> None:
    """Post until `until`; report (latencies in ms, errors)."""
    body = json.dumps([ROW]).encode()
    headers = {"content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, errors = [], 0
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body, headers)
            res = conn.getresponse()
            res.read()
            ok = res.status == 200
        except OSError:
            ok = False
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat.append((time.perf_counter() - t0) * 1000)
        errors += not ok
        with count.get_lock():
            count.value += 1
    out.put((lat, errors))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load_test(onnx, *flags: str) -> dict:
    port = _port()
    server = subprocess.Popen(
        [common.DL, "serve", str(onnx), "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # one log line per request: not what is measured here
    )
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        count, out = mp.Value("l", 0), mp.Queue()
        until = time.monotonic() + SECONDS
        procs = [mp.Process(target=_client, args=(port, until, count, out)) for _ in range(CLIENTS)]
        for p in procs:
            p.start()
        samples = []  # (requests so far, server RSS MB)
        while any(p.is_alive() for p in procs) and time.monotonic() < until + 30:
            samples.append((count.value, _rss_mb(server.pid)))
            if out.qsize() == CLIENTS:
                break
            time.sleep(0.25)
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
        samples.append((count.value, _rss_mb(server.pid)))
    finally:
        server.terminate()
        server.wait(60)
    lat = sorted(x for r in results for x in r[0])
    total = len(lat)
    start = next((rss for n, rss in samples if n >= total - 10_000), samples[0][1])
    return {
        "requests": total,
        "errors": sum(r[1] for r in results),
        "rps": total / SECONDS,
        "p50": lat[total // 2] if lat else float("nan"),
        "p99": lat[min(total - 1, int(total * 0.99))] if lat else float("nan"),
        "rss_start": start,
        "rss_end": samples[-1][1],
    }


def run() -> list[dict]:
    with common.temp_dir() as tmp:
        model = tmp / "model.pt"
        train = common.SAMPLE_DATA / "penguins" / "train.csv"
        common.run_measured(
            [common.DL, "train", train, "-o", model, "--epochs", 3, "--no-plots", "--quiet"]
        ).check()
        common.run_measured([common.DL, "export", model, "--onnx", "--quiet"]).check()
        onnx = model.with_suffix(".onnx")
        load = common.load_note()
        on = load_test(onnx)
        off = load_test(onnx, "--max-batch", "1")
    note = (
        f"{CLIENTS} clients, {SECONDS:g} s, 1 worker; on: {on['requests']:,} requests, p50 "
        f"{on['p50']:.1f} ms, p99 {on['p99']:.1f} ms; off: {off['requests']:,} requests, p50 "
        f"{off['p50']:.1f} ms, p99 {off['p99']:.1f} ms; {load}"
    )
    growth = abs(on["rss_end"] - on["rss_start"]) / max(on["rss_start"], 1e-9)
    return [
        common.result(
            "serve_errors",
            on["errors"] + off["errors"],
            None,
            "errors",
            on["errors"] + off["errors"],
            0.5,
            kind="abs",
            note="non-200 answers and failed connections, both runs",
        ),
        common.result(
            "serve_rps_batching_on_vs_off",
            on["rps"],
            off["rps"],
            "req/s",
            on["rps"] / max(off["rps"], 1e-9),
            3.0,
            higher_is_better=True,
            note=note,
        ),
        common.result(
            "serve_rss_last_10k_requests",
            on["rss_end"],
            on["rss_start"],
            "MB",
            growth,
            0.10,
            note=f"relative change of the server's RSS over the last 10,000 requests (of {on['requests']:,})",
        ),
    ]


if __name__ == "__main__":
    common.main(run)
