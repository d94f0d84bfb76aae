"""Hostile clients and hostile configurations (docs/security.md, "The LiteRT server").

Every test here failed on the server before its hardening: a configuration could name a
model file outside the repository (and the errors told whether a path existed), a large
JSON body took eight times its size in memory, versions in other digits, deep nesting and
odd types answered 500, Content-Length was parsed by int(), nothing capped connections or
requests in flight, and the metrics port followed the HTTP listen address. Traffic goes to
loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from litert_testlib import SRC, Server, free_port, make_repo, stop_server

from litert_server.testmodels import make_float_model

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "inference_server"
X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
INFER = json.dumps({"inputs": [X]}).encode()
ORIGINAL = [3.0, 5.0, 7.0, 9.0]  # float_model version 1: 2x + 1
MiB = 1 << 20


# --- helpers ------------------------------------------------------------------------------
def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from the socket (status, headers, body); AssertionError if the
    connection ends before a complete answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a complete answer (got {data[:200]!r})"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        body += chunk
    return status, headers, body[:length]


def _exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        status, headers, body = _read_response(sock)
    return status, headers, json.loads(body) if body else None


def _post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode("latin-1") + body


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _load(srv: Server, name: str, config: object | None = None) -> tuple[int, dict[str, object] | None]:
    body = {"parameters": {"config": config if isinstance(config, str) else json.dumps(config)}} if config else {}
    return srv.json("POST", f"/v2/repository/models/{name}/load", body)


def _infer_data(srv: Server) -> list[float]:
    status, resp = srv.json("POST", "/v2/models/float_model/infer", {"inputs": [X]})
    assert status == 200, resp
    return resp["outputs"][0]["data"]


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, Path]:
    """A repository at <tmp>/r/models and a valid model outside it at <tmp>/r/secret.tflite
    (computing 7x, so serving it would show), reached from a version folder as ../../../secret.tflite."""
    repo = make_repo(tmp_path / "r")
    secret = make_float_model(tmp_path / "r" / "secret.tflite", scale=7.0, bias=0.0)
    return repo, secret


# --- model files named by a configuration ---------------------------------------------------
TRAVERSALS = ["../../../secret.tflite", "1/../../../../secret.tflite", "ABSOLUTE", "..", "sub/model.tflite"]


def test_config_cannot_name_a_model_file_outside_the_version_folder(
    server_factory: Callable[..., Server], outside: tuple[Path, Path]
) -> None:
    repo, secret = outside
    srv = server_factory(repo=repo, args=["--load-model", "float_model"])
    for name in TRAVERSALS:
        name = str(secret) if name == "ABSOLUTE" else name
        # in the load request's parameters.config (Triton's JSON form)
        cfg = {"name": "float_model", "backend": "tflite", "default_model_filename": name}
        status, resp = _load(srv, "float_model", cfg)
        assert status == 400, (name, resp)
        assert "plain file name" in resp["error"], resp
        assert _infer_data(srv) == ORIGINAL, name
        # in the model's config.pbtxt
        (repo / "float_model" / "config.pbtxt").write_text(
            f'name: "float_model"\nbackend: "tflite"\ndefault_model_filename: {json.dumps(name)}\n'
        )
        status, resp = _load(srv, "float_model")
        assert status == 400, (name, resp)
        assert "plain file name" in resp["error"], resp
        assert _infer_data(srv) == ORIGINAL, name
    # a plain file name in the version folder still works
    make_float_model(repo / "float_model" / "1" / "other.tflite", scale=5.0, bias=0.0)
    (repo / "float_model" / "config.pbtxt").write_text(
        'name: "float_model"\nbackend: "tflite"\ndefault_model_filename: "other.tflite"\n'
    )
    assert _load(srv, "float_model")[0] == 200
    assert _infer_data(srv) == [5.0, 10.0, 15.0, 20.0]


def test_refused_model_file_names_do_not_tell_whether_a_path_exists(
    server_factory: Callable[..., Server], outside: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, secret = outside
    srv = server_factory(repo=repo)
    names = [
        "../../../secret.tflite",  # exists
        "../../../missing.tflite",  # does not
        str(secret),  # exists, absolute
        str(tmp_path / "missing.tflite"),  # does not, absolute
        "../../..",  # a folder
        "x\x00y",  # NUL
        "..",
    ]
    for source in ("json", "pbtxt"):
        answers = set()
        for name in names:
            if source == "json":
                status, resp = _load(srv, "float_model", {"name": "float_model", "default_model_filename": name})
            else:
                (repo / "float_model" / "config.pbtxt").write_text(
                    f'name: "float_model" default_model_filename: {json.dumps(name)}'
                )
                status, resp = _load(srv, "float_model")
            answers.add((status, json.dumps(resp)))
        assert len(answers) == 1, (source, answers)
        status, text = answers.pop()
        assert status == 400 and "secret" not in text and "missing" not in text


# --- bodies -------------------------------------------------------------------------------
def test_oversized_body_is_answered_413_without_being_kept(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model", "--max-request-bytes", str(MiB)])
    before = _peak_rss_kib(srv.proc.pid)
    # a claim of 1 GiB: the answer comes before any of the body is sent
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(_post("/v2/models/float_model/infer", b"", f"Content-Length: {1 << 30}"))
        status, headers, body = _read_response(sock)
    assert status == 413 and headers["connection"] == "close"
    assert f"exceeds the limit of {MiB} bytes" in json.loads(body)["error"]
    # a client that sends its whole 32 MiB body before it reads still reads the answer
    big = b"[" + b"0," * (16 * MiB) + b"0]"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(_post("/v2/models/float_model/infer", big, f"Content-Length: {len(big)}"))
        status, _, body = _read_response(sock)
    assert status == 413, body
    assert (_peak_rss_kib(srv.proc.pid) - before) < 16 * 1024, "the refused body was kept in memory"
    assert _infer_data(srv) == ORIGINAL


def test_json_body_memory_is_bounded(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model"])
    start = _peak_rss_kib(srv.proc.pid)

    def body(n: int) -> bytes:
        head = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":['
        return head + b"1.5," * n + b"0]}]}"

    # the largest JSON body the element limit lets through is parsed: about 50 bytes a value
    largest = body(999_000)
    request = _post("/v2/models/float_model/infer", largest, f"Content-Length: {len(largest)}")
    status, _, resp = _exchange(srv.port, request)
    assert status == 400 and "values given" in resp["error"]
    assert _peak_rss_kib(srv.proc.pid) - start < 80 * 1024
    # 60 MB of JSON (15 million values) is refused before it is parsed: the body buffer only
    big = body(15_000_000)
    t0 = time.monotonic()
    status, _, resp = _exchange(srv.port, _post("/v2/models/float_model/infer", big, f"Content-Length: {len(big)}"))
    assert status == 413 and "max_json_elements" in resp["error"], resp
    assert time.monotonic() - t0 < 10  # the old server took 3.4 s and 466 MB for it
    assert _peak_rss_kib(srv.proc.pid) - start < len(big) // 1024 + 32 * 1024
    assert _infer_data(srv) == ORIGINAL


def test_body_must_arrive_in_time(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model", "--request-timeout-s", "1"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=6) as sock:
        sock.sendall(_post("/v2/models/float_model/infer", INFER[:10], f"Content-Length: {len(INFER)}"))
        t0 = time.monotonic()
        status, headers, body = _read_response(sock)
    assert status == 408 and headers["connection"] == "close" and time.monotonic() - t0 < 4
    assert "not received in time" in json.loads(body)["error"]


# --- HTTP framing ---------------------------------------------------------------------------
def test_content_length_is_exactly_one_decimal_number(server: Server) -> None:
    n = len(INFER)
    path = "/v2/models/float_model/infer"
    digits = str(n)
    cases = [
        (_post(path, INFER, f"Content-Length: +{n}"), 400),
        (_post(path, INFER, f"Content-Length: {digits[0]}_{digits[1:]}"), 400),
        (_post(path, INFER, f"Content-Length: {n}", f"Content-Length: {n}"), 400),
        (_post(path, INFER, f"Content-Length: {n}, {n}"), 400),
        (_post(path, INFER, "Content-Length: -1"), 400),
        (_post(path, INFER, f"Content-Length: {hex(n)}"), 400),
        (_post(path, INFER, "Content-Length: \xd9\xa5"), 400),  # an Arabic-Indic 5 in UTF-8
        (_post(path, b"", "Connection: close"), 411),
    ]
    for request, code in cases:
        status, headers, resp = _exchange(server.port, request)
        assert status == code, (request[:120], resp)
        assert "Content-Length" in resp["error"] and headers["connection"] == "close", resp
    # the binary extension's header length follows the same rule
    x = np.array([[1, 2, 3, 4]], np.float32).tobytes()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
    head = json.dumps({"inputs": [tensor]}).encode()
    for value in (f"+{len(head)}", f"{len(head)}.0", f"{len(head)} ", "\xd9\xa5"):
        status, _, resp = _exchange(
            server.port,
            _post(path, head + x, f"Content-Length: {len(head) + 16}", f"Inference-Header-Content-Length: {value}"),
        )
        if value == f"{len(head)} ":
            assert status == 200, resp  # surrounding blanks are not part of a header value
        else:
            assert status == 400 and "Inference-Header-Content-Length" in resp["error"], (value, resp)
    assert _infer_data(server) == ORIGINAL


def test_transfer_encoding_is_refused_501(server: Server) -> None:
    path = "/v2/models/float_model/infer"
    for request in (
        _post(path, b"5\r\n{\"a\":\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
        _post(path, INFER, "Transfer-Encoding: chunked", f"Content-Length: {len(INFER)}"),
        _post(path, INFER, f"Content-Length: {len(INFER)}", "Transfer-Encoding: identity"),
    ):
        status, headers, resp = _exchange(server.port, request)
        assert status == 501 and "Transfer-Encoding" in resp["error"], resp
        assert headers["connection"] == "close"
    assert _infer_data(server) == ORIGINAL


# --- malformed input: 400, never 500 ---------------------------------------------------------
def test_deep_nesting_and_wrong_types_answer_400(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    srv = server_factory(repo=repo, args=["--load-model", "float_model"])
    load = "/v2/repository/models/float_model/load"
    infer = "/v2/models/float_model/infer"
    TENSOR = {"name": "x", "data_type": "TYPE_FP32"}  # noqa: N806
    cases: list[tuple[str, object]] = [
        (load, {"parameters": {"config": "[" * 100_000}}),  # a config override nested 100k deep
        (load, {"parameters": {"config": '{"a":' * 50 + "1" + "}" * 50}}),
        (load, {"parameters": {"config": json.dumps({"input": 5})}}),
        (load, {"parameters": {"config": json.dumps({"max_batch_size": True})}}),
        (load, {"parameters": {"config": json.dumps({"version_policy": {"latest": {"num_versions": True}}})}}),
        (load, {"parameters": {"config": json.dumps({"version_policy": {"latest": 3}})}}),
        (load, {"parameters": {"config": json.dumps({"input": [{**TENSOR, "dims": [0.5]}]})}}),
        (load, {"parameters": {"config": 7}}),
        (load, {"parameters": [1]}),
        (infer, {"inputs": [{**X, "shape": [1] * 100, "data": [1]}]}),
        (infer, {"inputs": [{**X, "data": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}),
        (infer, {"inputs": [{**X, "parameters": {"binary_data_size": True}}]}),
        (infer, [X]),
        (infer, {"inputs": "x"}),
        ("/v2/repository/index", [1, 2]),
    ]
    for path, body in cases:
        status, resp = srv.json("POST", path, body)
        assert status == 400, (path, str(body)[:100], resp)
        assert isinstance(resp, dict) and resp.get("error"), resp
    # the same nesting in config.pbtxt
    (repo / "float_model" / "config.pbtxt").write_text("a { " * 100_000)
    status, resp = srv.json("POST", load)
    assert status == 400 and "nested deeper" in resp["error"], resp
    (repo / "float_model" / "config.pbtxt").write_text('name: "float_model" max_batch_size: \u0661')
    status, resp = srv.json("POST", load)
    assert status == 400 and "max_batch_size" in resp["error"], resp
    assert _infer_data(srv) == ORIGINAL


def test_versions_are_ascii_digits(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    (repo / "float_model" / "\u00b2").mkdir()  # a version folder named '²' beside 1
    make_float_model(repo / "float_model" / "\u00b2" / "model.tflite", scale=9.0, bias=0.0)
    srv = server_factory(repo=repo, args=["--load-model", "float_model"])
    assert srv.json("GET", "/v2/models/float_model")[1]["versions"] == ["1"]  # '²' is not a version
    for version in ("%C2%B2", "%D9%A1", "%EF%BC%91", "1" * 5000, "+1", "01", "0"):
        for method, path, body in (
            ("GET", f"/v2/models/float_model/versions/{version}", None),
            ("GET", f"/v2/models/float_model/versions/{version}/ready", None),
            ("POST", f"/v2/models/float_model/versions/{version}/infer", {"inputs": [X]}),
        ):
            status, resp = srv.json(method, path, body)
            assert status == 400 and "invalid version" in resp["error"], (version[:20], path[-10:], resp)
    # versions in a configuration: integers, not other digits
    for cfg in (
        {"version_policy": {"specific": {"versions": ["\u0661"]}}},
        {"version_policy": {"specific": {"versions": [True]}}},
        {"version_policy": {"latest": {"num_versions": "\uff11"}}},
    ):
        status, resp = _load(srv, "float_model", cfg)
        assert status == 400 and "must be an integer" in resp["error"], (cfg, resp)
    (repo / "float_model" / "config.pbtxt").write_text(
        'name: "float_model" version_policy: { specific: { versions: [ \u0661 ] } }'
    )
    status, resp = _load(srv, "float_model")
    assert status == 400 and "must be an integer" in resp["error"], resp
    assert _infer_data(srv) == ORIGINAL


# --- concurrency caps ---------------------------------------------------------------------
def _slot_holder(port: int) -> socket.socket:
    """An idle keep-alive connection that holds one of the server's connection slots: its first answer was a
    200. (The connection of the start-up readiness probe can keep a slot for a moment after it closed.)"""
    deadline = time.monotonic() + 10
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        if _read_response(sock)[0] == 200:
            return sock
        sock.close()
        assert time.monotonic() < deadline, "no connection slot came free"
        time.sleep(0.05)


def test_connections_beyond_the_cap_get_503(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(args=["--load-model", "float_model", "--max-connections", "2"])
    idle = [_slot_holder(srv.port) for _ in range(2)]
    try:
        status, headers, resp = _exchange(srv.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and "max_connections" in resp["error"], resp
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        # a client that sends a whole body still reads the answer
        request = _post("/v2/models/float_model/infer", INFER, f"Content-Length: {len(INFER)}")
        status, _, resp = _exchange(srv.port, request)
        assert status == 503, resp
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while srv.request("GET", "/v2/health/live")[0] != 200:
        assert time.monotonic() < deadline, "the connection slots were not given back"
        time.sleep(0.1)


def test_requests_beyond_the_inflight_cap_get_503(server_factory: Callable[..., Server]) -> None:
    # a request waits up to 1 s for a slot: enough for the holder below to get its slot even
    # when one of the probes holds it for a moment
    srv = server_factory(args=["--load-model", "float_model", "--max-inflight", "1", "--inflight-wait-s", "1"])
    holder = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        # one request in flight: its headers are in, its body is still on the way
        holder.sendall(_post("/v2/models/float_model/infer", INFER[:10], f"Content-Length: {len(INFER)}"))
        deadline = time.monotonic() + 10
        while True:
            t0 = time.monotonic()
            status, headers, resp = _exchange(
                srv.port, _post("/v2/models/float_model/infer", INFER, f"Content-Length: {len(INFER)}")
            )
            if status == 503:
                break
            assert status == 200 and time.monotonic() < deadline, resp  # the holder had not got its slot yet
            time.sleep(0.05)
        assert time.monotonic() - t0 >= 0.9, "the request did not wait inflight_wait_s for a slot"
        assert "max_inflight" in resp["error"] and headers["retry-after"] == "1"
        assert srv.request("GET", "/v2/health/ready")[0] == 200  # GETs are not held up
        holder.sendall(INFER[10:])
        status, _, body = _read_response(holder)
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == ORIGINAL
    finally:
        holder.close()
    assert _infer_data(srv) == ORIGINAL


# --- the metrics port ---------------------------------------------------------------------
def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a listening socket on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if fields[3] == "0A" and int(hexport, 16) == port:
                out.append(addr)
    return out


def test_metrics_listen_on_loopback_by_default(tmp_path: Path) -> None:
    """The HTTP port on another address (127.0.0.2 here, to stay on loopback): metrics stay on 127.0.0.1."""
    port, mport = free_port(), free_port()
    log = tmp_path / "server.log"
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "litert_server", "--host", "127.0.0.2", "--port", str(port)]
    cmd += ["--metrics-port", str(mport), "--model-repository", str(make_repo(tmp_path))]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    srv = Server(proc, port, mport, tmp_path, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.2:{port}/v2/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        assert _listening(mport) == ["0100007F"], _listening(mport)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.2:{mport}/metrics", timeout=5)
        first = json.loads(log.read_text().splitlines()[0])
        assert first["msg"] == "listening" and first["metrics_host"] == "127.0.0.1"
    finally:
        stop_server(srv)


def test_role_publishes_metrics_on_loopback_by_default() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert defaults["inference_server_metrics_bind_address"] == "127.0.0.1"
    assert options["inference_server_metrics_bind_address"]["default"] == "127.0.0.1"
    container = (ROLE / "tasks" / "container.yml").read_text()
    assert "inference_server_metrics_bind_address ~ ':' ~ inference_server_metrics_port ~ ':8002'" in container
    # the image listens on all of its own interfaces, so that the port mapping decides
    dockerfile = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text()
    assert "EDGEAI_LITERT_METRICS_HOST=0.0.0.0" in dockerfile
