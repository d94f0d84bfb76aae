# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
#
# The engine of edgeai.fleet.device_facts: platform detection for edge devices. Every
# function takes the filesystem root to look under (``/`` on a device, a profile tree in
# tests) and reads files; nothing here shells out. The one optional live query
# (``docker version``) is handed in as a callable; run_module() hands in one that runs it
# through the module's run_command.

from __future__ import annotations

import glob
import json
import os
import re

from ansible_collections.edgeai.fleet.plugins.module_utils._errors import EdgeAIError

ARGUMENT_SPEC = dict(
    root=dict(type="path", default="/"),
    models_path=dict(type="path", default="/var/lib/edgeai/models"),
    query_engine=dict(type="bool", default=True),
)

# L4T release -> JetPack release. Only releases NVIDIA published; anything else is
# reported as "unknown" (never guessed from a neighbour).
JETPACK_BY_L4T = {
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}

# uname machine -> container image architecture
ARCH_MAP = {
    "aarch64": "arm64",
    "arm64": "arm64",
    "x86_64": "amd64",
    "amd64": "amd64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
}

# Coral USB Accelerator: before the runtime loads its firmware / after.
CORAL_USB_IDS = ("1a6e:089a", "18d1:9302")
EDGETPU_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
DOCKER_PACKAGES = ("docker.io", "docker-ce", "moby-engine")
TENSORRT_PACKAGES = ("tensorrt", "libnvinfer10", "libnvinfer8", "libnvinfer7")
ENGINE_BINARIES = ("usr/bin/dockerd", "usr/sbin/dockerd", "usr/local/bin/dockerd")
CDI_DIRS = ("etc/cdi", "var/run/cdi", "run/cdi")

_NV_TEGRA_RE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\)(?:,\s*REVISION:\s*(?P<rev>\d+(?:\.\d+)?))?")
_NV_BOARD_RE = re.compile(r"BOARD:\s*(?P<board>[^,\s]+)")
_VERSION_RE = re.compile(r"\d+(?:\.\d+)+")


class Reader:
    """Reads files under a root and collects warnings instead of raising."""

    def __init__(self, root: str = "/") -> None:
        self.root = root or "/"
        self.warnings: list[str] = []

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def display(self, rel: str) -> str:
        return "/" + rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def read(self, rel: str, binary: bool = False, missing_ok: bool = True):
        """Return the file's content, or None when missing (or unreadable, with a warning)."""
        path = self.path(rel)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            if not missing_ok:
                self.warnings.append(f"{self.display(rel)} is missing")
            return None
        except (IsADirectoryError, NotADirectoryError):
            self.warnings.append(f"{self.display(rel)} is not a regular file")
            return None
        except OSError as exc:
            self.warnings.append(f"cannot read {self.display(rel)}: {exc.strerror or exc}")
            return None
        if binary:
            return data
        return data.decode("utf-8", errors="replace")

    def glob(self, pattern: str) -> list[str]:
        """Relative paths (from the root) matching a pattern, sorted."""
        base = self.path("")
        found = glob.glob(os.path.join(base, pattern.lstrip("/")))
        return sorted(os.path.relpath(p, base) for p in found)


def container_arch(machine: str) -> str:
    return ARCH_MAP.get((machine or "").lower(), (machine or "unknown").lower())


def parse_dpkg_status(text: str) -> dict[str, dict[str, str]]:
    """Installed packages of a dpkg status file: name -> {version, architecture}."""
    packages: dict[str, dict[str, str]] = {}
    for stanza in re.split(r"\n\s*\n", text or ""):
        fields: dict[str, str] = {}
        last = None
        for line in stanza.splitlines():
            if not line.strip():
                continue
            if line[0] in " \t" and last:
                continue  # continuation line of a multi-line field
            key, sep, value = line.partition(":")
            if not sep:
                continue
            last = key.strip().lower()
            fields[last] = value.strip()
        name = fields.get("package")
        status = fields.get("status", "")
        if not name or not status.split() or status.split()[-1] != "installed":
            continue
        packages[name] = {
            "version": fields.get("version", ""),
            "architecture": fields.get("architecture", ""),
        }
    return packages


def upstream_version(version: str | None) -> str | None:
    """'1:12.2.140-1+cuda12.2' -> '12.2.140' (epoch and Debian revision dropped)."""
    if not version:
        return None
    version = version.split(":", 1)[-1]
    match = _VERSION_RE.match(version.split("-", 1)[0].split("+", 1)[0])
    return match.group(0) if match else None


def parse_nv_tegra_release(text: str) -> dict:
    """Parse /etc/nv_tegra_release. Returns {major, revision, release, board} (None where absent)."""
    result = {"major": None, "revision": None, "release": None, "board": None}
    match = _NV_TEGRA_RE.search(text or "")
    if not match:
        return result
    result["major"] = match.group("major")
    rev = match.group("rev")
    board = _NV_BOARD_RE.search(text)
    if board:
        result["board"] = board.group("board")
    if rev:
        # REVISION "7.1" -> 32.7.1; "3.0" -> 36.3.0; "4" -> 36.4.0
        parts = rev.split(".")
        if len(parts) == 1:
            parts.append("0")
        result["revision"] = ".".join(parts)
        result["release"] = "{}.{}".format(result["major"], result["revision"])
    return result


def read_device_tree(reader: Reader) -> tuple[str | None, list[str]]:
    model_raw = reader.read("proc/device-tree/model")
    if model_raw is None:
        model_raw = reader.read("sys/firmware/devicetree/base/model")
    model = model_raw.replace("\x00", " ").strip() if model_raw else None
    compat_raw = reader.read("proc/device-tree/compatible")
    if compat_raw is None:
        compat_raw = reader.read("sys/firmware/devicetree/base/compatible")
    compatible = [c.strip() for c in (compat_raw or "").split("\x00") if c.strip()]
    if model is None:
        # x86 hosts: DMI product name is the closest thing to a model string
        product = reader.read("sys/class/dmi/id/product_name")
        if product and product.strip():
            model = product.strip()
    return model or None, compatible


def soc_from_compatible(compatible: list[str]) -> str | None:
    for entry in compatible:
        vendor, _sep, chip = entry.partition(",")
        if vendor == "nvidia" and re.fullmatch(r"tegra\d+", chip):
            return chip
    for entry in compatible:
        vendor, _sep, chip = entry.partition(",")
        if vendor == "fsl" and re.fullmatch(r"imx\d+\w*", chip):
            return chip
    for entry in compatible:
        vendor, _sep, chip = entry.partition(",")
        if vendor in ("rockchip", "brcm", "amlogic", "allwinner", "qcom", "mediatek") and chip:
            return chip
    return None


def read_usb_ids(reader: Reader) -> list[str]:
    ids = set()
    for rel in reader.glob("sys/bus/usb/devices/*/idVendor"):
        vendor = reader.read(rel)
        product = reader.read(os.path.join(os.path.dirname(rel), "idProduct"))
        if vendor is None or product is None:
            continue
        vendor, product = vendor.strip().lower(), product.strip().lower()
        if vendor and product:
            ids.add(f"{vendor}:{product}")
    return sorted(ids)


def read_packages(reader: Reader) -> dict[str, dict[str, str]] | None:
    text = reader.read("var/lib/dpkg/status")
    if text is None:
        if not reader.exists("var/lib/dpkg/status"):
            reader.warnings.append("no dpkg database at /var/lib/dpkg/status: package versions unknown")
        return None
    return parse_dpkg_status(text)


def jetson_facts(reader: Reader, packages: dict | None, nv_text: str | None) -> dict:
    pkgs = packages or {}
    nv = parse_nv_tegra_release(nv_text) if nv_text is not None else None
    l4t = None
    l4t_source = None
    if nv and nv["release"]:
        l4t, l4t_source = nv["release"], "/etc/nv_tegra_release"
    else:
        if nv_text is not None:
            reader.warnings.append(
                f"/etc/nv_tegra_release has no complete release line ({nv_text.strip()[:80]!r}); "
                "trying the nvidia-l4t-core package"
            )
        core = pkgs.get("nvidia-l4t-core")
        if core:
            l4t = upstream_version(core["version"])
            l4t_source = "nvidia-l4t-core package"
            if l4t and l4t.count(".") == 1:
                l4t += ".0"
    if l4t is None and nv and nv["major"]:
        reader.warnings.append("only the L4T major release (R{}) is known".format(nv["major"]))
    major = l4t.split(".")[0] if l4t else (nv["major"] if nv else None)
    jetpack = JETPACK_BY_L4T.get(l4t, "unknown") if l4t else "unknown"

    cuda = None
    cuda_json = reader.read("usr/local/cuda/version.json")
    if cuda_json is not None:
        try:
            cuda = json.loads(cuda_json)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            reader.warnings.append("/usr/local/cuda/version.json is not valid CUDA version JSON")
    if cuda is None:
        cuda_txt = reader.read("usr/local/cuda/version.txt")
        if cuda_txt:
            found = _VERSION_RE.search(cuda_txt)
            cuda = found.group(0) if found else None
    if cuda is None:
        for name in sorted(pkgs):
            if re.match(r"^cuda-(cudart|toolkit|runtime)-\d+-\d+$", name):
                cuda = upstream_version(pkgs[name]["version"])
                break
        else:
            if "cuda" in pkgs and not re.match(r"^\d+\.\d+\+", pkgs["cuda"]["version"]):
                cuda = upstream_version(pkgs["cuda"]["version"])

    tensorrt = None
    for name in TENSORRT_PACKAGES:
        if name in pkgs:
            tensorrt = upstream_version(pkgs[name]["version"])
            break

    return {
        "l4t": l4t,
        "l4t_major": major,
        "l4t_source": l4t_source,
        "board": nv["board"] if nv else None,
        "jetpack": jetpack,
        "cuda": cuda,
        "tensorrt": tensorrt,
        "power_mode": power_mode(reader),
    }


def power_mode(reader: Reader) -> dict | None:
    """nvpmodel state from its files, or None where nvpmodel is not installed."""
    conf = reader.read("etc/nvpmodel.conf")
    has_tool = any(reader.exists(p) for p in ("usr/sbin/nvpmodel", "usr/bin/nvpmodel"))
    if conf is None and not has_tool:
        return None
    modes: dict[int, str] = {}
    default = None
    for match in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf or ""):
        modes[int(match.group(1))] = match.group(2)
    dmatch = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", conf or "")
    if dmatch:
        default = int(dmatch.group(1))
    current = None
    source = None
    status = reader.read("var/lib/nvpmodel/status")
    if status:
        smatch = re.search(r"pmode:\s*(\d+)", status)
        if smatch:
            current, source = int(smatch.group(1)), "/var/lib/nvpmodel/status"
    if current is None and default is not None:
        current, source = default, "default in /etc/nvpmodel.conf"
    return {
        "id": current,
        "name": modes.get(current) if current is not None else None,
        "default_id": default,
        "source": source,
        "modes": {str(k): v for k, v in sorted(modes.items())},
    }


def coral_facts(reader: Reader, packages: dict | None, model: str | None, compatible: list[str],
                apex_nodes: list[str], usb_ids: list[str], kernel_release: str | None) -> dict:
    pkgs = packages or {}
    text = " ".join([model or ""] + compatible).lower()
    if "phanbell" in text or "coral dev board" in text or "imx8mq-phanbell" in text:
        variant = "dev_board"
    elif apex_nodes:
        variant = "pcie"
    elif any(i in usb_ids for i in CORAL_USB_IDS):
        variant = "usb"
    else:
        variant = None
    runtime = None
    for name in EDGETPU_PACKAGES:
        if name in pkgs:
            runtime = {"package": name, "version": pkgs[name]["version"]}
            break
    module = {"loaded": reader.exists("sys/module/apex"), "built_for_kernel": None}
    if kernel_release:
        built = []
        for base in ("lib/modules", "usr/lib/modules"):
            built += reader.glob(f"{base}/{kernel_release}/**/apex.ko*")
            built += reader.glob(f"{base}/{kernel_release}/*/*/apex.ko*")
        module["built_for_kernel"] = bool(built)
    return {
        "variant": variant,
        "apex_nodes": [f"/dev/{os.path.basename(n)}" for n in apex_nodes],
        "usb_ids": [i for i in usb_ids if i in CORAL_USB_IDS],
        "usb_firmware_loaded": "18d1:9302" in usb_ids,
        "edgetpu_runtime": runtime,
        "gasket_dkms": pkgs.get("gasket-dkms", {}).get("version"),
        "apex_module": module,
    }


def engine_facts(reader: Reader, packages: dict | None, docker_version=None) -> dict:
    """Container engine state. docker_version: optional callable(binary_path) -> dict|None."""
    pkgs = packages or {}
    binary = next((b for b in ENGINE_BINARIES if reader.exists(b)), None)
    package = next((p for p in DOCKER_PACKAGES if p in pkgs), None)
    facts = {
        "installed": bool(binary or package),
        "package": package,
        "package_version": pkgs[package]["version"] if package else None,
        "version": None,
        "client_version": None,
        "running": None,
        "daemon_config": None,
        "runtimes": [],
        "default_runtime": None,
        "nvidia_runtime": False,
        "nvidia_default": False,
        "cdi_specs": [],
    }
    if package:
        facts["version"] = upstream_version(pkgs[package]["version"])
    client = next((b for b in ("usr/bin/docker", "usr/local/bin/docker") if reader.exists(b)), None)
    if client and docker_version is not None:
        live = docker_version(reader.path(client))
        if live:
            client_v = (live.get("Client") or {}).get("Version")
            server_v = (live.get("Server") or {}).get("Version")
            facts["client_version"] = client_v
            facts["running"] = bool(server_v)
            if server_v:
                facts["version"] = server_v
    cfg = {}
    text = reader.read("etc/docker/daemon.json")
    if text is not None:
        facts["daemon_config"] = "/etc/docker/daemon.json"
        if text.strip():
            try:
                cfg = json.loads(text)
                if not isinstance(cfg, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                reader.warnings.append(f"/etc/docker/daemon.json is not a JSON object: {exc}")
                cfg = {}
    runtimes = sorted(set(["runc"] + list((cfg.get("runtimes") or {}).keys()))) if facts["installed"] else sorted(
        (cfg.get("runtimes") or {}).keys())
    facts["runtimes"] = runtimes
    facts["default_runtime"] = cfg.get("default-runtime") or ("runc" if facts["installed"] else None)
    facts["nvidia_runtime"] = "nvidia" in runtimes
    facts["nvidia_default"] = facts["default_runtime"] == "nvidia"
    specs = []
    for base in CDI_DIRS:
        for pattern in ("*.yaml", "*.yml", "*.json"):
            specs += ["/" + p for p in reader.glob(f"{base}/{pattern}")]
    facts["cdi_specs"] = sorted(set(specs))
    return facts


def memory_total(reader: Reader, fallback_reader: Reader | None = None) -> int | None:
    for rd in (reader, fallback_reader):
        if rd is None:
            continue
        text = rd.read("proc/meminfo")
        if text is None:
            continue
        match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
        reader.warnings.append("no MemTotal line in {}/proc/meminfo".format(rd.root.rstrip("/")))
    reader.warnings.append("total memory unknown: no readable /proc/meminfo")
    return None


def storage_facts(reader: Reader, models_path: str) -> dict:
    """Free space for models_path: the nearest existing directory counts when it is missing."""
    rel = models_path.lstrip("/")
    base = os.path.abspath(reader.root)
    checked = os.path.abspath(reader.path(rel))
    while not os.path.isdir(checked) and checked != base and len(checked) > len(base):
        checked = os.path.dirname(checked)
    result = {"path": models_path, "checked_path": None, "exists": os.path.isdir(reader.path(rel)),
              "free_bytes": None, "total_bytes": None}
    try:
        st = os.statvfs(checked)
    except OSError as exc:
        reader.warnings.append(f"cannot stat the file system of {models_path}: {exc}")
        return result
    inner = os.path.relpath(checked, base)
    result["checked_path"] = "/" if inner == "." else "/" + inner
    result["free_bytes"] = st.f_bavail * st.f_frsize
    result["total_bytes"] = st.f_blocks * st.f_frsize
    return result


def gather(root: str = "/", machine: str | None = None, models_path: str = "/var/lib/edgeai/models",
           kernel_release: str | None = None, docker_version=None, host_proc_fallback: bool = True) -> dict:
    """All facts about the device whose filesystem is at ``root``."""
    reader = Reader(root)
    if machine is None:
        machine = os.uname().machine
    if kernel_release is None:
        kernel_release = os.uname().release
    packages = read_packages(reader)
    model, compatible = read_device_tree(reader)
    nv_text = reader.read("etc/nv_tegra_release")
    apex = [os.path.basename(p) for p in reader.glob("dev/apex_*")]
    usb_ids = read_usb_ids(reader)
    pkgs = packages or {}
    soc = soc_from_compatible(compatible)
    compat_text = " ".join(compatible).lower()
    model_l = (model or "").lower()

    if nv_text is not None or "nvidia,tegra" in compat_text or "nvidia-l4t-core" in pkgs or "jetson" in model_l:
        platform = "jetson"
    elif (apex or any(i in usb_ids for i in CORAL_USB_IDS) or "phanbell" in compat_text
          or "coral" in model_l or "phanbell" in model_l):
        platform = "coral"
    else:
        platform = "generic"

    facts = {
        "platform": platform,
        "model": model,
        "soc": soc,
        "compatible": compatible,
        "machine": machine,
        "arch": container_arch(machine),
        "kernel": kernel_release,
        "root": root,
        "jetson": None,
        "coral": None,
        "container_engine": engine_facts(reader, packages, docker_version),
        "storage": storage_facts(reader, models_path),
        "memory_total_bytes": None,
        "usb_ids": usb_ids,
        "dpkg_available": packages is not None,
        "warnings": reader.warnings,
    }
    if platform == "jetson":
        facts["jetson"] = jetson_facts(reader, packages, nv_text)
        if soc is None:
            reader.warnings.append("Jetson SoC unknown: /proc/device-tree/compatible names no nvidia,tegraNNN")
    elif platform == "coral":
        facts["coral"] = coral_facts(reader, packages, model, compatible, apex, usb_ids, kernel_release)
    else:
        if model is None:
            reader.warnings.append("no device-tree or DMI model string found")
        edgetpu = [p for p in EDGETPU_PACKAGES if p in pkgs]
        if edgetpu:
            reader.warnings.append(
                f"{edgetpu[0]} is installed but no Coral accelerator is visible "
                f"(no /dev/apex_* node, no USB id {' or '.join(CORAL_USB_IDS)})")
    fallback = Reader("/") if host_proc_fallback and os.path.abspath(root) != "/" else None
    facts["memory_total_bytes"] = memory_total(reader, fallback)
    return facts


def run_module(module_cls):
    """Entry point used by plugins/modules/device_facts.py."""
    module = module_cls(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)

    def docker_version(binary):
        rc, out, err = module.run_command([binary, "version", "--format", "{{json .}}"])
        try:
            return json.loads(out)
        except ValueError:
            return None

    try:
        facts = gather(
            root=module.params["root"],
            models_path=module.params["models_path"],
            docker_version=docker_version if module.params["query_engine"] else None,
        )
    except EdgeAIError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(changed=False, ansible_facts={"edge_device": facts})
