"""Event relay: events per second accepted and delivered, and events lost in a receiver outage."""

import json
import os
import signal
import threading
import time
from typing import Any

from edgeai_lab.core import wait_until
from edgeai_lab.load import http_load
from edgeai_lab.relay import RelayProcess
from webhook_receiver.testing import ReceiverProcess

from benchmarks import harness
from benchmarks.harness import fmt, loadavg, pct, rss_mib, table, workdir

SECRET, TOKEN, LOCAL_TOKEN = "bench-hmac-secret", "bench-api-token", "bench-local-api-token"
RATE, STREAM_S, OUTAGE_AT_S, OUTAGE_S = 250.0, 8.0, 2.0, 3.0  # the outage phase: events/s, seconds
BACKLOG, DRAIN_CAP_S, POST_CAP_S = 5000, 120.0, 60.0
DELIVERED, QUEUED = "edgeai_relay_delivered_total", "edgeai_relay_queued"
log = harness.logger("relay")


def when(relay: RelayProcess, name: str, cond: Any) -> float | None:
    """When (monotonic time) cond(metric `name`) first held; None after DRAIN_CAP_S."""
    return wait_until(lambda: cond(relay.metrics()[name]) and time.monotonic(), DRAIN_CAP_S, 0.02)


def drain(relay: RelayProcess) -> float | None:
    return when(relay, QUEUED, lambda queued: queued == 0)


def post(relay: RelayProcess, prefix: str, count: int, threads: int, rate: float | None = None) -> dict[str, Any]:
    """count events POSTed; "acked": the ids the relay acknowledged (202 and the event's id)."""
    ids = [f"{prefix}-{k:07d}" for k in range(count)]
    r = http_load(relay.port, "/v1/events", lambda k: json.dumps({"type": "bench.event", "id": ids[k],
                  "data": {"k": k}}).encode(), count, threads, POST_CAP_S, rate=rate,
                  check=lambda status, raw, k: (status == 202 and json.loads(raw or b"{}").get("id") == ids[k], status),
                  headers={"Authorization": f"Bearer {LOCAL_TOKEN}"})
    return dict(r, acked=[ids[k] for k in r["ok"]])


def measure(relay: RelayProcess, receiver: ReceiverProcess, events: int, threads: int) -> list[str]:
    """The three phases (throughput, a receiver outage, a backlog): the section's table and bullets."""
    idle_rss, nan = rss_mib(relay.proc.pid), float("nan")
    log(f"throughput: {events} events, {threads} threads")
    a = post(relay, "bench-a", events, threads)
    at_post_end, t_post_end = relay.metrics()[DELIVERED], time.monotonic()
    drained = drain(relay)
    backlog = relay.metrics()[DELIVERED] - at_post_end  # delivery alone: what was left when the posting stopped
    rows = [("events acknowledged (202), throughput phase", f"{len(a['acked']):,} of {events:,}"),
            ("accepted/s (each committed and fsynced before the 202)", fmt(len(a["acked"]) / a["wall"], 0)),
            (f"POST /v1/events latency p50 / p99 ({threads} threads)",
             f"{pct(a['lat'], 0.5) * 1e3:.1f} ms / {pct(a['lat'], 0.99) * 1e3:.1f} ms"),
            ("delivered/s end to end (first POST until queue empty)",
             fmt(len(a["acked"]) / (drained - a["start"]) if drained else nan, 0)),
            (f"delivered/s after the posting stopped (delivery alone, backlog {backlog:,.0f} events)",
             fmt(backlog / (drained - t_post_end) if drained and drained > t_post_end else nan, 0))]

    log(f"outage: {RATE * STREAM_S:.0f} events at {RATE:.0f}/s; receiver killed at {OUTAGE_AT_S} s")
    b: dict[str, Any] = {}
    poster = threading.Thread(target=lambda: b.update(post(relay, "bench-b", int(RATE * STREAM_S), threads, RATE)))
    t0 = time.monotonic()
    poster.start()
    time.sleep(max(0.0, t0 + OUTAGE_AT_S - time.monotonic()))
    receiver.stop(signal.SIGKILL)
    time.sleep(OUTAGE_S)
    down = relay.metrics()
    receiver.start()
    restarted = time.monotonic()
    first = when(relay, DELIVERED, lambda d: d > down[DELIVERED])
    poster.join()
    drained_b = drain(relay)
    rows += [("outage phase: events acknowledged / refused by the relay", f"{len(b['acked']):,} / {len(b['failed'])}"),
             (f"queue depth when the receiver came back ({OUTAGE_S:.0f} s down)", f"{down[QUEUED]:,.0f}"),
             ("first delivery after the restart (waiting out the backoff)",
              f"{first - restarted:.1f} s" if first else "none"),
             ("queue empty after the restart in",
              f"{drained_b - restarted:.1f} s" if drained_b else f"not within {DRAIN_CAP_S:.0f} s")]

    log(f"backlog: {BACKLOG} events with the receiver stopped, then the drain")
    receiver.stop()
    c = post(relay, "bench-c", BACKLOG, threads)
    stopped = relay.metrics()
    receiver.start()
    first = when(relay, DELIVERED, lambda d: d > stopped[DELIVERED])
    d1 = relay.metrics()[DELIVERED]
    drained_c = drain(relay)
    rows += [("backlog phase: accepted/s with the receiver stopped (no delivery running)",
              fmt(len(c["acked"]) / c["wall"], 0)),
             (f"backlog phase: delivered/s draining {stopped[QUEUED]:,.0f} queued events (first delivery to empty "
              "queue)", fmt((relay.metrics()[DELIVERED] - d1) / (drained_c - first)
                            if first and drained_c and drained_c > first else nan, 0))]

    m, records = relay.metrics(), receiver.control("/events")["events"]
    received = {r["idempotency_key"] for r in records}
    seqs = [r["event"]["seq"] for r in records if r["idempotency_key"].startswith("bench-")]
    acked = a["acked"] + b["acked"] + c["acked"]
    lost = sorted(set(acked) - received)
    dropped = sum(m.get(f'edgeai_relay_dropped_total{{reason="{r}"}}', 0) for r in ("queue_full", "expired"))
    dup = sum(1 for line in (receiver.state_dir / "deliveries.jsonl").read_text().splitlines()
              if line.strip() and json.loads(line).get("duplicate"))
    rows += [("acknowledged ids missing at the receiver (lost), all phases", f"{len(lost)} of {len(acked):,}"),
             ("duplicate deliveries (answered 200 duplicate; at-least-once)", dup),
             ("bench events received in seq order", "yes" if seqs == sorted(set(seqs)) else "no"),
             ("relay counters: retried / dropped / dead-lettered", f"{m.get('edgeai_relay_retried_total', 0):.0f} / "
              f"{dropped:.0f} / {m.get('edgeai_relay_dead_lettered_total', 0):.0f}"),
             ("relay RSS idle / after the run", f"{idle_rss:.0f} MiB / {rss_mib(relay.proc.pid):.0f} MiB")]
    if lost:
        phases = ", ".join(f"{sum(i.startswith(f'bench-{p}') for i in lost)} from the {name} phase"
                           for p, name in (("a", "throughput"), ("b", "outage"), ("c", "backlog")))
        verdict = (f"**missed**: {len(lost)} of {len(acked):,} acknowledged events never reached the receiver "
                   f"({phases}; first: {', '.join(lost[:5])})")
    elif drained_b is None or drained_c is None:
        verdict = f"**missed**: the queue did not drain within {DRAIN_CAP_S:.0f} s (none lost so far)"
    else:
        verdict = (f"**met**: 0 of {len(acked):,} acknowledged events lost ({len(b['acked']):,} in the outage "
                   f"phase, {down[QUEUED]:,.0f} of them queued while the receiver was down)")
    return [*table(["measurement", "value"], rows), "", f"- Goal zero events lost during a receiver outage: {verdict}.",
            f"- Receiver's view: {receiver.stats().get('accepted', 0)} accepted since its restart, {len(received):,} "
            "unique events in its state (the relay's own `relay.started` included)."]


def main(argv: list[str] | None = None) -> int:
    args = harness.arguments(__doc__, argv, events=(2000, "events in the throughput phase"),
                             threads=(4, "client threads"))
    load_before = loadavg()
    with workdir("relay") as work, ReceiverProcess(work / "receiver", secret=SECRET, token=TOKEN) as receiver:
        with RelayProcess(work / "relay", f"{receiver.base_url}/v1/events", secret=SECRET, token=TOKEN,
                          local_token=LOCAL_TOKEN, device_id="bench-device-01") as relay:
            if drain(relay) is None:  # relay.started delivered: the pipe works
                raise RuntimeError("the relay's first event was not delivered")
            lines = measure(relay, receiver, args.events, args.threads)
    intro = f"""The relay (`images/event-relay`, defaults: SQLite WAL, fsync per accepted event, backoff 0.5 s
        doubling to 60 s) and the lab's webhook receiver (`tests/lab/webhook_receiver`, HMAC secret, bearer token),
        processes on loopback. Throughput: {args.events} events POSTed by {args.threads} keep-alive threads as fast as
        acknowledged; delivered/s from the first POST to an empty queue (delivery runs meanwhile). Outage:
        {RATE * STREAM_S:.0f} events at {RATE:.0f}/s over {STREAM_S:.0f} s, the receiver SIGKILLed at
        {OUTAGE_AT_S:.0f} s and restarted {OUTAGE_S:.0f} s later (same port and state); then every id the relay
        acknowledged is looked up among the receiver's de-duplicated ids. Backlog: {BACKLOG} events POSTed as fast as
        acknowledged to a stopped receiver, which then starts; the queue drains. {os.cpu_count()} cores (1-minute
        load average {load_before} before, {loadavg()} after: other work ran too)."""
    print("\n".join(["## Event relay: throughput and a receiver outage", "", *harness.paragraphs(intro), "", *lines]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
