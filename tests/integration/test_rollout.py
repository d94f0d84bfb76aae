# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""deploy_model.yml end to end on the lab, over SSH: Jetson (Triton) and Coral (LiteRT)
devices in two sites, bootstrapped by bootstrap.yml.

The demo model multiplies its input by its version number, so what a device serves is read
off a real inference on the device: version N maps [1, 2, 3, 4] to [N, 2N, 3N, 4N].
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import devices_by

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INPUT = [1.0, 2.0, 3.0, 4.0]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{env['PATH']}"})
    return env


def _playbook(lab: dict[str, Any], playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", lab["inventory"]["plugin"], f"playbooks/{playbook}", *args],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1200, check=False,
    )


def _release(version: int, failing_groups: tuple[str, ...] = ()) -> Path:
    out = subprocess.run([str(BIN / "python"), "scripts/demo-release", "--failing", str(version)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    release_file = Path(out[0])
    if not failing_groups:
        return release_file
    failing_path, failing_sha = out[1].split()
    release = yaml.safe_load(release_file.read_text())
    for group in failing_groups:
        release["edgeai_release"]["artifacts"][group] = {"src": failing_path, "sha256": failing_sha}
    planted = release_file.with_name(f"release-{version}-failing.yml")
    planted.write_text(yaml.safe_dump(release))
    return planted


def _report(tmp_path: Path) -> dict[str, Any]:
    reports = sorted(tmp_path.glob("*.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


def _served(lab_ssh, device: str, platform: str) -> float:
    """The factor the device's server multiplies by: its served version of the demo model."""
    if platform == "jetson":
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": INPUT}]}
    else:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": INPUT}]}
    result = lab_ssh(device, "curl -sf -H 'Content-Type: application/json' --data-binary @- "
                     "http://127.0.0.1:8000/v2/models/detector/infer", input=json.dumps(body))
    data = json.loads(result.stdout)["outputs"][0]["data"]
    factors = {round(y / x, 3) for x, y in zip(INPUT, data, strict=True)}
    assert len(factors) == 1, data
    return factors.pop()


def _receiver_events(lab: dict[str, Any], event_type: str, run_id: str) -> list[dict[str, Any]]:
    """Events of one type and one run that reached the lab's event API."""
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    context.check_hostname = False  # the receiver's certificate names webhook.edgeai.lab; we reach it on 127.0.0.1
    url = f"{lab['webhook']['host_url']}/_control/events?type={event_type}"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        payload = json.load(answer)
    events = [record["event"] for record in payload["events"]]
    return [e for e in events if e.get("data", {}).get("run_id") == run_id]


def _wait_until_serving(lab_ssh, device: str, timeout: float = 180) -> None:
    """Wait for a restarted device: SSH, its engine and its inference server."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = lab_ssh(device, "curl -sf http://127.0.0.1:8000/v2/health/ready", check=False, timeout=20)
            if probe.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        assert time.monotonic() < deadline, f"{device} does not serve {timeout}s after its restart"
        time.sleep(3)


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, str]:
    """The lab's default fleet, bootstrapped: device name -> platform."""
    devices = {name: "jetson" for name in devices_by(lab, platform="jetson")}
    devices.update({name: "coral" for name in devices_by(lab, platform="coral")})
    assert {lab["devices"][d]["site"] for d in devices} >= {"site-a", "site-b"}, devices
    result = _playbook(lab, "bootstrap.yml", "-e", f"edgeai_targets={':'.join(sorted(devices))}")
    assert result.returncode == 0, result.stdout[-4000:]
    return devices


def _deploy(lab, fleet, release: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = _playbook(lab, "deploy_model.yml", "-e", f"@{release}", "-e", f"edgeai_targets={':'.join(sorted(fleet))}",
                       "-e", f"edgeai_report_dir={tmp_path}", "-e", "edgeai_canary_soak_seconds=3", *extra)
    return result, _report(tmp_path)


def test_rollout_updates_every_device_and_the_events_agree(lab, fleet, lab_ssh, tmp_path):
    first = _deploy(lab, fleet, _release(11), tmp_path / "v11")[0]
    assert first.returncode == 0, first.stdout[-4000:]

    result, report = _deploy(lab, fleet, _release(12), tmp_path / "v12")
    assert result.returncode == 0, result.stdout[-4000:]
    rows = {row["device"]: row for row in report["devices"]}
    assert set(rows) == set(fleet)
    assert {row["result"] for row in rows.values()} == {"updated"}
    assert all(row["before"] == 11 and row["after"] == 12 for row in rows.values()), rows
    assert not report["aborted"]
    # the canary wave comes first and no wave holds two devices of one site
    for wave in report["waves"][1:]:
        sites = [lab["devices"][d]["site"] for d in wave]
        assert len(sites) == len(set(sites)), report["waves"]
    # what the report says is what the devices serve
    for device, platform in fleet.items():
        assert _served(lab_ssh, device, platform) == 12.0, device
    # and every device told the event API through its relay
    succeeded = _receiver_events(lab, "deploy_succeeded", report["run_id"])
    assert sorted(e["device_id"] for e in succeeded) == sorted(fleet)
    assert all(e["data"]["version"] == 12 for e in succeeded)

    # a re-run on the converged fleet changes nothing
    again, report = _deploy(lab, fleet, _release(12), tmp_path / "again")
    assert again.returncode == 0, again.stdout[-4000:]
    assert {row["result"] for row in report["devices"]} == {"unchanged"}
    recap = again.stdout[again.stdout.index("PLAY RECAP"):]
    assert all("changed=0" in line for line in recap.splitlines()[1:] if line.strip())


def test_check_mode_reports_what_would_change_and_changes_nothing(lab, fleet, lab_ssh, tmp_path):
    before = {device: _served(lab_ssh, device, platform) for device, platform in fleet.items()}
    result, report = _deploy(lab, fleet, _release(21), tmp_path, "--check", "--diff")
    assert result.returncode == 0, result.stdout[-4000:]
    assert report["check_mode"] is True
    assert {row["result"] for row in report["devices"]} == {"would_update"}
    assert {device: _served(lab_ssh, device, platform) for device, platform in fleet.items()} == before


def test_a_fault_at_one_site_rolls_back_and_the_budget_stops_the_rollout(lab, fleet, lab_ssh, tmp_path):
    base = _deploy(lab, fleet, _release(31), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    # version 32 cannot load on site-b's devices; site-a holds the canary and goes first
    release = _release(32, failing_groups=("site_site_b",))
    result, report = _deploy(lab, fleet, release, tmp_path / "fault", "-e", "edgeai_failure_budget_percent=20")
    assert result.returncode != 0, "an aborted rollout must fail the run"
    assert report["aborted"] is True
    rows = {row["device"]: row for row in report["devices"]}
    site_b = [d for d in fleet if lab["devices"][d]["site"] == "site-b"]
    reached = [d for d in site_b if rows[d]["result"] == "rolled_back"]
    untouched = [d for d in site_b if rows[d]["result"] == "not_reached"]
    assert reached and untouched, rows
    # devices updated before the abort were returned to 31 (edgeai_on_abort defaults to rollback)
    assert all(rows[d]["result"] == "rolled_back" for d in fleet if lab["devices"][d]["site"] == "site-a"), rows
    for device, platform in fleet.items():
        assert _served(lab_ssh, device, platform) == 31.0, device
    rolled_back = {e["device_id"] for e in _receiver_events(lab, "rolled_back", report["run_id"])}
    assert sorted(rolled_back) == sorted(d for d in fleet if rows[d]["result"] == "rolled_back")


def test_an_unreachable_device_is_deferred_and_a_later_run_converges_it(lab, fleet, lab_ssh, tmp_path):
    base = _deploy(lab, fleet, _release(41), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    offline = sorted(d for d in fleet if lab["devices"][d]["site"] == "site-b")[0]
    container = lab["devices"][offline]["container"]
    subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=120)
    try:
        result, report = _deploy(lab, fleet, _release(42), tmp_path / "offline")
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=120)
        _wait_until_serving(lab_ssh, offline)
    assert result.returncode != 0, "a device left behind must fail the run"
    rows = {row["device"]: row for row in report["devices"]}
    assert rows[offline]["result"] == "deferred"
    assert all(rows[d]["result"] == "updated" for d in fleet if d != offline), rows

    converge, report = _deploy(lab, fleet, _release(42), tmp_path / "converge")
    assert converge.returncode == 0, converge.stdout[-4000:]
    rows = {row["device"]: row for row in report["devices"]}
    assert rows[offline]["result"] == "updated"
    assert all(rows[d]["result"] == "unchanged" for d in fleet if d != offline), rows
    assert _served(lab_ssh, offline, fleet[offline]) == 42.0
