"""Unit tests of the lab's device profiles and stand-in package definitions (no Docker)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from edgeai_lab import apt

LAB = Path(__file__).resolve().parents[1]

PROFILES = sorted(p.parent.name for p in (LAB / "profiles").glob("*/profile.yml"))
RELEASE_RE = re.compile(r"^# R(\d+) \(release\), REVISION: (\d+)\.(\d+), GCID: \d+, BOARD: [\w-]+, "
                        r"EABI: aarch64, DATE: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}$")


def load(name: str) -> dict:
    return yaml.safe_load((LAB / "profiles" / name / "profile.yml").read_text())


def dpkg_status(name: str) -> dict[str, dict[str, str]]:
    entries = {}
    for block in (LAB / "profiles" / name / "root/var/lib/dpkg/status").read_text().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(" "))
        entries[fields["Package"]] = fields
    return entries


def test_every_brief_profile_exists():
    assert set(PROFILES) == {"jetson-nano", "xavier-nx", "agx-xavier", "agx-orin", "orin-nano",
                             "coral-dev-board", "coral-usb", "generic"}


@pytest.mark.parametrize("name", PROFILES)
def test_profile_fields(name):
    prof = load(name)
    assert prof["name"] == name
    assert prof["platform"] in {"jetson", "coral", "generic"}
    for key in ("hardware", "soc", "arch", "description", "packages", "device_nodes", "usb_ids"):
        assert key in prof, key
    status = dpkg_status(name)
    for pkg in prof["packages"]:
        assert status[pkg["name"]]["Version"] == pkg["version"]
        assert status[pkg["name"]]["Status"] == "install ok installed"


@pytest.mark.parametrize("name", [p for p in PROFILES if load(p)["platform"] == "jetson"])
def test_jetson_release_file_and_device_tree(name):
    prof = load(name)
    root = LAB / "profiles" / name / "root"
    first = (root / "etc/nv_tegra_release").read_text().splitlines()[0]
    m = RELEASE_RE.match(first)
    assert m, first
    assert ".".join(m.groups()) == prof["l4t_version"]
    model = (root / "proc/device-tree/model").read_bytes()
    compatible = (root / "proc/device-tree/compatible").read_bytes()
    assert model.endswith(b"\0") and compatible.endswith(b"\0")
    assert compatible.rstrip(b"\0").split(b"\0")[-1].decode() == f"nvidia,{prof['soc']}"
    cuda = root / "usr/local/cuda"
    version_file = cuda / "version.json" if (cuda / "version.json").exists() else cuda / "version.txt"
    text = version_file.read_text()
    assert prof["cuda_version"] in text
    assert "nvidia-l4t-core" in dpkg_status(name)


def test_coral_profiles():
    board = LAB / "profiles/coral-dev-board/root"
    assert (board / "proc/device-tree/model").read_bytes() == b"Freescale i.MX8MQ Phanbell\0"
    assert (board / "dev/apex_0").exists() and load("coral-dev-board")["device_nodes"] == ["apex_0"]
    usb = LAB / "profiles/coral-usb/root/sys/bus/usb/devices/2-1"
    assert (usb / "idVendor").read_text().strip() == "1a6e" and (usb / "idProduct").read_text().strip() == "089a"
    after = LAB / "profiles/coral-usb/after_firmware/sys/bus/usb/devices/2-1"
    assert (after / "idVendor").read_text().strip() == "18d1" and (after / "idProduct").read_text().strip() == "9302"
    assert not (LAB / "profiles/generic/root/dev/apex_0").exists()
    assert "libedgetpu1-std" not in dpkg_status("coral-usb")


def test_stand_in_packages_match_profiles_and_say_so():
    specs = apt.package_specs()
    for name in PROFILES:
        prof = load(name)
        if not prof["packages"]:
            continue
        suite = {s["name"]: s["version"] for s in specs[prof["apt_suite"]]}
        for pkg in prof["packages"]:
            assert suite[pkg["name"]] == pkg["version"], (name, pkg)
    coral = {s["name"]: s for s in specs[apt.CORAL_SUITE]}
    assert {"libedgetpu1-std", "libedgetpu1-max", "gasket-dkms"} <= set(coral)
    assert "libedgetpu/accepted-eula" in coral["libedgetpu1-max"]["scripts"]["templates"][0]
    assert "config" in coral["libedgetpu1-max"]["scripts"]
    for suite_specs in specs.values():
        for spec in suite_specs:
            assert any(path.endswith("/STAND-IN") for path in spec["files"]), spec["name"]


def test_built_deb_is_named_as_stand_in(tmp_path):
    spec = next(s for s in apt.package_specs()[apt.CORAL_SUITE] if s["name"] == "libedgetpu1-max")
    deb = apt._build_deb(spec, tmp_path)
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Description: STAND-IN (edgeai lab)" in fields
    assert "Provides: libedgetpu1 (= 16.0)" in fields
    members = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"./templates" in members and b"./config" in members
