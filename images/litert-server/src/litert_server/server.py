"""HTTP front end: KServe v2 REST on the standard library's ThreadingHTTPServer.

Why the standard library: for the small requests an edge server sees, a tight handler
on http.server (one write per response, TCP_NODELAY, keep-alive) measured faster than
starlette+uvicorn here (see docs/litert-server.md), and it adds no dependencies.

Hostile input (docs/security.md, "The LiteRT server"): a body needs exactly one Content-Length
of ASCII digits (no Transfer-Encoding); it is refused (413) before it is read when it is over
max_request_bytes, and read in chunks into one buffer of that size otherwise, within
request_timeout_s. Open connections are capped (max_connections, one thread each) and so are
POST requests being received or processed (max_inflight); beyond either the answer is 503.
JSON bodies are bounded in depth and element count before they are parsed (jsonlimits).
Refused bodies are read and thrown away (bounded in bytes and time) after the answer, so a
client that sends its whole body before it reads still gets the answer.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
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

from litert_server import __version__, jsonlimits, jsonlog
from litert_server.config import Settings, load_settings
from litert_server.errors import BadRequest, NotFound, NotReady, ServerError, TooLarge, Unauthorized
from litert_server.metrics import Metrics
from litert_server.protocol import HEADER_LENGTH, decode_json, decode_request, encode_response
from litert_server.repository import Repository, check_model_name
from litert_server.runtime import RUNTIME, find_edgetpus

log = logging.getLogger("litert_server")

JSON = "application/json"
_EMPTY: dict[str, str] = {}
Response = tuple[int, bytes, str, dict[str, str]]
_DIGITS = re.compile(r"[0-9]{1,18}")  # a length: ASCII digits only (no sign, '_', spaces or other digits)
_CHUNK = 1 << 20  # bodies are read in chunks of this size
_DISCARD_S = 5.0  # the most time spent reading and dropping a refused body
_METRICS_CONNECTIONS = 8


def _header_values(headers: Any, name: str) -> list[str]:
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        return list(get_all(name) or [])
    value = headers.get(name)
    return [] if value is None else [value]


def parse_length(values: list[str], what: str) -> int | None:
    """One header holding a decimal length (ASCII digits): None when absent; else BadRequest."""
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"more than one {what} header")
    raw = values[0].strip(" \t")
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"invalid {what} header: one decimal number (ASCII digits only) expected")
    return int(raw)


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
        self.json_limits = jsonlimits.JSONLimits(settings.max_json_depth, settings.max_json_elements)
        # POST requests being received or processed: bounds the memory their bodies take
        self.inflight = threading.BoundedSemaphore(settings.max_inflight)

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
                hlen = parse_length(_header_values(headers, HEADER_LENGTH), HEADER_LENGTH)
                return self.infer(name, version, body, hlen)
            if rest == ["repository", "index"]:
                req = self._body_json(body, self.json_limits)
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
    def _body_json(body: bytes | bytearray, limits: jsonlimits.JSONLimits) -> dict[str, Any]:
        if not body or body.isspace():
            return {}
        obj = decode_json(body, limits)
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
        req = self._body_json(body, self.json_limits)
        if action == "unload":
            self.repo.unload(name)
            return 200, b"", JSON, _EMPTY
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("parameters must be an object")
        if any(str(k).startswith("file:") for k in params):
            raise BadRequest("file overrides in the load request are not supported; put files in the repository")
        override = params.get("config")
        if override is not None and not isinstance(override, str):
            raise BadRequest("parameters.config must be a JSON string")
        self.repo.load(name, override)
        return 200, b"", JSON, _EMPTY

    def infer(self, name: str, version: str | None, body: bytes, header_length: int | None) -> Response:
        t0 = time.perf_counter_ns()
        lv = self.repo.get(name, version)
        try:
            req = decode_request(body, header_length, self.json_limits)
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
    max_inflight: int
    inflight_wait: float
    request_timeout: float
    _unread = 0  # body bytes left unread after a refusal (-1: not known)

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

    def handle_expect_100(self) -> bool:
        """Only promise to take a body that would be taken: otherwise no 100 Continue, and
        _handle answers the request (413, 400 ...) without waiting for the body."""
        try:
            length = parse_length(_header_values(self.headers, "Content-Length"), "Content-Length")
        except BadRequest:
            return True
        if self.headers.get("Transfer-Encoding") or length is None or length > self.max_body:
            return True
        return super().handle_expect_100()

    def _body_length(self, method: str) -> int:
        """The length of the body to read, from exactly one Content-Length of ASCII digits."""
        if _header_values(self.headers, "Transfer-Encoding"):
            self.close_connection = True
            self._unread = -1
            raise ServerError(
                "Transfer-Encoding (chunked bodies) is not supported; send the body with a Content-Length", 501
            )
        try:
            length = parse_length(_header_values(self.headers, "Content-Length"), "Content-Length")
        except BadRequest:
            self.close_connection = True  # where the body ends is not known: this connection cannot go on
            self._unread = -1
            raise
        if length is None:
            if method in ("POST", "PUT"):
                self.close_connection = True
                raise ServerError(f"{method} needs a Content-Length header (0 for an empty body)", 411)
            return 0
        if length > self.max_body:
            self.close_connection = True
            self._unread = length
            raise TooLarge(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
        return length

    def _read_body(self, length: int) -> bytearray:
        """Read exactly ``length`` bytes into one buffer, in chunks, within request_timeout_s."""
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        deadline = time.monotonic() + self.request_timeout
        self._unread = length
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(min(self.timeout, left))
                n = self.rfile.readinto1(view[got : got + _CHUNK])
                if not n:
                    self.close_connection = True
                    self._unread = 0
                    raise BadRequest("request body shorter than Content-Length")
                got += n
                self._unread = length - got
        except TimeoutError as exc:
            self.close_connection = True
            self._unread = 0
            raise ServerError(f"request body not received in time ({got} of {length} bytes)", 408) from exc
        finally:
            self.connection.settimeout(self.timeout)
        return body

    def _discard(self) -> None:
        """After a refusal: read and drop what is left of the body (at most its length, or
        max_request_bytes when unknown, and _DISCARD_S), so that the client reads the answer
        instead of a reset connection."""
        left = self.max_body if self._unread < 0 else self._unread
        if left <= 0:
            return
        deadline = time.monotonic() + _DISCARD_S
        scratch = bytearray(65536)
        try:
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.connection.settimeout(min(remaining, 1.0))
                n = self.rfile.readinto1(memoryview(scratch)[: min(left, len(scratch))])
                if not n:
                    return
                left -= n
        except OSError:
            return

    def _handle(self, method: str) -> None:
        self._unread = 0
        slot = False
        try:
            try:
                length = self._body_length(method)
                enc = self.headers.get("Content-Encoding")
                if enc and enc.lower() != "identity":
                    self.close_connection = True
                    self._unread = length
                    raise ServerError(f"Content-Encoding {enc} is not supported", 415)
                if method in ("POST", "PUT"):
                    slot = self.app.inflight.acquire(timeout=self.inflight_wait)
                    if not slot:
                        self.close_connection = True
                        self._unread = length
                        raise ServerError(
                            f"server busy: {self.max_inflight} requests in flight (max_inflight); retry later", 503
                        )
                body = self._read_body(length) if length else b""
                status, out, ctype, extra = self.app.dispatch(method, self.path, self.headers, body)
                del body
            except ServerError as exc:
                status, out, ctype = exc.status, json.dumps({"error": str(exc)}).encode(), JSON
                extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else _EMPTY
                if exc.status == 503 and self._unread:
                    extra = {"Retry-After": "1"}
            except Exception as exc:
                log.exception("unhandled error", extra={"path": self.path})
                status, out, ctype, extra = 500, json.dumps({"error": f"internal error: {exc}"}).encode(), JSON, _EMPTY
            self._respond(status, out, ctype, extra)
        finally:
            if slot:
                self.app.inflight.release()
        if self._unread:
            self._discard()

    def _respond(self, status: int, out: bytes, ctype: str, extra: dict[str, str]) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\n"
        ]
        for key, value in extra.items():
            head.append(f"{key}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        try:
            if len(out) <= 65536:
                self.wfile.write(data + out)  # one write for the usual small answer
            else:
                self.wfile.write(data)  # no copy of a large body
                self.wfile.write(out)
        except OSError:
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
    """ThreadingHTTPServer with a cap on open connections (each has its own thread).

    Beyond the cap a connection gets 503 and is closed: a few short-lived threads answer it
    and read what the client sends for a moment (so it reads the answer, not a reset); when
    those are busy too, the accepting thread sends the answer without waiting and closes.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    _REFUSERS = 8

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusers = threading.BoundedSemaphore(self._REFUSERS)
        body = json.dumps({"error": f"server busy: {max_connections} connections open (max_connections)"}).encode()
        self._busy = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, sock: socket.socket) -> None:
        if self._refusers.acquire(blocking=False):
            try:
                threading.Thread(target=self._refuse_slowly, args=(sock,), daemon=True).start()
                return
            except RuntimeError:
                self._refusers.release()
        try:
            sock.setblocking(False)
            sock.send(self._busy)
        except OSError:
            pass
        self.shutdown_request(sock)

    def _refuse_slowly(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(self._busy)
            sock.shutdown(socket.SHUT_WR)
            deadline, seen = time.monotonic() + 2.0, 0
            while time.monotonic() < deadline and seen < (1 << 20):
                data = sock.recv(65536)
                if not data:
                    break
                seen += len(data)
        except OSError:
            pass
        finally:
            self.shutdown_request(sock)
            self._refusers.release()


def make_servers(settings: Settings, app: App) -> tuple[_Server, _Server | None]:
    handler = type(
        "Handler",
        (_Handler,),
        {
            "app": app,
            "max_body": settings.max_request_bytes,
            "max_inflight": settings.max_inflight,
            "inflight_wait": settings.inflight_wait_s,
            "request_timeout": settings.request_timeout_s,
            "timeout": settings.idle_timeout_s,
        },
    )
    httpd = _Server((settings.host, settings.port), handler, settings.max_connections)
    metrics = None
    if settings.metrics_port:
        mhandler = type("MetricsHandler", (_MetricsHandler,), {"app": app, "timeout": settings.idle_timeout_s})
        metrics_host = settings.metrics_host or settings.host
        metrics = _Server((metrics_host, settings.metrics_port), mhandler, _METRICS_CONNECTIONS)
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
            "metrics_host": metrics_httpd.server_address[0] if metrics_httpd else None,
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
