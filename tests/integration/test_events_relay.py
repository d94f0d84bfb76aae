# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event relay and the lab's webhook receiver as real processes on loopback.

No Docker and no lab devices: both processes run from the checkout (images/event-relay/src,
tests/lab/webhook_receiver). The inference server in the health/status test is a small
stand-in that serves Triton's health route and metric names.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from edgeai_lab import relay as edgeai_relay
from edgeai_lab.core import wait_until
from webhook_receiver.testing import ReceiverProcess, http_json

ROOT = Path(__file__).resolve().parents[2]

SECRET = "integration-secret"
TOKEN = "integration-token"
LOCAL_TOKEN = "integration-local-token"  # the relay's local API (local_token_file)


def relay_process(workdir: Path, webhook_url: str, secret: str = SECRET, token: str = TOKEN,
                  **settings: object) -> edgeai_relay.RelayProcess:
    """The lab's relay process with this module's secrets and a short backoff (the tests wait on retries)."""
    return edgeai_relay.RelayProcess(workdir, webhook_url, secret=secret, token=token, local_token=LOCAL_TOKEN,
                                     **{"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "request_timeout_s": 3,
                                        **settings})


@pytest.fixture
def receiver(tmp_path):
    proc = ReceiverProcess(tmp_path / "receiver", secret=SECRET, token=TOKEN).start()
    yield proc
    proc.stop()


def app_events(receiver: ReceiverProcess, event_type: str = "app.reading") -> list[dict]:
    return receiver.events(event_type)


def assert_in_order(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), f"out of order: {seqs}"
    assert len(seqs) == len(set(seqs))


def deliveries(receiver: ReceiverProcess) -> list[dict]:
    path = receiver.state_dir / "deliveries.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_receiver_goes_away_and_every_event_arrives_in_order(tmp_path, receiver):
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events") as relay:
        ids = []
        for i in range(30):
            status, doc = relay.post({"type": "app.reading", "data": {"i": i}})
            assert status == 202
            ids.append(doc["id"])
        receiver.stop(signal.SIGKILL)  # goes away without warning, maybe mid-request
        for i in range(30, 70):
            status, doc = relay.post({"type": "app.reading", "data": {"i": i}})
            assert status == 202, "the relay must keep accepting while the webhook is down"
            ids.append(doc["id"])
        wait_until(lambda: relay.metrics()["edgeai_relay_retried_total"] >= 3, 20, what="retries")
        assert relay.metrics()["edgeai_relay_queued"] > 0
        receiver.start()  # same port, same state dir
        receiver.control("", {"mode": "fail", "status": 503, "count": 5})  # then a flaky phase
        for i in range(70, 100):
            assert relay.post({"type": "app.reading", "data": {"i": i}})[0] == 202
        wait_until(lambda: len(app_events(receiver)) >= 100, 60, what="all 100 events")
        events = app_events(receiver)
        assert [e["data"]["i"] for e in events] == list(range(100))
        assert [e["id"] for e in events[:70]] == ids
        assert_in_order(events)
        # At least once: the receiver saw every event, some maybe more than once (a POST cut by
        # the kill is sent again); each extra POST was recognised as a duplicate by its key.
        posts = deliveries(receiver)  # every accepted POST, across the receiver's restart
        keys = [p["key"] for p in posts]
        duplicates = len(keys) - len(set(keys))
        recognised = sum(p["duplicate"] for p in posts)
        # Every repeated key was recognised. The kill -9 can also fall between the receiver
        # storing an event and logging that POST, so one more recognised duplicate than the
        # log shows is possible, never more.
        assert duplicates <= recognised <= duplicates + 1
        assert recognised <= 1
        assert set(keys) == {e["id"] for e in receiver.events()}
        assert duplicates <= 1  # deliveries are sequential: only the POST in flight at the kill
        wait_until(lambda: relay.metrics()["edgeai_relay_queued"] == 0, 20, what="an empty queue")
        metrics = relay.metrics()
        assert metrics["edgeai_relay_retried_total"] >= 5
        assert metrics['edgeai_relay_dropped_total{reason="queue_full"}'] == 0
        assert metrics["edgeai_relay_dead_lettered_total"] == 0


def test_relay_killed_with_sigkill_loses_nothing_it_acknowledged(tmp_path, receiver):
    receiver.control("", {"mode": "slow", "delay_s": 0.02})  # let a backlog build up
    relay = relay_process(tmp_path / "relay", receiver.base_url + "/v1/events").start()
    acknowledged: list[str] = []
    refused = 0
    try:
        for i in range(300):
            if i == 150:
                relay.stop(signal.SIGKILL)
                backlog_killed = True
            if i == 200:
                relay.start()  # same queue file
            try:
                status, doc = relay.post({"type": "app.reading", "data": {"i": i}}, timeout=2)
            except (urllib.error.URLError, ConnectionError, OSError):
                refused += 1
                continue
            if status == 202:
                acknowledged.append(doc["id"])
        assert backlog_killed and refused >= 40  # posts while it was down were not acknowledged
        assert len(acknowledged) >= 250
        wait_until(lambda: len(app_events(receiver)) >= len(acknowledged), 90,
                   what="every acknowledged event at the receiver")
        events = app_events(receiver)
        received = [e["id"] for e in events]
        assert received == acknowledged  # nothing lost, nothing extra, in order
        assert_in_order(events)
        assert len(receiver.events("relay.started")) == 2
    finally:
        relay.stop()


def test_refused_events_are_dead_lettered_and_reported(tmp_path, receiver):
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events") as relay:
        wait_until(lambda: receiver.events("relay.started"), 10, what="relay.started")
        receiver.control("", {"mode": "fail", "status": 422, "count": 1})
        status, refused = relay.post({"type": "app.reading", "data": {"i": 0}})
        assert status == 202
        for i in range(1, 5):
            assert relay.post({"type": "app.reading", "data": {"i": i}})[0] == 202
        reports = wait_until(lambda: receiver.events("relay.dead_letter"), 20, what="a dead-letter report")
        assert reports[0]["data"]["event_id"] == refused["id"]
        assert reports[0]["data"]["status"] == 422
        wait_until(lambda: len(app_events(receiver)) >= 4, 20, what="the later events")
        assert [e["data"]["i"] for e in app_events(receiver)] == [1, 2, 3, 4]  # not blocked behind it
        metrics = relay.metrics()
        assert metrics["edgeai_relay_dead_lettered_total"] == 1
        assert metrics["edgeai_relay_retried_total"] == 0  # a 4xx is not retried
        status, parked = relay.get("/v1/dead-letters")
        assert [p["id"] for p in parked["dead_letters"]] == [refused["id"]]


def test_bad_signature_is_rejected_and_treated_as_permanent(tmp_path, receiver):
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events", secret="not-the-secret") as relay:
        for i in range(3):
            assert relay.post({"type": "app.reading", "data": {"i": i}})[0] == 202
        # relay.started + 3 events + the dead-letter reports for those 4 (which are parked unreported).
        wait_until(lambda: relay.metrics()["edgeai_relay_dead_lettered_total"] >= 8, 20, what="dead letters")
        time.sleep(0.5)
        metrics = relay.metrics()
        assert metrics["edgeai_relay_dead_lettered_total"] == 8  # no report-about-a-report loop
        assert metrics["edgeai_relay_queued"] == 0 and metrics["edgeai_relay_retried_total"] == 0
        stats = receiver.stats()
        assert stats["rejected_invalid_signature"] == 8 and stats.get("accepted", 0) == 0
        assert "event refused by the webhook" in relay.log.read_text()
        parked = relay.get("/v1/dead-letters")[1]
        assert {p["status"] for p in parked["dead_letters"]} == {401}
        assert all("invalid_signature" in p["reason"] for p in parked["dead_letters"])


def test_replayed_request_is_a_duplicate_and_stale_one_is_refused(tmp_path, receiver):
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events"):
        [started] = wait_until(lambda: receiver.events("relay.started"), 10, what="relay.started")
    body = json.dumps(started, sort_keys=True, separators=(",", ":")).encode()
    from webhook_receiver.server import sign

    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": started["id"]}
    now = str(int(time.time()))
    replay = dict(headers, **{"X-Edgeai-Timestamp": now, "X-Edgeai-Signature": sign(SECRET.encode(), now, body)})
    assert http_json("POST", receiver.base_url + "/v1/events", body=body, headers=replay)[0] == 200
    old = str(int(time.time()) - 900)
    stale = dict(headers, **{"X-Edgeai-Timestamp": old, "X-Edgeai-Signature": sign(SECRET.encode(), old, body)})
    status, doc = http_json("POST", receiver.base_url + "/v1/events", body=body, headers=stale)
    assert status == 401 and doc["error"] == "stale_timestamp"
    assert len(receiver.events("relay.started")) == 1


def test_bounded_queue_drops_are_counted_and_reported(tmp_path, receiver):
    receiver.stop()
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events", max_queue_events=20,
                       drop_report_interval_s=0.5) as relay:
        for i in range(50):
            assert relay.post({"type": "app.reading", "data": {"i": i}})[0] == 202
        metrics = relay.metrics()
        assert metrics["edgeai_relay_queued"] == 20
        # 51 events (relay.started + 50) into 20 places; a drop report may push out one more.
        assert metrics['edgeai_relay_dropped_total{reason="queue_full"}'] >= 31
        receiver.start()

        def reported() -> int:
            return sum(r["data"]["dropped"].get("queue_full", 0) for r in receiver.events("relay.events_dropped"))

        # Every drop is reported, including drops that a report itself caused.
        wait_until(lambda: relay.metrics()["edgeai_relay_queued"] == 0
                   and reported() == relay.metrics()['edgeai_relay_dropped_total{reason="queue_full"}'],
                   30, what="every drop reported")
        assert reported() >= 31
        kept = [e["data"]["i"] for e in app_events(receiver)]
        assert kept == sorted(kept) and kept[-1] == 49 and len(kept) >= 18  # the newest survived
        assert "reporting dropped events" in relay.log.read_text()


def test_local_api_refuses_bad_events(tmp_path, receiver):
    with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events", max_event_bytes=1024) as relay:
        assert relay.post({"type": "Bad Type"})[0] == 422
        assert relay.post({"type": "relay.started"})[0] == 422  # the relay's own namespace
        assert relay.post({"type": "app.x", "data": "not an object"})[0] == 422
        assert relay.post({"type": "app.x", "data": {"pad": "x" * 2000}})[0] == 413
        status, doc = relay.post({"type": "deploy_finished", "source": "playbook", "id": "deploy-0001",
                                  "data": {"model": "resnet", "version": "2"}})
        assert status == 202
        again = relay.post({"type": "deploy_finished", "source": "playbook", "id": "deploy-0001", "data": {}})
        # The playbook's retry is queued once, whether the first POST is still queued or delivered.
        assert again[1]["seq"] == doc["seq"] and again[1]["status"] == "duplicate"
        time.sleep(0.3)
        later = relay.post({"type": "deploy_finished", "source": "playbook", "id": "deploy-0001", "data": {}})
        assert later[1] == again[1]
        [deploy] = wait_until(lambda: receiver.events("deploy_finished"), 10, what="deploy event")
        assert deploy["source"] == "playbook" and deploy["id"] == "deploy-0001"
        where = wait_until(lambda: relay.get("/v1/events/deploy-0001")[1]["state"]
                           == "delivered", 10, what="delivered state")
        assert where
        assert relay.get("/v1/events/never-sent-1")[0] == 404
        # Without the local token nothing is queued and nothing is read.
        assert http_json("POST", relay.url + "/v1/events", {"type": "app.x", "source": "ansible"})[0] == 401
        assert http_json("GET", relay.url + "/v1/dead-letters")[0] == 401
        # The id form the model_deploy role uses: <run id>.<host>.<type>
        assert relay.post({"type": "deploy_started", "source": "ansible",
                           "id": "20261127T1000.site-a-orin-01.deploy_started"})[0] == 202
        metrics = relay.metrics()
        assert metrics['edgeai_relay_rejected_total{reason="invalid"}'] == 3
        assert metrics['edgeai_relay_rejected_total{reason="too_large"}'] == 1
        status, health = http_json("GET", relay.url + "/healthz")
        assert status == 200 and health["status"] == "ok" and health["device_id"] == "lab-dev-01"


class _FakeTriton(BaseHTTPRequestHandler):
    """Stand-in inference server: Triton's readiness route and metric names, nothing else."""

    ready = True
    success = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v2/health/ready":
            self.send_response(200 if _FakeTriton.ready else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        _FakeTriton.success += 5
        body = (f'nv_inference_request_success{{model="resnet",version="2"}} {_FakeTriton.success}\n'
                f'nv_inference_request_failure{{model="resnet",version="2"}} 1\n'
                f'nv_inference_count{{model="resnet",version="2"}} {_FakeTriton.success * 4}\n'
                f'nv_inference_request_duration_us{{model="resnet",version="2"}} {_FakeTriton.success * 1000}\n'
                ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_health_changes_and_status_reports(tmp_path, receiver):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with relay_process(tmp_path / "relay", receiver.base_url + "/v1/events", inference_url=base,
                           metrics_url=base + "/metrics", health_interval_s=0.2, status_interval_s=1):
            wait_until(lambda: receiver.events("server.health_changed"), 10, what="first health event")
            _FakeTriton.ready = False
            changes = wait_until(lambda: len(receiver.events("server.health_changed")) >= 2
                                 and receiver.events("server.health_changed"), 10, what="not-ready event")
            assert [c["data"]["ready"] for c in changes[:2]] == [True, False]
            assert changes[1]["data"]["previous"] is True
            status = wait_until(lambda: receiver.events("status"), 10, what="a status report")
            [model] = status[0]["data"]["models"]
            assert model["model"] == "resnet" and model["version"] == "2"
            assert model["request_failure"] == 1 and model["avg_request_latency_us"] is not None
            assert "delivered" in status[0]["data"]["relay"]
    finally:
        _FakeTriton.ready = True
        server.shutdown()
        server.server_close()
