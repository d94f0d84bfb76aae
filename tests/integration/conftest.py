"""Shared fixtures for integration tests on the device lab (owned by the lab engineer).

`lab` (session): makes sure the lab is up (`tests/lab/lab up`, idempotent: it keeps the fleet
that is up, or starts the default one) and returns `tests/lab/lab status --json` as a dict:
devices (ssh host/port per device), registry, apt, webhook, images, inventory paths, ssh_key,
ca_cert. `lab_ssh` runs a command on a device over SSH (127.0.0.1:<port>, root, the lab key).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edgeai_lab import access
from edgeai_lab.access import lab_cli

ROOT = access.REPO
LAB = access.LAB


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


@pytest.fixture(scope="session")
def lab_ssh(lab: dict[str, Any]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """lab_ssh(device, command, input=None, check=True, timeout=120) over real SSH."""

    def run(device: str, command: str, *, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return access.Ssh.of(lab, device).run(command, input=input, check=check, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def lab_tunnel(lab: dict[str, Any]) -> Callable[[str, int], Any]:
    """Context manager: forward a free 127.0.0.1 port to <device>'s 127.0.0.1:<remote_port> over SSH."""
    return lambda device, remote_port: access.Ssh.of(lab, device).tunnel(remote_port)


@pytest.fixture(scope="session")
def registry_credentials(lab: dict[str, Any]) -> dict[str, str]:
    return json.loads(Path(lab["registry"]["credentials_file"]).read_text())
