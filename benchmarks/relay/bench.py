#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Event relay: events per second accepted and delivered, and events lost in a receiver outage.

    .venv/bin/python -m benchmarks.relay.bench [--events 2000] [--threads 4]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from webhook_receiver.testing import ReceiverProcess, free_port, wait_for_port, write_secret

from benchmarks import harness
from benchmarks.harness import http_load, loadavg, pct, rss_mib, table, wait_until, workdir

SECRET, TOKEN, LOCAL_TOKEN = "bench-hmac-secret", "bench-api-token", "bench-local-api-token"
RATE, STREAM_S, OUTAGE_AT_S, OUTAGE_S = 250.0, 8.0, 2.0, 3.0  # the outage phase: events/s, seconds
BACKLOG, DRAIN_CAP_S, POST_CAP_S = 5000, 120.0, 60.0
DELIVERED = "edgeai_relay_delivered_total"
log = harness.Log("relay")


class Relay:
    def __init__(self, work: Path, webhook_url: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {"device_id": "bench-device-01", "webhook_url": webhook_url,
                  "secret_file": str(write_secret(work / "hmac_secret", SECRET)),
                  "token_file": str(write_secret(work / "api_token", TOKEN)),
                  "local_token_file": str(write_secret(work / "local_token", LOCAL_TOKEN)),
                  "listen_host": "127.0.0.1", "listen_port": self.port, "queue_path": str(work / "queue" / "queue.db"),
                  "status_interval_s": 0}  # no inference server here: no status reports
        (work / "relay.json").write_text(json.dumps(config))
        self.proc = harness.spawn([sys.executable, "-m", "event_relay", "--config", str(work / "relay.json")],
                                  work / "relay.log", harness.image_env("event-relay", "EDGEAI_RELAY_"), work)
        wait_for_port(self.port, timeout=20, proc=self.proc)

    def metrics(self) -> dict[str, float]:
        text = harness.request(self.port, "/metrics")[1].decode()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}

    def drained(self) -> float | None:
        """When the queue was first empty, None after DRAIN_CAP_S."""
        return wait_until(lambda: self.metrics()["edgeai_relay_queued"] == 0, DRAIN_CAP_S)

    def delivered(self, more_than: float | None = None) -> Any:
        """Events delivered so far; with more_than: when it first delivered more (None after DRAIN_CAP_S)."""
        if more_than is None:
            return self.metrics()[DELIVERED]
        return wait_until(lambda: self.metrics()[DELIVERED] > more_than, DRAIN_CAP_S)


def post(relay: Relay, prefix: str, count: int, threads: int, rate: float | None = None) -> dict[str, Any]:
    def body(k: int) -> bytes:
        return json.dumps({"type": "bench.event", "id": f"{prefix}-{k:07d}", "data": {"k": k}}).encode()

    def check(status: int, raw: bytes, k: int) -> tuple[bool, int]:
        return status == 202 and json.loads(raw or b"{}").get("id") == f"{prefix}-{k:07d}", status

    r = http_load(relay.port, "/v1/events", body, count, threads, POST_CAP_S, rate=rate, check=check,
                  headers={"Authorization": f"Bearer {LOCAL_TOKEN}"})
    return dict(r, acked=[f"{prefix}-{k:07d}" for k in r["ok"]])


def measure(relay: Relay, receiver: ReceiverProcess, events: int, threads: int) -> dict[str, Any]:
    """The three phases; what the report needs."""
    v: dict[str, Any] = {"idle_rss": rss_mib(relay.proc.pid)}
    log(f"throughput: {events} events, {threads} threads")
    a = v["a"] = post(relay, "bench-a", events, threads)
    at_post_end, t_post_end = relay.delivered(), time.monotonic()
    drained = relay.drained()
    v["backlog_a"] = relay.delivered() - at_post_end
    # delivery alone: the backlog left when the posting stopped, over the time it took to empty
    v["solo_rate"] = v["backlog_a"] / (drained - t_post_end) if drained and drained > t_post_end else float("nan")
    v["acc_rate"] = len(a["acked"]) / a["wall"]
    v["del_rate"] = len(a["acked"]) / (drained - a["start"]) if drained else float("nan")

    v["count"] = count = int(RATE * STREAM_S)
    log(f"outage: {count} events at {RATE:.0f}/s; receiver killed at {OUTAGE_AT_S} s")
    b = v["b"] = {}
    poster = threading.Thread(target=lambda: b.update(post(relay, "bench-b", count, threads, RATE)))
    t0 = time.monotonic()
    poster.start()
    time.sleep(max(0.0, t0 + OUTAGE_AT_S - time.monotonic()))
    receiver.stop(signal.SIGKILL)
    time.sleep(OUTAGE_S)
    v["depth_at_restart"], delivered_before = relay.metrics()["edgeai_relay_queued"], relay.delivered()
    receiver.start()
    v["restarted_at"] = time.monotonic()
    v["first_after"] = relay.delivered(more_than=delivered_before)
    poster.join()
    v["drained_b"] = relay.drained()

    log(f"backlog: {BACKLOG} events with the receiver stopped, then the drain")
    receiver.stop()
    v["c"] = post(relay, "bench-c", BACKLOG, threads)
    v["depth_c"], d0 = relay.metrics()["edgeai_relay_queued"], relay.delivered()
    receiver.start()
    first_c = relay.delivered(more_than=d0)
    d1 = relay.delivered()
    drained_c = v["drained_c"] = relay.drained()
    v["drain_rate"] = (relay.delivered() - d1) / (drained_c - first_c) if first_c and drained_c and \
        drained_c > first_c else float("nan")
    v.update(m=relay.metrics(), records=receiver.control("/events")["events"], stats=receiver.stats())
    v["dup"] = sum(1 for line in (receiver.state_dir / "deliveries.jsonl").read_text().splitlines()
                   if line.strip() and json.loads(line).get("duplicate"))
    v["busy_rss"] = rss_mib(relay.proc.pid)
    return v


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--events", type=int, default=2000, help="events in the throughput phase")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    args = ap.parse_args(argv)
    load_before = loadavg()
    with workdir("relay") as work:
        receiver = ReceiverProcess(work / "receiver", secret=SECRET, token=TOKEN)
        relay: Relay | None = None
        try:
            receiver.start()
            relay = Relay(work / "relay", f"http://127.0.0.1:{receiver.port}/v1/events")
            if relay.drained() is None:  # relay.started delivered: the pipe works
                raise RuntimeError("the relay's first event was not delivered")
            v = measure(relay, receiver, args.events, args.threads)
        finally:
            if relay is not None:
                harness.stop(relay.proc, grace=20)
            receiver.stop()
    print(report(args, dict(v, load_before=load_before)))
    return 0


def report(args: Any, v: dict[str, Any]) -> str:
    a, b, c, records, m = v["a"], v["b"], v["c"], v["records"], v["m"]
    received = {r["idempotency_key"] for r in records}
    seqs = [r["event"]["seq"] for r in records if r["idempotency_key"].startswith("bench-")]
    acked = a["acked"] + b["acked"] + c["acked"]
    lost = sorted(set(acked) - received)
    backlog_s = v["drained_b"] - v["restarted_at"] if v["drained_b"] else None
    dropped = sum(m.get(f'edgeai_relay_dropped_total{{reason="{r}"}}', 0) for r in ("queue_full", "expired"))
    first_after = v["first_after"]
    out = [
        "## Event relay: throughput and a receiver outage", "",
        "The relay (`images/event-relay`, default settings: SQLite WAL, fsync per accepted event, backoff 0.5 s "
        "doubling to 60 s) and the lab's webhook receiver (`tests/lab/webhook_receiver`, HMAC secret and bearer "
        f"token) as processes on loopback. Throughput: {args.events} events POSTed by {args.threads} keep-alive "
        "client threads as fast as acknowledged; delivered/s counts from the first POST until the relay's queue is "
        f"empty (delivery runs while events come in). Outage: {v['count']} events at {RATE:.0f}/s over "
        f"{STREAM_S:.0f} s, the receiver killed (SIGKILL) at {OUTAGE_AT_S:.0f} s and restarted "
        f"{OUTAGE_S:.0f} s later on the same port and state; afterwards every id the relay acknowledged is "
        f"looked up among the receiver's de-duplicated ids. Backlog: the receiver stopped, {BACKLOG} events "
        "POSTed as fast as acknowledged, the receiver started again and the queue drained. All on the machine's "
        f"{os.cpu_count()} cores (1-minute load average {v['load_before']} before, {loadavg()} after: other work "
        "ran too).", "",
        *table(["measurement", "value"], [
            ("events acknowledged (202), throughput phase", f"{len(a['acked']):,} of {args.events:,}"),
            ("accepted/s (each committed and fsynced before the 202)", f"{v['acc_rate']:,.0f}"),
            (f"POST /v1/events latency p50 / p99 ({args.threads} threads)",
             f"{pct(a['lat'], 0.5) * 1e3:.1f} ms / {pct(a['lat'], 0.99) * 1e3:.1f} ms"),
            ("delivered/s end to end (first POST until queue empty)", f"{v['del_rate']:,.0f}"),
            (f"delivered/s after the posting stopped (delivery alone, backlog {v['backlog_a']:,.0f} events)",
             f"{v['solo_rate']:,.0f}"),
            ("outage phase: events acknowledged / refused by the relay", f"{len(b['acked']):,} / {len(b['failed'])}"),
            (f"queue depth when the receiver came back ({OUTAGE_S:.0f} s down)", f"{v['depth_at_restart']:,.0f}"),
            ("first delivery after the restart (waiting out the backoff)",
             f"{first_after - v['restarted_at']:.1f} s" if first_after else "none"),
            ("queue empty after the restart in",
             f"{backlog_s:.1f} s" if backlog_s is not None else f"not within {DRAIN_CAP_S:.0f} s"),
            ("backlog phase: accepted/s with the receiver stopped (no delivery running)",
             f"{len(c['acked']) / c['wall']:,.0f}"),
            (f"backlog phase: delivered/s draining {v['depth_c']:,.0f} queued events (first delivery to empty "
             "queue)", f"{v['drain_rate']:,.0f}"),
            ("acknowledged ids missing at the receiver (lost), all phases", f"{len(lost)} of {len(acked):,}"),
            ("duplicate deliveries (answered 200 duplicate; at-least-once)", v["dup"]),
            ("bench events received in seq order", "yes" if seqs == sorted(set(seqs)) else "no"),
            ("relay counters: retried / dropped / dead-lettered", f"{m.get('edgeai_relay_retried_total', 0):.0f} / "
             f"{dropped:.0f} / {m.get('edgeai_relay_dead_lettered_total', 0):.0f}"),
            ("relay RSS idle / after the run", f"{v['idle_rss']:.0f} MiB / {v['busy_rss']:.0f} MiB")]), ""]
    if lost:
        phases = ", ".join(f"{sum(1 for i in lost if i.startswith(f'bench-{p}'))} from the {name} phase"
                           for p, name in (("a", "throughput"), ("b", "outage"), ("c", "backlog")))
        verdict = (f"**missed**: {len(lost)} of {len(acked):,} acknowledged events never reached the receiver "
                   f"({phases}; first: {', '.join(lost[:5])})")
    elif v["drained_b"] is None or v["drained_c"] is None:
        verdict = f"**missed**: the queue did not drain within {DRAIN_CAP_S:.0f} s ({len(lost)} lost so far)"
    else:
        verdict = (f"**met**: 0 of {len(acked):,} acknowledged events lost ({len(b['acked']):,} in the outage "
                   f"phase, {v['depth_at_restart']:,.0f} of them queued while the receiver was down)")
    out += [f"- Goal zero events lost during a receiver outage: {verdict}.",
            f"- Receiver's view: {v['stats'].get('accepted', 0)} accepted since its restart, {len(received):,} "
            "unique events in its state (the relay's own `relay.started` included)."]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
