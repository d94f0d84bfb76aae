"""Helpers for tests that start things of their own on this machine's loopback, shared by the unit
and the integration suites: a free port, an environment for Ansible's commands that no setting of
the caller's leaks into, the collection's tarball, and Debian's docker-registry with TLS and
htpasswd auth."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from webhook_receiver.testing import free_port  # one of it: re-exported for the suites that import it here

from edgeai_lab.access import BIN, REPO


def ansible_env(*prefixes: str, **extra: str) -> dict[str, str]:
    """This environment without ANSIBLE_* (and the other given prefixes): the repository's
    ansible.cfg and the venv first on PATH, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", *prefixes))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


def build_collection(out: Path) -> Path:
    """`ansible-galaxy collection build` of this checkout into `out`; the tarball's path."""
    subprocess.run([BIN / "ansible-galaxy", "collection", "build", "--output-path", str(out), str(REPO)],
                   check=True, capture_output=True, text=True, cwd=REPO, env=ansible_env())
    (tarball,) = out.glob("edgeai-fleet-*.tar.gz")
    return tarball


@contextlib.contextmanager
def registry(work: Path, cert: Any, ca_path: str, user: str, password: str) -> Iterator[dict[str, Any]]:
    """Debian's docker-registry (distribution 2.8) on a free loopback port, serving TLS with `cert`
    (a trustme leaf certificate for 127.0.0.1) and htpasswd auth for `user`; stopped on exit.
    Yields host ("127.0.0.1:PORT"), port and the work directory."""
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if not binary or not htpasswd:
        raise RuntimeError("needs Debian's docker-registry and apache2-utils (htpasswd): apt-get install "
                           "docker-registry apache2-utils (scripts/host-setup installs them)")
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    hashed = subprocess.run([htpasswd, "-Bbn", user, password], capture_output=True, text=True, check=True)
    (work / "htpasswd").write_text(hashed.stdout)
    port = free_port()
    (work / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(work / "data")}},
        "http": {"addr": f"127.0.0.1:{port}",
                 "tls": {"certificate": str(work / "cert.pem"), "key": str(work / "key.pem")}},
        "auth": {"htpasswd": {"realm": "edgeai-test", "path": str(work / "htpasswd")}},
    }))
    context = ssl.create_default_context(cafile=ca_path)
    with open(work / "registry.log", "w") as log:
        proc = subprocess.Popen([binary, "serve", str(work / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
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
            yield {"host": f"127.0.0.1:{port}", "port": port, "work": work}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
