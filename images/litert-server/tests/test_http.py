"""Protocol tests with plain HTTP against the real server (subprocess on loopback)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
from litert_testlib import Server, make_repo

from litert_server.testmodels import make_triton_model

X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


def infer_body(**overrides: object) -> dict[str, object]:
    return {"inputs": [{**X, **overrides}]}


def test_health_and_server_metadata(server: Server) -> None:
    assert server.json("GET", "/v2/health/live") == (200, {"live": True})
    assert server.json("GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = server.json("GET", "/v2")
    assert status == 200 and meta["name"] == "litert-server"
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    assert meta["runtime"].startswith(("ai-edge-litert", "tflite-runtime"))


def test_model_metadata_and_ready(server: Server) -> None:
    status, meta = server.json("GET", "/v2/models/float_model")
    assert status == 200
    assert meta == {
        "name": "float_model",
        "versions": ["1"],
        "platform": "tflite",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4]}],
        "accelerator": "cpu",
        "delegate": None,
    }
    assert server.json("GET", "/v2/models/uint8_model/versions/1")[1]["inputs"][0]["datatype"] == "UINT8"
    assert server.json("GET", "/v2/models/float_model/ready")[0] == 200
    assert server.json("GET", "/v2/models/float_model/versions/1/ready")[0] == 200
    status, cfg = server.json("GET", "/v2/models/float_model/config")
    assert status == 200 and cfg["input"][0]["data_type"] == "TYPE_FP32"


def test_infer_json(server: Server) -> None:
    status, resp = server.json("POST", "/v2/models/float_model/infer", {"id": "a1", **infer_body()})
    assert status == 200
    assert resp == {
        "model_name": "float_model",
        "model_version": "1",
        "id": "a1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3.0, 5.0, 7.0, 9.0]}],
    }
    status, resp = server.json(
        "POST",
        "/v2/models/uint8_model/versions/1/infer",
        {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 4], "data": [[0, 10, 20, 250]]}]},
    )
    assert status == 200 and resp["outputs"][0]["data"] == [2, 12, 22, 252]


def test_infer_binary_extension(server: Server) -> None:
    x = np.array([[0.5, 1, 2, -4]], np.float32)
    head = json.dumps(
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = server.request(
        "POST",
        "/v2/models/float_model/infer",
        raw=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200
    hlen = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(body[:hlen])
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_allclose(np.frombuffer(body[hlen:], np.float32), (x * 2 + 1).ravel())


def test_errors(server: Server) -> None:
    cases = [
        ("POST", "/v2/models/nope/infer", infer_body(), 404, "unknown model"),
        ("GET", "/v2/models/nope", None, 404, "unknown model"),
        ("GET", "/v2/models/float_model/versions/9", None, 404, "unknown version"),
        ("POST", "/v2/models/float_model/infer", infer_body(shape=[1, 5], data=[1, 2, 3, 4, 5]), 400, "shape"),
        ("POST", "/v2/models/float_model/infer", infer_body(datatype="INT32"), 400, "datatype INT32"),
        ("POST", "/v2/models/float_model/infer", infer_body(data=[1, 2, 3]), 400, "needs 4"),
        ("POST", "/v2/models/float_model/infer", infer_body(name="z"), 400, "missing inputs"),
        ("POST", "/v2/models/float_model/infer", {"inputs": [X], "outputs": [{"name": "q"}]}, 400, "unknown outputs"),
        ("POST", "/v2/models/edgetpu_model/infer", infer_body(), 503, "not ready"),
        ("GET", "/v2/models/edgetpu_model/ready", None, 503, "not ready"),
        ("GET", "/v2/nothing", None, 404, "no endpoint"),
        ("POST", "/v2/repository/models/nope/load", None, 404, "not in the model repository"),
        ("POST", "/v2/repository/models/..%2Fetc/load", None, 400, "invalid model name"),
    ]
    for method, path, body, code, text in cases:
        status, resp = server.json(method, path, body)
        assert status == code, (path, body, resp)
        assert text in resp["error"], (path, resp)
    status, _, data = server.request("POST", "/v2/models/float_model/infer", raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    status, _, data = server.request("DELETE", "/v2/models/float_model")
    assert status == 405
    # the server is still fine after all of that
    assert server.json("POST", "/v2/models/float_model/infer", infer_body())[0] == 200


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_malformed_http(server: Server) -> None:
    deep = b"[" * 100000
    replies = [
        _raw(
            server.port,
            b"POST /v2/models/float_model/infer HTTP/1.1\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(deep) + deep,
        ),
        _raw(
            server.port,
            b"POST /v2/models/float_model/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        _raw(server.port, b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
        _raw(server.port, b"GARBAGE\r\n\r\n"),
    ]
    assert replies[0].startswith(b"HTTP/1.1 400 ") and b"not valid JSON" in replies[0]
    assert replies[1].startswith(b"HTTP/1.1 501 ") and b"chunked" in replies[1]
    assert replies[2].startswith(b"HTTP/1.1 431 ") and b'{"error": "431' in replies[2]
    assert json.loads(replies[3])["error"].startswith("400")
    assert server.json("POST", "/v2/models/float_model/infer", infer_body())[0] == 200


def test_request_size_limit(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model", "--max-request-bytes", "1000"])
    body = json.dumps({"inputs": [{**X, "data": [1.0] * 4}], "padding": "x" * 2000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("POST", "/v2/models/float_model/infer", body)
    resp = conn.getresponse()
    assert resp.status == 413 and "exceeds the limit of 1000" in json.loads(resp.read())["error"]
    conn.close()
    assert srv.json("POST", "/v2/models/float_model/infer", infer_body())[0] == 200


def test_repository_load_unload_and_latest_n(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo)
    status, index = srv.json("POST", "/v2/repository/index")
    assert status == 200 and {"name": "float_model"} in index
    assert srv.json("POST", "/v2/models/float_model/infer", infer_body())[0] == 503
    assert srv.request("POST", "/v2/repository/models/float_model/load")[0] == 200
    assert srv.json("POST", "/v2/models/float_model/infer", infer_body())[1]["outputs"][0]["data"] == [3, 5, 7, 9]
    # versions 2 and 3 with latest { num_versions: 2 }
    make_triton_model(repo, "float_model", 2, "float", scale=3.0, bias=0.0, num_versions=2)
    make_triton_model(repo, "float_model", 3, "float", scale=4.0, bias=0.0, num_versions=2)
    assert srv.request("POST", "/v2/repository/models/float_model/load", {})[0] == 200
    assert srv.json("GET", "/v2/models/float_model")[1]["versions"] == ["2", "3"]
    ready = srv.json("POST", "/v2/repository/index", {"ready": True})[1]
    assert [(e["name"], e["version"], e["state"]) for e in ready] == [
        ("float_model", "2", "READY"),
        ("float_model", "3", "READY"),
    ]
    out = srv.json("POST", "/v2/models/float_model/infer", infer_body())[1]
    assert (out["model_version"], out["outputs"][0]["data"]) == ("3", [4, 8, 12, 16])
    out = srv.json("POST", "/v2/models/float_model/versions/2/infer", infer_body())[1]
    assert out["outputs"][0]["data"] == [3, 6, 9, 12]
    assert srv.json("POST", "/v2/models/float_model/versions/1/infer", infer_body())[0] == 503
    # a config passed in the load request (Triton's JSON form) overrides config.pbtxt
    cfg = json.dumps({"name": "float_model", "backend": "tflite", "version_policy": {"specific": {"versions": [1]}}})
    assert srv.request("POST", "/v2/repository/models/float_model/load", {"parameters": {"config": cfg}})[0] == 200
    assert srv.json("GET", "/v2/models/float_model")[1]["versions"] == ["1"]
    # unload
    assert srv.request("POST", "/v2/repository/models/float_model/unload")[0] == 200
    status, resp = srv.json("POST", "/v2/models/float_model/infer", infer_body())
    assert status == 503 and "unloaded" in resp["error"]
    index = srv.json("POST", "/v2/repository/index")[1]
    assert {"name": "float_model", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in index


def test_broken_model_keeps_old_version(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo, args=["--load-model", "float_model"])
    (repo / "float_model" / "2").mkdir()
    (repo / "float_model" / "2" / "model.tflite").write_bytes(b"\x00" * 64)
    status, resp = srv.json("POST", "/v2/repository/models/float_model/load")
    assert status == 400 and "version 2" in resp["error"]
    out = srv.json("POST", "/v2/models/float_model/infer", infer_body())[1]
    assert (out["model_version"], out["outputs"][0]["data"]) == ("1", [3, 5, 7, 9])
    shutil.rmtree(repo / "float_model" / "2")
    (repo / "float_model" / "config.pbtxt").write_text('name: "float_model" platform: "onnxruntime_onnx"')
    status, resp = srv.json("POST", "/v2/repository/models/float_model/load")
    assert status == 400 and "not served here" in resp["error"]
    assert srv.json("POST", "/v2/models/float_model/infer", infer_body())[0] == 200


def test_edgetpu_model_refused_on_cpu_old_version_serves(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo, args=["--load-model", "float_model", "--device-root", str(tmp_path)])
    make_triton_model(repo, "float_model", 2, "edgetpu", config=False)
    status, resp = srv.json("POST", "/v2/repository/models/float_model/load")
    assert status == 400
    assert "compiled for the Edge TPU" in resp["error"] and "no Edge TPU is visible" in resp["error"]
    out = srv.json("POST", "/v2/models/float_model/infer", infer_body())[1]
    assert (out["model_version"], out["outputs"][0]["data"]) == ("1", [3, 5, 7, 9])
    assert srv.json("GET", "/v2/models/float_model")[1]["accelerator"] == "cpu"
    assert "no Edge TPU is visible" in srv.logs()


def test_token_auth(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0k3n-value\n")
    srv = server_factory(args=["--load-model", "float_model", "--token-file", str(token_file)])
    assert srv.json("GET", "/v2/health/ready", headers={"Authorization": ""})[0] == 200
    for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "t0k3n-value"}):
        status, hdrs, _ = srv.request(
            "POST", "/v2/models/float_model/infer", infer_body(), headers={"Authorization": "", **hdr}
        )
        assert status == 401 and hdrs["WWW-Authenticate"] == "Bearer"
    ok = srv.request(
        "POST", "/v2/models/float_model/infer", infer_body(), headers={"Authorization": "Bearer t0k3n-value"}
    )
    assert ok[0] == 200
    assert "t0k3n-value" not in srv.logs()
    env_srv = server_factory(args=["--load-model", "float_model"], env={"EDGEAI_LITERT_TOKEN": "envtok"})
    assert env_srv.json("GET", "/v2")[0] == 401
    assert env_srv.json("GET", "/v2", headers={"Authorization": "Bearer envtok"})[0] == 200


def test_metrics_change(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model"])

    def value(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + '{model="float_model",version="1"}'):
                return float(line.split()[-1])
        return 0.0

    before = srv.metrics()
    for _ in range(5):
        srv.json("POST", "/v2/models/float_model/infer", infer_body())
    srv.json("POST", "/v2/models/float_model/infer", infer_body(datatype="INT8"))
    after = srv.metrics()
    assert "# TYPE nv_inference_request_success counter" in after
    assert value(after, "nv_inference_request_success") - value(before, "nv_inference_request_success") == 5
    assert value(after, "nv_inference_request_failure") - value(before, "nv_inference_request_failure") == 1
    assert value(after, "nv_inference_count") - value(before, "nv_inference_count") == 5
    assert value(after, "nv_inference_exec_count") == 5
    for name in (
        "nv_inference_request_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_queue_duration_us",
    ):
        assert value(after, name) >= value(before, name) and f"\n{name}{{" in after
    assert value(after, "nv_inference_request_duration_us") > 0
    assert 'litert_model_loaded{model="float_model",version="1",accelerator="cpu",delegate="none"} 1' in after
    stats = srv.json("GET", "/v2/models/float_model/stats")[1]["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 5 and stats["inference_stats"]["fail"]["count"] == 1


def test_batching(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = tmp_path / "r"
    make_triton_model(repo, "batched", 1, "float", max_batch_size=8, scale=2.0, bias=1.0)
    srv = server_factory(repo=repo, args=["--load-model", "batched"])
    meta = srv.json("GET", "/v2/models/batched")[1]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    for batch in (3, 1, 8, 3):
        data = list(range(batch * 4))
        status, resp = srv.json("POST", "/v2/models/batched/infer", infer_body(shape=[batch, 4], data=data))
        assert status == 200, resp
        assert resp["outputs"][0]["shape"] == [batch, 4]
        assert resp["outputs"][0]["data"] == [v * 2 + 1 for v in data]
    status, resp = srv.json("POST", "/v2/models/batched/infer", infer_body(shape=[9, 4], data=[0] * 36))
    assert status == 400 and "outside 1..8" in resp["error"]
    assert 'nv_inference_count{model="batched",version="1"} 15' in srv.metrics()
