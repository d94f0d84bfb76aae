#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Model update under load: failed requests and latency while a new model version is deployed.

    .venv/bin/python -m benchmarks.model_update.bench [--workers 3] [--interval-ms 25] [--servers triton,litert]
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from edgeai_lab import access

from benchmarks.harness import PLOTS, Log, children_cpu, figure, fmt, http_load, loadavg, parser, pct, table, workdir

SITE, MODEL, SERVER_PORT = "bench-site", "detector", 8000
CONTAINER = "edgeai-inference"  # the inference_server role's default container name
SERVERS: dict[str, dict[str, Any]] = {
    "triton": {"device": f"{SITE}-orin", "profile": "agx-orin", "platform": "jetson", "label": "Triton (AGX Orin)",
               "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]},
    "litert": {"device": f"{SITE}-coralusb", "profile": "coral-usb", "platform": "coral",
               "label": "LiteRT server (Coral USB host)",
               "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
}
METHODS = {"ours": "ours (in-place load)", "naive": "naive (new container)"}
# seconds: load before the deployment, the "during" window's end after the new version first answered,
# load after that window, the time cap of one measured run
BEFORE_S, SETTLE_S, AFTER_S, CAP_S = 6.0, 2.0, 5.0, 120.0
log = Log("model_update")


class Device(access.Ssh):
    """A device of the bench's own, with the cpuacct cgroup of its container (systemd, sshd, dockerd and
    what Ansible runs there; the server's container has a cgroup of its own)."""

    def __init__(self, name: str, added: dict[str, Any]) -> None:
        super().__init__(name, added["port"], added["identity_file"])
        cid = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", added["container"]], capture_output=True,
                             text=True, check=False).stdout.strip()
        cgroup = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        self.cgroup = cgroup if cid and cgroup.exists() else None


def write_inventory(work: Path, devices: dict[str, Device], first: Path) -> Path:
    """An inventory of this benchmark's devices, each to serve the release `first` after bootstrap.yml."""
    release = yaml.safe_load(first.read_text())["edgeai_release"]
    hosts = {dev.name: {"ansible_host": "127.0.0.1", "ansible_port": dev.port, "edge_site": SITE,
                        "edge_platform": SERVERS[kind]["platform"], "edge_hardware": SERVERS[kind]["profile"],
                        "edge_ring": "canary", "inference_server_model": {
                            "name": release["model_name"], "version": release["model_version"],
                            "artifact": release["artifacts"][SERVERS[kind]["platform"]],
                            "smoke_test": release["smoke_test"][SERVERS[kind]["platform"]]}}
             for kind, dev in devices.items()}
    return access.static_inventory(work / "inventory", "hosts.yml", {"hosts": hosts})


def naive_prepare(dev: Device, artifact: Path, tag: str) -> list[str]:
    """Build <tag> on the device FROM the running server's image, the model baked into /models; the
    `docker run` arguments that replace the running container with it (same flags)."""
    info = json.loads(dev.run(f"docker inspect {CONTAINER}").stdout)[0]
    ctx = f"/tmp/edgeai-naive-{tag.replace('/', '-').replace(':', '-')}"
    dev.run(f"rm -rf {ctx} && mkdir -p {ctx} && tar -xzf - -C {ctx}", input=artifact.read_bytes())
    dev.run(f"cat > {ctx}/Dockerfile && docker build -q -t {tag} {ctx}", timeout=300,
            input=f"FROM {info['Config']['Image']}\nCOPY {MODEL} /models/{MODEL}\n")
    host, config = info["HostConfig"], info["Config"]
    policy, runtime, entry = host.get("RestartPolicy", {}).get("Name"), host.get("Runtime"), config.get("Entrypoint")
    args = ["docker", "run", "-d", "--name", CONTAINER, *(["--restart", policy] if policy else []),
            *(["--runtime", runtime] if runtime and runtime != "runc" else []),
            *(["--memory", str(host["Memory"])] if host.get("Memory") else [])]
    for cport, binds in sorted((host.get("PortBindings") or {}).items()):
        args += [a for b in binds for a in ("-p", f"{b['HostIp'] + ':' if b['HostIp'] else ''}{b['HostPort']}:"
                                                  f"{cport.split('/')[0]}")]
    args += [a for d in host.get("Devices") or [] for a in ("--device", f"{d['PathOnHost']}:{d['PathInContainer']}")]
    args += [a for rule in host.get("DeviceCgroupRules") or [] for a in ("--device-cgroup-rule", rule)]
    args += [a for m in info.get("Mounts", []) if m["Destination"] != "/models"  # the model is in the image now
             for a in ("-v", f"{m['Source']}:{m['Destination']}{'' if m.get('RW', True) else ':ro'}")]
    args += [a for label, value in sorted((config.get("Labels") or {}).items()) if label.startswith("io.edgeai.")
             for a in ("--label", f"{label}={value}")]
    return args + (["--entrypoint", entry[0]] if entry else []) + [tag, *(entry or [])[1:], *(config.get("Cmd") or [])]


def measure(dev: Device, port: int, inputs: list[dict[str, Any]], deploy: Callable[[], tuple[int, str]], old: int,
            new: int, args: Any) -> dict[str, Any]:
    """--workers clients each sending a request every --interval-ms, and CPU samples of the machine and the
    device; the deployment starts after BEFORE_S; the load ends SETTLE_S + AFTER_S after the new version
    first answered (or 10 s after the deployment gave up, or at the time cap)."""
    stop, seen, load, result = threading.Event(), threading.Event(), {}, {}
    cpu: list[tuple[float, int, int, int]] = []  # (time, busy and all jiffies of the machine, device CPU ns)

    def check(status: int, raw: bytes, _k: int) -> tuple[bool, int | str]:
        """A right answer notes the version that gave it (version N answers [N, 2N, 3N, 4N])."""
        if status != 200:
            return False, f"HTTP {status}"
        data = [float(x) for x in json.loads(raw)["outputs"][0]["data"]]
        version = round(data[0])
        if data != [float(version * k) for k in (1, 2, 3, 4)]:
            return False, "wrong answer"
        if version == new:
            seen.set()
        return True, version

    def sample_cpu() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
            device_ns = int(dev.cgroup.read_text()) if dev.cgroup else 0
            # busy = all but idle + iowait
            cpu.append((time.monotonic() - t0, sum(fields) - fields[3] - fields[4], sum(fields), device_ns))
            stop.wait(0.5)

    def run_deploy() -> None:
        t, cpu_s = time.monotonic(), children_cpu()
        try:
            result["rc"], result["output"] = deploy()
        except subprocess.TimeoutExpired:
            result["rc"], result["output"] = -1, f"killed after the time cap ({CAP_S:g} s)"
        # this process waits for no other child meanwhile: this is the command's own CPU (Ansible and its ssh)
        result.update(deploy_s=time.monotonic() - t, deploy_cpu_s=children_cpu() - cpu_s, ended=time.monotonic())

    body = json.dumps({"inputs": inputs}).encode()
    t0, wall0 = time.monotonic(), time.time()  # the same instant on the wall clock, for the server's log
    deadline = t0 + CAP_S
    threads = [threading.Thread(target=lambda: load.update(http_load(
        port, f"/v2/models/{MODEL}/infer", lambda _k: body, 2**62, args.workers, CAP_S,
        pace_s=args.interval_ms / 1000, stop=stop, timeout=10, check=check)), daemon=True),
        threading.Thread(target=sample_cpu, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(BEFORE_S)
    t_deploy = time.monotonic() - t0
    deployer = threading.Thread(target=run_deploy, daemon=True)
    deployer.start()
    while not seen.wait(0.1):
        # the deployment ended 10 s ago and the new version never answered, or the time cap
        if ("ended" in result and time.monotonic() > result["ended"] + 10) or time.monotonic() > deadline:
            break
    if seen.is_set():
        time.sleep(SETTLE_S + AFTER_S)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    offset = load.get("start", t0) - t0
    # every request: (sent, seconds since the load started; latency; ok; the version; the error)
    records = sorted((sent + offset, lat, ok, note if ok else None, "" if ok else note)
                     for _k, sent, lat, ok, note in load.get("records", []))
    deployer.join(timeout=max(1.0, deadline - time.monotonic() + 60))
    if deployer.is_alive():
        result.setdefault("rc", -1)
        result.setdefault("output", "still running at the time cap")
    return dict(result, records=records, t_deploy=t_deploy, old=old, new=new, wall0=wall0, cpu=cpu)


def server_log(dev: Device, since: float) -> list[tuple[float, str]]:
    """(epoch seconds, line) of the server's log lines about the model since `since` (one clock for all)."""
    events = []
    logs = dev.run(f"docker logs --timestamps --since {since:.3f} {CONTAINER} 2>&1", timeout=60).stdout
    for line in logs.splitlines():
        stamp, _, rest = line.partition(" ")
        with contextlib.suppress(ValueError):
            if MODEL in rest:
                events.append((datetime.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp(),
                               rest.strip()))
    return events


def server_load(run: dict[str, Any]) -> tuple[float, float] | None:
    """When the server began and finished loading the new version (seconds since the deployment started),
    from Triton's "loading:" and "successfully loaded" or the LiteRT server's "model loaded" and load_s."""
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
    """Between start and end: the busy share of the machine's CPU, the device's cores outside the server."""
    inside = [c for c in run["cpu"] if start <= c[0] - run["t_deploy"] <= end]
    if len(inside) < 2 or inside[-1][2] == inside[0][2]:
        return float("nan"), float("nan")
    first, last = inside[0], inside[-1]
    return (last[1] - first[1]) / (last[2] - first[2]), (last[3] - first[3]) / 1e9 / (last[0] - first[0])


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    recs = [(r[0] - run["t_deploy"], *r[1:]) for r in run["records"]]  # times since the deployment's start
    t_start = 1.0 - run["t_deploy"]
    firsts = [r[0] for r in recs if r[2] and r[3] == run["new"]]
    lasts = [r[0] for r in recs if r[2] and r[3] == run["old"]]
    t_new = min(firsts) if firsts else None
    end = (t_new + SETTLE_S) if t_new is not None else float("inf")
    out: dict[str, Any] = {
        "requests": len(recs), "failed": sum(1 for r in recs if not r[2]), "t_new": t_new, "recs": recs,
        "last_old": max(lasts) if lasts else None, "rc": run["rc"], "deploy_s": run.get("deploy_s", float("nan")),
        "errors": sorted({r[4] for r in recs if not r[2]}), "steady": window(recs, t_start, 0.0),
        "during": window(recs, 0.0, end), "after": window(recs, end, float("inf")), "load": server_load(run),
        "deploy_cpu_s": run.get("deploy_cpu_s", float("nan")), "cpu_steady": cpu_use(run, t_start, 0.0),
        "cpu_during": cpu_use(run, 0.0, end)}
    if out["load"] is not None:
        out["before_swap"], out["swap"] = window(recs, 0.0, out["load"][0]), window(recs, out["load"][0], end)
        out["swap_slowest"] = max((r[1] for r in recs if r[2] and out["load"][0] <= r[0] < end), default=0.0)
    # the longest stretch without a successful answer, from one answer's arrival to the next's
    done = sorted(r[0] + r[1] for r in recs if r[2])
    out["gap_s"], out["gap_at"] = max(((b - a, a) for a, b in zip(done, done[1:], strict=False)),
                                      default=(float("nan"), float("nan")))
    return out


def draw(plt: Any, runs: dict[tuple[str, str], dict[str, Any]], sums: dict[tuple[str, str], dict[str, Any]]) -> Any:
    """Latency over time, one panel per server and method."""
    kinds = sorted({k for k, _m in runs}, key=list(SERVERS).index)
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), sharey="row", squeeze=False)
    for row, kind in enumerate(kinds):
        for col, method in enumerate(METHODS):
            ax, run = axes[row][col], runs.get((kind, method))
            if run is None:
                ax.set_axis_off()
                continue
            s = sums[(kind, method)]
            recs = s["recs"]
            if s["t_new"] is not None:
                ax.axvspan(0, s["t_new"] + SETTLE_S, color="gold", alpha=0.2, zorder=0, label="'during' window")
            for version, color in ((run["old"], "tab:blue"), (run["new"], "tab:orange")):
                pts = [(r[0], r[1] * 1e3) for r in recs if r[2] and r[3] == version]
                if pts:
                    ax.scatter(*zip(*pts, strict=True), s=4, color=color, zorder=2, label=f"answered by v{version}")
            fails = [r[0] for r in recs if not r[2]]
            if fails:
                top = max([r[1] * 1e3 for r in recs if r[2]] or [1.0]) * 1.5
                ax.scatter(fails, [top] * len(fails), s=12, marker="x", color="tab:red", zorder=3,
                           label=f"failed ({len(fails)}), drawn at the top")
            if s["load"] is not None and s["swap_slowest"] > 0.5:
                held = max((r for r in recs if r[2] and r[0] >= s["load"][0]), key=lambda r: r[1])
                left = held[0] < recs[0][0] + 0.75 * (recs[-1][0] - recs[0][0])  # the legend is on the left
                ax.annotate(f"held {held[1]:.1f} s by the load,\nthen answered by v{run['new']}",
                            xy=(held[0], held[1] * 1e3), xytext=(12 if left else -12, -28), textcoords="offset points",
                            ha="left" if left else "right", fontsize=7, arrowprops={"arrowstyle": "->",
                                                                                    "linewidth": 0.8})
            ax.axvline(0, color="black", linewidth=0.8, label="deployment starts")
            if s["load"] is not None:
                ax.axvline(s["load"][0], color="tab:green", linestyle="--", linewidth=1,
                           label="server starts loading the new version")
            ax.set_yscale("log")
            ax.set_title(f"{SERVERS[kind]['label']}: {METHODS[method]}", fontsize=10)
            ax.set_xlabel("seconds since the deployment started (request send time)")
            if col == 0:
                ax.set_ylabel("latency, ms (log scale)")
            ax.legend(fontsize=7, loc="upper left", markerscale=2)
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def requests(n: int) -> str:
    return f"{n:,} request" + ("" if n == 1 else "s")


def report(sums: dict[tuple[str, str], dict[str, Any]], args: Any, notes: dict[str, Any]) -> str:
    out = ["## Model update under load", "",
           "A new model version deployed to a serving device under steady inference load. **Ours**: "
           "`playbooks/deploy_model.yml` with the next release, limited to the device (`-e edgeai_targets=<device>`): "
           "staged and loaded in place in the running server, gated by its smoke test (canary soak 1 s). **Naive** "
           "(the baseline): an image FROM the server's with the new version in `/models`, built on the device "
           "beforehand (only deploying it is timed), then `docker stop` + `rm` + `run` with the same ports and flags, "
           f"over SSH. Two lab devices of its own on site `{SITE}`, an AGX Orin running Triton (the CPU stand-in) and "
           "a Coral USB host running the LiteRT server, bootstrapped (`bootstrap.yml`, no event relay) to serve v1 of "
           "the demo model (version N answers [N, 2N, 3N, 4N]); ours goes v1 -> v2, naive v2 -> v3. Load: "
           f"{args.workers} closed-loop client threads, one request every {args.interval_ms:g} ms each (at most "
           f"{args.workers * 1000 / args.interval_ms:,.0f} req/s), keep-alive connections through an SSH tunnel, "
           "KServe v2 JSON; a broken connection, an HTTP error or a wrong answer is a failure, percentiles are over "
           "the successful requests. Windows by send time: steady = from 1 s after the load starts to the "
           f"deployment's start ({BEFORE_S:g} s of load first); during = until {SETTLE_S:g} s after the new version "
           f"first answered; after = the {AFTER_S:g} s that follow. All on the machine's {os.cpu_count()} shared "
           f"cores (1-minute load average {notes['load_before']} before, {notes['load_after']} after). Setup (not "
           f"measured): {notes['setup_s']:.0f} s; whole run {notes['total_s']:.0f} s.", "", notes["plot"], ""]
    rows = []
    for (kind, method), s in sums.items():
        w = [s["steady"], s["during"], s["after"]]
        rows.append((SERVERS[kind]["label"], f"**{METHODS[method]}**" if method == "ours" else METHODS[method],
                     f"{s['requests']:,}", f"{s['failed']:,} ({' / '.join(str(x['failed']) for x in w)})",
                     " / ".join(fmt(x["p50"]) for x in w), " / ".join(fmt(x["p99"]) for x in w),
                     f"{fmt(s['during']['p99'] / s['steady']['p99'], 2)}x",
                     "never" if s["t_new"] is None else f"{s['t_new']:.1f} s", f"{fmt(s['gap_s'], 2)} s",
                     f"{s['deploy_s']:.1f} s" + ("" if s["rc"] == 0 else f" (exit {s['rc']})")))
    out += table(["server", "method", "requests", "failed (steady / during / after)", "p50 ms steady / during / after",
                  "p99 ms steady / during / after", "p99 during / steady", "new version answers after",
                  "longest time without an answer", "deployment command took"], rows, "llrrrrrrrr")
    out += ["", *(f"- {SERVERS[kind]['label']}, {method}: {details(s, method)}" for (kind, method), s in sums.items()),
            ""]
    for kind in SERVERS:
        if (kind, "ours") in sums and (kind, "naive") in sums:
            out.extend(verdicts(SERVERS[kind]["label"], sums[(kind, "ours")], sums[(kind, "naive")]))
    return "\n".join(out)


def details(s: dict[str, Any], method: str) -> str:
    """What the table cannot say: where the CPU went, when the server swapped, what failed."""
    (busy_steady, dev_steady), (busy_during, dev_during) = s["cpu_steady"], s["cpu_during"]
    text = (f"{'deploy_model.yml' if method == 'ours' else 'the docker commands'} took {s['deploy_s']:.1f} s wall and "
            f"{fmt(s['deploy_cpu_s'])} CPU-s on the controller; the device outside the server's container (Ansible's "
            f"modules, sshd, the engine) used {fmt(dev_steady, 2)} cores steady, {fmt(dev_during, 2)} during; the "
            f"whole machine was {fmt(busy_steady * 100, 0)}% busy steady, {fmt(busy_during * 100, 0)}% during.")
    if s["load"] is not None:
        b, w = s["before_swap"], s["swap"]
        text += (f" The server loaded the new version from {s['load'][0]:.1f} s to {s['load'][1]:.1f} s after the "
                 f"deployment started (its log). Before that (Ansible's preflight and staging) p99 {fmt(b['p99'])} ms "
                 f"({fmt(b['p99'] / s['steady']['p99'], 2)}x steady) over {requests(b['n'])}; from then to the end of "
                 f"the 'during' window p99 {fmt(w['p99'])} ms ({fmt(w['p99'] / s['steady']['p99'], 2)}x steady) over "
                 f"{requests(w['n'])}, the slowest {s['swap_slowest'] * 1e3:,.0f} ms.")
    text += f" The longest time without an answer ({fmt(s['gap_s'], 2)} s) began {fmt(s['gap_at'])} s after the " \
            "deployment started."
    if method == "naive" and s["last_old"] is not None and s["t_new"] is not None:
        text += (f" The old version's last answered request was sent {s['last_old']:.1f} s after the deployment "
                 f"started, the new version's first {s['t_new']:.1f} s after.")
    return text + (f" The failed requests saw {', '.join(s['errors'])}." if s["errors"] else "")


def verdicts(label: str, ours: dict[str, Any], naive: dict[str, Any]) -> list[str]:
    met = ours["failed"] == 0 and ours["t_new"] is not None
    line = (f"- {label}, goal zero failed requests (the naive way: {naive['failed']:,} failed): "
            f"**{'met' if met else 'missed'}**: ours {ours['failed']:,} failed of {ours['requests']:,}, ours / naive = "
            + ("n/a" if naive["failed"] == 0 else f"{ours['failed'] / naive['failed']:.3f}x"))
    if not met:
        line += "; the new version never answered" if ours["t_new"] is None else f"; {ours['failed']:,} over the goal"
    out = [line + "."]
    p99r = ours["during"]["p99"] / ours["steady"]["p99"]
    met = p99r <= 2.0
    line = (f"- {label}, goal p99 during the swap within 2x of steady state: **{'met' if met else 'missed'}**: "
            f"{fmt(ours['during']['p99'])} ms during vs {fmt(ours['steady']['p99'])} ms steady = {p99r:.2f}x "
            f"(naive: {fmt(naive['during']['p99'] / naive['steady']['p99'], 2)}x, over the requests that did not fail)"
            + ("." if met else
               f"; {p99r / 2.0:.2f}x the goal, {ours['during']['p99'] - 2 * ours['steady']['p99']:.1f} ms over it."))
    if not met and ours["load"] is None:
        line += " The server's log did not show the load, so the cause is not split here."
    elif not met:
        before = ours["before_swap"]["p99"] / ours["steady"]["p99"]
        line += (
            f" Why: the tail was already {before:.2f}x steady before the server touched the model, while Ansible ran "
            f"its preflight and staging ({fmt(ours['deploy_cpu_s'])} CPU-s on the controller, "
            f"{fmt(ours['cpu_during'][1], 2)} cores on the device; the machine's {os.cpu_count()} cores "
            f"{fmt(ours['cpu_during'][0] * 100, 0)}% busy, {fmt(ours['cpu_steady'][0] * 100, 0)}% steady): CPU "
            "contention, not the swap. Fewer module calls per deployment, and a controller off the device's cores "
            "(as in a fleet), would close it." if before > 2.0 else
            f" Why: before the server touched the model the tail was {before:.2f}x steady; from its load on "
            f"{fmt(ours['swap']['p99'] / ours['steady']['p99'], 2)}x over {requests(ours['swap']['n'])}.")
    held = ours.get("swap_slowest", 0.0)
    if held >= 1.0 and held > 3 * ours["steady"]["p99"] / 1e3:
        line += (
            f" Behind the percentile: the requests sent as the server began loading waited {held:.1f} s, then the new "
            f"version answered them ({fmt(ours['gap_s'], 1)} s without any answer; one such request per worker, so "
            "the p99 cannot show it): Triton holds a model's requests while it loads a new version "
            "(triton-inference-server/server#5042). A Triton that keeps the old version answering, or a second "
            "server behind a local proxy (the collection has neither), would close it.")
    return [*out, line]


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--workers", type=int, default=3, help="client threads")
    ap.add_argument("--interval-ms", type=float, default=25.0, help="each worker sends one request this often")
    ap.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: triton,litert")
    args = ap.parse_args(argv)
    status = access.status()
    # not status["up"]: that is false while any device is stopped, and other people's tests stop some
    if not (status.get("processes") or {}).get("registry") or not status.get("ssh_key"):
        log("the lab is not up: run `tests/lab/lab up` first")
        return 1
    devices: dict[str, Device] = {}
    added: list[str] = []  # removed in the end even when adding failed half-way
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    notes: dict[str, Any] = {"load_before": loadavg()}
    t_setup = time.monotonic()
    with workdir("model-update") as work:
        try:
            for kind in (k for k in args.servers.split(",") if k):
                name, profile = SERVERS[kind]["device"], SERVERS[kind]["profile"]
                log(f"adding {name} ({profile}) on {SITE}")
                added.append(name)
                devices[kind] = Device(name, access.add_device(name, profile, SITE, "--ring", "canary"))
            releases = {v: access.demo_release(v, out=work / "release") for v in (1, 2, 3)}
            inventory = write_inventory(work, devices, releases[1])
            env = access.playbook_env(work / "cp")  # SSH masters of our own

            def outcome(proc: subprocess.CompletedProcess[str]) -> tuple[int, str]:
                return proc.returncode, (proc.stdout + proc.stderr)[-3000:]

            log("bootstrap.yml to serving v1 (event relay left out: webhook_api_url empty)")
            access.run_playbook_ok(inventory, "playbooks/bootstrap.yml", "-e", "webhook_api_url=", env=env, timeout=600)
            naive_run = {kind: naive_prepare(dev, work / "release" / f"{MODEL}-{SERVERS[kind]['platform']}-3.tar.gz",
                                             f"edgeai-naive/{kind}-{MODEL}:3") for kind, dev in devices.items()}
            notes["setup_s"] = time.monotonic() - t_setup
            for kind, dev in devices.items():
                def ours(dev: Device = dev) -> tuple[int, str]:
                    return outcome(access.run_playbook(
                        inventory, "playbooks/deploy_model.yml", "-e", f"@{releases[2]}", "-e",
                        f"edgeai_targets={dev.name}", "-e", "edgeai_canary_soak_seconds=1", "-e",
                        f"edgeai_report_dir={work / 'reports'}", env=env, timeout=CAP_S))

                def naive(dev: Device = dev, cmd: list[str] = naive_run[kind]) -> tuple[int, str]:
                    return outcome(dev.run(f"docker stop {CONTAINER} && docker rm {CONTAINER} && {shlex.join(cmd)}",
                                           check=False, timeout=CAP_S))

                with dev.tunnel(SERVER_PORT) as port:
                    for method, deploy, old, new in (("ours", ours, 1, 2), ("naive", naive, 2, 3)):
                        log(f"{kind}: {method}, v{old} -> v{new}"
                            + (f": {shlex.join(naive_run[kind])}" if method == "naive" else ""))
                        run = runs[(kind, method)] = measure(dev, port, SERVERS[kind]["inputs"], deploy, old, new,
                                                             args)
                        log(f"{kind}: {method}: the deployment exited {run['rc']}"
                            + ("" if run["rc"] == 0 else f"\n{run['output']}"))
                        if method == "ours":  # the server's log, before the naive way removes its container
                            run["events"] = server_log(dev, run["wall0"] + run["t_deploy"])
            notes.update(load_after=loadavg(), total_s=time.monotonic() - t_setup)
            sums = {key: summarize(run) for key, run in runs.items()}
            notes["plot"] = figure(log, PLOTS / "model_update.png", "latency over time during the swaps",
                                   lambda plt: draw(plt, runs, sums))
            print(report(sums, args, notes))
            return 0
        finally:
            log(f"removing {', '.join(added)}")
            access.remove_devices(added, log)


if __name__ == "__main__":
    raise SystemExit(main())
