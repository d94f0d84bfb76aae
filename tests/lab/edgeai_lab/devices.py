"""Device containers: create with the docker-in-docker flags, apply the profile, wait, remove."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import yaml

from edgeai_lab.access import Ssh
from edgeai_lab.apt import APT_DIR, KEYRING_NAME
from edgeai_lab.core import (
    APT_HOST,
    APT_PORT,
    ARTIFACTS_HOST,
    CAPABILITIES,
    CONTAINER_PREFIX,
    LABEL,
    NETWORK_PREFIX,
    PROFILES_DIR,
    REGISTRY_HOST,
    REGISTRY_PORT,
    WEBHOOK_HOST,
    LabError,
    docker,
    log,
    sha256_text,
)

DEVICE_ROOT = "/opt/edgeai-lab/root"
# The data centre's services, as each device's /etc/hosts names them (its site's gateway).
CENTRAL_HOSTS = (REGISTRY_HOST, APT_HOST, WEBHOOK_HOST, ARTIFACTS_HOST)
ROOT_LINKS = ("etc", "var", "usr", "dev", "opt", "run")
MADE_LABEL = "edgeai.lab.made"


def load_profile(name: str) -> dict[str, Any]:
    f = PROFILES_DIR / name / "profile.yml"
    if not f.exists():
        known = ", ".join(sorted(p.parent.name for p in PROFILES_DIR.glob("*/profile.yml")))
        raise LabError(f"unknown profile {name!r} (known: {known})")
    return yaml.safe_load(f.read_text())


def container_name(device: str) -> str:
    return CONTAINER_PREFIX + device


def volume_name(device: str) -> str:
    return f"{CONTAINER_PREFIX}{device}-docker"


def network_name(site: str) -> str:
    return NETWORK_PREFIX + site


def site_gateway(index: int) -> tuple[str, str]:
    """Subnet and gateway of a site network. 10.213.<n>.0/24 stays clear of 172.17.0.0/16, which
    the device's own Docker engine takes for its docker0 (so `host-gateway` cannot be used)."""
    return f"10.213.{index}.0/24", f"10.213.{index}.1"


def ensure_network(site: str, index: int) -> str:
    """Create the site's network; returns the gateway IP (the host, as devices see it)."""
    name = network_name(site)
    subnet, gw = site_gateway(index)
    if docker("network", "inspect", name, "--format", "{{.Id}}", check=False).returncode != 0:
        docker("network", "create", "--label", LABEL, "--label", f"edgeai.lab.site={site}",
               "--subnet", subnet, "--gateway", gw, name)
    return gw


def container_info(device: str) -> dict[str, Any] | None:
    proc = docker("container", "inspect", container_name(device), check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def _add_file(tar: tarfile.TarFile, path: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, path: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, path: str, target: str) -> None:
    info = tarfile.TarInfo(path)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, int(time.time())
    tar.addfile(info)


def overlay_tar(device: str, profile: dict[str, Any], ssh_pub: str, ca_crt: bytes, keyring: bytes,
                meta: dict[str, Any]) -> bytes:
    """The files the lab puts into a device before it boots (copied with `docker cp -`)."""
    buf = io.BytesIO()
    prof_root = PROFILES_DIR / profile["name"] / "root"
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("root", 0o700), ("root/.ssh", 0o700), ("etc", 0o755), ("etc/edgeai-lab", 0o755),
                        ("etc/docker", 0o755), ("etc/docker/certs.d", 0o755),
                        (f"etc/docker/certs.d/{REGISTRY_HOST}:{REGISTRY_PORT}", 0o755),
                        ("usr", 0o755), ("usr/local", 0o755), ("usr/local/share", 0o755),
                        ("usr/local/share/ca-certificates", 0o755), ("opt", 0o755), ("opt/edgeai-lab", 0o755),
                        ("opt/edgeai-lab/root", 0o755)):
            _add_dir(tar, d, mode)
        _add_file(tar, "root/.ssh/authorized_keys", ssh_pub.encode(), 0o600)
        _add_file(tar, f"etc/docker/certs.d/{REGISTRY_HOST}:{REGISTRY_PORT}/ca.crt", ca_crt)
        _add_file(tar, "usr/local/share/ca-certificates/edgeai-lab-ca.crt", ca_crt)
        _add_file(tar, "etc/edgeai-lab/device.json", (json.dumps(meta, indent=2) + "\n").encode())
        _add_file(tar, "etc/edgeai-lab/profile.yml", (PROFILES_DIR / profile["name"] / "profile.yml").read_bytes())
        # what the kernel lets a container have for real: the L4T release file
        if (prof_root / "etc" / "nv_tegra_release").exists():
            _add_file(tar, "etc/nv_tegra_release", (prof_root / "etc" / "nv_tegra_release").read_bytes())
        if (prof_root / "etc" / "mendel_version").exists():
            _add_file(tar, "etc/mendel_version", (prof_root / "etc" / "mendel_version").read_bytes())
        # the vendor apt source, as the real board ships it (boards with preinstalled packages)
        if profile.get("packages"):
            _add_dir(tar, "usr/share", 0o755)
            _add_dir(tar, "usr/share/keyrings", 0o755)
            _add_file(tar, f"usr/share/keyrings/{KEYRING_NAME}", keyring)
            _add_dir(tar, "etc/apt", 0o755)
            _add_dir(tar, "etc/apt/sources.list.d", 0o755)
            _add_file(tar, f"etc/apt/sources.list.d/edgeai-lab-{profile['apt_suite']}.list",
                      (f"# STAND-IN for the vendor repository (edgeai lab)\n"
                       f"deb [signed-by=/usr/share/keyrings/{KEYRING_NAME}] http://{APT_HOST}:{APT_PORT}/ "
                       f"{profile['apt_suite']} main\n").encode())
        # what cannot be real in a container (device tree, USB sysfs) lives under DEVICE_ROOT
        for sub in ("proc", "sys"):
            base = prof_root / sub
            if not base.exists():
                continue
            for path in sorted(base.rglob("*")):
                rel = "opt/edgeai-lab/root/" + path.relative_to(prof_root).as_posix()
                if path.is_dir():
                    _add_dir(tar, rel)
                else:
                    _add_file(tar, rel, path.read_bytes())
            _add_dir(tar, f"opt/edgeai-lab/root/{sub}")
        for link in ROOT_LINKS:
            _add_link(tar, f"opt/edgeai-lab/root/{link}", f"../../../{link}")
    return buf.getvalue()


def made_from(ssh_pub: str, ca_crt: bytes, keyring: bytes, meta: dict[str, Any], gateway: str) -> str:
    """A digest of what a device is made with that differs from one lab to another (another checkout's
    `.lab`, or one made again): the SSH key it lets in, the CA and apt keyring it trusts, its port, site
    and gateway. Kept in the container's MADE_LABEL."""
    return sha256_text(ssh_pub, ca_crt, keyring, json.dumps(meta, sort_keys=True), gateway)[:16]


def stale(info: dict[str, Any], image: str, profile_name: str, made: str) -> str | None:
    """Why the existing container `info` (docker inspect) cannot serve as this device, or None."""
    labels = info["Config"]["Labels"] or {}
    # Docker rewrites /etc/hosts from --add-host at every start: a device made before a
    # central host existed must be made again to know it for good.
    hosts = {entry.split(":")[0] for entry in info["HostConfig"].get("ExtraHosts") or []}
    if info["Config"]["Image"] != image or labels.get("edgeai.lab.profile") != profile_name:
        return "image or profile changed"
    if labels.get(MADE_LABEL) != made:
        # e.g. left by the lab of another checkout: it would refuse this lab's SSH key
        return "made by another lab (SSH key, CA, port or site), or before the lab labelled that"
    if not hosts >= set(CENTRAL_HOSTS):
        return f"made before {', '.join(sorted(set(CENTRAL_HOSTS) - hosts))} existed"
    return None


def create_device(device: str, profile_name: str, site: str, port: int, image: str, *, ssh_pub: str,
                  ca_crt: bytes, meta: dict[str, Any], gateway: str) -> None:
    profile = load_profile(profile_name)
    keyring = (APT_DIR / KEYRING_NAME).read_bytes()
    made = made_from(ssh_pub, ca_crt, keyring, meta, gateway)
    info = container_info(device)
    if info is not None:
        why = stale(info, image, profile_name, made)
        if why is None:
            if not info["State"]["Running"]:
                docker("start", container_name(device))
            return
        log(f"{device}: {why}: recreating")
        remove_device(device)
    net = network_name(site)
    vol = volume_name(device)
    docker("volume", "create", "--label", LABEL, "--label", f"edgeai.lab.device={device}", vol)
    args = ["create", "--name", container_name(device), "--hostname", device,
            "--label", LABEL, "--label", f"edgeai.lab.device={device}", "--label", f"edgeai.lab.site={site}",
            "--label", f"edgeai.lab.profile={profile_name}", "--label", f"edgeai.lab.ssh_port={port}",
            "--label", f"{MADE_LABEL}={made}",
            "--network", net, "--network-alias", device, "-p", f"127.0.0.1:{port}:22",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", f"{vol}:/var/lib/docker",
            "--stop-timeout", "20"]
    for cap in CAPABILITIES:
        args += ["--cap-add", cap]
    for host in CENTRAL_HOSTS:
        args += ["--add-host", f"{host}:{gateway}"]
    for node in profile.get("device_nodes", []):
        # STAND-IN: a real char node named like the accelerator's, backed by /dev/null
        args += ["--device", f"/dev/null:/dev/{node}"]
    docker(*args, image)
    docker("cp", "-", f"{container_name(device)}:/", input=overlay_tar(device, profile, ssh_pub, ca_crt, keyring, meta))
    docker("start", container_name(device))


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


def ensure_inotify(wanted: int = 1024) -> None:
    """systemd in every device holds about 7 of root's inotify instances: at the kernel's default
    of 128 the 19th device never boots. Raise the limit (never lower it), or say why devices hang."""
    try:
        current = int(INOTIFY_INSTANCES.read_text())
    except (OSError, ValueError):
        return
    if current >= wanted:
        return
    try:
        INOTIFY_INSTANCES.write_text(f"{wanted}\n")
        log(f"fs.inotify.max_user_instances {current} -> {wanted} (each device's systemd needs ~7)")
    except OSError as exc:
        log(f"WARNING: fs.inotify.max_user_instances is {current} and cannot be raised ({exc}): "
            f"devices past about {current // 7} will not boot")


def device_address(device: str) -> str:
    """The device's address on its site network."""
    return docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  container_name(device)).stdout.strip()


def wait_ready(device: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = docker("exec", container_name(device), "systemctl", "is-system-running", check=False)
        last = proc.stdout.strip()
        if last in ("running", "degraded"):
            active = docker("exec", container_name(device), "systemctl", "is-active", "ssh", "docker", check=False)
            if active.returncode == 0:
                if last == "degraded":
                    failed = docker("exec", container_name(device), "systemctl", "--failed", "--no-legend",
                                    check=False).stdout
                    log(f"{device}: systemd degraded: {failed.strip()}")
                return
        time.sleep(1)
    raise LabError(f"{device}: not ready after {timeout:.0f}s (systemd: {last or 'no answer'})")


def apply_packages(device: str, profile_name: str) -> None:
    """Install the profile's stand-in packages from the lab apt repo (real apt + dpkg)."""
    profile = load_profile(profile_name)
    pkgs = profile.get("packages") or []
    if not pkgs:
        return
    want = sha256_text(json.dumps(pkgs, sort_keys=True))[:16]
    stamp = "/etc/edgeai-lab/packages.applied"
    have = docker("exec", container_name(device), "cat", stamp, check=False).stdout.strip()
    if have == want:
        return
    src = f"sources.list.d/edgeai-lab-{profile['apt_suite']}.list"
    opts = ["-o", f"Dir::Etc::sourcelist={src}", "-o", "Dir::Etc::sourceparts=-", "-o", "APT::Get::List-Cleanup=0"]
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; "
        f"apt-get -qq {' '.join(opts)} update; "
        "apt-get -qq -y --no-install-recommends install "
        f"{' '.join(p['name'] + '=' + p['version'] for p in pkgs)} >/dev/null; "
        f"echo {want} > {stamp}"
    )
    proc = docker("exec", container_name(device), "sh", "-c", script, check=False, timeout=300)
    if proc.returncode != 0:
        raise LabError(f"{device}: installing the profile's stand-in packages failed:\n{proc.stdout}{proc.stderr}")


def check_login(device: str, port: int, key: str, timeout: float = 30.0) -> None:
    """Root logs in over SSH on 127.0.0.1:port with the lab's key, as tests and playbooks do."""
    deadline = time.monotonic() + timeout
    while True:
        proc = Ssh(device, port, key).run("true", check=False, timeout=60)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{device}: root cannot log in over SSH on port {port} with {key}: {proc.stderr.strip()}")
        time.sleep(1)


def remove_device(device: str) -> None:
    docker("rm", "-f", "-v", container_name(device), check=False)
    docker("volume", "rm", "-f", volume_name(device), check=False)


def lab_containers() -> list[dict[str, str]]:
    """Containers the lab created. Images built FROM the lab's base inherit its `edgeai.lab=1`
    label, so their containers carry it too: only `edgeai.lab.device`, set at `docker create`
    by the lab, marks a lab device."""
    out = docker("ps", "-a", "--filter", f"label={LABEL}", "--filter", "label=edgeai.lab.device",
                 "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def prune_networks(keep_sites: set[str]) -> None:
    out = docker("network", "ls", "--filter", f"label={LABEL}", "--format", "{{.Name}}").stdout.split()
    for net in out:
        if net[len(NETWORK_PREFIX):] not in keep_sites:
            docker("network", "rm", net, check=False)
