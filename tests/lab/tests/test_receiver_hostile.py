"""The lab's webhook receiver against hostile clients, in this process on a free loopback port
(the lab need not be up). Requests are written byte for byte on raw sockets.

Each test here failed on the receiver before it was hardened: bodies framed by
``Content-Length: -1``, ``+5`` or two headers were read and stored, ``abc``, deep JSON and
wrong types in a control request got a traceback and no answer, threads were unbounded, and a
captured signed event replayed under a new ``Idempotency-Key`` was stored again.

The relay's local API, which shares httpguard.py with the receiver, has its hostile-client
tests beside these (test_relay_hostile.py), over the same raw-socket client (raw_http.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import raw_http
from raw_http import Answer, read_answer
from webhook_receiver import server as receiver_server
from webhook_receiver.server import ReceiverServer, State, sign

LAB = Path(__file__).resolve().parents[1]
ROOT = LAB.parents[1]

SECRET = b"receiver-hostile-secret"
TOKEN = "receiver-hostile-token"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


# -- helpers --------------------------------------------------------------------------------

def start(tmp_path: Path, **kwargs) -> ReceiverServer:
    server = ReceiverServer(("127.0.0.1", 0), State(tmp_path / "state"), SECRET, TOKEN, 300.0, **kwargs)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def receiver(tmp_path):
    server = start(tmp_path)
    yield server
    server.shutdown()
    server.server_close()


def exchange(server: ReceiverServer, raw: bytes, *, end: bool = False, timeout: float = 5.0) -> Answer:
    return raw_http.exchange(server.server_port, raw, end=end, timeout=timeout)


def event_body(event_id: str = "evt-0000001", pad: int = 0, **fields) -> bytes:
    doc = {"id": event_id, "seq": 1, "type": "app.hostile", "device_id": "dev-1", "source": "app",
           "time": "2026-01-01T00:00:00Z", "data": {"pad": "x" * pad}}
    doc.update(fields)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def signed_headers(body: bytes, key: str, framing: str | None = None) -> str:
    timestamp = str(int(time.time()))
    framing = f"Content-Length: {len(body)}\r\n" if framing is None else framing
    return (f"{AUTH}X-Edgeai-Timestamp: {timestamp}\r\nX-Edgeai-Signature: {sign(SECRET, timestamp, body)}\r\n"
            f"Idempotency-Key: {key}\r\n{framing}")


def post_event(body: bytes, key: str, framing: str | None = None) -> bytes:
    return f"POST /v1/events HTTP/1.1\r\nHost: r\r\n{signed_headers(body, key, framing)}\r\n".encode() + body


def stored(server: ReceiverServer) -> int:
    with server.state.lock:
        return len(server.state.events)


def assert_still_serving(server: ReceiverServer) -> None:
    assert exchange(server, b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").status == 200


# -- the shared module -----------------------------------------------------------------------

def test_the_http_rules_are_the_same_file_in_the_relay_and_the_receiver():
    relay_copy = ROOT / "images" / "event-relay" / "src" / "event_relay" / "httpguard.py"
    receiver_copy = LAB / "webhook_receiver" / "webhook_receiver" / "httpguard.py"
    assert receiver_copy.read_bytes() == relay_copy.read_bytes(), "copy one httpguard.py over the other"


# -- framing ----------------------------------------------------------------------------------

def test_content_length_minus_one_with_a_large_body_is_refused(receiver):
    body = event_body(pad=2 * receiver_server.MAX_BODY)  # read to the end, this was stored
    answer = exchange(receiver, post_event(body, "evt-0000001", "Content-Length: -1\r\n"), end=True, timeout=20)
    assert answer.status == 400 and answer.json()["error"] == "bad_content_length"
    assert stored(receiver) == 0
    assert_still_serving(receiver)


@pytest.mark.parametrize("value", ["abc", "+", "5.0", "0x10", "1e3", "\u0665"])
def test_content_length_not_plain_digits_is_400(receiver, value):
    body = event_body()
    if value == "+":
        value = f"+{len(body)}"  # int() reads it, the old receiver stored the event
    answer = exchange(receiver, post_event(body, "evt-0000001", f"Content-Length: {value}\r\n"), end=True)
    assert answer.status == 400, (value, answer.status, answer.body)
    assert answer.json()["error"] == "bad_content_length"
    assert stored(receiver) == 0


@pytest.mark.parametrize("framing", [
    "Content-Length: {n}\r\nContent-Length: {n}\r\n",
    "Content-Length: {n}\r\nContent-Length: 2\r\n",
    "Content-Length: {n}, {n}\r\n",
])
def test_more_than_one_content_length_is_400(receiver, framing):
    body = event_body()
    raw = post_event(body, "evt-0000001", framing.format(n=len(body)))
    answer = exchange(receiver, raw, end=True)
    assert answer.status == 400 and answer.json()["error"] == "bad_content_length"
    assert stored(receiver) == 0


def test_transfer_encoding_and_a_missing_length_are_411(receiver):
    body = event_body()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = exchange(receiver, post_event(body, "evt-0000001", "Transfer-Encoding: chunked\r\n")
                      .replace(body, chunked), end=True)
    assert answer.status == 411 and answer.headers.get("connection") == "close"
    answer = exchange(receiver, post_event(body, "evt-0000001", ""), end=True)
    assert answer.status == 411
    assert stored(receiver) == 0


def test_oversize_body_is_refused_unread_and_the_client_still_gets_the_answer(receiver):
    with socket.create_connection(("127.0.0.1", receiver.server_port), timeout=5) as sock:
        sock.sendall(f"POST /v1/events HTTP/1.1\r\nHost: r\r\n{AUTH}Content-Length: {1 << 30}\r\n\r\n".encode())
        answer = read_answer(sock)
        assert answer.status == 413
        for _ in range(16):  # still sending: the receiver lingers, the client is not reset
            sock.sendall(b"x" * 65536)
            time.sleep(0.01)
        assert answer.headers.get("connection") == "close"
    assert stored(receiver) == 0
    assert_still_serving(receiver)


def test_a_body_that_stops_coming_is_answered_408(tmp_path):
    server = start(tmp_path, client_timeout_s=1.0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(f"PUT /v1/devices/d1 HTTP/1.1\r\nHost: r\r\n{AUTH}Content-Length: 50\r\n\r\n{{".encode())
            assert read_answer(sock, timeout=5).status == 408
    finally:
        server.shutdown()
        server.server_close()


# -- JSON and types -----------------------------------------------------------------------------

def test_deeply_nested_json_is_400(receiver):
    deep = b"[" * 30000 + b"]" * 30000
    body = event_body().replace(b'"data":{"pad":""}', b'"data":{"a":' + deep + b"}")
    answer = exchange(receiver, post_event(body, "evt-0000001"))
    assert answer.status == 400 and answer.json()["error"] == "invalid_json"
    registration = b'{"labels":{"a":' + deep + b"}}"
    answer = exchange(receiver, f"PUT /v1/devices/d1 HTTP/1.1\r\nHost: r\r\n{AUTH}Content-Length: "
                                f"{len(registration)}\r\n\r\n".encode() + registration)
    assert answer.status == 400 and answer.json()["error"] == "invalid_json"
    assert stored(receiver) == 0
    assert_still_serving(receiver)


@pytest.mark.parametrize("payload", [
    b'{"mode":"fail","status":"abc"}',
    b'{"mode":"fail","status":true}',
    b'{"mode":"slow","delay_s":"x"}',
    b'{"mode":"fail","count":"x"}',
    b'{"mode":"fail","status":99999}',
    b"[]",
    b'"ok"',
    b'{"mode":"ok","delay_s":NaN}',
])
def test_wrong_types_in_a_control_request_are_400(receiver, payload):
    raw = f"POST /_control HTTP/1.1\r\nHost: r\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
    answer = exchange(receiver, raw)
    assert answer.status == 400, (payload, answer.status, answer.body)
    with receiver.state.lock:
        assert receiver.state.control["mode"] == "ok"


def test_an_event_needs_a_string_id(receiver):
    for body in (event_body(id=None), event_body(id=5)):
        answer = exchange(receiver, post_event(body, "evt-0000001"))
        assert answer.status == 422, body
    assert stored(receiver) == 0


def test_garbage_requests_are_answered_never_dropped(receiver):
    garbage = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"PUT /v1/devices/d1 HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
        b"GET /_control/stats HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"DELETE /v1/devices/d1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /_control HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"{" * 1000,
    ]
    for raw in garbage:
        answer = exchange(receiver, raw, end=True)
        assert answer.status is not None and 400 <= answer.status < 500, (raw[:60], answer.status)
    assert_still_serving(receiver)


# -- replay -----------------------------------------------------------------------------------

def test_a_captured_event_replayed_under_a_new_key_is_refused(receiver):
    body = event_body("evt-replay-01")
    headers = signed_headers(body, "evt-replay-01")
    first = exchange(receiver, f"POST /v1/events HTTP/1.1\r\nHost: r\r\n{headers}\r\n".encode() + body)
    assert first.status == 202
    again = exchange(receiver, f"POST /v1/events HTTP/1.1\r\nHost: r\r\n{headers}\r\n".encode() + body)
    assert again.status == 200 and again.json()["status"] == "duplicate"
    replay = headers.replace("Idempotency-Key: evt-replay-01", "Idempotency-Key: evt-replay-02")
    answer = exchange(receiver, f"POST /v1/events HTTP/1.1\r\nHost: r\r\n{replay}\r\n".encode() + body)
    assert answer.status == 400 and answer.json()["error"] == "idempotency_key_mismatch"
    assert stored(receiver) == 1
    with receiver.state.lock:
        assert receiver.state.stats["rejected_idempotency_key_mismatch"] == 1


# -- concurrency ------------------------------------------------------------------------------

def test_connections_past_the_cap_get_503(tmp_path):
    server = start(tmp_path, max_connections=4)
    idle = []
    try:
        for _ in range(4):
            idle.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
        deadline = time.monotonic() + 5  # until the server has taken all 4: each then holds one of its slots
        while server._slots._value and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
        assert answer.status == 503 and answer.headers.get("retry-after") == "1"
        for sock in idle:
            sock.close()
        idle.clear()
        deadline = time.monotonic() + 5
        while exchange(server, b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").status != 200:
            assert time.monotonic() < deadline, "no slot came back"
            time.sleep(0.1)
        stats = json.loads(exchange(server, b"GET /_control/stats HTTP/1.1\r\nHost: r\r\n\r\n").body)
        assert stats["connections_refused_busy"] >= 1
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


# -- with the relay: a 413 is dead-lettered -------------------------------------------------------

def test_the_relay_dead_letters_an_event_the_receiver_refuses_with_413(tmp_path, monkeypatch):
    from event_relay.app import Relay
    from event_relay.config import Config

    monkeypatch.setattr(receiver_server, "MAX_BODY", 256 * 1024)
    server = start(tmp_path / "receiver")
    config = Config(device_id="dev-413", webhook_url=f"http://127.0.0.1:{server.server_port}/v1/events",
                    queue_path=str(tmp_path / "q.db"), listen_port=0, backoff_initial_s=0.05,
                    backoff_max_s=0.2, status_interval_s=0, max_event_bytes=16 * 1024 * 1024)
    config.secret, config.token, config.local_token = SECRET, TOKEN, "relay-local-token-413"
    relay = Relay(config)
    relay.start()
    try:
        big = json.dumps({"type": "app.big", "id": "big-event-01", "data": {"pad": "x" * (4 << 20)}}).encode()
        small = json.dumps({"type": "app.small", "id": "small-event-01", "data": {}}).encode()
        for body in (big, small):
            raw = (f"POST /v1/events HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer relay-local-token-413\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            with socket.create_connection(("127.0.0.1", relay.http.server_port), timeout=20) as sock:
                sock.sendall(raw)
                assert read_answer(sock, timeout=20).status == 202
        deadline = time.monotonic() + 20
        while relay.store.locate("small-event-01")["state"] != "delivered":
            assert time.monotonic() < deadline, (
                f"the event behind the refused one never arrived; retried {relay.store.stats()['retried']} times")
            time.sleep(0.05)
        where = relay.store.locate("big-event-01")
        assert where["state"] == "dead_letter" and where["status"] == 413
        assert relay.store.stats()["retried"] == 0
        with server.state.lock:
            types = [record["event"]["type"] for record in server.state.events]
        assert "relay.dead_letter" in types and "app.big" not in types
    finally:
        relay.shutdown()
        server.shutdown()
        server.server_close()
