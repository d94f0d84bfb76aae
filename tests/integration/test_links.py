# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad links, on the lab: the tests shape and cut a site's link to the data centre
(`tests/lab/lab link`) and read what crossed it from the lab gateway's byte counters.

- a download over a link cut half-way resumes where it stopped and verifies;
- `stage` then `activate`: the switch moves no artifact bytes across the site link;
- a device cut off for a whole rollout converges on the next run, and the events it produced
  meanwhile reach the event API, in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeai_lab import access
from edgeai_lab.access import demo_release, lab_cli, link, run_module
from rollout_helpers import (
    bootstrap_default_fleet,
    deploy,
    receiver_events_all,
    served_version,
    wait_until_serving,
)

pytestmark = pytest.mark.lab


def link_bytes(target: str, service: str) -> int:
    """Bytes the data centre sent across the link of a site or a device, for one service."""
    return access.link_bytes(target).get(service, 0)


@pytest.fixture
def clear_links(lab: dict[str, Any]) -> Iterator[None]:
    """Whatever a test does to the links, the next one starts with clear links."""
    yield
    for target in [*{d["site"] for d in lab["devices"].values()}, *lab["devices"]]:
        # not access.link, which raises: a device that another module has removed must not fail the teardown
        lab_cli("link", target, "--clear", timeout=60)


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, str]:
    return bootstrap_default_fleet(lab)


def _artifacts_log(lab: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(lab["artifacts"]["log"]).read_text().splitlines() if line.startswith("{")]


def test_a_download_over_a_cut_link_resumes_and_verifies(lab, fleet, clear_links, lab_ssh):
    device = next(d for d in sorted(fleet) if lab["devices"][d]["site"] == "site-a")
    name = f"blob-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(3_000_000)
    (Path(lab["artifacts"]["root"]) / f"{name}.bin").write_bytes(payload)
    creds = json.loads(Path(lab["artifacts"]["credentials_file"]).read_text())
    link("site-a", "--rate", "4mbit")  # 500 kB/s: the 3 MB take 6 s, time enough to cut half-way
    args = {"name": name, "version": 1, "dest": "/var/lib/edgeai/link-test", "format": "file",
            "url": f"{lab['artifacts']['url']}/{name}.bin", "sha256": hashlib.sha256(payload).hexdigest(),
            "url_username": creds["username"], "url_password": creds["password"], "retries": 8, "timeout": 10}
    result: dict[str, Any] = {}

    def fetch() -> None:
        result["proc"] = run_module(lab["inventory"]["plugin"], device, "edgeai.fleet.model_artifact", args,
                                    timeout=300)

    before = link_bytes(device, "artifacts")
    worker = threading.Thread(target=fetch)
    worker.start()
    deadline = time.monotonic() + 60
    while link_bytes(device, "artifacts") - before < 1_200_000:
        assert time.monotonic() < deadline and worker.is_alive(), "the download never got going"
        time.sleep(0.3)
    link("site-a", "--cut")
    at_cut = link_bytes(device, "artifacts")
    time.sleep(3)
    link("site-a", "--restore")
    worker.join(300)
    proc = result["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    staged = lab_ssh(device, f"sha256sum /var/lib/edgeai/link-test/{name}/1/{name}.bin").stdout.split()[0]
    assert staged == hashlib.sha256(payload).hexdigest()
    requests = [r for r in _artifacts_log(lab) if r["path"] == f"/{name}.bin" and r["status"] in (200, 206)]
    assert requests[0]["range"] is None
    resumed = [r for r in requests if r["status"] == 206]
    assert resumed, requests
    assert int(resumed[-1]["range"].split("=")[1].rstrip("-")) >= 1_000_000  # went on from where it was
    crossed = link_bytes(device, "artifacts") - before
    # it resumed: what crossed the link is the file once (plus TLS), not once and a half
    assert at_cut - before < len(payload)
    assert crossed < len(payload) * 1.1, crossed
    lab_ssh(device, "rm -rf /var/lib/edgeai/link-test")
    (Path(lab["artifacts"]["root"]) / f"{name}.bin").unlink()


def test_stage_then_activate_moves_no_artifact_bytes_at_the_switch(lab, fleet, clear_links, lab_ssh, tmp_path):
    base = deploy(lab, fleet, demo_release(61, https=True), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    release = demo_release(62, https=True)
    sites = sorted({lab["devices"][d]["site"] for d in fleet})

    staged, report = deploy(lab, fleet, release, tmp_path / "stage", "-e", "edgeai_phase=stage")
    assert staged.returncode == 0, staged.stdout[-4000:]
    assert report["phase"] == "stage"
    assert {row["result"] for row in report["devices"]} == {"staged"}, report["devices"]
    assert all(row["downloaded_bytes"] > 0 for row in report["devices"])
    for device, platform in fleet.items():  # nothing switched yet
        assert served_version(lab_ssh, device, platform) == 61.0, device

    before = {site: link_bytes(site, "artifacts") + link_bytes(site, "registry") for site in sites}
    active, report = deploy(lab, fleet, release, tmp_path / "activate", "-e", "edgeai_phase=activate")
    assert active.returncode == 0, active.stdout[-4000:]
    assert {row["result"] for row in report["devices"]} == {"updated"}, report["devices"]
    assert all(row["downloaded_bytes"] == 0 for row in report["devices"])
    after = {site: link_bytes(site, "artifacts") + link_bytes(site, "registry") for site in sites}
    assert after == before, "the activate phase moved artifact or image bytes across a site link"
    for device, platform in fleet.items():
        assert served_version(lab_ssh, device, platform) == 62.0, device


def test_activate_refuses_a_device_that_was_not_staged(lab, fleet, clear_links, tmp_path):
    release = demo_release(63, https=True)
    result, report = deploy(lab, fleet, release, tmp_path, "-e", "edgeai_phase=activate")
    assert result.returncode != 0
    canary = [row for row in report["devices"] if row.get("wave") == 0]
    assert canary and all(row["result"] == "failed" for row in canary), report["devices"]
    assert all("not staged" in row["reason"] for row in canary)
    assert report["aborted"] is True  # the canary failed: nothing else was touched


def test_a_device_cut_off_for_the_rollout_converges_and_its_queued_events_arrive(
        lab, fleet, clear_links, lab_ssh, tmp_path):
    base = deploy(lab, fleet, demo_release(71, https=True), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    offline = sorted(d for d in fleet if lab["devices"][d]["site"] == "site-b")[-1]
    container = lab["devices"][offline]["container"]
    marker = uuid.uuid4().hex[:12]
    # cut off: no link to the data centre, and the controller cannot reach it either (a reset
    # also ends the controller's persistent SSH connection to it)
    ssh_rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "REJECT", "--reject-with", "tcp-reset"]
    link(offline, "--cut")
    subprocess.run(["docker", "exec", container, "iptables", "-I", *ssh_rule], check=True, capture_output=True,
                   timeout=60)
    try:
        # meanwhile the device goes on working: its application reports to its relay
        for n in range(5):
            event = {"type": "detection.pest", "source": "camera", "data": {"marker": marker, "n": n}}
            # as a local application does: with the relay's local API token
            post = ("curl -sf -X POST -H 'Content-Type: application/json' "
                    "-H \"Authorization: Bearer $(cat /etc/edgeai/event-relay/local_token)\" "
                    f"--data '{json.dumps(event)}' http://127.0.0.1:8780/v1/events")
            posted = subprocess.run(["docker", "exec", container, "sh", "-c", post], capture_output=True, text=True,
                                    timeout=30, check=False)
            assert posted.returncode == 0, posted.stderr
        result, report = deploy(lab, fleet, demo_release(72, https=True), tmp_path / "offline")
        assert result.returncode != 0, "a device left behind must fail the run"
        rows = {row["device"]: row for row in report["devices"]}
        assert rows[offline]["result"] == "deferred", rows[offline]
        assert all(rows[d]["result"] == "updated" for d in fleet if d != offline), rows
        assert not [e for e in receiver_events_all(lab, "detection.pest") if e["data"].get("marker") == marker]
    finally:
        subprocess.run(["docker", "exec", container, "iptables", "-D", *ssh_rule], check=False, capture_output=True,
                       timeout=60)
        link(offline, "--restore")
    wait_until_serving(lab_ssh, offline)

    converge, report = deploy(lab, fleet, demo_release(72, https=True), tmp_path / "converge")
    assert converge.returncode == 0, converge.stdout[-4000:]
    rows = {row["device"]: row for row in report["devices"]}
    assert rows[offline]["result"] == "updated"
    assert all(rows[d]["result"] == "unchanged" for d in fleet if d != offline), rows
    assert served_version(lab_ssh, offline, fleet[offline]) == 72.0
    # the events queued while it was cut off arrived, once each, in the order they happened
    deadline = time.monotonic() + 60
    while True:
        got = [e for e in receiver_events_all(lab, "detection.pest") if e["data"].get("marker") == marker]
        if len(got) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [e["data"]["n"] for e in got] == [0, 1, 2, 3, 4]
    assert all(e["device_id"] == offline for e in got)
