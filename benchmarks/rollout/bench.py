#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout time on lab devices: a model update and a no-op re-run of playbooks/deploy_model.yml.

The bench adds its own devices to the running lab (`tests/lab/lab device add --no-inventory`,
sites e2e-north/-south/-east/-west, Jetson and Coral profiles mixed), writes a device_registry
inventory for exactly them (with the lab's site group_vars) and, outside the timed part,
bootstraps them and installs version 1 of the demo model (scripts/demo-release). Then:

1. Update, timed: version 1 -> 2 with the playbook's defaults (canary wave, one device per
   site per wave) and a --soak-s canary soak. The wall time is split with the report's
   per-device numbers (`stage_s`, `load_time_s`, `smoke_latency_ms`):
   - transfer: the wave's staging span (make the folder, push the artifact, verify and unpack
     it; stage_s, measured on the controller, so it includes those tasks' SSH round trips);
   - load and smoke: the slowest device of the wave (measured on the device);
   - soak: the canary soak task as timed by ansible.posix.profile_tasks (a policy wait);
   - controller overhead = wall - soak - sum over waves of (transfer + load + smoke), i.e.
     everything that is not device-side work on the critical path: ansible-playbook's start,
     inventory, preflight, planning, the role's own checks and events, the failure budget
     checks and the report. A strict variant counts staging as controller work too.
   Goal: controller overhead under half of the total; judged on wall - soak (stricter).
2. No-op re-run on the converged fleet (every device already serves version 2), --noop-repeat
   times per tuning variant (environment variables only; ansible.cfg and the playbook are not
   edited; one proposed playbook change is measured on a copy of playbooks/). Each run gets a
   fresh SSH ControlPath directory (cold connections, as a nightly job finds them) unless the
   variant says warm. Goal: under 0.5 s per device.

Memory per device is read from cgroup v1 files (`docker stats` reads 0 B for lab devices on
this engine): the device container plus the containers its own engine runs (with the host
cgroup namespace they are siblings of the device's cgroup, not children). Working set =
usage - inactive file cache, as `docker stats` computes it.

N: --devices (default 24), capped by measurement: the inotify instances of root that the first
4 devices (one per site) hold cap the devices added (the default fs.inotify.max_user_instances
of 128 holds about 18 lab devices for all users of the machine together; see docs/rollout.md),
and their memory and disk once bootstrapped cap N to what free memory and disk hold with a
reserve for the other users of the machine. The other devices are added while the first 4
bootstrap. No-op variants are skipped when the --budget-s wall budget would be exceeded.
Every device the bench added is removed in `finally`.

    .venv/bin/python benchmarks/rollout/bench.py [--devices 24] [--soak-s 10] [--budget-s 900] [--noop-repeat 2]

Prints a Markdown section on stdout (benchmarks/run.py collects it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB = ROOT / "tests" / "lab" / "lab"
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from edgeai_lab import inventory as lab_inventory  # noqa: E402  (the lab's own inventory settings)

SITES = ("e2e-north", "e2e-south", "e2e-east", "e2e-west")
# Every profile that gets a server in the lab (generic and jetson-nano do not).
PROFILES = ("agx-orin", "coral-dev-board", "xavier-nx", "coral-usb", "orin-nano", "agx-xavier")
PLATFORM = {"agx-orin": "jetson", "orin-nano": "jetson", "xavier-nx": "jetson", "agx-xavier": "jetson",
            "coral-dev-board": "coral", "coral-usb": "coral"}
NAME = re.compile(r"^e2e-(north|south|east|west)-b\d\d$")
PILOT = len(SITES)
MEM_RESERVE_SHARE = 0.25  # of MemTotal, left to the other users of the machine
DISK_RESERVE = 20 * 2**30
INOTIFY_RESERVE = 16  # instances left for the devices of other users of the lab (2 devices)
INOTIFY_FIRST_GUESS = 7  # per device, until the first devices are measured
CGROUP_MEM = Path("/sys/fs/cgroup/memory/docker")
DOCKER_ROOT = "/var/lib/docker" if Path("/var/lib/docker").exists() else "/"
T0 = time.monotonic()


def log(msg: str) -> None:
    sys.stderr.write(f"[rollout bench {time.monotonic() - T0:6.0f}s] {msg}\n")
    sys.stderr.flush()


def lab(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"lab {' '.join(args)}: {proc.stderr[-2000:]}")
    return proc.stdout


def plan(count: int) -> dict[str, tuple[str, str]]:
    """name -> (site, profile): sites take turns, profiles cycle, so every site mixes both platforms."""
    out = {}
    for i in range(count):
        site = SITES[i % len(SITES)]
        out[f"{site}-b{i + 1:02d}"] = (site, PROFILES[i % len(PROFILES)])
    return out


def lab_devices() -> dict[str, dict[str, Any]]:
    return json.loads(lab("status", "--json", timeout=60))["devices"]


def write_inventory(directory: Path, fleet: dict[str, tuple[str, str]], devices: dict[str, dict[str, Any]]) -> Path:
    """A device_registry inventory of `fleet` (`devices`: their `lab status` entries) with the lab's own
    host vars and its site group_vars beside it, as `lab up` writes them for its fleet."""
    directory.mkdir(parents=True, exist_ok=True)
    common = {k: v for k, v in lab_inventory.lab_vars().items() if k != "ansible_user"}
    entries = [{"id": name, "site": site, "platform": PLATFORM[profile], "hardware": profile,
                "address": "127.0.0.1", "port": devices[name]["ssh"]["port"], "user": "root", "ring": "broad",
                "maintenance": False, "vars": common | lab_inventory.device_vars(name, devices[name])}
               for name, (site, profile) in fleet.items()]
    (directory / "devices.yml").write_text(yaml.safe_dump({"devices": entries}, sort_keys=False))
    config = directory / "bench.device_registry.yml"
    config.write_text("plugin: edgeai.fleet.device_registry\nsource_file: devices.yml\n"
                      "allow_ansible_vars: [ansible_ssh_private_key_file]\n")  # the lab's vars name its key
    (directory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (directory / "group_vars" / "all" / "site.yml").write_text(lab_inventory.SITE_VARS_SRC.read_text())
    return config


CPU: dict[int, float] = {}  # controller CPU seconds of each ansible-playbook run, by id of its result


def children_cpu() -> float:
    """User + system CPU seconds of finished child processes (ansible-playbook, its workers and ssh clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def close_masters(control_dir: Path) -> None:
    """End the SSH ControlPersist masters of one run (processes this bench started)."""
    for sock in control_dir.glob("*"):
        subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "bench"], capture_output=True, timeout=10, check=False)


def playbook(inventory: Path, name: str, args: list[str], work: Path, env_extra: dict[str, str] | None = None,
             control_dir: Path | None = None, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess[str]]:
    fresh = control_dir is None
    control_dir = control_dir or Path(tempfile.mkdtemp(prefix="cp-", dir=work))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir), PATH=f"{BIN}:{os.environ['PATH']}")
    env.update(env_extra or {})
    start, cpu_start = time.perf_counter(), children_cpu()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), name, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    CPU[id(proc)] = children_cpu() - cpu_start
    if fresh:
        close_masters(control_dir)
    return wall, proc


def release(version: int) -> Path:
    out = subprocess.run([str(BIN / "python"), "scripts/demo-release", str(version)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return Path(out.split("\n")[0])


def deploy(inventory: Path, version: int, work: Path, tag: str, *extra: str, env_extra=None, control_dir=None,
           playbook_path: str = "playbooks/deploy_model.yml") -> tuple[float, dict[str, Any], str, float]:
    report_dir = work / "reports" / tag
    wall, proc = playbook(inventory, playbook_path,
                          ["-e", f"@{release(version)}", "-e", f"edgeai_report_dir={report_dir}", *extra],
                          work, env_extra, control_dir)
    reports = sorted(report_dir.glob("*.json"))
    if proc.returncode != 0 or len(reports) != 1:
        raise RuntimeError(f"deploy {tag} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return wall, json.loads(reports[0].read_text()), proc.stdout, CPU.pop(id(proc))


def _mem(cid: str) -> tuple[int, int]:
    """(working set, rss) in bytes of one container's memory cgroup."""
    cg = CGROUP_MEM / cid
    usage = int((cg / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
    return usage - int(stat["total_inactive_file"]), int(stat["total_rss"])


def memory(name: str) -> dict[str, int]:
    """Memory of a device: its container and the containers of its own engine."""
    container = f"edgeai-lab-{name}"
    outer = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True,
                           check=True).stdout.strip()
    inner = subprocess.run(["docker", "exec", container, "docker", "ps", "-q", "--no-trunc"], capture_output=True,
                           text=True, check=False).stdout.split()
    ws, rss = _mem(outer)
    for cid in inner:
        if (CGROUP_MEM / cid).exists():
            w, r = _mem(cid)
            ws, rss = ws + w, rss + r
    return {"ws": ws, "rss": rss}


def disk(name: str) -> int:
    out = subprocess.run(["docker", "exec", f"edgeai-lab-{name}", "du", "-sx", "--block-size=1", "/var/lib/docker"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def inotify_instances() -> dict[str, int]:
    """Root's inotify instances open now, by container (device containers by name; "" for the rest).

    Containers without a user namespace share root's fs.inotify.max_user_instances (128 by default),
    and every lab device's systemd, logind and containerd hold some: a device that finds none left
    stays in "initializing" (systemd: "Failed to create inotify object: Too many open files")."""
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
    return out


def meminfo() -> dict[str, int]:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    return info


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def soak_seconds(stdout: str) -> float:
    """The canary soak task's time from ansible.posix.profile_tasks' recap."""
    match = re.search(r"Watch the canary for the soak period -+ ([0-9.]+)s", stdout)
    return float(match.group(1)) if match else 0.0


def top_tasks(stdout: str, count: int = 6) -> list[tuple[str, float]]:
    recap = stdout[stdout.rfind("TASKS RECAP"):]
    found = re.findall(r"^(.+?) -+ ([0-9.]+)s$", recap, re.M)
    return [(name.strip(), float(s)) for name, s in found[:count]]


def split_update(report: dict[str, Any], wall: float, soak: float) -> dict[str, float]:
    rows = {r["device"]: r for r in report["devices"]}
    transfer = load = smoke = 0.0
    for wave in report["waves"]:
        transfer += max(float(rows[d]["stage_s"]) for d in wave)
        # the wave waits for its slowest device's load + smoke
        slowest = max(wave, key=lambda d: float(rows[d]["load_time_s"]) + float(rows[d]["smoke_latency_ms"]) / 1000)
        load += float(rows[slowest]["load_time_s"])
        smoke += float(rows[slowest]["smoke_latency_ms"]) / 1000
    overhead = wall - soak - transfer - load - smoke
    return {"wall": wall, "soak": soak, "transfer": transfer, "load": load, "smoke": smoke, "overhead": overhead,
            "overhead_strict": overhead + transfer, "waves": len(report["waves"])}


# A proposed change to playbooks/deploy_model.yml, measured on a copy: with a fact cache, the
# preflight reuses the cached device facts (only `platform` is read from them) instead of
# running device_facts on every device on every run.
PROPOSAL_FIND = """        - name: Detect the device
          edgeai.fleet.device_facts:
"""
PROPOSAL_REPLACE = """        - name: Detect the device
          when: ansible_facts.edge_device.platform is not defined
          edgeai.fleet.device_facts:
"""


def proposal_playbook(work: Path) -> str | None:
    """A copy of playbooks/ with PROPOSAL applied; None when the playbook no longer has the text."""
    copy = work / "playbooks-proposal"
    shutil.copytree(ROOT / "playbooks", copy)
    text = (copy / "deploy_model.yml").read_text()
    if text.count(PROPOSAL_FIND) != 1:
        return None
    (copy / "deploy_model.yml").write_text(text.replace(PROPOSAL_FIND, PROPOSAL_REPLACE))
    return str(copy / "deploy_model.yml")


def variants(n: int, work: Path) -> list[tuple[str, dict[str, str], str, str | None]]:
    """(label, environment, how, playbook) for the no-op runs, most informative first."""
    facts = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(work / "facts"),
             "ANSIBLE_GATHERING": "smart", "ANSIBLE_GATHER_SUBSET": "!all"}
    playbook = "playbooks/deploy_model.yml"
    out = [
        ("ansible.cfg as is: forks 25, pipelining, ControlPersist 120 s; cold connections", {}, "cold", playbook),
        ("same, warm connections (re-run within ControlPersist)", {}, "warm", playbook),
        ("pipelining off (ANSIBLE_PIPELINING=False)", {"ANSIBLE_PIPELINING": "False"}, "cold", playbook),
        ("no ControlMaster/ControlPersist (ANSIBLE_SSH_ARGS without them)",
         {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"},
         "cold", playbook),
        ("forks 5 (ANSIBLE_FORKS=5)", {"ANSIBLE_FORKS": "5"}, "cold", playbook),
        ("fact cache (jsonfile) + ANSIBLE_GATHERING=smart + ANSIBLE_GATHER_SUBSET=!all, cache filled",
         facts, "filled", playbook),
        ("proposal: preflight reuses cached device facts (fact cache as above)", facts, "filled",
         proposal_playbook(work)),
        ("strategy free (ANSIBLE_STRATEGY=free)", {"ANSIBLE_STRATEGY": "free"}, "cold", playbook),
    ]
    if n > 25:
        out.insert(5, (f"forks {n} (ANSIBLE_FORKS={n}: every device at once)", {"ANSIBLE_FORKS": str(n)}, "cold",
                       playbook))
    return out


def remove_devices(names) -> None:
    for name in sorted(names):
        try:
            lab("device", "rm", name, timeout=300)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"could not remove {name}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=24, help="devices to aim for (default 24)")
    parser.add_argument("--soak-s", type=int, default=10, help="canary soak seconds of the update (default 10)")
    parser.add_argument("--budget-s", type=float, default=900, help="wall budget; no-op variants beyond it are skipped")
    parser.add_argument("--noop-repeat", type=int, default=2, help="runs per no-op variant, best shown (default 2)")
    args = parser.parse_args(argv)
    if args.devices < PILOT:
        parser.error(f"--devices must be at least {PILOT} (one per site)")

    status = json.loads(lab("status", "--json", timeout=60))
    if not status.get("up"):
        log("the lab is not up (tests/lab/lab up)")
        return 1
    leftovers = [n for n in status["devices"] if NAME.match(n)]
    if leftovers:
        log(f"removing devices left by an earlier run: {leftovers}")
        remove_devices(leftovers)

    work = Path(tempfile.mkdtemp(prefix="edgeai-rollout-bench-"))
    fleet = plan(args.devices)
    facts: dict[str, Any] = {"target": args.devices}
    added: list[str] = []
    try:
        # --- setup, not timed: devices, bootstrap, version 1 -------------------------------
        def add(names: list[str]) -> float:
            start = time.perf_counter()
            for name in names:
                site, profile = fleet[name]
                added.append(name)
                try:
                    lab("device", "add", name, "--profile", profile, "--site", site, "--no-inventory")
                except RuntimeError as exc:  # a busy machine can keep systemd booting past the lab's 120 s
                    log(f"adding {name} failed, once more: {str(exc).splitlines()[-1]}")
                    remove_devices([name])
                    lab("device", "add", name, "--profile", profile, "--site", site, "--no-inventory")
            return time.perf_counter() - start

        def bootstrap(names: list[str]) -> float:
            devices = lab_devices()
            inventory = write_inventory(work / f"inv-{len(names)}-{names[0]}", {n: fleet[n] for n in names}, devices)
            wall, proc = playbook(inventory, "playbooks/bootstrap.yml", [], work)
            if proc.returncode != 0:
                raise RuntimeError(f"bootstrap failed:\n{proc.stdout[-4000:]}")
            return wall

        start_mem = meminfo()
        start_disk = shutil.disk_usage(DOCKER_ROOT).free
        inotify_limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
        inotify_free = inotify_limit - sum(inotify_instances().values()) - INOTIFY_RESERVE
        if inotify_free < PILOT * INOTIFY_FIRST_GUESS:
            raise RuntimeError(f"only {inotify_free + INOTIFY_RESERVE} of {inotify_limit} inotify instances are free "
                               f"(fs.inotify.max_user_instances): not enough for {PILOT} devices; raise the limit")
        pilot, rest = list(fleet)[:PILOT], list(fleet)[PILOT:]
        facts["add_s"] = add(pilot)
        mem_bare = {n: memory(n) for n in pilot}
        inotify_now = inotify_instances()
        inotify_per = max(inotify_now.get(f"edgeai-lab-{name}", 0) for name in pilot)
        inotify_cap = int(inotify_free // inotify_per)
        rest = rest[:max(0, inotify_cap // len(SITES) * len(SITES) - PILOT)]
        # the other devices are added while the pilot bootstraps (adding mostly waits for systemd)
        with ThreadPoolExecutor(1) as pool:
            pilot_boot = pool.submit(bootstrap, pilot)
            facts["add_s"] += add(rest)
            facts["boot_pilot_s"] = pilot_boot.result()
        mem_served = {n: memory(n) for n in pilot}
        disk_per = mean(disk(n) for n in pilot)
        ws_per = max(m["ws"] for m in mem_served.values())
        server_ws = ws_per - min(m["ws"] for m in mem_bare.values())  # what bootstrapping adds to a device
        # what the machine holds: memory and disk as found at the start, minus the reserves
        reserve = MEM_RESERVE_SHARE * start_mem["MemTotal"]
        mem_cap = int((start_mem["MemAvailable"] - reserve) // ws_per)
        disk_cap = int((start_disk - DISK_RESERVE) // disk_per)
        # and now, with the rest already added: do their servers still fit?
        fit_mem = int((meminfo()["MemAvailable"] - reserve) // server_ws)
        fit_disk = int((shutil.disk_usage(DOCKER_ROOT).free - DISK_RESERVE) // disk_per)
        n = PILOT + max(0, min(len(rest), fit_mem, fit_disk)) // len(SITES) * len(SITES)
        facts.update(mem_bare=mem_bare, mem_served=mem_served, disk_per=disk_per, mem_cap=mem_cap, disk_cap=disk_cap,
                     mem_available=start_mem["MemAvailable"], free_disk=start_disk, n=n, inotify_limit=inotify_limit,
                     inotify_free=inotify_free, inotify_per=inotify_per, inotify_cap=inotify_cap)
        log(f"pilot: {mib(ws_per)} working set, {mib(disk_per)} disk per device; memory holds {mem_cap}, "
            f"disk holds {disk_cap}, inotify instances ({inotify_per} per device, {inotify_free} of "
            f"{inotify_limit} free) hold {inotify_cap}; N = {n}")
        fleet = dict(list(fleet.items())[:n])
        remove_devices([name for name in added if name not in fleet])
        added[:] = list(fleet)
        rest = list(fleet)[PILOT:]
        facts["boot_rest_s"] = bootstrap(rest) if rest else 0.0
        inventory = write_inventory(work / "inv", fleet, lab_devices())
        facts["install_s"] = deploy(inventory, 1, work, "v1", "-e", "edgeai_canary_soak_seconds=0",
                                    "-e", "edgeai_max_unavailable_per_site=100%")[0]
        log(f"setup done: {n} devices added in {facts['add_s']:.0f}s, bootstrapped in "
            f"{facts['boot_pilot_s']:.0f}s + {facts['boot_rest_s']:.0f}s, version 1 in {facts['install_s']:.0f}s")

        # --- timed: the update ---------------------------------------------------------------
        wall, report, stdout, cpu = deploy(inventory, 2, work, "v2", "-e", f"edgeai_canary_soak_seconds={args.soak_s}",
                                      env_extra={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                                                 "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "200"})
        results = {(r["result"], r["before"], r["after"]) for r in report["devices"]}
        if results != {("updated", 1, 2)} or len(report["devices"]) != n:
            raise RuntimeError(f"the update did not update every device: {results}")
        update = split_update(report, wall, soak_seconds(stdout))
        update["top"], update["cpu"] = top_tasks(stdout), cpu
        facts["mem_model"] = {name: memory(name) for name in pilot}
        log(f"update: {wall:.1f}s, {update['waves']} waves")

        # --- timed: no-op re-runs ------------------------------------------------------------
        noop_rows = []
        last_control: Path | None = None
        for label, env, how, path in variants(n, work):
            if path is None:
                noop_rows.append((label, None, "skipped: deploy_model.yml no longer has the text to change"))
                continue
            spent = time.monotonic() - T0
            one = noop_rows[0][1][0] if noop_rows and noop_rows[0][1] else 2 * n
            estimate = one * (2 if how == "filled" else 1) * args.noop_repeat
            # the first row (the goal's measurement) always runs; keep room for removing the devices (~3 s each)
            if noop_rows and spent + estimate + 4 * n > args.budget_s:
                noop_rows.append((label, None, "skipped: wall budget"))
                continue
            if how == "filled":
                deploy(inventory, 2, work, f"fill-{len(noop_rows)}", env_extra=env, playbook_path=path)
            best = None
            for i in range(args.noop_repeat):
                control = None  # a fresh ControlPath directory, closed after the run
                if not noop_rows or how == "warm":
                    # the first variant keeps its connections for the warm one, which runs right after it
                    if not noop_rows:
                        if last_control:
                            close_masters(last_control)
                        last_control = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
                    control = last_control
                try:
                    w, rep, _, c = deploy(inventory, 2, work, f"noop-{len(noop_rows)}-{i}", env_extra=env,
                                       control_dir=control, playbook_path=path)
                except RuntimeError as exc:  # a variant the playbook does not support (strategy free)
                    error = re.search(r"\[ERROR\]: ([^\n]+)", str(exc))
                    best, note = None, "fails: " + (error.group(1) if error else str(exc).splitlines()[0])
                    break
                if {r["result"] for r in rep["devices"]} != {"unchanged"} or len(rep["devices"]) != n:
                    raise RuntimeError(f"no-op '{label}' changed something: {rep['summary']}")
                if best is None or w < best[0]:
                    best = (w, c)
                note = ""
            if how == "warm" and last_control:
                close_masters(last_control)
            noop_rows.append((label, best, note))
            log(f"no-op {label}: {note or f'{best[0]:.1f}s, CPU {best[1]:.1f}s'}")
    finally:
        log(f"removing {len(added)} devices")
        started = time.perf_counter()
        remove_devices(added)
        facts["remove_s"] = time.perf_counter() - started
        shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - T0
    print(markdown(facts, update, noop_rows, args, total))
    return 0


def markdown(facts: dict[str, Any], u: dict[str, Any], noop_rows, args, total: float) -> str:
    n = facts["n"]
    fleet = plan(n)
    jetsons = sum(1 for _, p in fleet.values() if PLATFORM[p] == "jetson")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    device_s = u["wall"] - u["soak"]
    share = u["overhead"] / device_s
    share_strict = u["overhead_strict"] / device_s

    def per_platform(key: str, field: str) -> str:
        out = []
        for plat in ("jetson", "coral"):
            vals = [m[field] for name, m in facts[key].items() if PLATFORM[fleet[name][1]] == plat]
            out.append(f"{plat} {mib(mean(vals))}")
        return ", ".join(out)

    lines = [
        "## Rollout: a model update and a no-op re-run on lab devices",
        "",
        f"`playbooks/deploy_model.yml` against {n} lab devices ({jetsons} Jetson with Triton, {n - jetsons} Coral "
        f"with LiteRT) in {len(SITES)} sites, over SSH on loopback, the demo model `detector` (artifacts pushed "
        "from the controller). ansible.cfg as committed (forks 25, pipelining, ControlPersist 120 s). "
        f"{os.cpu_count()} CPUs shared with other work; load average at the end {load}.",
        "",
        f"Setup, not timed: {n} devices added in {facts['add_s']:.0f} s, bootstrapped in "
        f"{facts['boot_pilot_s']:.0f} s (first {PILOT}) + {facts['boot_rest_s']:.0f} s (the other {n - PILOT}), "
        f"version 1 installed in {facts['install_s']:.0f} s; devices removed in {facts['remove_s']:.0f} s. "
        f"The whole bench took {total / 60:.1f} min.",
        "",
        f"Memory per device (cgroups of the device and of its engine's containers; mean over the first {PILOT}): "
        f"working set {per_platform('mem_bare', 'ws')} before its servers; {per_platform('mem_served', 'ws')} "
        f"with the inference server and the event relay running; {per_platform('mem_model', 'ws')} serving the "
        f"model (anonymous RSS: {per_platform('mem_model', 'rss')}; the rest is page cache of the device's own "
        f"image layers). Disk: {mib(facts['disk_per'])} per device (its engine's images). "
        f"With {mib(facts['mem_available'])} available at the start and {MEM_RESERVE_SHARE:.0%} of memory left to "
        "others, "
        f"memory holds {facts['mem_cap']} devices; the disk ({facts['free_disk'] / 2**30:.0f} GiB free, 20 GiB "
        f"kept) holds {facts['disk_cap']}. Each device holds {facts['inotify_per']} inotify instances of root "
        "(systemd, logind, containerd), all counted against root's `fs.inotify.max_user_instances` "
        f"({facts['inotify_limit']} here); the {facts['inotify_free']} free at the start ({INOTIFY_RESERVE} "
        f"kept for other users of the lab) hold {facts['inotify_cap']} devices; a device that finds none left "
        "never finishes booting. "
        f"N = {n} of the {facts['target']} asked for.",
        "",
        f"### Update, version 1 -> 2 ({u['waves']} waves, canary soak {args.soak_s} s)",
        "",
        "| part | seconds | share of wall | share of wall - soak |",
        "| --- | ---: | ---: | ---: |",
        f"| wall (ansible-playbook, start to exit) | {u['wall']:.1f} | 100% | |",
        f"| canary soak (profile_tasks) | {u['soak']:.1f} | {u['soak'] / u['wall']:.0%} | |",
        f"| transfer (staging span of each wave) | {u['transfer']:.1f} | {u['transfer'] / u['wall']:.0%} | "
        f"{u['transfer'] / device_s:.0%} |",
        f"| load (slowest device of each wave) | {u['load']:.1f} | {u['load'] / u['wall']:.0%} | "
        f"{u['load'] / device_s:.0%} |",
        f"| smoke test (same device) | {u['smoke']:.1f} | {u['smoke'] / u['wall']:.0%} | {u['smoke'] / device_s:.0%} |",
        f"| **controller overhead** (the rest) | {u['overhead']:.1f} | {u['overhead'] / u['wall']:.0%} | "
        f"**{share:.0%}** |",
        f"| controller overhead, staging counted as controller work | {u['overhead_strict']:.1f} | "
        f"{u['overhead_strict'] / u['wall']:.0%} | {share_strict:.0%} |",
        "",
        f"Goal: controller overhead under half: **{'met' if share < 0.5 else 'missed'}** ({share:.0%} of wall - soak"
        + ("" if share < 0.5 else f"; {u['overhead'] - device_s / 2:.1f} s over half") + "). "
        f"Controller CPU (user + system) for the whole run: {u['cpu']:.1f} s. "
        f"Per wave: {(u['wall'] - u['soak']) / u['waves']:.1f} s, of which "
        f"{u['overhead'] / u['waves']:.1f} s controller overhead. Slowest tasks (profile_tasks, summed over waves): "
        + "; ".join(f"{name} {s:.1f} s" for name, s in u["top"]) + ".",
        "",
        f"### No-op re-run on the converged fleet ({n} devices, all `unchanged`)",
        "",
        f"Best of {args.noop_repeat} run(s) per variant. Wall time is what the goal is about; the controller's CPU "
        "time (ansible-playbook, its workers and their ssh clients; user + system) is what the load of other work on "
        "this machine does not inflate, so compare variants by it as well.",
        "",
        "| variant | wall | per device | controller CPU | wall vs first row | CPU vs first row |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = noop_rows[0][1] if noop_rows and noop_rows[0][1] else None
    for label, best, note in noop_rows:
        if best is None:
            lines.append(f"| {label} | {note} | | | | |")
            continue
        wall, cpu = best
        ratios = f"{wall / base[0]:.2f}x | {cpu / base[1]:.2f}x" if base else " | "
        lines.append(f"| {label} | {wall:.1f} s | {wall / n:.2f} s | {cpu:.1f} s | {ratios} |")
    if base:
        per = base[0] / n
        lines += ["", f"Goal: under 0.5 s per device: **{'met' if per < 0.5 else 'missed'}** ({per:.2f} s per device"
                  + ("" if per < 0.5 else f", {per - 0.5:.2f} s over; {base[0] - 0.5 * n:.1f} s too long in all")
                  + f"). Controller CPU per device: {base[1] / n:.2f} s on {os.cpu_count()} cores."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
