# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the testinfra verifiers of every scenario under molecule/ (pytest collects it from here)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[1]))
REGISTRY = "registry.edgeai.lab:5443"
# smallest first: the probe only needs /bin/sh
PROBE_PREFERENCE = ("event-relay", "litert-server", "tritonserver")


@pytest.fixture(scope="session")
def probe_image() -> str:
    """An image the lab pushed to its registry (TLS + auth), as a device names it."""
    out = subprocess.run([str(REPO / "tests/lab/lab"), "status", "--json"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    images = json.loads(out).get("images") or {}
    for name in PROBE_PREFERENCE:
        if name in images:
            return images[name]["ref"]
    raise AssertionError(f"the lab registry holds none of {PROBE_PREFERENCE}: {images}")


@pytest.fixture
def run_role(host):
    """Run a role on this scenario host (ad hoc, check mode); returns what ansible printed."""

    def _run(role: str, extra_vars: dict) -> subprocess.CompletedProcess:
        inventory = os.environ["MOLECULE_INVENTORY_FILE"]
        return subprocess.run(
            [str(REPO / ".venv/bin/ansible"), host.backend.host, "-i", inventory, "--check",
             "-m", "ansible.builtin.include_role", "-a", f"name={role}", "-e", json.dumps(extra_vars)],
            capture_output=True, text=True, timeout=300, cwd=REPO, check=False)

    return _run


@pytest.fixture
def platform(host) -> str:
    """jetson or coral, from the scenario's platform groups."""
    return "jetson" if "platform_jetson" in host.ansible.get_variables()["group_names"] else "coral"


@pytest.fixture
def demo_model_answer(host, platform):
    """The demo model's answer to [1, 2, 3, 4] on this device: (served version, outputs)."""

    def _infer() -> tuple[str, list[float]]:
        if platform == "jetson":
            body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
        else:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        cmd = host.run("curl -sf -H 'Content-Type: application/json' -d %s "
                       "http://127.0.0.1:8000/v2/models/detector/infer", json.dumps(body))
        assert cmd.rc == 0, cmd.stderr
        answer = json.loads(cmd.stdout)
        return answer["model_version"], answer["outputs"][0]["data"]

    return _infer
