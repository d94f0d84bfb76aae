"""The lab gateway process: serves the apt repository over HTTP and relays TCP ports, one
link per site, each of which a test can shape (rate, delay, loss) or cut.

Listens only on loopback and on the site networks' gateways (what devices reach as
apt.edgeai.lab / registry.edgeai.lab / webhook.edgeai.lab / artifacts.edgeai.lab), never on
every interface. A relayed connection leaves from a per-site loopback address (10.213.<n>.1
-> 127.213.<n>.1), so the central services' logs say which site a request came from.

The shaping is done here, in userspace, because the lab cannot use tc netem (no sch_netem
module on this kernel): a byte-rate token bucket per link and direction, a fixed one-way
delay added to every chunk (without limiting throughput: chunks queue), and "loss" as a
200 ms stall of a chunk (what a retransmission costs TCP). A cut link closes its open
connections and every new one.

Run: python -m edgeai_lab.gateway CONFIG.json   (re-reads CONFIG and its links file on change;
writes byte counters to CONFIG's stats file every half second)
"""

from __future__ import annotations

import collections
import functools
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK = 16384
QUEUE_CHUNKS = 64          # bytes in flight per direction: 1 MiB, like a TCP window
LOSS_STALL = 0.2           # seconds a "lost" chunk waits: one retransmission timeout


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(json.dumps({"event": "http", "client": self.client_address[0],
                                     "line": format % args}) + "\n")


class Bucket:
    """Token bucket for one link direction: `rate` bytes per second, bursts of 1/10 s."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rate = 0
        self.tokens = 0.0
        self.stamp = time.monotonic()

    def take(self, n: int) -> None:
        while True:
            with self.lock:
                if self.rate <= 0:
                    return
                now = time.monotonic()
                burst = max(self.rate / 10, CHUNK)
                self.tokens = min(burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= n or self.tokens >= burst:
                    self.tokens -= n
                    return
                wait = (min(n, burst) - self.tokens) / self.rate
            time.sleep(min(wait, 0.5))


class Link:
    """The shaping of one site's link (key: the site's gateway IP) or of one device's."""

    def __init__(self) -> None:
        self.rate = 0
        self.delay = 0.0
        self.loss = 0.0
        self.cut = False
        self.buckets = {"down": Bucket(), "up": Bucket()}

    def set(self, rule: dict[str, Any]) -> None:
        self.rate = int(rule.get("rate", 0))
        self.delay = float(rule.get("delay_ms", 0)) / 1000
        self.loss = float(rule.get("loss", 0))
        self.cut = bool(rule.get("cut", False))
        for bucket in self.buckets.values():
            with bucket.lock:
                bucket.rate = self.rate


class Gateway:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: dict[str, Link] = collections.defaultdict(Link)
        self.conns: set[tuple[str, str, socket.socket, socket.socket]] = set()
        # bytes per (site gateway, service) and per (device address, service)
        self.sites: dict[str, dict[str, dict[str, int]]] = {}
        self.clients: dict[str, dict[str, dict[str, int]]] = {}

    def links_of(self, site: str, client: str) -> list[Link]:
        # created when missing, so a rule set later (a cut mid-download) reaches open connections
        with self.lock:
            return [self.links[site], self.links[client]]

    def count(self, site: str, client: str, service: str, key: str, n: int) -> None:
        with self.lock:
            for table, k in ((self.sites, site), (self.clients, client)):
                row = table.setdefault(k, {}).setdefault(service, {"down": 0, "up": 0, "connections": 0})
                row[key] += n

    def set_links(self, rules: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            for key in list(self.links):
                if key not in rules:
                    self.links[key].set({})
            for key, rule in rules.items():
                self.links[key].set(rule)
            doomed = [c for c in self.conns if any(self.links[k].cut for k in c[:2] if k in self.links)]
        for conn in doomed:
            _close(*conn[2:])

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"time": time.time(), "sites": json.loads(json.dumps(self.sites)),
                    "clients": json.loads(json.dumps(self.clients))}


GW = Gateway()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _pipe(src: socket.socket, dst: socket.socket, links: list[Link], direction: str,
          counter: functools.partial) -> None:
    """Forward src -> dst through the links' delay, loss and rate; chunks queue meanwhile."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()
    done = threading.Event()

    def reader() -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                with ready:
                    while len(queue) >= QUEUE_CHUNKS and not done.is_set():
                        ready.wait(0.5)
                    queue.append((time.monotonic(), data))
                    ready.notify_all()
        except OSError:
            pass
        finally:
            with ready:
                queue.append((0.0, b""))
                ready.notify_all()

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            with ready:
                while not queue:
                    ready.wait(0.5)
                arrived, data = queue.popleft()
                ready.notify_all()
            if not data:
                break
            if any(link.cut for link in links):
                break
            delay = max((link.delay for link in links), default=0.0)
            if any(link.loss and random.random() < link.loss for link in links):
                delay += LOSS_STALL
            wait = arrived + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            for link in links:
                link.buckets[direction].take(len(data))
            dst.sendall(data)
            counter(direction, len(data))
    except OSError:
        pass
    finally:
        done.set()
        _close(src, dst)


def _source_address(listen_ip: str) -> str:
    """10.213.<n>.1 -> 127.213.<n>.1: Linux routes all of 127/8 to loopback, so no setup."""
    parts = listen_ip.split(".")
    return "127." + ".".join(parts[1:]) if len(parts) == 4 and listen_ip != "127.0.0.1" else "127.0.0.1"


def _relay(srv: socket.socket, site: str, target: tuple[str, int], service: str) -> None:
    source = _source_address(site)
    while True:
        client, addr = srv.accept()
        links = GW.links_of(site, addr[0])
        if any(link.cut for link in links):
            _close(client)
            client.close()
            continue
        try:
            upstream = socket.create_connection(target, timeout=10, source_address=(source, 0))
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        conn = (site, addr[0], client, upstream)
        with GW.lock:
            GW.conns.add(conn)
        GW.count(site, addr[0], service, "connections", 1)
        counter = functools.partial(GW.count, site, addr[0], service)
        threads = [threading.Thread(target=_pipe, args=(client, upstream, links, "up", counter), daemon=True),
                   threading.Thread(target=_pipe, args=(upstream, client, links, "down", counter), daemon=True)]
        for t in threads:
            t.start()
        threading.Thread(target=_forget, args=(conn, threads), daemon=True).start()


def _forget(conn: tuple, threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join()
    with GW.lock:
        GW.conns.discard(conn)
    for s in conn[2:]:
        s.close()


def _listen(addr: tuple[str, int]) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(addr)
    srv.listen(128)
    return srv


def _apply(cfg: dict, active: set) -> None:
    """Start listeners in cfg that are not running yet (new sites); never stops one."""
    handler = functools.partial(_Handler, directory=cfg["apt_dir"])
    for addr in cfg["apt_listen"]:
        key = ("http", addr, cfg["apt_port"])
        if key in active:
            continue
        try:
            httpd = ThreadingHTTPServer((addr, cfg["apt_port"]), handler)
        except OSError as exc:
            sys.stderr.write(json.dumps({"event": "listen_failed", "listen": list(key), "error": str(exc)}) + "\n")
            continue
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        active.add(key)
    for relay in cfg.get("relays", []):
        key = ("relay", relay["listen"][0], relay["listen"][1])
        if key in active:
            continue
        try:
            srv = _listen((relay["listen"][0], relay["listen"][1]))
        except OSError as exc:
            sys.stderr.write(json.dumps({"event": "listen_failed", "listen": list(key), "error": str(exc)}) + "\n")
            continue
        threading.Thread(target=_relay, daemon=True,
                         args=(srv, relay["listen"][0], (relay["target"][0], relay["target"][1]),
                               relay.get("service", str(relay["listen"][1])))).start()
        active.add(key)
    sys.stderr.write(json.dumps({"event": "listening", "active": sorted(map(list, active))}) + "\n")
    sys.stderr.flush()


def _mtime(path: str | None) -> float:
    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    active: set = set()
    seen = (0.0, 0.0)
    cfg: dict[str, Any] = {}
    while True:
        try:
            now = (_mtime(argv[0]), _mtime(cfg.get("links_file")))
            if now != seen:
                with open(argv[0]) as fh:
                    cfg = json.load(fh)
                _apply(cfg, active)
                links_file = cfg.get("links_file")
                rules = {}
                if links_file and os.path.exists(links_file):
                    with open(links_file) as fh:
                        rules = json.load(fh)
                GW.set_links(rules)
                sys.stderr.write(json.dumps({"event": "links", "rules": rules}) + "\n")
                seen = (_mtime(argv[0]), _mtime(cfg.get("links_file")))
            if cfg.get("stats_file"):
                tmp = cfg["stats_file"] + ".tmp"
                with open(tmp, "w") as fh:
                    json.dump(GW.stats(), fh)
                os.replace(tmp, cfg["stats_file"])
        except (OSError, ValueError) as exc:
            sys.stderr.write(json.dumps({"event": "config_error", "error": str(exc)}) + "\n")
        sys.stderr.flush()
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
