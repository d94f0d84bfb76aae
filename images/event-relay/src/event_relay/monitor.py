"""The relay's own events: inference server health changes and periodic status."""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from event_relay.config import Config
from event_relay.logs import fields
from event_relay.store import EventStore, QueueFullError, Worker

LOG = logging.getLogger("event_relay.monitor")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TRITON_METRICS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_request_duration_us": "request_duration_us",
}


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, value))
    return samples


def summarize_models(text: str, previous: dict[tuple[str, str], dict[str, float]] | None = None
                     ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, float]]]:
    """Per model and version: Triton's counters, their change since ``previous`` and latencies."""
    current: dict[tuple[str, str], dict[str, float]] = {}
    for name, labels, value in parse_prometheus(text):
        key = TRITON_METRICS.get(name)
        if key is None or "model" not in labels:
            continue
        model = (labels["model"], labels.get("version", ""))
        slot = current.setdefault(model, {})
        slot[key] = slot.get(key, 0.0) + value  # summed over gpu_uuid and similar labels
    models = []
    for (model, version), counters in sorted(current.items()):
        before = (previous or {}).get((model, version), {})
        entry: dict[str, Any] = {"model": model, "version": version}
        for key in TRITON_METRICS.values():
            entry[key] = int(counters.get(key, 0))
            delta = counters.get(key, 0.0) - before.get(key, 0.0)
            entry[key + "_delta"] = int(delta) if delta >= 0 else int(counters.get(key, 0))  # reset
        done = entry["request_success"] + entry["request_failure"]
        entry["avg_request_latency_us"] = round(entry["request_duration_us"] / done, 1) if done else None
        done_delta = entry["request_success_delta"] + entry["request_failure_delta"]
        entry["interval_avg_request_latency_us"] = (
            round(entry["request_duration_us_delta"] / done_delta, 1) if done_delta else None)
        models.append(entry)
    return models, current


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(2 * 1024 * 1024).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


class Monitor(Worker):
    """Polls the inference server's readiness and metrics; queues events for the deliverer."""

    def __init__(self, store: EventStore, config: Config, stop: threading.Event) -> None:
        super().__init__("monitor", store, config, stop)
        self.ready: bool | None = None
        self._previous: dict[tuple[str, str], dict[str, float]] = {}

    def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        try:
            self.store.append(event_type, data, device_id=self.config.device_id, source="relay")
        except QueueFullError:
            LOG.error("queue full: event not queued", extra=fields(type=event_type))

    def check_health(self) -> None:
        url = self.config.inference_url.rstrip("/") + "/v2/health/ready"
        try:
            status, _ = _get(url, self.config.request_timeout_s)
            ready, detail = status == 200, f"HTTP {status}"
        except (OSError, ValueError) as exc:
            ready, detail = False, f"{type(exc).__name__}: {exc}"
        if ready != self.ready:
            LOG.info("inference server health changed", extra=fields(ready=ready, detail=detail))
            self._emit("server.health_changed", {"ready": ready, "previous": self.ready,
                                                 "detail": detail, "url": url})
            self.ready = ready

    def report_status(self) -> None:
        data: dict[str, Any] = {"server_ready": self.ready}
        if self.config.metrics_url:
            try:
                status, text = _get(self.config.metrics_url, self.config.request_timeout_s)
                if status == 200:
                    data["models"], self._previous = summarize_models(text, self._previous)
                else:
                    data["metrics_error"] = f"HTTP {status}"
            except (OSError, ValueError) as exc:
                data["metrics_error"] = f"{type(exc).__name__}: {exc}"
        data["relay"] = self.store.stats()
        self._emit("status", data)

    def run(self) -> None:
        start = time.monotonic()
        next_health = start
        next_status = start + self.config.status_interval_s  # the first report after one interval
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                if self.config.inference_url and now >= next_health:
                    self.check_health()
                    next_health = now + self.config.health_interval_s
                if self.config.status_interval_s > 0 and now >= next_status:
                    self.report_status()
                    next_status = now + self.config.status_interval_s
            except Exception:
                LOG.exception("monitor error")
            self.stop.wait(0.5)
