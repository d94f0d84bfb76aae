# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several models per device, a device's disk over many updates, devices that cannot run an
artifact, and a release that is refused on the controller before any device is touched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from edgeai_lab.access import demo_release
from edgeai_lab.load import Load
from rollout_helpers import INPUT, bootstrap_default_fleet, deploy, remove_model, run_playbook, served_version

pytestmark = pytest.mark.lab

SECOND = "pest-detector"


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> Iterator[dict[str, str]]:
    devices = bootstrap_default_fleet(lab)
    yield devices
    remove_model(lab, devices, SECOND)  # the fleet as the other modules expect it: one model


def _load(port: int, model: str, platform: str) -> Load:
    """Inferences on one model through a tunnel, until told to stop (bounded: at most 20,000 or 600 s)."""
    name, shape = ("INPUT0", [4]) if platform == "jetson" else ("x", [1, 4])
    body = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": INPUT}]}).encode()
    return Load(port, f"/v2/models/{model}/infer", lambda _k: body, 20_000, 1, 600, timeout=10,
                check=lambda status, raw, _k: (status == 200 and bool(json.loads(raw).get("outputs")), status))


def test_two_models_each_updated_while_the_other_serves_without_a_failed_request(
        lab, fleet, lab_ssh, lab_tunnel, tmp_path):
    base_first = deploy(lab, fleet, demo_release(81), tmp_path / "a81", "-e", "edgeai_max_unavailable_per_site=100%")
    base_second = deploy(lab, fleet, demo_release(81, name=SECOND), tmp_path / "b81",
                         "-e", "edgeai_max_unavailable_per_site=100%")
    assert base_first[0].returncode == 0 and base_second[0].returncode == 0
    device = sorted(d for d, p in fleet.items() if p == "jetson")[0]
    coral = sorted(d for d, p in fleet.items() if p == "coral")[0]
    for updated, untouched in ((SECOND, "detector"), ("detector", SECOND)):
        with lab_tunnel(device, 8000) as jetson_port, lab_tunnel(coral, 8000) as coral_port:
            loads = {device: _load(jetson_port, untouched, "jetson"), coral: _load(coral_port, untouched, "coral")}
            try:
                result, report = deploy(lab, fleet, demo_release(82, name=updated), tmp_path / f"{updated}-82")
            finally:
                counts = {d: load.result(stop=True) for d, load in loads.items()}
        assert result.returncode == 0, result.stdout[-4000:]
        rows = {row["device"]: row for row in report["devices"]}
        assert {rows[d]["result"] for d in fleet} == {"updated"} and {rows[d]["model"] for d in fleet} == {updated}
        # the untouched model is listed with its version: 81 (not yet updated), or 82 (updated first)
        expected = 81 if untouched == "detector" else 82
        assert all(rows[d]["other_models"][untouched] == expected for d in fleet), rows
        for name, seen in counts.items():
            assert not seen["failed"] and len(seen["ok"]) > 20, (updated, name, seen["failed"][:5], len(seen["ok"]))
        for d, p in fleet.items():
            assert served_version(lab_ssh, d, p, model=updated) == 82.0


def test_what_the_controller_pushes_does_not_pile_up_over_five_updates(lab, fleet, lab_ssh, tmp_path):
    device = sorted(fleet)[0]
    # what is there already (a device set up by the previous design kept its pushes in incoming/)
    count = "find /root/.ansible/tmp /var/lib/edgeai/incoming -type f 2>/dev/null | wc -l"
    before = int(lab_ssh(device, count).stdout.strip())
    for version in range(83, 88):
        result = deploy(lab, fleet, demo_release(version), tmp_path / f"v{version}")[0]
        assert result.returncode == 0, result.stdout[-4000:]
        staged = lab_ssh(device, "ls /var/lib/edgeai/artifacts/detector").stdout.split()
        assert len(staged) <= 3 and str(version) in staged, staged  # model_deploy_keep_versions
    # the pushed tarballs went with Ansible's temporary folders
    assert int(lab_ssh(device, count).stdout.strip()) == before


def test_a_device_that_cannot_run_the_artifact_is_reported_and_not_tried(lab, fleet, lab_ssh, tmp_path):
    base = deploy(lab, fleet, demo_release(88), tmp_path / "base")[0]
    assert base.returncode == 0, base.stdout[-4000:]
    release_file = demo_release(89)
    release = yaml.safe_load(release_file.read_text())
    release["edgeai_release"]["artifacts"]["jetson"]["requires"] = {"tensorrt": "99.1", "backends": ["python"]}
    planted = tmp_path / "release.yml"
    planted.write_text(yaml.safe_dump(release))
    result, report = deploy(lab, fleet, planted, tmp_path / "incompatible")
    assert result.returncode != 0
    rows = {row["device"]: row for row in report["devices"]}
    jetsons = [d for d, p in fleet.items() if p == "jetson"]
    assert all(rows[d]["result"] == "incompatible" and "TensorRT 99.1" in rows[d]["reason"] for d in jetsons), rows
    assert all(rows[d]["result"] == "updated" for d, p in fleet.items() if p == "coral"), rows
    assert all(served_version(lab_ssh, d, "jetson") == 88.0 for d in jetsons)
    assert "cannot run this artifact" in result.stdout


def test_a_typo_in_the_release_is_refused_before_any_device_is_touched(lab, fleet, tmp_path):
    release = yaml.safe_load(demo_release(90).read_text())
    release["edgeai_release"]["smoke_test"]["coral"]["expected_output"] = release["edgeai_release"][
        "smoke_test"]["coral"].pop("expected_outputs")
    planted = tmp_path / "release.yml"
    planted.write_text(yaml.safe_dump(release))
    started = time.monotonic()
    result = run_playbook(lab, "deploy_model.yml", "-e", f"@{planted}", "-e",
                          f"edgeai_targets={':'.join(sorted(fleet))}")
    assert result.returncode != 0
    assert "unknown key in edgeai_release.smoke_test.coral: expected_output; did you mean expected_outputs?" \
        in result.stdout.replace("\n", " "), result.stdout[-3000:]
    # the run stopped in its first play, on the controller
    assert "Preflight every target" not in result.stdout and time.monotonic() - started < 60
