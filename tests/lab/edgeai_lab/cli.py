"""`tests/lab/lab`: up | down | status | inventory | device add/rm (see docs/lab.md)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from edgeai_lab import apt, devices, images, inventory, pki, services
from edgeai_lab.core import (
    APT_HOST,
    APT_PORT,
    ARTIFACTS_PORT,
    BASE_IMAGE,
    LAB_DIR,
    LABEL,
    REGISTRY_HOST,
    REGISTRY_PORT,
    SSH_PORT_BASE,
    STATE_DIR,
    WEBHOOK_PORT,
    LabError,
    docker,
    load_state,
    log,
    port_free,
    save_state,
    state_lock,
    wait_tcp,
)

FLEETS_DIR = LAB_DIR / "fleets"
# what `lab down` deletes in .lab/ (cache/ is kept)
LAB_OWNED = ("apt", "artifacts", "docker", "inventory", "logs", "pki", "registry", "run", "ssh", "webhook",
             "state.json", "state.tmp")
PARALLEL = 4
# the lab's host processes, in the order `lab down` stops them
SERVICES = ("webhook", "artifacts", "gateway", "registry")


def fleet_devices(fleet: str | None, count: int | None) -> list[dict[str, Any]]:
    if count is not None:
        base = yaml.safe_load((FLEETS_DIR / "default.yml").read_text())["devices"]
        out = []
        for i in range(count):
            tmpl = base[i % len(base)]
            n = i // len(base) + 1
            out.append({**tmpl, "id": tmpl["id"].rsplit("-", 1)[0] + f"-{n:02d}"})
        return out
    f = FLEETS_DIR / f"{fleet or 'default'}.yml"
    if not f.exists():
        raise LabError(f"unknown fleet {fleet!r} (files in {FLEETS_DIR})")
    return yaml.safe_load(f.read_text())["devices"]


def _alloc_port(state: dict[str, Any]) -> int:
    used = {d["port"] for d in state["devices"].values()}
    port = SSH_PORT_BASE
    while port in used or not port_free(port):
        port += 1
    return port


def ensure_sites(state: dict[str, Any], sites: set[str]) -> dict[str, str]:
    """Site networks with fixed subnets; returns site -> gateway IP."""
    index = state.setdefault("sites", {})
    gws = {}
    for site in sorted(sites):
        if site not in index:
            used = set(index.values())
            index[site] = next(i for i in range(1, 250) if i not in used)
        gws[site] = devices.ensure_network(site, index[site])
    return gws


def ensure_infra(state: dict[str, Any], *, push_images: bool, sites: set[str]) -> dict[str, Any]:
    """Everything but the devices. Idempotent; fast when it all exists."""
    t0 = time.monotonic()
    if images.ensure_dockerd():
        state["started_dockerd"] = True
    devices.ensure_inotify()
    images.ensure_base_image()
    device_image = images.ensure_device_image()
    ssh_key = pki.ensure_ssh_key()
    ca = pki.ensure_ca()
    repo = apt.ensure_repo()
    creds = services.ensure_registry()
    site_gws = ensure_sites(state, sites | {d["site"] for d in state["devices"].values()})
    relays = []
    for gw in sorted(set(site_gws.values())):
        relays.append({"listen": [gw, REGISTRY_PORT], "target": ["127.0.0.1", REGISTRY_PORT], "service": "registry"})
        relays.append({"listen": [gw, WEBHOOK_PORT], "target": ["127.0.0.1", WEBHOOK_PORT], "service": "webhook"})
        relays.append({"listen": [gw, ARTIFACTS_PORT], "target": ["127.0.0.1", ARTIFACTS_PORT],
                       "service": "artifacts"})
    services.ensure_gateway(sorted(set(site_gws.values())), relays)
    infra = state.setdefault("infra", {})
    infra["artifacts"] = services.ensure_artifacts()
    try:
        infra["webhook"] = services.ensure_webhook()
    except LabError as exc:
        log(f"webhook receiver NOT started: {exc}")
        infra["webhook"] = None
    infra.update({"device_image": device_image, "site_gateways": site_gws, "ssh_key": str(ssh_key), "ca_cert": str(ca),
                  "apt": {"url": f"http://{APT_HOST}:{APT_PORT}/", "host_url": f"http://127.0.0.1:{APT_PORT}/",
                          "keyring": repo["keyring"], "key_url": f"http://{APT_HOST}:{APT_PORT}/{apt.KEYRING_NAME}",
                          "suites": repo["suites"]},
                  "registry": {"host": f"{REGISTRY_HOST}:{REGISTRY_PORT}", "host_address": f"127.0.0.1:{REGISTRY_PORT}",
                               "username": creds["username"], "credentials_file": str(services.CREDENTIALS),
                               "credentials_vars_file": str(services.CREDENTIALS_VARS)}})
    if push_images:
        built = infra.setdefault("images", {})
        skipped = infra.setdefault("skipped_images", {})
        for name, directory in images.project_image_dirs().items():
            if directory is None:
                msg = f"images/{name}/Dockerfile not there yet: not built, not pushed"
                log(f"SKIP {name}: {msg}")
                skipped[name] = msg
                built.pop(name, None)
                continue
            try:
                local = images.ensure_project_image(name, directory)
                tag = local.split(":", 1)[1]
                services.push_image(local, f"edgeai/{name}", [tag, "latest"], creds)
                built[name] = {"local": local, "ref": f"{REGISTRY_HOST}:{REGISTRY_PORT}/edgeai/{name}:{tag}",
                               "latest": f"{REGISTRY_HOST}:{REGISTRY_PORT}/edgeai/{name}:latest",
                               "host_ref": f"127.0.0.1:{REGISTRY_PORT}/edgeai/{name}:{tag}"}
                skipped.pop(name, None)
            except LabError as exc:
                log(f"SKIP {name}: build or push failed: {exc}")
                skipped[name] = f"build or push failed: {str(exc)[:500]}"
                built.pop(name, None)
    log(f"infrastructure ready in {time.monotonic() - t0:.1f}s")
    return infra


def _bring_up(state: dict[str, Any], wanted: list[dict[str, Any]]) -> None:
    infra = state["infra"]
    ssh_pub = Path(infra["ssh_key"] + ".pub").read_text()
    ca = Path(infra["ca_cert"]).read_bytes()
    for d in wanted:
        devices.load_profile(d["profile"])
    for d in wanted:
        cur = state["devices"].get(d["id"])
        port = cur["port"] if cur else _alloc_port(state)
        state["devices"][d["id"]] = {"profile": d["profile"], "site": d["site"], "port": port,
                                     "ring": d.get("ring", "broad"), "labels": d.get("labels") or {},
                                     "origin": d.get("origin", "fleet")}
        if cur and cur.get("origin") and d.get("origin", "fleet") != cur["origin"] and cur["origin"] == "fleet":
            state["devices"][d["id"]]["origin"] = "fleet"  # `device add` of a fleet device keeps it in the fleet
        meta = {"id": d["id"], "site": d["site"], "profile": d["profile"], "ssh_port": port}
        devices.create_device(d["id"], d["profile"], d["site"], port, infra["device_image"],
                              ssh_pub=ssh_pub, ca_crt=ca, meta=meta, gateway=infra["site_gateways"][d["site"]])
    save_state(state)

    def finish(d: dict[str, Any]) -> None:
        devices.wait_ready(d["id"])
        # a TLS server certificate per device, for services a device offers its site (a site cache)
        address = devices.device_address(d["id"])
        state["devices"][d["id"]]["address"] = address
        state["devices"][d["id"]]["site_gateway"] = infra["site_gateways"][d["site"]]
        pki.ensure_server_cert(f"device-{d['id']}", [d["id"], f"{d['id']}.edgeai.lab"], [address] if address else [])
        devices.apply_packages(d["id"], d["profile"])
        if not wait_tcp("127.0.0.1", state["devices"][d["id"]]["port"], 30):
            raise LabError(f"{d['id']}: SSH port not answering")
        devices.check_login(d["id"], state["devices"][d["id"]]["port"], infra["ssh_key"])

    with ThreadPoolExecutor(PARALLEL) as pool:
        errors = [f.exception() for f in [pool.submit(finish, d) for d in wanted]]
    errors = [e for e in errors if e]
    save_state(state)
    if errors:
        raise LabError("\n".join(str(e) for e in errors))


def _write_inventory(state: dict[str, Any]) -> dict[str, str]:
    listed = {n: d for n, d in state["devices"].items() if d.get("origin") != "molecule"}
    profiles = {d["profile"]: devices.load_profile(d["profile"]) for d in listed.values()}
    paths = inventory.write_inventories(listed, profiles)
    state.setdefault("infra", {})["inventory"] = paths
    return paths


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    with state_lock():
        state = load_state()
        if args.fleet is None and args.devices is None:
            current = state.get("fleet") or "default"
            if current.startswith("devices="):
                args.devices = int(current.split("=", 1)[1])
            else:
                args.fleet = current
        wanted = fleet_devices(args.fleet, args.devices)
        ensure_infra(state, push_images=not args.no_images, sites={d["site"] for d in wanted})
        wanted_ids = {d["id"] for d in wanted}
        for name, d in list(state["devices"].items()):
            if d.get("origin", "fleet") == "fleet" and name not in wanted_ids:
                log(f"{name}: not in the requested fleet, removing")
                devices.remove_device(name)
                del state["devices"][name]
        state["fleet"] = args.fleet if args.devices is None else f"devices={args.devices}"
        _bring_up(state, wanted)
        keep = {d["site"] for d in state["devices"].values()}
        devices.prune_networks(keep)
        state["sites"] = {k: v for k, v in state.get("sites", {}).items() if k in keep}
        _write_inventory(state)
        save_state(state)
    log(f"lab up: {len(state['devices'])} devices in {time.monotonic() - t0:.1f}s; "
        f"inventory: {inventory.HOSTS_FILE}")
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    """The Debian base image that the lab's devices and the project's images build FROM."""
    with state_lock():
        state = load_state()
        if images.ensure_dockerd():
            state["started_dockerd"] = True
            save_state(state)
        log(f"lab base: {images.ensure_base_image()}")
    return 0


def cmd_device_add(args: argparse.Namespace) -> int:
    with state_lock():
        state = load_state()
        ensure_infra(state, push_images=False, sites={args.site})
        _bring_up(state, [{"id": args.name, "profile": args.profile, "site": args.site, "ring": args.ring,
                           "origin": "molecule" if args.no_inventory else "manual"}])
        _write_inventory(state)
        save_state(state)
        d = state["devices"][args.name]
    print(json.dumps({"name": args.name, "address": "127.0.0.1", "port": d["port"], "user": "root",
                      "identity_file": state["infra"]["ssh_key"], "container": devices.container_name(args.name)}))
    return 0


def cmd_device_rm(args: argparse.Namespace) -> int:
    with state_lock():
        state = load_state()
        devices.remove_device(args.name)
        state["devices"].pop(args.name, None)
        devices.prune_networks({d["site"] for d in state["devices"].values()})
        if state.get("infra"):
            _write_inventory(state)
        save_state(state)
    return 0


RATE_UNITS = {"bit": 1 / 8, "kbit": 125, "mbit": 125_000, "gbit": 125_000_000, "b": 1, "kb": 1000,
              "mb": 1_000_000, "kib": 1024, "mib": 1024 * 1024}


def parse_rate(text: str) -> int:
    """'2mbit', '500kbit', '250kB', '1000' (bytes per second) -> bytes per second."""
    t = text.strip().lower().removesuffix("/s").removesuffix("ps")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):] or "b"
    if unit not in RATE_UNITS or not num:
        raise LabError(f"cannot read rate {text!r}: use a number with bit, kbit, mbit, gbit, B, kB, MB, KiB or MiB")
    return int(float(num) * RATE_UNITS[unit])


def parse_ms(text: str) -> float:
    """'80ms', '0.2s' or '80' (milliseconds) -> milliseconds."""
    t = text.strip().lower()
    scale = 1000.0 if t.endswith("s") and not t.endswith("ms") else 1.0
    try:
        return float(t.removesuffix("ms").removesuffix("s")) * scale
    except ValueError:
        raise LabError(f"cannot read delay {text!r}: use milliseconds, e.g. 80ms") from None


def link_key(state: dict[str, Any], target: str) -> tuple[str, str]:
    """A site's link is keyed by its gateway IP, a device's by its address on the site network."""
    gws = state.get("infra", {}).get("site_gateways", {})
    if target in gws:
        return "sites", gws[target]
    if target in state["devices"]:
        return "clients", devices.device_address(target)
    raise LabError(f"{target!r} is neither a site ({', '.join(sorted(gws))}) nor a lab device")


def cmd_link(args: argparse.Namespace) -> int:
    since = time.time()
    # not the lab's state lock: a link must be cut while `lab up` or `device add` runs
    with services.links_lock():
        state = load_state()
        table, key = link_key(state, args.target)
        rules = services.read_links()
        rule = {} if args.clear else dict(rules.get(key, {}))
        if args.rate is not None:
            rule["rate"] = parse_rate(args.rate)
        if args.delay is not None:
            rule["delay_ms"] = parse_ms(args.delay)
        if args.loss is not None:
            loss = float(args.loss.rstrip("%")) / (100 if args.loss.endswith("%") else 1)
            if not 0 <= loss < 1:
                raise LabError(f"loss {args.loss!r} must be between 0 and 100%")
            rule["loss"] = loss
        if args.cut:
            rule["cut"] = True
        if args.restore:
            rule.pop("cut", None)
        rule = {k: v for k, v in rule.items() if v}
        if rule:
            rules[key] = rule
        else:
            rules.pop(key, None)
        services.write_links(rules)
    # the gateway applies the rules within half a second and then writes fresh counters
    stats = services.read_stats(newer_than=since + 0.6)
    out = {"target": args.target, "key": key, "rule": rule, "bytes": stats[table].get(key, {}), "time": stats["time"]}
    print(json.dumps(out, indent=2) if args.json else
          f"{args.target} ({key}): {rule or 'unshaped'}; bytes {json.dumps(out['bytes'])}")
    return 0


def collect_status() -> dict[str, Any]:
    state = load_state()
    running = {c["Names"]: c for c in devices.lab_containers()}
    devs = {}
    for name, d in sorted(state["devices"].items()):
        c = running.get(devices.container_name(name))
        prof = devices.load_profile(d["profile"])
        devs[name] = {**d, "platform": prof["platform"], "hardware": prof["hardware"],
                      "container": devices.container_name(name), "network": devices.network_name(d["site"]),
                      "state": c["State"] if c else "missing",
                      "ssh": {"host": "127.0.0.1", "port": d["port"], "user": "root"}}
    infra = state.get("infra", {})
    procs = {n: services.proc_running(n) for n in SERVICES}
    return {"state_dir": str(STATE_DIR), "fleet": state.get("fleet"),
            "up": bool(devs) and all(v["state"] == "running" for v in devs.values()) and bool(procs["registry"]),
            "devices": devs, "ssh_key": infra.get("ssh_key"), "ca_cert": infra.get("ca_cert"),
            "registry": infra.get("registry"), "apt": infra.get("apt"), "webhook": infra.get("webhook"),
            "artifacts": infra.get("artifacts"),
            "images": infra.get("images", {}), "skipped_images": infra.get("skipped_images", {}),
            "device_image": infra.get("device_image"), "inventory": inventory.paths(), "processes": procs}


def cmd_status(args: argparse.Namespace) -> int:
    st = collect_status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"lab state: {st['state_dir']}  fleet: {st['fleet']}  up: {st['up']}")
    for name, d in st["devices"].items():
        print(f"  {name:28} {d['profile']:16} {d['site']:8} ssh 127.0.0.1:{d['port']:<6} {d['state']}")
    for n, pid in st["processes"].items():
        print(f"  process {n:10} {'pid ' + str(pid) if pid else 'not running'}")
    for n, i in st["images"].items():
        print(f"  image {n:14} {i['ref']}")
    for n, why in st["skipped_images"].items():
        print(f"  image {n:14} SKIPPED: {why}")
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    p = inventory.paths()
    if args.json:
        print(json.dumps(p, indent=2))
    else:
        for k in ("hosts", "plugin", "devices"):
            print(f"{k}: {p[k]}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    with state_lock():
        state = load_state()
        containers = [c["Names"] for c in devices.lab_containers()]
        vols = docker("volume", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
        nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}", "--format", "{{.Name}}",
                      check=False).stdout.split()
        procs = {n: services.proc_running(n) for n in SERVICES}
        if state.get("started_dockerd"):
            procs["dockerd"] = services.proc_running("dockerd")
        imgs: list[str] = []
        if args.purge:
            # only the tags the lab made (images FROM the base inherit its label: not a criterion)
            imgs = [i for i in docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
                    if (i.startswith("edgeai/") and ":lab-" in i) or i.startswith("edgeai-lab/device:")]
            imgs.append(BASE_IMAGE)
        files = [STATE_DIR / e for e in LAB_OWNED if (STATE_DIR / e).exists() or (STATE_DIR / e).is_symlink()]
        if args.dry_run:
            print(json.dumps({"containers": containers, "volumes": vols, "networks": nets,
                              "processes": {n: p for n, p in procs.items() if p}, "images": imgs,
                              "files": [str(f) for f in files]}, indent=2))
            return 0
        for name in containers:
            docker("rm", "-f", "-v", name, check=False)
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        for net in nets:
            docker("network", "rm", net, check=False)
        for name in SERVICES:
            if services.stop_process(name):
                log(f"stopped {name}")
        for img in imgs:
            docker("rmi", "-f", img, check=False)
        if procs.get("dockerd"):
            services.stop_process("dockerd")
            log("stopped the dockerd the lab started")
        # only what the lab writes there: other tools' files in .lab/ (e.g. a demo's) stay
        for path in files:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (STATE_DIR / ".lock").unlink(missing_ok=True)
    log("lab down: done (kept: .lab/cache and the built images" + (")" if not args.purge else "; images purged)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests/lab/lab", description="edgeai.fleet device lab (docs/lab.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build what is missing and start the lab")
    g = up.add_mutually_exclusive_group()
    g.add_argument("--fleet", help="fleet file in tests/lab/fleets: default, large "
                   "(without --fleet/--devices: the fleet that is up, else default)")
    g.add_argument("--devices", type=int, help="N devices following the default fleet's pattern")
    up.add_argument("--no-images", action="store_true", help="do not build/push the project's images")
    up.set_defaults(func=cmd_up)
    base = sub.add_parser("base", help="build the Debian base image (FROM of the lab's and the project's "
                          "images) when it is missing or its recipe changed")
    base.set_defaults(func=cmd_base)
    down = sub.add_parser("down", help="remove everything the lab made")
    down.add_argument("--purge", action="store_true", help="also remove the lab's images")
    down.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    down.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="what runs, endpoints, paths")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    inv = sub.add_parser("inventory", help="paths of the generated inventories")
    inv.add_argument("--json", action="store_true")
    inv.set_defaults(func=cmd_inventory)
    dev = sub.add_parser("device", help="add or remove a single device")
    dsub = dev.add_subparsers(dest="dcmd", required=True)
    add = dsub.add_parser("add")
    add.add_argument("name")
    add.add_argument("--profile", required=True)
    add.add_argument("--site", default="site-m")
    add.add_argument("--ring", default="broad")
    add.add_argument("--no-inventory", action="store_true",
                     help="leave the device out of .lab/inventory (molecule has its own inventory)")
    add.set_defaults(func=cmd_device_add)
    link = sub.add_parser("link", help="shape or cut a site's (or one device's) link to the data centre")
    link.add_argument("target", help="a site name or a device name")
    link.add_argument("--rate", help="bandwidth per direction, e.g. 2mbit, 250kB")
    link.add_argument("--delay", help="one-way delay, e.g. 80ms")
    link.add_argument("--loss", help="share of chunks stalled as if lost, e.g. 2%%")
    cut = link.add_mutually_exclusive_group()
    cut.add_argument("--cut", action="store_true", help="close every connection and refuse new ones")
    cut.add_argument("--restore", action="store_true", help="undo --cut (keeps rate/delay/loss)")
    link.add_argument("--clear", action="store_true", help="remove all shaping first")
    link.add_argument("--json", action="store_true", help="print the rule and the link's byte counters as JSON")
    link.set_defaults(func=cmd_link)
    rm = dsub.add_parser("rm")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_device_rm)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except LabError as exc:
        print(f"lab: ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
