# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the HTTP client tests: in-process HTTP(S) servers on loopback that record every
request, and an opener that plays a made-up host name (a machine on the network) with a
loopback server, the way an /etc/hosts entry would, so that no test traffic leaves the machine."""

from __future__ import annotations

import ssl
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import URLError
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.urls import open_url

Request = namedtuple("Request", "method path headers body")
LOOPBACK = ("127.0.0.1", "127.0.0.2", "localhost")


class Recorder(BaseHTTPRequestHandler):
    """Answers from ``server.routes`` (path without query -> a (status, headers, body) tuple,
    or a callable taking the Request and returning one); "*" matches any path."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, dict(self.headers.items()), body)
        self.server.log.append(request)
        route = self.server.routes.get(self.path.split("?")[0], self.server.routes.get("*"))
        if route is None:
            answer = (404, {}, b"missing")
        elif callable(route):
            answer = route(request)
        else:
            answer = route
        status, headers, payload = answer
        payload = payload.encode() if isinstance(payload, str) else payload
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class Servers:
    """Starts servers and stops them all at the end of a test."""

    def __init__(self, ca=None, tmp_path=None):
        self.ca = ca
        self.tmp_path = tmp_path
        self._servers = []
        self.ca_path = None
        if ca is not None:
            self.ca_path = str(tmp_path / "test-ca.pem")
            ca.cert_pem.write_to_path(self.ca_path)

    def start(self, host="127.0.0.1", tls=False, routes=None):
        server = ThreadingHTTPServer((host, 0), Recorder)
        server.daemon_threads = True
        if tls:
            cert = self.ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(context)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.log = []
        server.routes = dict(routes or {})
        server.port = server.server_address[1]
        server.url = "{}://{}:{}".format("https" if tls else "http", host, server.port)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._servers.append(server)
        return server

    def close(self):
        for server in self._servers:
            server.shutdown()
            server.server_close()


def header_values(server, name):
    """Every value of header ``name`` (any case) the server received."""
    name = name.lower()
    return [v for r in server.log for k, v in r.headers.items() if k.lower() == name]


def carried(server, *secrets):
    """Whether any request the server received carried one of ``secrets`` anywhere (path,
    headers, body)."""
    for request in server.log:
        text = request.path + " " + " ".join(f"{k}: {v}" for k, v in request.headers.items()) + " "
        text += request.body.decode("latin-1")
        if any(s in text for s in secrets):
            return True
    return False


class LoopbackNames:
    """An opener for the clients (same signature as open_url) that sends requests for the
    made-up names in ``names`` (name -> loopback address) to loopback, and refuses every
    other host that is not a loopback address."""

    def __init__(self, names):
        self.names = dict(names)
        self.calls = []

    def __call__(self, url, *args, **kwargs):
        parts = urlsplit(url)
        host = parts.hostname
        if host in self.names:
            userinfo, at, hostport = parts.netloc.rpartition("@")
            hostport = hostport.replace(host, self.names[host], 1)
            url = urlunsplit(parts._replace(netloc=userinfo + at + hostport))
        elif host not in LOOPBACK:
            raise URLError(f"test opener: {host} is not on loopback; refusing to send anything there")
        self.calls.append(url)
        return open_url(url, *args, **kwargs)
