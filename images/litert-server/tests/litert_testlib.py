"""Helpers for the litert-server tests: test model repositories and the real server in a subprocess.

(A module with its own name, not conftest: test files import from it, and a bare
``conftest`` name collides with other suites' conftest files when pytest runs them together.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litert_server.testmodels import make_triton_model

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    repo: Path
    log: Path
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {**self.headers, **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kw)
        return status, (json.loads(data) if data else None)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return resp.read().decode()

    def logs(self) -> str:
        return self.log.read_text()


def start_server(
    tmp: Path, repo: Path, args: list[str] | None = None, env: dict[str, str] | None = None, token: str = ""
) -> Server:
    port, mport = free_port(), free_port()
    log = tmp / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAI_LITERT_")}
    full_env.update({"PYTHONPATH": str(SRC), **(env or {})})
    cmd = [
        sys.executable,
        "-m",
        "litert_server",
        "--port",
        str(port),
        "--metrics-port",
        str(mport),
        "--model-repository",
        str(repo),
        *(args or []),
    ]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, mport, repo, log, token, {"Authorization": f"Bearer {token}"} if token else {})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(server.url + "/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready in 30 s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


def make_repo(root: Path) -> Path:
    repo = root / "models"
    make_triton_model(repo, "float_model", 1, "float", scale=2.0, bias=1.0)
    make_triton_model(repo, "uint8_model", 1, "uint8", bias=1.0)
    make_triton_model(repo, "edgetpu_model", 1, "edgetpu")
    return repo
