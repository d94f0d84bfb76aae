"""The relay's local HTTP API: POST /v1/events, GET /v1/events/{id}, /healthz, /metrics, /v1/dead-letters.

Every request that queues an event or reads one (``POST /v1/events``, ``GET /v1/events/{id}``,
``GET /v1/dead-letters``) needs ``Authorization: Bearer <token>``, the token in
``local_token_file``: any other process on the device could otherwise have the relay sign events
as the device, with any ``source`` it likes. ``/healthz`` and ``/metrics`` carry no events and
need no token. Framing, body and JSON rules, and the connection cap: ``httpguard``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from event_relay import __version__
from event_relay.httpguard import BoundedHTTPServer, RequestError, content_length, parse_json, read_body
from event_relay.logs import fields
from event_relay.store import QueueFullError

if TYPE_CHECKING:
    from event_relay.app import Relay

LOG = logging.getLogger("event_relay.api")

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{7,127}$")
EVENT_PATH = re.compile(r"^/v1/events/([A-Za-z0-9][A-Za-z0-9._:@-]{0,127})$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
RESERVED_PREFIX = "relay."
# Why a local request was refused, as counted in edgeai_relay_rejected_total{reason}.
REJECT_REASONS = ("invalid", "too_large", "queue_full", "unauthorized")


def validate_event(doc: Any) -> str | None:
    """Why a local event cannot be queued, or None."""
    if not isinstance(doc, dict):
        return "event must be a JSON object"
    unknown = sorted(set(doc) - {"type", "data", "id", "time", "source"})
    if unknown:
        return f"unknown fields: {', '.join(unknown)[:200]}"
    event_type = doc.get("type")
    if not isinstance(event_type, str) or len(event_type) > 64 or not EVENT_TYPE.match(event_type):
        return "type must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ (64 characters at most)"
    if event_type.startswith(RESERVED_PREFIX):
        return "types starting with 'relay.' are the relay's own"
    if not isinstance(doc.get("data", {}), dict):
        return "data must be a JSON object"
    if "id" in doc and (not isinstance(doc["id"], str) or not EVENT_ID.match(doc["id"])):
        return "id must be 8-128 characters of [A-Za-z0-9._:@-]"
    if "time" in doc and (not isinstance(doc["time"], str) or not RFC3339.match(doc["time"])):
        return "time must be an RFC 3339 date-time string (2026-01-31T12:00:00Z)"
    source = doc.get("source", "app")
    if not isinstance(source, str) or not SOURCE.match(source) or source == "relay":
        return "source must match ^[a-z][a-z0-9_-]{0,31}$ and not be 'relay'"
    return None


class RelayHandler(BaseHTTPRequestHandler):
    server: RelayHTTPServer
    protocol_version = "HTTP/1.1"
    # Errors found before the request line's version is read (garbage, a bare "GET") are answered
    # with a status line too, not in the headerless HTTP/0.9 form.
    default_request_version = "HTTP/1.0"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = f"edgeai-event-relay/{__version__}"

    def setup(self) -> None:
        self.timeout = self.server.relay.config.client_timeout_s  # seconds a connection may stay silent
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.debug(format % args)

    # -- answers --------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, sort_keys=True).encode(), "application/json", headers)

    def _refuse(self, exc: RequestError) -> None:
        """Answer a refused request and close the connection (its body may be unread)."""
        reason = {401: "unauthorized", 413: "too_large", 404: None}.get(exc.status, "invalid")
        if reason:
            self.server.relay.rejected(reason)
        headers = {}
        if exc.status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Bearer realm="edgeai-event-relay"'
        self.close_connection = True
        LOG.debug("request refused", extra=fields(status=exc.status, error=exc.code, detail=exc.message))
        self._json(exc.status, {"error": exc.code, "message": exc.message}, headers)

    # -- checks ---------------------------------------------------------------------
    def _require_token(self) -> None:
        token = self.server.relay.config.local_token.encode()
        values = self.headers.get_all("Authorization") or []
        if len(values) == 1:
            scheme, _, given = values[0].strip().partition(" ")
            # Header values are decoded as latin-1, so encoding them back is lossless.
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), token):
                return
        raise RequestError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "send Authorization: Bearer <token>, the token in the relay's local_token_file")

    def _no_body(self) -> None:
        if content_length(self.headers, 1 << 62, required=False):
            raise RequestError(HTTPStatus.BAD_REQUEST, "unexpected_body", "this request takes no body")

    # -- verbs ----------------------------------------------------------------------
    def do_GET(self) -> None:
        relay = self.server.relay
        path = urlsplit(self.path).path
        try:
            self._no_body()
            if path == "/healthz":
                try:
                    health = relay.health()
                except Exception as exc:  # the store is unusable: say so
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error", "error": str(exc)})
                    return
                self._json(HTTPStatus.OK, health)
            elif path == "/metrics":
                self._send(HTTPStatus.OK, relay.metrics().encode(), "text/plain; version=0.0.4")
            elif path == "/v1/dead-letters":
                self._require_token()
                self._json(HTTPStatus.OK, {"dead_letters": relay.store.dead_letters()})
            elif match := EVENT_PATH.match(path):
                self._require_token()
                where = relay.store.locate(match.group(1))
                self._json(HTTPStatus.OK if where["state"] != "unknown" else HTTPStatus.NOT_FOUND, where)
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, "not_found", "no such resource")
        except RequestError as exc:
            self._refuse(exc)

    def do_POST(self) -> None:
        relay = self.server.relay
        config = relay.config
        try:
            if urlsplit(self.path).path != "/v1/events":
                raise RequestError(HTTPStatus.NOT_FOUND, "not_found", "events go to POST /v1/events")
            self._require_token()  # before a byte of the body is read
            length = content_length(self.headers, config.max_event_bytes)
            raw = read_body(self.rfile, length, config.client_timeout_s)
            doc = parse_json(raw, config.max_json_depth)
        except RequestError as exc:
            self._refuse(exc)
            return
        problem = validate_event(doc)
        if problem:
            relay.rejected("invalid")
            self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": "invalid_event", "message": problem})
            return
        try:
            stored = relay.store.append(
                doc["type"], doc.get("data", {}), device_id=config.device_id,
                source=doc.get("source", "app"), event_id=doc.get("id"), occurred_at=doc.get("time"))
        except QueueFullError as exc:
            relay.rejected("queue_full")
            LOG.warning("event refused: queue full", extra=fields(type=doc["type"], detail=str(exc)))
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "queue_full", "message": str(exc)},
                       {"Retry-After": "5"})
            return
        self._json(HTTPStatus.ACCEPTED, {"id": stored.id, "seq": stored.seq,
                                         "status": "duplicate" if stored.duplicate else "queued"})


class RelayHTTPServer(BoundedHTTPServer):
    def __init__(self, address: tuple[str, int], relay: Relay) -> None:
        super().__init__(address, RelayHandler, max_connections=relay.config.max_connections)
        self.relay = relay
        self.started = time.time()
