"""The lab gateway process: serves the apt repository over HTTP and relays TCP ports.

Listens only on loopback and on the Docker bridge gateway (what devices reach as
apt.edgeai.lab / registry.edgeai.lab / webhook.edgeai.lab through `--add-host ...:host-gateway`),
never on every interface. Run: python -m edgeai_lab.gateway CONFIG.json
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write(json.dumps({"event": "http", "client": self.client_address[0],
                                     "line": format % args}) + "\n")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _listen(addr: tuple[str, int]) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(addr)
    srv.listen(128)
    return srv


def _relay(srv: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = srv.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


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
        threading.Thread(target=_relay, daemon=True, args=(srv, (relay["target"][0], relay["target"][1]))).start()
        active.add(key)
    sys.stderr.write(json.dumps({"event": "listening", "active": sorted(map(list, active))}) + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    active: set = set()
    mtime = 0.0
    while True:
        try:
            current = os.stat(argv[0]).st_mtime
            if current != mtime:
                mtime = current
                with open(argv[0]) as fh:
                    _apply(json.load(fh), active)
        except (OSError, ValueError) as exc:
            sys.stderr.write(json.dumps({"event": "config_error", "error": str(exc)}) + "\n")
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
