"""The relay's local HTTP API: POST /v1/events, GET /v1/events/{id}, /healthz, /metrics, /v1/dead-letters."""

from __future__ import annotations

import json
import logging
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from event_relay import __version__
from event_relay.logs import fields
from event_relay.store import QueueFullError

if TYPE_CHECKING:
    from event_relay.app import Relay

LOG = logging.getLogger("event_relay.api")

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{7,127}$")
EVENT_PATH = re.compile(r"^/v1/events/([A-Za-z0-9][A-Za-z0-9._:@-]{0,127})$")
RESERVED_PREFIX = "relay."


def validate_event(doc: Any) -> str | None:
    """Why a local event cannot be queued, or None."""
    if not isinstance(doc, dict):
        return "event must be a JSON object"
    unknown = sorted(set(doc) - {"type", "data", "id", "time", "source"})
    if unknown:
        return f"unknown fields: {', '.join(unknown)}"
    event_type = doc.get("type")
    if not isinstance(event_type, str) or len(event_type) > 64 or not EVENT_TYPE.match(event_type):
        return "type must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ (64 characters at most)"
    if event_type.startswith(RESERVED_PREFIX):
        return "types starting with 'relay.' are the relay's own"
    if not isinstance(doc.get("data", {}), dict):
        return "data must be a JSON object"
    if "id" in doc and (not isinstance(doc["id"], str) or not EVENT_ID.match(doc["id"])):
        return "id must be 8-128 characters of [A-Za-z0-9._:@-]"
    if "time" in doc and (not isinstance(doc["time"], str) or len(doc["time"]) > 40):
        return "time must be an RFC 3339 string"
    source = doc.get("source", "app")
    if not isinstance(source, str) or not SOURCE.match(source) or source == "relay":
        return "source must match ^[a-z][a-z0-9_-]{0,31}$ and not be 'relay'"
    return None


class RelayHandler(BaseHTTPRequestHandler):
    server: RelayHTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 60  # seconds a connection may stay silent
    server_version = f"edgeai-event-relay/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.debug(format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, sort_keys=True).encode(), "application/json", headers)

    def do_GET(self) -> None:
        relay = self.server.relay
        path = urlsplit(self.path).path
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
            self._json(HTTPStatus.OK, {"dead_letters": relay.store.dead_letters()})
        elif match := EVENT_PATH.match(path):
            where = relay.store.locate(match.group(1))
            self._json(HTTPStatus.OK if where["state"] != "unknown" else HTTPStatus.NOT_FOUND, where)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})

    def do_POST(self) -> None:
        relay = self.server.relay
        if urlsplit(self.path).path != "/v1/events":
            self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > relay.config.max_event_bytes:
            relay.rejected("too_large")
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": "too_large", "message": f"max_event_bytes is {relay.config.max_event_bytes}"})
            return
        raw = self.rfile.read(length)
        try:
            doc = json.loads(raw)
        except ValueError:
            relay.rejected("invalid")
            self._json(HTTPStatus.BAD_REQUEST, {"error": "invalid_json"})
            return
        problem = validate_event(doc)
        if problem:
            relay.rejected("invalid")
            self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": "invalid_event", "message": problem})
            return
        try:
            stored = relay.store.append(
                doc["type"], doc.get("data", {}), device_id=relay.config.device_id,
                source=doc.get("source", "app"), event_id=doc.get("id"), occurred_at=doc.get("time"))
        except QueueFullError as exc:
            relay.rejected("queue_full")
            LOG.warning("event refused: queue full", extra=fields(type=doc["type"], detail=str(exc)))
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "queue_full", "message": str(exc)},
                       {"Retry-After": "5"})
            return
        self._json(HTTPStatus.ACCEPTED, {"id": stored.id, "seq": stored.seq,
                                         "status": "duplicate" if stored.duplicate else "queued"})


class RelayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], relay: Relay) -> None:
        super().__init__(address, RelayHandler)
        self.relay = relay
        self.started = time.time()
