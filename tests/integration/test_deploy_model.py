# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""deploy_model.yml end to end on the lab, over SSH: Jetson (Triton) and Coral (LiteRT)
devices in two sites, bootstrapped by bootstrap.yml.

The demo model multiplies its input by its version number, so what a device serves is read
off a real inference on the device: version N maps [1, 2, 3, 4] to [N, 2N, 3N, 4N].
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from edgeai_lab.access import demo_release
from rollout_helpers import bootstrap_default_fleet, deploy, receiver_events, served_version, wait_until_serving

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, str]:
    """The lab's default fleet, bootstrapped: device name -> platform."""
    return bootstrap_default_fleet(lab)


def test_rollout_updates_every_device_and_the_events_agree(lab, fleet, lab_ssh, tmp_path):
    first = deploy(lab, fleet, demo_release(11), tmp_path / "v11")[0]
    assert first.returncode == 0, first.stdout[-4000:]

    result, report = deploy(lab, fleet, demo_release(12), tmp_path / "v12")
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
        assert served_version(lab_ssh, device, platform) == 12.0, device
    # and every device told the event API through its relay
    succeeded = receiver_events(lab, "deploy_succeeded", report["run_id"])
    assert sorted(e["device_id"] for e in succeeded) == sorted(fleet)
    assert all(e["data"]["version"] == 12 for e in succeeded)

    # a re-run on the converged fleet changes nothing
    again, report = deploy(lab, fleet, demo_release(12), tmp_path / "again")
    assert again.returncode == 0, again.stdout[-4000:]
    assert {row["result"] for row in report["devices"]} == {"unchanged"}
    recap = again.stdout[again.stdout.index("PLAY RECAP"):]
    assert all("changed=0" in line for line in recap.splitlines()[1:] if line.strip())


def test_check_mode_reports_what_would_change_and_changes_nothing(lab, fleet, lab_ssh, tmp_path):
    before = {device: served_version(lab_ssh, device, platform) for device, platform in fleet.items()}
    result, report = deploy(lab, fleet, demo_release(21), tmp_path, "--check", "--diff")
    assert result.returncode == 0, result.stdout[-4000:]
    assert report["check_mode"] is True
    assert {row["result"] for row in report["devices"]} == {"would_update"}
    assert {device: served_version(lab_ssh, device, platform) for device, platform in fleet.items()} == before


def test_a_fault_at_one_site_rolls_back_and_the_budget_stops_the_rollout(lab, fleet, lab_ssh, tmp_path):
    base = deploy(lab, fleet, demo_release(31), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    # version 32 cannot load on site-b's devices; site-a holds the canary and goes first
    release = demo_release(32, failing_groups=("site_site_b",))
    result, report = deploy(lab, fleet, release, tmp_path / "fault", "-e", "edgeai_failure_budget_percent=20")
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
        assert served_version(lab_ssh, device, platform) == 31.0, device
    rolled_back = {e["device_id"] for e in receiver_events(lab, "rolled_back", report["run_id"])}
    assert sorted(rolled_back) == sorted(d for d in fleet if rows[d]["result"] == "rolled_back")


def test_an_unreachable_device_is_deferred_and_a_later_run_converges_it(lab, fleet, lab_ssh, tmp_path):
    base = deploy(lab, fleet, demo_release(41), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    offline = sorted(d for d in fleet if lab["devices"][d]["site"] == "site-b")[0]
    container = lab["devices"][offline]["container"]
    subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=120)
    try:
        result, report = deploy(lab, fleet, demo_release(42), tmp_path / "offline")
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=120)
        wait_until_serving(lab_ssh, offline)
    assert result.returncode != 0, "a device left behind must fail the run"
    rows = {row["device"]: row for row in report["devices"]}
    assert rows[offline]["result"] == "deferred"
    assert all(rows[d]["result"] == "updated" for d in fleet if d != offline), rows

    converge, report = deploy(lab, fleet, demo_release(42), tmp_path / "converge")
    assert converge.returncode == 0, converge.stdout[-4000:]
    rows = {row["device"]: row for row in report["devices"]}
    assert rows[offline]["result"] == "updated"
    assert all(rows[d]["result"] == "unchanged" for d in fleet if d != offline), rows
    assert served_version(lab_ssh, offline, fleet[offline]) == 42.0
