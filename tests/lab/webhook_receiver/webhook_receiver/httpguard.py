"""Hostile-input rules for a standard-library HTTP/1.1 server: framing, bounded bodies, strict
JSON and a cap on concurrent connections.

COPIED ON PURPOSE: the same file is images/event-relay/src/event_relay/httpguard.py (the relay's
local API) and tests/lab/webhook_receiver/webhook_receiver/httpguard.py (the lab's stand-in for
the event API). The two are shipped separately (an image, a lab tool) and import nothing from
each other; keep them byte for byte identical (tests/lab/tests/test_receiver_hostile.py checks).

What a request must look like (anything else gets an answer, never a traceback or a silently
closed connection):
- A body comes with exactly one ``Content-Length`` of ASCII digits: none where a body is needed
  is 411, ``-1``, ``+5``, ``abc``, ``5, 5`` or two headers are 400. Any ``Transfer-Encoding``
  (chunked included) is 411: there is no way to bound a body whose length is not declared.
- A declared length over the cap is 413 before a byte of the body is read; the connection is
  then closed (the rest of the body is never read into memory; see ``linger_close``).
- A body shorter than declared (the client closed) is 400; one that stalls is 408.
- JSON bodies: UTF-8, no NaN or Infinity, nesting at most ``max_depth`` deep, else 400.
- Past ``max_connections`` concurrent connections a few more are answered 503 with
  ``Retry-After`` by short-lived threads; past those, connections are closed at once.
After every error answer the connection is closed, since where the next request would start
cannot be known.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() would take other scripts
_OWS = " \t"
LINGER_S = 1.0  # how long a closing connection is drained so the client sees the answer
LINGER_BYTES = 8 << 20  # and how much of an unread body is discarded meanwhile, at most
BUSY_BODY = b'{"error":"busy","message":"too many connections; retry later"}'
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                 + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class RequestError(Exception):
    """A request that cannot be served: the status, a short error code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.code = code
        self.message = message


def content_length(headers: Any, max_bytes: int, required: bool = True) -> int:
    """The declared body length, checked against max_bytes. Raises RequestError.

    ``headers`` is the request's ``http.client.HTTPMessage``. Without a body header the length
    is 0, or 411 when ``required``.
    """
    if headers.get_all("Transfer-Encoding"):
        raise RequestError(411, "length_required",
                           "Transfer-Encoding is not accepted: send the body with a Content-Length")
    values = headers.get_all("Content-Length") or []
    if not values:
        if required:
            raise RequestError(411, "length_required", "a Content-Length header is required")
        return 0
    if len(values) > 1:
        raise RequestError(400, "bad_content_length", "more than one Content-Length header")
    value = values[0].strip(_OWS)
    if not _DIGITS.fullmatch(value):
        raise RequestError(400, "bad_content_length",
                           "Content-Length must be one decimal number (digits only)")
    if len(value) > 18:  # past any cap; int() of a long enough string would raise
        raise RequestError(413, "too_large", f"body of {len(value)} digits of bytes; at most {max_bytes}")
    length = int(value)
    if length > max_bytes:
        raise RequestError(413, "too_large", f"body of {length} bytes; at most {max_bytes} are accepted")
    return length


def read_body(rfile: Any, length: int, timeout_s: float) -> bytes:
    """Exactly ``length`` bytes from the request, within ``timeout_s`` in all. Raises RequestError."""
    deadline = time.monotonic() + timeout_s
    chunks = []
    left = length
    try:
        while left > 0:
            if time.monotonic() > deadline:
                raise RequestError(408, "request_timeout", f"the body did not arrive within {timeout_s:g}s")
            chunk = rfile.read1(min(left, 65536))
            if not chunk:
                raise RequestError(400, "incomplete_body",
                                   f"the body ended after {length - left} of {length} bytes")
            chunks.append(chunk)
            left -= len(chunk)
    except TimeoutError as exc:
        raise RequestError(408, "request_timeout", "the client stopped sending the body") from exc
    except OSError as exc:
        raise RequestError(400, "incomplete_body", f"the body could not be read: {exc}") from exc
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed JSON value (iterative: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(raw: bytes, max_depth: int) -> Any:
    """A JSON document from a request body. Raises RequestError (400) for anything else."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError as exc:
        raise RequestError(400, "invalid_json", f"JSON nested more than {max_depth} deep") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, "invalid_json", f"body is not JSON: {str(exc)[:120]}") from exc
    if json_depth(value) > max_depth:
        raise RequestError(400, "invalid_json", f"JSON nested more than {max_depth} deep")
    return value


def linger_close(sock: socket.socket, linger_s: float = LINGER_S, max_bytes: int = LINGER_BYTES) -> None:
    """Close a connection so that the client reads the answer already sent.

    Closing a socket with unread data makes the kernel send a reset, and a client still sending
    its body may then never see the answer (a 413, a 401). So: send FIN first, discard what the
    client still sends for at most ``linger_s`` seconds or ``max_bytes`` bytes, then close.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + linger_s
    drained = 0
    try:
        while drained < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            drained += len(data)
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        sock.close()


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them.

    Past the cap, up to ``max_connections // 4 + 2`` more connections get a 503 with
    ``Retry-After: 1`` from a short-lived thread; past those, connections are closed at once.
    Closing always lingers (``linger_close``). ``refused`` counts both kinds of refusal.
    """

    daemon_threads = True
    allow_reuse_address = True
    refuse_timeout_s = 2.0

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int = 32) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._refusers = threading.BoundedSemaphore(max_connections // 4 + 2)
        self._count_lock = threading.Lock()
        self.refused = {"busy": 0, "closed": 0}
        super().__init__(address, handler)

    def _count(self, kind: str) -> None:
        with self._count_lock:
            self.refused[kind] += 1

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots.acquire(blocking=False):
            target, slots = self._serve, self._slots
        elif self._refusers.acquire(blocking=False):
            target, slots = self._refuse, self._refusers
            self._count("busy")
        else:
            self._count("closed")
            LOG.warning("connection closed: too many connections")
            self.close_request(request)  # no lingering here: this is the accept loop
            return
        thread = threading.Thread(target=target, args=(request, client_address, slots), daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no more threads: the system is out of them
            slots.release()
            self.close_request(request)

    def _serve(self, request: Any, client_address: Any, slots: threading.BoundedSemaphore) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            slots.release()

    def _refuse(self, request: Any, client_address: Any, slots: threading.BoundedSemaphore) -> None:
        try:
            request.settimeout(self.refuse_timeout_s)
            request.sendall(BUSY_RESPONSE)  # over TLS this does the handshake first
        except (OSError, ValueError):
            pass
        finally:
            self.shutdown_request(request)
            slots.release()

    def shutdown_request(self, request: Any) -> None:
        linger_close(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        LOG.exception("unexpected error while serving a request")
