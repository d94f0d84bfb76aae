"""Delivery: the head of the queue goes to the webhook, in order, until it is taken or refused."""

from __future__ import annotations

import dataclasses
import http.client
import logging
import math
import random
import ssl
import threading
import time
from urllib.parse import urlsplit

from event_relay import __version__
from event_relay.config import Config
from event_relay.logs import fields
from event_relay.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from event_relay.store import DROP_REPORT_TYPE, EventStore, QueueFullError, StoredEvent, Worker

LOG = logging.getLogger("event_relay.delivery")

RETRYABLE_4XX = frozenset({408, 429})
EXPIRE_INTERVAL_S = 5.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str  # "delivered" | "retry" | "permanent"
    status: int = 0
    reason: str = ""
    retry_after_s: float | None = None


def classify(status: int) -> str:
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE_4XX or status >= 500 or status < 200:
        return "retry"
    # Other 4xx, and 3xx (a signed POST is not redirected): retrying cannot help.
    return "permanent"


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: a random point in the upper half of the capped window."""
    cap = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(cap / 2, cap)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class Deliverer(Worker):
    def __init__(self, store: EventStore, config: Config, stop: threading.Event) -> None:
        super().__init__("deliverer", store, config, stop)
        url = urlsplit(config.webhook_url)
        self._scheme = url.scheme
        self._host = url.hostname or ""
        self._port = url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._ssl: ssl.SSLContext | None = None
        if self._scheme == "https":
            self._ssl = ssl.create_default_context(cafile=config.ca_file or None)
            if not config.verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self.consecutive_failures = 0
        self.last_success_at: float | None = None
        self.last_error = ""
        self._last_expire = 0.0
        self._last_drop_report = 0.0

    # -- HTTP ---------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.config.request_timeout_s
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, event: StoredEvent) -> Outcome:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"edgeai-event-relay/{__version__}",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.config.secret, timestamp, event.body),
            # The key is the "id" inside the signed body: a receiver de-duplicates on that id and
            # refuses a key that differs from it, so a replay under a new key is recognised.
            IDEMPOTENCY_HEADER: event.id,
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        try:
            conn = self._connection()
            broken = False
            try:
                conn.request("POST", self._path, body=event.body, headers=headers)
            except OSError:
                # A receiver may answer before it has read the body (a 413, a 401) and close the
                # connection: sending fails, but its answer is there to read. Only without one is
                # this a connection error (retried).
                broken = True
                response = self._early_answer(conn)
                if response is None:
                    raise
            else:
                response = conn.getresponse()
            payload = response.read(4096)
            if broken or response.will_close or not response.isclosed():  # or more than we read
                self._drop_connection()
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection()
            return Outcome("retry", 0, f"{type(exc).__name__}: {exc}")
        kind = classify(response.status)
        reason = "" if kind == "delivered" else payload.decode("utf-8", "replace")[:300]
        return Outcome(kind, response.status, reason, _retry_after(response.getheader("Retry-After")))

    @staticmethod
    def _early_answer(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
        if conn.sock is None:  # never connected
            return None
        try:
            return conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None

    # -- loop ---------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        if now - self._last_expire >= EXPIRE_INTERVAL_S:
            self._last_expire = now
            expired = self.store.expire(now)
            if expired:
                LOG.warning("events dropped: older than max_event_age_s",
                            extra=fields(dropped=expired, reason="expired"))
        # One drop report in the queue at a time: later drops add up until it has gone out, so
        # the reports together account for every drop (the queue bounds never drop a report).
        # This runs before every delivery: the in-memory counters come first, and only with
        # drops to report is the queue asked (an index lookup) whether a report still waits.
        if (now - self._last_drop_report >= self.config.drop_report_interval_s
                and self.store.has_unreported_drops()
                and not self.store.drop_report_queued()):
            drops = self.store.take_unreported_drops()
            if drops:
                self._last_drop_report = now
                totals = self.store.stats()
                LOG.warning("reporting dropped events", extra=fields(dropped=drops))
                queued = self._emit(DROP_REPORT_TYPE, {
                    "dropped": drops,
                    "dropped_total": {"queue_full": totals.get("dropped_queue_full", 0),
                                      "expired": totals.get("dropped_expired", 0)},
                })
                if not queued:
                    self.store.restore_unreported_drops(drops)

    def _emit(self, event_type: str, data: dict[str, object]) -> bool:
        try:
            self.store.append(event_type, data, device_id=self.config.device_id, source="relay")
        except QueueFullError:
            LOG.error("queue full: report not queued", extra=fields(type=event_type, data=data))
            return False
        return True

    def step(self) -> bool:
        """Try to deliver the head of the queue once. Returns False when the queue was empty."""
        event = self.store.head()
        if event is None:
            return False
        outcome = self.send(event)
        if outcome.kind == "delivered":
            self.store.mark_delivered(event.seq, event.id, outcome.status)
            if self.consecutive_failures:
                LOG.info("webhook reachable again", extra=fields(after_failures=self.consecutive_failures))
            self.consecutive_failures = 0
            self.last_success_at = time.time()
            self.last_error = ""
            return True
        self.last_error = f"{outcome.status or 'no answer'} {outcome.reason}".strip()
        if outcome.kind == "permanent":
            self.store.park(event, outcome.status, outcome.reason)
            LOG.error("event refused by the webhook: parked in dead letters",
                      extra=fields(id=event.id, seq=event.seq, type=event.type, status=outcome.status,
                                   reason=outcome.reason))
            if event.type != "relay.dead_letter":
                self._emit("relay.dead_letter", {"event_id": event.id, "event_seq": event.seq,
                                                 "event_type": event.type, "status": outcome.status,
                                                 "reason": outcome.reason})
            return True
        self.consecutive_failures += 1
        attempts = self.store.mark_retry(event.seq)
        delay = backoff_delay(attempts, self.config.backoff_initial_s, self.config.backoff_max_s)
        if outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, self.config.backoff_max_s))
        LOG.warning("delivery failed: will retry", extra=fields(
            id=event.id, seq=event.seq, status=outcome.status, reason=outcome.reason,
            attempt=attempts, retry_in_s=round(delay, 3)))
        self.stop.wait(delay)
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.housekeeping(time.time())
                if not self.step():
                    with self.store.wakeup:
                        if self.store.head() is None:
                            self.store.wakeup.wait(timeout=1.0)
            except Exception:  # keep delivering; the store is durable, so nothing is lost
                LOG.exception("delivery loop error")
                self.stop.wait(1.0)
        self._drop_connection()
