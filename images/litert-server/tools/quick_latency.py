"""Quick latency check: in-process invoke vs the server over loopback HTTP (keep-alive).

Usage: python tools/quick_latency.py [--n 2000] [--uvicorn]
Starts the server in-process on a free loopback port, sends a bounded number of
sequential requests, prints p50/p99 in microseconds, then a bounded concurrent run.
``--uvicorn`` also measures the same App behind starlette+uvicorn (needs both installed),
which is how the HTTP stack was chosen. Not a test: speed targets live in the benchmarks.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from litert_server.config import Settings
from litert_server.metrics import Metrics
from litert_server.repository import Repository
from litert_server.server import App, make_servers
from litert_server.testmodels import make_triton_model

BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def http_lat(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/v2/models/m/infer", BODY, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t) * 1e6)
        assert r.status == 200
    conn.close()
    return out


def throughput(port: int, threads: int, seconds: float) -> float:
    count = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        while time.monotonic() < deadline:
            conn.request("POST", "/v2/models/m/infer", BODY, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            count[i] += 1
        conn.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / seconds


def uvicorn_server(app: App, port: int) -> Any:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def handle(request: Request) -> Response:
        body = await request.body()
        status, out, ctype, extra = app.dispatch(request.method, request.url.path, request.headers, body)
        return Response(out, status, headers=extra, media_type=ctype)

    sapp = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])
    server = uvicorn.Server(uvicorn.Config(sapp, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--uvicorn", action="store_true")
    ap.add_argument("--interpreters", type=int, default=2)
    args = ap.parse_args()
    repo_dir = Path(tempfile.mkdtemp())
    make_triton_model(repo_dir, "m", 1, "float")
    repo = Repository(repo_dir, pool_size=args.interpreters)
    repo.load("m")
    lv = repo.get("m")
    x = np.array([[1, 2, 3, 4]], np.float32)
    inproc = []
    for _ in range(args.n):
        t = time.perf_counter()
        lv.infer({"x": x}, ["y"])
        inproc.append((time.perf_counter() - t) * 1e6)
    settings = Settings(port=free_port(), metrics_port=0)
    app = App(settings, repo, Metrics())
    app.ready = True
    httpd, _ = make_servers(settings, app)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    http_lat(settings.port, 200)
    lat = http_lat(settings.port, args.n)
    print(f"in-process invoke p50 {statistics.median(inproc):.1f} us")
    print(
        f"stdlib http  p50 {pct(lat, 0.5):.1f} us  p99 {pct(lat, 0.99):.1f} us  "
        f"overhead p50 {pct(lat, 0.5) - statistics.median(inproc):.1f} us"
    )
    for th in (1, 4):
        print(f"stdlib http  {th} threads: {throughput(settings.port, th, args.seconds):.0f} req/s")
    httpd.shutdown()
    if args.uvicorn:
        port = free_port()
        server = uvicorn_server(app, port)
        http_lat(port, 200)
        lat = http_lat(port, args.n)
        print(f"uvicorn      p50 {pct(lat, 0.5):.1f} us  p99 {pct(lat, 0.99):.1f} us")
        for th in (1, 4):
            print(f"uvicorn      {th} threads: {throughput(port, th, args.seconds):.0f} req/s")
        server.should_exit = True


if __name__ == "__main__":
    main()
