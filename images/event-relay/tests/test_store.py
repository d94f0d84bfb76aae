"""The durable queue: order, bounds, reports, persistence."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import event_relay
from event_relay.store import DELIVERED_SYNC_EVERY, DROP_REPORT_TYPE, SCHEMA_VERSION, EventStore, QueueFullError


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


# -- schema migration, indexed lookups, delivery commits ------------------------------------

OLD_SCHEMA = """
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
                     created REAL NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
                           created REAL NOT NULL, body BLOB NOT NULL, status INTEGER NOT NULL,
                           reason TEXT NOT NULL, parked_at REAL NOT NULL);
CREATE TABLE delivered (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, status INTEGER NOT NULL,
                        delivered_at REAL NOT NULL);
CREATE INDEX delivered_id ON delivered(id);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def write_old_queue_file(path, count):
    """A queue file as the relay wrote it before schema versioning (user_version 0, no type index)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    for seq in range(1, count + 1):
        body = json.dumps({"id": f"old-{seq:04d}", "seq": seq, "type": "a", "data": {"i": seq}}).encode()
        db.execute("INSERT INTO events(seq, id, type, created, body) VALUES (?, ?, ?, ?, ?)",
                   (seq, f"old-{seq:04d}", "a", time.time(), body))
    db.executemany("INSERT INTO counters VALUES (?, ?)", [("accepted", count), ("last_seq", count)])
    db.close()


def plan(store, sql):
    return " ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql).fetchall())


def test_old_queue_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "q.db"
    write_old_queue_file(path, 5)
    store = make(tmp_path)
    db = store._db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT sql FROM sqlite_master WHERE name = 'events_drop_report'").fetchone()
    assert "events_drop_report" in plan(store, f"SELECT 1 FROM events WHERE type = '{DROP_REPORT_TYPE}' LIMIT 1")
    # the queue is intact and goes on where it was
    assert store.stats()["depth"] == 5 and store.stats()["accepted"] == 5
    assert store.append("a", {"i": 6}, device_id="d", source="app").seq == 6
    assert [e["seq"] for e in drain(store)] == [1, 2, 3, 4, 5, 6]
    store.close()
    again = make(tmp_path)  # opening a current file changes nothing
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert again.stats()["delivered"] == 6 and again.stats()["depth"] == 0


def test_drop_report_lookup_follows_the_queue(tmp_path):
    store = make(tmp_path)
    for i in range(50):
        store.append("a", {"i": i}, device_id="d", source="app")
    assert not store.drop_report_queued()
    report = store.append(DROP_REPORT_TYPE, {"dropped": {"expired": 1}}, device_id="d", source="relay")
    assert store.drop_report_queued()
    while store.head().seq != report.seq:
        store.mark_delivered(store.head().seq)
    store.mark_delivered(report.seq)
    assert not store.drop_report_queued()


def test_unreported_drops_are_known_without_a_query(tmp_path):
    store = make(tmp_path, max_events=2)
    statements = []
    store._db.set_trace_callback(statements.append)
    assert not store.has_unreported_drops()
    assert statements == []
    for i in range(3):
        store.append("a", {"i": i}, device_id="d", source="app")
    assert store.has_unreported_drops()
    store.take_unreported_drops()
    assert not store.has_unreported_drops()


def test_oldest_age_is_the_head_age(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    store = make(tmp_path)
    assert store.oldest_age_s() == 0.0
    store.append("a", {"i": 0}, device_id="d", source="app")
    clock[0] = 1004.0
    store.append("a", {"i": 1}, device_id="d", source="app")
    clock[0] = 1010.0
    assert store.oldest_age_s() == 10.0
    store.mark_delivered(store.head().seq)
    assert store.oldest_age_s() == 6.0
    store.mark_delivered(store.head().seq)
    assert store.oldest_age_s() == 0.0


def test_delivery_commits_skip_fsync_and_enqueue_commits_do_not(tmp_path):
    store = make(tmp_path)
    for i in range(DELIVERED_SYNC_EVERY + 1):
        store.append("a", {"i": i}, device_id="d", source="app")
    statements = []
    head = store.head()
    store._db.set_trace_callback(statements.append)
    store.mark_delivered(head.seq)
    assert statements[0] == "PRAGMA synchronous=NORMAL"
    assert statements[1] == "BEGIN IMMEDIATE"
    assert statements[-2:] == ["COMMIT", "PRAGMA synchronous=FULL"]
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for enqueues
    statements.clear()
    store.append("a", {"i": "x"}, device_id="d", source="app")
    assert not any(s.startswith("PRAGMA synchronous") for s in statements)
    # every DELIVERED_SYNC_EVERY-th delivery is committed with FULL
    while store.stats()["delivered"] < DELIVERED_SYNC_EVERY - 1:
        store.mark_delivered(store.head().seq)
    head = store.head()
    statements.clear()
    store.mark_delivered(head.seq)
    assert store.stats()["delivered"] == DELIVERED_SYNC_EVERY
    assert not any(s.startswith("PRAGMA synchronous") for s in statements)
    assert "COMMIT" in statements


KILLED_WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from event_relay.store import EventStore
store = EventStore(sys.argv[1], 1000, 1 << 20, 3600.0)
for i in range(40):
    store.append("a", {"i": i}, device_id="d", source="app")
for _ in range(15):
    event = store.head()
    store.mark_delivered(event.seq, event.id, 202)
print("ready", flush=True)
sys.stdin.read()
"""


def test_kill_9_after_unsynced_deliveries_loses_nothing(tmp_path):
    path = tmp_path / "q.db"
    src = str(Path(event_relay.__file__).parents[1])
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), src],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    store = make(tmp_path)
    assert store.stats()["accepted"] == 40 and store.stats()["delivered"] == 15
    assert store.locate(store.head().id)["state"] == "queued"
    assert [e["data"]["i"] for e in drain(store)] == list(range(15, 40))
