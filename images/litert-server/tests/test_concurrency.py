"""Concurrent requests and a model swap under steady load (bounded in count and time)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from litert_testlib import Server, make_repo

from litert_server.testmodels import make_triton_model


def _post(conn: http.client.HTTPConnection, data: list[float]) -> tuple[int, dict[str, object]]:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": data}]})
    conn.request("POST", "/v2/models/float_model/infer", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_concurrent_requests_all_correct(server: Server) -> None:
    errors: list[str] = []
    done = [0] * 8

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for j in range(200):
                x = [float(i), float(j), float(i + j), -1.0]
                status, resp = _post(conn, x)
                if status != 200 or resp["outputs"][0]["data"] != [v * 2 + 1 for v in x]:  # type: ignore[index]
                    errors.append(f"{i}/{j}: {status} {resp}")
                done[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert done == [200] * 8


def test_swap_under_load_without_failures(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo, args=["--load-model", "float_model"])
    stop = threading.Event()
    failures: list[str] = []
    seen: dict[str, int] = {}
    lock = threading.Lock()
    # answers per version for x = [1, 1, 1, 1]: version 1 computes 2x+1, version v > 1 computes 10v * x
    expected = {"1": 3.0, **{str(v): 10.0 * v for v in range(2, 6)}}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    status, resp = _post(conn, [1.0, 1.0, 1.0, 1.0])
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                    continue
                if status != 200:
                    failures.append(f"{status} {resp}")
                    continue
                version = str(resp["model_version"])
                if resp["outputs"][0]["data"] != [expected[version]] * 4:  # type: ignore[index]
                    failures.append(f"wrong answer from version {version}: {resp}")
                with lock:
                    seen[version] = seen.get(version, 0) + 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        for version in range(2, 6):
            make_triton_model(repo, "float_model", version, "float", scale=10.0 * version, bias=0.0)
            status, _, body = srv.request("POST", "/v2/repository/models/float_model/load")
            assert status == 200, body
            time.sleep(0.3)
        # a failed swap in the middle of the load changes nothing either
        make_triton_model(repo, "float_model", 6, "edgetpu", config=False)
        assert srv.request("POST", "/v2/repository/models/float_model/load")[0] == 400
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert set(seen) == {"1", "2", "3", "4", "5"}, seen
    assert sum(seen.values()) > 100
