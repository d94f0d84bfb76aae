"""Helpers for tests that run the rollout playbooks on the lab: run a playbook, write a demo
release, read the run report, read what a device serves, read the events that reached the
event API.

The demo model multiplies its input by its version number, so what a device serves is read
off a real inference on the device: version N maps [1, 2, 3, 4] to [N, 2N, 3N, 4N].
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from edgeai_lab import access
from edgeai_lab.access import devices_by, read_report

REPO = access.REPO
INPUT = [1.0, 2.0, 3.0, 4.0]
# A device's inference server answers ready (one command over SSH).
SERVER_READY = "curl -sf http://127.0.0.1:8000/v2/health/ready"


def run_playbook(lab: dict[str, Any], playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """playbooks/<playbook> on the lab's fleet (its device_registry inventory)."""
    return access.run_playbook(lab["inventory"]["plugin"], f"playbooks/{playbook}", *args)


def remove_model(lab: dict[str, Any], devices, name: str) -> None:
    """Take model `name` off these devices (edgeai.fleet.inference_model, state absent), so a test
    that adds a model of its own leaves the fleet as it found it, and one that starts from no such
    model does not depend on the tests before it."""
    proc = access.run_module(lab["inventory"]["plugin"], ":".join(sorted(devices)), "edgeai.fleet.inference_model",
                             {"name": name, "state": "absent"})
    assert proc.returncode == 0, f"removing {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"


def served_version(lab_ssh, device: str, platform: str, model: str = "detector") -> float:
    """The factor the device's server multiplies by: its served version of the demo model."""
    if platform == "jetson":
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": INPUT}]}
    else:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": INPUT}]}
    result = lab_ssh(device, "curl -sf -H 'Content-Type: application/json' --data-binary @- "
                     f"http://127.0.0.1:8000/v2/models/{model}/infer", input=json.dumps(body))
    data = json.loads(result.stdout)["outputs"][0]["data"]
    factors = {round(y / x, 3) for x, y in zip(INPUT, data, strict=True)}
    assert len(factors) == 1, data
    return factors.pop()


def receiver_events_all(lab: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
    """Events of one type that reached the lab's event API, in the order they arrived."""
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    context.check_hostname = False  # the receiver's certificate names webhook.edgeai.lab; we reach it on 127.0.0.1
    url = f"{lab['webhook']['host_url']}/_control/events?type={event_type}"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        payload = json.load(answer)
    return [record["event"] for record in payload["events"]]


def receiver_events(lab: dict[str, Any], event_type: str, run_id: str) -> list[dict[str, Any]]:
    """Events of one type and one rollout run that reached the lab's event API."""
    return [e for e in receiver_events_all(lab, event_type) if e.get("data", {}).get("run_id") == run_id]


def wait_until_serving(lab_ssh, device: str, timeout: float = 180) -> None:
    """Wait for a restarted device: SSH, its engine and its inference server."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = lab_ssh(device, SERVER_READY, check=False, timeout=20)
            if probe.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        assert time.monotonic() < deadline, f"{device} does not serve {timeout}s after its restart"
        time.sleep(3)


# Fleets bootstrap.yml converged in this pytest session (sorted device names).
_BOOTSTRAPPED: set[tuple[str, ...]] = set()
# What bootstrap.yml leaves running on every device: its inference server answers ready, its event
# relay runs. One SSH command a device.
_STILL_BOOTSTRAPPED = (f"{SERVER_READY} && "
                       "test \"$(docker inspect -f '{{.State.Running}}' edgeai-event-relay)\" = true")


def still_bootstrapped(lab: dict[str, Any], devices: list[str]) -> bool:
    """Every device still serves and relays, as bootstrap.yml left it."""
    for device in devices:
        try:
            probe = access.Ssh.of(lab, device).run(_STILL_BOOTSTRAPPED, check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        if probe.returncode != 0:
            return False
    return True


def bootstrap_default_fleet(lab: dict[str, Any], *, again: bool = False) -> dict[str, str]:
    """The lab's default fleet, bootstrapped (bootstrap.yml): device name -> platform.

    bootstrap.yml runs once a session; a later module gets the fleet as it is when every device
    still serves and relays, and a new bootstrap.yml run otherwise. `again` always runs it (a
    module whose tests need the fleet exactly as bootstrap.yml converges it).
    """
    devices = {name: "jetson" for name in devices_by(lab, platform="jetson")}
    devices.update({name: "coral" for name in devices_by(lab, platform="coral")})
    assert {lab["devices"][d]["site"] for d in devices} >= {"site-a", "site-b"}, devices
    key = tuple(sorted(devices))
    if not again and key in _BOOTSTRAPPED and still_bootstrapped(lab, list(key)):
        return devices
    result = run_playbook(lab, "bootstrap.yml", "-e", f"edgeai_targets={':'.join(key)}")
    assert result.returncode == 0, result.stdout[-4000:]
    _BOOTSTRAPPED.add(key)
    return devices


def deploy(lab: dict[str, Any], devices: dict[str, str] | list[str], release: Path, report_dir: Path,
           *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """deploy_model.yml on `devices` with a 3 s canary soak; returns the run and its report."""
    result = run_playbook(lab, "deploy_model.yml", "-e", f"@{release}", "-e",
                          f"edgeai_targets={':'.join(sorted(devices))}", "-e", f"edgeai_report_dir={report_dir}",
                          "-e", "edgeai_canary_soak_seconds=3", *extra)
    return result, read_report(report_dir)
