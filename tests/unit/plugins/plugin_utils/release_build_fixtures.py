# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the release builder's tests: the real third-party models (tests/lab/edgeai_lab/real_models.py,
downloaded once with pip and cached in .lab/models/), an https artifact store that takes PUT
(in-process, TLS from a trustme CA, basic auth), and Debian's docker-registry on a loopback port
with TLS and htpasswd auth."""

from __future__ import annotations

import base64
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from edgeai_lab import loopback
from edgeai_lab.real_models import fetch

STORE_USER, STORE_PASSWORD = "publisher", "store-secret-pw"
REGISTRY_USER, REGISTRY_PASSWORD = "fleet", "registry-secret-pw"


@pytest.fixture(scope="session")
def real_model():
    """real_model(key) -> the path of a cached real model file."""
    return fetch


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    authority.path = str(path)
    return authority


class StoreHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _authorized(self):
        want = "Basic " + base64.b64encode(f"{STORE_USER}:{STORE_PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") == want:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="store"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_PUT(self):
        self.server.log.append(("PUT", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self._authorized():
            return
        self.server.files[self.path] = body
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _get(self, head):
        self.server.log.append(("HEAD" if head else "GET", self.path))
        if not self._authorized():
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self):
        self._get(False)

    def do_HEAD(self):
        self._get(True)


@pytest.fixture()
def store(ca):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StoreHandler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.files, server.log = {}, []
    server.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, ca):
    """Debian's docker-registry (distribution 2.8) on loopback, TLS from the test CA, htpasswd."""
    try:
        with loopback.registry(tmp_path_factory.mktemp("registry"), ca.issue_cert("127.0.0.1"), ca.path,
                               REGISTRY_USER, REGISTRY_PASSWORD) as served:
            yield {"host": served["host"], "ca": ca.path}
    except RuntimeError as exc:
        pytest.fail(str(exc))
