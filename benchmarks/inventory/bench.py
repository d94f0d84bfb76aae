"""Inventory: the device_registry plugin against ansible's yaml inventory, the same hosts, vars and groups."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml
from ansible_collections.edgeai.fleet.plugins.plugin_utils import _device_registry as reg

from benchmarks import ROOT
from benchmarks.harness import arguments, paragraphs, table, timed, workdir

DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
ANSIBLE = str(Path(sys.executable).parent / "ansible")
HARDWARE = (("jetson", "agx-orin"), ("jetson", "orin-nano"), ("jetson", "xavier-nx"), ("jetson", "jetson-nano"),
            ("coral", "coral-dev-board"), ("coral", "coral-usb"), ("generic", "generic"))
RINGS = ("canary",) + ("early",) * 4 + ("broad",) * 45  # 2% canary, 8% early, 90% broad
SITES, REPEAT, YAML_REPEAT, TIMEOUT = 40, 3, 1, 600  # the runs of each source: the best is shown


def fleet(size: int) -> list[dict]:
    out = []
    for i in range(size):
        site, (plat, hw) = f"site-{i % SITES:03d}", HARDWARE[i % len(HARDWARE)]
        out.append({"id": f"{site}-{hw}-{i // SITES:05d}", "site": site, "platform": plat, "hardware": hw,
                    "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", "port": 22, "user": "edge",
                    "ring": RINGS[i % len(RINGS)], "labels": {"line": "ab"[i % 2], "customer": f"c{i % 7}"},
                    "maintenance": False})
    return out


def static_inventory(devices: list[dict]) -> dict:
    """The hosts, variables and groups the plugin makes (in its rollout order, by its group names), as a
    yaml-inventory document."""
    hosts, children = {}, {}
    for order, d in enumerate(map(vars, reg.rollout_order([SimpleNamespace(**d) for d in devices])), start=1):
        hosts[d["id"]] = {"ansible_host": d["address"], "ansible_port": d["port"], "ansible_user": d["user"],
                          **{f"edge_{k}": d[k] for k in ("site", "platform", "hardware", "ring", "labels",
                                                         "maintenance")}, "edge_rollout_order": order}
        for kind in ("site", "platform", "hardware", "ring"):
            group = reg.sanitize_group_name(f"{kind}_{d[kind]}")
            children.setdefault(group, {"hosts": {}})["hosts"][d["id"]] = None
    return {"all": {"hosts": hosts, "children": children}}


def write_sources(directory: Path, size: int) -> dict[str, Path]:
    """The fleet as a registry file, YAML and JSON, each with the plugin's config; and as a static inventory."""
    directory.mkdir()
    devices, paths = fleet(size), {kind: directory / f"{kind}.device_registry.yml" for kind in ("yaml", "json")}
    (directory / "devices.yaml").write_text(yaml.dump({"devices": devices}, Dumper=DUMPER, sort_keys=False))
    (directory / "devices.json").write_text(json.dumps({"devices": devices}))
    for kind, path in paths.items():
        path.write_text(f"plugin: edgeai.fleet.device_registry\nsource_file: devices.{kind}\n")
    paths["static"] = directory / "static.yml"
    paths["static"].write_text(yaml.dump(static_inventory(devices), Dumper=DUMPER, sort_keys=False))
    return paths


def list_hosts(source: Path, expected: int, repeat: int) -> tuple[float, float] | None:
    """Best (wall, CPU) seconds of `repeat` runs; CPU time (user + system) is what load does not inflate."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.environ.get("ANSIBLE_CONFIG") or str(ROOT / "ansible.cfg"))
    runs = []
    for _ in range(repeat):
        try:
            wall, cpu, proc = timed(lambda: subprocess.run([ANSIBLE, "all", "-i", str(source), "--list-hosts"],
                                                           capture_output=True, text=True, timeout=TIMEOUT,
                                                           check=False, env=env, cwd=ROOT))
        except subprocess.TimeoutExpired:
            return None
        first = (proc.stdout.strip().splitlines() or [""])[0]
        if proc.returncode != 0 or f"hosts ({expected})" not in first:
            raise SystemExit(f"{source}: unexpected result (rc={proc.returncode}): {first!r}\n{proc.stderr[-2000:]}")
        runs.append((wall, cpu))
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv, sizes=("1000,10000,50000", "comma-separated fleet sizes"))
    rows = []
    with workdir("inventory") as work:
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            paths = write_sources(work / str(size), size)
            rows.append((size, {k: list_hosts(p, size, YAML_REPEAT if k == "static" else REPEAT)
                                for k, p in paths.items()}))

    def fmt(value: tuple[float, float] | None) -> str:
        return f"> {TIMEOUT:.0f} s" if value is None else f"{value[0]:.2f} s (CPU {value[1]:.2f} s)"

    intro = f"""The same fleet as a device registry file read by `edgeai.fleet.device_registry` (YAML and JSON) and
        as the equivalent static file read by ansible's `yaml` inventory plugin (same hosts, host variables and groups).

        `ansible all -i <source> --list-hosts`: wall time of the fastest of {REPEAT} runs (yaml inventory: of
        {YAML_REPEAT}), with the CPU time (user + system) of that run; {SITES} sites; Python
        {platform.python_version()}, {os.cpu_count()} CPUs, load average
        {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end."""
    rows = [(f"{size:,}", fmt(b["yaml"]), fmt(b["json"]), fmt(b["static"]),
             f"{b['static'][0] / b['yaml'][0]:.1f}x" if b["static"] and b["yaml"] else "n/a") for size, b in rows]
    header = ["devices", "device_registry, YAML file", "device_registry, JSON file",
              "ansible yaml inventory (static file)", "speed-up (YAML file, wall)"]
    title = "## Inventory: device_registry plugin vs ansible's yaml inventory"
    print("\n".join([title, "", *paragraphs(intro), "", *table(header, rows, "rrrrr")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
