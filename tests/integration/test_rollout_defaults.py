# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The paths a new user takes: deploy_model.yml with nothing but -e @release (the canary soak
at its default of 30 s), the example release as shipped (only its file paths filled in), check
mode on a converged fleet and on one that needs the update, and a rollout that fails on the
controller in the middle of a wave and still reports, gives every device a result and rolls
back what changed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgeai_lab.access import demo_release
from rollout_helpers import REPO, bootstrap_default_fleet, deploy, remove_model, run_playbook, served_version

pytestmark = pytest.mark.lab

EXAMPLE = REPO / "playbooks" / "examples" / "release.yml"


@pytest.fixture(scope="module")
def fleet(lab: dict[str, Any]) -> dict[str, str]:
    # bootstrap.yml --check below must find the fleet exactly as bootstrap.yml converges it
    return bootstrap_default_fleet(lab, again=True)


def _report_of(result) -> dict[str, Any]:
    """The report a run printed it wrote (runs here keep the default report folder)."""
    found = re.findall(r"report: (\S+\.json)", result.stdout)
    assert found, result.stdout[-3000:]
    return json.loads(Path(found[-1]).read_text())


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    recap = stdout[stdout.index("PLAY RECAP"):]
    return {line.split()[0]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
            for line in recap.splitlines()[1:] if ":" in line}


def test_a_release_and_nothing_else(lab, fleet, lab_ssh):
    # edgeai_targets is left out too: the lab's inventory holds exactly its fleet
    result = run_playbook(lab, "deploy_model.yml", "-e", f"@{demo_release(61)}")
    assert result.returncode == 0, result.stdout[-4000:]
    report = _report_of(result)
    rows = {row["device"]: row for row in report["devices"]}
    assert set(rows) >= set(fleet) and {rows[d]["result"] for d in fleet} <= {"updated", "downgraded"}, rows
    canary = [rows[d] for d in report["waves"][0]]
    assert canary and all(row["soak_s"] >= 30 for row in canary), canary  # the default soak, all of it
    for device, platform in fleet.items():
        assert served_version(lab_ssh, device, platform) == 61.0, device


def test_the_example_release_as_shipped(lab, fleet, lab_ssh, tmp_path):
    example = yaml.safe_load(EXAMPLE.read_text())
    version = example["edgeai_release"]["model_version"]
    name = example["edgeai_release"]["model_name"]
    built = demo_release(version, name=name)
    artifacts = yaml.safe_load(built.read_text())["edgeai_release"]["artifacts"]
    # only the paths are filled in: the text of the example stays as it is
    text = EXAMPLE.read_text()
    for platform in ("jetson", "coral"):
        placeholder = f"/srv/releases/{name}/{version}/{name}-{platform}-{version}.tar.gz"
        assert placeholder in text
        text = text.replace(placeholder, artifacts[platform]["src"])
    release = tmp_path / "release.yml"
    release.write_text(text)
    remove_model(lab, fleet, name)  # as a new user's fleet: the example's model not there yet
    before = {d: served_version(lab_ssh, d, p) for d, p in fleet.items()}

    result = run_playbook(lab, "deploy_model.yml", "-e", f"@{release}", "-e", "edgeai_canary_soak_seconds=3")
    assert result.returncode == 0, result.stdout[-4000:]
    rows = {row["device"]: row for row in _report_of(result)["devices"]}
    assert {rows[d]["result"] for d in fleet} == {"updated"}, rows
    assert all(rows[d]["model"] == name for d in fleet)
    # a second model: the first one is untouched and listed among the device's other models
    for device, platform in fleet.items():
        assert served_version(lab_ssh, device, platform, model=name) == float(version)
        assert served_version(lab_ssh, device, platform) == before[device]
        assert rows[device]["other_models"].get("detector") == int(before[device]), rows[device]


def test_check_mode_on_a_converged_fleet_changes_nothing_and_says_so(lab, fleet, tmp_path):
    release = demo_release(62)
    done = deploy(lab, fleet, release, tmp_path / "v62")[0]
    assert done.returncode == 0, done.stdout[-4000:]
    targets = f"edgeai_targets={':'.join(sorted(fleet))}"
    for playbook, args in (("bootstrap.yml", []), ("deploy_model.yml", ["-e", f"@{release}"])):
        result = run_playbook(lab, playbook, "--check", "--diff", "-e", targets, *args)
        assert result.returncode == 0, result.stdout[-4000:]
        recap = _recap(result.stdout)
        assert all(recap[d]["changed"] == 0 and recap[d]["failed"] == 0 for d in fleet), (playbook, recap)
    report = _report_of(result)
    assert {row["result"] for row in report["devices"]} == {"unchanged"} and report["check_mode"] is True


def test_check_mode_on_a_version_no_longer_staged_says_would_downgrade(lab, fleet, lab_ssh, tmp_path):
    keep_one = ("-e", "model_deploy_keep_versions=1")
    for version in (63, 64, 65):  # 63 is pruned by the time 65 is staged
        result = deploy(lab, fleet, demo_release(version), tmp_path / f"v{version}", *keep_one)[0]
        assert result.returncode == 0, result.stdout[-4000:]
    staged = lab_ssh(sorted(fleet)[0], "ls /var/lib/edgeai/artifacts/detector").stdout.split()
    assert "63" not in staged, staged

    check, report = deploy(lab, fleet, demo_release(63), tmp_path / "check", "--check", *keep_one)
    assert check.returncode == 0, check.stdout[-4000:]
    assert {row["result"] for row in report["devices"]} == {"would_downgrade"}, report["devices"]
    assert all(served_version(lab_ssh, d, p) == 65.0 for d, p in fleet.items())

    real, report = deploy(lab, fleet, demo_release(63), tmp_path / "real", *keep_one)
    assert real.returncode == 0, real.stdout[-4000:]
    assert {row["result"] for row in report["devices"]} == {"downgraded"}, report["devices"]
    assert all(served_version(lab_ssh, d, p) == 63.0 for d, p in fleet.items())


def test_a_controller_failure_inside_a_wave_still_reports_and_rolls_back(lab, fleet, lab_ssh, tmp_path):
    base, report = deploy(lab, fleet, demo_release(66), tmp_path / "base")
    assert base.returncode == 0, base.stdout[-4000:]
    canary, planted = report["waves"][0], report["waves"][1][0]
    # one device of wave 1 carries a setting that cannot be templated: its wave task fails on
    # the controller, not on the device
    extra = tmp_path / "planted.yml"
    extra.write_text(yaml.safe_dump({"all": {"hosts": {planted: {
        "model_deploy_keep_versions": "{{ planted_undefined_variable }}"}}}}))
    result, report = deploy(lab, fleet, demo_release(67), tmp_path / "fault", "-i", str(extra))
    assert result.returncode != 0
    assert report["aborted"] is True and report["abort"]["wave"] == 1, report["abort"]
    rows = {row["device"]: row for row in report["devices"]}
    assert set(rows) == set(fleet)
    assert rows[planted]["result"] == "failed" and "planted_undefined_variable" in rows[planted]["reason"]
    assert all(rows[d]["result"] == "rolled_back" for d in canary), rows
    assert all(rows[d]["result"] == "not_reached" for d in fleet if d not in canary and d != planted), rows
    for device, platform in fleet.items():
        assert served_version(lab_ssh, device, platform) == 66.0, device
    assert "Rollout aborted in wave 1" in result.stdout
