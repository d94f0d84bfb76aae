# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Coral device after the coral role: runtime, udev rules, groups, accelerator visible to a container."""

from __future__ import annotations

import json

ROOT = "/opt/edgeai-lab/root"


def facts(host) -> dict:
    return host.ansible("edgeai.fleet.device_facts", f"root={ROOT}", check=False)["ansible_facts"]["edge_device"]


def test_runtime_installed(host):
    assert host.package("libedgetpu1-std").is_installed
    assert not host.package("libedgetpu1-max").is_installed
    assert host.file("/etc/apt/sources.list.d/coral-edgetpu.list").contains("coral-edgetpu-stable")


def test_gasket_only_for_pcie(host):
    assert not host.package("gasket-dkms").is_installed  # dev board and USB: no PCIe driver package


def test_udev_rules(host):
    assert host.file("/etc/udev/rules.d/65-apex.rules").contains('SUBSYSTEM=="apex"')
    usb = host.file("/etc/udev/rules.d/71-edgetpu-accelerator.rules")
    assert usb.contains('ATTRS{idVendor}=="1a6e"') and usb.contains('ATTRS{idVendor}=="18d1"')


def test_service_user_in_device_groups(host):
    user = host.user("edgeai")
    assert {"apex", "plugdev"} <= set(user.groups)


def test_accelerator_visible(host):
    device = facts(host)
    assert device["platform"] == "coral"
    coral = device["coral"]
    assert coral["edgetpu_runtime"]["package"] == "libedgetpu1-std"
    if coral["variant"] == "usb":
        assert coral["usb_ids"]
    else:
        assert coral["apex_nodes"] == ["/dev/apex_0"]
        assert host.run("test -c /dev/apex_0").rc == 0


def test_tpu_container_runs(host, probe_image):
    """A container given the accelerator the way the LiteRT server gets it runs and sees it."""
    device = facts(host)
    pull = host.run(f"docker pull -q {probe_image}")
    assert pull.rc == 0, pull.stderr
    if device["coral"]["variant"] == "usb":
        # a real USB Accelerator is reached through /dev/bus/usb (absent in a lab container)
        flags = "-v /dev/bus/usb:/dev/bus/usb" if host.file("/dev/bus/usb").exists else ""
        check = "echo tpu-ok"
    else:
        flags, check = "--device /dev/apex_0", "test -c /dev/apex_0 && echo tpu-ok"
    run = host.run(f"docker run --rm {flags} --entrypoint /bin/sh {probe_image} -c '{check}'")
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == "tpu-ok"


def test_engine_running(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["ServerVersion"]


def test_jetpack_role_refuses_a_coral(host, run_role):
    result = run_role("edgeai.fleet.jetpack", {})
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "The jetpack role needs an NVIDIA Jetson" in out and "looks like a coral device" in out


def test_max_runtime_needs_acknowledgement(host, run_role):
    result = run_role("edgeai.fleet.coral", {"coral_runtime": "max"})
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "coral_runtime_max_acknowledge_temperature=true" in out
