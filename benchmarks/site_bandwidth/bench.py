#!/usr/bin/env python3
# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Site bandwidth: bytes the centre serves when a 3-site fleet fetches a new model, with and without site caches.

Three lab sites of the benchmark's own (bw-north, bw-south, bw-east), --devices-per-site Coral USB
hosts each (the lightest profile); the first device of each site also runs the site cache
(roles/site_cache, image images/site-cache), as in tests/integration/test_site_cache.py. Setup
(devices, engines, caches) is outside the measured part.

A new model is a new image (layers of random bytes FROM scratch, built on the host and pushed to
the central registry) and a new https artifact (random bytes in the central artifact store).
Every device fetches both with the collection's own tasks, all devices at once (Ansible forks):
the image with roles/inference_server's image tasks, the artifact with roles/model_deploy's stage
tasks. Two passes, side by side in one run, each with objects of its own of the same sizes, new to
the centre's clients and to the caches:

- without cache: the devices have no `edgeai_site_cache`, so each fetches from the centre;
- with cache: the same inventory plus `edgeai_site_cache` per site, so each fetches via its
  site's cache, which fetches from the centre.

Per site and pass: the object bytes the centre sent to that site, from the central registry's
log (GETs of the image's blobs) and the artifact store's log (GETs of the file), found by the
site's source address (the lab gateway relays site n from 127.213.<n>.1); and what crossed the
site's link in that time (`lab link SITE --json`: bytes down per service, TLS and every other
request included). Copies = object bytes / object size. Goal: one copy per site.

    .venv/bin/python benchmarks/site_bandwidth/bench.py [--devices-per-site 3]

Prints a Markdown section on stdout (benchmarks/run.py collects it into docs/benchmarks.md) and
writes the bar chart docs/benchmarks/site_bandwidth.png. Needs the lab up (`tests/lab/lab up`)
with its artifact store and site-cache image; removes its devices, images and files when done.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from edgeai_lab import inventory as lab_inventory  # noqa: E402  (the lab's own inventory settings)

SITES = ["bw-north", "bw-south", "bw-east"]
PROFILE = "coral-usb"  # nothing from a vendor repository is installed: the cheapest device
PLOT = ROOT / "docs" / "benchmarks" / "site_bandwidth.png"
PASSES = {"direct": "without cache", "cache": "with cache"}
MB = 1e6
# inotify instances (of root's fs.inotify.max_user_instances) a running lab device holds: its systemd,
# logind and containerd; seen on this machine (128 held by 19 devices)
INOTIFY_PER_DEVICE = 7
# the tasks of inference_server and model_deploy that move the bytes
FETCH_TASKS = ("Pull the server image", "Stage the version on the device")

PLAYBOOKS = {
    # container_engine also installs what Ansible's docker modules need on a new device (python3-requests)
    "setup.yml": """
- name: Engines of the benchmark's devices
  hosts: bw_fleet
  gather_facts: false
  roles:
    - edgeai.fleet.container_engine

- name: One cache per site
  hosts: site_cache_hosts
  gather_facts: false
  roles:
    - edgeai.fleet.site_cache
""",
    # what a rollout of a new model fetches, by the roles' own tasks
    "fetch.yml": """
- name: Fetch a new model as the roles do
  hosts: bw_fleet
  gather_facts: false
  tasks:
    - name: Pull the image as inference_server does
      ansible.builtin.include_role:
        name: edgeai.fleet.inference_server
        tasks_from: image
      vars:
        inference_server_image: "{{ image }}"

    - name: Note where the image came from
      ansible.builtin.set_fact:
        _bw_image_from: "{{ site_cache_client.registry if site_cache_client is defined else 'centre' }}"

    - name: Stage the artifact as model_deploy does
      ansible.builtin.include_role:
        name: edgeai.fleet.model_deploy
        tasks_from: stage
      vars:
        model_deploy_name: bench-site-bandwidth
        model_deploy_version: "{{ version }}"
        model_deploy_artifact: {url: "{{ url }}", sha256: "{{ sha256 }}"}
        model_deploy_artifacts_dir: /var/lib/edgeai-bench-site-bandwidth
        model_deploy_artifact_ca_path: /usr/local/share/ca-certificates/edgeai-lab-ca.crt

    - name: Record where both came from
      ansible.builtin.copy:
        content: >-
          {{ {'image_from': _bw_image_from,
              'artifact_from': site_cache_client.artifact_url if site_cache_client is defined else 'centre',
              'warning': site_cache_client.warning if site_cache_client is defined else '',
              'artifact_bytes': model_deploy_result.downloaded_bytes} | to_json }}
        dest: "{{ record_dir }}/{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
""",
}


def log(msg: str) -> None:
    sys.stderr.write(f"[site_bandwidth bench] {time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def lab(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`lab {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def inotify_instances() -> tuple[int, int]:
    """(inotify instances root holds, fs.inotify.max_user_instances): every device's systemd, logind
    and containerd hold some, and a device whose systemd gets none never boots."""
    used = 0
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == "anon_inode:inotify" and fd.parent.parent.stat().st_uid == 0:
                used += 1
        except OSError:
            continue  # a process or descriptor that went away meanwhile
    return used, int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())


def device_names(per_site: int) -> dict[str, list[str]]:
    return {site: [f"{site}-{i}" for i in range(1, per_site + 1)] for site in SITES}


# --- the fleet -----------------------------------------------------------------------------
def file_lookup(path: Path | str) -> str:
    return f"{{{{ lookup('ansible.builtin.file', '{path}') }}}}"


def write_inventories(work: Path, status: dict[str, Any], fleet: dict[str, list[str]]) -> None:
    """hosts-direct.yml (no cache settings for the devices) and hosts-cache.yml (the same plus
    edgeai_site_cache per site), the lab's site settings (group_vars) and the playbooks."""
    pki = Path(status["state_dir"]) / "pki"
    ca = "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
    # the lab's site.yml reads the centre's logins from the lab's 0600 files
    registry_login = "_edge_lab_registry_login.edge_lab_registry"
    artifacts_login = "_edge_lab_artifacts_login.edge_lab_artifacts"
    sites: dict[str, Any] = {}
    cache_hosts: dict[str, Any] = {}
    for site, names in fleet.items():
        cache = names[0]
        address = status["devices"][cache]["address"]
        password_file = work / f"{site}-device-password"
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
        gateway = re.sub(r"\.\d+$", ".1", address)
        sites[f"site_{site.replace('-', '_')}"] = {
            "hosts": {
                d: {"ansible_host": "127.0.0.1", "ansible_port": status["devices"][d]["port"], "edge_site": site}
                for d in names
            },
            # what an operator puts in the site's group_vars
            "vars": {
                "edgeai_site_cache": {
                    "host": address,
                    "ca": ca,
                    "username": "device",
                    "password": file_lookup(password_file),
                }
            },
        }
        cache_hosts[cache] = {
            # the lab's per-device certificate (from the lab CA) names the device's site address
            "site_cache_tls_cert": file_lookup(pki / f"device-{cache}.crt"),
            "site_cache_tls_key": file_lookup(pki / f"device-{cache}.key"),
            "site_cache_users": [{"username": "device", "password": file_lookup(password_file)}],
            # inside the cache container the lab's names are not in /etc/hosts
            "site_cache_etc_hosts": {"registry.edgeai.lab": gateway, "artifacts.edgeai.lab": gateway},
        }
    inventory = {
        "all": {
            "vars": {
                **lab_inventory.lab_vars(),
                "site_cache_upstream_registry": "{{ edge_lab_registry }}",
                "site_cache_upstream_artifact_url": "{{ edge_lab_artifacts_url }}/",
            },
            "children": {
                "bw_fleet": {"children": sites},
                "site_cache_hosts": {
                    "hosts": cache_hosts,
                    "vars": {
                        "site_cache_image": status["images"]["site-cache"]["ref"],
                        "site_cache_upstream_registry_username": f"{{{{ {registry_login}_username }}}}",
                        "site_cache_upstream_registry_password": f"{{{{ {registry_login}_password }}}}",
                        "site_cache_upstream_artifact_username": f"{{{{ {artifacts_login}_username }}}}",
                        "site_cache_upstream_artifact_password": f"{{{{ {artifacts_login}_password }}}}",
                        "site_cache_upstream_ca": ca,
                    },
                },
            },
        }
    }
    inv = work / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "group_vars" / "all" / "site.yml").write_text(lab_inventory.SITE_VARS_SRC.read_text())
    (inv / "hosts-cache.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    for group in sites.values():
        del group["vars"]
    (inv / "hosts-direct.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    for name, text in PLAYBOOKS.items():
        (work / name).write_text(text)


def ansible(
    work: Path, inventory: str, playbook: str, *extra: str, timeout: float = 300
) -> tuple[float, dict[str, float]]:
    """Run one of PLAYBOOKS; returns its seconds and the seconds per task (profile_tasks).
    Raises with the output's tail when it fails."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}:{os.environ['PATH']}",
        # SSH masters of our own: after the devices go, their ports may be given to someone else's
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"),
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        PROFILE_TASKS_TASK_OUTPUT_LIMIT="all",
    )
    t = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(work / "inventory" / inventory), str(work / playbook), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{playbook} on {inventory} exited {proc.returncode}:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
        )
    seconds = time.monotonic() - t
    tasks: dict[str, float] = {}
    for name, took in re.findall(r"^(\S.*?) -{3,} (\d+\.\d+)s$", proc.stdout, re.MULTILINE):
        name = name.split(" : ", 1)[-1]
        tasks[name] = tasks.get(name, 0.0) + float(took)
    return seconds, tasks


# --- the centre ----------------------------------------------------------------------------
class Centre:
    """The lab's central registry and artifact store, as the benchmark's own objects need them."""

    def __init__(self, status: dict[str, Any], work: Path) -> None:
        self.status, self.work = status, work
        self.creds = json.loads(Path(status["registry"]["credentials_file"]).read_text())
        self.context = ssl.create_default_context(cafile=status["ca_cert"])
        self.registry_log = Path(status["state_dir"]) / "logs" / "registry.log"
        self.artifact_log = Path(status["artifacts"]["log"])
        self.pushed: list[str] = []  # repositories, their manifests deleted at the end
        self.files: list[Path] = []

    def _registry(self, path: str, method: str = "GET") -> tuple[Any, bytes]:
        req = urllib.request.Request(f"https://{self.status['registry']['host_address']}{path}", method=method)
        login = f"{self.creds['username']}:{self.creds['password']}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(login).decode())
        req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:  # noqa: S310 - the lab on loopback
            return resp.headers, resp.read()

    def push_image(self, repo: str, layers: list[int]) -> tuple[str, dict[str, int]]:
        """An image of random layers FROM scratch, built here and pushed to the centre.
        Returns its central name (as devices see it) and digest -> size of its config and layers."""
        context = self.work / f"build-{repo.rsplit('/', 1)[-1]}"
        context.mkdir()
        lines = ["FROM scratch"]
        for i, size in enumerate(layers):
            (context / f"layer{i}.bin").write_bytes(os.urandom(size))
            lines.append(f"COPY layer{i}.bin /models/layer{i}.bin")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        host_ref = f"{self.status['registry']['host_address']}/{repo}:1"
        docker_config = self.work / "docker-config"
        docker_config.mkdir(mode=0o700, exist_ok=True)
        env = dict(os.environ, DOCKER_CONFIG=str(docker_config))
        steps = (
            (
                [
                    "docker",
                    "login",
                    self.status["registry"]["host_address"],
                    "-u",
                    self.creds["username"],
                    "--password-stdin",
                ],
                self.creds["password"],
            ),
            (["docker", "build", "-q", "-t", host_ref, str(context)], None),
            (["docker", "push", "-q", host_ref], None),
            (["docker", "rmi", host_ref], None),
        )
        for argv, stdin in steps:
            proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=300, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[:2])}: {proc.stderr[-2000:]}")
            if argv[1] == "push":
                self.pushed.append(repo)
        shutil.rmtree(context)
        manifest = json.loads(self._registry(f"/v2/{repo}/manifests/1")[1])
        blobs = {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}
        return f"{self.status['registry']['host']}/{repo}:1", blobs

    def put_artifact(self, name: str, size: int) -> tuple[str, str]:
        """A file of random bytes in the artifact store; returns its URL (as devices see it) and sha256."""
        payload = os.urandom(size)
        path = Path(self.status["artifacts"]["root"]) / name
        self.files.append(path)
        path.write_bytes(payload)
        return f"{self.status['artifacts']['url']}/{name}", hashlib.sha256(payload).hexdigest()

    def offsets(self) -> tuple[int, int]:
        return self.registry_log.stat().st_size, self.artifact_log.stat().st_size

    def served(
        self, offsets: tuple[int, int], sources: dict[str, str], blobs: set[str], artifact: str
    ) -> dict[str, Any]:
        """Per site: bytes of the object's blobs / file the centre sent it since offsets, how many
        responses that took, and every other response's bytes (manifests, probes) per service."""
        out = {
            site: {
                "image": 0,
                "image_gets": 0,
                "artifact": 0,
                "artifact_gets": 0,
                "registry_other": 0,
                "artifacts_other": 0,
            }
            for site in sources
        }
        by_source = {source: site for site, source in sources.items()}
        for r in read_json_lines(self.registry_log, offsets[0]):
            site = by_source.get(r.get("http.request.remoteaddr", "").rsplit(":", 1)[0])
            if site is None or r.get("msg") != "response completed":
                continue
            written = int(r.get("http.response.written", 0))
            uri = r.get("http.request.uri", "")
            if r.get("http.request.method") == "GET" and "/blobs/" in uri and uri.rsplit("/", 1)[-1] in blobs:
                out[site]["image"] += written
                out[site]["image_gets"] += 1
            else:
                out[site]["registry_other"] += written
        for r in read_json_lines(self.artifact_log, offsets[1]):
            site = by_source.get(r.get("client", ""))
            if site is None:
                continue
            if r.get("method") == "GET" and r.get("path") == "/" + artifact:
                out[site]["artifact"] += int(r.get("bytes") or 0)
                out[site]["artifact_gets"] += 1
            else:
                out[site]["artifacts_other"] += int(r.get("bytes") or 0)
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


def read_json_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line still being written
    return out


def link_bytes(site: str) -> dict[str, int]:
    """Bytes down (centre -> site) per service that crossed the site's link so far."""
    counters = json.loads(lab("link", site, "--json", timeout=60))["bytes"]
    return {service: int(c.get("down", 0)) for service, c in counters.items()}


# --- the measured passes -------------------------------------------------------------------
def run_pass(
    work: Path,
    centre: Centre,
    sources: dict[str, str],
    name: str,
    layers: list[int],
    artifact_size: int,
    version: int,
) -> dict[str, Any]:
    """Objects new to everyone, fetched by every device at once; what the centre served per site."""
    tag = f"{name}-{secrets.token_hex(4)}"
    ref, blobs = centre.push_image(f"edgeai-bench/site-bandwidth-{tag}", layers)
    url, sha256 = centre.put_artifact(f"site-bandwidth-{tag}.bin", artifact_size)
    artifact = url.rsplit("/", 1)[1]
    records = work / "records"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    offsets = centre.offsets()
    before = {site: link_bytes(site) for site in SITES}
    log(f"{PASSES[name]}: every device fetches {ref} and {url}")
    seconds, tasks = ansible(
        work,
        f"hosts-{name}.yml",
        "fetch.yml",
        "-e",
        f"record_dir={records}",
        "-e",
        f"image={ref}",
        "-e",
        f"url={url}",
        "-e",
        f"sha256={sha256}",
        "-e",
        f"version={version}",
    )
    after = {site: link_bytes(site) for site in SITES}  # `lab link` waits for counters newer than its call
    served = centre.served(offsets, sources, set(blobs), artifact)
    for site in SITES:
        served[site]["link"] = {s: after[site].get(s, 0) - before[site].get(s, 0) for s in after[site]}
    return {
        "image_size": sum(blobs.values()),
        "blobs": len(blobs),
        "artifact_size": artifact_size,
        "seconds": seconds,
        "fetch_s": sum(tasks.get(t, 0.0) for t in FETCH_TASKS),
        "sites": served,
        "records": {f.stem: json.loads(f.read_text()) for f in records.glob("*.json")},
    }


# --- report --------------------------------------------------------------------------------
def mb(n: float) -> str:
    return f"{n / MB:,.2f} MB"


def copies(n: float, size: int) -> str:
    return f"{n / size:.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def plot(result: dict[str, dict[str, Any]], per_site: int, path: Path) -> bool:
    """Bytes down each site's link, without vs with cache, split by service. False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (`make bench` installs it): no plot")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 1.2]})
    width = 0.38
    colours = {"direct": ("tab:red", "lightcoral"), "cache": ("tab:blue", "lightsteelblue")}
    one_copy = (result["cache"]["image_size"] + result["cache"]["artifact_size"]) / MB
    for ax, groups in ((axes[0], [[s] for s in SITES]), (axes[1], [SITES])):
        for k, (pass_name, label) in enumerate(PASSES.items()):
            run = result[pass_name]
            one = run["image_size"] + run["artifact_size"]
            for i, sites in enumerate(groups):
                image = sum(run["sites"][s]["link"].get("registry", 0) for s in sites) / MB
                artifact = sum(run["sites"][s]["link"].get("artifacts", 0) for s in sites) / MB
                x = i + (k - 0.5) * width
                first = ax is axes[0] and i == 0
                ax.bar(x, image, width, color=colours[pass_name][0], label=f"{label}: image" if first else None)
                ax.bar(
                    x,
                    artifact,
                    width,
                    bottom=image,
                    color=colours[pass_name][1],
                    label=f"{label}: artifact" if first else None,
                )
                copies_per_site = (image + artifact) * MB / (one * len(sites))
                ax.text(x, image + artifact, f"{copies_per_site:.2f} copies", ha="center", va="bottom", fontsize=7)
        ax.axhline(
            one_copy * len(groups[0]),
            color="black",
            linestyle="--",
            linewidth=0.8,
            label="one copy of image + artifact per site" if ax is axes[0] else None,
        )
        ax.set_xticks(range(len(groups)), [s[0] if len(s) == 1 else f"all {len(s)} sites" for s in groups])
        ax.set_ylabel("MB down the link from the centre")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title("per site", fontsize=9)
    axes[1].set_title("the centre's total", fontsize=9)
    fig.suptitle(
        f"A new model (image + https artifact) fetched by all {per_site} devices of each of {len(SITES)} sites",
        fontsize=10,
    )
    fig.legend(loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def report(result: dict[str, dict[str, Any]], fleet: dict[str, list[str]], notes: dict[str, Any]) -> str:
    direct, cache = result["direct"], result["cache"]
    per_site = len(fleet[SITES[0]])
    out = ["## Site bandwidth: one copy per site with the site cache", ""]
    out.append(
        f"A fleet of {len(SITES)} sites ({', '.join(f'`{s}`' for s in SITES)}) of {per_site} lab devices each "
        f"(Coral USB hosts) fetches a new model: a new image ({direct['blobs']} blobs: layers of random bytes FROM "
        "scratch, pushed to the central registry) and a new https artifact (random bytes in the central artifact "
        "store). All devices fetch at once (Ansible forks), through the collection's own tasks: "
        "`roles/inference_server` `tasks/image.yml` pulls the image, `roles/model_deploy` `tasks/stage.yml` stages "
        "the artifact (sha256 checked). **Without cache**: each device fetches from the centre. **With cache**: "
        "the same inventory plus `edgeai_site_cache` per site; the first device of each site runs the cache "
        "(`roles/site_cache`) and, like the others, fetches through it. The two passes run one after the other in "
        "one run, each with objects of its own of the same sizes, new to the devices and to the caches. "
        "**Centre served** = bytes of the object's blobs (central registry's log) or of the file (artifact store's "
        "log) sent to the site's address (the lab gateway relays site n from 127.213.n.1); **link** = everything "
        "that crossed the site's link from the centre in that pass (`lab link SITE --json`, bytes down of the "
        "registry or artifacts service: TLS, headers, manifests and login probes included). Copies = bytes / object "
        "size. Setup (devices added; `container_engine` on every device, `site_cache` on the cache hosts) took "
        f"{notes['setup_s']:.0f} s and is not part of the measure, removing it all {notes['clean_s']:.0f} s; "
        f"the whole run took {notes['total_s']:.0f} s "
        f"(1-minute load average {notes['load_before']} before, {notes['load_after']} after; the machine's "
        f"{os.cpu_count()} cores are shared)."
    )
    out.append("")
    if notes["plotted"]:
        out.append(f"![bytes down each site's link, without and with the site cache](benchmarks/{PLOT.name})")
    else:
        out.append("(No plot this time: matplotlib was missing; `make bench` installs it.)")
    out.append("")
    out.append(
        "| site | object (size) | centre served without cache (copies) | centre served with cache "
        "(copies) | without / with | link without / with (copies) |"
    )
    out.append("| --- | --- | ---: | ---: | ---: | ---: |")

    def row(label: str, sites: list[str], obj: str) -> str:
        service = {"image": "registry", "artifact": "artifacts"}
        objs = ["image", "artifact"] if obj == "both" else [obj]
        size = {p: sum(result[p][f"{o}_size"] for o in objs) * len(sites) for p in PASSES}
        served = {p: sum(result[p]["sites"][s][o] for s in sites for o in objs) for p in PASSES}
        link = {p: sum(result[p]["sites"][s]["link"].get(service[o], 0) for s in sites for o in objs) for p in PASSES}
        sizes = sorted({mb(sum(result[p][f"{o}_size"] for o in objs)) for p in PASSES})
        each = " / ".join(sizes)  # the passes' objects differ only in the compressed size of their layers
        what = {"image": "image", "artifact": "artifact", "both": "**both**"}[obj]
        return (
            f"| {label} | {what} ({each}) | {mb(served['direct'])} ({copies(served['direct'], size['direct'])}) | "
            f"{mb(served['cache'])} ({copies(served['cache'], size['cache'])}) | "
            f"**{ratio(served['direct'], served['cache'])}** | {mb(link['direct'])} / {mb(link['cache'])} "
            f"({copies(link['direct'], size['direct'])} / {copies(link['cache'], size['cache'])}) |"
        )

    for site in SITES:
        for obj in ("image", "artifact", "both"):
            out.append(row(f"`{site}` ({per_site} devices)" if obj == "image" else "", [site], obj))
    for obj in ("image", "artifact", "both"):
        out.append(row(f"all {len(SITES)} sites" if obj == "image" else "", SITES, obj))
    out.append("")

    # how the bytes went: responses per object and site, other traffic, where devices fetched from
    gets = {
        p: {s: (result[p]["sites"][s]["image_gets"], result[p]["sites"][s]["artifact_gets"]) for s in SITES}
        for p in PASSES
    }
    other = {
        p: sum(result[p]["sites"][s]["registry_other"] + result[p]["sites"][s]["artifacts_other"] for s in SITES)
        for p in PASSES
    }
    fell_back = sorted(h for h, r in cache["records"].items() if r["image_from"] == "centre" or r["warning"])
    out.append(
        f"- Responses with object bytes per site (image blob GETs / artifact GETs): without cache "
        f"{', '.join(f'{s} {g[0]} / {g[1]}' for s, g in gets['direct'].items())}; with cache "
        f"{', '.join(f'{s} {g[0]} / {g[1]}' for s, g in gets['cache'].items())} (the cache fetches the artifact in "
        "4 MiB slices, so more than one GET can be one copy). Other responses of the centre to the 3 sites "
        f"(manifests, `/v2/` probes): {other['direct']:,} bytes without cache, {other['cache']:,} with."
    )
    out.append(
        f"- Time (not this benchmark's measure): the fetch playbook took {direct['seconds']:.0f} s without cache and "
        f"{cache['seconds']:.0f} s with it, of which the two tasks that move the bytes ({' and '.join(FETCH_TASKS)}) "
        f"{direct['fetch_s']:.1f} s and {cache['fetch_s']:.1f} s (profile_tasks). With the cache each device first "
        "runs site_cache's client tasks (CA, probe, login) before each fetch, and a new layer or slice goes centre "
        "-> cache -> device while the site's other devices wait for it; the links are not shaped here, so nothing "
        "is gained in time. With the cache, "
        + (
            f"devices that fell back to the centre: {', '.join(fell_back)}."
            if fell_back
            else "every device fetched through its site's cache (its own record says so)."
        )
    )

    # the goal: one copy per site, per object, from the centre's logs
    worst = max(
        result["cache"]["sites"][s][o] / result["cache"][f"{o}_size"] for s in SITES for o in ("image", "artifact")
    )
    least = min(
        result["cache"]["sites"][s][o] / result["cache"][f"{o}_size"] for s in SITES for o in ("image", "artifact")
    )
    link_cache = sum(cache["sites"][s]["link"].get(k, 0) for s in SITES for k in ("registry", "artifacts"))
    one = len(SITES) * (cache["image_size"] + cache["artifact_size"])
    total = {p: sum(result[p]["sites"][s][o] for s in SITES for o in ("image", "artifact")) for p in PASSES}
    if worst <= 1.0 + 1e-9 and least >= 1.0 - 1e-9:
        verdict = (
            f"**met**: with the cache the centre sent each site exactly one copy of the image and of the artifact "
            f"({worst:.2f} copies for every site and object, from its logs), against {per_site} (one per device) "
            "without it; "
            f"without / with = {ratio(total['direct'], total['cache'])} for the whole fleet. Everything that crossed "
            f"the 3 links with the cache was {link_cache / one:.3f} copies: the rest is TLS, HTTP headers, manifests "
            "and the devices' login probes, not object bytes."
        )
    elif worst > 1.0:
        over = [
            f"{s} {o} {result['cache']['sites'][s][o] / result['cache'][f'{o}_size']:.2f} copies"
            for s in SITES
            for o in ("image", "artifact")
            if result["cache"]["sites"][s][o] > result["cache"][f"{o}_size"]
        ]
        verdict = (
            f"**missed** by {worst - 1.0:.2f} copies at worst ({', '.join(over)}). More than one copy means that "
            "requests for the same layer or slice reached the centre more than once: a device fell back to the "
            "centre (listed above), or the cache's lock (`proxy_cache_lock`, held up to `site_cache_lock_timeout`) "
            "let a second request through; the site cache's log (`docker logs edgeai-site-cache`, `cache` MISS "
            "per request) tells which, and a lock that holds every request until the first fetch ends closes it."
        )
    else:
        verdict = (
            f"**not measured**: a site got only {least:.2f} copies of an object with the cache, so the log did not "
            "see the whole transfer (a log line missing or a source address not matched)."
        )
    out.append(f"- Goal one copy per site: {verdict}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices-per-site", type=int, default=3, help="devices per site, the cache host included")
    ap.add_argument("--layers", default="3000000,2000000", help="bytes of random data per image layer")
    ap.add_argument("--artifact-bytes", type=int, default=6_000_000, help="size of the artifact")
    args = ap.parse_args(argv)
    # a SIGTERM (a runner giving up) still removes the devices: `finally` runs on SystemExit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    layers = [int(x) for x in args.layers.split(",")]

    t0 = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    status = json.loads(lab("status", "--json", timeout=60))
    if not status.get("up") or "site-cache" not in status.get("images", {}) or not status.get("artifacts"):
        log("the lab is not up, or has no site-cache image or artifact store: run `tests/lab/lab up`")
        return 1
    fleet = device_names(args.devices_per_site)
    everyone = [d for names in fleet.values() for d in names]
    # Without enough, the devices' systemd does not boot and each `lab device add` holds the lab's lock
    # for its whole readiness timeout: say so now instead.
    used, limit = inotify_instances()
    if limit - used < INOTIFY_PER_DEVICE * len(everyone):
        log(
            f"root holds {used} of its {limit} inotify instances (fs.inotify.max_user_instances): not enough for "
            f"{len(everyone)} more devices (about {INOTIFY_PER_DEVICE} each). Run when fewer lab devices are up, or "
            "raise the limit (sysctl fs.inotify.max_user_instances)."
        )
        return 1
    work = Path(tempfile.mkdtemp(prefix="edgeai-bw-bench-"))
    centre = Centre(status, work)
    try:
        for name in everyone:  # left over by an interrupted run
            if name in status["devices"]:
                lab("device", "rm", name)
        for name in everyone:
            site = name.rsplit("-", 1)[0]
            try:
                lab("device", "add", name, "--profile", PROFILE, "--site", site, "--no-inventory")
            except RuntimeError:
                used, limit = inotify_instances()
                log(f"root holds {used} of its {limit} inotify instances (fs.inotify.max_user_instances)")
                raise
        for site in SITES:  # our sites' links unshaped, whatever a site of the same number had before
            lab("link", site, "--clear", timeout=60)
        log(f"{len(everyone)} devices added in {time.monotonic() - t0:.0f} s")
        status = json.loads(lab("status", "--json", timeout=60))
        write_inventories(work, status, fleet)
        ansible(work, "hosts-cache.yml", "setup.yml")
        setup_s = time.monotonic() - t0
        log(f"engines and caches ready after {setup_s:.0f} s")
        # the centre sees site n's relayed connections come from 127.213.<n>.1
        sources = {s: "127.213.{}.1".format(status["devices"][fleet[s][0]]["address"].split(".")[2]) for s in SITES}
        result = {
            name: run_pass(work, centre, sources, name, layers, args.artifact_bytes, version)
            for version, name in enumerate(PASSES, start=1)
        }
    finally:
        t_clean = time.monotonic()
        for name in everyone:
            try:
                lab("device", "rm", name)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"could not remove {name}: {exc}")
        centre.clean()
        shutil.rmtree(work, ignore_errors=True)
        clean_s = time.monotonic() - t_clean
        log(f"devices, images and files removed in {clean_s:.0f} s")
    plotted = plot(result, args.devices_per_site, PLOT)
    notes = {
        "setup_s": setup_s,
        "total_s": time.monotonic() - t0,
        "clean_s": clean_s,
        "load_before": load_before,
        "load_after": Path("/proc/loadavg").read_text().split()[0],
        "plotted": plotted,
    }
    print(report(result, fleet, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
