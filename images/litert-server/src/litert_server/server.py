"""HTTP front end: KServe v2 REST on the standard library's ThreadingHTTPServer.

Why the standard library: for the small requests an edge server sees, a tight handler
on http.server (one write per response, TCP_NODELAY, keep-alive) measured faster than
starlette+uvicorn here (see docs/litert-server.md), and it adds no dependencies.
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from litert_server import __version__, jsonlog
from litert_server.config import Settings, load_settings
from litert_server.errors import BadRequest, NotFound, NotReady, ServerError, TooLarge, Unauthorized
from litert_server.metrics import Metrics
from litert_server.protocol import HEADER_LENGTH, decode_request, encode_response
from litert_server.repository import Repository, check_model_name
from litert_server.runtime import RUNTIME, find_edgetpus

log = logging.getLogger("litert_server")

JSON = "application/json"
_EMPTY: dict[str, str] = {}
Response = tuple[int, bytes, str, dict[str, str]]


def _json(status: int, obj: Any) -> Response:
    return status, json.dumps(obj, separators=(",", ":")).encode(), JSON, _EMPTY


class App:
    """Routes requests; independent of the HTTP machinery so it can be tested alone."""

    def __init__(self, settings: Settings, repo: Repository, metrics: Metrics, token: str = "") -> None:
        self.settings = settings
        self.repo = repo
        self.metrics = metrics
        self._token = token.encode() if token else b""
        self.ready = False

    # --- auth -----------------------------------------------------------------
    def check_auth(self, parts: list[str], authorization: str | None) -> None:
        if not self._token or parts[:2] == ["v2", "health"]:
            return
        given = (authorization or "").encode("latin-1", "replace")
        if not given.startswith(b"Bearer ") or not hmac.compare_digest(given[7:].strip(), self._token):
            raise Unauthorized("missing or wrong bearer token")

    # --- dispatch -------------------------------------------------------------
    def dispatch(self, method: str, path: str, headers: Any, body: bytes) -> Response:
        parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
        self.check_auth(parts, headers.get("Authorization"))
        if not parts or parts[0] != "v2":
            raise NotFound(f"no endpoint {path}")
        rest = parts[1:]
        if method == "POST":
            if len(rest) >= 3 and rest[0] == "models" and rest[-1] == "infer":
                name, version = self._model_path(rest[1:-1])
                return self.infer(name, version, body, headers.get(HEADER_LENGTH))
            if rest == ["repository", "index"]:
                req = self._body_json(body)
                return _json(200, self.repo.index(bool(req.get("ready", False))))
            if len(rest) == 4 and rest[:2] == ["repository", "models"] and rest[3] in ("load", "unload"):
                return self.repository_action(check_model_name(rest[2]), rest[3], body)
        elif method == "GET":
            if rest == []:
                return _json(200, self.server_metadata())
            if rest == ["health", "live"]:
                return _json(200, {"live": True})
            if rest == ["health", "ready"]:
                if not self.ready:
                    raise NotReady("server is starting")
                return _json(200, {"ready": True})
            if rest == ["models", "stats"]:
                return _json(200, {"model_stats": self.metrics.model_stats(None, None)})
            if len(rest) >= 2 and rest[0] == "models":
                tail = rest[-1] if rest[-1] in ("ready", "config", "stats") else ""
                name, version = self._model_path(rest[1:-1] if tail else rest[1:])
                if tail == "ready":
                    lv = self.repo.get(name, version)
                    return _json(200, {"name": name, "version": str(lv.version), "ready": True})
                if tail == "config":
                    return _json(200, self.model_config(name, version))
                if tail == "stats":
                    if not self.repo.is_known(name):
                        raise NotFound(f"unknown model '{name}'")
                    return _json(200, {"model_stats": self.metrics.model_stats(name, version)})
                return _json(200, self.model_metadata(name, version))
        else:
            raise ServerError(f"method {method} not allowed", 405)
        raise NotFound(f"no endpoint {method} {path}")

    @staticmethod
    def _model_path(parts: list[str]) -> tuple[str, str | None]:
        if len(parts) == 1:
            return check_model_name(parts[0]), None
        if len(parts) == 3 and parts[1] == "versions":
            return check_model_name(parts[0]), parts[2]
        raise NotFound("no such model endpoint")

    @staticmethod
    def _body_json(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise BadRequest("request body must be a JSON object")
        return obj

    # --- endpoints ------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "litert-server",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository", "statistics"],
            "runtime": RUNTIME,
            "edgetpu_devices": find_edgetpus(self.settings.device_root),
        }

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        lv = self.repo.get(name, version)
        entry = self.repo.entry(name)
        versions = sorted(entry.versions) if entry is not None else [lv.version]
        meta = {"name": name, "versions": [str(v) for v in versions], "platform": "tflite"}
        meta.update(lv.metadata())
        return meta

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        lv = self.repo.get(name, version)
        if lv.config is not None:
            return lv.config.as_json()

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {"name": s.name, "data_type": "TYPE_" + s.datatype.replace("BYTES", "STRING"), "dims": list(s.shape)}
                for s in specs
            ]

        return {
            "name": name,
            "platform": "tflite",
            "backend": "tflite",
            "max_batch_size": 0,
            "input": tensors(lv.inputs),
            "output": tensors(lv.outputs),
            "version_policy": {"latest": {"num_versions": 1}},
        }

    def repository_action(self, name: str, action: str, body: bytes) -> Response:
        req = self._body_json(body)
        if action == "unload":
            self.repo.unload(name)
            return 200, b"", JSON, _EMPTY
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("parameters must be an object")
        if any(k.startswith("file:") for k in params):
            raise BadRequest("file overrides in the load request are not supported; put files in the repository")
        override = params.get("config")
        if override is not None and not isinstance(override, str):
            raise BadRequest("parameters.config must be a JSON string")
        self.repo.load(name, override)
        return 200, b"", JSON, _EMPTY

    def infer(self, name: str, version: str | None, body: bytes, header_length: str | None) -> Response:
        t0 = time.perf_counter_ns()
        lv = self.repo.get(name, version)
        try:
            hlen = None
            if header_length is not None:
                try:
                    hlen = int(header_length)
                except ValueError as exc:
                    raise BadRequest(f"invalid {HEADER_LENGTH} header") from exc
            req = decode_request(body, hlen)
            batch = lv.check_inputs(req.inputs)
            order = req.outputs or lv.output_names
            lv.check_outputs(order)
            res = lv.infer(req.inputs, order)
            out, out_hlen = encode_response(name, lv.version, req, res.outputs, order)
        except ServerError:
            self.metrics.failure(name, str(lv.version), time.perf_counter_ns() - t0)
            raise
        self.metrics.success(
            name,
            str(lv.version),
            batch,
            time.perf_counter_ns() - t0,
            res.queue_ns,
            res.input_ns,
            res.infer_ns,
            res.output_ns,
        )
        if out_hlen is None:
            return 200, out, JSON, _EMPTY
        return 200, out, "application/octet-stream", {HEADER_LENGTH: str(out_hlen)}


_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"litert-server/{__version__}"
    sys_version = ""
    app: App
    max_body: int

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by http.server itself (bad request line, headers too long …), as JSON."""
        body = json.dumps({"error": f"{code} {message or _REASONS.get(code, '')}".strip()}).encode()
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http", extra={"client": self.client_address[0], "line": format % args})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ServerError("chunked request bodies are not supported; send Content-Length", 411)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError as exc:
            self.close_connection = True
            raise BadRequest("invalid Content-Length") from exc
        if length > self.max_body:
            self.close_connection = True  # the body stays unread: this connection cannot go on
            raise TooLarge(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise BadRequest("request body shorter than Content-Length")
        return body

    def _handle(self, method: str) -> None:
        try:
            body = self._read_body()
            enc = self.headers.get("Content-Encoding")
            if enc and enc.lower() != "identity":
                raise ServerError(f"Content-Encoding {enc} is not supported", 415)
            status, out, ctype, extra = self.app.dispatch(method, self.path, self.headers, body)
        except ServerError as exc:
            status, out, ctype = exc.status, json.dumps({"error": str(exc)}).encode(), JSON
            extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else _EMPTY
        except Exception as exc:
            log.exception("unhandled error", extra={"path": self.path})
            status, out, ctype, extra = 500, json.dumps({"error": f"internal error: {exc}"}).encode(), JSON, _EMPTY
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\n"
        ]
        for key, value in extra.items():
            head.append(f"{key}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        try:
            self.wfile.write("".join(head).encode("latin-1") + out)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _MetricsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"litert-server/{__version__}"
    app: App

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            body = self.app.metrics.render(self.app.repo.loaded()).encode()
            status, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, ctype = b'{"error": "no such endpoint; metrics are at /metrics"}', 404, JSON
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, handler)


def make_servers(settings: Settings, app: App) -> tuple[_Server, _Server | None]:
    handler = type(
        "Handler", (_Handler,), {"app": app, "max_body": settings.max_request_bytes, "timeout": settings.idle_timeout_s}
    )
    httpd = _Server((settings.host, settings.port), handler)
    metrics = None
    if settings.metrics_port:
        mhandler = type("MetricsHandler", (_MetricsHandler,), {"app": app, "timeout": settings.idle_timeout_s})
        metrics = _Server((settings.metrics_host or settings.host, settings.metrics_port), mhandler)
    return httpd, metrics


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"litert-server: {exc}\n")
        return 2
    jsonlog.setup(settings.log_level)
    try:
        token = settings.auth_token()
    except OSError as exc:
        log.error("cannot read the token file", extra={"token_file": settings.token_file, "reason": str(exc)})
        return 2
    repo = Repository(
        settings.model_repository,
        settings.device_root,
        settings.edgetpu_library,
        settings.interpreters_per_model,
        settings.num_threads,
    )
    app = App(settings, repo, Metrics(), token)
    try:
        httpd, metrics_httpd = make_servers(settings, app)
    except OSError as exc:
        log.error("cannot listen", extra={"host": settings.host, "port": settings.port, "reason": str(exc)})
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [
        threading.Thread(target=s.serve_forever, name=n, daemon=True)
        for s, n in ((httpd, "http"), (metrics_httpd, "metrics"))
        if s is not None
    ]
    for t in threads:
        t.start()
    log.info(
        "listening",
        extra={
            "host": settings.host,
            "port": httpd.server_address[1],
            "metrics_port": metrics_httpd.server_address[1] if metrics_httpd else None,
            "model_repository": settings.model_repository,
            "runtime": RUNTIME,
            "auth": bool(token),
            "edgetpu_devices": find_edgetpus(settings.device_root),
            "version": __version__,
        },
    )
    names = settings.load_models
    if "*" in names:
        names = repo.disk_models()
    for name in names:
        try:
            repo.load(name)
        except ServerError as exc:
            log.error("startup load failed", extra={"model": name, "reason": str(exc)})
    app.ready = True
    log.info("ready", extra={"models": repo.loaded()})
    stop.wait()
    log.info("shutting down")
    for s in (httpd, metrics_httpd):
        if s is not None:
            s.shutdown()
            s.server_close()
    return 0
