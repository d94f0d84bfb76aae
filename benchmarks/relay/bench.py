#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Event relay: events per second accepted and delivered, and events lost in a receiver outage.

The relay (images/event-relay) and the lab's webhook receiver run as processes on loopback; three
phases (throughput, a receiver outage, a backlog), each described in the section this prints.

    .venv/bin/python -m benchmarks.relay.bench [--events 2000] [--threads 4]
"""

from __future__ import annotations

import http.client
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
from benchmarks.harness import Log, http_load, loadavg, parser, pct, rss_mib, table, workdir

SECRET, TOKEN = "bench-hmac-secret", "bench-api-token"
LOCAL_TOKEN = "bench-local-api-token"  # the relay's local API token (local_token_file)
log = Log("relay")


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
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}

    def wait(self, until: Any, cap_s: float) -> float | None:
        """Monotonic time when until(metrics) first held, or None after cap_s."""
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            if until(self.metrics()):
                return time.monotonic()
            time.sleep(0.02)
        return None

    def wait_drained(self, cap_s: float) -> float | None:
        return self.wait(lambda m: m["edgeai_relay_queued"] == 0, cap_s)

    def wait_delivery(self, after: float, cap_s: float) -> float | None:
        """When the relay first delivered more than `after` events in all."""
        return self.wait(lambda m: m["edgeai_relay_delivered_total"] > after, cap_s)

    def delivered(self) -> float:
        return self.metrics()["edgeai_relay_delivered_total"]


def post(relay: Relay, prefix: str, count: int, args: Any, rate: float | None = None) -> dict[str, Any]:
    def body(k: int) -> bytes:
        return json.dumps({"type": "bench.event", "id": f"{prefix}-{k:07d}", "data": {"k": k}}).encode()

    def check(status: int, raw: bytes, k: int) -> tuple[bool, int]:
        return status == 202 and json.loads(raw or b"{}").get("id") == f"{prefix}-{k:07d}", status

    r = http_load(relay.port, "/v1/events", body, count, args.threads, args.post_cap_s, rate=rate, check=check,
                  headers={"Authorization": f"Bearer {LOCAL_TOKEN}"})
    r["acked"] = [f"{prefix}-{k:07d}" for k in r["ok"]]
    return r


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--events", type=int, default=2000, help="events in the throughput phase")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--rate", type=float, default=250.0, help="events/s posted in the outage phase")
    ap.add_argument("--outage-stream-s", type=float, default=8.0, help="length of the outage phase's stream")
    ap.add_argument("--outage-at-s", type=float, default=2.0, help="when the receiver is killed")
    ap.add_argument("--outage-s", type=float, default=3.0, help="how long the receiver stays down")
    ap.add_argument("--backlog", type=int, default=5000, help="events queued while the receiver is stopped")
    ap.add_argument("--drain-cap-s", type=float, default=120.0)
    ap.add_argument("--post-cap-s", type=float, default=60.0)
    args = ap.parse_args(argv)
    load_before = loadavg()
    with workdir("relay") as work:
        receiver = ReceiverProcess(work / "receiver", secret=SECRET, token=TOKEN)
        relay: Relay | None = None
        try:
            receiver.start()
            relay = Relay(work / "relay", f"http://127.0.0.1:{receiver.port}/v1/events")
            if relay.wait_drained(30) is None:  # relay.started delivered: the pipe works
                raise RuntimeError("the relay's first event was not delivered within 30 s")
            idle_rss = rss_mib(relay.proc.pid)
            log(f"throughput: {args.events} events, {args.threads} threads")
            a = post(relay, "bench-a", args.events, args)
            at_post_end, t_post_end = relay.delivered(), time.monotonic()
            drained = relay.wait_drained(args.drain_cap_s)
            backlog_a = relay.delivered() - at_post_end
            # delivery alone: the backlog left when the posting stopped, over the time it took to empty
            solo_rate = backlog_a / (drained - t_post_end) if drained and drained > t_post_end else float("nan")
            acc_rate = len(a["acked"]) / a["wall"]
            del_rate = len(a["acked"]) / (drained - a["start"]) if drained else float("nan")

            count = int(args.rate * args.outage_stream_s)
            log(f"outage: {count} events at {args.rate:.0f}/s; receiver killed at {args.outage_at_s} s")
            b: dict[str, Any] = {}
            poster = threading.Thread(target=lambda: b.update(post(relay, "bench-b", count, args, args.rate)))
            t0 = time.monotonic()
            poster.start()
            time.sleep(max(0.0, t0 + args.outage_at_s - time.monotonic()))
            receiver.stop(signal.SIGKILL)
            time.sleep(args.outage_s)
            depth_at_restart, delivered_before = relay.metrics()["edgeai_relay_queued"], relay.delivered()
            receiver.start()
            restarted_at = time.monotonic()
            first_after = relay.wait_delivery(delivered_before, args.drain_cap_s)
            poster.join()
            drained_b = relay.wait_drained(args.drain_cap_s)

            log(f"backlog: {args.backlog} events with the receiver stopped, then the drain")
            receiver.stop()
            c = post(relay, "bench-c", args.backlog, args)
            depth_c, d0 = relay.metrics()["edgeai_relay_queued"], relay.delivered()
            receiver.start()
            first_c = relay.wait_delivery(d0, args.drain_cap_s)
            d1 = relay.delivered()
            drained_c = relay.wait_drained(args.drain_cap_s)
            drain_rate = (relay.delivered() - d1) / (drained_c - first_c) if first_c and drained_c and \
                drained_c > first_c else float("nan")
            m, records, stats = relay.metrics(), receiver.control("/events")["events"], receiver.stats()
            dup = sum(1 for line in (receiver.state_dir / "deliveries.jsonl").read_text().splitlines()
                      if line.strip() and json.loads(line).get("duplicate"))
            busy_rss = rss_mib(relay.proc.pid)
        finally:
            if relay is not None:
                harness.stop(relay.proc, grace=20)
            receiver.stop()
    print(report(args, a, b, c, locals()))
    return 0


def report(args: Any, a: dict, b: dict, c: dict, v: dict[str, Any]) -> str:
    records, m = v["records"], v["m"]
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
        f"empty (delivery runs while events come in). Outage: {v['count']} events at {args.rate:.0f}/s over "
        f"{args.outage_stream_s:.0f} s, the receiver killed (SIGKILL) at {args.outage_at_s:.0f} s and restarted "
        f"{args.outage_s:.0f} s later on the same port and state; afterwards every id the relay acknowledged is "
        f"looked up among the receiver's de-duplicated ids. Backlog: the receiver stopped, {args.backlog} events "
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
            (f"queue depth when the receiver came back ({args.outage_s:.0f} s down)", f"{v['depth_at_restart']:,.0f}"),
            ("first delivery after the restart (waiting out the backoff)",
             f"{first_after - v['restarted_at']:.1f} s" if first_after else "none"),
            ("queue empty after the restart in",
             f"{backlog_s:.1f} s" if backlog_s is not None else f"not within {args.drain_cap_s:.0f} s"),
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
        verdict = f"**missed**: the queue did not drain within {args.drain_cap_s:.0f} s ({len(lost)} lost so far)"
    else:
        verdict = (f"**met**: 0 of {len(acked):,} acknowledged events lost ({len(b['acked']):,} in the outage "
                   f"phase, {v['depth_at_restart']:,.0f} of them queued while the receiver was down)")
    out += [f"- Goal zero events lost during a receiver outage: {verdict}.",
            f"- Receiver's view: {v['stats'].get('accepted', 0)} accepted since its restart, {len(received):,} "
            "unique events in its state (the relay's own `relay.started` included)."]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
