"""The delivery loop's housekeeping and steps, against a real store and a stubbed webhook."""

from __future__ import annotations

import json
import threading

from event_relay.config import Config
from event_relay.delivery import Deliverer, Outcome
from event_relay.store import DROP_REPORT_TYPE, EventStore


def make(tmp_path, max_events=100):
    store = EventStore(str(tmp_path / "q.db"), max_events, 1 << 20, 3600.0)
    config = Config(device_id="dev-1", webhook_url="http://127.0.0.1:9/v1/events", drop_report_interval_s=0.0)
    return store, Deliverer(store, config, threading.Event())


class Webhook:
    """Stands in for Deliverer.send: takes every event and remembers it."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    def __call__(self, event):
        self.received.append(json.loads(event.body))
        return Outcome("delivered", 202)


def test_housekeeping_does_not_touch_the_store_when_nothing_was_dropped(tmp_path):
    store, deliverer = make(tmp_path)
    for i in range(20):
        store.append("a", {"i": i}, device_id="d", source="app")
    statements = []
    store._db.set_trace_callback(statements.append)
    now = 1_000_000.0
    deliverer._last_expire = now  # the expiry sweep (every 5 s) is not what is measured here
    for k in range(50):
        deliverer.housekeeping(now + k * 0.001)
    assert statements == []


def test_drops_are_reported_once_at_a_time_and_all_counted(tmp_path, monkeypatch):
    store, deliverer = make(tmp_path, max_events=3)
    webhook = Webhook()
    monkeypatch.setattr(deliverer, "send", webhook)
    for i in range(5):  # 2 dropped
        store.append("a", {"i": i}, device_id="d", source="app")
    deliverer.housekeeping(1.0)
    assert store.drop_report_queued()
    for i in range(5, 8):  # more drops while the report waits: no second report
        store.append("a", {"i": i}, device_id="d", source="app")
    lookups = []
    monkeypatch.setattr(store, "drop_report_queued", lambda real=store.drop_report_queued: lookups.append(1) or real())
    deliverer.housekeeping(2.0)
    assert lookups == [1]
    while deliverer.step():
        deliverer.housekeeping(3.0)
    reports = [e for e in webhook.received if e["type"] == DROP_REPORT_TYPE]
    # the first report's own append dropped one more event: 2, then 1 + 3
    assert [r["data"]["dropped"] for r in reports] == [{"queue_full": 2}, {"queue_full": 4}]
    assert store.stats()["dropped_queue_full"] == 6
    assert reports[-1]["data"]["dropped_total"] == {"queue_full": 6, "expired": 0}
    assert not store.has_unreported_drops() and store.stats()["depth"] == 0
    seqs = [e["seq"] for e in webhook.received]
    assert seqs == sorted(seqs)


def test_step_delivers_in_order_and_empties_the_queue(tmp_path, monkeypatch):
    store, deliverer = make(tmp_path)
    webhook = Webhook()
    monkeypatch.setattr(deliverer, "send", webhook)
    for i in range(10):
        store.append("a", {"i": i}, device_id="d", source="app")
    while deliverer.step():
        pass
    assert [e["data"]["i"] for e in webhook.received] == list(range(10))
    assert store.stats()["delivered"] == 10 and store.stats()["depth"] == 0
    assert deliverer.consecutive_failures == 0
