"""Bounded HTTP load on a server reached on loopback (a local process, or a device's port through a tunnel).

`http_load()` POSTs from keep-alive connections, one a thread, until a count, a time cap or a stop event,
and records every request. `Load` runs it in the background while a test or a benchmark does something
else: a model swap the load must not notice, a receiver outage. The serving integration tests
(test_model_serving, test_rollout_models) and the benchmarks (model_update, litert, relay) use them.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

Check = Callable[[int, bytes, int], tuple[bool, Any]]


def status_200(status: int, _raw: bytes, _k: int) -> tuple[bool, Any]:
    return status == 200, status


def http_load(port: int, path: str, body: Callable[[int], bytes], count: int, threads: int, cap_s: float, *,
              rate: float | None = None, pace_s: float | None = None, stop: threading.Event | None = None,
              headers: dict[str, str] | None = None, timeout: float = 30, check: Check = status_200) -> dict[str, Any]:
    """POST body(k), k < count, from `threads` keep-alive connections to 127.0.0.1:port until cap_s or `stop`:
    each as soon as the last answered, or request k at start + k / rate, or one a thread every pace_s.
    check(status, answer, k): (ok, note); a failed connection, or an answer check() cannot read (ValueError,
    KeyError, IndexError), notes its exception's name, and the thread connects anew.
    "records": (k, sent since start, latency, ok, note)."""
    lock, ticket = threading.Lock(), itertools.count()
    records: list[tuple[int, float, float, bool, Any]] = []
    headers = {"Content-Type": "application/json", **(headers or {})}
    start = time.monotonic()

    def worker(i: int) -> None:
        conn, next_t = None, start + (i * pace_s / threads if pace_s else 0)
        while (k := next(ticket)) < count and time.monotonic() < start + cap_s and not (stop and stop.is_set()):
            due = start + k / rate if rate else next_t
            time.sleep(max(0.0, due - time.monotonic()))
            t = time.monotonic()
            next_t = max(next_t + (pace_s or 0), t)
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                conn.request("POST", path, body(k), headers)
                resp = conn.getresponse()
                ok, note = check(resp.status, resp.read(), k)
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as exc:
                if conn:
                    conn.close()
                conn, ok, note = None, False, type(exc).__name__
            with lock:
                records.append((k, t - start, time.monotonic() - t, ok, note))
        if conn:
            conn.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    end = time.monotonic()
    return {"ok": [r[0] for r in records if r[3]], "lat": sorted(r[2] for r in records if r[3]),
            "failed": [r for r in records if not r[3]], "records": records, "start": start, "end": end,
            "wall": end - start, "capped": len(records) < count}


class Load:
    """http_load() in the background, started at once. result() waits until it ends by itself (count, cap_s or
    the caller's stop event), result(stop=True) ends it first; both return what http_load() returns."""

    def __init__(self, port: int, path: str, body: Callable[[int], bytes], count: int, threads: int, cap_s: float,
                 **options: Any) -> None:
        self.stop_event: threading.Event = options.setdefault("stop", threading.Event())
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=lambda: self._out.update(http_load(port, path, body, count, threads, cap_s, **options)),
            daemon=True)
        self._thread.start()

    def result(self, stop: bool = False) -> dict[str, Any]:
        if stop:
            self.stop_event.set()
        self._thread.join()
        return self._out
