"""Helpers for tests: run the receiver as a real process on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent  # tests/lab/webhook_receiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Send sig to a running process and wait for it; kill it if it outlives the grace period. A process
    started in a session of its own (start_new_session) gets both with every process of its group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        group = False

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum) if group else proc.send_signal(signum)

    send(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def http_json(method: str, url: str, payload: Any = None, headers: dict[str, str] | None = None,
              body: bytes | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = body if body is not None else (None if payload is None else json.dumps(payload).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, (json.loads(raw) if raw else None)


class ReceiverProcess:
    """The webhook receiver in its own process; stop()/start() make it go away and come back."""

    def __init__(self, state_dir: Path, secret: str = "lab-secret", token: str | None = "lab-token",
                 port: int | None = None, replay_window: float = 300.0,
                 tls_cert: str | None = None, tls_key: str | None = None) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.token = token
        self.port = port or free_port()
        self.replay_window = replay_window
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.secret_file = write_secret(state_dir.parent / f"{state_dir.name}.secret", secret)
        self.token_file = write_secret(state_dir.parent / f"{state_dir.name}.token", token) if token else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / f"{state_dir.name}.log"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> ReceiverProcess:
        args = [sys.executable, "-m", "webhook_receiver", "--host", "127.0.0.1", "--port", str(self.port),
                "--state-dir", str(self.state_dir), "--secret-file", str(self.secret_file),
                "--replay-window", str(self.replay_window)]
        if self.token_file:
            args += ["--token-file", str(self.token_file)]
        if self.tls:
            args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        env = dict(os.environ, PYTHONPATH=str(HERE))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=log, stderr=log)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def control(self, path: str = "", payload: Any = None) -> Any:
        method = "GET" if payload is None else "POST"
        # Over https in TLS tests: the receiver's certificate is a throwaway one on loopback.
        context = ssl._create_unverified_context() if self.tls else None
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base_url + "/_control" + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.loads(response.read())

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        suffix = f"?type={event_type}" if event_type else ""
        return [record["event"] for record in self.control("/events" + suffix)["events"]]

    def stats(self) -> dict[str, int]:
        return dict(self.control("/stats"))

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
