# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""deploy_model.yml end to end on a fleet of 12 devices in 3 sites, Jetson and Coral mixed.

The module adds its own devices to the running lab (`lab device add --no-inventory`, on sites
no other test uses), writes a device_registry inventory for exactly those devices with the
lab's site group_vars next to it, bootstraps them and rolls the demo model out from version 1
to version 2. What every device serves is read off a real inference on the device, and the
report and the webhook receiver's events must agree with it device by device.

Runtime on the 2-core lab machine: see docs/rollout.md ("A larger fleet").
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeai_lab import access
from edgeai_lab.access import demo_release, read_report
from edgeai_lab.devices import load_profile
from rollout_helpers import receiver_events, served_version

pytestmark = [pytest.mark.lab, pytest.mark.fleet]

# 4 devices per site, 2 Jetson + 2 Coral each; every Jetson profile that gets a server here
# (JetPack 5 and 6) and both Coral variants. generic and jetson-nano get no server in the lab.
FLEET = {
    "e2e-north-orin-01": ("e2e-north", "agx-orin"),
    "e2e-north-orinnano-01": ("e2e-north", "orin-nano"),
    "e2e-north-coral-01": ("e2e-north", "coral-dev-board"),
    "e2e-north-coralusb-01": ("e2e-north", "coral-usb"),
    "e2e-south-xnx-01": ("e2e-south", "xavier-nx"),
    "e2e-south-agxx-01": ("e2e-south", "agx-xavier"),
    "e2e-south-coral-01": ("e2e-south", "coral-dev-board"),
    "e2e-south-coralusb-01": ("e2e-south", "coral-usb"),
    "e2e-east-orin-01": ("e2e-east", "agx-orin"),
    "e2e-east-xnx-01": ("e2e-east", "xavier-nx"),
    "e2e-east-coral-01": ("e2e-east", "coral-dev-board"),
    "e2e-east-coralusb-01": ("e2e-east", "coral-usb"),
}
PLATFORM = {profile: load_profile(profile)["platform"] for _site, profile in FLEET.values()}  # the lab's profiles
PLAYBOOK_TIMEOUT = 900


def _playbook(inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    return access.run_playbook(inventory, f"playbooks/{playbook}", *args, timeout=PLAYBOOK_TIMEOUT)


def _events_of_every_device(lab: dict[str, Any], event_type: str, run_id: str,
                            timeout: float = 60) -> list[dict[str, Any]]:
    """The relays deliver on their own schedule: wait (bounded) until every device's event is in."""
    deadline = time.monotonic() + timeout
    while True:
        events = receiver_events(lab, event_type, run_id)
        if {e["device_id"] for e in events} >= set(FLEET) or time.monotonic() > deadline:
            return events
        time.sleep(2)


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any], tmp_path_factory) -> Iterator[Path]:
    """12 devices of this module, bootstrapped; returns their inventory. Removed afterwards.
    While they exist they are in the session's `lab` dict too, so `lab_ssh` reaches them."""
    # room: see docs/rollout.md (each lab device holds some of root's inotify instances)
    with access.own_devices({name: (profile, site) for name, (site, profile) in FLEET.items()}, timeout=300):
        status = access.status()
        lab["devices"].update({name: status["devices"][name] for name in FLEET})
        try:
            fleet = {name: {"site": site, "platform": PLATFORM[profile], "hardware": profile}
                     for name, (site, profile) in FLEET.items()}
            inventory = access.registry_inventory(tmp_path_factory.mktemp("fleet-inventory"), fleet, lab["devices"])
            started = time.monotonic()
            result = _playbook(inventory, "bootstrap.yml")
            assert result.returncode == 0, result.stdout[-6000:]
            print(f"bootstrap of {len(FLEET)} devices: {time.monotonic() - started:.0f}s")
            yield inventory
        finally:
            for name in FLEET:
                lab["devices"].pop(name, None)


def _deploy(inventory: Path, version: int, report_dir: Path,
            *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = _playbook(inventory, "deploy_model.yml", "-e", f"@{demo_release(version)}",
                       "-e", f"edgeai_report_dir={report_dir}", "-e", "edgeai_canary_soak_seconds=3", *extra)
    return result, read_report(report_dir)


def test_twelve_devices_in_three_sites_roll_out_and_the_records_agree(lab, fleet, lab_ssh, tmp_path):
    # version 1 is the starting point, not under test: every device at once
    first, _first_report = _deploy(fleet, 1, tmp_path / "v1", "-e", "edgeai_max_unavailable_per_site=100%")
    assert first.returncode == 0, first.stdout[-4000:]

    started = time.monotonic()
    result, report = _deploy(fleet, 2, tmp_path / "v2")
    print(f"rollout v1 -> v2 on {len(FLEET)} devices: {time.monotonic() - started:.0f}s")
    assert result.returncode == 0, result.stdout[-4000:]
    assert not report["aborted"]

    # the report: every device once, from 1 to 2
    rows = {row["device"]: row for row in report["devices"]}
    assert len(report["devices"]) == len(FLEET) and set(rows) == set(FLEET), sorted(rows)
    for name, row in rows.items():
        site, profile = FLEET[name]
        assert (row["result"], row["before"], row["after"]) == ("updated", 1, 2), row
        assert (row["site"], row["platform"]) == (site, PLATFORM[profile]), row
    # every device is in exactly one wave, and no wave updates two devices of one site at once
    waved = [d for wave in report["waves"] for d in wave]
    assert sorted(waved) == sorted(FLEET), report["waves"]
    for wave in report["waves"]:
        sites = [FLEET[d][0] for d in wave]
        assert len(sites) == len(set(sites)), report["waves"]

    # what the devices serve: a real inference on each
    served = {name: served_version(lab_ssh, name, PLATFORM[profile]) for name, (_site, profile) in FLEET.items()}
    assert served == dict.fromkeys(FLEET, 2.0), served

    # the receiver heard each device start and finish this update, once each
    for event_type in ("deploy_started", "deploy_succeeded"):
        events = _events_of_every_device(lab, event_type, report["run_id"])
        by_device = {}
        for event in events:
            by_device.setdefault(event["device_id"], []).append(event["data"])
        assert sorted(by_device) == sorted(FLEET), (event_type, sorted(by_device))
        for name, data in by_device.items():
            assert len(data) == 1, (event_type, name, data)
            assert (data[0]["model"], data[0]["version"], data[0]["previous_version"]) == ("detector", 2, 1), data
    assert not receiver_events(lab, "deploy_failed", report["run_id"])
    assert not any(row["events_undelivered"] for row in rows.values()), rows
