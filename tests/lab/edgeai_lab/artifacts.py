"""The lab's central artifact store: model files over https with basic auth and Range.

It stands in for the object store or artifact repository a real fleet downloads models from.
Devices reach it as https://artifacts.edgeai.lab:8767/ through the lab gateway; every
request is logged as a JSON line with its client address (the site's loopback source
address, see gateway.py), the Range asked for and the bytes sent, so tests can count what
crossed each site's link.

Run: python -m edgeai_lab.artifacts --root DIR --port P --cert C --key K --credentials FILE
(FILE: JSON {"username": ..., "password": ...})
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import re
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    server_version = "edgeai-lab-artifacts"
    root: Path
    auth: str

    def log_message(self, format: str, *args: object) -> None:
        pass  # one JSON line per request instead, written by _log

    def _log(self, status: int, sent: int) -> None:
        sys.stdout.write(json.dumps({"time": time.time(), "client": self.client_address[0],
                                     "method": self.command, "path": self.path, "status": status,
                                     "range": self.headers.get("Range"), "bytes": sent}) + "\n")
        sys.stdout.flush()

    def _error(self, status: int, msg: str) -> None:
        body = (msg + "\n").encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="edgeai-lab-artifacts"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(status, 0)

    def _file(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), self.auth.encode()):
            self._error(401, "authentication required")
            return
        path = self._file()
        if path is None:
            self._error(404, "no such artifact")
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if wanted:
            m = RANGE.match(wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._error(416, "unsupported Range")
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                self._error(416, "Range not satisfiable")
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        if self.command == "GET":
            try:
                with path.open("rb") as fh:
                    fh.seek(start)
                    while sent < length:
                        data = fh.read(min(65536, length - sent))
                        if not data:
                            break
                        self.wfile.write(data)
                        sent += len(data)
            except OSError:
                pass  # the client (or a cut link) went away: the log says how far it got
        self._log(status, sent)


class TLSServer(ThreadingHTTPServer):
    """The TLS handshake runs in the request's thread, so one slow client blocks no other."""

    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request, client_address) -> None:
        super().finish_request(self.context.wrap_socket(request, server_side=True), client_address)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--credentials", required=True)
    args = p.parse_args(argv)
    creds = json.loads(Path(args.credentials).read_text())
    Handler.root = Path(args.root).resolve()
    Handler.auth = "Basic " + base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    os.makedirs(Handler.root, exist_ok=True)
    TLSServer.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLSServer.context.load_cert_chain(args.cert, args.key)
    TLSServer((args.host, args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
