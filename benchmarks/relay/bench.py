#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Event relay: events per second accepted and delivered, and events lost in a receiver outage.

The relay (images/event-relay, its defaults: SQLite WAL + fsync per accepted event, backoff 0.5 s
doubling to 60 s) and the lab's webhook receiver (tests/lab/webhook_receiver, HMAC secret
and bearer token in 0600 files) run as subprocesses on free loopback ports.

1. Throughput: --events events POSTed to the relay's /v1/events by --threads client threads
   (one keep-alive http.client connection each) as fast as they are acknowledged;
   accepted/s = acknowledged events over the posting time; delivered/s = events over the
   time from the first POST until the relay's queue is empty (delivery runs meanwhile).
2. Outage: events POSTed at a steady --rate for --outage-stream-s seconds; the receiver is
   killed (SIGKILL) at --outage-at-s and started again (same port, same state directory)
   --outage-s later; the posting goes on throughout. Then the relay's queue is left to drain
   (time cap --drain-cap-s) and every id the relay acknowledged (202) in both phases is looked
   up among the receiver's de-duplicated event ids. Goal: zero lost.

    .venv/bin/python benchmarks/relay/bench.py [--events 2000] [--threads 4]

Prints a Markdown section on stdout (benchmarks/run.py collects it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RELAY_SRC = ROOT / "images" / "event-relay" / "src"
sys.path.insert(0, str(ROOT / "tests" / "lab" / "webhook_receiver"))

from webhook_receiver.testing import ReceiverProcess, free_port, wait_for_port, write_secret

SECRET = "bench-hmac-secret"
TOKEN = "bench-api-token"
LOCAL_TOKEN = "bench-local-api-token"  # the relay's local API token (local_token_file)


def log(msg: str) -> None:
    sys.stderr.write(f"[relay bench] {msg}\n")
    sys.stderr.flush()


def pct(sorted_xs: list[float], p: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(p * len(sorted_xs)))] if sorted_xs else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Relay:
    def __init__(self, work: Path, webhook_url: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {
            "device_id": "bench-device-01",
            "webhook_url": webhook_url,
            "secret_file": str(write_secret(work / "hmac_secret", SECRET)),
            "token_file": str(write_secret(work / "api_token", TOKEN)),
            "local_token_file": str(write_secret(work / "local_token", LOCAL_TOKEN)),
            "listen_host": "127.0.0.1",
            "listen_port": self.port,
            "queue_path": str(work / "queue" / "queue.db"),
            "status_interval_s": 0,  # no inference server here: no status reports
        }
        cfg = work / "relay.json"
        cfg.write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAI_RELAY_")}
        env["PYTHONPATH"] = str(RELAY_SRC)
        self.logfile = work / "relay.log"
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "event_relay", "--config", str(cfg)],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=20, proc=self.proc)

    def metrics(self) -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def wait_drained(self, cap_s: float, poll_s: float = 0.02) -> float | None:
        """Seconds (monotonic clock) when the queue was seen empty, or None after cap_s."""
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            if self.metrics()["edgeai_relay_queued"] == 0:
                return time.monotonic()
            time.sleep(poll_s)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def post_events(
    port: int, prefix: str, count: int, threads: int, cap_s: float, rate: float | None = None
) -> dict[str, Any]:
    """POST count events; with rate, event k is sent no earlier than start + k / rate."""
    lock = threading.Lock()
    nxt = [0]
    acked: list[str] = []
    refused: list[tuple[str, int]] = []
    lat: list[float] = []
    start = time.monotonic()
    deadline = start + cap_s

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= count or time.monotonic() > deadline:
                break
            if rate:
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event_id = f"{prefix}-{k:07d}"
            body = json.dumps({"type": "bench.event", "id": event_id, "data": {"k": k}}).encode()
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/events", body, {"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {LOCAL_TOKEN}"})
                resp = conn.getresponse()
                answer = json.loads(resp.read() or b"{}")
                status = resp.status
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, answer = 0, {}
            elapsed = time.perf_counter() - t
            with lock:
                if status == 202 and answer.get("id") == event_id:
                    acked.append(event_id)
                    lat.append(elapsed)
                else:
                    refused.append((event_id, status))
        conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"acked": acked, "refused": refused, "lat": sorted(lat), "start": start, "end": time.monotonic()}


def receiver_records(receiver: ReceiverProcess) -> list[dict[str, Any]]:
    return list(receiver.control("/events")["events"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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

    load_before = Path("/proc/loadavg").read_text().split()[0]
    work = Path(tempfile.mkdtemp(prefix="edgeai-relay-bench-"))
    receiver = ReceiverProcess(work / "receiver", secret=SECRET, token=TOKEN)
    relay: Relay | None = None
    try:
        receiver.start()
        relay = Relay(work / "relay", f"http://127.0.0.1:{receiver.port}/v1/events")
        if relay.wait_drained(30) is None:  # relay.started delivered: the pipe works
            raise RuntimeError("the relay's first event was not delivered within 30 s")
        idle_rss = rss_mib(relay.proc.pid)

        # -- 1. throughput --------------------------------------------------------------
        log(f"throughput: {args.events} events, {args.threads} threads")
        a = post_events(relay.port, "bench-a", args.events, args.threads, args.post_cap_s)
        delivered_at_post_end = relay.metrics()["edgeai_relay_delivered_total"]
        t_post_end = time.monotonic()
        drained = relay.wait_drained(args.drain_cap_s)
        delivered_at_drain = relay.metrics()["edgeai_relay_delivered_total"]
        # delivery alone: the backlog left when the posting stopped, over the time it took to empty
        solo_rate = (
            (delivered_at_drain - delivered_at_post_end) / (drained - t_post_end)
            if drained and drained > t_post_end
            else float("nan")
        )
        acc_rate = len(a["acked"]) / (a["end"] - a["start"])
        del_rate = len(a["acked"]) / (drained - a["start"]) if drained else float("nan")
        log(f"accepted {len(a['acked'])} at {acc_rate:.0f}/s, delivered at {del_rate:.0f}/s")

        # -- 2. outage ------------------------------------------------------------------
        count = int(args.rate * args.outage_stream_s)
        log(
            f"outage: {count} events at {args.rate:.0f}/s; receiver killed at {args.outage_at_s} s "
            f"for {args.outage_s} s"
        )
        result: dict[str, Any] = {}
        poster = threading.Thread(
            target=lambda: result.update(
                post_events(relay.port, "bench-b", count, args.threads, args.post_cap_s, args.rate)
            )
        )
        t0 = time.monotonic()
        poster.start()
        time.sleep(max(0.0, t0 + args.outage_at_s - time.monotonic()))
        receiver.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(max(0.0, killed_at + args.outage_s - time.monotonic()))
        depth_at_restart = relay.metrics()["edgeai_relay_queued"]
        delivered_before = relay.metrics()["edgeai_relay_delivered_total"]
        receiver.start()
        restarted_at = time.monotonic()
        first_after: float | None = None
        while first_after is None and time.monotonic() < restarted_at + args.drain_cap_s:
            if relay.metrics()["edgeai_relay_delivered_total"] > delivered_before:
                first_after = time.monotonic()
            else:
                time.sleep(0.02)
        poster.join()
        b = result
        drained_b = relay.wait_drained(args.drain_cap_s)

        # -- 3. a large backlog -----------------------------------------------------------
        log(f"backlog: {args.backlog} events with the receiver stopped, then the drain")
        receiver.stop()
        c = post_events(relay.port, "bench-c", args.backlog, args.threads, args.post_cap_s)
        solo_accept = len(c["acked"]) / (c["end"] - c["start"])
        depth_c = relay.metrics()["edgeai_relay_queued"]
        d0 = relay.metrics()["edgeai_relay_delivered_total"]
        receiver.start()
        first_c: tuple[float, float] | None = None
        deadline = time.monotonic() + args.drain_cap_s
        while first_c is None and time.monotonic() < deadline:
            delivered = relay.metrics()["edgeai_relay_delivered_total"]
            if delivered > d0:
                first_c = (time.monotonic(), delivered)
            else:
                time.sleep(0.02)
        drained_c = relay.wait_drained(args.drain_cap_s)
        drain_rate = float("nan")
        if first_c and drained_c and drained_c > first_c[0]:
            drain_rate = (relay.metrics()["edgeai_relay_delivered_total"] - first_c[1]) / (drained_c - first_c[0])
        m = relay.metrics()
        records = receiver_records(receiver)
        stats = receiver.stats()
        dup_deliveries = sum(
            1
            for line in (receiver.state_dir / "deliveries.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line).get("duplicate")
        )
        busy_rss = rss_mib(relay.proc.pid)
        load_after = Path("/proc/loadavg").read_text().split()[0]
    finally:
        if relay is not None:
            relay.stop()
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)

    received_ids = {r["idempotency_key"] for r in records}
    bench_records = [r for r in records if r["idempotency_key"].startswith("bench-")]
    seqs = [r["event"]["seq"] for r in bench_records]
    in_order = all(x < y for x, y in zip(seqs, seqs[1:], strict=False))
    acked_all = a["acked"] + b["acked"] + c["acked"]
    lost = sorted(set(acked_all) - received_ids)
    lost_a = [i for i in lost if i.startswith("bench-a")]
    lost_b = [i for i in lost if i.startswith("bench-b")]
    lost_c = [i for i in lost if i.startswith("bench-c")]
    backlog_s = (drained_b - restarted_at) if drained_b else None
    dropped = m.get('edgeai_relay_dropped_total{reason="queue_full"}', 0) + m.get(
        'edgeai_relay_dropped_total{reason="expired"}', 0
    )

    def ms(x: float) -> str:
        return f"{x * 1e3:.1f} ms"

    out = [
        "## Event relay: throughput and a receiver outage",
        "",
        "The relay (`images/event-relay`, default settings: SQLite WAL, fsync per accepted event, "
        "backoff 0.5 s doubling to 60 s) and the lab's webhook receiver (`tests/lab/webhook_receiver`, "
        "HMAC secret and bearer token) as "
        f"processes on loopback. Throughput: {args.events} events POSTed by {args.threads} keep-alive client "
        f"threads as fast as acknowledged; delivered/s counts from the first POST until the relay's queue is empty "
        f"(delivery runs while events come in). Outage: {count} events at {args.rate:.0f}/s over "
        f"{args.outage_stream_s:.0f} s, the receiver killed (SIGKILL) at {args.outage_at_s:.0f} s and restarted "
        f"{args.outage_s:.0f} s later on the same port and state; afterwards every id the relay acknowledged is "
        f"looked up among the receiver's de-duplicated ids. Backlog: the receiver stopped, {args.backlog} events "
        f"POSTed as fast as acknowledged, the receiver started again and the queue drained. All on the machine's "
        f"{os.cpu_count()} cores (1-minute load average {load_before} before, {load_after} after: other work ran too).",
        "",
        "| measurement | value |",
        "| --- | ---: |",
        f"| events acknowledged (202), throughput phase | {len(a['acked']):,} of {args.events:,} |",
        f"| accepted/s (each committed and fsynced before the 202) | {acc_rate:,.0f} |",
        f"| POST /v1/events latency p50 / p99 ({args.threads} threads) | {ms(pct(a['lat'], 0.5))} / "
        f"{ms(pct(a['lat'], 0.99))} |",
        f"| delivered/s end to end (first POST until queue empty) | {del_rate:,.0f} |",
        f"| delivered/s after the posting stopped (delivery alone, backlog "
        f"{delivered_at_drain - delivered_at_post_end:,.0f} events) | {solo_rate:,.0f} |",
        f"| outage phase: events acknowledged / refused by the relay | {len(b['acked']):,} / {len(b['refused'])} |",
        f"| queue depth when the receiver came back ({args.outage_s:.0f} s down) | {depth_at_restart:,.0f} |",
        f"| first delivery after the restart (waiting out the backoff) | "
        f"{f'{first_after - restarted_at:.1f} s' if first_after else 'none'} |",
        f"| queue empty after the restart in | "
        f"{f'{backlog_s:.1f} s' if backlog_s is not None else f'not within {args.drain_cap_s:.0f} s'} |",
        f"| backlog phase: accepted/s with the receiver stopped (no delivery running) | {solo_accept:,.0f} |",
        f"| backlog phase: delivered/s draining {depth_c:,.0f} queued events (first delivery to empty queue) | "
        f"{drain_rate:,.0f} |",
        f"| acknowledged ids missing at the receiver (lost), all phases | {len(lost)} of {len(acked_all):,} |",
        f"| duplicate deliveries (answered 200 duplicate; at-least-once) | {dup_deliveries} |",
        f"| bench events received in seq order | {'yes' if in_order else 'no'} |",
        f"| relay counters: retried / dropped / dead-lettered | {m.get('edgeai_relay_retried_total', 0):.0f} / "
        f"{dropped:.0f} / {m.get('edgeai_relay_dead_lettered_total', 0):.0f} |",
        f"| relay RSS idle / after the run | {idle_rss:.0f} MiB / {busy_rss:.0f} MiB |",
        "",
    ]
    if lost:
        verdict = (
            f"**missed**: {len(lost)} of {len(acked_all):,} acknowledged events never reached the receiver "
            f"({len(lost_a)} from the throughput phase, {len(lost_b)} from the outage phase, "
            f"{len(lost_c)} from the backlog phase; first: "
            f"{', '.join(lost[:5])})"
        )
    elif drained_b is None or drained_c is None:
        verdict = f"**missed**: the queue did not drain within {args.drain_cap_s:.0f} s ({len(lost)} lost so far)"
    else:
        verdict = (
            f"**met**: 0 of {len(acked_all):,} acknowledged events lost ({len(b['acked']):,} in the outage "
            f"phase, {depth_at_restart:,.0f} of them queued while the receiver was down)"
        )
    out.append(f"- Goal zero events lost during a receiver outage: {verdict}.")
    out.append(
        f"- Receiver's view: {stats.get('accepted', 0)} accepted since its restart, "
        f"{len(received_ids):,} unique events in its state (the relay's own `relay.started` included)."
    )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
