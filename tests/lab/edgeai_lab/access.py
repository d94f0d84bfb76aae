"""Reaching the running lab from tests and benchmarks.

The `lab` command, SSH to a device (a command, a tunnel), the fleet's devices by their fields,
devices of one's own (`lab device add --no-inventory`) and inventories for them, playbooks and
modules run with the project's ansible.cfg, run reports and demo releases, and what lab devices
hold of this machine (memory, disk, CPU, root's inotify instances). The integration tests' fixtures
(tests/integration/conftest.py) and the benchmarks (benchmarks/) both use these.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from edgeai_lab import inventory as lab_inventory
from edgeai_lab.core import LAB_DIR, REPO

LAB = LAB_DIR / "lab"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"


class LabAccessError(AssertionError):
    """A lab command, an SSH command or a playbook's report was not what it should be. An
    AssertionError, so that a test shows it as a failed check."""


def lab_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False)


def lab(*args: str, timeout: float = 600) -> str:
    """`tests/lab/lab ARGS`' output; LabAccessError when it fails."""
    proc = lab_cli(*args, timeout=timeout)
    if proc.returncode != 0:
        raise LabAccessError(f"`lab {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def status() -> dict[str, Any]:
    return json.loads(lab("status", "--json", timeout=60))


def link(target: str, *args: str) -> dict[str, Any]:
    """`lab link TARGET ARGS --json`: a site's or a device's link shaped by ARGS (none: read only), its rule and
    byte counters (newer than the call)."""
    return json.loads(lab("link", target, *args, "--json", timeout=60))


def link_bytes(target: str) -> dict[str, int]:
    """Bytes down (centre -> target) per service that crossed the link of a site or a device so far."""
    return {service: int(c.get("down", 0)) for service, c in link(target)["bytes"].items()}


def devices_by(status: dict[str, Any], **match: str | None) -> list[str]:
    """Names of the lab's fleet devices matching all fields (platform=, hardware=, site=, profile=).
    Devices added by others with `lab device add` (molecule, benchmarks) are left out unless
    origin=None is given: tests must not touch them."""
    match.setdefault("origin", "fleet")
    return [n for n, d in sorted(status["devices"].items())
            if all(d.get(k) == v for k, v in match.items() if v is not None)]


# -- SSH ---------------------------------------------------------------------------------------
class Ssh:
    """A device over SSH: root (or user) at 127.0.0.1:port with the lab's key."""

    def __init__(self, name: str, port: int, key: str, user: str = "root", host: str = "127.0.0.1") -> None:
        self.name, self.port, self.key, self.user, self.host = name, int(port), key, user, host

    @classmethod
    def of(cls, status: dict[str, Any], device: str) -> Ssh:
        ssh = status["devices"][device]["ssh"]
        return cls(device, ssh["port"], status["ssh_key"], ssh["user"], ssh["host"])

    def argv(self, *options: str) -> list[str]:
        return ["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", *options,
                f"{self.user}@{self.host}"]

    def run(self, command: str, *, input: str | bytes | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `command` on the device; bytes given as input are sent as they are. The output is text."""
        proc = subprocess.run([*self.argv(), command], input=input.encode() if isinstance(input, str) else input,
                              capture_output=True, timeout=timeout, check=False)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise LabAccessError(f"{self.name}: `{command}` exited {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    @contextlib.contextmanager
    def tunnel(self, remote_port: int) -> Iterator[int]:
        """A free 127.0.0.1 port forwarded to the device's 127.0.0.1:remote_port."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        proc = subprocess.Popen(self.argv("-N", "-o", "ExitOnForwardFailure=yes",
                                          "-L", f"127.0.0.1:{local}:127.0.0.1:{remote_port}"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LabAccessError(f"ssh tunnel to {self.name} did not come up: "
                                         f"{proc.stderr.read().decode() if proc.poll() is not None else 'timeout'}")
                try:
                    socket.create_connection(("127.0.0.1", local), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            yield local
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# -- devices of one's own ------------------------------------------------------------------------
def add_device(name: str, profile: str, site: str, *options: str, timeout: float = 600, retries: int = 0,
               log=print) -> dict[str, Any]:
    """`lab device add NAME --no-inventory`: a device outside the lab's fleet and inventories.
    Returns what the command prints (port, identity_file, container). retries: tries after a failed
    one, the half-added device removed first (a busy machine can keep a device's systemd booting
    past the lab's readiness timeout)."""
    while True:
        try:
            out = lab("device", "add", name, "--profile", profile, "--site", site, "--no-inventory", *options,
                      timeout=timeout)
            return json.loads(out.strip().splitlines()[-1])
        except LabAccessError as exc:
            if retries <= 0:
                raise
            retries -= 1
            log(f"adding {name} failed, once more: {str(exc).splitlines()[-1]}")
            remove_devices([name], log)


def remove_devices(names: Iterable[str], log=print) -> None:
    """`lab device rm` each of them; a device that cannot be removed is logged, not raised."""
    for name in sorted(names):
        try:
            lab("device", "rm", name, timeout=300)
        except (LabAccessError, subprocess.TimeoutExpired) as exc:
            log(f"could not remove {name}: {exc}")


@contextlib.contextmanager
def own_devices(devices: dict[str, tuple[str, ...]], log=print, timeout: float = 600) -> Iterator[dict[str, Any]]:
    """Devices of a test's or a benchmark's own, name -> (profile, site, *`lab device add` options): those an
    interrupted run left are removed, root's room for them is checked (room_for), then each is added (add_device);
    yields what each add printed. All are removed at the end, also when adding failed half-way."""
    remove_devices(set(devices) & set(status()["devices"]), log)
    room_for(len(devices))
    try:
        yield {name: add_device(name, profile, site, *options, timeout=timeout)
               for name, (profile, site, *options) in devices.items()}
    finally:
        remove_devices(devices, log)


def write_site_vars(directory: Path) -> Path:
    """The lab's site settings (registry, apt mirrors, event API) as group_vars beside an inventory."""
    (directory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (directory / "group_vars" / "all" / "site.yml").write_text(lab_inventory.SITE_VARS_SRC.read_text())
    return directory


def registry_inventory(directory: Path, fleet: dict[str, dict[str, Any]], devices: dict[str, dict[str, Any]],
                       allow_ansible_vars: bool = True) -> Path:
    """A device_registry inventory of `fleet` (name -> site, platform, hardware, ring, and vars of its own)
    with the lab's host vars, as `lab up` writes one for its fleet; `devices`: their `lab status` entries.
    Returns the plugin's config file. allow_ansible_vars=False leaves the option out (plugins from before it)."""
    directory.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in lab_inventory.lab_vars().items() if k != "ansible_user"}
    entries = [{"id": name, "address": "127.0.0.1", "port": devices[name]["ssh"]["port"], "user": "root",
                "ring": "broad", "maintenance": False, **{k: v for k, v in spec.items() if k != "vars"},
                "vars": common | lab_inventory.device_vars(name, devices[name]) | spec.get("vars", {})}
               for name, spec in fleet.items()]
    (directory / "devices.yml").write_text(yaml.safe_dump({"devices": entries}, sort_keys=False))
    config = {"plugin": "edgeai.fleet.device_registry", "source_file": "devices.yml"}
    if allow_ansible_vars:  # the lab's vars name its key
        config["allow_ansible_vars"] = ["ansible_ssh_private_key_file"]
    path = directory / "lab.device_registry.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    write_site_vars(directory)
    return path


def static_inventory(directory: Path, name: str, tree: dict[str, Any]) -> Path:
    """A YAML inventory `directory/name`: `tree` is its `all` group, the lab's vars under its own."""
    tree = dict(tree, vars=lab_inventory.lab_vars() | tree.get("vars", {}))
    write_site_vars(directory)
    (directory / name).write_text(yaml.safe_dump({"all": tree}, sort_keys=False))
    return directory / name


# -- playbooks -----------------------------------------------------------------------------------
def playbook_env(control_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment playbooks run in: the repository's ansible.cfg, no colour, the venv first on
    PATH; control_dir: SSH masters of one's own (after a device goes, its port may be someone else's)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    if control_dir is not None:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
    env.update(extra)
    return env


def ssh_masters(under: Path) -> list[int]:
    """Pids of the SSH ControlPersist masters whose sockets are under `under` (a playbook_env control_dir, or a
    folder of them): a master's command line is "ssh: <socket> [mux]"."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if stat.read_text().split(") ", 1)[0].endswith("(ssh") and str(under) in (
                    stat.parent / "cmdline").read_text():
                found.append(int(stat.parent.name))
    return found


def close_ssh_masters(under: Path) -> None:
    """End the SSH masters under `under` (ssh_masters) and reap those that are this process's children (a
    subreaper's orphans among them), so that their CPU counts among its children's."""
    for pid in ssh_masters(under):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def run_playbook(inventory: str | Path, playbook: str | Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """ansible-playbook -i inventory playbook ARGS from the repository root (playbook relative to it)."""
    return subprocess.run([str(PLAYBOOK), "-i", str(inventory), str(playbook), *args], cwd=REPO,
                          env=env or playbook_env(), capture_output=True, text=True, timeout=timeout, check=False)


def run_module(inventory: str | Path, pattern: str, module: str, args: dict[str, Any], *,
               env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """One module on the hosts of `pattern` (`ansible PATTERN -m MODULE -a JSON`), from the repository root."""
    return subprocess.run([str(BIN / "ansible"), pattern, "-i", str(inventory), "-m", module, "-a", json.dumps(args)],
                          cwd=REPO, env=env or playbook_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def run_playbook_ok(inventory: str | Path, playbook: str | Path, *args: str, env: dict[str, str] | None = None,
                    timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """run_playbook; LabAccessError with the end of its output when it fails."""
    proc = run_playbook(inventory, playbook, *args, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise LabAccessError(f"{Path(playbook).name} on {Path(inventory).name} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc


def read_report(directory: Path) -> dict[str, Any]:
    """The one run report (*.json) a deploy_model.yml or rollback.yml run wrote into directory."""
    reports = sorted(Path(directory).glob("*.json"))
    if len(reports) != 1:
        raise LabAccessError(f"expected one report in {directory}, found {[p.name for p in reports]}")
    return json.loads(reports[0].read_text())


@cache
def _demo_module() -> Any:
    loader = importlib.machinery.SourceFileLoader("demo_release", str(REPO / "scripts" / "demo-release"))
    spec = importlib.util.spec_from_loader("demo_release", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.DEFAULT_OUT = module.OUT
    return module


def demo_release(version: int, failing_groups: tuple[str, ...] = (), *, https: bool = False,
                 name: str = "detector", out: Path | None = None) -> Path:
    """The release file of demo version `version` (scripts/demo-release: version N answers [N, 2N, 3N, 4N]).
    failing_groups: those inventory groups get an artifact no server loads; https: artifacts from the
    lab's artifact store; name: the demo model under another name; out: written there instead of
    .lab/demo (which the tests share)."""
    demo = _demo_module()
    demo.OUT = Path(out) if out is not None else demo.DEFAULT_OUT
    release_file = demo.build(version, https, name)
    if not failing_groups:
        return release_file
    failing_path, failing_sha = demo.build_failing(version, name)
    release = yaml.safe_load(release_file.read_text())
    for group in failing_groups:
        release["edgeai_release"]["artifacts"][group] = {"src": str(failing_path), "sha256": failing_sha}
    planted = release_file.with_name(f"release-{version}-failing.yml")
    planted.write_text(yaml.safe_dump(release))
    return planted


# -- what lab devices hold on this machine -------------------------------------------------------
INOTIFY_PER_DEVICE = 7  # root's inotify instances a running lab device holds (its systemd, logind, containerd)
CGROUP_MEM = Path("/sys/fs/cgroup/memory/docker")
CGROUP_CPU = Path("/sys/fs/cgroup/cpuacct/docker")


def inotify_instances() -> tuple[dict[str, int], int]:
    """Root's inotify instances open now by container name ("" for the rest), and root's limit
    (fs.inotify.max_user_instances). Containers without a user namespace share root's limit, and
    every lab device's systemd, logind and containerd hold some: a device that finds none left
    never boots (systemd: "Failed to create inotify object: Too many open files")."""
    names = dict(line.split() for line in subprocess.run(
        ["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"], capture_output=True, text=True,
        check=True).stdout.splitlines() if line)
    out: dict[str, int] = {}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) != "anon_inode:inotify" or fd.parents[1].stat().st_uid != 0:
                continue
            cgroup = next(line for line in Path(fd.parents[1], "cgroup").read_text().splitlines() if ":memory:" in line)
        except (OSError, StopIteration):
            continue
        parts = cgroup.split(":", 2)[2].split("/")
        key = names.get(parts[2], "") if len(parts) > 2 and parts[1] == "docker" else ""
        out[key] = out.get(key, 0) + 1
    return out, int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())


def room_for(devices: int, reserve: int = 0) -> tuple[int, int]:
    """Root's inotify instances free now (less `reserve`) and its limit. LabAccessError when `devices`
    more lab devices would not find theirs: they would never finish booting."""
    held, limit = inotify_instances()
    free = limit - sum(held.values()) - reserve
    if free < INOTIFY_PER_DEVICE * devices:
        raise LabAccessError(
            f"root holds {sum(held.values())} of its {limit} inotify instances (fs.inotify.max_user_instances): "
            f"not enough for {devices} more lab devices (about {INOTIFY_PER_DEVICE} each). Remove lab devices "
            "(`tests/lab/lab device rm NAME`), or raise the limit (scripts/host-setup).")
    return free, limit


def device_containers(name: str, engine: bool = True) -> list[str]:
    """Ids of a lab device's container and (engine) of the containers its own engine runs; in cgroup v1
    these are siblings, not children, of the device's cgroup."""
    container = f"edgeai-lab-{name}"
    ids = [subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True,
                          check=True).stdout.strip()]
    if engine:
        ids += subprocess.run(["docker", "exec", container, "docker", "ps", "-q", "--no-trunc"], capture_output=True,
                              text=True, check=False).stdout.split()
    return ids


def containers_cpu_s(ids: Iterable[str]) -> float:
    """User + system CPU seconds these containers have used (cgroup v1 cpuacct); one that is gone counts 0."""
    return sum(int((CGROUP_CPU / c / "cpuacct.usage").read_text()) for c in ids if (CGROUP_CPU / c).exists()) / 1e9


def device_memory(name: str) -> dict[str, int]:
    """Working set ("ws") and RSS (cgroup v1) of a lab device's container and the containers of its own engine."""
    def one(cid: str) -> tuple[int, int]:
        stat = dict(line.split() for line in (CGROUP_MEM / cid / "memory.stat").read_text().splitlines())
        usage = int((CGROUP_MEM / cid / "memory.usage_in_bytes").read_text())
        return usage - int(stat["total_inactive_file"]), int(stat["total_rss"])

    pairs = [one(c) for c in device_containers(name) if (CGROUP_MEM / c).exists()]
    return {"ws": sum(p[0] for p in pairs), "rss": sum(p[1] for p in pairs)}


def device_disk(name: str) -> int:
    """Bytes under the lab device's /var/lib/docker (its engine's images and containers)."""
    return int(subprocess.run(["docker", "exec", f"edgeai-lab-{name}", "du", "-sx", "--block-size=1",
                               "/var/lib/docker"], capture_output=True, text=True, check=True).stdout.split()[0])


# -- a device's inference server -----------------------------------------------------------------
def replacement_run(info: dict[str, Any], image: str, leave_out: str) -> list[str]:
    """The `docker run` arguments that replace a container (its `docker inspect` `info`) with one of `image`: same
    name, restart policy, runtime, memory limit, ports, devices, device rules, io.edgeai.* labels, entrypoint and
    command, and its mounts but the one at `leave_out` (what the new image holds instead)."""
    host, config = info["HostConfig"], info["Config"]
    runtime, entry = host.get("Runtime"), config.get("Entrypoint") or []
    flags = [("--restart", host.get("RestartPolicy", {}).get("Name")),
             ("--runtime", runtime if runtime != "runc" else None),
             ("--memory", str(host["Memory"]) if host.get("Memory") else None),
             ("--entrypoint", entry[0] if entry else None)]
    flags += [("-p", f"{b['HostIp'] + ':' if b['HostIp'] else ''}{b['HostPort']}:{port.split('/')[0]}")
              for port, binds in sorted((host.get("PortBindings") or {}).items()) for b in binds]
    flags += [("--device", f"{d['PathOnHost']}:{d['PathInContainer']}") for d in host.get("Devices") or []]
    flags += [("--device-cgroup-rule", rule) for rule in host.get("DeviceCgroupRules") or []]
    flags += [("-v", f"{m['Source']}:{m['Destination']}{'' if m.get('RW', True) else ':ro'}")
              for m in info.get("Mounts", []) if m["Destination"] != leave_out]
    flags += [("--label", f"{k}={v}") for k, v in sorted((config.get("Labels") or {}).items())
              if k.startswith("io.edgeai.")]
    return ["docker", "run", "-d", "--name", info["Name"].lstrip("/"),
            *(a for flag, value in flags if value for a in (flag, value)), image, *entry[1:],
            *(config.get("Cmd") or [])]


def server_load_window(logs: str, model: str, version: int, since: float) -> tuple[float, float] | None:
    """When a server began and finished loading `version` of `model`, in seconds after `since` (epoch), from its
    `docker logs -t`: Triton's "loading: M:V" and "successfully loaded 'M'", or the LiteRT server's JSON
    "model loaded" entry and its load_s. None when the log does not say."""
    start = None
    for stamp, _, line in (raw.partition(" ") for raw in logs.splitlines()):
        with contextlib.suppress(ValueError):
            if model not in line:
                continue
            at = datetime.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp() - since
            if f"loading: {model}:{version}" in line:
                start = at
            elif start is not None and f"successfully loaded '{model}'" in line:
                return start, at
            elif line.strip().startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "model loaded" and version in entry.get("versions", []):
                    return at - float(entry.get("load_s", 0.0)), at
    return None
