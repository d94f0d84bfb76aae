"""Unit tests of the lab's HTTP load (edgeai_lab.load) against a small server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from edgeai_lab.load import Load, http_load
from edgeai_lab.loopback import free_port


class Echo(BaseHTTPRequestHandler):
    """Answers {"k": <the body's k>}; k 3 gets a 503, k 4 an answer that is not JSON."""
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set[tuple[str, int]] = set()

    def do_POST(self) -> None:
        Echo.connections.add(self.client_address)
        k = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["k"]
        status, answer = (503, b"{}") if k == 3 else (200, b"not json" if k == 4 else json.dumps({"k": k}).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    Echo.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def body(k: int) -> bytes:
    return json.dumps({"k": k}).encode()


def check(status: int, raw: bytes, k: int) -> tuple[bool, object]:
    return status == 200 and json.loads(raw)["k"] == k, status


def test_every_request_is_recorded_with_its_outcome_over_one_connection_a_thread(port):
    r = http_load(port, "/", body, 20, 2, 30, check=check)
    assert sorted(k for k, *_ in r["records"]) == list(range(20))
    assert sorted(r["ok"]) == [k for k in range(20) if k not in (3, 4)]
    notes = {rec[0]: rec[4] for rec in r["failed"]}
    assert notes == {3: 503, 4: "JSONDecodeError"}  # an answer the check cannot read: its exception's name
    assert len(r["lat"]) == 18 and r["lat"] == sorted(r["lat"]) and not r["capped"]
    # keep-alive, and a new connection only after the unreadable answer: at most 2 + 1
    assert 2 <= len(Echo.connections) <= 3


def test_a_refused_connection_is_a_failure_named_by_its_exception():
    r = http_load(free_port(), "/", body, 3, 1, 30)
    assert r["ok"] == [] and [rec[4] for rec in r["failed"]] == ["ConnectionRefusedError"] * 3


def test_with_a_rate_request_k_is_not_sent_before_k_over_rate(port):
    r = http_load(port, "/", body, 10, 3, 30, rate=50.0)
    assert all(sent >= k / 50.0 - 1e-3 for k, sent, *_ in r["records"])


def test_a_background_load_runs_until_stopped_and_says_it_was_cut_short(port):
    load = Load(port, "/", lambda _k: body(0), 10**9, 2, 60)  # k 0 always: every answer 200
    threading.Event().wait(0.3)
    r = load.result(stop=True)
    assert r["capped"] and len(r["ok"]) > 0 and r["failed"] == []
    assert load.stop_event.is_set()


def test_a_background_load_ends_by_itself_at_its_count(port):
    r = Load(port, "/", lambda _k: body(0), 5, 1, 60).result()
    assert len(r["ok"]) == 5 and not r["capped"]
