#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Site bandwidth: bytes the centre serves when a 3-site fleet fetches a new model, with and without site caches.

    .venv/bin/python -m benchmarks.site_bandwidth.bench [--devices-per-site 3]
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from edgeai_lab import access, core, services
from webhook_receiver.testing import write_secret

from benchmarks import harness
from benchmarks.harness import PLOTS, PROFILE_TASKS, Log, figure, loadavg, parser, ratio, table, task_times

HERE = Path(__file__).resolve().parent
SITES = ["bw-north", "bw-south", "bw-east"]
PROFILE = "coral-usb"  # nothing from a vendor repository is installed: the cheapest device
PASSES = {"direct": "without cache", "cache": "with cache"}
OBJECTS = {"image": "registry", "artifact": "artifacts"}  # object -> the service that serves it
MB, LAYERS, ARTIFACT_BYTES = 1e6, (3_000_000, 2_000_000), 6_000_000  # bytes of random data
FETCH_TASKS = ("Pull the server image", "Stage the version on the device")  # the tasks that move the bytes
log = Log("site_bandwidth")


def lookup(path: Path | str) -> str:
    return f"{{{{ lookup('ansible.builtin.file', '{path}') }}}}"


def write_inventories(work: Path, status: dict[str, Any], fleet: dict[str, list[str]]) -> Path:
    """hosts-direct.yml and hosts-cache.yml (the same plus edgeai_site_cache per site)."""
    pki, ca = Path(status["state_dir"]) / "pki", "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
    sites: dict[str, Any] = {}
    caches: dict[str, Any] = {}
    for site, names in fleet.items():
        cache, address = names[0], status["devices"][names[0]]["address"]
        password = write_secret(work / f"{site}-device-password", secrets.token_urlsafe(18))
        gateway = re.sub(r"\.\d+$", ".1", address)
        sites[f"site_{site.replace('-', '_')}"] = {
            "hosts": {d: {"ansible_host": "127.0.0.1", "ansible_port": status["devices"][d]["port"], "edge_site": site}
                      for d in names},
            # what an operator puts in the site's group_vars
            "vars": {"edgeai_site_cache": {"host": address, "ca": ca, "username": "device",
                                           "password": lookup(password)}}}
        caches[cache] = {
            # the lab's per-device certificate (from the lab CA) names the device's site address
            "site_cache_tls_cert": lookup(pki / f"device-{cache}.crt"),
            "site_cache_tls_key": lookup(pki / f"device-{cache}.key"),
            "site_cache_users": [{"username": "device", "password": lookup(password)}],
            # inside the cache container the lab's names are not in /etc/hosts
            "site_cache_etc_hosts": {"registry.edgeai.lab": gateway, "artifacts.edgeai.lab": gateway}}
    # the lab's site.yml reads the centre's logins from the lab's 0600 files
    logins = {"registry": "_edge_lab_registry_login.edge_lab_registry",
              "artifact": "_edge_lab_artifacts_login.edge_lab_artifacts"}
    tree = {"vars": {"site_cache_upstream_registry": "{{ edge_lab_registry }}",
                     "site_cache_upstream_artifact_url": "{{ edge_lab_artifacts_url }}/"},
            "children": {"bw_fleet": {"children": sites}, "site_cache_hosts": {"hosts": caches, "vars": {
                "site_cache_image": status["images"]["site-cache"]["ref"], "site_cache_upstream_ca": ca,
                **{f"site_cache_upstream_{k}_{f}": f"{{{{ {v}_{f} }}}}" for k, v in logins.items()
                   for f in ("username", "password")}}}}}
    access.static_inventory(work / "inventory", "hosts-cache.yml", tree)
    for group in sites.values():
        del group["vars"]
    return access.static_inventory(work / "inventory", "hosts-direct.yml", tree).parent


def ansible(work: Path, inventory: str, playbook: str, *extra: str) -> tuple[float, dict[str, float]]:
    """Run benchmarks/site_bandwidth/<playbook>; its seconds and the seconds per task (profile_tasks)."""
    env = access.playbook_env(work / "cp", **PROFILE_TASKS)  # SSH masters of our own
    wall, _cpu, proc = harness.timed(lambda: access.run_playbook_ok(
        work / "inventory" / inventory, HERE / playbook, *extra, env=env, timeout=300))
    return wall, task_times(proc.stdout)


class Centre:
    """The lab's central registry and artifact store."""

    def __init__(self, status: dict[str, Any], work: Path) -> None:
        self.status, self.work = status, work
        self.creds = json.loads(Path(status["registry"]["credentials_file"]).read_text())
        self.context = ssl.create_default_context(cafile=status["ca_cert"])
        self.logs = (Path(status["state_dir"]) / "logs" / "registry.log", Path(status["artifacts"]["log"]))
        self.pushed: list[str] = []  # repositories, their manifests deleted at the end
        self.files: list[Path] = []

    def _registry(self, path: str, method: str = "GET") -> tuple[Any, bytes]:
        req = urllib.request.Request(f"https://{self.status['registry']['host_address']}{path}", method=method)
        login = f"{self.creds['username']}:{self.creds['password']}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(login).decode())
        req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
            return resp.headers, resp.read()

    def push_image(self, repo: str, layers: tuple[int, ...]) -> tuple[str, dict[str, int]]:
        """An image of random layers FROM scratch pushed to the centre: its name, digest -> size of its blobs."""
        context = self.work / f"build-{repo.rsplit('/', 1)[-1]}"
        context.mkdir()
        for i, size in enumerate(layers):
            (context / f"layer{i}.bin").write_bytes(os.urandom(size))
        copies = "".join(f"COPY layer{i}.bin /models/layer{i}.bin\n" for i in range(len(layers)))
        (context / "Dockerfile").write_text("FROM scratch\n" + copies)
        core.docker("build", "-q", "-t", repo, str(context), timeout=300)
        self.pushed.append(repo)
        services.push_image(repo, repo, ["1"], self.creds)  # as the lab pushes its own images
        core.docker("rmi", repo, check=False)
        shutil.rmtree(context)
        manifest = json.loads(self._registry(f"/v2/{repo}/manifests/1")[1])
        return (f"{self.status['registry']['host']}/{repo}:1",
                {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]})

    def put_artifact(self, name: str, size: int) -> tuple[str, str]:
        """A file of random bytes in the artifact store: its URL and sha256."""
        payload = os.urandom(size)
        path = Path(self.status["artifacts"]["root"]) / name
        self.files.append(path)
        path.write_bytes(payload)
        return f"{self.status['artifacts']['url']}/{name}", hashlib.sha256(payload).hexdigest()

    def offsets(self) -> tuple[int, int]:
        return self.logs[0].stat().st_size, self.logs[1].stat().st_size

    def served(self, offsets: tuple[int, int], sources: dict[str, str], blobs: set[str], artifact: str) -> dict:
        """Per site since offsets: bytes of the object's blobs / file sent, in how many responses, and the
        other responses' bytes (manifests, probes) per service."""
        keys = ("image", "image_gets", "artifact", "artifact_gets", "registry_other", "artifacts_other")
        out = {site: dict.fromkeys(keys, 0) for site in sources}
        by_source = {source: site for site, source in sources.items()}
        for r in read_json_lines(self.logs[0], offsets[0]):
            site = by_source.get(r.get("http.request.remoteaddr", "").rsplit(":", 1)[0])
            if site is not None and r.get("msg") == "response completed":
                uri = r.get("http.request.uri", "")
                mine = r.get("http.request.method") == "GET" and "/blobs/" in uri and uri.rsplit("/", 1)[-1] in blobs
                count(out[site], "image" if mine else "registry_other", int(r.get("http.response.written", 0)), mine)
        for r in read_json_lines(self.logs[1], offsets[1]):
            site = by_source.get(r.get("client", ""))
            if site is not None:
                mine = r.get("method") == "GET" and r.get("path") == "/" + artifact
                count(out[site], "artifact" if mine else "artifacts_other", int(r.get("bytes") or 0), mine)
        return out

    def clean(self) -> None:
        for repo in self.pushed:
            try:
                headers, _ = self._registry(f"/v2/{repo}/manifests/1", method="HEAD")
                self._registry(f"/v2/{repo}/manifests/{headers['Docker-Content-Digest']}", method="DELETE")
            except OSError as exc:
                log(f"could not delete {repo}:1 from the registry: {exc}")
        for path in self.files:
            path.unlink(missing_ok=True)


def count(counters: dict[str, int], key: str, written: int, gets: bool) -> None:
    counters[key] += written
    if gets:
        counters[key + "_gets"] += 1


def read_json_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    out = []
    for line in (line for line in lines if line.startswith("{")):
        with contextlib.suppress(ValueError):  # the last line may still be being written
            out.append(json.loads(line))
    return out


def link_bytes(site: str) -> dict[str, int]:
    """Bytes down (centre -> site) per service that crossed the site's link so far."""
    return {s: int(c.get("down", 0)) for s, c in json.loads(access.lab("link", site, "--json", timeout=60))[
        "bytes"].items()}


def run_pass(work: Path, centre: Centre, sources: dict[str, str], name: str, version: int) -> dict:
    """Objects new to everyone, fetched by every device at once; what the centre served per site."""
    tag = f"{name}-{secrets.token_hex(4)}"
    ref, blobs = centre.push_image(f"edgeai-bench/site-bandwidth-{tag}", LAYERS)
    url, sha256 = centre.put_artifact(f"site-bandwidth-{tag}.bin", ARTIFACT_BYTES)
    records = work / "records"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    offsets, before = centre.offsets(), {site: link_bytes(site) for site in SITES}
    log(f"{PASSES[name]}: every device fetches {ref} and {url}")
    seconds, tasks = ansible(work, f"hosts-{name}.yml", "fetch.yml", "-e", f"record_dir={records}", "-e",
                             f"image={ref}", "-e", f"url={url}", "-e", f"sha256={sha256}", "-e", f"version={version}")
    after = {site: link_bytes(site) for site in SITES}  # `lab link` waits for counters newer than its call
    served = centre.served(offsets, sources, set(blobs), url.rsplit("/", 1)[1])
    for site in SITES:
        served[site]["link"] = {s: after[site].get(s, 0) - before[site].get(s, 0) for s in after[site]}
    return {"image_size": sum(blobs.values()), "blobs": len(blobs), "artifact_size": ARTIFACT_BYTES,
            "seconds": seconds, "fetch_s": sum(tasks.get(t, 0.0) for t in FETCH_TASKS), "sites": served,
            "records": {f.stem: json.loads(f.read_text()) for f in records.glob("*.json")}}


def mb(n: float) -> str:
    return f"{n / MB:,.2f} MB"


def draw(plt: Any, result: dict[str, dict[str, Any]], per_site: int) -> Any:
    """Bytes down each site's link, without vs with cache, split by service."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 1.2]})
    width, colours = 0.38, {"direct": ("tab:red", "lightcoral"), "cache": ("tab:blue", "lightsteelblue")}
    one_copy = (result["cache"]["image_size"] + result["cache"]["artifact_size"]) / MB
    for ax, groups in ((axes[0], [[s] for s in SITES]), (axes[1], [SITES])):
        for k, (pass_name, label) in enumerate(PASSES.items()):
            run = result[pass_name]
            for i, sites in enumerate(groups):
                image, artifact = (sum(run["sites"][s]["link"].get(svc, 0) for s in sites) / MB
                                   for svc in ("registry", "artifacts"))
                x, first = i + (k - 0.5) * width, ax is axes[0] and i == 0
                ax.bar(x, image, width, color=colours[pass_name][0], label=f"{label}: image" if first else None)
                ax.bar(x, artifact, width, bottom=image, color=colours[pass_name][1],
                       label=f"{label}: artifact" if first else None)
                copies = (image + artifact) * MB / ((run["image_size"] + run["artifact_size"]) * len(sites))
                ax.text(x, image + artifact, f"{copies:.2f} copies", ha="center", va="bottom", fontsize=7)
        ax.axhline(one_copy * len(groups[0]), color="black", linestyle="--", linewidth=0.8,
                   label="one copy of image + artifact per site" if ax is axes[0] else None)
        ax.set_xticks(range(len(groups)), [s[0] if len(s) == 1 else f"all {len(s)} sites" for s in groups])
        ax.set_ylabel("MB down the link from the centre")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("per site", fontsize=9)
    axes[1].set_title("the centre's total", fontsize=9)
    fig.suptitle(f"A new model (image + https artifact) fetched by all {per_site} devices of each of {len(SITES)} "
                 "sites", fontsize=10)
    fig.legend(loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def report(result: dict[str, dict[str, Any]], per_site: int, notes: dict[str, Any]) -> str:
    direct, cache = result["direct"], result["cache"]
    out = ["## Site bandwidth: one copy per site with the site cache", "",
           f"A fleet of {len(SITES)} sites ({', '.join(f'`{s}`' for s in SITES)}) of {per_site} lab devices each "
           f"(Coral USB hosts) fetches a new model at once (Ansible forks): a new image ({direct['blobs']} blobs: "
           "random layers FROM scratch in the central registry) and a new https artifact (random bytes in the "
           "central artifact store), with the collection's own tasks (`roles/inference_server` `tasks/image.yml`, "
           "`roles/model_deploy` `tasks/stage.yml`, sha256 checked). **Without cache**: each device fetches from the "
           "centre. **With cache**: the same inventory plus `edgeai_site_cache` per site; the first device of each "
           "site runs the cache (`roles/site_cache`) and fetches through it like the others. The passes run one "
           "after the other, each with new objects of the same sizes. **Centre served** = bytes of the object's "
           "blobs or file sent to the site's address, from the registry's and artifact store's logs (the lab "
           "gateway relays site n from 127.213.n.1); **link** = all that crossed the site's link from the centre in "
           "the pass (`lab link SITE --json`: TLS, headers, manifests and login probes included). Copies = bytes / "
           "object size. Setup (devices added; `container_engine` on every device, `site_cache` on the cache hosts) "
           f"took {notes['setup_s']:.0f} s (not measured), removing it all {notes['clean_s']:.0f} s; the whole run "
           f"{notes['total_s']:.0f} s (1-minute load average {notes['load_before']} before, {notes['load_after']} "
           f"after; the machine's {os.cpu_count()} cores are shared).", "", notes["plot"], ""]

    def row(label: str, sites: list[str], obj: str) -> tuple[str, ...]:
        objs = list(OBJECTS) if obj == "both" else [obj]
        size = {p: sum(result[p][f"{o}_size"] for o in objs) * len(sites) for p in PASSES}
        served = {p: sum(result[p]["sites"][s][o] for s in sites for o in objs) for p in PASSES}
        link = {p: sum(result[p]["sites"][s]["link"].get(OBJECTS[o], 0) for s in sites for o in objs) for p in PASSES}
        # the passes' objects differ only in the compressed size of their layers
        each = " / ".join(sorted({mb(sum(result[p][f"{o}_size"] for o in objs)) for p in PASSES}))
        c = {p: {k: f"{v[p] / size[p]:.2f}" for k, v in (("served", served), ("link", link))} for p in PASSES}
        return (label, f"{'**both**' if obj == 'both' else obj} ({each})",
                f"{mb(served['direct'])} ({c['direct']['served']})", f"{mb(served['cache'])} ({c['cache']['served']})",
                f"**{ratio(served['direct'], served['cache'], 'n/a')}**",
                f"{mb(link['direct'])} / {mb(link['cache'])} ({c['direct']['link']} / {c['cache']['link']})")

    rows = [row((f"`{site}` ({per_site} devices)" if group == [site] else f"all {len(SITES)} sites")
                if obj == "image" else "", group, obj)
            for site, group in [*((s, [s]) for s in SITES), ("", SITES)] for obj in ("image", "artifact", "both")]
    out += table(["site", "object (size)", "centre served without cache (copies)",
                  "centre served with cache (copies)", "without / with", "link without / with (copies)"], rows,
                 "llrrrr")
    gets = {p: ", ".join(f"{s} {result[p]['sites'][s]['image_gets']} / {result[p]['sites'][s]['artifact_gets']}"
                         for s in SITES) for p in PASSES}
    other = {p: sum(result[p]["sites"][s][f"{k}_other"] for s in SITES for k in OBJECTS.values()) for p in PASSES}
    fell_back = sorted(h for h, r in cache["records"].items() if r["image_from"] == "centre" or r["warning"])
    out += ["",
            "- Responses with object bytes per site (image blob GETs / artifact GETs): without cache "
            f"{gets['direct']}; with cache {gets['cache']} (the cache fetches the artifact in 4 MiB slices, so more "
            "than one GET can be one copy). Other responses of the centre to the 3 sites (manifests, `/v2/` probes): "
            f"{other['direct']:,} bytes without cache, {other['cache']:,} with.",
            f"- Time (not this benchmark's measure): the fetch playbook took {direct['seconds']:.0f} s without cache "
            f"and {cache['seconds']:.0f} s with it, of which the two tasks that move the bytes "
            f"({' and '.join(FETCH_TASKS)}) {direct['fetch_s']:.1f} s and {cache['fetch_s']:.1f} s (profile_tasks): "
            "with the cache each device first runs site_cache's client tasks (CA, probe, login), and a new layer or "
            "slice goes centre -> cache -> device while the others wait; the links are not shaped. With the cache, "
            + (f"devices that fell back to the centre: {', '.join(fell_back)}." if fell_back else
               "every device fetched through its site's cache (its own record says so).")]
    # the goal: one copy per site, per object, from the centre's logs
    per = {(s, o): cache["sites"][s][o] / cache[f"{o}_size"] for s in SITES for o in OBJECTS}
    worst, least = max(per.values()), min(per.values())
    link_cache = sum(cache["sites"][s]["link"].get(k, 0) for s in SITES for k in OBJECTS.values())
    total = {p: sum(result[p]["sites"][s][o] for s in SITES for o in OBJECTS) for p in PASSES}
    if worst <= 1.0 + 1e-9 and least >= 1.0 - 1e-9:
        verdict = (f"**met**: with the cache the centre sent each site exactly one copy of the image and of the "
                   f"artifact ({worst:.2f} copies for every site and object, from its logs), against {per_site} (one "
                   f"per device) without it; without / with = {ratio(total['direct'], total['cache'], 'n/a')} for the "
                   f"whole fleet. Everything that crossed the 3 links with the cache was "
                   f"{link_cache / (len(SITES) * (cache['image_size'] + cache['artifact_size'])):.3f} copies: the "
                   "rest is TLS, HTTP headers, manifests and the devices' login probes, not object bytes.")
    elif worst > 1.0:
        over = ", ".join(f"{s} {o} {c:.2f} copies" for (s, o), c in per.items() if c > 1.0)
        verdict = (f"**missed** by {worst - 1.0:.2f} copies at worst ({over}): a layer or slice reached the centre "
                   "more than once, from a device that fell back to it (listed above) or past the cache's lock "
                   "(`proxy_cache_lock`, up to `site_cache_lock_timeout`); `docker logs edgeai-site-cache` says which.")
    else:
        verdict = (f"**not measured**: a site got only {least:.2f} copies of an object with the cache, so the log did "
                   "not see the whole transfer (a log line missing or a source address not matched).")
    return "\n".join([*out, f"- Goal one copy per site: {verdict}"])


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--devices-per-site", type=int, default=3, help="devices per site, the cache host included")
    args = ap.parse_args(argv)
    t0, load_before, status = time.monotonic(), loadavg(), access.status()
    if not status.get("up") or "site-cache" not in status.get("images", {}) or not status.get("artifacts"):
        log("the lab is not up, or has no site-cache image or artifact store: run `tests/lab/lab up`")
        return 1
    fleet = {site: [f"{site}-{i}" for i in range(1, args.devices_per_site + 1)] for site in SITES}
    everyone = [d for names in fleet.values() for d in names]
    # Without enough, the devices' systemd does not boot and each `lab device add` holds the lab's lock
    # for its whole readiness timeout: say so now instead.
    held, limit = access.inotify_instances()
    if limit - sum(held.values()) < access.INOTIFY_PER_DEVICE * len(everyone):
        log(f"root holds {sum(held.values())} of its {limit} inotify instances (fs.inotify.max_user_instances): not "
            f"enough for {len(everyone)} more devices (about {access.INOTIFY_PER_DEVICE} each). Run when fewer lab "
            "devices are up, or raise the limit (scripts/host-setup).")
        return 1
    with harness.workdir("bw") as work:
        centre = Centre(status, work)
        try:
            access.remove_devices([n for n in everyone if n in status["devices"]], log)  # left by an interrupted run
            for name in everyone:
                access.add_device(name, PROFILE, name.rsplit("-", 1)[0])
            for site in SITES:  # our sites' links unshaped, whatever a site of the same number had before
                access.lab("link", site, "--clear", timeout=60)
            log(f"{len(everyone)} devices added in {time.monotonic() - t0:.0f} s")
            status = access.status()
            write_inventories(work, status, fleet)
            ansible(work, "hosts-cache.yml", "setup.yml")
            setup_s = time.monotonic() - t0
            log(f"engines and caches ready after {setup_s:.0f} s")
            # the centre sees site n's relayed connections come from 127.213.<n>.1
            sources = {s: "127.213.{}.1".format(status["devices"][fleet[s][0]]["address"].split(".")[2])
                       for s in SITES}
            result = {name: run_pass(work, centre, sources, name, version)
                      for version, name in enumerate(PASSES, start=1)}
        finally:
            t_clean = time.monotonic()
            access.remove_devices(everyone, log)
            centre.clean()
            clean_s = time.monotonic() - t_clean
            log(f"devices, images and files removed in {clean_s:.0f} s")
    plot = figure(log, PLOTS / "site_bandwidth.png", "bytes down each site's link, without and with the site cache",
                  lambda plt: draw(plt, result, args.devices_per_site))
    notes = {"setup_s": setup_s, "total_s": time.monotonic() - t0, "clean_s": clean_s, "load_before": load_before,
             "load_after": loadavg(), "plot": plot}
    print(report(result, args.devices_per_site, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
