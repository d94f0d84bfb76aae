# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Jetson after the jetpack role: L4T apt source, container packages, nvidia runtime default."""

from __future__ import annotations

import json

ROOT = "/opt/edgeai-lab/root"
SUITES = {"32": "r32.7", "35": "r35.4", "36": "r36.3"}


def l4t_major(host) -> str:
    line = host.file("/etc/nv_tegra_release").content_string.splitlines()[0]
    return line.split()[1].lstrip("R")


def l4t_release(host) -> str:
    facts = host.ansible("edgeai.fleet.device_facts", f"root={ROOT}", check=False)
    return facts["ansible_facts"]["edge_device"]["jetson"]["l4t"]


def test_apt_source_for_the_l4t_release(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-l4t-apt-source.list")
    assert source.is_file
    assert f" {SUITES[l4t_major(host)]} main" in source.content_string


def test_container_packages_installed(host):
    assert host.package("nvidia-container-toolkit").is_installed
    assert host.exists("nvidia-container-runtime")


def test_daemon_json_has_nvidia_default_and_kept_user_key(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["default-runtime"] == "nvidia"
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert config["log-level"] == "warn"


def test_engine_uses_nvidia_runtime(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["DefaultRuntime"] == "nvidia"
    assert "nvidia" in info["Runtimes"]


def test_gpu_container_runs(host, probe_image):
    """A container started the way the role sets the engine up (nvidia runtime) runs.

    STAND-IN: the lab's nvidia-container-runtime hands over to runc; there is no GPU.
    """
    pull = host.run(f"docker pull -q {probe_image}")
    assert pull.rc == 0, pull.stderr
    run = host.run(f"docker run --rm --runtime nvidia --entrypoint /bin/sh {probe_image} -c 'echo gpu-ok'")
    assert run.rc == 0, run.stderr
    assert run.stdout.strip() == "gpu-ok"
    inspect = host.run(f"docker run -d --entrypoint /bin/sleep {probe_image} 30")
    assert inspect.rc == 0, inspect.stderr
    cid = inspect.stdout.strip()
    try:
        assert host.check_output(f"docker inspect --format '{{{{.HostConfig.Runtime}}}}' {cid}") == "nvidia"
    finally:
        host.run(f"docker rm -f {cid}")


def test_facts_see_the_prepared_jetson(host):
    facts = host.ansible("edgeai.fleet.device_facts", f"root={ROOT}", check=False)
    device = facts["ansible_facts"]["edge_device"]
    assert device["platform"] == "jetson"
    assert device["jetson"]["l4t_major"] == l4t_major(host)
    assert device["jetson"]["jetpack"] != "unknown"
    assert device["container_engine"]["nvidia_default"] is True
    assert device["container_engine"]["running"] is True


def test_preflight_names_found_and_supported_l4t(host, run_role):
    """An L4T outside the supported list fails in preflight with both sides named."""
    result = run_role("edgeai.fleet.jetpack", {"jetpack_supported_l4t": ["30.1"]})
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert f"L4T {l4t_release(host)} found" in out
    assert "supported L4T releases: 30.1" in out


def test_coral_role_refuses_a_jetson(host, run_role):
    result = run_role("edgeai.fleet.coral", {})
    out = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "No Coral accelerator detected" in out and "platform jetson" in out
