"""HTTP server of the lab's webhook receiver (the stand-in for the external event API)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from webhook_receiver.httpguard import BoundedHTTPServer, RequestError, content_length, parse_json, read_body

LOG = logging.getLogger("webhook_receiver")

ANSWERED = object()  # what _json_body returns for a body it has answered (refused)
DEVICE_PATH = re.compile(r"^/v1/devices/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
MAX_BODY = 1024 * 1024  # the default --max-body-bytes
MAX_CONNECTIONS = 64  # the default --max-connections
MAX_JSON_DEPTH = 64
CLIENT_TIMEOUT_S = 15.0  # seconds a connection may stay silent, and to send a whole body
REGISTRATION_FIELDS = {
    "site": str,
    "platform": str,
    "hardware": str,
    "model_name": str,
    "model_version": str,
    "server_endpoint": str,
    "webhook_url": str,
    "event_types": list,
    "labels": dict,
}
MODES = ("ok", "fail", "slow", "drop")
TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds, ASCII digits


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256, hex, over ``<timestamp>.<body>``.

    COPIED ON PURPOSE: the signing contract (docs/event-api.yaml) has a copy in each separately
    shipped part: here (the lab's receiver, which verifies), images/event-relay/src/event_relay/
    signing.py (the relay, which signs) and plugins/module_utils/_webhook.py (the collection's
    test event). Change all three together. The Idempotency-Key is not signed: the receiver
    de-duplicates on the ``id`` inside the signed body and refuses a key that differs from it.
    """
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, sort_keys=True)


class State:
    """Everything the receiver has seen, in memory and in JSON-lines files under state_dir."""

    def __init__(self, state_dir: Path) -> None:
        self.lock = threading.Lock()
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.events_file = state_dir / "events.jsonl"
        self.deliveries_file = state_dir / "deliveries.jsonl"
        self.registrations_file = state_dir / "registrations.json"
        self.events: list[dict[str, Any]] = []
        self.keys: dict[str, int] = {}
        self.registrations: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, int] = {}
        self.control: dict[str, Any] = {"mode": "ok", "status": 503, "delay_s": 0.0, "count": None}
        self._load()

    def _load(self) -> None:
        if self.events_file.exists():
            for line in self.events_file.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.keys[record["idempotency_key"]] = 1
                    self.events.append(record)
        if self.registrations_file.exists():
            self.registrations = json.loads(self.registrations_file.read_text())

    def bump(self, name: str, by: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + by

    def record_delivery(self, entry: dict[str, Any]) -> None:
        with self.deliveries_file.open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def accept_event(self, key: str, event: dict[str, Any], timestamp: str) -> bool:
        """Store an event once per idempotency key. Returns False for a duplicate."""
        if key in self.keys:
            self.keys[key] += 1
            self.bump("duplicates")
            return False
        self.keys[key] = 1
        record = {
            "idempotency_key": key,
            "received_at": time.time(),
            "timestamp": timestamp,
            "event": event,
        }
        self.events.append(record)
        with self.events_file.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
        self.bump("accepted")
        return True

    def save_registrations(self) -> None:
        tmp = self.registrations_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.registrations, sort_keys=True, indent=1))
        os.replace(tmp, self.registrations_file)

    def reset(self) -> None:
        self.events.clear()
        self.keys.clear()
        self.registrations.clear()
        self.stats.clear()
        self.control = {"mode": "ok", "status": 503, "delay_s": 0.0, "count": None}
        for path in (self.events_file, self.deliveries_file, self.registrations_file):
            path.unlink(missing_ok=True)


class Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    protocol_version = "HTTP/1.1"
    # Errors found before the request line's version is read (garbage, a bare "GET") are answered
    # with a status line too, not in the headerless HTTP/0.9 form.
    default_request_version = "HTTP/1.0"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "edgeai-webhook-receiver/0.1"

    def setup(self) -> None:
        self.timeout = self.server.client_timeout_s  # seconds a connection may stay silent
        super().setup()

    # -- plumbing -------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug(format % args, extra={"fields": {"client": self.client_address[0]}})

    def _read_body(self, required: bool = True) -> bytes | None:
        """The request's body, bounded (see httpguard); None when it was refused (answered)."""
        try:
            length = content_length(self.headers, self.server.max_body, required=required)
            return read_body(self.rfile, length, self.server.client_timeout_s) if length else b""
        except RequestError as exc:
            self._refuse(exc)
            return None

    def _json_body(self, body: bytes, default: bytes) -> Any:
        """The body (``default`` when empty) as JSON; ANSWERED when it is bad or too deeply nested
        JSON, which has been answered (400)."""
        try:
            return parse_json(body or default, MAX_JSON_DEPTH)
        except RequestError as exc:
            self._error(exc.status, exc.code, exc.message)
            return ANSWERED

    def _refuse(self, exc: RequestError) -> None:
        """Answer a refused request and close the connection (its body may be unread)."""
        with self.server.state.lock:
            self.server.state.bump("refused_" + exc.code)
        self.close_connection = True
        self._error(exc.status, exc.code, exc.message)

    def _send(self, status: int, payload: Any | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload, sort_keys=True).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": code, "message": message})

    def _no_body(self) -> bool:
        """For requests that take no body: False (answered 400) when one was sent anyway."""
        try:
            if content_length(self.headers, 1 << 62, required=False):
                raise RequestError(HTTPStatus.BAD_REQUEST, "unexpected_body", "this request takes no body")
        except RequestError as exc:
            self._refuse(exc)
            return False
        return True

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        values = self.headers.get_all("Authorization") or []
        if len(values) == 1 and values[0].startswith("Bearer "):
            # Header values are decoded as latin-1, so encoding them back is lossless.
            if hmac.compare_digest(values[0][7:].strip().encode("latin-1"), token.encode()):
                return True
        with self.server.state.lock:
            self.server.state.bump("rejected_auth")
        self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
        return False

    def _fault_injected(self) -> bool:
        """Apply the control mode to a /v1 request. True when the request was answered."""
        state = self.server.state
        with state.lock:
            control = dict(state.control)
            if control["mode"] in ("fail", "drop") and control["count"] is not None:
                if control["count"] <= 0:
                    state.control.update(mode="ok", count=None)
                    control["mode"] = "ok"
                else:
                    state.control["count"] = control["count"] - 1
        mode = control["mode"]
        if mode == "slow":
            time.sleep(float(control["delay_s"]))
            return False
        if mode == "fail":
            with state.lock:
                state.bump("failed_injected")
            self._error(int(control["status"]), "injected_failure", "told to fail by /_control")
            return True
        if mode == "drop":
            with state.lock:
                state.bump("dropped_injected")
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return True
        return False

    def _device_id(self, path: str) -> str | None:
        """The device of a /v1/devices/<id> request that is authorized and not failed on purpose;
        None when it has been answered (404, 401, an injected fault)."""
        match = DEVICE_PATH.match(path)
        if not match:
            self._error(HTTPStatus.NOT_FOUND, "not_found", path)
            return None
        if not self._authorized() or self._fault_injected():
            return None
        return match.group(1)

    # -- verbs ----------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not self._no_body():
            return
        if path.startswith("/_control"):
            self._control_get(path)
            return
        if path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
            return
        device_id = self._device_id(path)
        if device_id is None:
            return
        with self.server.state.lock:
            registration = self.server.state.registrations.get(device_id)
        if registration is None:
            self._error(HTTPStatus.NOT_FOUND, "not_found", "device not registered")
        else:
            self._send(HTTPStatus.OK, registration)

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        device_id = self._device_id(path)
        if device_id is None:
            return
        doc = self._json_body(body, b"null")
        if doc is ANSWERED:
            return
        problem = validate_registration(doc)
        if problem:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_registration", problem)
            return
        state = self.server.state
        with state.lock:
            created = device_id not in state.registrations
            record = {k: v for k, v in doc.items() if k in REGISTRATION_FIELDS}
            record["device_id"] = device_id
            record["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            state.registrations[device_id] = record
            state.save_registrations()
            state.bump("registrations_put")
        LOG.info("registration stored", extra={"fields": {"device_id": device_id, "created": created}})
        self._send(HTTPStatus.CREATED if created else HTTPStatus.OK, record)

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if not self._no_body():
            return
        device_id = self._device_id(path)
        if device_id is None:
            return
        state = self.server.state
        with state.lock:
            existed = state.registrations.pop(device_id, None) is not None
            if existed:
                state.save_registrations()
                state.bump("registrations_deleted")
        if existed:
            self._send(HTTPStatus.NO_CONTENT)
        else:
            self._error(HTTPStatus.NOT_FOUND, "not_found", "device not registered")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body(required=not path.startswith("/_control"))  # curl -X POST .../reset
        if body is None:
            return
        if path.startswith("/_control"):
            self._control_post(path, body)
            return
        if path != "/v1/events":
            self._error(HTTPStatus.NOT_FOUND, "not_found", path)
            return
        state = self.server.state
        with state.lock:
            state.bump("received")
        if not self._authorized() or self._fault_injected():
            return
        timestamp = self.headers.get("X-Edgeai-Timestamp", "")
        signature = self.headers.get("X-Edgeai-Signature", "").strip().lower()
        keys = self.headers.get_all("Idempotency-Key") or []
        key = keys[0].strip() if len(keys) == 1 else ""
        if signature.startswith("sha256="):
            signature = signature[7:]
        if not TIMESTAMP.fullmatch(timestamp) or not signature:
            self._reject("missing_signature", "X-Edgeai-Timestamp and X-Edgeai-Signature are required")
            return
        expected = sign(self.server.secret, timestamp, body)
        if not hmac.compare_digest(expected, signature):
            self._reject("invalid_signature", "signature does not match")
            return
        skew = abs(time.time() - int(timestamp))
        if skew > self.server.replay_window_s:
            self._reject("stale_timestamp", f"timestamp {skew:.0f}s away from now")
            return
        if not key or len(key) > 200:
            self._error(HTTPStatus.BAD_REQUEST, "missing_idempotency_key", "Idempotency-Key required")
            return
        event = self._json_body(body, b"")
        if event is ANSWERED:
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str) \
                or not isinstance(event.get("id"), str):
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_event", "event needs a string 'type' and 'id'")
            return
        # The key is not signed; the body's id is. De-duplicating on a key that could differ from
        # the id would take a captured body, replayed within the window under a new key, as a new
        # event: the contract makes them equal, and a key that is not the id is refused.
        if key != event["id"]:
            self._reject_key(key, event["id"])
            return
        with state.lock:
            fresh = state.accept_event(key, event, timestamp)
            state.record_delivery({"key": key, "duplicate": not fresh, "at": time.time(),
                                   "type": event.get("type")})
        if fresh:
            self._send(HTTPStatus.ACCEPTED, {"status": "accepted", "idempotency_key": key})
        else:
            self._send(HTTPStatus.OK, {"status": "duplicate", "idempotency_key": key})

    def _reject_key(self, key: str, event_id: str) -> None:
        with self.server.state.lock:
            self.server.state.bump("rejected_idempotency_key_mismatch")
        LOG.warning("event rejected", extra={"fields": {"reason": "idempotency_key_mismatch"}})
        self._error(HTTPStatus.BAD_REQUEST, "idempotency_key_mismatch",
                    f"Idempotency-Key {key[:80]!r} is not the signed event's id {event_id[:80]!r}")

    def _reject(self, code: str, message: str) -> None:
        with self.server.state.lock:
            self.server.state.bump("rejected_" + code)
        LOG.warning("event rejected", extra={"fields": {"reason": code}})
        self._error(HTTPStatus.UNAUTHORIZED, code, message)

    # -- control API (lab only; not part of the contract) -------------------------------
    def _control_get(self, path: str) -> None:
        state = self.server.state
        query = parse_qs(urlsplit(self.path).query)
        with state.lock:
            if path == "/_control":
                self._send(HTTPStatus.OK, state.control)
            elif path == "/_control/events":
                wanted = query.get("type")
                events = [e for e in state.events if not wanted or e["event"].get("type") in wanted]
                self._send(HTTPStatus.OK, {"events": events, "count": len(events)})
            elif path == "/_control/registrations":
                self._send(HTTPStatus.OK, state.registrations)
            elif path == "/_control/stats":
                stats = dict(state.stats)
                stats["unique_events"] = len(state.events)
                stats["connections_refused_busy"] = self.server.refused["busy"]
                stats["connections_closed_busy"] = self.server.refused["closed"]
                stats["registrations"] = len(state.registrations)
                self._send(HTTPStatus.OK, stats)
            else:
                self._error(HTTPStatus.NOT_FOUND, "not_found", path)

    def _control_post(self, path: str, body: bytes) -> None:
        state = self.server.state
        if path == "/_control/reset":
            with state.lock:
                state.reset()
            self._send(HTTPStatus.OK, {"status": "reset"})
            return
        if path != "/_control":
            self._error(HTTPStatus.NOT_FOUND, "not_found", path)
            return
        doc = self._json_body(body, b"{}")
        if doc is ANSWERED:
            return
        control, problem = validate_control(doc)
        if problem:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_control", problem)
            return
        with state.lock:
            state.control = control
            control = dict(state.control)
        LOG.info("control mode set", extra={"fields": control})
        self._send(HTTPStatus.OK, control)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_control(doc: Any) -> tuple[dict[str, Any], str | None]:
    """A control mode from a POST /_control body, or why it cannot be used."""
    if not isinstance(doc, dict):
        return {}, "the body must be a JSON object"
    unknown = sorted(set(doc) - {"mode", "status", "delay_s", "count"})
    if unknown:
        return {}, f"unknown fields: {', '.join(unknown)[:200]}"
    mode = doc.get("mode", "ok")
    status = doc.get("status", 503)
    delay = doc.get("delay_s", 0)
    count = doc.get("count")
    if mode not in MODES:
        return {}, f"mode must be one of {MODES}"
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return {}, "status must be an HTTP status, an integer from 100 to 599"
    if not _number(delay) or not 0 <= delay <= 600:
        return {}, "delay_s must be a number of seconds from 0 to 600"
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        return {}, "count must be a non-negative integer or null"
    return {"mode": mode, "status": status, "delay_s": float(delay), "count": count}, None


def validate_registration(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "registration must be a JSON object"
    for name, kind in REGISTRATION_FIELDS.items():
        if name in doc and doc[name] is not None and not isinstance(doc[name], kind):
            return f"field {name} must be a {kind.__name__}"
    unknown = sorted(set(doc) - set(REGISTRATION_FIELDS) - {"device_id", "updated_at"})
    if unknown:
        return f"unknown fields: {', '.join(unknown)}"
    return None


class ReceiverServer(BoundedHTTPServer):
    def __init__(self, address: tuple[str, int], state: State, secret: bytes, token: str | None,
                 replay_window_s: float, max_body: int | None = None,
                 max_connections: int = MAX_CONNECTIONS, client_timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        super().__init__(address, Handler, max_connections=max_connections)
        self.max_body = MAX_BODY if max_body is None else max_body
        self.client_timeout_s = client_timeout_s
        self.state = state
        self.secret = secret
        self.token = token
        self.replay_window_s = replay_window_s


def read_secret(path: str) -> str:
    value = Path(path).read_text().strip()
    if not value:
        raise SystemExit(f"{path} is empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webhook_receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--secret-file", required=True, help="file holding the HMAC secret")
    parser.add_argument("--token-file", help="file holding the bearer token (omit: no token check)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--replay-window", type=float, default=300.0,
                        help="seconds a signed timestamp stays acceptable (default 300)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY,
                        help=f"larger request bodies are refused with 413 unread (default {MAX_BODY})")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"concurrent connections; more are answered 503 (default {MAX_CONNECTIONS})")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    state = State(args.state_dir)
    token = read_secret(args.token_file) if args.token_file else None
    server = ReceiverServer((args.host, args.port), state, read_secret(args.secret_file).encode(),
                            token, args.replay_window, max_body=args.max_body_bytes,
                            max_connections=args.max_connections)
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake happens in the handler's thread (on first read), not in the accept loop,
        # so one client that connects and stays silent cannot stall the server.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"

    def stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("listening", extra={"fields": {"url": f"{scheme}://{args.host}:{server.server_port}",
                                            "state_dir": str(args.state_dir)}})
    with server:
        server.serve_forever(poll_interval=0.2)
    LOG.info("stopped")
    return 0
