"""Per model-version counters, exported in Prometheus text format with Triton's names."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VersionStats:
    success: int = 0
    failure: int = 0
    inference_count: int = 0  # inferences, counting each batch element
    exec_count: int = 0
    request_ns: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    last_inference_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_METRICS = (
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success,
    ),
    (
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
        lambda s: s.failure,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (a batch of n counts n)",
        lambda s: s.inference_count,
    ),
    ("nv_inference_exec_count", "counter", "Number of model executions performed", lambda s: s.exec_count),
)
# Triton's cumulative durations in microseconds: (metric, what its help text names, the fields of
# VersionStats, in nanoseconds, that it sums)
_DURATIONS = (
    ("nv_inference_request_duration_us", "inference request", ("request_ns", "fail_ns")),
    ("nv_inference_queue_duration_us", "inference queuing", ("queue_ns",)),
    ("nv_inference_compute_input_duration_us", "compute input", ("input_ns",)),
    ("nv_inference_compute_infer_duration_us", "compute inference", ("infer_ns",)),
    ("nv_inference_compute_output_duration_us", "inference compute output", ("output_ns",)),
)


def _microseconds(fields: tuple[str, ...]) -> Callable[[VersionStats], int]:
    return lambda s: sum(getattr(s, name) for name in fields) // 1000


_METRICS += tuple(
    (metric, "counter", f"Cumulative {what} duration in microseconds", _microseconds(fields))
    for metric, what, fields in _DURATIONS
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], VersionStats] = {}

    def stats(self, model: str, version: str) -> VersionStats:
        key = (model, version)
        st = self._stats.get(key)
        if st is None:
            with self._lock:
                st = self._stats.setdefault(key, VersionStats())
        return st

    def success(
        self,
        model: str,
        version: str,
        batch: int,
        request_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        st = self.stats(model, version)
        with st.lock:
            st.success += 1
            st.inference_count += batch
            st.exec_count += 1
            st.request_ns += request_ns
            st.queue_ns += queue_ns
            st.input_ns += input_ns
            st.infer_ns += infer_ns
            st.output_ns += output_ns
            st.last_inference_ms = int(time.time() * 1000)

    def failure(self, model: str, version: str, request_ns: int) -> None:
        st = self.stats(model, version)
        with st.lock:
            st.failure += 1
            st.fail_ns += request_ns
            st.last_inference_ms = int(time.time() * 1000)

    def snapshot(self) -> list[tuple[str, str, VersionStats]]:
        with self._lock:
            items = sorted(self._stats.items())
        return [(m, v, s) for (m, v), s in items]

    def render(self, loaded: list[dict[str, Any]]) -> str:
        """Prometheus text exposition (version 0.0.4)."""
        snap = self.snapshot()
        lines: list[str] = []
        for name, mtype, help_text, getter in _METRICS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {mtype}")
            for model, version, st in snap:
                lines.append(f'{name}{{model="{_label(model)}",version="{_label(version)}"}} {getter(st)}')
        lines.append("# HELP litert_model_loaded Loaded model versions and where they run (1 = loaded)")
        lines.append("# TYPE litert_model_loaded gauge")
        for item in loaded:
            lines.append(
                f'litert_model_loaded{{model="{_label(item["name"])}",version="{_label(item["version"])}",'
                f'accelerator="{_label(item["accelerator"])}",delegate="{_label(item["delegate"] or "none")}"}} 1'
            )
        return "\n".join(lines) + "\n"

    def model_stats(self, model: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton's statistics extension shape (GET /v2/models[/<m>]/stats)."""
        out = []
        for m, v, st in self.snapshot():
            if (model is not None and m != model) or (version is not None and v != version):
                continue
            out.append(
                {
                    "name": m,
                    "version": v,
                    "last_inference": st.last_inference_ms,
                    "inference_count": st.inference_count,
                    "execution_count": st.exec_count,
                    "inference_stats": {
                        "success": {"count": st.success, "ns": st.request_ns},
                        "fail": {"count": st.failure, "ns": st.fail_ns},
                        "queue": {"count": st.success, "ns": st.queue_ns},
                        "compute_input": {"count": st.success, "ns": st.input_ns},
                        "compute_infer": {"count": st.success, "ns": st.infer_ns},
                        "compute_output": {"count": st.success, "ns": st.output_ns},
                    },
                }
            )
        return out
