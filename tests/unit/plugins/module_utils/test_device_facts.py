# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Platform detection against every lab profile tree and against broken inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ansible_collections.edgeai.fleet.plugins.module_utils import _device_facts as df

PROFILES_DIR = Path(__file__).resolve().parents[4] / "tests" / "lab" / "profiles"
PROFILES = sorted(p.name for p in PROFILES_DIR.iterdir() if (p / "profile.yml").is_file())
EXPECTED_PROFILES = {"jetson-nano", "xavier-nx", "agx-xavier", "agx-orin", "orin-nano",
                     "coral-dev-board", "coral-usb", "generic"}


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES_DIR / name / "profile.yml").read_text())


def gather(root, **kwargs):
    kwargs.setdefault("machine", "aarch64")
    kwargs.setdefault("kernel_release", "5.15.136-tegra")
    kwargs.setdefault("host_proc_fallback", False)
    return df.gather(root=str(root), **kwargs)


@pytest.fixture
def profile_copy(tmp_path):
    """Copy a profile's root/ tree into tmp_path so a test can break it."""
    def _copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(PROFILES_DIR / name / "root", dest, symlinks=True)
        return dest
    return _copy


def test_every_lab_profile_is_present():
    assert EXPECTED_PROFILES <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_platform_and_soc(name):
    profile = load_profile(name)
    facts = gather(PROFILES_DIR / name / "root")
    assert facts["platform"] == profile["platform"]
    if profile["platform"] != "generic" and profile["soc"] not in ("x86_64", "amd64"):
        assert facts["soc"] == profile["soc"]
    assert facts["model"] or profile["platform"] != "jetson"
    assert facts["arch"] == "arm64"  # from the machine handed in, not from the tree
    assert facts["root"] == str(PROFILES_DIR / name / "root")


@pytest.mark.parametrize("name", [p for p in PROFILES if p in EXPECTED_PROFILES and
                                  load_profile(p)["platform"] == "jetson"])
def test_jetson_profiles(name):
    profile = load_profile(name)
    facts = gather(PROFILES_DIR / name / "root")
    jetson = facts["jetson"]
    assert facts["coral"] is None
    assert jetson["l4t"] == profile["l4t_version"]
    assert jetson["l4t_source"] == "/etc/nv_tegra_release"
    assert jetson["l4t_major"] == profile["l4t_version"].split(".")[0]
    assert jetson["jetpack"] == str(profile["jetpack_version"])
    assert jetson["cuda"] == profile["cuda_version"]
    assert jetson["tensorrt"].startswith(str(profile["tensorrt_version"]))
    assert facts["dpkg_available"] is True
    # the profiles carry no proc/meminfo (the fallback to the running kernel is off here)
    assert [w for w in facts["warnings"] if "memory" not in w] == []


def test_coral_dev_board_profile():
    facts = gather(PROFILES_DIR / "coral-dev-board" / "root")
    coral = facts["coral"]
    assert facts["jetson"] is None
    assert coral["variant"] == "dev_board"
    assert coral["apex_nodes"] == ["/dev/apex_0"]
    assert coral["edgetpu_runtime"] == {"package": "libedgetpu1-std", "version": "16.0"}
    assert facts["soc"] == "imx8mq"


def test_coral_usb_profile_before_firmware():
    facts = gather(PROFILES_DIR / "coral-usb" / "root", machine="x86_64")
    coral = facts["coral"]
    assert facts["platform"] == "coral"
    assert facts["arch"] == "amd64"
    assert coral["variant"] == "usb"
    assert coral["usb_ids"] == ["1a6e:089a"]
    assert coral["usb_firmware_loaded"] is False
    assert coral["apex_nodes"] == []
    assert coral["edgetpu_runtime"] is None
    assert "1d6b:0003" in facts["usb_ids"]  # the root hub is seen, but is not a Coral id


def test_coral_usb_after_firmware(profile_copy):
    root = profile_copy("coral-usb")
    dev = root / "sys/bus/usb/devices/2-1"
    (dev / "idVendor").write_text("18d1\n")
    (dev / "idProduct").write_text("9302\n")
    facts = gather(root, machine="x86_64")
    assert facts["coral"]["variant"] == "usb"
    assert facts["coral"]["usb_firmware_loaded"] is True


def test_coral_pcie_card_on_a_generic_host(profile_copy):
    root = profile_copy("generic")
    (root / "dev").mkdir()
    (root / "dev/apex_0").write_text("")
    modules = root / "lib/modules/6.1.0-21-amd64/updates/dkms"
    modules.mkdir(parents=True)
    (modules / "apex.ko").write_text("")
    facts = gather(root, machine="x86_64", kernel_release="6.1.0-21-amd64")
    assert facts["platform"] == "coral"
    assert facts["coral"]["variant"] == "pcie"
    assert facts["coral"]["apex_module"] == {"loaded": False, "built_for_kernel": True}
    facts = gather(root, machine="x86_64", kernel_release="6.1.0-99-amd64")
    assert facts["coral"]["apex_module"]["built_for_kernel"] is False


def test_generic_profile():
    facts = gather(PROFILES_DIR / "generic" / "root", machine="x86_64")
    assert facts["platform"] == "generic"
    assert facts["jetson"] is None and facts["coral"] is None
    assert facts["arch"] == "amd64"
    assert facts["soc"] is None
    assert any("model" in w for w in facts["warnings"])


@pytest.mark.parametrize("machine,arch", [("aarch64", "arm64"), ("x86_64", "amd64"), ("armv7l", "arm"),
                                          ("riscv64", "riscv64")])
def test_arch_mapping(machine, arch):
    assert df.container_arch(machine) == arch


# ---- broken inputs -------------------------------------------------------------------------

def test_truncated_nv_tegra_release_falls_back_to_l4t_core_package(profile_copy):
    root = profile_copy("agx-orin")
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVIS")
    facts = gather(root)
    jetson = facts["jetson"]
    assert facts["platform"] == "jetson"
    assert jetson["l4t"] == "36.3.0"
    assert jetson["l4t_source"] == "nvidia-l4t-core package"
    assert jetson["jetpack"] == "6.0"
    assert any("nv_tegra_release" in w for w in facts["warnings"])


def test_truncated_nv_tegra_release_without_dpkg_keeps_major_only(profile_copy):
    root = profile_copy("jetson-nano")
    (root / "etc/nv_tegra_release").write_text("# R32 (rel")
    (root / "var/lib/dpkg/status").unlink()
    facts = gather(root)
    jetson = facts["jetson"]
    assert jetson["l4t"] is None
    assert jetson["jetpack"] == "unknown"
    assert facts["dpkg_available"] is False
    assert any("dpkg" in w for w in facts["warnings"])


def test_empty_nv_tegra_release_still_jetson(profile_copy):
    root = profile_copy("xavier-nx")
    (root / "etc/nv_tegra_release").write_text("")
    facts = gather(root)
    assert facts["platform"] == "jetson"
    assert facts["jetson"]["l4t"] == "35.4.1"  # from nvidia-l4t-core


def test_unknown_l4t_release_is_not_guessed(profile_copy):
    root = profile_copy("agx-orin")
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 9.7, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n")
    facts = gather(root)
    assert facts["jetson"]["l4t"] == "36.9.7"
    assert facts["jetson"]["jetpack"] == "unknown"


def test_unknown_model_string_is_generic_with_what_was_seen(profile_copy):
    root = profile_copy("generic")
    dt = root / "proc/device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"Acme Widget Board rev 3\x00")
    (dt / "compatible").write_bytes(b"acme,widget-3\x00rockchip,rk3588\x00")
    facts = gather(root)
    assert facts["platform"] == "generic"
    assert facts["model"] == "Acme Widget Board rev 3"
    assert facts["compatible"] == ["acme,widget-3", "rockchip,rk3588"]
    assert facts["soc"] == "rk3588"


def test_missing_dpkg_database(profile_copy):
    root = profile_copy("coral-dev-board")
    (root / "var/lib/dpkg/status").unlink()
    facts = gather(root)
    assert facts["platform"] == "coral"
    assert facts["coral"]["variant"] == "dev_board"
    assert facts["coral"]["edgetpu_runtime"] is None
    assert facts["dpkg_available"] is False
    assert any("dpkg" in w for w in facts["warnings"])


def test_unreadable_files(profile_copy, monkeypatch):
    """An unreadable file (EACCES) becomes a warning; the rest of the facts still come."""
    root = profile_copy("agx-orin")
    real_open = open
    blocked = {str(root / "etc/nv_tegra_release"), str(root / "var/lib/dpkg/status")}

    def fake_open(path, *args, **kwargs):
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    facts = gather(root)
    assert facts["platform"] == "jetson"  # the file exists, nvidia,tegra234 in the device tree
    assert facts["soc"] == "tegra234"
    assert facts["jetson"]["l4t"] is None
    assert facts["jetson"]["jetpack"] == "unknown"
    assert facts["jetson"]["cuda"] == "12.2.140"
    assert any("cannot read /etc/nv_tegra_release: Permission denied" in w for w in facts["warnings"])
    assert any("cannot read /var/lib/dpkg/status" in w for w in facts["warnings"])


def test_directory_where_a_file_is_expected(profile_copy):
    root = profile_copy("orin-nano")
    (root / "usr/local/cuda/version.json").unlink()
    (root / "usr/local/cuda/version.json").mkdir()
    facts = gather(root)
    assert facts["jetson"]["cuda"] == "12.2.140"  # from cuda-runtime-12-2
    assert any("not a regular file" in w for w in facts["warnings"])


def test_garbage_cuda_json_and_daemon_json(profile_copy):
    root = profile_copy("orin-nano")
    (root / "usr/local/cuda/version.json").write_text("{not json")
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text("[1, 2")
    facts = gather(root)
    assert facts["jetson"]["cuda"] == "12.2.140"
    assert facts["container_engine"]["runtimes"] == []
    assert len([w for w in facts["warnings"] if "JSON" in w]) == 2


def test_empty_root_gives_generic(tmp_path):
    facts = gather(tmp_path)
    assert facts["platform"] == "generic"
    assert facts["model"] is None
    assert facts["memory_total_bytes"] is None
    assert facts["container_engine"]["installed"] is False
    assert facts["warnings"]


def test_jetson_nano_cuda_from_version_txt():
    facts = gather(PROFILES_DIR / "jetson-nano" / "root")
    assert facts["jetson"]["cuda"] == "10.2.300"
    assert facts["jetson"]["jetpack"] == "4.6.4"


# ---- power mode, engine, storage, memory ---------------------------------------------------

NVPMODEL_CONF = """
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=7W >
< PM_CONFIG DEFAULT=1 >
"""


def test_power_mode_from_nvpmodel_files(profile_copy):
    root = profile_copy("orin-nano")
    (root / "etc/nvpmodel.conf").write_text(NVPMODEL_CONF)
    facts = gather(root)
    assert facts["jetson"]["power_mode"] == {
        "id": 1, "name": "15W", "default_id": 1, "source": "default in /etc/nvpmodel.conf",
        "modes": {"0": "MAXN", "1": "15W", "2": "7W"}}
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    mode = gather(root)["jetson"]["power_mode"]
    assert (mode["id"], mode["name"], mode["source"]) == (2, "7W", "/var/lib/nvpmodel/status")


def test_no_nvpmodel_no_power_mode():
    assert gather(PROFILES_DIR / "agx-orin" / "root")["jetson"]["power_mode"] is None


def test_container_engine_from_files(profile_copy):
    root = profile_copy("agx-orin")
    (root / "etc/docker").mkdir(parents=True)
    (root / "etc/docker/daemon.json").write_text(
        '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},'
        ' "default-runtime": "nvidia", "log-driver": "json-file"}')
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dockerd").write_text("")
    (root / "usr/bin/docker").write_text("")
    (root / "etc/cdi").mkdir()
    (root / "etc/cdi/nvidia.yaml").write_text("cdiVersion: 0.5.0\n")
    calls = []

    def docker_version(binary):
        calls.append(binary)
        return {"Client": {"Version": "26.1.5"}, "Server": {"Version": "26.1.5"}}

    engine = gather(root, docker_version=docker_version)["container_engine"]
    assert calls == [str(root / "usr/bin/docker")]
    assert engine["installed"] is True
    assert engine["version"] == "26.1.5"
    assert engine["running"] is True
    assert engine["runtimes"] == ["nvidia", "runc"]
    assert engine["default_runtime"] == "nvidia"
    assert engine["nvidia_runtime"] is True and engine["nvidia_default"] is True
    assert engine["cdi_specs"] == ["/etc/cdi/nvidia.yaml"]


def test_container_engine_daemon_down(profile_copy):
    root = profile_copy("generic")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/docker").write_text("")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/dockerd").write_text("")
    engine = gather(root, docker_version=lambda b: {"Client": {"Version": "20.10.24"}, "Server": None})[
        "container_engine"]
    assert engine["running"] is False
    assert engine["client_version"] == "20.10.24"
    assert engine["default_runtime"] == "runc"
    assert engine["nvidia_default"] is False


def test_no_engine_and_no_client_query(profile_copy):
    root = profile_copy("generic")
    engine = gather(root, docker_version=lambda b: pytest.fail("must not run docker"))["container_engine"]
    assert engine["installed"] is False
    assert engine["running"] is None


def test_storage_and_memory(profile_copy):
    root = profile_copy("generic")
    (root / "proc").mkdir()
    (root / "proc/meminfo").write_text("MemTotal:        8039760 kB\nMemFree: 1 kB\n")
    facts = gather(root, models_path="/var/lib/edgeai/models")
    assert facts["memory_total_bytes"] == 8039760 * 1024
    storage = facts["storage"]
    assert storage["exists"] is False
    assert storage["checked_path"] == "/var/lib"
    assert storage["free_bytes"] > 0 and storage["total_bytes"] >= storage["free_bytes"]
    (root / "srv/models").mkdir(parents=True)
    assert gather(root, models_path="/srv/models")["storage"]["checked_path"] == "/srv/models"


def test_memory_falls_back_to_the_running_kernel(profile_copy):
    root = profile_copy("generic")
    facts = df.gather(root=str(root), machine="x86_64", host_proc_fallback=True)
    assert facts["memory_total_bytes"] and facts["memory_total_bytes"] > 0


@pytest.mark.parametrize("version,expected", [
    ("36.3.0-20240506102626", "36.3.0"), ("8.6.2.3-1+cuda12.2", "8.6.2.3"), ("1:12.2.140-1", "12.2.140"),
    ("16.0", "16.0"), ("", None), ("abc", None)])
def test_upstream_version(version, expected):
    assert df.upstream_version(version) == expected


def test_dpkg_status_only_counts_installed():
    text = ("Package: a\nStatus: install ok installed\nVersion: 1.0\nDescription: x\n multi\n line\n\n"
            "Package: b\nStatus: deinstall ok config-files\nVersion: 2.0\n\n"
            "Package: c\nStatus: hold ok installed\nVersion: 3.0\n")
    assert df.parse_dpkg_status(text) == {"a": {"version": "1.0", "architecture": ""},
                                          "c": {"version": "3.0", "architecture": ""}}
