"""`dl serve` under load, on loopback: 8 client processes post one-row JSON requests over
keep-alive connections for 30 s (`BENCH_SERVE_SECONDS`) to a server of the penguins sample model
(trained 3 epochs, exported). Two servers in one run, micro-batching on (the defaults) and off
(`--max-batch 1`), loaded in turn in 6 interleaved slices. Figures: errors (goal 0), p50/p99
latency, requests/s, the server's CPU per request and the 8 clients' (all on the same cores);
requests/s on / off (goal >= 3); the server's RSS over the last 10,000 requests (goal: within
10%).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import time

import common

CLIENTS = 8
SECONDS = float(os.environ.get("BENCH_SERVE_SECONDS", "30"))  # per mode, all slices together
SLICES = 6  # on and off take turns, SECONDS / SLICES at a time
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


def _exchange(sock: socket.socket, request: bytes, buf: bytes) -> tuple[int, bytes]:
    """Send one keep-alive request, read one response (status line, headers, a Content-Length
    body); returns (status, bytes already read past it)."""
    sock.sendall(request)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
    if b"content-length" not in fields:
        raise OSError("no content-length")
    length = int(fields[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        rest += chunk
    return int(head[9:12]), rest[length:]


def _client(port: int, until: float, count, out) -> None:
    """Post until `until` over one keep-alive connection; report (latencies in ms, errors).
    A load generator in the style of wrk: the request bytes are built once and the response
    is read with a few byte operations, so the clients (8 processes on the same 2 cores)
    take as little CPU from the server as they can (http.client parses each response's
    headers with the email package, several times the server's own work per request)."""
    body = json.dumps([ROW]).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    sock, buf = socket.create_connection(("127.0.0.1", port), timeout=30), b""
    lat, errors = [], 0
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            status, buf = _exchange(sock, request, buf)
            ok = status == 200
        except (OSError, ValueError):
            ok, buf = False, b""
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        lat.append((time.perf_counter() - t0) * 1000)
        errors += not ok
        with count.get_lock():
            count.value += 1
    sock.close()
    out.put((lat, errors))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished (joined) children so far."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


class Server:
    """One `dl serve` process on a free port, and what its load slices measured."""

    def __init__(self, onnx, *flags: str) -> None:
        self.port = _port()
        self.proc = subprocess.Popen(
            [common.DL, "serve", str(onnx), "--port", str(self.port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # one log line per request: not what is measured here
        )
        self.lat: list[float] = []
        self.errors, self.cpu, self.client_cpu = 0, 0.0, 0.0
        self.samples: list[tuple[int, float]] = []  # (requests so far, server RSS MB)

    def wait_ready(self) -> None:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)

    def load(self, seconds: float) -> None:
        """CLIENTS client processes for `seconds`; latencies, errors, CPU and RSS added up."""
        done = len(self.lat)
        count, out = mp.Value("l", 0), mp.Queue()
        cpu0, until = _cpu_s(self.proc.pid), time.monotonic() + seconds
        clients0 = _children_cpu_s()
        procs = [
            mp.Process(target=_client, args=(self.port, until, count, out)) for _ in range(CLIENTS)
        ]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs) and time.monotonic() < until + 30:
            self.samples.append((done + count.value, _rss_mb(self.proc.pid)))
            if out.qsize() == CLIENTS:
                break
            time.sleep(0.25)
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
        self.cpu += _cpu_s(self.proc.pid) - cpu0
        self.client_cpu += _children_cpu_s() - clients0  # the clients, joined above
        self.samples.append((done + count.value, _rss_mb(self.proc.pid)))
        self.lat += [x for r in results for x in r[0]]
        self.errors += sum(r[1] for r in results)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    def figures(self) -> dict:
        lat, total = sorted(self.lat), len(self.lat)
        start = next((rss for n, rss in self.samples if n >= total - 10_000), self.samples[0][1])
        return {
            "requests": total,
            "errors": self.errors,
            "rps": total / SECONDS,
            "p50": lat[total // 2] if lat else float("nan"),
            "p99": lat[min(total - 1, int(total * 0.99))] if lat else float("nan"),
            "cpu_ms": self.cpu / max(total, 1) * 1000,
            "client_cpu_ms": self.client_cpu / max(total, 1) * 1000,
            "rss_start": start,
            "rss_end": self.samples[-1][1],
        }


def load_tests(onnx) -> tuple[dict, dict]:
    """Micro-batching on (the defaults) and off (`--max-batch 1`): two servers started together,
    loaded in turn in SLICES slices of SECONDS / SLICES each (on, off, on, off, ...), so that the
    other work on a shared machine weighs on both alike."""
    on, off = Server(onnx), Server(onnx, "--max-batch", "1")
    try:
        on.wait_ready()
        off.wait_ready()
        for _ in range(SLICES):
            on.load(SECONDS / SLICES)
            off.load(SECONDS / SLICES)
    finally:
        on.stop()
        off.stop()
    return on.figures(), off.figures()


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
        on, off = load_tests(onnx)
        load = f"{load} before, {common.load_note()} after"
    note = (
        f"{CLIENTS} clients, {SECONDS:g} s each in {SLICES} interleaved slices, 1 worker; "
        f"on: {on['requests']:,} requests, p50 {on['p50']:.1f} ms, p99 {on['p99']:.1f} ms, "
        f"server CPU {on['cpu_ms']:.2f} ms/request (clients {on['client_cpu_ms']:.2f}); off: "
        f"{off['requests']:,} requests, p50 {off['p50']:.1f} ms, p99 {off['p99']:.1f} ms, server "
        f"CPU {off['cpu_ms']:.2f} ms/request (clients {off['client_cpu_ms']:.2f}); {load}"
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
