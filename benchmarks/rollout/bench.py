"""Rollout time on lab devices: a model update and a converged re-run of deploy_model.yml, against the previous design.

The bench adds its own devices to the running lab (sites rb-*, Jetson and Coral mixed) and bootstraps them untimed.
At each fleet size (--devices) it runs this checkout's playbooks/deploy_model.yml ("new") and the collection of
commit a19d6cd ("old", from `git archive`), alternating which goes first: an update k -> k+1 with a --soak-s canary
soak, --repeat converged re-runs with cold SSH connections, one with warm ones, and floor.yml (one ping a device).
Controller CPU counts ansible-playbook, everything under it and its SSH masters (the bench is their subreaper).
What the machine holds caps the fleet; runs past --budget-s are skipped; --profile adds a re-run under cProfile
(profile_hook/sitecustomize.py). Every device it added is removed at the end.
"""

import ctypes
import os
import pstats
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean
from typing import Any

import psutil
from edgeai_lab import access
from edgeai_lab.devices import load_profile

from benchmarks import ROOT, harness
from benchmarks.harness import PROFILE_TASKS, T0, children_cpu, cpu_s, goal_under, logger, mib, ratio, table

OLD_COMMIT = "a19d6cd"
SITES = ("rb-north", "rb-south", "rb-east", "rb-west")
# Every profile that gets a server in the lab (generic and jetson-nano do not).
PROFILES = ("agx-orin", "coral-dev-board", "xavier-nx", "coral-usb", "orin-nano", "agx-xavier")
NAME = re.compile(r"^rb-(north|south|east|west)-b\d\d$")
PILOT = len(SITES)
MEM_RESERVE_SHARE, DISK_RESERVE, INOTIFY_RESERVE = 0.25, 20 * 2**30, 16
DOCKER_ROOT = "/var/lib/docker" if Path("/var/lib/docker").exists() else "/"
HERE = Path(__file__).resolve().parent
GOALS = {"overhead": 0.35, "update_cpu": 0.6, "noop_cpu": 0.15, "noop_wall": 0.3}
log = logger("rollout")


def plan(count: int) -> dict[str, dict[str, str]]:
    """name -> site, platform, hardware: sites take turns, profiles cycle, so every site mixes both platforms."""
    return {f"{SITES[i % 4]}-b{i + 1:02d}": {"site": SITES[i % 4], "hardware": PROFILES[i % 6],
                                             "platform": load_profile(PROFILES[i % 6])["platform"]}
            for i in range(count)}


class Design:
    """A collection to run deploy_model.yml from, with this checkout's ansible.cfg: this checkout, or the tree of an
    older commit (`git archive`)."""

    def __init__(self, work: Path, commit: str | None = None) -> None:
        self.label, self.old, self.env = ("old" if commit else "new"), commit is not None, {}
        self.playbook = ROOT / "playbooks" / "deploy_model.yml"
        if commit:
            self.env = {"ANSIBLE_COLLECTIONS_PATH": str(work / "old")}
            tree = work / "old" / "ansible_collections" / "edgeai" / "fleet"
            tree.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            self.playbook = tree / "playbooks" / "deploy_model.yml"


class Bench:
    def __init__(self, args: Any, work: Path) -> None:
        self.args, self.work = args, work
        self.new, self.old = Design(work), Design(work, OLD_COMMIT)
        self.version, self.fleet, self.added = 0, {}, []
        self.facts: dict[str, Any] = {"align_s": {}}
        self.inventories: dict[str, Path] = {}
        self.containers: dict[int, list[str]] = {}  # fleet size -> the containers of its devices

    def control(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="cp-", dir=self.work))

    def run(self, design: Design, playbook: Path, *args: str, control: Path | None = None, **env: str) -> dict:
        """One playbook run on the design's inventory: wall and controller CPU seconds, and its output. Without a
        control (ControlPath directory) it runs on cold connections and closes them after."""
        fresh, control = control is None, control or self.control()
        cpu0, open0, t = children_cpu(), self.masters_cpu(), time.perf_counter()
        proc = access.run_playbook_ok(self.inventories[design.label], playbook, *args, timeout=1800,
                                      env=access.playbook_env(control, **design.env, **env))
        wall = time.perf_counter() - t
        if fresh:
            access.close_ssh_masters(control)
        return {"wall": wall, "cpu": children_cpu() - cpu0 + self.masters_cpu() - open0, "stdout": proc.stdout,
                "control": control}

    def masters_cpu(self) -> float:
        """CPU seconds of the SSH masters open now (once closed and reaped, children_cpu() counts them)."""
        return cpu_s(access.ssh_masters(self.work))

    def deploy(self, design: Design, tag: str, *extra: str, control: Path | None = None, **env: str) -> dict:
        """deploy_model.yml of the current version, and its report."""
        release = access.demo_release(self.version, out=self.work / "releases")
        (self.work / "reports").mkdir(exist_ok=True)
        report_dir = Path(tempfile.mkdtemp(prefix=f"{design.label}-{tag}-", dir=self.work / "reports"))
        run = self.run(design, design.playbook, "-e", f"@{release}", "-e", f"edgeai_report_dir={report_dir}",
                       "-e", f"edgeai_canary_soak_seconds={self.args.soak_s}", *extra, control=control, **env)
        return dict(run, report=access.read_report(report_dir))

    # -- setup, not timed --------------------------------------------------------------------------
    def add(self, names: list[str]) -> None:
        for name in names:  # once more after a failure: a busy machine can keep systemd booting past the lab's 120 s
            self.added.append(name)
            access.add_device(name, self.fleet[name]["hardware"], self.fleet[name]["site"], retries=1, log=log)

    def bootstrap(self, names: list[str]) -> None:
        # the event relay left out: the bench then does not depend on the lab's relay image matching
        # the checkout; both designs' event posts are refused at once instead of taken
        inventory = access.registry_inventory(self.work / f"boot-{names[0]}", {n: self.fleet[n] for n in names},
                                              access.status()["devices"])
        access.run_playbook_ok(inventory, "playbooks/bootstrap.yml", "-e", "webhook_api_url=",
                               env=access.playbook_env(self.control()), timeout=1800)

    def setup(self, size: int) -> int:
        """Add and bootstrap `size` devices, fewer when the machine holds fewer (by what each of the first PILOT
        devices takes of memory, disk and inotify instances); returns how many."""
        start, self.fleet = time.perf_counter(), plan(size)
        pilot, rest = list(self.fleet)[:PILOT], list(self.fleet)[PILOT:]
        free, limit = access.room_for(PILOT, INOTIFY_RESERVE)
        mem0, disk0 = psutil.virtual_memory(), shutil.disk_usage(DOCKER_ROOT).free
        self.add(pilot)
        bare = {n: access.device_memory(n) for n in pilot}
        per = max(access.inotify_instances()[0].get(f"edgeai-lab-{n}", 0) for n in pilot)
        rest = rest[:max(0, int(free // per) - PILOT) // 4 * 4]
        with ThreadPoolExecutor(1) as pool:  # the rest is added while the pilot bootstraps
            booting = pool.submit(self.bootstrap, pilot)
            self.add(rest)
            booting.result()
        served = {n: access.device_memory(n) for n in pilot}
        disk_per, ws_per = fmean(access.device_disk(n) for n in pilot), max(m["ws"] for m in served.values())
        caps = {"inotify": int(free // per),
                "memory": int((mem0.available - MEM_RESERVE_SHARE * mem0.total) // ws_per),
                "disk": int((disk0 - DISK_RESERVE) // disk_per)}
        log(f"pilot: {mib(ws_per)} working set, {mib(disk_per)} disk, {per} inotify instances per device; "
            f"caps {caps}")
        keep = max(0, min(caps.values()) - PILOT) // 4 * 4
        access.remove_devices(rest[keep:], log)
        self.fleet = {n: self.fleet[n] for n in pilot + rest[:keep]}
        self.added = [n for n in self.added if n in self.fleet]
        if rest[:keep]:
            self.bootstrap(rest[:keep])
        self.facts.update(mem_bare=bare, mem_served=served, disk_per=disk_per, caps=caps, inotify_per=per,
                          inotify_limit=limit, setup_s=time.perf_counter() - start, devices=len(self.fleet))
        log(f"{len(self.fleet)} devices bootstrapped after {self.facts['setup_s']:.0f} s")
        return len(self.fleet)

    def align(self, size: int) -> None:
        """Inventories of the first `size` devices, every one of them serving the current version."""
        start, fleet = time.perf_counter(), dict(list(self.fleet.items())[:size])
        for design in (self.new, self.old):
            # the old plugin does not know allow_ansible_vars (it took the lab's key variable as it was)
            self.inventories[design.label] = access.registry_inventory(
                self.work / f"inv-{size}" / design.label, fleet, access.status()["devices"], not design.old)
        self.version = self.version or 1
        self.deploy(self.new, f"install-{size}", "-e", "edgeai_max_unavailable_per_site=100%",
                    "-e", "edgeai_canary_soak_seconds=0")
        access.close_ssh_masters(self.work)
        self.facts["align_s"][size] = time.perf_counter() - start

    # -- timed ---------------------------------------------------------------------------------------
    def measure(self, size: int, step: int) -> dict[str, Any]:
        order = (self.new, self.old) if step % 2 == 0 else (self.old, self.new)
        out: dict[str, Any] = {"n": size, "order": [d.label for d in order], "floor": []}
        for design in order:
            self.version += 1
            run = self.deploy(design, f"update-{size}", **PROFILE_TASKS)
            results = {(r["result"], r["before"], r["after"]) for r in run["report"]["devices"]}
            if results != {("updated", self.version - 1, self.version)} or len(run["report"]["devices"]) != size:
                raise RuntimeError(f"{design.label}: the update did not update every device: {results}")
            out[f"update_{design.label}"] = split_update(run, design.old)
            log(f"{size} devices, {design.label} update: {run['wall']:.1f} s, CPU {run['cpu']:.1f} s")
        self.facts.setdefault("mem_model", {n: access.device_memory(n) for n in list(self.fleet)[:PILOT]})
        for i in range(self.args.repeat):
            for design in order if i % 2 == 0 else order[::-1]:
                self.noop(out, design, "cold")
            run = self.run(self.new, HERE / "floor.yml")
            out["floor"].append((run["wall"], run["cpu"]))
            log(f"{size} devices, floor (one ping each): {run['wall']:.1f} s, CPU {run['cpu']:.1f} s")
        for design in order:
            if self.over_budget(out, size):
                break
            warm = self.noop(out, design, "prewarm", control=self.control())
            self.noop(out, design, "warm", control=warm)
            access.close_ssh_masters(warm)
        return out

    def noop(self, out: dict[str, Any], design: Design, kind: str, control: Path | None = None) -> Path:
        """A converged re-run; its wall, controller CPU and the devices' CPU go to out[noop_<design>_<kind>]."""
        ids = self.containers.get(out["n"]) or self.containers.setdefault(
            out["n"], [c for n in list(self.fleet)[:out["n"]] for c in access.device_containers(n)])
        device0 = access.containers_cpu_s(ids)
        run = self.deploy(design, f"noop-{out['n']}-{kind}", control=control)
        device_s, rows = access.containers_cpu_s(ids) - device0, run["report"]["devices"]
        if {r["result"] for r in rows} != {"unchanged"} or len(rows) != out["n"]:
            raise RuntimeError(f"{design.label} re-run changed something: {run['report']['summary']}")
        if kind != "prewarm":
            out.setdefault(f"noop_{design.label}_{kind}", []).append((run["wall"], run["cpu"], device_s))
            log(f"{out['n']} devices, {design.label} re-run, {kind}: {run['wall']:.1f} s, CPU {run['cpu']:.1f} s")
        return run["control"]

    def over_budget(self, out: dict[str, Any], size: int, factor: float = 2.0) -> bool:
        one = max(run[0] for run in out.get("noop_new_cold", [(2.0 * size, 0)]))
        return time.monotonic() - T0 + factor * one + 4 * len(self.added) > self.args.budget_s

    def profile(self, out: dict[str, Any]) -> None:
        """A re-run of this design under cProfile: CPU by process kind and by code."""
        pdir = self.work / "profile"
        pdir.mkdir()
        cpu = self.deploy(self.new, "profile", EDGEAI_PROFILE_DIR=str(pdir),
                          PYTHONPATH=f"{HERE / 'profile_hook'}:{os.environ.get('PYTHONPATH', '')}")["cpu"]
        stats = {kind: sorted(pdir.glob(f"{kind}-*.prof")) for kind in ("main", "worker")}
        own = {kind: sum(float(p.stem.rsplit("-", 1)[1]) for p in paths) for kind, paths in stats.items()}
        out["profile"] = {"cpu": cpu, "own": own, "workers": len(stats["worker"]),
                          "top": {kind: top_code(paths) for kind, paths in stats.items() if paths}}


def split_update(run: dict[str, Any], old: bool) -> dict[str, Any]:
    """An update's wall split into soak, transfer, load + smoke (each wave waits for its slowest device) and the
    controller's overhead, the rest."""
    report, rows = run["report"], {r["device"]: r for r in run["report"]["devices"]}
    soak = transfer = load = smoke = 0.0
    for wave in report["waves"]:
        transfer += max(float(rows[d].get("stage_s") or 0) for d in wave)
        slowest = max(wave, key=lambda d: float(rows[d]["load_time_s"]) + float(rows[d]["smoke_latency_ms"]) / 1e3)
        load += float(rows[slowest]["load_time_s"])
        smoke += float(rows[slowest]["smoke_latency_ms"]) / 1e3
        soak += max(float(rows[d].get("soak_s") or 0) for d in wave)
    if old:  # the old design soaked in a task of its own
        found = re.search(r"Watch the canary for the soak period -+ ([0-9.]+)s", run["stdout"])
        soak = float(found.group(1)) if found else 0.0
    tasks = harness.task_times(run["stdout"])
    return {"wall": run["wall"], "cpu": run["cpu"], "soak": soak, "transfer": transfer, "load": load,
            "smoke": smoke, "overhead": run["wall"] - soak - transfer - load - smoke, "waves": len(report["waves"]),
            "top": sorted(tasks.items(), key=lambda kv: -kv[1])[:5]}


def top_code(paths: list[Path], count: int = 8) -> list[tuple[str, float]]:
    """CPU seconds by code area (package folder of the function's file), own time only."""
    areas: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(*map(str, paths)).stats.items():
        if "site-packages/" in file:
            area = "/".join(file.split("site-packages/", 1)[1].split("/")[:3]).removesuffix(".py")
        elif file.startswith("~") or file == "<built-in>":
            area = f"builtin {func.split(' of ')[0].strip('<>{}')}"[:60]
        else:
            area = "stdlib " + Path(file).stem
        areas[area] = areas.get(area, 0.0) + tottime
    return sorted(areas.items(), key=lambda kv: -kv[1])[:count]


def main(argv: list[str] | None = None) -> int:
    args = harness.arguments(__doc__, argv, devices=("8,24", "fleet sizes, ascending, multiples of 4"),
                             soak_s=(5, "canary soak seconds"), repeat=(2, "cold re-runs per design and size"),
                             budget_s=(1800.0, "wall budget; later runs beyond it are skipped"),
                             profile=(False, "profile one re-run at the largest size (cProfile)"))
    sizes = sorted({int(s) for s in args.devices.split(",")})
    if sizes[0] < PILOT or any(s % 4 for s in sizes):
        raise SystemExit("--devices: multiples of 4 (one device per site and more)")
    # orphaned SSH masters become this process's children: their CPU is counted when they are reaped
    ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    access.remove_devices([n for n in access.status()["devices"] if NAME.match(n)], log)  # an earlier run's
    results: list[dict[str, Any]] = []
    with harness.workdir("rollout") as work:
        bench = Bench(args, work)
        try:
            largest = bench.setup(sizes[-1])
            for step, size in enumerate([s for s in sizes if s < largest] + [largest]):
                if step and time.monotonic() - T0 + results[-1]["elapsed"] * size / results[-1]["n"] > args.budget_s:
                    log(f"{size} devices: skipped, wall budget")
                    break
                started = time.monotonic()
                bench.align(size)
                results.append(bench.measure(size, step))
                results[-1]["elapsed"] = time.monotonic() - started
            if args.profile and not bench.over_budget(results[-1], results[-1]["n"], 3):
                bench.profile(results[-1])
        finally:
            access.close_ssh_masters(work)
            log(f"removing {len(bench.added)} devices")
            started = time.perf_counter()
            access.remove_devices(bench.added, log)
            bench.facts["remove_s"] = time.perf_counter() - started
    print(markdown(results, bench.facts, args))
    return 0


# -- report ----------------------------------------------------------------------------------------
def best(runs: list[tuple[float, ...]] | None) -> tuple[float, ...] | None:
    return min(runs, key=lambda r: r[0]) if runs else None


def markdown(results: list[dict[str, Any]], facts: dict[str, Any], args: Any) -> str:
    sizes, last, caps = [r["n"] for r in results], results[-1], facts["caps"]
    fleet = plan(sizes[-1])

    def per_platform(key: str, field: str = "ws") -> str:
        return ", ".join(f"{p} {mib(fmean(m[field] for n, m in facts[key].items() if fleet[n]['platform'] == p))}"
                         for p in ("jetson", "coral"))

    intro = f"""`playbooks/deploy_model.yml` on {' and then '.join(map(str, sizes))} lab devices
        ({sum(d['platform'] == 'jetson' for d in fleet.values())} of {sizes[-1]} Jetson with Triton, the others Coral
        with LiteRT) in {len(SITES)} sites, SSH on loopback, the demo model `detector` pushed from the controller, no
        event relay (both designs' posts are refused at once), ansible.cfg as committed (forks 25, pipelining,
        ControlPersist 120 s). **new**: this checkout (the action `edgeai.fleet.rollout`); **old**: commit
        {OLD_COMMIT} (`git archive`), on the same devices, alternating:
        {'; '.join(f"{r['n']} devices " + ' first, then '.join(r['order']) for r in results)}. Controller CPU (user +
        system) covers ansible-playbook, its workers, ssh clients and SSH masters; other work on these
        {os.cpu_count()} shared cores does not inflate it (load average at the end {harness.loadavg()}).

        Setup, not timed: {facts['devices']} devices added and bootstrapped in {facts['setup_s']:.0f} s, each size's
        devices brought to the current version
        ({', '.join(f'{n} devices {t:.0f} s' for n, t in facts['align_s'].items())}), removed in
        {facts['remove_s']:.0f} s; the bench took {(time.monotonic() - T0) / 60:.1f} min. Memory per device (first
        {PILOT}; device and engine containers): working set {per_platform('mem_bare')} bare,
        {per_platform('mem_served')} with the inference server, {per_platform('mem_model')} serving the model
        (anonymous RSS {per_platform('mem_model', 'rss')}); disk {mib(facts['disk_per'])}. The machine holds
        {caps['memory']} devices by memory ({MEM_RESERVE_SHARE:.0%} kept for others), {caps['disk']} by disk,
        {caps['inotify']} by root's inotify instances ({facts['inotify_per']} per device, limit
        {facts['inotify_limit']})."""
    out = ["## Rollout: a model update and a converged re-run on lab devices, this design against the previous one",
           "", *harness.paragraphs(intro), "", f"### Update, version k -> k+1 (canary soak {args.soak_s} s)", ""]
    rows = []
    for r in results:
        for label in ("new", "old"):
            u = r[f"update_{label}"]
            rows.append([r["n"], f"**{label}**" if label == "new" else label, u["waves"], f"{u['wall']:.1f}",
                         f"{u['soak']:.1f}", f"{u['transfer']:.1f}", f"{u['load'] + u['smoke']:.1f}",
                         f"{u['overhead']:.1f}", f"**{u['overhead'] / (u['wall'] - u['soak']):.0%}**",
                         f"{u['cpu']:.1f}", f"{u['cpu'] / r['n']:.2f}"])
        new, old = r["update_new"], r["update_old"]
        rows.append([r["n"], "new / old", "", ratio(new["wall"], old["wall"]), "", "", "",
                     ratio(new["overhead"], old["overhead"]), "", ratio(new["cpu"], old["cpu"]), ""])
    out += table(["devices", "design", "waves", "wall s", "soak s", "transfer s", "load + smoke s",
                  "controller overhead s", "overhead / (wall - soak)", "controller CPU s", "CPU s per device"],
                 rows, "llrrrrrrrrr")
    u, n = last["update_new"], last["n"]
    busy = u["wall"] - u["soak"]
    out += ["", goal_under(f"controller overhead ({n} devices), as a share of wall - soak,", u["overhead"] / busy,
                           GOALS["overhead"], "{:.0%}", f"; {u['overhead'] - GOALS['overhead'] * busy:.1f} s over"),
            goal_under(f"update CPU per device ({n} devices)", u["cpu"] / n, GOALS["update_cpu"]),
            f"- Slowest tasks (profile_tasks, summed over waves) at {n}: "
            + "; ".join(f"{label}: " + ", ".join(f"{t} {s:.1f} s" for t, s in last[f"update_{label}"]["top"])
                        for label in ("new", "old")) + ".",
            "", "### Converged re-run (every device `unchanged`)", "",
            f"Best of {args.repeat} runs on cold SSH connections (a fresh ControlPath, as a nightly job finds them), "
            "one on warm ones (right after a run that left them open). **floor**: `benchmarks/rollout/floor.yml`, one "
            "`ansible.builtin.ping` per device, same inventory, ansible.cfg and cold connections, best of as many: "
            "what Ansible itself costs a device for one module call.", ""]
    rows = []
    for r in results:
        cn, co, floor = best(r["noop_new_cold"]), best(r["noop_old_cold"]), best(r["floor"])
        for label, vs, (wall, cpu, *_) in (("new", "", cn), ("old", "old", co), ("floor: one ping", "floor", floor)):
            warm = "" if vs == "floor" else best(r.get(f"noop_{label}_warm"))
            rows.append([r["n"], f"**{label}**" if label == "new" else label, f"{wall:.1f}", f"{wall / r['n']:.2f}",
                         f"{cpu:.1f}", f"{cpu / r['n']:.3f}",
                         f"{warm[0]:.1f} / {warm[1]:.1f}" if warm else "" if vs == "floor" else "skipped (budget)"])
            if vs:  # new against this row
                rows.append([r["n"], f"new / {vs}", ratio(cn[0], wall), "", ratio(cn[1], cpu), "", ""])
    out += table(["devices", "design", "wall s", "wall s per device", "controller CPU s", "CPU s per device",
                  "warm: wall s / CPU s"], rows, "llrrrrr")
    (wall, cpu, device_s), floor = best(last["noop_new_cold"]), best(last["floor"])
    out += ["", goal_under(f"controller CPU per device ({n} devices)", cpu / n, GOALS["noop_cpu"]),
            goal_under(f"wall per device ({n} devices)", wall / n, GOALS["noop_wall"]),
            f"- The floor at {n} devices is {floor[1] / n:.3f} CPU-s and {floor[0] / n:.2f} s of wall per device: "
            f"the goals ask for {GOALS['noop_cpu'] / (floor[1] / n):.2f}x and "
            f"{GOALS['noop_wall'] / (floor[0] / n):.2f}x of one ping; "
            f"this design's re-run costs {cpu / floor[1]:.2f}x the floor's CPU.",
            f"- Wall includes the devices' own work on the same {os.cpu_count()} cores: their containers used "
            f"{device_s:.1f} CPU-s in that re-run, {device_s / n:.2f} s each (mostly the preflight module and its "
            "calls to the server), which a real device spends on its own CPU."]
    if len(results) > 1:
        out += ["", "### Extrapolation (estimates)", "", *(extrapolate(label, results) for label in ("new", "old"))]
    if "profile" in last:
        out += ["", "### Where the controller's CPU goes (converged re-run, this design)", "", profile_text(last)]
    return "\n".join(out)


def extrapolate(label: str, results: list[dict[str, Any]]) -> str:
    """cost = a + b * N through the smallest and largest size, for 1,000 devices on a 2-core controller."""
    noop = [(r["n"], best(r[f"noop_{label}_cold"])) for r in results]
    a_cpu, b_cpu = harness.fit_line([(n, c) for n, (_w, c, *_) in noop])
    a_wall, b_wall = harness.fit_line([(n, w) for n, (w, _c, *_) in noop])
    a_up, b_up = harness.fit_line([(r["n"], r[f"update_{label}"]["cpu"]) for r in results])
    cpu, wall, up = a_cpu + 1000 * b_cpu, a_wall + 1000 * b_wall, a_up + 1000 * b_up
    return (f"- **{label}**: a converged re-run costs {a_cpu:.1f} + {b_cpu:.3f} x N controller CPU-s (wall "
            f"{a_wall:.1f} + {b_wall:.3f} x N s here): on 1,000 devices about {cpu:,.0f} CPU-s, at least "
            f"{cpu / 2 / 60:,.1f} min of a 2-core controller ({wall / 60:,.1f} min by this machine's wall times). An "
            f"update costs {a_up:.1f} + {b_up:.3f} x N CPU-s: for 1,000 devices about {up:,.0f} CPU-s, at least "
            f"{up / 2 / 60:,.1f} min of the 2 cores, on top of the waves' device time.")


def profile_text(result: dict[str, Any]) -> str:
    p, own = result["profile"], result["profile"]["own"]
    rest = p["cpu"] - own["main"] - own["worker"]
    text = (f"One more re-run on {result['n']} devices, every ansible-playbook process under cProfile (CPU time; it "
            f"slows them, so the shares are the point): {p['cpu']:.1f} CPU-s, of which the main process "
            f"{own['main']:.1f} s ({own['main'] / p['cpu']:.0%}), its {p['workers']} forked workers "
            f"{own['worker']:.1f} s ({own['worker'] / p['cpu']:.0%}, {own['worker'] / max(1, p['workers']) * 1e3:.0f} "
            f"ms each), ssh clients, SSH masters and local module processes {rest:.1f} s ({rest / p['cpu']:.0%}). "
            "Own time by code:")
    for kind, top in p["top"].items():
        text += f" {kind}: " + ", ".join(f"`{area}` {s / own[kind]:.0%}" for area, s in top) + ";"
    return text.rstrip(";") + "."


if __name__ == "__main__":
    raise SystemExit(main())
