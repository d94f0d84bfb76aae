"""Model update under load: failed requests and latency while a new model version is deployed."""

import functools
import json
import os
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from edgeai_lab import access
from edgeai_lab.devices import load_profile
from edgeai_lab.load import Load

from benchmarks import harness as h

SITE, MODEL, SERVER_PORT = "bench-site", "detector", 8000
CONTAINER = "edgeai-inference"  # the inference_server role's default container name
SERVERS: dict[str, dict[str, Any]] = {
    "triton": {"device": f"{SITE}-orin", "profile": "agx-orin", "label": "Triton (AGX Orin)",
               "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]},
    "litert": {"device": f"{SITE}-coralusb", "profile": "coral-usb", "label": "LiteRT server (Coral USB host)",
               "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
}
for _server in SERVERS.values():  # jetson or coral, as the lab's profile says
    _server["platform"] = load_profile(_server["profile"])["platform"]
METHODS = {"ours": "ours (in-place load)", "naive": "naive (new container)"}
# seconds: load before the deployment, the "during" window's end after the new version first answered,
# load after that window, the time cap of one measured run
BEFORE_S, SETTLE_S, AFTER_S, CAP_S = 6.0, 2.0, 5.0, 120.0
Run = dict[str, Any]  # one measured deployment, then its summary; times are seconds since the deployment started
log = h.logger("model_update")


def write_inventory(work: Path, kinds: list[str], first: Path) -> Path:
    """A device_registry inventory of this benchmark's devices, each to serve the release `first` after bootstrap."""
    release, fleet = yaml.safe_load(first.read_text())["edgeai_release"], {}
    for kind in kinds:
        server, platform = SERVERS[kind], SERVERS[kind]["platform"]
        model = {"name": release["model_name"], "version": release["model_version"],
                 "artifact": release["artifacts"][platform], "smoke_test": release["smoke_test"][platform]}
        fleet[server["device"]] = {"site": SITE, "platform": platform, "hardware": server["profile"], "ring": "canary",
                                   "vars": {"inference_server_model": model}}
    return access.registry_inventory(work / "inventory", fleet, access.status()["devices"])


def naive_prepare(dev: access.Ssh, artifact: Path, kind: str) -> list[str]:
    """Build an image on the device FROM the running server's, the model baked into /models; the `docker run`
    arguments that replace the running container with it (same flags)."""
    info = json.loads(dev.run(f"docker inspect {CONTAINER}").stdout)[0]
    ctx, tag = f"/tmp/edgeai-naive-{kind}", f"edgeai-naive/{kind}:3"
    dev.run(f"rm -rf {ctx} && mkdir -p {ctx} && tar -xzf - -C {ctx}", input=artifact.read_bytes())
    dev.run(f"cat > {ctx}/Dockerfile && docker build -q -t {tag} {ctx}", timeout=300,
            input=f"FROM {info['Config']['Image']}\nCOPY {MODEL} /models/{MODEL}\n")
    return access.replacement_run(info, tag, leave_out="/models")  # the model is in the image now


def measure(dev: access.Ssh, port: int, kind: str, deploy: Any, old: int, new: int, args: Any) -> Run:
    """--workers clients each sending a request every --interval-ms, and CPU samples of the machine and the
    device; deploy() after BEFORE_S; the load ends SETTLE_S + AFTER_S after the new version first answered,
    10 s after deploy() ended without it, or at the time cap."""
    stop, seen = threading.Event(), threading.Event()
    cpu: list[tuple[float, int, int, float]] = []  # (time, busy and all jiffies of the machine, device CPU s)
    # the device's own container: systemd, sshd, dockerd and what Ansible runs there (not the server's container)
    containers = access.device_containers(dev.name, engine=False)

    def check(status: int, raw: bytes, _k: int) -> tuple[bool, int | str]:
        """A right answer notes the version that gave it (version N answers [N, 2N, 3N, 4N])."""
        if status != 200:
            return False, f"HTTP {status}"
        data = [float(x) for x in json.loads(raw)["outputs"][0]["data"]]
        version = round(data[0])
        if data != [float(version * k) for k in (1, 2, 3, 4)]:
            return False, "wrong answer"
        if version == new and not seen.is_set():
            seen.set()
            threading.Timer(SETTLE_S + AFTER_S, stop.set).start()
        return True, version

    def sample_cpu() -> None:
        while not stop.is_set():
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
            busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
            cpu.append((time.monotonic(), busy, sum(fields), access.containers_cpu_s(containers)))
            stop.wait(0.5)

    def deployed() -> tuple[int, str]:
        try:
            proc = deploy()
        except subprocess.TimeoutExpired:
            return -1, f"killed after the time cap ({CAP_S:g} s)"
        return proc.returncode, (proc.stdout + proc.stderr)[-3000:]

    body, t0 = json.dumps({"inputs": SERVERS[kind]["inputs"]}).encode(), time.monotonic()
    load = Load(port, f"/v2/models/{MODEL}/infer", lambda _k: body, 2**62, args.workers, CAP_S,
                pace_s=args.interval_ms / 1000, stop=stop, timeout=10, check=check)
    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    time.sleep(BEFORE_S)
    at, wall = time.monotonic(), time.time()  # the wall clock, for the server's log
    # this process waits for no other child meanwhile: the CPU is the command's own (Ansible and its ssh)
    deploy_s, deploy_cpu_s, (rc, output) = h.timed(deployed)
    if not seen.wait(10):
        stop.set()
    done = load.result()
    stop.set()
    sampler.join(timeout=CAP_S)
    # every request: (sent, latency, ok, the version that answered, the error)
    records = sorted((sent + done["start"] - at, lat, ok, note if ok else None, "" if ok else note)
                     for _k, sent, lat, ok, note in done["records"])
    return {"records": records, "cpu": [(c[0] - at, *c[1:]) for c in cpu], "t_start": t0 + 1.0 - at, "wall": wall,
            "rc": rc, "output": output, "deploy_s": deploy_s, "deploy_cpu_s": deploy_cpu_s, "old": old, "new": new}


def server_load(dev: access.Ssh, run: Run) -> tuple[float, float] | None:
    """When the server began and finished loading the new version, from its log."""
    logs = dev.run(f"docker logs -t --since {run['wall']:.3f} {CONTAINER} 2>&1", timeout=60).stdout
    return access.server_load_window(logs, MODEL, run["new"], since=run["wall"])


def window(recs: list[tuple[float, float, bool, int | None, str]], start: float, end: float) -> dict[str, Any]:
    rs = [r for r in recs if start <= r[0] < end]
    lat = sorted(r[1] * 1e3 for r in rs if r[2])
    return {"n": len(rs), "failed": sum(1 for r in rs if not r[2]), "p50": h.pct(lat, 0.5), "p99": h.pct(lat, 0.99)}


def cpu_use(samples: list[tuple[float, int, int, float]], start: float, end: float) -> tuple[float, float]:
    """Between start and end: the busy share of the machine's CPU, the device's cores outside the server."""
    inside = [c for c in samples if start <= c[0] <= end]
    if len(inside) < 2 or inside[-1][2] == inside[0][2]:
        return float("nan"), float("nan")
    (t0, busy0, all0, dev0), (t1, busy1, all1, dev1) = inside[0], inside[-1]
    return (busy1 - busy0) / (all1 - all0), (dev1 - dev0) / (t1 - t0)


def summarize(run: Run, load: tuple[float, float] | None) -> Run:
    recs, ok = run["records"], [r for r in run["records"] if r[2]]
    t_new = min((r[0] for r in ok if r[3] == run["new"]), default=None)
    end = (t_new + SETTLE_S) if t_new is not None else float("inf")
    done = sorted(r[0] + r[1] for r in ok)  # the longest stretch from one answer's arrival to the next's
    gap_s, gap_at = max(((b - a, a) for a, b in zip(done, done[1:], strict=False)), default=(float("nan"),) * 2)
    out = dict(run, recs=recs, ok=ok, requests=len(recs), failed=len(recs) - len(ok), t_new=t_new, load=load,
               last_old=max((r[0] for r in ok if r[3] == run["old"]), default=None), gap_s=gap_s, gap_at=gap_at,
               errors=sorted({r[4] for r in recs if not r[2]}), steady=window(recs, run["t_start"], 0.0),
               during=window(recs, 0.0, end), after=window(recs, end, float("inf")),
               cpu_steady=cpu_use(run["cpu"], run["t_start"], 0.0), cpu_during=cpu_use(run["cpu"], 0.0, end))
    if load is not None:
        out.update(before_swap=window(recs, 0.0, load[0]), swap=window(recs, load[0], end),
                   swap_slowest=max((r[1] for r in ok if load[0] <= r[0] < end), default=0.0))
    return out


def draw(plt: Any, sums: dict[tuple[str, str], Run]) -> Any:
    """Latency over time, one panel per server and method."""
    kinds = [k for k in SERVERS if (k, "ours") in sums]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), sharey="row", squeeze=False)
    for (row, kind), (col, method) in ((r, c) for r in enumerate(kinds) for c in enumerate(METHODS)):
        ax, s = axes[row][col], sums[(kind, method)]
        if s["t_new"] is not None:
            ax.axvspan(0, s["t_new"] + SETTLE_S, color="gold", alpha=0.2, zorder=0, label="'during' window")
        for version, color in ((s["old"], "tab:blue"), (s["new"], "tab:orange")):
            if pts := [(r[0], r[1] * 1e3) for r in s["ok"] if r[3] == version]:
                ax.scatter(*zip(*pts, strict=True), s=4, color=color, zorder=2, label=f"answered by v{version}")
        if fails := [r[0] for r in s["recs"] if not r[2]]:
            top = max([r[1] * 1e3 for r in s["ok"]] or [1.0]) * 1.5
            ax.scatter(fails, [top] * len(fails), s=12, marker="x", color="tab:red", zorder=3,
                       label=f"failed ({len(fails)}), drawn at the top")
        ax.axvline(0, color="black", linewidth=0.8, label="deployment starts")
        if s["load"] is not None:
            ax.axvline(s["load"][0], color="tab:green", linestyle="--", linewidth=1,
                       label="server starts loading the new version")
        if s.get("swap_slowest", 0) > 0.5:
            held = max((r for r in s["ok"] if r[0] >= s["load"][0]), key=lambda r: r[1])
            left = held[0] < s["recs"][0][0] + 0.75 * (s["recs"][-1][0] - s["recs"][0][0])  # legend on the left
            ax.annotate(f"held {held[1]:.1f} s by the load,\nthen answered by v{s['new']}",
                        xy=(held[0], held[1] * 1e3), xytext=(12 if left else -12, -28), textcoords="offset points",
                        ha="left" if left else "right", fontsize=7, arrowprops={"arrowstyle": "->"})
        ax.set(yscale="log", xlabel="seconds since the deployment started (request send time)",
               ylabel="latency, ms (log scale)" if col == 0 else "")
        ax.set_title(f"{SERVERS[kind]['label']}: {METHODS[method]}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", markerscale=2)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def report(sums: dict[tuple[str, str], Run], args: Any, notes: dict[str, Any]) -> str:
    intro = f"""A new model version deployed to a serving device under steady load. **Ours**:
        `playbooks/deploy_model.yml` with the next release, `-e edgeai_targets=<device>`: staged, loaded in place,
        smoke-tested (canary soak 1 s). **Naive**: `docker stop` + `rm` + `run` over SSH, same ports and flags, of an
        image FROM the server's with the new version in `/models` (built beforehand, not timed). Two devices of its own
        on `{SITE}` serve v1 of the demo model (version N answers [N, 2N, 3N, 4N]) after `bootstrap.yml` (no event
        relay): an AGX Orin with Triton (the CPU stand-in), a Coral USB host with the LiteRT server; ours v1 -> v2,
        naive v2 -> v3. Load: {args.workers} threads, a request every {args.interval_ms:g} ms each (at most
        {args.workers * 1000 / args.interval_ms:,.0f} req/s), KServe v2 JSON over keep-alive SSH tunnels; a broken
        connection, an HTTP error or a wrong answer fails; percentiles are of the rest. Windows by send time: steady
        from 1 s into the load to the deployment ({BEFORE_S:g} s in), during until {SETTLE_S:g} s after the new
        version's first answer, after the next {AFTER_S:g} s. Device CPU: its container without the server's
        (Ansible's modules, sshd, the engine). {os.cpu_count()} shared cores (1-minute load average
        {notes['load_before']} before, {notes['load_after']} after); setup {notes['setup_s']:.0f} s (not measured),
        whole run {notes['total_s']:.0f} s."""
    rows = []
    for (kind, method), s in sums.items():
        w = [s["steady"], s["during"], s["after"]]
        rows.append((SERVERS[kind]["label"], f"**{METHODS[method]}**" if method == "ours" else METHODS[method],
                     f"{s['requests']:,}", f"{s['failed']:,} ({' / '.join(str(x['failed']) for x in w)})",
                     " / ".join(h.fmt(x["p50"]) for x in w), " / ".join(h.fmt(x["p99"]) for x in w),
                     h.ratio(s["during"]["p99"], s["steady"]["p99"], "n/a"),
                     "never" if s["t_new"] is None else f"{s['t_new']:.1f} s", f"{h.fmt(s['gap_s'], 2)} s",
                     f"{s['deploy_s']:.1f} s" + ("" if s["rc"] == 0 else f" (exit {s['rc']})")))
    out = ["## Model update under load", "", *h.paragraphs(intro), "", notes["plot"], "", *h.table(
        ["server", "method", "requests", "failed (steady / during / after)", "p50 ms steady / during / after",
         "p99 ms steady / during / after", "p99 during / steady", "new version answers after",
         "longest time without an answer", "deployment command took"], rows, "llrrrrrrrr"),
           "", *(f"- {SERVERS[k]['label']}, {m}: {details(s, m)}" for (k, m), s in sums.items()), ""]
    for kind in SERVERS:
        if (kind, "ours") in sums and (kind, "naive") in sums:
            out += verdicts(SERVERS[kind]["label"], sums[(kind, "ours")], sums[(kind, "naive")])
    return "\n".join(out)


def details(s: Run, method: str) -> str:
    """What the table cannot say: where the CPU went, when the server swapped, what failed."""
    (busy_steady, dev_steady), (busy_during, dev_during) = s["cpu_steady"], s["cpu_during"]
    text = (f"CPU: controller {h.fmt(s['deploy_cpu_s'])} CPU-s; device {h.fmt(dev_steady, 2)} cores steady, "
            f"{h.fmt(dev_during, 2)} during; machine {h.fmt(busy_steady * 100, 0)}% busy steady, "
            f"{h.fmt(busy_during * 100, 0)}% during.")
    if s["load"] is not None:
        b, w, steady = s["before_swap"], s["swap"], s["steady"]["p99"]
        text += (f" The server loaded the new version {s['load'][0]:.1f}-{s['load'][1]:.1f} s (its log); p99 before "
                 f"(preflight, staging) {h.fmt(b['p99'])} ms ({h.ratio(b['p99'], steady, 'n/a')} steady, "
                 f"{b['n']:,} requests), from then to the window's end {h.fmt(w['p99'])} ms "
                 f"({h.ratio(w['p99'], steady, 'n/a')}, {w['n']:,} requests), slowest "
                 f"{s['swap_slowest'] * 1e3:,.0f} ms.")
    text += f" The longest time without an answer began at {h.fmt(s['gap_at'])} s."
    if method == "naive" and s["last_old"] is not None and s["t_new"] is not None:
        text += f" The old version's last answered request was sent at {s['last_old']:.1f} s, the new's first at " \
                f"{s['t_new']:.1f} s."
    return text + (f" Failures: {', '.join(s['errors'])}." if s["errors"] else "")


def verdicts(label: str, ours: Run, naive: Run) -> list[str]:
    steady, during = ours["steady"]["p99"], ours["during"]["p99"]
    fails = (f"ours {ours['failed']:,} of {ours['requests']:,}, ours / naive "
             + ("n/a" if naive["failed"] == 0 else f"{ours['failed'] / naive['failed']:.3f}x")
             + ("; the new version never answered" if ours["t_new"] is None else ""))
    met = during <= 2 * steady
    tail = (f"{h.fmt(during)} ms during vs {h.fmt(steady)} ms steady = {during / steady:.2f}x, naive "
            + h.ratio(naive["during"]["p99"], naive["steady"]["p99"], "n/a")
            + ("" if met else f"; {during / steady / 2:.2f}x the goal, {during - 2 * steady:.1f} ms over"))
    tail = h.goal("p99 during the swap within 2x of steady state", met, tail)
    if not met and ours["load"] is not None:
        before = ours["before_swap"]["p99"] / steady
        tail += (f" Why: {before:.2f}x steady before the server touched the model, "
                 f"{h.ratio(ours['swap']['p99'], steady, 'n/a')} from its load on"
                 + (": CPU contention with Ansible's preflight and staging (the CPU above), not the swap; a "
                    "controller off the device's cores, as in a fleet, would close it." if before > 2 else "."))
    if (held := ours.get("swap_slowest", 0.0)) >= 1.0 and held > 3 * steady / 1e3:
        inside = during >= held * 1e3 / 2  # the held requests are 1% or more of the window's: they are its p99
        tail += (f" {'In' if inside else 'Behind'} the percentile: requests sent as the load began waited {held:.1f} s "
                 f"for the new version (one a worker, {'1% or more of the window' if inside else 'below the p99'}): "
                 "Triton holds a model's requests while it loads a new version (triton-inference-server/server#5042); "
                 "a second server behind a local proxy would avoid it.")
    return [f"- {label}: " + h.goal(f"zero failed requests (naive: {naive['failed']:,})",
                                    ours["failed"] == 0 and ours["t_new"] is not None, fails), f"- {label}: {tail}"]


def main(argv: list[str] | None = None) -> int:
    args = h.arguments(__doc__, argv, workers=(3, "client threads"),
                       interval_ms=(25.0, "each worker sends one request this often"),
                       servers=(",".join(SERVERS), "comma-separated: triton,litert"))
    status = access.status()  # not status["up"]: false while any device is stopped, as other people's tests do
    if not (status.get("processes") or {}).get("registry") or not status.get("ssh_key"):
        log("the lab is not up: run `tests/lab/lab up` first")
        return 1
    kinds, sums = [k for k in args.servers.split(",") if k], {}
    notes, t_setup = {"load_before": h.loadavg()}, time.monotonic()
    log(f"adding {', '.join(SERVERS[k]['device'] for k in kinds)} on {SITE}")
    with h.workdir("model-update") as work, access.own_devices(
            {SERVERS[k]["device"]: (SERVERS[k]["profile"], SITE, "--ring", "canary") for k in kinds}, log):
        lab = access.status()
        devices = {k: access.Ssh.of(lab, SERVERS[k]["device"]) for k in kinds}
        releases = {v: access.demo_release(v, out=work / "release") for v in (1, 2, 3)}
        inventory = write_inventory(work, kinds, releases[1])
        env = access.playbook_env(work / "cp")  # SSH masters of our own
        log("bootstrap.yml to serving v1 (event relay left out: webhook_api_url empty)")
        access.run_playbook_ok(inventory, "playbooks/bootstrap.yml", "-e", "webhook_api_url=", env=env, timeout=600)
        naive_run = {kind: naive_prepare(dev, work / "release" / f"{MODEL}-{SERVERS[kind]['platform']}-3.tar.gz", kind)
                     for kind, dev in devices.items()}
        notes["setup_s"] = time.monotonic() - t_setup
        for kind, dev in devices.items():
            swap = f"docker stop {CONTAINER} && docker rm {CONTAINER} && {shlex.join(naive_run[kind])}"
            ours = functools.partial(access.run_playbook, inventory, "playbooks/deploy_model.yml",
                                     "-e", f"@{releases[2]}", "-e", f"edgeai_targets={dev.name}",
                                     "-e", "edgeai_canary_soak_seconds=1",
                                     "-e", f"edgeai_report_dir={work / 'reports'}", env=env, timeout=CAP_S)
            naive = functools.partial(dev.run, swap, check=False, timeout=CAP_S)
            with dev.tunnel(SERVER_PORT) as port:
                for method, how, old, new in (("ours", ours, 1, 2), ("naive", naive, 2, 3)):
                    log(f"{kind}: {method}, v{old} -> v{new}" + (f": {swap}" if method == "naive" else ""))
                    run = measure(dev, port, kind, how, old, new, args)
                    log(f"{kind}: {method}: exit {run['rc']}" + ("" if run["rc"] == 0 else f"\n{run['output']}"))
                    # ours: the server's log, before the naive way removes its container
                    sums[(kind, method)] = summarize(run, server_load(dev, run) if method == "ours" else None)
        access.close_ssh_masters(work / "cp")
        notes.update(load_after=h.loadavg(), total_s=time.monotonic() - t_setup)
        log(f"removing {', '.join(d.name for d in devices.values())}")
    notes["plot"] = h.figure("model_update", "latency over time during the swaps", lambda plt: draw(plt, sums))
    print(report(sums, args, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
