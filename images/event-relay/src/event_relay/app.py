"""Wiring: the store, the deliverer, the monitor and the HTTP API; metrics; signal handling."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from event_relay import __version__, logs
from event_relay.api import REJECT_REASONS, RelayHTTPServer
from event_relay.config import Config
from event_relay.delivery import Deliverer
from event_relay.logs import fields
from event_relay.monitor import Monitor
from event_relay.store import EventStore, QueueFullError

LOG = logging.getLogger("event_relay")


class Relay:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.store = EventStore(config.queue_path, config.max_queue_events, config.max_queue_bytes,
                                config.max_event_age_s, config.overflow_policy)
        self.deliverer = Deliverer(self.store, config, self.stop)
        self.monitor = Monitor(self.store, config, self.stop)
        self._rejected: dict[str, int] = {}
        self._lock = threading.Lock()
        self.started_at = time.time()
        self.http = RelayHTTPServer((config.listen_host, config.listen_port), self)

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def health(self) -> dict[str, Any]:
        stats = self.store.stats()
        d = self.deliverer
        return {
            "status": "ok" if d.consecutive_failures == 0 else "degraded",
            "version": __version__,
            "device_id": self.config.device_id,
            "queue": {"depth": stats["depth"], "bytes": stats["bytes"],
                      "oldest_age_s": round(self.store.oldest_age_s(), 3)},
            "webhook": {"consecutive_failures": d.consecutive_failures,
                        "last_success_at": d.last_success_at, "last_error": d.last_error},
            "server_ready": self.monitor.ready,
        }

    def metrics(self) -> str:
        stats = self.store.stats()
        with self._lock:
            rejected = dict(self._rejected)
        lines = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        metric("edgeai_relay_queued", "gauge", "Events waiting in the durable queue.",
               [("", stats["depth"])])
        metric("edgeai_relay_queue_bytes", "gauge", "Bytes of events waiting in the queue.",
               [("", stats["bytes"])])
        metric("edgeai_relay_queue_oldest_age_seconds", "gauge", "Age of the oldest queued event.",
               [("", round(self.store.oldest_age_s(), 3))])
        metric("edgeai_relay_accepted_total", "counter", "Events committed to the queue.",
               [("", stats.get("accepted", 0))])
        metric("edgeai_relay_delivered_total", "counter", "Events the webhook accepted (2xx).",
               [("", stats.get("delivered", 0))])
        metric("edgeai_relay_retried_total", "counter", "Delivery attempts that will be retried.",
               [("", stats.get("retried", 0))])
        metric("edgeai_relay_dead_lettered_total", "counter",
               "Events the webhook refused for good (4xx), parked in dead letters.",
               [("", stats.get("dead_lettered", 0))])
        metric("edgeai_relay_dropped_total", "counter", "Queued events dropped by the queue bounds.",
               [('{reason="queue_full"}', stats.get("dropped_queue_full", 0)),
                ('{reason="expired"}', stats.get("dropped_expired", 0))])
        metric("edgeai_relay_rejected_total", "counter", "Local events refused before queueing.",
               [(f'{{reason="{r}"}}', rejected.get(r, 0)) for r in REJECT_REASONS])
        refused = dict(self.http.refused)
        metric("edgeai_relay_connections_refused_total", "counter",
               "Local connections over max_connections: answered 503 (busy) or closed at once (closed).",
               [(f'{{reason="{r}"}}', refused.get(r, 0)) for r in ("busy", "closed")])
        metric("edgeai_relay_webhook_consecutive_failures", "gauge",
               "Failed delivery attempts since the last success.",
               [("", self.deliverer.consecutive_failures)])
        metric("edgeai_relay_webhook_up", "gauge", "1 when the last delivery attempt succeeded.",
               [("", 0 if self.deliverer.consecutive_failures else 1)])
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        try:
            self.store.append("relay.started", {"version": __version__,
                                                "queue_depth": self.store.stats()["depth"]},
                              device_id=self.config.device_id, source="relay")
        except QueueFullError:
            LOG.error("queue full: relay.started not queued")
        self.deliverer.start()
        self.monitor.start()
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2},
                         name="http", daemon=True).start()
        LOG.info("event relay started", extra=fields(
            version=__version__, listen=f"{self.config.listen_host}:{self.http.server_port}",
            webhook_url=self.config.webhook_url, queue_path=self.config.queue_path,
            queue_depth=self.store.stats()["depth"]))

    def shutdown(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.http.server_close()
        self.deliverer.join(timeout=self.config.request_timeout_s + 2)
        self.monitor.join(timeout=self.config.request_timeout_s + 2)
        self.store.close()
        LOG.info("event relay stopped")


def run(config: Config) -> int:
    logs.setup(config.log_level)
    relay = Relay(config)
    done = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        LOG.info("signal received", extra=fields(signal=signal.Signals(signum).name))
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    relay.start()
    while not done.wait(1.0):
        pass
    relay.shutdown()
    return 0
