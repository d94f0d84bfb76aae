# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the release builder's tests: the real third-party models (tests/lab/edgeai_lab/real_models.py,
downloaded once with pip and cached in .lab/models/), an https artifact store that takes PUT
(in-process, TLS from a trustme CA, basic auth), and Debian's docker-registry on a loopback port
with TLS and htpasswd auth."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, ca):
    """Debian's docker-registry (distribution 2.8) on loopback, TLS from the test CA, htpasswd."""
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if not binary or not htpasswd:
        pytest.fail("needs Debian's docker-registry and apache2-utils (htpasswd): apt-get install docker-registry "
                    "apache2-utils (scripts/host-setup installs them)")
    work = tmp_path_factory.mktemp("registry")
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    hashed = subprocess.run([htpasswd, "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD], capture_output=True, text=True,
                            check=True)
    (work / "htpasswd").write_text(hashed.stdout)
    port = _free_port()
    (work / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(work / "data")}},
        "http": {"addr": f"127.0.0.1:{port}",
                 "tls": {"certificate": str(work / "cert.pem"), "key": str(work / "key.pem")}},
        "auth": {"htpasswd": {"realm": "edgeai-test", "path": str(work / "htpasswd")}},
    }))
    log = open(work / "registry.log", "w")
    proc = subprocess.Popen([binary, "serve", str(work / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=ca.path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    with context.wrap_socket(sock, server_hostname="127.0.0.1"):
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("docker-registry did not start: "
                                         + (work / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield {"host": f"127.0.0.1:{port}", "ca": ca.path}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
