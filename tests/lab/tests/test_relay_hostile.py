"""The relay's local API against hostile local clients, and delivery against a receiver that
refuses a body before reading it. The relay runs in this process on a free loopback port;
requests are written byte for byte on raw sockets, so malformed framing reaches the server as is.

Each test here failed on the relay before its local API was hardened: bodies framed by
``Content-Length: -1``, ``+5`` or two headers were read and queued, ``abc`` and deep JSON got a
traceback and no answer, any process could post (as ``source: ansible``) and read dead letters,
threads were unbounded, and an event that a receiver refused with an early 413 was retried forever.

These tests live beside the receiver's (test_receiver_hostile.py) rather than in the relay
image's own suite: the relay's local API and the lab's receiver share httpguard.py (a
deliberate byte-identical copy, one per separately shipped part), so their hostile-client tests
stand together and share one raw-socket client (raw_http.py) instead of writing it twice. They
run with the collection's unit tests (no Docker), on the relay's package from
images/event-relay/src (on pytest's pythonpath).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from event_relay.app import Relay
from event_relay.config import Config, ConfigError, load_config
from raw_http import exchange, read_answer

TOKEN = "local-token-for-hostile-tests"
SECRET = b"hostile-test-secret"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
MAX_EVENT_BYTES = 64 * 1024


# -- helpers --------------------------------------------------------------------------------

def make_relay(tmp_path, webhook_url: str = "http://127.0.0.1:9/v1/events", **settings) -> Relay:
    """A relay in this process. Settings are set as attributes after the Config is made."""
    config = Config(device_id="hostile-dev-01", webhook_url=webhook_url, queue_path=str(tmp_path / "q.db"),
                    listen_port=0, backoff_initial_s=0.05, backoff_max_s=0.2, request_timeout_s=3.0,
                    status_interval_s=0, drop_report_interval_s=0.2)
    values = {"local_token": TOKEN, "max_event_bytes": MAX_EVENT_BYTES, "max_connections": 16,
              "client_timeout_s": 2.0, "max_json_depth": 32}
    values.update(settings)
    for name, value in values.items():
        setattr(config, name, value)
    config.secret = SECRET
    relay = Relay(config)
    relay.start()
    return relay


@pytest.fixture
def relay(tmp_path):
    relay = make_relay(tmp_path)
    yield relay
    relay.shutdown()


def port_of(relay: Relay) -> int:
    return relay.http.server_port


def post(body: bytes, headers: str = "", auth: bool = True) -> bytes:
    return (f"POST /v1/events HTTP/1.1\r\nHost: relay\r\n{AUTH if auth else ''}{headers}\r\n").encode() + body


def event(size: int = 0, **fields) -> bytes:
    doc = {"type": "app.hostile", "data": {"pad": "x" * size}}
    doc.update(fields)
    return json.dumps(doc).encode()


def accepted(relay: Relay) -> int:
    return relay.store.stats()["accepted"]


def assert_still_serving(port: int) -> None:
    answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
    assert answer.status == 200


# -- framing ----------------------------------------------------------------------------------

def test_content_length_minus_one_with_a_large_body_is_refused_and_nothing_queued(relay):
    before = accepted(relay)
    body = event(4 * MAX_EVENT_BYTES)  # read to the end, this was queued at 4x max_event_bytes
    answer = exchange(port_of(relay), post(body, "Content-Length: -1\r\n"), end=True)
    assert answer.status == 400 and answer.json()["error"] == "bad_content_length"
    assert answer.headers.get("connection") == "close"
    assert accepted(relay) == before
    assert_still_serving(port_of(relay))


@pytest.mark.parametrize("value", ["abc", "+5", "5.0", "0x10", " -0", "1e3", "\u0665"])
def test_content_length_not_plain_digits_is_400(relay, value):
    before = accepted(relay)
    body = b'{"type":"app.x"}'
    if value == "+5":
        value = f"+{len(body)}"  # int() reads it, the old relay took the event
    raw = (f"POST /v1/events HTTP/1.1\r\nHost: relay\r\n{AUTH}Content-Length: {value}\r\n\r\n").encode()
    answer = exchange(port_of(relay), raw + body, end=True)
    assert answer.status == 400, (value, answer.status, answer.body)
    assert answer.json()["error"] == "bad_content_length"
    assert accepted(relay) == before


@pytest.mark.parametrize("headers", [
    "Content-Length: 16\r\nContent-Length: 16\r\n",
    "Content-Length: 16\r\nContent-Length: 1\r\n",
    "Content-Length: 16, 16\r\n",
])
def test_more_than_one_content_length_is_400(relay, headers):
    before = accepted(relay)
    answer = exchange(port_of(relay), post(b'{"type":"app.x"}', headers), end=True)
    assert answer.status == 400 and answer.json()["error"] == "bad_content_length"
    assert accepted(relay) == before


def test_transfer_encoding_is_refused_with_411(relay):
    before = accepted(relay)
    body = b'{"type":"app.chunked"}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    for headers in ("Transfer-Encoding: chunked\r\n",
                    f"Transfer-Encoding: chunked\r\nContent-Length: {len(chunked)}\r\n"):
        answer = exchange(port_of(relay), post(chunked, headers), end=True)
        assert answer.status == 411 and answer.json()["error"] == "length_required"
        assert answer.headers.get("connection") == "close"
    assert accepted(relay) == before


def test_post_without_content_length_is_411(relay):
    answer = exchange(port_of(relay), post(b""), end=True)
    assert answer.status == 411


def test_oversize_body_is_refused_unread_and_the_client_still_gets_the_answer(relay):
    port = port_of(relay)
    before = accepted(relay)
    # Declared 1 GiB, or more digits than any integer: answered at once, unread.
    answer = exchange(port, post(b"", "Content-Length: " + "9" * 40 + "\r\n"))
    assert answer.status == 413 and answer.json()["error"] == "too_large"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post(b"", f"Content-Length: {1 << 30}\r\n"))
        answer = read_answer(sock)
        assert answer.status == 413 and answer.json()["error"] == "too_large"
        # A client that goes on sending its body meanwhile is not reset: the relay lingers,
        # discarding, so the answer is never lost to a connection reset.
        for _ in range(16):
            sock.sendall(b"x" * 65536)
            time.sleep(0.01)
        assert answer.headers.get("connection") == "close"
    assert accepted(relay) == before
    assert_still_serving(port)


def test_a_body_that_stops_coming_is_answered_408(relay):
    with socket.create_connection(("127.0.0.1", port_of(relay)), timeout=10) as sock:
        sock.sendall(post(b'{"type":', "Content-Length: 100\r\n"))
        answer = read_answer(sock, timeout=6)  # client_timeout_s is 2
    assert answer.status == 408


def test_a_body_cut_short_is_400(relay):
    answer = exchange(port_of(relay), post(b'{"type":', "Content-Length: 100\r\n"), end=True)
    assert answer.status == 400 and answer.json()["error"] == "incomplete_body"


# -- JSON -------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [40, 30000])
def test_deeply_nested_json_is_400(relay, depth):
    before = accepted(relay)
    body = b'{"type":"app.deep","data":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    answer = exchange(port_of(relay), post(body, f"Content-Length: {len(body)}\r\n"))
    assert answer.status == 400 and answer.json()["error"] == "invalid_json"
    assert accepted(relay) == before
    assert_still_serving(port_of(relay))


@pytest.mark.parametrize("body,status", [
    (b'{"type":"app.x","data":{"v":NaN}}', 400),  # not JSON: receivers would choke on it
    (b'{"type":"app.x","data":{"v":Infinity}}', 400),
    (b'{"type":"app.x","time":"yesterday"}', 422),
])
def test_malformed_values_are_refused(relay, body, status):
    before = accepted(relay)
    answer = exchange(port_of(relay), post(body, f"Content-Length: {len(body)}\r\n"))
    assert answer.status == status, answer.body
    assert accepted(relay) == before


def test_garbage_requests_are_answered_never_dropped(relay):
    port = port_of(relay)
    garbage = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nContent-Length: 5\r\n" + b"X-A: 1\r\n" * 200 + b"\r\nhello",
        b"GET /v1/dead-letters HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        post(b"[" * 1000, "Content-Length: 1000\r\n"),
    ]
    for raw in garbage:
        answer = exchange(port, raw, end=True)
        assert answer.status is not None and 400 <= answer.status < 500, (raw[:60], answer.status)
    assert_still_serving(port)


# -- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [
    "",
    "Authorization: Bearer wrong-token\r\n",
    f"Authorization: Basic {TOKEN}\r\n",
    f"Authorization: Bearer {TOKEN[:-1]}\r\n",
    f"Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer {TOKEN}\r\n",
    "Authorization: Bearer \xe9\xe9\r\n",
])
def test_posting_needs_the_local_token(relay, auth):
    before = accepted(relay)
    body = event(source="ansible", type="deploy_finished")
    raw = (f"POST /v1/events HTTP/1.1\r\nHost: relay\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
           ).encode("latin-1") + body
    answer = exchange(port_of(relay), raw)
    assert answer.status == 401 and answer.json()["error"] == "unauthorized"
    assert answer.headers.get("www-authenticate", "").startswith("Bearer")
    assert accepted(relay) == before  # nothing signed as the device


def test_reading_dead_letters_and_event_states_needs_the_local_token(relay):
    port = port_of(relay)
    for path in ("/v1/dead-letters", "/v1/events/some-event-id"):
        answer = exchange(port, f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
        assert answer.status == 401, path
    ok = exchange(port, f"GET /v1/dead-letters HTTP/1.1\r\nHost: relay\r\n{AUTH}\r\n".encode())
    assert ok.status == 200 and ok.json() == {"dead_letters": []}
    # A token holder may claim source: ansible, and look its event up.
    body = event(source="ansible", type="deploy_finished", id="run-1.dev.deploy_finished")
    answer = exchange(port, post(body, f"Content-Length: {len(body)}\r\n"))
    assert answer.status == 202 and answer.json()["status"] == "queued"
    where = "GET /v1/events/run-1.dev.deploy_finished HTTP/1.1\r\nHost: relay\r\n"
    assert exchange(port, where.encode() + b"\r\n").status == 401
    assert exchange(port, (where + AUTH + "\r\n").encode()).json()["state"] in ("queued", "delivered")


def test_the_relay_refuses_to_start_without_a_private_local_token(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    token = tmp_path / "local_token"
    token.write_text(TOKEN + "\n")
    base = f"device_id: d1\nwebhook_url: https://e/v1/events\nsecret_file: {secret}\n"
    config = tmp_path / "relay.yml"

    def load(extra: str, environ=None):
        config.write_text(base + extra)
        return load_config(str(config), environ or {})

    with pytest.raises(ConfigError, match=r"local token file .*No such file"):
        load(f"local_token_file: {tmp_path / 'missing'}\n")
    with pytest.raises(ConfigError, match="local_token_file is required"):
        load("local_token_file: ''\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="must not be readable by others"):
        load(f"local_token_file: {token}\n")
    token.chmod(0o640)  # a group of the device's applications may read it
    assert load(f"local_token_file: {token}\n").local_token == TOKEN
    with pytest.raises(ConfigError, match="files only"):
        load(f"local_token_file: {token}\n", {"EDGEAI_RELAY_LOCAL_TOKEN": "x" * 20})
    token.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load(f"local_token_file: {token}\n")


# -- concurrency -------------------------------------------------------------------------------

def test_connections_past_the_cap_get_503(tmp_path):
    relay = make_relay(tmp_path, max_connections=4, client_timeout_s=3.0)
    port = port_of(relay)
    idle = []
    try:
        for _ in range(4):  # hold every slot: connected, sending nothing
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        deadline = time.monotonic() + 5  # until the relay has taken all 4 (each holds a slot)
        while relay.http._slots._value and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        assert answer.status == 503 and answer.headers.get("retry-after") == "1"
        assert relay.http.refused["busy"] >= 1
        metrics = relay.metrics()
        assert 'edgeai_relay_connections_refused_total{reason="busy"}' in metrics
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the slots come back once those connections end
        if exchange(port, b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").status == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the relay did not serve again after the idle connections closed")
    # Far past the cap, connections are closed at once instead of costing a thread each.
    flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4 + 3 + 5)]
    try:
        time.sleep(0.3)
        assert relay.http.refused["closed"] >= 1
        assert threading.active_count() < 60
    finally:
        for sock in flood:
            sock.close()
        relay.shutdown()


# -- delivery: a receiver that refuses before reading ----------------------------------------------

class EarlyRefuser:
    """A receiver that answers 413 for bodies over ``limit`` as soon as it has the headers, then
    closes without reading the body (the kernel resets the connection); smaller ones get 202."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[dict] = []
        self.refused = 0
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if length > self.limit:
                self.refused += 1
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: 21\r\n\r\n{\"error\":\"too_large\"}")
                time.sleep(0.2)
                return  # closed with the body unread
            while len(body) < length:
                body += conn.recv(65536)
            self.received.append(json.loads(body))
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_an_early_413_from_the_receiver_is_dead_lettered_not_retried(tmp_path):
    receiver = EarlyRefuser(limit=256 * 1024)
    relay = make_relay(tmp_path, webhook_url=f"http://127.0.0.1:{receiver.port}/v1/events",
                       max_event_bytes=16 * 1024 * 1024)
    try:
        port = port_of(relay)
        big = event(8 * 1024 * 1024, id="big-event-0001")
        assert exchange(port, post(big, f"Content-Length: {len(big)}\r\n"), timeout=20).status == 202
        small = event(10, id="small-event-0001")
        assert exchange(port, post(small, f"Content-Length: {len(small)}\r\n")).status == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(e["id"] == "small-event-0001" for e in receiver.received):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the event behind the refused one never arrived; "
                                 f"retried {relay.store.stats()['retried']} times")
        assert relay.store.locate("big-event-0001")["state"] == "dead_letter"
        assert relay.store.locate("big-event-0001")["status"] == 413
        assert relay.store.stats()["retried"] == 0 and receiver.refused == 1
    finally:
        relay.shutdown()
        receiver.close()
