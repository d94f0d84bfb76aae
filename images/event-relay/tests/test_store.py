"""The durable queue: order, bounds, reports, persistence."""

from __future__ import annotations

import json
import time

import pytest

from event_relay.store import EventStore, QueueFullError


def make(tmp_path, **kw):
    args = {"max_events": 100, "max_bytes": 1 << 20, "max_age_s": 3600.0}
    args.update(kw)
    return EventStore(str(tmp_path / "q.db"), **args)


def drain(store):
    seen = []
    while (event := store.head()) is not None:
        seen.append(json.loads(event.body))
        store.mark_delivered(event.seq)
    return seen


def test_fifo_order_and_envelope(tmp_path):
    store = make(tmp_path)
    for i in range(10):
        store.append("app.tick", {"i": i}, device_id="d1", source="app")
    seen = drain(store)
    assert [e["data"]["i"] for e in seen] == list(range(10))
    assert [e["seq"] for e in seen] == list(range(1, 11))
    assert all(e["device_id"] == "d1" and e["type"] == "app.tick" for e in seen)
    assert len({e["id"] for e in seen}) == 10
    assert store.stats()["delivered"] == 10 and store.stats()["depth"] == 0


def test_survives_reopen_and_keeps_sequence(tmp_path):
    store = make(tmp_path)
    ids = [store.append("a", {"i": i}, device_id="d", source="app").id for i in range(5)]
    store.mark_delivered(store.head().seq)
    store.close()
    again = make(tmp_path)
    assert again.stats()["depth"] == 4 and again.stats()["delivered"] == 1
    nxt = again.append("a", {"i": 5}, device_id="d", source="app")
    assert nxt.seq == 6
    assert [e["id"] for e in drain(again)] == [*ids[1:], nxt.id]


def test_same_local_id_is_queued_once(tmp_path):
    store = make(tmp_path)
    first = store.append("a", {}, device_id="d", source="app", event_id="app-0001")
    second = store.append("a", {}, device_id="d", source="app", event_id="app-0001")
    assert first.seq == second.seq and store.stats()["depth"] == 1


def test_drop_oldest_when_full_is_counted_and_reportable(tmp_path):
    store = make(tmp_path, max_events=3)
    for i in range(5):
        store.append("a", {"i": i}, device_id="d", source="app")
    stats = store.stats()
    assert stats["depth"] == 3 and stats["dropped_queue_full"] == 2
    assert store.take_unreported_drops() == {"queue_full": 2}
    assert store.take_unreported_drops() == {}
    assert [e["data"]["i"] for e in drain(store)] == [2, 3, 4]


def test_byte_bound(tmp_path):
    store = make(tmp_path, max_bytes=600)
    for i in range(10):
        store.append("a", {"pad": "x" * 100, "i": i}, device_id="d", source="app")
    assert store.stats()["bytes"] <= 600
    assert store.stats()["dropped_queue_full"] > 0
    assert store.stats()["depth"] + store.stats()["dropped_queue_full"] == 10


def test_reject_new_policy(tmp_path):
    store = make(tmp_path, max_events=2, overflow_policy="reject_new")
    store.append("a", {"i": 0}, device_id="d", source="app")
    store.append("a", {"i": 1}, device_id="d", source="app")
    with pytest.raises(QueueFullError):
        store.append("a", {"i": 2}, device_id="d", source="app")
    assert store.stats()["rejected_queue_full"] == 1 and store.stats()["depth"] == 2
    assert [e["data"]["i"] for e in drain(store)] == [0, 1]


def test_expiry_by_age(tmp_path):
    store = make(tmp_path, max_age_s=10)
    store.append("a", {"i": 0}, device_id="d", source="app")
    assert store.expire(time.time()) == 0
    assert store.expire(time.time() + 11) == 1
    assert store.stats()["dropped_expired"] == 1 and store.stats()["depth"] == 0
    assert store.take_unreported_drops() == {"expired": 1}


def test_park_moves_to_dead_letters(tmp_path):
    store = make(tmp_path)
    event = store.append("a", {}, device_id="d", source="app")
    store.append("b", {}, device_id="d", source="app")
    store.park(event, 401, "invalid_signature")
    assert store.head().type == "b"
    assert store.stats()["dead_lettered"] == 1
    [parked] = store.dead_letters()
    assert parked["id"] == event.id and parked["status"] == 401


def test_retry_counts_attempts(tmp_path):
    store = make(tmp_path)
    event = store.append("a", {}, device_id="d", source="app")
    assert store.mark_retry(event.seq) == 1
    assert store.mark_retry(event.seq) == 2
    assert store.head().attempts == 2 and store.stats()["retried"] == 2


def test_locate_follows_an_event(tmp_path):
    store = make(tmp_path)
    first = store.append("a", {}, device_id="d", source="app", event_id="first-0001")
    second = store.append("b", {}, device_id="d", source="app", event_id="second-001")
    assert store.locate("first-0001")["state"] == "queued"
    store.mark_delivered(first.seq, first.id, 202)
    assert store.locate("first-0001") == {"id": "first-0001", "state": "delivered", "seq": first.seq,
                                          "status": 202, "delivered_at": store.locate("first-0001")["delivered_at"]}
    store.park(second, 422, "bad")
    assert store.locate("second-001")["state"] == "dead_letter"
    assert store.locate("nothing-here")["state"] == "unknown"


def test_known_id_is_not_queued_again(tmp_path):
    store = make(tmp_path)
    first = store.append("a", {}, device_id="d", source="app", event_id="deploy-0001")
    assert store.append("a", {}, device_id="d", source="app", event_id="deploy-0001").duplicate
    store.mark_delivered(first.seq, first.id, 202)
    again = store.append("a", {}, device_id="d", source="app", event_id="deploy-0001")
    assert again.duplicate and again.seq == first.seq and store.stats()["depth"] == 0


def test_queued_drop_report_is_never_dropped(tmp_path):
    store = make(tmp_path, max_events=3)
    store.append("a", {"i": 0}, device_id="d", source="app")
    report = store.append("relay.events_dropped", {"dropped": {"queue_full": 1}}, device_id="d", source="relay")
    for i in range(1, 6):
        store.append("a", {"i": i}, device_id="d", source="app")
    kept = drain(store)
    assert kept[0]["id"] == report.id
    assert [e["data"].get("i") for e in kept[1:]] == [4, 5]
