# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role edgeai.fleet.site_cache on a site of 4 lab devices of its own.

One device runs the site cache (images/site-cache, pulled from the lab registry); all four use
it through the roles' own wiring (inference_server's image tasks, model_deploy's staging). The
lab gateway relays each site's connections to the centre from the site's own loopback address
(127.213.<n>.1), so the central registry's and artifact store's logs say what crossed this
site's link: each layer of a new image and each slice of a new artifact exactly once, although
four devices fetched them at the same time. With the cache stopped, a device falls back to the
centre and says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgeai_lab import inventory as lab_inventory
from edgeai_lab.access import lab_cli

pytestmark = [pytest.mark.lab, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SITE = "cache-site"
DEVICES = [f"{SITE}-{i}" for i in range(1, 5)]
CACHE_HOST = DEVICES[0]
PROFILE = "coral-usb"  # the lightest profile: nothing from a vendor repository is installed
SLICE = 4 * 1024 * 1024  # site_cache_slice_size's default (4m)
PUSHED: list[str] = []  # test images pushed to the centre, deleted at the end

PLAYBOOKS = {
    "cache.yml": """
- name: Engines of the site's devices
  hosts: cache_site
  gather_facts: false
  roles:
    - edgeai.fleet.container_engine

- name: The site's cache
  hosts: site_cache_hosts
  gather_facts: false
  roles:
    - edgeai.fleet.site_cache
""",
    "cache_only.yml": """
- name: The site's cache
  hosts: site_cache_hosts
  gather_facts: false
  roles:
    - edgeai.fleet.site_cache
""",
    # the same tasks inference_server runs to get its image
    "pull.yml": """
- name: Pull an image as inference_server does
  hosts: "{{ targets | default('cache_site') }}"
  gather_facts: false
  tasks:
    - name: Pull it
      ansible.builtin.include_role:
        name: edgeai.fleet.inference_server
        tasks_from: image
      vars:
        inference_server_image: "{{ image }}"

    - name: Record where it came from
      ansible.builtin.copy:
        content: "{{ {'registry': site_cache_client.registry, 'warning': site_cache_client.warning} | to_json }}"
        dest: "{{ record_dir }}/pull-{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
""",
    # the staging step of model_deploy, on its own (its declared entry point: no inference server needed)
    "stage.yml": """
- name: Stage an https artifact as model_deploy does
  hosts: "{{ targets | default('cache_site') }}"
  gather_facts: false
  tasks:
    - name: Stage it
      ansible.builtin.include_role:
        name: edgeai.fleet.model_deploy
        tasks_from: stage
      vars:
        model_deploy_name: site-cache-test
        model_deploy_version: "{{ version }}"
        model_deploy_artifact: {url: "{{ url }}", sha256: "{{ sha256 }}"}
        model_deploy_artifacts_dir: /var/lib/edgeai-site-cache-test
        model_deploy_artifact_ca_path: /usr/local/share/ca-certificates/edgeai-lab-ca.crt

    - name: Record where it came from
      ansible.builtin.copy:
        content: >-
          {{ {'fetched_from': model_deploy_result.fetched_from, 'warning': model_deploy_result.warnings | join('; '),
              'bytes': model_deploy_result.downloaded_bytes, 'result': model_deploy_result.result} | to_json }}
        dest: "{{ record_dir }}/stage-{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
""",
}


def _ansible(workdir: Path, playbook: str, *args: str) -> tuple[str, dict[str, dict[str, int]]]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    records = workdir / "records"
    shutil.rmtree(records, ignore_errors=True)
    records.mkdir()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(workdir / "hosts.yml"),
                           str(workdir / playbook), "-e", f"record_dir={records}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    recap = {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
             for host, counts in re.findall(r"^(\S+)\s*:\s*(ok=.*)$", proc.stdout, re.MULTILINE)}
    return proc.stdout, recap


def _sources(workdir: Path, kind: str) -> dict[str, dict[str, Any]]:
    """What each device recorded about the source of its last pull or stage."""
    return {f.stem[len(kind) + 1:]: json.loads(f.read_text()) for f in (workdir / "records").glob(f"{kind}-*.json")}


def _file(path: Path | str) -> str:
    return f"{{{{ lookup('ansible.builtin.file', '{path}') }}}}"


def _write_inventory(workdir: Path, lab: dict[str, Any], password: str) -> None:
    address = {d: lab["devices"][d]["address"] for d in DEVICES}
    gateway = re.sub(r"\.\d+$", ".1", address[CACHE_HOST])
    (workdir / "device-password").write_text(password + "\n")
    (workdir / "device-password").chmod(0o600)
    ca = "{{ lookup('ansible.builtin.file', edge_lab_ca_cert) }}"
    pki = Path(lab["state_dir"]) / "pki"
    # the lab's site.yml reads the centre's logins from the lab's 0600 files
    registry_login = "_edge_lab_registry_login.edge_lab_registry"
    artifacts_login = "_edge_lab_artifacts_login.edge_lab_artifacts"
    inventory = {"all": {
        "vars": lab_inventory.lab_vars(),
        "children": {
            "cache_site": {
                "hosts": {d: {"ansible_host": "127.0.0.1", "ansible_port": lab["devices"][d]["port"],
                              "edge_site": SITE} | lab_inventory.device_vars(d, lab["devices"][d]) for d in DEVICES},
                # what an operator puts in the site's group_vars
                "vars": {
                    "site_cache_upstream_registry": "{{ edge_lab_registry }}",
                    "site_cache_upstream_artifact_url": "{{ edge_lab_artifacts_url }}/",
                    "edgeai_site_cache": {"host": address[CACHE_HOST], "ca": ca, "username": "device",
                                          "password": _file(workdir / "device-password")},
                },
            },
            "site_cache_hosts": {
                "hosts": {CACHE_HOST: {}},
                "vars": {
                    "site_cache_image": lab["images"]["site-cache"]["ref"],
                    # the lab's per-device certificate (from the lab CA) names the device's site address
                    "site_cache_tls_cert": _file(pki / f"device-{CACHE_HOST}.crt"),
                    "site_cache_tls_key": _file(pki / f"device-{CACHE_HOST}.key"),
                    "site_cache_users": [{"username": "device", "password": _file(workdir / "device-password")}],
                    "site_cache_upstream_registry_username": f"{{{{ {registry_login}_username }}}}",
                    "site_cache_upstream_registry_password": f"{{{{ {registry_login}_password }}}}",
                    "site_cache_upstream_artifact_username": f"{{{{ {artifacts_login}_username }}}}",
                    "site_cache_upstream_artifact_password": f"{{{{ {artifacts_login}_password }}}}",
                    "site_cache_upstream_ca": ca,
                    # inside the cache container the lab's names are not in /etc/hosts
                    "site_cache_etc_hosts": {"registry.edgeai.lab": gateway, "artifacts.edgeai.lab": gateway},
                },
            },
        },
    }}
    (workdir / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    group_vars = workdir / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    (group_vars / "site.yml").write_text(lab_inventory.SITE_VARS_SRC.read_text())
    for name, text in PLAYBOOKS.items():
        (workdir / name).write_text(text)


def _site_source(lab: dict[str, Any]) -> str:
    """The address the centre sees this site's relayed connections come from."""
    return "127.213.{}.1".format(lab["devices"][CACHE_HOST]["address"].split(".")[2])


def _push_image(lab: dict[str, Any], creds: dict[str, str], workdir: Path, repo: str, layers: list[int]) -> str:
    """Build an image of random layers FROM scratch and push it to the centre; returns repo:tag."""
    context = workdir / f"build-{repo.rsplit('/', 1)[-1]}"
    context.mkdir()
    lines = ["FROM scratch"]
    for i, size in enumerate(layers):
        (context / f"layer{i}.bin").write_bytes(os.urandom(size))
        lines.append(f"COPY layer{i}.bin /models/layer{i}.bin")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    host_ref = f"{lab['registry']['host_address']}/{repo}:1"
    docker_config = workdir / "docker-config"
    docker_config.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, DOCKER_CONFIG=str(docker_config))
    for argv, stdin in ((["docker", "login", lab["registry"]["host_address"], "-u", creds["username"],
                          "--password-stdin"], creds["password"]),
                        (["docker", "build", "-q", "-t", host_ref, str(context)], None),
                        (["docker", "push", "-q", host_ref], None),
                        (["docker", "rmi", host_ref], None)):
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"{argv[:2]}: {proc.stderr[-2000:]}"
    PUSHED.append(f"{lab['registry']['host']}/{repo}:1")
    return PUSHED[-1]


def _registry(lab: dict[str, Any], creds: dict[str, str], path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"https://{lab['registry']['host_address']}{path}", method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode())
    req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        return resp.headers, resp.read()


def _delete_image(lab: dict[str, Any], creds: dict[str, str], ref: str) -> None:
    """Remove a test image's manifest from the centre (its blobs go with the registry's next GC)."""
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    headers, _body = _registry(lab, creds, f"/v2/{repo}/manifests/1", method="HEAD")
    _registry(lab, creds, f"/v2/{repo}/manifests/{headers['Docker-Content-Digest']}", method="DELETE")


def _blobs(lab: dict[str, Any], creds: dict[str, str], ref: str) -> dict[str, int]:
    """digest -> size of the config and every layer of the image."""
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    manifest = json.loads(_registry(lab, creds, f"/v2/{repo}/manifests/1")[1])
    return {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}


def _log_lines(path: Path, offset: int) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _served_blobs(lab: dict[str, Any], offset: int, source: str, digest: str) -> list[dict[str, Any]]:
    """GETs of one blob the central registry answered for this site, from its JSON log."""
    return [r for r in _log_lines(Path(lab["state_dir"]) / "logs" / "registry.log", offset)
            if r.get("msg") == "response completed" and r.get("http.request.method") == "GET"
            and r.get("http.request.remoteaddr", "").rsplit(":", 1)[0] == source
            and r.get("http.request.uri", "").endswith("/blobs/" + digest)]


def _served_artifact(lab: dict[str, Any], offset: int, source: str, name: str) -> list[dict[str, Any]]:
    return [r for r in _log_lines(Path(lab["artifacts"]["log"]), offset)
            if r.get("client") == source and r.get("method") == "GET" and r.get("path") == "/" + name]


def _on_device(lab: dict[str, Any], device: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command in a device of this module (the session's `lab_ssh` knows only the devices it saw)."""
    return subprocess.run(["docker", "exec", lab["devices"][device]["container"], *argv],
                          capture_output=True, text=True, timeout=120, check=False)


def _remove_devices() -> None:
    for name in DEVICES:
        lab_cli("device", "rm", name, timeout=300)


@pytest.fixture(scope="module")
def site(lab: dict[str, Any], registry_credentials, tmp_path_factory) -> dict[str, Any]:
    """4 devices of this module at their own site, engines ready, the cache running on the first."""
    if "site-cache" not in lab.get("images", {}) or not lab.get("artifacts"):
        pytest.fail("the lab has no site-cache image or no artifact store: `tests/lab/lab up` makes both")
    _remove_devices()  # left over by an interrupted run
    try:
        for name in DEVICES:
            added = lab_cli("device", "add", name, "--profile", PROFILE, "--site", SITE, "--no-inventory",
                            timeout=300)
            assert added.returncode == 0, f"lab device add {name}: {added.stderr[-2000:]}"
        status = json.loads(lab_cli("status", "--json", timeout=60).stdout)
        workdir = tmp_path_factory.mktemp("site-cache")
        password = secrets.token_urlsafe(18)
        _write_inventory(workdir, status, password)
        out, recap = _ansible(workdir, "cache.yml")
        assert recap[CACHE_HOST]["failed"] == 0
        assert password not in out
        yield {"lab": status, "workdir": workdir, "source": _site_source(status)}
    finally:
        _remove_devices()
        while PUSHED:
            _delete_image(lab, registry_credentials, PUSHED.pop())


def test_cache_role_is_idempotent(site):
    _out, again = _ansible(site["workdir"], "cache_only.yml", "--diff")
    assert again[CACHE_HOST]["changed"] == 0, "a second run must change nothing"
    _out, checked = _ansible(site["workdir"], "cache_only.yml", "--check", "--diff")
    assert checked[CACHE_HOST]["changed"] == 0


def test_four_devices_pull_each_layer_once_from_the_centre(site, registry_credentials):
    lab = site["lab"]
    registry_log = Path(lab["state_dir"]) / "logs" / "registry.log"
    ref = _push_image(lab, registry_credentials, site["workdir"], f"edgeai-test/site-cache-{secrets.token_hex(4)}",
                      [3_000_000, 2_000_000])
    blobs = _blobs(lab, registry_credentials, ref)
    offset = registry_log.stat().st_size

    _out, recap = _ansible(site["workdir"], "pull.yml", "-e", f"image={ref}")  # 4 devices at once (forks)
    assert all(recap[d]["failed"] == 0 for d in DEVICES)
    cache_registry = f"{lab['devices'][CACHE_HOST]['address']}:5443"
    pulled_from = {h: s["registry"] for h, s in _sources(site["workdir"], "pull").items()}
    assert pulled_from == dict.fromkeys(DEVICES, cache_registry)

    for digest, size in blobs.items():
        served = _served_blobs(lab, offset, site["source"], digest)
        assert len(served) == 1, f"{digest} was served {len(served)} times to {SITE}: {served}"
        assert served[0]["http.response.written"] == size
    for device in DEVICES:  # every device has it, under its central name
        assert _on_device(lab, device, "docker", "image", "inspect", ref).returncode == 0, device


def test_four_devices_fetch_each_artifact_slice_once(site):
    lab = site["lab"]
    name = f"site-cache-{secrets.token_hex(4)}.bin"
    payload = os.urandom(10_000_000)
    target = Path(lab["artifacts"]["root"]) / name
    artifact_log = Path(lab["artifacts"]["log"])
    target.write_bytes(payload)
    try:
        offset = artifact_log.stat().st_size
        digest = hashlib.sha256(payload).hexdigest()
        _out, recap = _ansible(site["workdir"], "stage.yml", "-e", f"url={lab['artifacts']['url']}/{name}",
                               "-e", f"sha256={digest}", "-e", "version=1")
        assert all(recap[d]["failed"] == 0 for d in DEVICES)
        sources = _sources(site["workdir"], "stage")
        assert all(s["result"] == "staged" and s["bytes"] == len(payload)
                   and s["fetched_from"].startswith("https://10.213.") for s in sources.values()), sources

        served = _served_artifact(lab, offset, site["source"], name)
        ranges = sorted(r["range"] for r in served)
        assert len(served) == math.ceil(len(payload) / SLICE), served
        assert len(set(ranges)) == len(ranges), f"a slice crossed the link twice: {ranges}"
        assert sum(r["bytes"] for r in served) == len(payload)
    finally:
        target.unlink(missing_ok=True)


def test_a_device_falls_back_to_the_centre_when_the_cache_is_down(site, registry_credentials):
    lab = site["lab"]
    device = DEVICES[1]
    registry_log = Path(lab["state_dir"]) / "logs" / "registry.log"
    artifact_log = Path(lab["artifacts"]["log"])
    ref = _push_image(lab, registry_credentials, site["workdir"], f"edgeai-test/site-cache-{secrets.token_hex(4)}",
                      [500_000])
    layer = max(_blobs(lab, registry_credentials, ref).items(), key=lambda kv: kv[1])
    name = f"site-cache-{secrets.token_hex(4)}.bin"
    payload = os.urandom(1_000_000)
    target = Path(lab["artifacts"]["root"]) / name
    target.write_bytes(payload)
    assert _on_device(lab, CACHE_HOST, "docker", "stop", "edgeai-site-cache").returncode == 0
    try:
        offsets = registry_log.stat().st_size, artifact_log.stat().st_size
        out, _recap = _ansible(site["workdir"], "pull.yml", "-e", f"image={ref}", "-e", f"targets={device}")
        source = _sources(site["workdir"], "pull")[device]
        assert source["registry"] == lab["registry"]["host"]
        assert source["warning"].startswith(f"site cache {lab['devices'][CACHE_HOST]['address']}:5443 did not answer")
        assert "WARNING: site cache" in out
        served = _served_blobs(lab, offsets[0], site["source"], layer[0])
        assert [r["http.response.written"] for r in served] == [layer[1]]  # straight from the centre

        out, _recap = _ansible(site["workdir"], "stage.yml", "-e", f"url={lab['artifacts']['url']}/{name}",
                               "-e", f"sha256={hashlib.sha256(payload).hexdigest()}", "-e", "version=2",
                               "-e", f"targets={device}")
        source = _sources(site["workdir"], "stage")[device]
        assert source["warning"].startswith("site cache did not deliver https://10.213."), source
        assert source["fetched_from"] == f"{lab['artifacts']['url']}/{name}" and source["result"] == "staged"
        served = _served_artifact(lab, offsets[1], site["source"], name)
        assert [(r["range"], r["bytes"]) for r in served] == [(None, len(payload))]  # whole, not in slices
    finally:
        target.unlink(missing_ok=True)
        _on_device(lab, CACHE_HOST, "docker", "start", "edgeai-site-cache")
