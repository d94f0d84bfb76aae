#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Model update under load: failed requests and latency while a new model version is deployed.

Two lab devices of its own on site `bench-site` (an AGX Orin serving Triton, a Coral USB host
serving the LiteRT server), taken from nothing to serving version 1 of the demo model
(scripts/demo-release: version N multiplies its input by N) by the collection's own
bootstrap.yml (inference_server_model per device). Then, per server, two updates under the same
steady load:

- ours: deploy_model.yml with the next release, limited to the device: the model is staged and
  loaded in place in the running server (roles/model_deploy, module inference_model);
- naive (the baseline): what a user without the collection does: an image FROM the server's
  image with the new version baked into /models (built on the device's engine BEFORE the
  measured window, so only the deployment of a prebuilt image is timed), then
  `docker stop` + `docker rm` + `docker run` of the new container with the same ports and flags.

Load: --workers client threads, each with a keep-alive http.client connection through an SSH
tunnel to the server's port on the device, each sending one KServe v2 JSON infer request every
--interval-ms (closed loop: never more than one request in flight per worker). Every request is
recorded: send time, latency, success, the version that answered (read off the answer, which
must be exactly [N, 2N, 3N, 4N]). A wrong answer, an HTTP error or a broken connection is a
failed request.

Windows, by send time: steady = from 1 s after the load starts until the deployment starts
(--before-s); during = from the deployment's start until 2 s (SETTLE_S) after the first request
the new version answered; after = the --after-s that follow. The server's own log says when it
loaded the new version, which splits "during" into Ansible's part and the swap's.

    .venv/bin/python benchmarks/model_update/bench.py [--workers 3] [--interval-ms 25]

Prints a Markdown section on stdout (benchmarks/run.py collects it into docs/benchmarks.md) and
writes the latency-over-time plot to docs/benchmarks/model_update.png. Needs the lab up
(`tests/lab/lab up`); removes its devices when done.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.machinery
import importlib.util
import json
import os
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab"
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
SITE = "bench-site"
PLOT = ROOT / "docs" / "benchmarks" / "model_update.png"
CONTAINER = "edgeai-inference"  # the inference_server role's default container name
SERVER_PORT = 8000
# server kind -> device name, lab profile, platform, infer request inputs
SERVERS: dict[str, dict[str, Any]] = {
    "triton": {
        "device": f"{SITE}-orin",
        "profile": "agx-orin",
        "platform": "jetson",
        "label": "Triton (AGX Orin)",
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}],
    },
    "litert": {
        "device": f"{SITE}-coralusb",
        "profile": "coral-usb",
        "platform": "coral",
        "label": "LiteRT server (Coral USB host)",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
    },
}
MODEL = "detector"
# The "during" window ends this long after the new version first answered.
SETTLE_S = 2.0


def log(msg: str) -> None:
    sys.stderr.write(f"[model_update bench] {time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def pct(sorted_xs: list[float], p: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(p * len(sorted_xs)))] if sorted_xs else float("nan")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# --- the lab -------------------------------------------------------------------------------
def lab(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`lab {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


class Device:
    """One lab device reached over SSH as root with the lab's key."""

    def __init__(self, name: str, port: int, key: str, container: str) -> None:
        self.name, self.port, self.key = name, port, key
        # The device container's cpuacct cgroup: its systemd, sshd, dockerd and whatever Ansible runs
        # there. The server's container is not in it (the device's engine makes a cgroup of its own).
        cid = subprocess.run(
            ["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True, check=False
        ).stdout.strip()
        self.cgroup = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage") if cid else None

    def ssh_args(self) -> list[str]:
        return [
            "ssh",
            "-i",
            self.key,
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            [*self.ssh_args(), "root@127.0.0.1", command],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{self.name}: `{command}` exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
            )
        return proc.stdout.decode(errors="replace")

    @contextlib.contextmanager
    def tunnel(self, remote_port: int) -> Iterator[int]:
        """A free loopback port forwarded to the device's 127.0.0.1:remote_port."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                *self.ssh_args(),
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                f"127.0.0.1:{local}:127.0.0.1:{remote_port}",
                "root@127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ssh tunnel to {self.name} did not come up")
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


def write_inventory(work: Path, devices: dict[str, Device], first: Path) -> Path:
    """An inventory of this benchmark's devices only, with the lab's site settings (group_vars);
    bootstrap.yml makes each device serve the release `first` (inference_server_model)."""
    release = yaml.safe_load(first.read_text())["edgeai_release"]
    status = json.loads(lab("status", "--json", timeout=60))
    lab_hosts = yaml.safe_load(Path(status["inventory"]["hosts"]).read_text())
    inv = work / "inventory"
    inv.mkdir()
    shutil.copytree(Path(status["inventory"]["hosts"]).parent / "group_vars", inv / "group_vars")
    hosts = {}
    for kind, dev in devices.items():
        spec = SERVERS[kind]
        hosts[dev.name] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": dev.port,
            "edge_site": SITE,
            "edge_platform": spec["platform"],
            "edge_hardware": spec["profile"],
            "edge_ring": "canary",
            "inference_server_model": {
                "name": release["model_name"],
                "version": release["model_version"],
                "artifact": release["artifacts"][spec["platform"]],
                "smoke_test": release["smoke_test"][spec["platform"]],
            },
        }
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"vars": lab_hosts["all"]["vars"], "hosts": hosts}}))
    return inv / "hosts.yml"


def playbook(inventory: Path, name: str, *extra: str, timeout: float = 300) -> tuple[int, float, str]:
    """Run playbooks/<name>; returns (exit status, seconds, output tail)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        # SSH masters of our own: after the devices go, their ports may be given to someone else's
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(inventory.parent.parent / "cp"),
    )
    t = time.monotonic()
    proc = subprocess.run(
        [str(PLAYBOOK_BIN), "-i", str(inventory), f"playbooks/{name}", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, time.monotonic() - t, (proc.stdout + proc.stderr)[-3000:]


def load_demo_release(out: Path) -> Any:
    """scripts/demo-release as a module, writing into out instead of .lab/demo (shared)."""
    loader = importlib.machinery.SourceFileLoader("demo_release", str(ROOT / "scripts" / "demo-release"))
    spec = importlib.util.spec_from_loader("demo_release", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.OUT = out
    return module


# --- the naive way -------------------------------------------------------------------------
def naive_prepare(dev: Device, artifact: Path, tag: str) -> list[str]:
    """Build <tag> on the device: FROM the running server's image, the model baked into /models.
    Returns the `docker run` arguments that replace the running container with it (same flags)."""
    info = json.loads(dev.run(f"docker inspect {CONTAINER}"))[0]
    ctx = f"/tmp/edgeai-naive-{tag.replace('/', '-').replace(':', '-')}"
    dev.run(f"rm -rf {ctx} && mkdir -p {ctx} && tar -xzf - -C {ctx}", stdin=artifact.read_bytes())
    dockerfile = f"FROM {info['Config']['Image']}\nCOPY {MODEL} /models/{MODEL}\n"
    dev.run(f"cat > {ctx}/Dockerfile && docker build -q -t {tag} {ctx}", stdin=dockerfile.encode(), timeout=300)
    host = info["HostConfig"]
    args = ["docker", "run", "-d", "--name", CONTAINER]
    if host.get("RestartPolicy", {}).get("Name"):
        args += ["--restart", host["RestartPolicy"]["Name"]]
    if host.get("Runtime") and host["Runtime"] != "runc":
        args += ["--runtime", host["Runtime"]]
    if host.get("Memory"):
        args += ["--memory", str(host["Memory"])]
    for cport, binds in sorted((host.get("PortBindings") or {}).items()):
        for b in binds:
            args += ["-p", f"{b['HostIp'] + ':' if b['HostIp'] else ''}{b['HostPort']}:{cport.split('/')[0]}"]
    for d in host.get("Devices") or []:
        args += ["--device", f"{d['PathOnHost']}:{d['PathInContainer']}"]
    for rule in host.get("DeviceCgroupRules") or []:
        args += ["--device-cgroup-rule", rule]
    for m in info.get("Mounts", []):
        if m["Destination"] != "/models":  # the model is in the image now
            args += ["-v", f"{m['Source']}:{m['Destination']}{'' if m.get('RW', True) else ':ro'}"]
    for label, value in sorted((info["Config"].get("Labels") or {}).items()):
        if label.startswith("io.edgeai."):
            args += ["--label", f"{label}={value}"]
    entry = info["Config"].get("Entrypoint") or []
    if entry:
        args += ["--entrypoint", entry[0]]
    args += [tag, *entry[1:], *(info["Config"].get("Cmd") or [])]
    return args


# --- load ----------------------------------------------------------------------------------
class Load:
    """--workers closed-loop clients, each sending one request every interval_s, until stopped."""

    def __init__(
        self,
        port: int,
        inputs: list[dict[str, Any]],
        workers: int,
        interval_s: float,
        cap_s: float,
        cgroup: Path | None,
    ) -> None:
        self.port, self.workers, self.interval_s, self.cgroup = port, workers, interval_s, cgroup
        self.body = json.dumps({"inputs": inputs}).encode()
        self.records: list[list[tuple[float, float, bool, int | None, str]]] = [[] for _ in range(workers)]
        self.stop = threading.Event()
        self.new_version_seen = threading.Event()
        self.new_version = 0
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # the same instant on the wall clock, for the server's log times
        self.deadline = self.t0 + cap_s
        # (time, busy jiffies, all jiffies) of the whole machine, CPU ns of the device outside the server
        self.cpu: list[tuple[float, int, int, int]] = []
        self.threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(workers)]
        self.threads.append(threading.Thread(target=self._cpu_sampler, daemon=True))
        for t in self.threads:
            t.start()

    def _one(self, conn: http.client.HTTPConnection) -> tuple[bool, int | None, str]:
        conn.request("POST", f"/v2/models/{MODEL}/infer", self.body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return False, None, f"HTTP {resp.status}"
        data = [float(x) for x in json.loads(raw)["outputs"][0]["data"]]
        version = round(data[0])
        if data != [float(version * k) for k in (1, 2, 3, 4)]:
            return False, None, "wrong answer"
        return True, version, ""

    def _worker(self, i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        out = self.records[i]
        next_t = self.t0 + i * self.interval_s / self.workers
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic()
            next_t = max(next_t + self.interval_s, t)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                ok, version, err = self._one(conn)
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as exc:
                ok, version, err = False, None, type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
            out.append((t - self.t0, time.monotonic() - t, ok, version, err))
            if ok and version == self.new_version:
                self.new_version_seen.set()
        if conn is not None:
            conn.close()

    def _cpu_sampler(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
            idle = fields[3] + fields[4]  # idle + iowait
            try:
                device_ns = int(self.cgroup.read_text()) if self.cgroup else 0
            except (OSError, ValueError):
                device_ns = 0
            self.cpu.append((time.monotonic() - self.t0, sum(fields) - idle, sum(fields), device_ns))
            self.stop.wait(0.5)

    def finish(self) -> list[tuple[float, float, bool, int | None, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
        return sorted(r for rs in self.records for r in rs)


def measure(
    dev: Device,
    port: int,
    inputs: list[dict[str, Any]],
    deploy: Callable[[], tuple[int, str]],
    old: int,
    new: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Steady load; the deployment starts after --before-s; the load ends SETTLE_S + --after-s
    after the new version first answered (or 10 s after the deployment gave up, or at the time cap)."""
    load = Load(port, inputs, args.workers, args.interval_ms / 1000, args.cap_s, dev.cgroup)
    load.new_version = new
    result: dict[str, Any] = {}
    time.sleep(args.before_s)
    t_deploy = time.monotonic() - load.t0

    def run_deploy() -> None:
        t, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            result["rc"], result["output"] = deploy()
        except subprocess.TimeoutExpired:
            result["rc"], result["output"] = -1, f"killed after the time cap (--cap-s {args.cap_s:g})"
        result["deploy_s"] = time.monotonic() - t
        # this process waits for no other child meanwhile: this is the command's own CPU (Ansible and its ssh)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["deploy_cpu_s"] = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        result["ended"] = time.monotonic()

    deployer = threading.Thread(target=run_deploy, daemon=True)
    deployer.start()
    while not load.new_version_seen.wait(0.1):
        if "ended" in result and time.monotonic() > result["ended"] + 10:
            break  # the deployment ended 10 s ago and the new version never answered
        if time.monotonic() > load.deadline:
            break
    if load.new_version_seen.is_set():
        time.sleep(SETTLE_S + args.after_s)
    records = load.finish()
    deployer.join(timeout=max(1.0, load.deadline - time.monotonic() + 60))
    if deployer.is_alive():
        result.setdefault("rc", -1)
        result.setdefault("output", "still running at the time cap")
    result.update(records=records, t_deploy=t_deploy, old=old, new=new, wall0=load.wall0, cpu=load.cpu)
    return result


def server_log(dev: Device, since: float) -> list[tuple[float, str]]:
    """The server container's log lines about the model since the epoch time `since`:
    (epoch seconds, line) from the engine's timestamps (device and controller share a clock)."""
    text = dev.run(f"docker logs --timestamps --since {since:.3f} {CONTAINER} 2>&1", timeout=60)
    events = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        if MODEL not in rest:
            continue
        try:
            when = datetime.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
        except ValueError:
            continue
        events.append((when, rest.strip()))
    return events


def server_load(run: dict[str, Any]) -> tuple[float, float] | None:
    """When the server began and finished loading the new version, in seconds since the deployment
    started, from its log: Triton's "loading: <model>:<version>" and "successfully loaded", the
    LiteRT server's "model loaded" and its load_s. None when the log does not say."""
    start = None
    for when, line in run.get("events", []):
        at = when - run["wall0"] - run["t_deploy"]
        if f"loading: {MODEL}:{run['new']}" in line:
            start = at
        elif start is not None and f"successfully loaded '{MODEL}'" in line:
            return start, at
        elif line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "model loaded" and run["new"] in entry.get("versions", []):
                    return at - float(entry.get("load_s", 0.0)), at
    return None


def window(recs: list[tuple[float, float, bool, int | None, str]], start: float, end: float) -> dict[str, Any]:
    rs = [r for r in recs if start <= r[0] < end]
    lat = sorted(r[1] * 1e3 for r in rs if r[2])
    return {"n": len(rs), "failed": sum(1 for r in rs if not r[2]), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}


def cpu_use(run: dict[str, Any], start: float, end: float) -> tuple[float, float]:
    """Between start and end (seconds since the deployment started): the share of the machine's CPU
    time that was busy, and the cores the device used outside the server's container."""
    inside = [c for c in run["cpu"] if start <= c[0] - run["t_deploy"] <= end]
    if len(inside) < 2 or inside[-1][2] == inside[0][2]:
        return float("nan"), float("nan")
    first, last = inside[0], inside[-1]
    return (last[1] - first[1]) / (last[2] - first[2]), (last[3] - first[3]) / 1e9 / (last[0] - first[0])


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    recs = run["records"]
    # times relative to the deployment's start
    recs = [(r[0] - run["t_deploy"], *r[1:]) for r in recs]
    t_start = 1.0 - run["t_deploy"]
    firsts = [r[0] for r in recs if r[2] and r[3] == run["new"]]
    lasts = [r[0] for r in recs if r[2] and r[3] == run["old"]]
    t_new = min(firsts) if firsts else None
    end_during = (t_new + SETTLE_S) if t_new is not None else float("inf")
    out: dict[str, Any] = {
        "requests": len(recs),
        "failed": sum(1 for r in recs if not r[2]),
        "t_new": t_new,
        "last_old": max(lasts) if lasts else None,
        "rc": run["rc"],
        "deploy_s": run.get("deploy_s", float("nan")),
        "errors": sorted({r[4] for r in recs if not r[2]}),
        "steady": window(recs, t_start, 0.0),
        "during": window(recs, 0.0, end_during),
        "after": window(recs, end_during, float("inf")),
        "load": server_load(run),
        "deploy_cpu_s": run.get("deploy_cpu_s", float("nan")),
        "cpu_steady": cpu_use(run, t_start, 0.0),
        "cpu_during": cpu_use(run, 0.0, end_during),
    }
    if out["load"] is not None:
        out["before_swap"] = window(recs, 0.0, out["load"][0])
        out["swap"] = window(recs, out["load"][0], end_during)
        out["swap_slowest"] = max((r[1] for r in recs if r[2] and out["load"][0] <= r[0] < end_during), default=0.0)
    # the longest stretch without a successful answer, from one answer's arrival to the next's
    done = sorted(r[0] + r[1] for r in recs if r[2])
    gaps = [(b - a, a) for a, b in zip(done, done[1:], strict=False)]
    out["gap_s"], out["gap_at"] = max(gaps, default=(float("nan"), float("nan")))
    return out


# --- report --------------------------------------------------------------------------------
METHODS = {"ours": "ours (in-place load)", "naive": "naive (new container)"}


def plot(runs: dict[tuple[str, str], dict[str, Any]], path: Path) -> bool:
    """Latency over time, one panel per server and method. False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (`make bench` installs it): no plot")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _m in runs}, key=list(SERVERS).index)
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), sharey="row", squeeze=False)
    for row, kind in enumerate(kinds):
        for col, method in enumerate(METHODS):
            ax = axes[row][col]
            run = runs.get((kind, method))
            if run is None:
                ax.set_axis_off()
                continue
            summary = summarize(run)
            recs = [(r[0] - run["t_deploy"], *r[1:]) for r in run["records"]]
            if summary["t_new"] is not None:
                ax.axvspan(0, summary["t_new"] + SETTLE_S, color="gold", alpha=0.2, zorder=0, label="'during' window")
            for version, color in ((run["old"], "tab:blue"), (run["new"], "tab:orange")):
                pts = [(r[0], r[1] * 1e3) for r in recs if r[2] and r[3] == version]
                if pts:
                    ax.scatter(*zip(*pts, strict=True), s=4, color=color, zorder=2, label=f"answered by v{version}")
            fails = [r[0] for r in recs if not r[2]]
            if fails:
                top = max([r[1] * 1e3 for r in recs if r[2]] or [1.0]) * 1.5
                ax.scatter(
                    fails,
                    [top] * len(fails),
                    s=12,
                    marker="x",
                    color="tab:red",
                    zorder=3,
                    label=f"failed ({len(fails)}), drawn at the top",
                )
            if summary["load"] is not None and summary["swap_slowest"] > 0.5:
                held = max((r for r in recs if r[2] and r[0] >= summary["load"][0]), key=lambda r: r[1])
                left = held[0] < recs[0][0] + 0.75 * (recs[-1][0] - recs[0][0])
                ax.annotate(
                    f"held {held[1]:.1f} s by the load,\nthen answered by v{run['new']}",
                    xy=(held[0], held[1] * 1e3),
                    # the text on the side with more room: the legend is on the left
                    xytext=(12 if left else -12, -28),
                    textcoords="offset points",
                    ha="left" if left else "right",
                    fontsize=7,
                    arrowprops={"arrowstyle": "->", "linewidth": 0.8},
                )
            ax.axvline(0, color="black", linewidth=0.8, label="deployment starts")
            if summary["load"] is not None:
                ax.axvline(
                    summary["load"][0],
                    color="tab:green",
                    linestyle="--",
                    linewidth=1,
                    label="server starts loading the new version",
                )
            ax.set_yscale("log")
            ax.set_title(f"{SERVERS[kind]['label']}: {METHODS[method]}", fontsize=10)
            ax.set_xlabel("seconds since the deployment started (request send time)")
            if col == 0:
                ax.set_ylabel("latency, ms (log scale)")
            ax.legend(fontsize=7, loc="upper left", markerscale=2)
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def requests(n: int) -> str:
    return f"{n:,} request" + ("" if n == 1 else "s")


def fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{x:,.{digits}f}"  # x != x: NaN


def report(runs: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace, notes: dict[str, Any]) -> str:
    sums = {key: summarize(run) for key, run in runs.items()}
    out = ["## Model update under load", ""]
    out.append(
        "A new model version deployed to a serving device under steady inference load. **Ours**: "
        "`playbooks/deploy_model.yml` with the next release, limited to the device (`-e edgeai_targets=<device>`): "
        "the artifact is staged and the new version loaded in place in the running server, gated by its smoke test "
        "(canary soak shortened to 1 s: it runs after the swap). **Naive** (the baseline): an image FROM the "
        "server's image with the new version baked into `/models`, built on the device before the measured window "
        "(so only the deployment of a prebuilt image is timed), then `docker stop` + `docker rm` + `docker run` of "
        "the new container with the same ports and flags, over SSH. "
        f"Two lab devices of the benchmark's own on site `{SITE}`, an AGX Orin running Triton (the CPU stand-in "
        "image) and a Coral USB host running the LiteRT server, brought from nothing to serving v1 of the demo model "
        "(`scripts/demo-release`: version N answers [N, 2N, 3N, 4N]) by `bootstrap.yml` (event relay left out; "
        "`inference_server_model` set per device); then on each device ours goes v1 -> v2 and naive v2 -> v3. "
        f"Load: {args.workers} closed-loop client threads, each sending one request every {args.interval_ms:g} ms "
        f"(at most {args.workers * 1000 / args.interval_ms:,.0f} req/s; never more than one in flight per thread), "
        "keep-alive `http.client` connections through an SSH tunnel to the server's port on the device, KServe v2 "
        "JSON. A request fails on a broken connection, an HTTP error or a wrong answer; percentiles are over the "
        "successful requests. "
        f"Windows by send time: steady = from 1 s after the load starts to the deployment's start ({args.before_s:g} s "
        f"of load first); during = from the deployment's start until {SETTLE_S:g} s after the first request that the "
        f"new version answered; after = the {args.after_s:g} s that follow. "
        "The devices' servers, Ansible, the SSH tunnel and the client share the machine's "
        f"{os.cpu_count()} cores with other work (1-minute load average {notes['load_before']} before, "
        f"{notes['load_after']} after). Setup (not measured): devices added, bootstrapped and serving v1 in "
        f"{notes['setup_s']:.0f} s; whole run {notes['total_s']:.0f} s."
    )
    out.append("")
    if notes["plotted"]:
        out.append(f"![latency over time during the swaps](benchmarks/{PLOT.name})")
    else:
        out.append("(No plot this time: matplotlib was missing; `make bench` installs it.)")
    out.append("")
    out.append(
        "| server | method | requests | failed (steady / during / after) | p50 ms steady / during / after | "
        "p99 ms steady / during / after | p99 during / steady | new version answers after | "
        "longest time without an answer | deployment command took |"
    )
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (kind, method), s in sums.items():
        w = [s["steady"], s["during"], s["after"]]
        label = f"**{METHODS[method]}**" if method == "ours" else METHODS[method]
        new_after = "never" if s["t_new"] is None else f"{s['t_new']:.1f} s"
        cmd = f"{s['deploy_s']:.1f} s" + ("" if s["rc"] == 0 else f" (exit {s['rc']})")
        out.append(
            f"| {SERVERS[kind]['label']} | {label} | {s['requests']:,} | {s['failed']:,} "
            f"({' / '.join(str(x['failed']) for x in w)}) | {' / '.join(fmt(x['p50']) for x in w)} | "
            f"{' / '.join(fmt(x['p99']) for x in w)} | {fmt(s['during']['p99'] / s['steady']['p99'], 2)}x | "
            f"{new_after} | {fmt(s['gap_s'], 2)} s | {cmd} |"
        )
    out.append("")
    for (kind, method), s in sums.items():
        out.append(f"- {SERVERS[kind]['label']}, {method}: {details(s, method)}")
    out.append("")
    for kind in SERVERS:
        ours, naive = sums.get((kind, "ours")), sums.get((kind, "naive"))
        if ours is not None and naive is not None:
            out.extend(verdicts(SERVERS[kind]["label"], ours, naive))
    return "\n".join(out)


def details(s: dict[str, Any], method: str) -> str:
    """What the table cannot say: where the CPU went, when the server swapped, what failed."""
    busy_steady, dev_steady = s["cpu_steady"]
    busy_during, dev_during = s["cpu_during"]
    what = "deploy_model.yml" if method == "ours" else "the docker commands"
    text = (
        f"{what} took {s['deploy_s']:.1f} s wall and {fmt(s['deploy_cpu_s'])} CPU-s on the controller; the device "
        f"outside the server's container (Ansible's modules, sshd, the engine) used {fmt(dev_steady, 2)} cores "
        f"steady, {fmt(dev_during, 2)} during; the whole machine was {fmt(busy_steady * 100, 0)}% busy steady, "
        f"{fmt(busy_during * 100, 0)}% during."
    )
    if s["load"] is not None:
        start, end = s["load"]
        text += (
            f" The server loaded the new version from {start:.1f} s to {end:.1f} s after the deployment started "
            f"(its log). Before that (Ansible's preflight and staging) p99 {fmt(s['before_swap']['p99'])} ms "
            f"({fmt(s['before_swap']['p99'] / s['steady']['p99'], 2)}x steady) over {requests(s['before_swap']['n'])}; "
            f"from then to the end of the 'during' window p99 {fmt(s['swap']['p99'])} ms "
            f"({fmt(s['swap']['p99'] / s['steady']['p99'], 2)}x steady) over {requests(s['swap']['n'])}, "
            f"the slowest {s['swap_slowest'] * 1e3:,.0f} ms."
        )
    text += (
        f" The longest time without an answer ({fmt(s['gap_s'], 2)} s) began {fmt(s['gap_at'])} s after the "
        "deployment started."
    )
    if method == "naive" and s["last_old"] is not None and s["t_new"] is not None:
        text += (
            f" The old version's last answered request was sent {s['last_old']:.1f} s after the deployment "
            f"started, the new version's first {s['t_new']:.1f} s after."
        )
    if s["errors"]:
        text += f" The failed requests saw {', '.join(s['errors'])}."
    return text


def verdicts(label: str, ours: dict[str, Any], naive: dict[str, Any]) -> list[str]:
    out = []
    ratio = "n/a" if naive["failed"] == 0 else f"{ours['failed'] / naive['failed']:.3f}x"
    met = ours["failed"] == 0 and ours["t_new"] is not None
    line = (
        f"- {label}, goal zero failed requests (the naive way: {naive['failed']:,} failed): "
        f"**{'met' if met else 'missed'}**: ours {ours['failed']:,} failed of {ours['requests']:,}, "
        f"ours / naive = {ratio}"
    )
    if not met:
        never = ours["t_new"] is None
        line += "; the new version never answered" if never else f"; {ours['failed']:,} over the goal"
    out.append(line + ".")
    p99r = ours["during"]["p99"] / ours["steady"]["p99"]
    met = p99r <= 2.0
    line = (
        f"- {label}, goal p99 during the swap within 2x of steady state: **{'met' if met else 'missed'}**: "
        f"{fmt(ours['during']['p99'])} ms during vs {fmt(ours['steady']['p99'])} ms steady = {p99r:.2f}x "
        f"(naive: {fmt(naive['during']['p99'] / naive['steady']['p99'], 2)}x, over the requests that did not fail)"
    )
    line += (
        "."
        if met
        else f"; {p99r / 2.0:.2f}x the goal, {ours['during']['p99'] - 2 * ours['steady']['p99']:.1f} ms over it."
    )
    if not met and ours["load"] is None:
        line += " The server's log did not show the load, so the cause is not split here."
    elif not met:
        before = ours["before_swap"]["p99"] / ours["steady"]["p99"]
        if before > 2.0:
            line += (
                f" Why: the tail was already {before:.2f}x steady before the server touched the model, while "
                f"Ansible ran its preflight and staged the artifact ({fmt(ours['deploy_cpu_s'])} CPU-s on the "
                f"controller and {fmt(ours['cpu_during'][1], 2)} cores on the device, on the {os.cpu_count()} cores "
                "that also run the servers, the client and other people's work; the machine "
                f"{fmt(ours['cpu_during'][0] * 100, 0)}% busy, against {fmt(ours['cpu_steady'][0] * 100, 0)}% "
                "steady). So the excess comes from CPU contention while the deployment ran (its own work on top of "
                "everything else on these cores), not from the swap. What would "
                "close the gap: less work on the device per deployment (each Ansible task starts a Python process "
                "there; preflight, staging and activation could be fewer module calls), and, for the measurement, "
                "a controller that does not share the device's cores, as in a fleet."
            )
        else:
            line += (
                f" Why: before the server touched the model the tail was {before:.2f}x steady; from its load on "
                f"{fmt(ours['swap']['p99'] / ours['steady']['p99'], 2)}x over {requests(ours['swap']['n'])}."
            )
    held = ours.get("swap_slowest", 0.0)
    if held >= 1.0 and held > 3 * ours["steady"]["p99"] / 1e3:
        line += (
            f" Behind the percentile: the requests sent as the server began loading the new version waited "
            f"{held:.1f} s, then the new version answered them (no failure, but {fmt(ours['gap_s'], 1)} s without "
            "any answer). A closed-loop client has one such request per worker, so the p99 cannot show it. Triton "
            "holds requests to a model while it loads a new version of it (the behaviour reported upstream as "
            "triton-inference-server/server#5042). What would close it: a Triton that keeps the old version "
            "answering during the load, or a second server loaded beside the first and switched to by a local "
            "proxy, which the collection does not have."
        )
    return [*out, line]


# --- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=25.0, help="each worker sends one request this often")
    ap.add_argument("--before-s", type=float, default=6.0, help="steady load before the deployment starts")
    ap.add_argument("--after-s", type=float, default=5.0, help="load after the 'during' window")
    ap.add_argument("--cap-s", type=float, default=120.0, help="time cap of one measured run")
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: triton,litert")
    ap.add_argument("--records", type=Path, help="also write every request and the server logs here (JSON)")
    ap.add_argument("--keep-devices", action="store_true", help="leave the devices for a look (remove them by hand)")
    args = ap.parse_args(argv)
    kinds = [k for k in args.servers.split(",") if k]

    work = Path(tempfile.mkdtemp(prefix="edgeai-model-update-bench-"))
    status = json.loads(lab("status", "--json", timeout=60))
    # not status["up"]: that is false while any device is stopped, and other people's tests stop some
    if not (status.get("processes") or {}).get("registry") or not status.get("ssh_key"):
        log("the lab is not up: run `tests/lab/lab up` first")
        return 1
    devices: dict[str, Device] = {}
    added_names: list[str] = []  # removed in the end even when adding failed half-way
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    notes: dict[str, Any] = {"load_before": loadavg()}
    t_setup = time.monotonic()
    try:
        for kind in kinds:
            spec = SERVERS[kind]
            log(f"adding {spec['device']} ({spec['profile']}) on {SITE}")
            added_names.append(spec["device"])
            added = json.loads(
                lab(
                    "device",
                    "add",
                    spec["device"],
                    "--profile",
                    spec["profile"],
                    "--site",
                    SITE,
                    "--ring",
                    "canary",
                    "--no-inventory",
                )
                .strip()
                .splitlines()[-1]
            )
            devices[kind] = Device(spec["device"], int(added["port"]), added["identity_file"], added["container"])
        demo = load_demo_release(work / "release")
        releases = {v: demo.build(v) for v in (1, 2, 3)}
        inventory = write_inventory(work, devices, releases[1])
        report_dir = work / "reports"
        rollout = ["-e", "edgeai_canary_soak_seconds=1", "-e", f"edgeai_report_dir={report_dir}"]

        log("bootstrap.yml to serving v1 (event relay left out: webhook_api_url empty)")
        rc, secs, tail = playbook(inventory, "bootstrap.yml", "-e", "webhook_api_url=", timeout=600)
        if rc != 0:
            raise RuntimeError(f"bootstrap.yml failed:\n{tail}")
        log(f"bootstrap.yml: {secs:.0f} s")
        naive_run: dict[str, list[str]] = {}
        for kind in kinds:
            tag = f"edgeai-naive/{kind}-{MODEL}:3"
            artifact = work / "release" / f"{MODEL}-{SERVERS[kind]['platform']}-3.tar.gz"
            naive_run[kind] = naive_prepare(devices[kind], artifact, tag)
        notes["setup_s"] = time.monotonic() - t_setup

        for kind in kinds:
            dev, spec = devices[kind], SERVERS[kind]
            with dev.tunnel(SERVER_PORT) as port:
                log(f"{kind}: ours, v1 -> v2")

                def ours(dev: Device = dev) -> tuple[int, str]:
                    rc, _secs, tail = playbook(
                        inventory,
                        "deploy_model.yml",
                        "-e",
                        f"@{releases[2]}",
                        "-e",
                        f"edgeai_targets={dev.name}",
                        *rollout,
                        timeout=args.cap_s,
                    )
                    return rc, tail

                run = runs[(kind, "ours")] = measure(dev, port, spec["inputs"], ours, 1, 2, args)
                log(f"{kind}: ours: deploy_model.yml exited {run['rc']}")
                if run["rc"] != 0:
                    log(run["output"])
                # read now: the naive way removes this container
                run["events"] = server_log(dev, run["wall0"] + run["t_deploy"])

                def naive(dev: Device = dev, cmd: list[str] = naive_run[kind]) -> tuple[int, str]:
                    try:
                        return 0, dev.run(
                            f"docker stop {CONTAINER} && docker rm {CONTAINER} && {shlex.join(cmd)}", timeout=args.cap_s
                        )
                    except RuntimeError as exc:
                        return 1, str(exc)
                    except subprocess.TimeoutExpired:
                        return -1, f"killed after the time cap (--cap-s {args.cap_s:g})"

                log(f"{kind}: naive, v2 -> v3: {shlex.join(naive_run[kind])}")
                run = runs[(kind, "naive")] = measure(dev, port, spec["inputs"], naive, 2, 3, args)
                log(f"{kind}: naive: the commands exited {run['rc']}")
                if run["rc"] != 0:
                    log(run["output"])
        notes["load_after"] = loadavg()
        notes["total_s"] = time.monotonic() - t_setup
        if args.records:
            args.records.write_text(
                json.dumps({f"{k}/{m}": {**r, "output": r["output"][-3000:]} for (k, m), r in runs.items()})
            )
        notes["plotted"] = plot(runs, args.plot)
        print(report(runs, args, notes))
        return 0
    finally:
        if not args.keep_devices:
            for name in added_names:
                log(f"removing {name}")
                try:
                    lab("device", "rm", name, timeout=120)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    log(f"could not remove {name}: {exc}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
