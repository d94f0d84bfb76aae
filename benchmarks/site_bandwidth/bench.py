"""Site bandwidth: bytes the centre serves when a 3-site fleet fetches a new model, with and without site caches."""

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from edgeai_lab import access
from edgeai_lab.centre import PLAYBOOKS, Centre, object_gets, site_cache_inventory, site_source

from benchmarks import harness
from benchmarks.harness import PROFILE_TASKS, figure, loadavg, logger, ratio, table, task_times

SITES = ["bw-north", "bw-south", "bw-east"]
PROFILE = "coral-usb"  # nothing from a vendor repository is installed: the cheapest device
PASSES = {"direct": "without cache", "cache": "with cache"}
OBJECTS = {"image": "registry", "artifact": "artifacts"}  # object -> the service that serves it
MB, LAYERS, ARTIFACT_BYTES = 1e6, (3_000_000, 2_000_000), 6_000_000  # bytes of random data
FETCH_TASKS = ("Pull the server image", "Stage the version on the device")  # the tasks that move the bytes
log = logger("site_bandwidth")


def ansible(work: Path, inventory: str, playbook: str, *extra: str) -> tuple[float, dict[str, float]]:
    """Run the lab's site-cache <playbook> (edgeai_lab.centre.PLAYBOOKS); its seconds and the seconds per task
    (profile_tasks)."""
    env = access.playbook_env(work / "cp", **PROFILE_TASKS)  # SSH masters of our own
    wall, _cpu, proc = harness.timed(lambda: access.run_playbook_ok(
        work / "inventory" / inventory, PLAYBOOKS / playbook, *extra, env=env, timeout=300))
    return wall, task_times(proc.stdout)


def run_pass(work: Path, centre: Centre, sources: dict[str, str], name: str, version: int) -> dict:
    """Objects new to everyone, fetched by every device at once; what the centre served per site."""
    tag = f"{name}-{secrets.token_hex(4)}"
    ref = centre.push_image(f"edgeai-bench/site-bandwidth-{tag}", LAYERS)
    blobs = centre.blobs(ref)
    url, sha256 = centre.put_artifact(f"site-bandwidth-{tag}.bin", ARTIFACT_BYTES)
    records = work / f"records-{name}"
    records.mkdir()
    offsets, before = centre.offsets(), {site: access.link_bytes(site) for site in SITES}
    log(f"{PASSES[name]}: every device fetches {ref} and {url}")
    seconds, tasks = ansible(work, f"hosts-{name}.yml", "fetch.yml", "-e", f"record_dir={records}", "-e",
                             f"image={ref}", "-e", f"url={url}", "-e", f"sha256={sha256}", "-e", f"version={version}")
    after = {site: access.link_bytes(site) for site in SITES}  # `lab link` waits for counters newer than its call
    wanted = {"image": {"blobs": blobs}, "artifact": {"artifact": url.rsplit("/", 1)[1]}}
    served: dict[str, dict[str, Any]] = {}
    for site, source in sources.items():
        responses = centre.served(offsets, source)
        served[site] = {"link": {s: n - before[site].get(s, 0) for s, n in after[site].items()}}
        for obj, service in OBJECTS.items():  # the object's bytes, in how many GETs, and the service's other bytes
            gets, sent = object_gets(responses, **wanted[obj]), sum(r.bytes for r in responses if r.service == service)
            served[site] |= {obj: sum(r.bytes for r in gets), f"{obj}_gets": len(gets)}
            served[site][f"{service}_other"] = sent - served[site][obj]
    return {"image_size": sum(blobs.values()), "blobs": len(blobs), "artifact_size": ARTIFACT_BYTES,
            "seconds": seconds, "fetch_s": sum(tasks.get(t, 0.0) for t in FETCH_TASKS), "sites": served,
            "records": {f.stem: json.loads(f.read_text()) for f in records.glob("*-*.json")}}


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
                                   for svc in OBJECTS.values())
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


def row(result: dict[str, dict[str, Any]], label: str, sites: list[str], obj: str) -> tuple[str, ...]:
    """A row of the table: the centre's bytes (from its logs) and the link's, in MB and copies."""
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


def report(result: dict[str, dict[str, Any]], per_site: int, notes: dict[str, Any]) -> str:
    direct, cache = result["direct"], result["cache"]
    intro = f"""{len(SITES)} sites ({', '.join(f'`{s}`' for s in SITES)}) of {per_site} lab devices (Coral USB
        hosts) fetch a new model at once by the collection's own tasks (`inference_server` `tasks/image.yml`,
        `model_deploy` `tasks/stage.yml`, sha256 checked): an image of {direct['blobs']} random blobs from the central
        registry and an https artifact of random bytes from the central artifact store, new in each pass. **With
        cache** each site sets `edgeai_site_cache` and its first device runs `roles/site_cache`. **Centre served**:
        object bytes sent to the site (the centre's logs; the gateway relays site n from 127.213.n.1); **link**: all
        bytes down the site's link (`lab link SITE --json`). Copies = bytes / object size. Setup
        {notes['setup_s']:.0f} s, clean-up {notes['clean_s']:.0f} s, whole run {notes['total_s']:.0f} s (load
        {notes['load_before']} -> {notes['load_after']}, {os.cpu_count()} shared cores)."""
    out = ["## Site bandwidth: one copy per site with the site cache", "", *harness.paragraphs(intro), "",
           notes["plot"], ""]
    rows = [row(result, (f"`{site}` ({per_site} devices)" if group == [site] else f"all {len(SITES)} sites")
                if obj == "image" else "", group, obj)
            for site, group in [*((s, [s]) for s in SITES), ("", SITES)] for obj in ("image", "artifact", "both")]
    out += table(["site", "object (size)", "centre served without cache (copies)",
                  "centre served with cache (copies)", "without / with", "link without / with (copies)"], rows,
                 "llrrrr")
    gets = {p: ", ".join(f"{s} {result[p]['sites'][s]['image_gets']} / {result[p]['sites'][s]['artifact_gets']}"
                         for s in SITES) for p in PASSES}
    other = {p: sum(result[p]["sites"][s][f"{k}_other"] for s in SITES for k in OBJECTS.values()) for p in PASSES}
    fell_back = sorted({k.split("-", 1)[1] for k, r in cache["records"].items()  # pull-<device>, stage-<device>
                        if r.get("registry") == "centre" or r["warning"]})
    out += ["", f"- GETs with object bytes per site (image blobs / artifact): without cache {gets['direct']}; with "
            f"cache {gets['cache']} (the cache fetches the artifact in 4 MiB slices). Other responses (manifests, "
            f"`/v2/` probes): {other['direct']:,} bytes without cache, {other['cache']:,} with.",
            f"- Time (not the measure): the fetch playbook took {direct['seconds']:.0f} s without cache and "
            f"{cache['seconds']:.0f} s with, its tasks that move the bytes ({' and '.join(FETCH_TASKS)}) "
            f"{direct['fetch_s']:.1f} s and {cache['fetch_s']:.1f} s (profile_tasks); with the cache each device "
            "first runs the client tasks (CA, probe, login); the links are not shaped. "
            + (f"Devices that fell back to the centre: {', '.join(fell_back)}." if fell_back else
               "Every device fetched through its site's cache (its own record says so).")]
    per = {(s, o): cache["sites"][s][o] / cache[f"{o}_size"] for s in SITES for o in OBJECTS}
    worst, least = max(per.values()), min(per.values())
    link_cache = sum(cache["sites"][s]["link"].get(k, 0) for s in SITES for k in OBJECTS.values())
    total = {p: sum(result[p]["sites"][s][o] for s in SITES for o in OBJECTS) for p in PASSES}
    if worst <= 1.0 + 1e-9 and least >= 1.0 - 1e-9:
        verdict = (f"**met**: with the cache the centre sent each site one copy of each object ({worst:.2f} copies "
                   f"everywhere, from its logs), against {per_site} without; without / with = "
                   f"{ratio(total['direct'], total['cache'], 'n/a')} for the fleet. All that crossed the links with "
                   f"the cache: {link_cache / (len(SITES) * (cache['image_size'] + cache['artifact_size'])):.3f} "
                   "copies (the rest is TLS, headers, manifests, login probes).")
    elif worst > 1.0:
        over = ", ".join(f"{s} {o} {c:.2f} copies" for (s, o), c in per.items() if c > 1.0)
        verdict = (f"**missed** by {worst - 1.0:.2f} copies at worst ({over}): a device fell back to the centre or "
                   "passed the cache's lock (`proxy_cache_lock`); `docker logs edgeai-site-cache` says which.")
    else:
        verdict = f"**not measured**: a site got only {least:.2f} copies of an object: the logs missed part of it."
    return "\n".join([*out, f"- Goal one copy per site: {verdict}"])


def main(argv: list[str] | None = None) -> int:
    args = harness.arguments(__doc__, argv, devices_per_site=(3, "devices per site, the cache host included"))
    t0, load_before, status = time.monotonic(), loadavg(), access.status()
    if not status.get("up") or "site-cache" not in status.get("images", {}) or not status.get("artifacts"):
        log("the lab is not up, or has no site-cache image or artifact store: run `tests/lab/lab up`")
        return 1
    fleet = {site: [f"{site}-{i}" for i in range(1, args.devices_per_site + 1)] for site in SITES}
    everyone = {d: (PROFILE, site) for site, names in fleet.items() for d in names}
    with harness.workdir("bw") as work:
        centre = Centre(status)
        try:
            # own_devices checks root's room first: else each `lab device add` would hold the lab's lock for its
            # whole readiness timeout
            with access.own_devices(everyone, log):
                for site in SITES:  # our sites' links unshaped, whatever a site of the same number had before
                    access.link(site, "--clear")
                log(f"{len(everyone)} devices added in {time.monotonic() - t0:.0f} s")
                status = access.status()
                for name in PASSES:
                    site_cache_inventory(work / "inventory" / f"hosts-{name}.yml", status, fleet,
                                         cache=name == "cache", parent="bw_fleet")
                ansible(work, "hosts-cache.yml", "caches.yml")
                setup_s = time.monotonic() - t0
                log(f"engines and caches ready after {setup_s:.0f} s")
                sources = {s: site_source(status, fleet[s][0]) for s in SITES}
                result = {name: run_pass(work, centre, sources, name, version)
                          for version, name in enumerate(PASSES, start=1)}
                t_clean = time.monotonic()
        finally:
            centre.clean(log)
    clean_s = time.monotonic() - t_clean
    log(f"devices, images and files removed in {clean_s:.0f} s")
    plot = figure("site_bandwidth", "bytes down each site's link, without and with the site cache",
                  lambda plt: draw(plt, result, args.devices_per_site))
    notes = {"setup_s": setup_s, "total_s": time.monotonic() - t0, "clean_s": clean_s, "load_before": load_before,
             "load_after": loadavg(), "plot": plot}
    print(report(result, args.devices_per_site, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
