"""Shared fixtures for integration tests on the device lab (owned by the lab engineer).

`lab` (session): makes sure the lab is up (`tests/lab/lab up`, idempotent: it keeps the fleet
that is up, or starts the default one) and returns `tests/lab/lab status --json` as a dict:
devices (ssh host/port per device), registry, apt, webhook, images, inventory paths, ssh_key,
ca_cert. `lab_ssh` runs a command on a device over SSH (127.0.0.1:<port>, root, the lab key).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab"


def lab_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """The running lab (brought up when needed); `lab status --json` as a dict."""
    if os.environ.get("EDGEAI_LAB_NO_UP") != "1":
        proc = lab_cli("up")
        if proc.returncode != 0:
            pytest.fail(f"`tests/lab/lab up` failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    status = lab_cli("status", "--json", timeout=60)
    if status.returncode != 0:
        pytest.fail(f"`tests/lab/lab status --json` failed: {status.stderr}")
    data = json.loads(status.stdout)
    if not data["up"]:
        pytest.fail(f"the lab is not up: {json.dumps(data['devices'], indent=1)}")
    return data


def _ssh_base(lab: dict[str, Any], device: str) -> list[str]:
    d = lab["devices"][device]
    return ["ssh", "-i", lab["ssh_key"], "-p", str(d["ssh"]["port"]), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", f"{d['ssh']['user']}@{d['ssh']['host']}"]


@pytest.fixture(scope="session")
def lab_ssh(lab: dict[str, Any]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """lab_ssh(device, command, input=None, check=True, timeout=120) over real SSH."""

    def run(device: str, command: str, *, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*_ssh_base(lab, device), command], input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{device}: `{command}` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def lab_tunnel(lab: dict[str, Any]) -> Callable[[str, int], Any]:
    """Context manager: forward a free 127.0.0.1 port to <device>'s 127.0.0.1:<remote_port> over SSH."""

    @contextmanager
    def tunnel(device: str, remote_port: int) -> Iterator[int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        proc = subprocess.Popen([*_ssh_base(lab, device)[:-1], "-N", "-o", "ExitOnForwardFailure=yes",
                                 "-L", f"127.0.0.1:{local}:127.0.0.1:{remote_port}", _ssh_base(lab, device)[-1]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"ssh tunnel to {device} failed: {proc.stderr.read().decode()}")
                try:
                    socket.create_connection(("127.0.0.1", local), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            yield local
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    return tunnel


def devices_by(lab: dict[str, Any], **match: str | None) -> list[str]:
    """Names of the lab's fleet devices matching all fields (platform=, hardware=, site=, profile=).
    Devices added by others with `lab device add` (molecule) are left out: tests must not touch them."""
    match.setdefault("origin", "fleet")
    return [n for n, d in sorted(lab["devices"].items())
            if all(d.get(k) == v for k, v in match.items() if v is not None)]


@pytest.fixture(scope="session")
def registry_credentials(lab: dict[str, Any]) -> dict[str, str]:
    return json.loads(Path(lab["registry"]["credentials_file"]).read_text())
